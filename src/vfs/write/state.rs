//! How a file's local content comes and changes hands, with no lock held across the I/O.
//!
//! Slow work on a staged file (filling it from the server, copying it away from the upload queue,
//! resizing it, syncing it for the queue) first marks the file [`Busy`] under the inode table's
//! lock (from then on no new write starts), waits for the writes in flight to end
//! ([`DriveFs::quiesce`]), then does the I/O with no lock held, then applies its result under the lock again, to
//! the node as it is by then. While a file is busy, writes to it and other slow work on it wait
//! (for [`DriveFs::file_changed`](super::super::fs::DriveFs)); everything else in the mount goes
//! on. A file without local content has nothing to mark: two opens filling it at once both
//! download, and the later one to finish finds the other's content in place and drops its own.

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind};

use super::super::error::{FsError, FsResult};
use super::super::fs::DriveFs;
use super::super::local::{Busy, LocalContent, NodeId};
use super::super::namespace::Node;
use super::super::writeback::WriteBack;
use super::{io_err, new_key};
use std::os::unix::fs::FileExt;

/// A mark of slow work on one file's staged copy: cleared when the work applies its result
/// ([`BusyMark::clear_with`]), or when it gives up (on drop), and the file's waiters are woken
/// either way.
pub(super) struct BusyMark<'a> {
    fs: &'a DriveFs,
    ino: u64,
    key: String,
    cleared: bool,
}

impl<'a> BusyMark<'a> {
    /// Mark (already set on the node, under its lock) of `ino`'s content under `key`.
    pub(super) fn new(fs: &'a DriveFs, ino: u64, key: &str) -> Self {
        BusyMark {
            fs,
            ino,
            key: key.to_string(),
            cleared: false,
        }
    }

    /// The inode marked.
    pub(super) fn ino(&self) -> u64 {
        self.ino
    }

    /// Apply the work's result to the node and clear the mark, in one step under the node's lock.
    /// `None` (applying nothing) when the content under this key is gone.
    pub(super) fn clear_with<R>(mut self, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        self.cleared = true;
        let key = self.key.clone();
        let r = self.fs.inodes.with_node(self.ino, |n| {
            let l = n.local.as_mut().filter(|l| l.key == key)?;
            l.busy = None;
            Some(f(n))
        });
        self.fs.file_changed.notify_waiters();
        r.flatten()
    }
}

impl Drop for BusyMark<'_> {
    fn drop(&mut self) {
        if self.cleared {
            return;
        }
        let key = std::mem::take(&mut self.key);
        self.fs.inodes.with_node(self.ino, |n| {
            if let Some(l) = n.local.as_mut().filter(|l| l.key == key) {
                l.busy = None;
            }
        });
        self.fs.file_changed.notify_waiters();
    }
}

/// What [`DriveFs::make_writable`] found to do under the node's lock.
enum Step {
    /// The file has no local content: fill a new staged file.
    Fill,
    /// Done already (the staged file was ours and nothing needed resizing).
    Done,
    /// Slow work on the staged file, marked busy: the key of the content marked.
    Work(String),
}

impl DriveFs {
    /// Run `f` on `ino`'s node under its lock at a moment when `ready` holds for its local content
    /// (or it has none), waiting (with no lock held) for the file's busy work or writes to end.
    pub(super) async fn when_file<T>(
        &self,
        ino: u64,
        ready: impl Fn(&LocalContent) -> bool,
        mut f: impl FnMut(&mut Node) -> T,
    ) -> FsResult<T> {
        loop {
            let changed = self.file_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let done = self
                .inodes
                .with_node(ino, |n| {
                    if n.local.as_ref().is_some_and(|l| !ready(l)) {
                        None
                    } else {
                        Some(f(n))
                    }
                })
                .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
            if let Some(t) = done {
                return Ok(t);
            }
            changed.await;
        }
    }

