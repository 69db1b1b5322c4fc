//! Open file and folder handles. A file handle pins the version of the file that was current at
//! open, so one open sees one consistent version; a folder handle holds a snapshot of the listing,
//! so `readdir` offsets stay stable while the folder changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::remote::{Entry, ItemId, Version};

use super::prefetch::ReadPattern;

/// An open file.
#[derive(Debug)]
pub struct FileHandle {
    /// Inode it was opened through.
    pub ino: u64,
    /// The remote item.
    pub id: ItemId,
    /// The content version that keys its cached blocks.
    pub tag: Version,
    /// The server's own version, when it gives one (checked on every ranged read).
    pub remote_version: Option<Version>,
    /// File size at open.
    pub size: u64,
    /// Read-pattern detection for prefetch.
    pub pattern: Mutex<ReadPattern>,
    /// Whether it was opened for writing.
    pub writable: bool,
    /// Opened while the file had local content (being written, or waiting for its upload): it
    /// reads that content, and once the local copy is gone, the version our upload made, never
    /// the server version that was current before (see `DriveFs::read`).
    pub follows_local: bool,
    /// Whether a read through it returned data (from then on it must stay on its version).
    pub served: std::sync::atomic::AtomicBool,
}

/// One entry of a folder snapshot.
#[derive(Clone, Debug)]
pub struct DirSlot {
    /// Inode number.
    pub ino: u64,
    /// Name shown (`.` and `..` included).
    pub name: String,
    /// The item, or `None` for `.` and `..`.
    pub entry: Option<Entry>,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Whether it is shown as a symbolic link (its `.rclonelink` file, under the link's name).
    pub link: bool,
}

/// An open folder.
#[derive(Debug)]
pub struct DirHandle {
    /// Inode of the folder.
    pub ino: u64,
    /// Snapshot of its entries; offset `i + 1` follows entry `i`.
    pub slots: Vec<DirSlot>,
}

/// Table of open handles of one kind.
pub struct HandleTable<T> {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<T>>>,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            next: AtomicU64::new(1),
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> HandleTable<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<T>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store a handle and return its number.
    pub fn insert(&self, handle: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, Arc::new(handle));
        fh
    }

    /// The handle numbered `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<T>> {
        self.lock().get(&fh).cloned()
    }

    /// Put `handle` in place of the handle numbered `fh`.
    pub fn replace(&self, fh: u64, handle: Arc<T>) {
        self.lock().insert(fh, handle);
    }

    /// Close handle `fh`.
    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.lock().remove(&fh)
    }

    /// Whether some open handle satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&T) -> bool) -> bool {
        self.lock().values().any(|h| pred(h))
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
