//! Writes, truncates and modification times of files: the staged file takes them.
//!
//! A write runs its `pwrite` with no lock held: under the inode table's lock it only checks that
//! the staged file is ours and not busy and counts itself in flight (`LocalContent::writing`),
//! and afterwards it records the new size. Slow work on the file, once marked, waits until no
//! write is in flight, and new writes wait while it runs.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::GrowingFile;

use super::super::attr::Attr;
use super::super::error::FsResult;
use super::super::fs::{DriveFs, Opened};
use super::super::local::WriteOrder;
use super::super::namespace::DETACHED;
use super::{io_err, GROW_AFTER};

/// What [`DriveFs::write_staged`] did.
pub(super) enum WriteStep {
    /// Wrote this many bytes.
    Wrote(u32),
    /// Slow work on the file is under way: wait for it, then try again.
    Wait(u64),
    /// The upload queue owns the staged file: continue on a copy.
    Copy(u64),
}

impl DriveFs {
    /// Open `ino` for writing (`flags` from open(2)).
    pub(in crate::vfs) async fn open_for_write(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let resize = (flags & libc::O_TRUNC != 0).then_some(0);
        self.make_writable(ino, resize, true).await?;
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        let fh = self.writable_handle(ino, &node.entry);
        Ok(Opened { fh, keep_cache: false })
    }