    /// Wait until no write into `ino`'s staged file is in flight, once the file's content `key`
    /// is marked busy by the caller (so no new write starts): returns the node as it is then,
    /// without local content when that content went meanwhile.
    pub(super) async fn quiesce(&self, ino: u64, key: &str) -> FsResult<Node> {
        loop {
            let changed = self.file_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self
                .inodes
                .with_node(ino, |n| match n.local.as_ref() {
                    Some(l) if l.key == key && l.writing > 0 => None,
                    Some(l) if l.key != key => {
                        let mut n = n.clone();
                        n.local = None;
                        Some(n)
                    }
                    _ => Some(n.clone()),
                })
                .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
            if let Some(n) = now {
                return Ok(n);
            }
            changed.await;
        }
    }

    /// Give `ino` local content it may write to: reuse what it has, copy it when the queue owns
    /// it, or fill a new staged file from the server (not when `resize` is `Some(0)`); then, with
    /// `resize`, cut or extend it to that size. `add_writer`: count a new writing handle.
    pub(super) async fn make_writable(&self, ino: u64, resize: Option<u64>, add_writer: bool) -> FsResult<()> {
        let wb = self.wb()?;
        loop {
            let step = self
                .when_file(
                    ino,
                    |l| l.busy.is_none(),
                    |n| {
                        if n.entry.kind == EntryKind::Directory {
                            return Err(fs_err!(IsADirectory, "inode {ino} is a folder"));
                        }
                        let Some(l) = n.local.as_mut() else {
                            return Ok(Step::Fill);
                        };
                        if l.state.owns_staged() && resize.is_none() {
                            if add_writer {
                                l.writers += 1;
                            }
                            return Ok(Step::Done);
                        }
                        l.busy = Some(Busy::Preparing);
                        Ok(Step::Work(l.key.clone()))
                    },
                )
                .await??;
            let done = match step {
                Step::Done => true,
                Step::Fill => self.fill_local(wb, ino, resize, add_writer).await?,
                Step::Work(key) => {
                    let mark = BusyMark::new(self, ino, &key);
                    match self.quiesce(ino, &key).await?.local {
                        Some(local) => self.prepare_staged(wb, &local, resize, add_writer, mark)?,
                        None => false,
                    }
                }
            };
            if done {
                return Ok(());
            }
            // The file changed hands meanwhile (another open filled it first, or its local copy
            // went): start again from what it is now.
        }
    }

