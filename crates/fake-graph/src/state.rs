//! The whole server state behind one mutex, and the small registries that are not part of a drive:
//! sites, the user, pre-authenticated download URLs, long-running operation monitors.

use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::{FakeGraphConfig, Flavour};
use crate::delta::DeltaState;
use crate::error::GraphError;
use crate::faults::FaultState;
use crate::identity::AuthState;
use crate::model::{Drive, DriveType};
use crate::stats::StatsState;
use crate::upload::UploadSession;
use crate::util;

/// State shared by the HTTP server and the in-process handles.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bytes sent by downloadUrl responses (updated by the streaming bodies, outside the lock).
    pub download_bytes: Arc<AtomicU64>,
}

impl Shared {
    pub fn new(state: State) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(state),
            download_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Locks the state (a panic in another holder does not poison it for the tests).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Site {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub web_url: String,
    /// Server-relative path, lower case, without trailing slash (`""` for the root site).
    pub server_path: String,
    pub drives: Vec<usize>,
    pub created: SystemTime,
    pub is_root: bool,
}

pub(crate) struct User {
    pub id: String,
    pub display_name: String,
    pub upn: String,
}

/// An issued pre-authenticated download URL, bound to the content version at issue time.
pub(crate) struct DownloadEntry {
    pub content: Bytes,
    pub etag: String,
    pub mime: &'static str,
    pub expires: SystemTime,
}

#[derive(Default)]
pub(crate) struct Downloads {
    pub map: HashMap<String, DownloadEntry>,
    /// (drive id, item id, cTag) → token, so repeated listings reuse a URL while it has > half its life.
    cache: HashMap<(String, String, String), String>,
    issued: usize,
}

impl Downloads {
    /// Returns a download token for the current content of file `id`.
    pub fn issue(&mut self, drive: &Drive, id: &str, ttl: Duration, now: SystemTime) -> String {
        let key = (drive.id.clone(), id.to_string(), drive.ctag(id));
        if let Some(tok) = self.cache.get(&key) {
            if let Some(e) = self.map.get(tok) {
                if e.expires > now + ttl / 2 {
                    return tok.clone();
                }
            }
        }
        let it = &drive.items[id];
        let f = it.file().expect("download URLs only for files");
        let tok = util::random_token(24);
        self.map.insert(
            tok.clone(),
            DownloadEntry {
                content: f.content.clone(),
                etag: drive.etag(id),
                mime: f.mime,
                expires: now + ttl,
            },
        );
        self.cache.insert(key, tok.clone());
        self.issued += 1;
        if self.issued % 4096 == 0 {
            self.map.retain(|_, e| e.expires > now);
            let map = &self.map;
            self.cache.retain(|_, t| map.contains_key(t));
        }
        tok
    }

