//! An in-memory [`Remote`] for tests of the layers above: a tree of files and folders that tests
//! can change "out of band" (as another device would), with counters of what was asked of it and a
//! switch that makes every call fail as if the server were down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Entry, EntryKind, ItemId, Quota, Remote, Version};
use crate::error::{RemoteError, RemoteResult};

#[derive(Clone)]
struct Node {
    kind: EntryKind,
    data: Bytes,
    mtime: SystemTime,
    version: u64,
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

    fn entry(path: &str, node: &Node) -> Entry {
        Entry {
            id: ItemId::new(path),
            name: path.rsplit('/').next().unwrap_or("").to_string(),
            kind: node.kind,
            size: node.data.len() as u64,
            mtime: node.mtime,
            version: Some(Version::from_etag(&node.version.to_string())),
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
        Ok(nodes
            .iter()
            .filter(|(k, _)| !k.is_empty() && parent_of(k) == Some(dir.as_str()))
            .map(|(k, n)| Self::entry(k, n))
            .collect())
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
}
