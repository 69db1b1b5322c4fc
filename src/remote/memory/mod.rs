//! An in-memory [`Remote`] for tests of the layers above: a tree of files and folders that tests
//! can change "out of band" (as another device would), with counters of what was asked of it, a
//! switch that makes every call fail as if the server were down, and fault switches for uploads
//! (fail the next n, delay each).
//!
//! Writes behave like a well-behaved server: conditional uploads are enforced atomically, the
//! modification time given is kept, every change of content or mtime gives a new version, and a
//! rename with `replace` refuses to replace a folder that is not empty (like [`crate::webdav`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

mod upload;

use super::{
    Capabilities, Entry, EntryKind, ItemId, Meta, MetaFields, Precondition, Quota, Remote, UploadCtx, UploadSource,
    UploadTarget, Version,
};
use crate::error::{RemoteError, RemoteResult};

#[derive(Clone)]
struct Node {
    kind: EntryKind,
    data: Bytes,
    mtime: SystemTime,
    version: u64,
    /// What [`Remote::set_meta`] kept (within `kept_meta`).
    meta: Meta,
}

/// In-memory drive. Item IDs are paths relative to the root (`""`, `"a"`, `"a/b.txt"`).
pub struct MemoryRemote {
    nodes: Mutex<BTreeMap<String, Node>>,
    next_version: AtomicU64,
    down: AtomicBool,
    /// Number of `read` calls answered.
    pub reads: AtomicU64,
    /// Bytes returned by `read`.
    pub bytes_read: AtomicU64,
    /// Number of `list` calls answered.
    pub lists: AtomicU64,
    /// Number of `lookup` and `stat` calls answered.
    pub lookups: AtomicU64,
    /// Number of uploads that changed the drive.
    pub uploads: AtomicU64,
    /// Errors the next uploads fail with, one each, before touching anything.
    upload_failures: Mutex<VecDeque<RemoteError>>,
    /// How long each upload takes before it is applied.
    upload_delay: Mutex<Duration>,
    list_delay: Mutex<Duration>,
    /// Whether [`Capabilities::streams_growing_uploads`] says yes.
    streams_growing: AtomicBool,
    /// Whether stored modification times lose their fraction of a second, as on servers that
    /// keep whole seconds (Apache, OneDrive).
    whole_seconds: AtomicBool,
    /// Whether uploads, once applied, never answer (the reply is lost, the client dies first).
    lose_upload_replies: AtomicBool,
    /// The metadata fields [`Remote::set_meta`] keeps (all by default).
    kept_meta: Mutex<MetaFields>,
    /// Number of uploads of growing files begun.
    pub growing_started: AtomicU64,
    /// Bytes of growing files received so far (whether or not their upload completed).
    pub growing_received: AtomicU64,
    /// Uploads of growing files that changed the drive (also counted in `uploads`).
    pub growing_applied: AtomicU64,
    /// Bytes of finished files received by uploads (whether or not their upload completed).
    pub bytes_received: AtomicU64,
    /// Uploads that carried on from a session an interrupted one left.
    pub resumed: AtomicU64,
    /// Where the next file upload's connection breaks (see [`MemoryRemote::cut_next_upload_at`]).
    cut_next_upload: Mutex<Option<u64>>,
    /// What interrupted uploads delivered, kept for a resume.
    sessions: Mutex<upload::Sessions>,
}

impl Default for MemoryRemote {
    fn default() -> Self {
        Self::new()
    }
}

