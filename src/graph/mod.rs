//! The Microsoft Graph remote (OneDrive personal, OneDrive for Business, SharePoint libraries):
//! metadata by item id, lookups by path relative to the parent's id, paged listings, and content
//! through pre-authenticated download URLs. HTTP only, no FUSE.
//!
//! Module map: [`config`] says which drive and how long to wait; [`drive`] resolves that to a
//! drive id once; [`path`] builds URLs with per-segment encoding; [`item`] turns driveItems into
//! entries; [`client`] holds the authorised-request and pre-authenticated-request helpers; [`error`]
//! the one error decoder; [`download`] the download URL cache and ranged reads. Writes go through
//! the same helpers and decoder: [`upload`] (simple PUT, resumable upload sessions, quickXorHash
//! check), [`ops`] (create folder, delete, move/rename, modification time), with [`names`] refusing
//! names OneDrive would refuse before anything is sent and [`quickxor`] the content hash.

pub mod client;
pub mod config;
pub mod delta;
pub mod download;
pub mod drive;
pub mod error;
pub mod item;
pub mod names;
pub mod ops;
pub mod path;
pub mod quickxor;
pub mod upload;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use url::Url;

use crate::auth::TokenSource;
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpClient, HttpConfig, RetryPolicy};
use crate::remote::{
    Capabilities, Entry, EntryKind, ItemId, Meta, MetaFields, Precondition, Quota, Remote, UploadCtx, UploadSource,
    UploadTarget, Version,
};

use client::GraphClient;
pub use config::{DriveSelector, GraphConfig, DEFAULT_GRAPH_URL};
use download::{fetch_range, CachedUrl, Fetched, UrlCache};
pub use drive::ConnectError;
use drive::DriveInfo;
use item::{DriveItem, Page, ITEM_SELECT};
use path::{with_query, Urls};

/// One Graph drive as a [`Remote`]. Item ids are Graph item ids; the root has its real id.
pub struct GraphRemote {
    client: GraphClient,
    urls: Urls,
    config: GraphConfig,
    drive: DriveInfo,
    root_id: String,
    downloads: Arc<UrlCache>,
    /// Readers of one item take turns to fetch its download URL, so that parallel reads (prefetch)
    /// that all find the URL missing or expired read the item once, not once each. Striped by
    /// item id hash: a fixed set, nothing to clean up.
    url_turns: Vec<tokio::sync::Mutex<()>>,
    /// Upload session fragment size ([`upload::fragment_size`] of the configured one).
    fragment: u64,
}

/// Number of [`GraphRemote::url_turns`] stripes.
const URL_TURNS: usize = 64;

impl fmt::Debug for GraphRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphRemote")
            .field("graph", &self.urls.root())
            .field("drive", &self.drive.id)
            .finish_non_exhaustive()
    }
}

impl GraphRemote {
    /// Resolve the configured drive and its root, once. `http` gives pool and backoff settings;
    /// its deadline and connect timeout are replaced by `config`'s, and it must not carry Basic
    /// credentials (they are dropped: Graph authenticates with `tokens` only).
    pub async fn connect(
        config: GraphConfig,
        http: HttpConfig,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<GraphRemote, ConnectError> {
        if !(1..=1000).contains(&config.page_size) {
            return Err(ConnectError::Config(format!(
                "page size {} is outside 1..=1000",
                config.page_size
            )));
        }
        let urls = Urls::new(&config.graph_url)?;
        let http = HttpClient::new(HttpConfig {
            policy: RetryPolicy {
                deadline: config.timeout,
                connect_timeout: config.connect_timeout,
                ..http.policy
            },
            credentials: None,
            ..http
        })?;
        let client = GraphClient::new(http, tokens);
        let drive = drive::resolve(&client, &urls, &config.drive).await?;
        let root: DriveItem = client
            .get_json(with_query(urls.root_item(&drive.id)?, &[("$select", "id")]))
            .await?;
        Ok(GraphRemote {
            downloads: Arc::new(UrlCache::new(config.download_url_max_age)),
            url_turns: (0..URL_TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            fragment: upload::fragment_size(config.upload_fragment_size),
            client,
            urls,
            config,
            root_id: root.id,
            drive,
        })
    }

    /// The id of the drive's root folder.
    pub fn root_id(&self) -> ItemId {
        ItemId::new(self.root_id.as_str())
    }

    /// The drive id everything is addressed by.
    pub fn drive_id(&self) -> &str {
        &self.drive.id
    }

    /// `personal`, `business` or `documentLibrary`, as the server says.
    pub fn drive_type(&self) -> Option<&str> {
        self.drive.drive_type.as_deref()
    }

    /// The helpers for authorised and pre-authenticated requests (for write operations).
    pub fn client(&self) -> &GraphClient {
        &self.client
    }

    /// URL builder for this service.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// A delta poller of this drive, keeping its position in `state_file` when given.
    pub fn delta_poller(&self, state_file: Option<std::path::PathBuf>) -> delta::DeltaPoller {
        delta::DeltaPoller::new(
            self.client.clone(),
            self.urls.clone(),
            &self.drive.id,
            &self.root_id,
            state_file,
            self.config.page_size as usize,
            self.downloads.clone(),
        )
    }

    /// An item's metadata from `url` (with our `$select`), as an entry; hidden kinds are
    /// `NotFound`. A file's download URL goes into the cache on the way.
    async fn fetch_entry(&self, url: Url) -> RemoteResult<Entry> {
        let item: DriveItem = self
            .client
            .get_json(with_query(url, &[("$select", ITEM_SELECT)]))
            .await?;
        self.remember(&item);
        item.to_entry().ok_or(RemoteError::NotFound)
    }

    /// Cache the download URL a file item came with.
    fn remember(&self, item: &DriveItem) -> Option<CachedUrl> {
        self.downloads.remember(item)
    }

    /// The URL of `id` for `version`: the cached one unless it is missing or is `refused`, else
    /// a fresh one, fetched by one reader at a time (a reader that waited takes the URL the one
    /// before it fetched). Returns whether the URL was fetched just now.
    async fn download_url(
        &self,
        id: &ItemId,
        version: Option<&Version>,
        refused: Option<&Url>,
    ) -> RemoteResult<(CachedUrl, bool)> {
        let usable = |c: &CachedUrl| refused != Some(&c.url);
        if let Some(c) = self.downloads.get(id, version).filter(usable) {
            return Ok((c, false));
        }
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut h);
            (h.finish() % URL_TURNS as u64) as usize
        };
        let _turn = self.url_turns[stripe].lock().await;
        if let Some(c) = self.downloads.get(id, version).filter(usable) {
            return Ok((c, true));
        }
        self.downloads.remove(id);
        Ok((self.fresh_url(id, version).await?, true))
    }