    /// Expires every issued URL now (fault injection).
    pub fn expire_all(&mut self, now: SystemTime) {
        for e in self.map.values_mut() {
            e.expires = now;
        }
        self.cache.clear();
    }
}

/// Status of a long-running operation (copy, asynchronous move).
#[derive(Clone, Debug)]
pub(crate) enum JobStatus {
    InProgress,
    Completed { resource_id: String },
    Failed { code: String, message: String },
}

pub(crate) struct Job {
    pub operation: &'static str,
    pub created: SystemTime,
    pub delay: Duration,
    pub status: JobStatus,
}

pub(crate) struct State {
    pub cfg: FakeGraphConfig,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Random id of this server instance (delta tokens of other instances get 410).
    pub instance: String,
    pub drives: Vec<Drive>,
    pub sites: Vec<Site>,
    pub user: User,
    pub downloads: Downloads,
    pub sessions: HashMap<String, UploadSession>,
    pub jobs: HashMap<String, Job>,
    pub delta: DeltaState,
    pub auth: AuthState,
    pub faults: FaultState,
    pub stats: StatsState,
}

impl State {
    pub fn new(cfg: FakeGraphConfig, base: String) -> State {
        let now = SystemTime::now();
        let user = User {
            id: util::random_guid_lower(),
            display_name: cfg.user_display_name.clone(),
            upn: cfg.user_principal_name.clone(),
        };
        let user_owner = json!({ "user": { "id": user.id, "displayName": user.display_name } });
        let mut drives = Vec::new();
        let mut sites = Vec::new();
        let u = (user.display_name.as_str(), user.id.as_str());
        match cfg.flavour {
            Flavour::Personal => {
                let mut d = Drive::new(DriveType::Personal, "OneDrive", user_owner, "", cfg.quota_total, u, now);
                d.web_url = format!("https://onedrive.live.com/?cid={}", d.id);
                drives.push(d);
            }
            Flavour::Business => {
                let upn_path = user.upn.replace(['@', '.'], "_");
                let url = format!("https://contoso-my.sharepoint.com/personal/{upn_path}/Documents");
                drives.push(Drive::new(
                    DriveType::Business,
                    "OneDrive",
                    user_owner,
                    &url,
                    cfg.quota_total,
                    u,
                    now,
                ));
                let lib = |name: &str, url: &str, group: &str| {
                    let owner = json!({ "group": { "id": util::random_guid_lower(), "displayName": group } });
                    Drive::new(DriveType::DocumentLibrary, name, owner, url, cfg.quota_total, u, now)
                };
                drives.push(lib(
                    "Documents",
                    "https://contoso.sharepoint.com/Shared%20Documents",
                    "Contoso",
                ));
                drives.push(lib(
                    "Documents",
                    "https://contoso.sharepoint.com/sites/eng/Shared%20Documents",
                    "Engineering",
                ));
                drives.push(lib(
                    "Archive",
                    "https://contoso.sharepoint.com/sites/eng/Archive",
                    "Engineering",
                ));
                let host = "contoso.sharepoint.com";
                sites.push(Site {
                    id: format!("{host},{},{}", util::random_guid_lower(), util::random_guid_lower()),
                    name: "".into(),
                    display_name: "Communication site".into(),
                    web_url: format!("https://{host}"),
                    server_path: "".into(),
                    drives: vec![1],
                    created: now,
                    is_root: true,
                });
                sites.push(Site {
                    id: format!("{host},{},{}", util::random_guid_lower(), util::random_guid_lower()),
                    name: "eng".into(),
                    display_name: "Engineering".into(),
                    web_url: format!("https://{host}/sites/eng"),
                    server_path: "/sites/eng".into(),
                    drives: vec![2, 3],
                    created: now,
                    is_root: false,
                });
            }
        }
        let faults = FaultState::default();
        State {
            delta: DeltaState::default(),
            auth: AuthState::default(),
            stats: StatsState::default(),
            downloads: Downloads::default(),
            sessions: HashMap::new(),
            jobs: HashMap::new(),
            instance: util::random_token(6),
            cfg,
            base,
            drives,
            sites,
            user,
            faults,
        }
    }

    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.base)
    }

    pub fn drive_index(&self, id: &str) -> Option<usize> {
        self.drives.iter().position(|d| d.id == id)
    }

    /// Renders an item including a fresh (or reused) downloadUrl for files.
    pub fn render_item(&mut self, di: usize, id: &str, delta: bool, now: SystemTime) -> Value {
        let drive = &self.drives[di];
        let dl = if drive.items[id].is_folder() {
            None
        } else {
            let tok = self.downloads.issue(drive, id, self.cfg.download_url_ttl, now);
            Some(format!("{}/_dl/{tok}", self.base))
        };
        drive.render(id, delta, dl)
    }

    pub fn render_site(&self, si: usize) -> Value {
        let s = &self.sites[si];
        let mut v = json!({
            "id": s.id,
            "name": s.name,
            "displayName": s.display_name,
            "webUrl": s.web_url,
            "createdDateTime": util::fmt_time(s.created, false),
            "lastModifiedDateTime": util::fmt_time(s.created, false),
        });
        if s.is_root {
            v["root"] = json!({});
            v["siteCollection"] = json!({ "hostname": "contoso.sharepoint.com" });
        }
        v
    }

    /// Registers a long-running operation; returns its monitor URL.
    pub fn new_job(&mut self, operation: &'static str, status: JobStatus, now: SystemTime) -> (String, String) {
        let id = util::random_guid();
        self.jobs.insert(
            id.clone(),
            Job {
                operation,
                created: now,
                delay: self.cfg.async_op_delay,
                status,
            },
        );
        (id.clone(), format!("{}/_monitor/{id}", self.base))
    }

    /// Expired upload sessions are forgotten (404 afterwards).
    pub fn purge_sessions(&mut self, now: SystemTime) {
        self.sessions.retain(|_, s| s.expires > now);
    }
}

/// Bounded FIFO of recent entries.
pub(crate) fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// Not-found error for an unknown drive.
pub(crate) fn drive_not_found() -> GraphError {
    GraphError::new(404, "itemNotFound", "The drive could not be found.")
}