fn parent_of(path: &str) -> Option<&str> {
    if path.is_empty() {
        None
    } else {
        Some(path.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl MemoryRemote {
    /// An empty drive with only a root folder.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            String::new(),
            Node {
                kind: EntryKind::Directory,
                data: Bytes::new(),
                mtime: SystemTime::now(),
                version: 0,
                meta: Meta::default(),
            },
        );
        MemoryRemote {
            nodes: Mutex::new(nodes),
            next_version: AtomicU64::new(1),
            down: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            upload_failures: Mutex::new(VecDeque::new()),
            upload_delay: Mutex::new(Duration::ZERO),
            list_delay: Mutex::new(Duration::ZERO),
            streams_growing: AtomicBool::new(false),
            whole_seconds: AtomicBool::new(false),
            lose_upload_replies: AtomicBool::new(false),
            kept_meta: Mutex::new(MetaFields::PROPERTIES),
            growing_started: AtomicU64::new(0),
            growing_received: AtomicU64::new(0),
            growing_applied: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            cut_next_upload: Mutex::new(None),
            sessions: Mutex::new(upload::Sessions::default()),
        }
    }

    /// Keep only `fields` in [`Remote::set_meta`] (`MetaFields::NONE`: like nginx; mtime and
    /// created only: like OneDrive), so the core's fallback to its local store can be tested.
    pub fn set_kept_meta(&self, fields: MetaFields) {
        *self.kept_meta.lock().unwrap() = fields;
    }

    /// Make every listing answer `delay` after it was taken, as a slow server would: an upload
    /// landing meanwhile is missing from it.
    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock().unwrap() = delay;
    }

    /// Delete `id` and everything below it; with `only_empty`, only when nothing is below it
    /// (`NotEmpty`), checked and deleted under one lock.
    fn delete_path(&self, id: &ItemId, only_empty: bool) -> RemoteResult<()> {
        self.check_up()?;
        let path = id.as_str();
        if path.is_empty() {
            return Err(RemoteError::Unsupported("refusing to delete the root".into()));
        }
        let mut nodes = self.nodes.lock().unwrap();
        if !nodes.contains_key(path) {
            return Err(RemoteError::NotFound);
        }
        let prefix = format!("{path}/");
        if only_empty && nodes.keys().any(|k| k.starts_with(&prefix)) {
            return Err(RemoteError::NotEmpty);
        }
        nodes.retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }

    /// The content of the file at `path`, for assertions.
    pub fn file_content(&self, path: &str) -> Option<Bytes> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .get(path)
            .filter(|n| n.kind == EntryKind::File)
            .map(|n| n.data.clone())
    }

    fn bump(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::Relaxed)
    }

    /// The folder `parent` must exist (`NotFound`) and be a folder.
    fn check_parent(nodes: &BTreeMap<String, Node>, parent: &str) -> RemoteResult<()> {
        match nodes.get(parent) {
            Some(n) if n.kind == EntryKind::Directory => Ok(()),
            Some(_) => Err(RemoteError::Http {
                status: 409,
                message: "parent is not a folder".into(),
            }),
            None => Err(RemoteError::NotFound),
        }
    }

    /// Create or replace a file at `path` (parents are created), as another device would.
    pub fn put_file(&self, path: &str, data: impl Into<Bytes>) {
        let mut nodes = self.nodes.lock().unwrap();
        let mut p = parent_of(path);
        while let Some(dir) = p {
            let v = self.next_version.fetch_add(1, Ordering::Relaxed);
            nodes.entry(dir.to_string()).or_insert(Node {
                kind: EntryKind::Directory,
                data: Bytes::new(),
                mtime: SystemTime::now(),
                version: v,
                meta: Meta::default(),
            });
            p = parent_of(dir);
        }
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        nodes.insert(
            path.to_string(),
            Node {
                kind: EntryKind::File,
                data: data.into(),
                mtime: SystemTime::now(),
                version,
                meta: Meta::default(),
            },
        );
    }

    /// Create a folder at `path` (parents are created).
    pub fn put_dir(&self, path: &str) {
        self.put_file(&join(path, ".keep-placeholder"), Bytes::new());
        self.nodes.lock().unwrap().remove(&join(path, ".keep-placeholder"));
    }

    /// Remove an item and everything below it, as another device would.
    pub fn remove(&self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .lock()
            .unwrap()
            .retain(|k, _| k != path && !k.starts_with(&prefix));
    }

    /// Make every call fail with a connection error (`true`) or work again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self) -> RemoteResult<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(RemoteError::Connect("memory remote is down".into()))
        } else {
            Ok(())
        }
    }

    fn check_name(name: &str) -> RemoteResult<()> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(RemoteError::Unsupported(format!("invalid name {name:?}")));
        }
        Ok(())
    }

    fn entry(path: &str, node: &Node) -> Entry {
        Entry {
            id: ItemId::new(path),
            name: path.rsplit('/').next().unwrap_or("").to_string(),
            kind: node.kind,
            size: node.data.len() as u64,
            mtime: node.mtime,
            version: Some(Version::from_etag(&node.version.to_string())),
            meta: node.meta.clone(),
        }
    }
}