    /// Read the item again for a fresh download URL. `VersionChanged` when the server now holds
    /// another version than `version` (the fresh URL is cached for the new one all the same).
    async fn fresh_url(&self, id: &ItemId, version: Option<&Version>) -> RemoteResult<CachedUrl> {
        let plain = self.urls.item(&self.drive.id, id.as_str(), "")?;
        let mut item: DriveItem = self
            .client
            .get_json(with_query(plain.clone(), &[("$select", ITEM_SELECT)]))
            .await?;
        if item.kind() == Some(EntryKind::File) && item.download_url.is_none() {
            // Some endpoints leave the URL out of `$select`ed answers even when it is named (`docs/onedrive.md`);
            // the full item carries it by default.
            item = self.client.get_json(plain).await?;
        }
        match item.kind() {
            Some(EntryKind::File) => {}
            Some(EntryKind::Directory) => return Err(RemoteError::Protocol(format!("{id} is a folder, not a file"))),
            None => return Err(RemoteError::NotFound),
        }
        let cached = self.remember(&item);
        if version.is_some_and(|v| item.version().as_ref() != Some(v)) {
            return Err(RemoteError::VersionChanged);
        }
        cached.ok_or_else(|| RemoteError::Protocol(format!("Graph gave no @microsoft.graph.downloadUrl for {id}")))
    }
}

#[async_trait]
impl Remote for GraphRemote {
    fn describe(&self) -> String {
        let which = match &self.config.drive {
            DriveSelector::Me => "me".to_string(),
            DriveSelector::DriveId(_) => "drive".to_string(),
            DriveSelector::User(u) => format!("user {u}"),
            DriveSelector::SharePoint { site_url, library } => {
                format!(
                    "{}{} library {}",
                    site_url.host_str().unwrap_or(""),
                    site_url.path(),
                    library.as_deref().unwrap_or("(default)")
                )
            }
        };
        format!(
            "onedrive {} {:?} {} ({which}) at {}",
            self.drive.drive_type.as_deref().unwrap_or("drive"),
            self.drive.name.as_deref().unwrap_or(""),
            self.drive.id,
            self.urls.root()
        )
    }

    async fn root(&self) -> RemoteResult<Entry> {
        self.fetch_entry(self.urls.root_item(&self.drive.id)?).await
    }

    async fn stat(&self, id: &ItemId) -> RemoteResult<Entry> {
        self.fetch_entry(self.urls.item(&self.drive.id, id.as_str(), "")?).await
    }

    async fn lookup(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        // No item can have a name OneDrive refuses (`a:b`, `CON`, `y.`), so asking is pointless:
        // such a lookup (the kernel's, before a create, mkdir or rename to that name) answers
        // ENOENT without a request, and the call that follows gives EINVAL.
        if names::check_name(name).is_err() {
            return Err(RemoteError::NotFound);
        }
        // Graph compares names case-insensitively; the entry carries the server's spelling.
        self.fetch_entry(self.urls.child(&self.drive.id, parent.as_str(), name, "")?)
            .await
    }

