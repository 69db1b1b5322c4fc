//! An in-memory [`Remote`] for tests of the layers above: a tree of files and folders that tests
//! can change "out of band" (as another device would), with counters of what was asked of it, a
//! switch that makes every call fail as if the server were down, and fault switches for uploads
//! (fail the next n, delay each).
//!
//! Writes behave like a well-behaved server: conditional uploads are enforced atomically, the
//! modification time given is kept, every change of content or mtime gives a new version, and a
//! rename with `replace` refuses to replace a folder that is not empty (like [`crate::webdav`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Capabilities, Entry, EntryKind, GrowingFile, ItemId, Meta, MetaFields, Precondition, Quota, Remote,
    TransferProgress, Version,
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
    /// Whether [`Remote::streams_growing_uploads`] says yes.
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
        }
    }

    /// Keep only `fields` in [`Remote::set_meta`] (`MetaFields::NONE`: like nginx; mtime and
    /// created only: like OneDrive), so the core's fallback to its local store can be tested.
    pub fn set_kept_meta(&self, fields: MetaFields) {
        *self.kept_meta.lock().unwrap() = fields;
    }

    /// Let the core upload files while they are written ([`Remote::upload_growing`]); off by
    /// default, like remotes that cannot promise an interrupted upload changes nothing.
    pub fn set_streams_growing_uploads(&self, on: bool) {
        self.streams_growing.store(on, Ordering::SeqCst);
    }

    /// Store `data` as `name` in `parent` the way a server applies a complete upload: after the
    /// upload delay and scripted failures, checking the precondition at that moment.
    async fn apply_upload(
        &self,
        parent: &ItemId,
        name: &str,
        data: Bytes,
        mtime: SystemTime,
        precondition: Precondition,
    ) -> RemoteResult<Entry> {
        let delay = *self.upload_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = self.upload_failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        let entry = self.apply_now(parent, name, data, mtime, &precondition)?;
        if self.lose_upload_replies.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(entry)
    }

    /// The upload's effect on the drive, checked and applied at once.
    fn apply_now(
        &self,
        parent: &ItemId,
        name: &str,
        data: Bytes,
        mtime: SystemTime,
        precondition: &Precondition,
    ) -> RemoteResult<Entry> {
        self.check_up()?;
        let path = join(parent.as_str(), name);
        let mut nodes = self.nodes.lock().unwrap();
        Self::check_parent(&nodes, parent.as_str())?;
        let existing = nodes.get(&path);
        match (precondition, existing) {
            (Precondition::Absent, Some(_)) => return Err(RemoteError::AlreadyExists),
            (Precondition::Matches(_), None) => return Err(RemoteError::PreconditionFailed),
            (Precondition::Matches(v), Some(n)) if v.as_str() != n.version.to_string() => {
                return Err(RemoteError::PreconditionFailed)
            }
            _ => {}
        }
        if existing.is_some_and(|n| n.kind == EntryKind::Directory) {
            return Err(RemoteError::Http {
                status: 405,
                message: "cannot upload over a folder".into(),
            });
        }
        let node = Node {
            kind: EntryKind::File,
            data,
            mtime: self.stored_mtime(mtime),
            version: self.bump(),
            // A replaced file keeps its mode and owner, as on a local filesystem (and on WebDAV,
            // whose dead properties outlive a PUT); the new content brings its own time.
            meta: Meta {
                mtime: None,
                ..existing.map(|n| n.meta.clone()).unwrap_or_default()
            },
        };
        let entry = Self::entry(&path, &node);
        nodes.insert(path, node);
        self.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    /// Make the next `n` uploads fail with `error` (after the upload delay, without changing
    /// anything), on top of failures already queued.
    pub fn fail_next_uploads(&self, n: usize, error: RemoteError) {
        let mut q = self.upload_failures.lock().unwrap();
        q.extend(std::iter::repeat_n(error, n));
    }

    /// Drop the upload failures still queued by [`MemoryRemote::fail_next_uploads`].
    pub fn clear_upload_failures(&self) {
        self.upload_failures.lock().unwrap().clear();
    }

    /// Make every listing answer `delay` after it was taken, as a slow server would: an upload
    /// landing meanwhile is missing from it.
    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock().unwrap() = delay;
    }

    /// From now on, apply each upload and then never answer it, as when the daemon is killed
    /// while the server's reply is on its way: the server holds the content, the client never
    /// hears it did.
    pub fn set_lose_upload_replies(&self, on: bool) {
        self.lose_upload_replies.store(on, Ordering::SeqCst);
    }

    /// Keep modification times in whole seconds from now on, as Apache and OneDrive do.
    pub fn set_whole_second_mtimes(&self, on: bool) {
        self.whole_seconds.store(on, Ordering::SeqCst);
    }

    fn stored_mtime(&self, mtime: SystemTime) -> SystemTime {
        if !self.whole_seconds.load(Ordering::SeqCst) {
            return mtime;
        }
        let secs = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Make every upload take `delay` before it is applied (or fails), as a slow link would.
    pub fn set_upload_delay(&self, delay: Duration) {
        *self.upload_delay.lock().unwrap() = delay;
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
        }
    }

    async fn upload(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        mtime: SystemTime,
        precondition: Precondition,
    ) -> RemoteResult<Entry> {
        self.check_up()?;
        Self::check_name(name)?;
        let data = tokio::fs::read(source)
            .await
            .map_err(|e| RemoteError::LocalFile(format!("{}: {e}", source.display())))?;
        self.apply_upload(parent, name, data.into(), mtime, precondition).await
    }

    fn streams_growing_uploads(&self) -> bool {
        self.streams_growing.load(Ordering::SeqCst)
    }

    async fn upload_growing(
        &self,
        parent: &ItemId,
        name: &str,
        file: &Arc<GrowingFile>,
        precondition: Precondition,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        use futures::TryStreamExt;
        self.check_up()?;
        Self::check_name(name)?;
        self.growing_started.fetch_add(1, Ordering::Relaxed);
        sent.set(0);
        let mut body = std::pin::pin!(file.clone().body(|_| {}));
        let mut data = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| RemoteError::LocalFile(e.to_string()))?
        {
            self.growing_received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            sent.add(chunk.len() as u64);
            data.extend_from_slice(&chunk);
        }
        let (_, mtime) = file
            .sealed()
            .ok_or_else(|| RemoteError::LocalFile("growing file ended unsealed".into()))?;
        let entry = self
            .apply_upload(parent, name, data.into(), mtime, precondition)
            .await?;
        self.growing_applied.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
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
        nodes.retain(|k, _| k != path && !k.starts_with(&prefix));
        Ok(())
    }

    /// Checked and deleted under one lock: as atomic as a server that enforces the condition.
    async fn delete_empty_folder(&self, id: &ItemId) -> RemoteResult<()> {
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
        if nodes.keys().any(|k| k.starts_with(&prefix)) {
            return Err(RemoteError::NotEmpty);
        }
        nodes.remove(path);
        Ok(())
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
mod tests {
    use std::io::Write;

    use super::*;

    fn id(s: &str) -> ItemId {
        ItemId::new(s)
    }

    fn staged(data: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn uploads_honour_preconditions_and_keep_mtime() {
        let m = MemoryRemote::new();
        let one = staged(b"one");
        let e1 = m
            .upload(&id(""), "f", one.path(), t(1000), Precondition::Absent)
            .await
            .unwrap();
        assert_eq!((e1.size, e1.mtime, e1.kind), (3, t(1000), EntryKind::File));
        assert!(matches!(
            m.upload(&id(""), "f", one.path(), t(1), Precondition::Absent).await,
            Err(RemoteError::AlreadyExists)
        ));
        let two = staged(b"second");
        let v1 = e1.version.clone().unwrap();
        let e2 = m
            .upload(&id(""), "f", two.path(), t(2000), Precondition::Matches(v1.clone()))
            .await
            .unwrap();
        assert_ne!(e2.version, e1.version);
        assert_eq!(m.file_content("f").unwrap(), &b"second"[..]);
        assert!(matches!(
            m.upload(&id(""), "f", one.path(), t(1), Precondition::Matches(v1))
                .await,
            Err(RemoteError::PreconditionFailed)
        ));
        assert!(matches!(
            m.upload(
                &id(""),
                "gone",
                one.path(),
                t(1),
                Precondition::Matches(Version::from_etag("1"))
            )
            .await,
            Err(RemoteError::PreconditionFailed)
        ));
        m.upload(&id(""), "f", one.path(), t(3000), Precondition::Any)
            .await
            .unwrap();
        assert_eq!(m.file_content("f").unwrap(), &b"one"[..]);
        assert!(matches!(
            m.upload(&id("nodir"), "f", one.path(), t(1), Precondition::Any).await,
            Err(RemoteError::NotFound)
        ));
        assert!(matches!(
            m.upload(&id(""), "a/b", one.path(), t(1), Precondition::Any).await,
            Err(RemoteError::Unsupported(_))
        ));
        assert_eq!(m.uploads.load(Ordering::Relaxed), 3);
        assert!(m.capabilities().conditional_writes && m.capabilities().set_mtime);
    }

    #[tokio::test]
    async fn set_meta_keeps_what_it_may_and_honours_preconditions() {
        let m = MemoryRemote::new();
        m.put_file("f", &b"abc"[..]);
        let before = m.stat(&id("f")).await.unwrap();
        let meta = Meta {
            mode: Some(0o755),
            uid: Some(7),
            gid: Some(8),
            mtime: Some(t(42) + Duration::from_nanos(5)),
            atime: Some(t(43)),
            ..Meta::default()
        };
        let e = m
            .set_meta(&id("f"), &meta, Precondition::Matches(before.version.clone().unwrap()))
            .await
            .unwrap();
        assert_eq!(e.meta, meta);
        assert_eq!(
            (e.mtime, e.version.clone()),
            (meta.mtime.unwrap(), before.version.clone())
        );
        // Later calls change only what they hold.
        let chmod = Meta {
            mode: Some(0o600),
            ..Meta::default()
        };
        let e = m.set_meta(&id("f"), &chmod, Precondition::Any).await.unwrap();
        assert_eq!(e.meta, meta.overlaid_with(&chmod));
        assert_eq!(m.list(&id("")).await.unwrap()[0].meta, e.meta);
        // A replaced file keeps mode and owner.
        let staged = staged(b"new");
        let e = m
            .upload(&id(""), "f", staged.path(), t(99), Precondition::Any)
            .await
            .unwrap();
        assert_eq!((e.meta.mode, e.meta.uid, e.meta.mtime), (Some(0o600), Some(7), None));
        assert!(matches!(
            m.set_meta(&id("f"), &chmod, Precondition::Matches(before.version.unwrap()))
                .await,
            Err(RemoteError::PreconditionFailed)
        ));
        assert!(m.set_meta(&id("f"), &chmod, Precondition::Absent).await.is_err());
        assert!(matches!(
            m.set_meta(&id("nope"), &chmod, Precondition::Any).await,
            Err(RemoteError::NotFound)
        ));
        let bad = Meta {
            mode: Some(0o100644),
            ..Meta::default()
        };
        assert!(m.set_meta(&id("f"), &bad, Precondition::Any).await.is_err());
        // A remote that keeps only times (like OneDrive) drops the rest.
        m.set_kept_meta(MetaFields {
            mtime: true,
            created: true,
            ..MetaFields::NONE
        });
        m.put_file("g", &b""[..]);
        let e = m.set_meta(&id("g"), &meta, Precondition::Any).await.unwrap();
        assert_eq!(
            e.meta,
            Meta {
                mtime: meta.mtime,
                ..Meta::default()
            }
        );
        assert!(!m.capabilities().kept_meta.mode);
    }

    #[tokio::test]
    async fn fault_switches() {
        let m = MemoryRemote::new();
        let f = staged(b"x");
        m.fail_next_uploads(2, RemoteError::Timeout("injected".into()));
        for _ in 0..2 {
            assert!(matches!(
                m.upload(&id(""), "f", f.path(), t(1), Precondition::Any).await,
                Err(RemoteError::Timeout(_))
            ));
        }
        assert!(m.file_content("f").is_none(), "a failed upload changes nothing");
        m.upload(&id(""), "f", f.path(), t(1), Precondition::Any).await.unwrap();
        m.set_upload_delay(Duration::from_millis(50));
        let started = std::time::Instant::now();
        m.upload(&id(""), "g", f.path(), t(1), Precondition::Any).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn mkdir_delete_rename_set_mtime() {
        let m = MemoryRemote::new();
        let d = m.mkdir(&id(""), "d").await.unwrap();
        assert_eq!(d.kind, EntryKind::Directory);
        assert!(matches!(m.mkdir(&id(""), "d").await, Err(RemoteError::AlreadyExists)));
        assert!(matches!(m.mkdir(&id("nope"), "x").await, Err(RemoteError::NotFound)));
        m.put_file("d/a.txt", &b"a"[..]);
        m.put_file("d/sub/b.txt", &b"b"[..]);
        m.put_file("top.txt", &b"top"[..]);

        // A folder moves with everything in it.
        let moved = m.rename(&id("d"), &id(""), "e", false).await.unwrap();
        assert_eq!(moved.id, id("e"));
        assert_eq!(m.file_content("e/sub/b.txt").unwrap(), &b"b"[..]);
        assert!(m.file_content("d/a.txt").is_none());
        // No replace without asking; never a non-empty folder; a file over a file with replace.
        assert!(matches!(
            m.rename(&id("top.txt"), &id("e"), "a.txt", false).await,
            Err(RemoteError::AlreadyExists)
        ));
        m.mkdir(&id(""), "f").await.unwrap();
        m.put_file("f/keep", &b"k"[..]);
        assert!(matches!(
            m.rename(&id("e"), &id(""), "f", true).await,
            Err(RemoteError::AlreadyExists)
        ));
        m.rename(&id("top.txt"), &id("e"), "a.txt", true).await.unwrap();
        assert_eq!(m.file_content("e/a.txt").unwrap(), &b"top"[..]);
        assert!(matches!(
            m.rename(&id("e"), &id("e/sub"), "x", false).await,
            Err(RemoteError::Forbidden(_))
        ));
        assert!(matches!(
            m.rename(&id("missing"), &id(""), "x", false).await,
            Err(RemoteError::NotFound)
        ));

        let e = m.set_mtime(&id("e/a.txt"), t(42)).await.unwrap();
        assert_eq!(e.mtime, t(42));
        assert_eq!(m.stat(&id("e/a.txt")).await.unwrap().mtime, t(42));

        m.delete(&id("e")).await.unwrap();
        assert!(m.file_content("e/sub/b.txt").is_none());
        assert!(matches!(m.stat(&id("e/sub")).await, Err(RemoteError::NotFound)));
        assert!(matches!(m.delete(&id("e")).await, Err(RemoteError::NotFound)));
        assert!(m.delete(&id("")).await.is_err());
    }
}