#[async_trait]
impl Remote for MemoryRemote {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn root(&self) -> RemoteResult<Entry> {
        self.stat(&ItemId::new("")).await
    }

    async fn stat(&self, id: &ItemId) -> RemoteResult<Entry> {
        self.check_up()?;
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let nodes = self.nodes.lock().unwrap();
        nodes
            .get(id.as_str())
            .map(|n| Self::entry(id.as_str(), n))
            .ok_or(RemoteError::NotFound)
    }

    async fn lookup(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        self.check_up()?;
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let path = join(parent.as_str(), name);
        let nodes = self.nodes.lock().unwrap();
        nodes
            .get(&path)
            .map(|n| Self::entry(&path, n))
            .ok_or(RemoteError::NotFound)
    }

    async fn list(&self, dir: &ItemId) -> RemoteResult<Vec<Entry>> {
        self.check_up()?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        let listed: Vec<Entry> = {
            let nodes = self.nodes.lock().unwrap();
            match nodes.get(dir.as_str()) {
                Some(n) if n.kind == EntryKind::Directory => {}
                Some(_) => {
                    return Err(RemoteError::Http {
                        status: 400,
                        message: "not a folder".into(),
                    })
                }
                None => return Err(RemoteError::NotFound),
            }
            nodes
                .iter()
                .filter(|(k, _)| !k.is_empty() && parent_of(k) == Some(dir.as_str()))
                .map(|(k, n)| Self::entry(k, n))
                .collect()
        };
        // The answer is taken before the delay, so it may be stale by the time it arrives.
        let delay = *self.list_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(listed)
    }

    async fn read(&self, id: &ItemId, version: Option<&Version>, offset: u64, len: u64) -> RemoteResult<Bytes> {
        self.check_up()?;
        let nodes = self.nodes.lock().unwrap();
        let node = nodes.get(id.as_str()).ok_or(RemoteError::NotFound)?;
        if let Some(v) = version {
            if v.as_str() != node.version.to_string() {
                return Err(RemoteError::VersionChanged);
            }
        }
        let start = (offset as usize).min(node.data.len());
        let end = (offset.saturating_add(len) as usize).min(node.data.len());
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add((end - start) as u64, Ordering::Relaxed);
        Ok(node.data.slice(start..end))
    }

    async fn quota(&self) -> RemoteResult<Option<Quota>> {
        self.check_up()?;
        let used = self.nodes.lock().unwrap().values().map(|n| n.data.len() as u64).sum();
        Ok(Some(Quota {
            used: Some(used),
            available: Some(1 << 40),
        }))
    }

