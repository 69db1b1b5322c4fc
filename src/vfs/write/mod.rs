//! The write operations of [`DriveFs`]: create, open for writing, write, truncate, flush, fsync,
//! release, mkdir, unlink, rmdir and rename.
//!
//! File content is written to a staged file on local disk (never held in memory) and handed to the
//! upload queue on `flush` (every `close`) and `fsync`, after which the queue's journal keeps it
//! through crashes. The upload starts at `release` (the last close of the open file), or when
//! someone waits for it. `fsync` through any handle returns once the server has the bytes. Folder
//! operations (mkdir, unlink, rmdir, rename) go to the server at once, so their errors reach the
//! caller.
//!
//! - `state`: a file's local content comes and changes hands (made writable: filled from the
//!   server, copied away from the queue, resized) with no lock held across the I/O.
//! - `data`: writes, truncates and times.
//! - `handoff`: closes, fsyncs and what the upload queue reports back.
//! - `tree`: creates and the folder operations.
//!
//! One owner of a file's state: the node's [`LocalContent`], whose [`FileState`] says who owns the
//! staged file. Its transitions are methods of [`LocalContent`]; slow work (copying, downloading,
//! syncing) marks the file [`Busy`], runs with no lock held, and then applies its result to the
//! node as it is by then; the local copy goes in one place only ([`super::local::settle`]).
//!
//! Ordering rules that keep data safe:
//! - A staged file handed to the queue is immutable; the next write to that file works on a copy.
//! - Before an item moves or is deleted on the server, uploads queued for it (or below it) land
//!   first, so no upload goes to a path that no longer exists.
//!
//! [`FileState`]: super::local::FileState
//! [`Busy`]: super::local::Busy

mod data;
mod handoff;
mod state;
mod tree;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use crate::fs_err;
use crate::remote::{Entry, EntryKind};

use super::attr::{content_tag, Attr};
use super::error::{FsError, FsResult};
use super::fs::DriveFs;
use super::handles::FileHandle;
use super::local::{placeholder_id, LocalContent};
use super::prefetch::ReadPattern;
use super::writeback::queue::{QueueConfig, UploadEvent, UploadQueue};
use super::writeback::staging::StagingArea;
use super::writeback::{WriteBack, WriteBackPaths};

/// A file written in order starts uploading while it is written once it holds this many bytes:
/// smaller files go up whole at close about as fast, with fewer requests.
const GROW_AFTER: u64 = 4 << 20;

static KEYS: AtomicU64 = AtomicU64::new(0);

fn new_key() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("k{ms}-{}-{}", std::process::id(), KEYS.fetch_add(1, Ordering::Relaxed))
}

fn io_err(what: &str, e: std::io::Error) -> FsError {
    FsError::io(what, e)
}

/// Read from local content.
pub(in crate::vfs) fn read_local(local: &LocalContent, offset: u64, size: u32) -> FsResult<Bytes> {
    if offset >= local.size || size == 0 {
        return Ok(Bytes::new());
    }
    let len = (size as u64).min(local.size - offset) as usize;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = local
            .file
            .read_at(&mut buf[done..], offset + done as u64)
            .map_err(|e| io_err("read staged", e))?;
        if n == 0 {
            // The staged file is shorter than recorded: a truncate raced; the rest reads as zeros.
            break;
        }
        done += n;
    }
    Ok(Bytes::from(buf))
}

/// A name the remote could hold: UTF-8, not `.`/`..`, no `/`, at most 255 bytes.
fn checked_name(name: &OsStr) -> FsResult<&str> {
    let s = name
        .to_str()
        .ok_or_else(|| fs_err!(InvalidName, "names must be UTF-8 on this remote"))?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(fs_err!(InvalidName, "invalid name {s:?}"));
    }
    if s.len() > 255 {
        return Err(fs_err!(NameTooLong, "name longer than 255 bytes"));
    }
    Ok(s)
}