    async fn list(&self, dir: &ItemId) -> RemoteResult<Vec<Entry>> {
        let top = self.config.page_size.to_string();
        let mut url = with_query(
            self.urls.item(&self.drive.id, dir.as_str(), "/children")?,
            &[("$select", ITEM_SELECT), ("$top", &top)],
        );
        let mut out = Vec::new();
        loop {
            let page: Page<DriveItem> = self.client.get_json(url).await?;
            for item in &page.value {
                self.remember(item);
                if let Some(e) = item.to_entry() {
                    out.push(e);
                }
            }
            match page.next_link {
                Some(next) => url = drive::next_url(&self.urls, &next)?,
                None => break,
            }
        }
        Ok(out)
    }

    async fn read(&self, id: &ItemId, version: Option<&Version>, offset: u64, len: u64) -> RemoteResult<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (mut target, mut fresh) = self.download_url(id, version, None).await?;
        loop {
            // Never ask past the end (a 0-byte file takes no Range at all: `docs/onedrive.md`, Downloads).
            if offset >= target.size {
                return Ok(Bytes::new());
            }
            let want = len.min(target.size - offset);
            match fetch_range(&self.client, target.url.clone(), offset, want).await? {
                Fetched::Data(bytes) => return Ok(bytes),
                Fetched::Refused(status) if !fresh => {
                    tracing::debug!(item = %id, status, "download URL refused; reading the item again");
                    (target, _) = self.download_url(id, version, Some(&target.url)).await?;
                    fresh = true;
                }
                Fetched::Refused(status) => {
                    self.downloads.remove(id);
                    return Err(match status {
                        404 | 410 => RemoteError::NotFound,
                        416 => RemoteError::VersionChanged,
                        s => RemoteError::Forbidden(format!("the download host refused a fresh URL for {id} ({s})")),
                    });
                }
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        // If-Match / conflictBehavior=fail are checked by the server; fileSystemInfo keeps times;
        // names are compared case-insensitively (as OneDrive does; docs/semantics.md, OneDrive).
        Capabilities {
            writes: true,
            conditional_writes: true,
            set_mtime: true,
            case_insensitive_names: true,
            // fileSystemInfo holds the two client-set times; nothing holds modes or owners.
            kept_meta: MetaFields {
                mtime: true,
                created: true,
                ..MetaFields::NONE
            },
            propagates_versions: false,
            streams_growing_uploads: false,
        }
    }

    fn check_name(&self, name: &str) -> RemoteResult<()> {
        names::check_name(name)
    }

    fn check_path(&self, path: &str) -> RemoteResult<()> {
        names::check_path(path)
    }

    async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
        self.upload_file(to, from, cx).await
    }

    async fn discard_resume(&self, token: serde_json::Value) {
        self.discard_token(&token).await;
    }

    async fn mkdir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        self.create_folder(parent, name).await
    }

    async fn delete(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_item(id).await
    }

    async fn delete_empty_folder(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_folder_if_empty(id).await
    }

    async fn rename(&self, id: &ItemId, new_parent: &ItemId, new_name: &str, replace: bool) -> RemoteResult<Entry> {
        self.move_item(id, new_parent, new_name, replace).await
    }

    async fn set_mtime(&self, id: &ItemId, mtime: SystemTime) -> RemoteResult<Entry> {
        self.set_item_mtime(id, mtime).await
    }

    async fn set_meta(&self, id: &ItemId, meta: &Meta, precondition: Precondition) -> RemoteResult<Entry> {
        self.set_item_meta(id, meta, precondition).await
    }

    fn changes(&self, state_dir: Option<&std::path::Path>) -> Option<Box<dyn crate::remote::ChangeSource>> {
        let file = state_dir.map(|d| d.join(format!("delta-{}", path::encode_id(&self.drive.id))));
        Some(Box::new(self.delta_poller(file)))
    }

    async fn quota(&self) -> RemoteResult<Option<Quota>> {
        let url = with_query(self.urls.drive(&self.drive.id)?, &[("$select", "id,quota")]);
        let d: DriveInfo = self.client.get_json(url).await?;
        let Some(q) = d.quota else { return Ok(None) };
        let nonneg = |v: Option<i64>| v.map(|x| x.max(0) as u64);
        let available = nonneg(q.remaining).or_else(|| match (q.total, q.used) {
            (Some(t), Some(u)) => Some(t.saturating_sub(u).max(0) as u64),
            _ => None,
        });
        if q.used.is_none() && available.is_none() {
            return Ok(None);
        }
        Ok(Some(Quota {
            used: nonneg(q.used),
            available,
        }))
    }
}