    fn moved_id(&self, id: &ItemId, from: &ItemId, to: &ItemId) -> Option<ItemId> {
        // Ids are paths: what was below the folder is now below its new path.
        super::moved_path_id(id, from, to)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes: true,
            conditional_writes: true,
            set_mtime: true,
            case_insensitive_names: false,
            kept_meta: *self.kept_meta.lock().unwrap(),
            propagates_versions: false,
            streams_growing_uploads: self.streams_growing.load(Ordering::SeqCst),
        }
    }

    async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
        self.receive(to, from, cx).await
    }

    async fn mkdir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        self.check_up()?;
        Self::check_name(name)?;
        let path = join(parent.as_str(), name);
        let mut nodes = self.nodes.lock().unwrap();
        Self::check_parent(&nodes, parent.as_str())?;
        if nodes.contains_key(&path) {
            return Err(RemoteError::AlreadyExists);
        }
        let node = Node {
            kind: EntryKind::Directory,
            data: Bytes::new(),
            mtime: SystemTime::now(),
            version: self.bump(),
            meta: Meta::default(),
        };
        let entry = Self::entry(&path, &node);
        nodes.insert(path, node);
        Ok(entry)
    }

    async fn delete(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_path(id, false)
    }

    /// Checked and deleted under one lock: as atomic as a server that enforces the condition.
    async fn delete_empty_folder(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_path(id, true)
    }

    async fn rename(&self, id: &ItemId, new_parent: &ItemId, new_name: &str, replace: bool) -> RemoteResult<Entry> {
        self.check_up()?;
        Self::check_name(new_name)?;
        let from = id.as_str();
        if from.is_empty() {
            return Err(RemoteError::Unsupported("cannot move the root".into()));
        }
        let to = join(new_parent.as_str(), new_name);
        let mut nodes = self.nodes.lock().unwrap();
        let Some(node) = nodes.get(from) else {
            return Err(RemoteError::NotFound);
        };
        if to == from {
            return Ok(Self::entry(from, node));
        }
        Self::check_parent(&nodes, new_parent.as_str())?;
        let from_prefix = format!("{from}/");
        if to.starts_with(&from_prefix) {
            return Err(RemoteError::Forbidden("cannot move a folder into itself".into()));
        }
        let to_prefix = format!("{to}/");
        if let Some(target) = nodes.get(&to) {
            if !replace {
                return Err(RemoteError::AlreadyExists);
            }
            let has_children = nodes.keys().any(|k| k.starts_with(&to_prefix));
            if target.kind == EntryKind::Directory && has_children {
                return Err(RemoteError::AlreadyExists);
            }
            nodes.retain(|k, _| *k != to && !k.starts_with(&to_prefix));
        }
        let moved: Vec<String> = nodes
            .keys()
            .filter(|k| k.as_str() == from || k.starts_with(&from_prefix))
            .cloned()
            .collect();
        for old in moved {
            if let Some(n) = nodes.remove(&old) {
                let new = format!("{to}{}", &old[from.len()..]);
                nodes.insert(new, n);
            }
        }
        let node = nodes.get(&to).ok_or(RemoteError::NotFound)?;
        Ok(Self::entry(&to, node))
    }

    async fn set_mtime(&self, id: &ItemId, mtime: SystemTime) -> RemoteResult<Entry> {
        self.check_up()?;
        let version = self.bump();
        let mut nodes = self.nodes.lock().unwrap();
        let node = nodes.get_mut(id.as_str()).ok_or(RemoteError::NotFound)?;
        node.mtime = mtime;
        node.version = version;
        Ok(Self::entry(id.as_str(), node))
    }

    /// Keeps what `kept_meta` allows; the content version stays (metadata is not content, as on
    /// WebDAV and OneDrive). A modification time is also the item's `mtime`, as on OneDrive.
    async fn set_meta(&self, id: &ItemId, meta: &Meta, precondition: Precondition) -> RemoteResult<Entry> {
        self.check_up()?;
        if let Some(why) = meta.invalid() {
            return Err(RemoteError::Unsupported(why));
        }
        let kept = meta.restricted_to(*self.kept_meta.lock().unwrap());
        let mut nodes = self.nodes.lock().unwrap();
        let node = nodes.get_mut(id.as_str()).ok_or(RemoteError::NotFound)?;
        match precondition {
            Precondition::Absent => return Err(RemoteError::AlreadyExists),
            Precondition::Matches(v) if v.as_str() != node.version.to_string() => {
                return Err(RemoteError::PreconditionFailed)
            }
            _ => {}
        }
        let mut kept = node.meta.overlaid_with(&kept);
        if let Some(mtime) = kept.mtime {
            let stored = self.stored_mtime(mtime);
            (node.mtime, kept.mtime) = (stored, Some(stored));
        }
        node.meta = kept;
        Ok(Self::entry(id.as_str(), node))
    }
}

#[cfg(test)]
mod tests;