impl DriveFs {
    /// [`checked_name`], then the remote's own rules ([`crate::remote::Remote::check_name`]):
    /// a name the server would refuse fails here (EINVAL / ENAMETOOLONG), before anything is
    /// queued or sent.
    fn new_name<'a>(&self, parent: u64, name: &'a OsStr) -> FsResult<&'a str> {
        let name = checked_name(name)?;
        self.remote.check_name(name)?;
        if let Some(dir) = self.path_of(parent) {
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            self.remote.check_path(&path)?;
        }
        Ok(name)
    }

    /// The names from the mount's root down to `ino`, joined by `/` (`""` for the root); `None`
    /// when the chain is broken (an inode forgotten meanwhile).
    fn path_of(&self, ino: u64) -> Option<String> {
        self.inodes.path_of(ino)
    }

    /// Turn on writes: start the upload queue over the journal in `paths` (resuming what a previous
    /// run left) and the staging area. Call once, within the tokio runtime.
    pub fn enable_writes(self: &Arc<Self>, paths: &WriteBackPaths, cfg: QueueConfig) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let sink = Box::new(move |ev: UploadEvent| {
            if let Some(fs) = weak.upgrade() {
                let landed = match &ev {
                    UploadEvent::Uploaded {
                        record,
                        entry,
                        conflict_copy: false,
                        ..
                    } => Some((record.key.clone(), entry.clone())),
                    _ => None,
                };
                let (conflicted, mtime) = fs.on_upload_event(ev);
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                if let (Some((key, entry)), Some(mtime)) = (landed, mtime) {
                    fs.meta_landing_started(&key, &entry.id);
                    let fs = fs.clone();
                    rt.spawn(async move { fs.meta_after_upload(key, mtime, entry).await });
                }
                if let Some(ino) = conflicted {
                    rt.spawn(async move { fs.take_server_version(ino).await });
                }
            }
        });
        let wb = WriteBack::open(paths, self.remote.clone(), cfg, Some(sink))?;
        if self.writeback.set(wb).is_err() {
            return Err(std::io::Error::other("writes are already enabled"));
        }
        Ok(())
    }

    /// Folder `dir` is being used: files of it that a previous run wrote and left in the upload
    /// journal appear in it now, with their local size and content, as they did before the
    /// restart (the server may not have them yet, or hold an older version).
    pub(in crate::vfs) fn show_restored_uploads(&self, dir: &super::namespace::Node) {
        let Some(wb) = self.writeback.get() else { return };
        if wb.restored_left.load(Ordering::Relaxed) == 0 {
            return;
        }
        // The staged files are opened first, with no lock held; the nodes are made under the
        // queue's lock, so no upload event (also delivered under it) lands meanwhile.
        let mut wanted = Vec::new();
        {
            let restored = wb.restored.lock().unwrap_or_else(|e| e.into_inner());
            wb.queue.for_each_queued(|record, _| {
                if record.parent == dir.entry.id.as_str() && restored.contains(&record.key) {
                    wanted.push((record.key.clone(), record.staged.clone(), record.name.clone()));
                }
            });
        }
        if wanted.is_empty() {
            return;
        }
        let mut opened: HashMap<String, (PathBuf, std::io::Result<File>)> = wanted
            .into_iter()
            // Read-only: the queue owns this file; a later write works on a copy.
            .map(|(key, staged, _)| {
                let file = File::open(&staged);
                (key, (staged, file))
            })
            .collect();
        let mut restored = wb.restored.lock().unwrap_or_else(|e| e.into_inner());
        wb.queue.for_each_queued(|record, generation| {
            if record.parent != dir.entry.id.as_str() || !restored.contains(&record.key) {
                return;
            }
            // Opened as this very staged file, or left for the next use of the folder.
            let Some((_, file)) = opened.remove(&record.key).filter(|(path, _)| *path == record.staged) else {
                return;
            };
            restored.remove(&record.key);
            if self.inodes.by_local_key(&record.key).is_some() {
                return;
            }
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(file = %record.name, error = %e, "staged copy of a queued upload is unreadable");
                    return;
                }
            };
            let entry = Entry {
                id: placeholder_id(&record.key),
                name: record.name.clone(),
                kind: EntryKind::File,
                size: record.size,
                mtime: record.mtime(),
                version: None,
                meta: Default::default(),
            };
            let local = LocalContent::restored(
                record.key.clone(),
                (record.staged.clone(), Arc::new(file)),
                record.size,
                record.mtime(),
                record.base_version.as_deref().map(crate::remote::Version::from_etag),
                generation,
            );
            // The kernel holds no reference yet: it takes one when it looks the name up.
            let ino = self.inodes.insert_local(dir.ino, entry, local);
            self.inodes.forget(ino, 1);
        });
        wb.restored_left.store(restored.len() as u64, Ordering::Relaxed);
    }

    fn wb(&self) -> FsResult<&WriteBack> {
        self.check_writable()?;
        self.writeback
            .get()
            .ok_or_else(|| fs_err!(ReadOnly, "the mount is read-only"))
    }

    /// The staging area, when writes are enabled (for tests of its durability).
    pub fn staging(&self) -> Option<&StagingArea> {
        self.writeback.get().map(|w| &w.staging)
    }

    /// The upload queue, when writes are enabled (for status and unmount).
    pub fn upload_queue(&self) -> Option<&Arc<UploadQueue>> {
        self.writeback.get().map(|w| &w.queue)
    }

    fn attr_of(&self, ino: u64) -> FsResult<Attr> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        Ok(self.attr_for(ino, &node.entry))
    }

    fn writable_handle(&self, ino: u64, entry: &Entry) -> u64 {
        self.files.insert(FileHandle {
            ino,
            id: entry.id.clone(),
            tag: content_tag(entry),
            remote_version: entry.version.clone(),
            size: entry.size,
            pattern: Mutex::new(ReadPattern::new(0)),
            writable: true,
            follows_local: true,
            served: Default::default(),
        })
    }
}