    /// The busy part of [`make_writable`](Self::make_writable) for content marked busy as
    /// `local`: a copy when the queue owns the staged file, then the resize. `Ok(false)` when the
    /// content went meanwhile.
    pub(super) fn prepare_staged(
        &self,
        wb: &WriteBack,
        local: &LocalContent,
        resize: Option<u64>,
        add_writer: bool,
        mark: BusyMark<'_>,
    ) -> FsResult<bool> {
        let now = SystemTime::now();
        let fresh = if local.state.owns_staged() {
            None
        } else if resize == Some(0) {
            Some(wb.staging.create().map_err(|e| io_err("stage", e))?)
        } else {
            Some(
                wb.staging
                    .copy_of(&local.file, local.size)
                    .map_err(|e| io_err("stage", e))?,
            )
        }
        .map(|(path, file)| (path, Arc::new(file)));
        let resized = match resize {
            Some(size) => {
                let file = fresh.as_ref().map(|f| &f.1).unwrap_or(&local.file);
                wb.staging
                    .reserve(size.saturating_sub(local.size))
                    .and_then(|()| file.set_len(size))
                    .map_err(|e| io_err("truncate staged", e))
            }
            None => Ok(()),
        };
        if let Err(e) = resized {
            if let Some((path, _)) = fresh {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        let path = fresh.as_ref().map(|f| f.0.clone());
        let applied = mark.clear_with(|n| {
            let l = n.local.as_mut().expect("checked by clear_with");
            if let Some(staged) = fresh {
                l.note_copied(staged);
            }
            if let Some(size) = resize {
                l.note_resized(size, now);
            }
            if add_writer {
                l.writers += 1;
            }
            n.entry.size = l.size;
            n.entry.mtime = l.mtime;
        });
        if applied.is_none() {
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(applied.is_some())
    }

    /// [`make_writable`](Self::make_writable) of a file without local content: a new staged file,
    /// filled from the server's version unless `resize` is `Some(0)`, with no lock held while it
    /// downloads. `Ok(false)` when another open gave the file local content first.
    pub(super) async fn fill_local(
        &self,
        wb: &WriteBack,
        ino: u64,
        resize: Option<u64>,
        add_writer: bool,
    ) -> FsResult<bool> {
        let now = SystemTime::now();
        let mut entry = self.fresh_entry(ino).await?;
        let (path, file) = wb.staging.create().map_err(|e| io_err("stage", e))?;
        let file = Arc::new(file);
        let filled = self.fill_staged(wb, ino, &mut entry, &file, resize).await;
        if let Err(e) = filled {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        // The time the item shows (a time kept as metadata over the server's own).
        let shown_mtime = self.shown_attr(ino, &entry).mtime;
        let mut local = LocalContent::new(
            new_key(),
            NodeId::Remote(entry.id.clone()),
            (path.clone(), file),
            if resize == Some(0) { 0 } else { entry.size },
            shown_mtime,
        );
        local.base_version = entry.version.clone();
        if let Some(size) = resize {
            local.note_resized(size, now);
        }
        local.writers = u32::from(add_writer);
        let installed = self
            .inodes
            .with_node(ino, move |n| {
                if n.local.is_some() {
                    return false;
                }
                n.entry.size = local.size;
                n.entry.mtime = local.mtime;
                n.local = Some(local);
                true
            })
            .unwrap_or(false);
        if !installed {
            let _ = std::fs::remove_file(&path);
            if self.inodes.get(ino).is_none() {
                return Err(fs_err!(NotFound, "unknown inode {ino}"));
            }
        }
        Ok(installed)
    }

    /// Fill `file` with the server's content of `entry` (unless `resize` is `Some(0)`), moving to
    /// the version the server holds when the one we knew was replaced; then resize it.
    pub(super) async fn fill_staged(
        &self,
        wb: &WriteBack,
        ino: u64,
        entry: &mut Entry,
        file: &std::fs::File,
        resize: Option<u64>,
    ) -> FsResult<()> {
        let mut tries = 0;
        while resize != Some(0) && entry.size > 0 {
            match self.fill_from_server(wb, entry, file).await {
                Ok(()) => break,
                // The version we knew was replaced on the server: open the one it holds now.
                Err(e) if e.is_version_changed() && tries < 3 => {
                    tries += 1;
                    *entry = self.server_entry(ino).await?;
                    file.set_len(0).map_err(|e| io_err("truncate staged", e))?;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(size) = resize.filter(|s| *s > 0) {
            wb.staging
                .reserve(size.saturating_sub(entry.size))
                .and_then(|()| file.set_len(size))
                .map_err(|e| io_err("truncate staged", e))?;
        }
        Ok(())
    }

    /// Copy the server's content of `entry` into `file`, checking that it stays one version.
    pub(super) async fn fill_from_server(&self, wb: &WriteBack, entry: &Entry, file: &std::fs::File) -> FsResult<()> {
        wb.staging.reserve(entry.size).map_err(|e| io_err("stage", e))?;
        let chunk = self.cache.block_size().max(1 << 20) * 4;
        let mut off = 0;
        while off < entry.size {
            let len = chunk.min(entry.size - off);
            let data = self
                .remote
                .read(&entry.id, entry.version.as_ref(), off, len)
                .await
                .map_err(|e| match e {
                    RemoteError::VersionChanged => {
                        fs_err!(VersionChanged, "{} changed on the server while opening", entry.id)
                    }
                    e => FsError::from(e),
                })?;
            if data.len() as u64 != len {
                return Err(fs_err!(
                    VersionChanged,
                    "{} is shorter on the server than listed",
                    entry.id
                ));
            }
            file.write_all_at(&data, off).map_err(|e| io_err("write staged", e))?;
            off += len;
        }
        Ok(())
    }
}