    /// Write `data` at `offset` through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        loop {
            match self.write_staged(fh, offset, data)? {
                WriteStep::Wrote(n) => return Ok(n),
                WriteStep::Wait(ino) => self.when_file(ino, |l| l.busy.is_none(), |_| ()).await?,
                WriteStep::Copy(ino) => self.make_writable(ino, None, false).await?,
            }
        }
    }

    /// [`DriveFs::write`] without waiting, for the FUSE thread: a write into the staged file is a
    /// local `pwrite`, and doing it where the request arrives spares a copy of the data and a hop
    /// to another thread (a fresh 1 MiB buffer per write cost more than the write itself). `None`
    /// when the write has to wait: slow work on the file is under way, or the staged file was
    /// handed to the upload queue and must be copied first; then call [`DriveFs::write`].
    pub fn try_write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        match self.write_staged(fh, offset, data) {
            Ok(WriteStep::Wrote(n)) => Some(Ok(n)),
            Ok(WriteStep::Wait(_) | WriteStep::Copy(_)) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Write into `fh`'s staged file, when it is ours and no slow work is under way on it.
    pub(super) fn write_staged(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<WriteStep> {
        let h = self
            .files
            .get(fh)
            .ok_or_else(|| fs_err!(BadHandle, "unknown file handle {fh}"))?;
        if !h.writable {
            return Err(fs_err!(BadHandle, "handle {fh} is not open for writing"));
        }
        let wb = self.wb()?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| fs_err!(FileTooLarge, "offset too large"))?;
        let ino = h.ino;
        let claimed = self
            .inodes
            .with_node(ino, |n| {
                let l = n.local.as_mut()?;
                Some(if l.busy.is_some() {
                    Err(WriteStep::Wait(ino))
                } else if !l.state.owns_staged() {
                    Err(WriteStep::Copy(ino))
                } else {
                    l.writing += 1;
                    Ok((l.file.clone(), l.size))
                })
            })
            .flatten()
            .ok_or_else(|| fs_err!(Internal, "file {ino} lost its local content"))?;
        let (file, size) = match claimed {
            Ok(claimed) => claimed,
            Err(step) => return Ok(step),
        };
        // In flight: no lock held.
        let written = wb
            .staging
            .reserve(end.saturating_sub(size))
            .map_err(|e| io_err("write", e))
            .and_then(|()| file.write_all_at(data, offset).map_err(|e| io_err("write staged", e)));
        let now = SystemTime::now();
        let may_grow = self
            .inodes
            .with_node(ino, |n| {
                let l = n.local.as_mut()?;
                l.writing -= 1;
                if written.is_err() {
                    return None;
                }
                l.note_written(offset, end, now);
                n.entry.size = l.size;
                n.entry.mtime = l.mtime;
                Some(matches!(l.order, WriteOrder::InOrder) && l.size >= GROW_AFTER && n.parent != DETACHED)
            })
            .flatten()
            .unwrap_or(false);
        // Slow work on this file may be waiting for the writes in flight to end.
        self.file_changed.notify_waiters();
        written?;
        if may_grow && self.remote.capabilities().streams_growing_uploads {
            self.start_growing(ino);
        }
        Ok(WriteStep::Wrote(data.len() as u32))
    }

    /// Start uploading `ino` while it is written (see [`GrowingFile`]), unless the queue has an
    /// upload of it already (one of its earlier content, say the empty file a create made: the
    /// next write tries again).
    pub(super) fn start_growing(&self, ino: u64) {
        let Ok(wb) = self.wb() else { return };
        let Some(node) = self.inodes.get(ino) else { return };
        let Some(local) = node.local.clone() else { return };
        let Some(parent) = self.inodes.get(node.parent) else {
            return;
        };
        let file = GrowingFile::new(&local.staged, local.size);
        let started = wb.queue.start_growing(&local.key, file.clone(), || {
            self.upload_record(ino, &local, &parent.entry.id, &node.entry.name)
        });
        if !started {
            return;
        }
        let mut kept = false;
        self.inodes.with_node(ino, |n| {
            if let Some(l) = n.local.as_mut() {
                // Writes since `local` was read were not seen by `file`: then it cannot stand for
                // the content (its seal would fail anyway).
                if matches!(l.order, WriteOrder::InOrder) && l.staged == local.staged && l.size == local.size {
                    l.order = WriteOrder::Followed(file.clone());
                    kept = true;
                }
            }
        });
        if kept {
            tracing::debug!(file = %node.entry.name, "uploading while it is written");
        } else {
            file.spoil();
        }
    }

    /// Stop the upload that follows `ino`'s writer, if there is one: the file is renamed, deleted
    /// or truncated. The whole-file upload at close takes over.
    pub(super) fn stop_growing(&self, ino: u64) {
        self.inodes.with_node(ino, |n| {
            if let Some(l) = n.local.as_mut() {
                l.stop_following();
            }
        });
    }

    /// Truncate (or extend with zeros) `ino` to `size`. Without an open handle the change goes to
    /// the upload queue at once.
    pub async fn truncate(&self, ino: u64, size: u64, fh: Option<u64>) -> FsResult<Attr> {
        self.make_writable(ino, Some(size), false).await?;
        let has_writer = fh.and_then(|f| self.files.get(f)).map(|h| h.writable).unwrap_or(false);
        if !has_writer {
            self.hand_off(ino, false).await?;
        }
        self.attr_of(ino)
    }

    /// Set the modification time of `ino`. Kept with local content (sent with its upload), else
    /// set on the server where it allows; EPERM where it cannot keep one.
    pub async fn set_mtime(&self, ino: u64, mtime: SystemTime) -> FsResult<Attr> {
        self.wb()?;
        let writers = self
            .inodes
            .with_node(ino, |n| {
                let l = n.local.as_mut()?;
                l.note_retimed(mtime);
                n.entry.mtime = mtime;
                Some(l.writers)
            })
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if let Some(writers) = writers {
            if writers == 0 {
                self.hand_off(ino, false).await?;
            }
            return self.attr_of(ino);
        }
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        // Remotes learn on first use whether the server keeps times; a refusal is the user's EPERM.
        let entry = match self.remote.set_mtime(&node.entry.id, mtime).await {
            Ok(entry) => entry,
            Err(RemoteError::Unsupported(why)) => {
                return Err(fs_err!(
                    NotPermitted,
                    "this server cannot keep modification times: {why}"
                ))
            }
            Err(e) => return Err(e.into()),
        };
        self.inodes.refresh(ino, entry, self.valid_until());
        self.attr_of(ino)
    }
}
