//! Handing a file's changes to the upload queue (every `close`, `fsync`, and changes made without
//! an open handle), and keeping the file's state in step with what the queue reports back.
//!
//! A hand-off marks the file busy (no write lands meanwhile), syncs its staged file and has the
//! queue journal it, all with no lock held, and then records the generation the queue gave it.

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Change, ChangeBatch, ItemId};
use std::time::SystemTime;

use super::super::error::FsResult;
use super::super::fs::DriveFs;
use super::super::handles::FileHandle;
use super::super::local::{settle, Busy, LocalContent, Settled};
use super::super::namespace::DETACHED;
use super::super::writeback::journal::{UploadRecord, UploadState};
use super::super::writeback::queue::UploadEvent;
use super::super::writeback::WriteBack;
use super::io_err;
use super::state::BusyMark;

/// What a hand-off found under the node's lock.
enum Start {
    /// Nothing to hand over; the generation to wait for, if one is still on its way.
    Nothing(Option<(String, u64)>),
    /// Marked busy: the key of the content marked.
    Claimed(String),
}

impl DriveFs {
    /// Hand `ino`'s changes to the upload queue (durably) and return the generation to wait for.
    /// `hold`: a descriptor closes while the file stays open: journal the content but send it
    /// only at the last close (or when someone waits for it); otherwise let it go now.
    pub(super) async fn hand_off(&self, ino: u64, hold: bool) -> FsResult<Option<(String, u64)>> {
        let handed = self.hand_off_held(ino, hold).await?;
        if let (Some((key, _)), false) = (&handed, hold) {
            self.wb()?.queue.release_hold(key);
        }
        Ok(handed)
    }

    pub(super) async fn hand_off_held(&self, ino: u64, hold: bool) -> FsResult<Option<(String, u64)>> {
        let wb = self.wb()?;
        let start = self
            .when_file(
                ino,
                |l| l.busy.is_none(),
                |n| {
                    let parent = n.parent;
                    let Some(l) = n.local.as_mut() else {
                        return Start::Nothing(None);
                    };
                    if parent == DETACHED {
                        // Unlinked while open: what is written now goes nowhere, as on a local disk.
                        return Start::Nothing(None);
                    }
                    if !l.state.is_dirty() {
                        return Start::Nothing(
                            l.generation
                                .filter(|g| l.uploaded < Some(*g))
                                .map(|g| (l.key.clone(), g)),
                        );
                    }
                    l.busy = Some(Busy::HandingOff);
                    Start::Claimed(l.key.clone())
                },
            )
            .await?;
        let key = match start {
            Start::Nothing(pending) => return Ok(pending),
            Start::Claimed(key) => key,
        };
        let mark = BusyMark::new(self, ino, &key);
        // No new write starts now; those in flight end first, and the node is read after them.
        let node = self.quiesce(ino, &key).await?;
        let Some(local) = node.local.clone() else {
            return Ok(None);
        };
        let parent = self
            .inodes
            .get(node.parent)
            .ok_or_else(|| fs_err!(NotFound, "folder is gone"))?;
        if local.following().is_some() {
            // An upload follows this writer: seal it now, and the close is over as soon as the
            // server has the file or the journal does, whichever comes first.
            let sealed = wb.queue.seal_growing(&local.key, || {
                self.upload_record(ino, &local, &parent.entry.id, &node.entry.name)
            });
            if let Some(generation) = sealed {
                self.handed_off(mark, generation, local.changes).await;
                self.secure(wb, &local, generation).await?;
                return Ok(Some((local.key, generation)));
            }
        }
        local.file.sync_all().map_err(|e| io_err("sync staged", e))?;
        wb.staging.sync_dir().map_err(|e| io_err("sync staging folder", e))?;
        // Built under the queue's lock: the base version read here cannot go stale before queueing.
        let (generation, journaled) = wb.queue.enqueue_held(
            || self.upload_record(ino, &local, &parent.entry.id, &node.entry.name),
            hold,
        );
        // The queue owns the staged file from now on, whatever the journal says.
        self.handed_off(mark, generation, local.changes).await;
        journaled.done().await.map_err(|e| io_err("journal", e))?;
        Ok(Some((local.key, generation)))
    }

    /// The queue owns the content marked by `mark` now, as generation `generation`: record it
    /// and clear the mark. When that generation landed already (before the mark was cleared, so
    /// its report could not let the local copy go), the local copy goes now.
    async fn handed_off(&self, mark: BusyMark<'_>, generation: u64, changes_then: u64) {
        let valid = self.valid_until();
        let ino = mark.ino();
        let settled = mark.clear_with(|n| {
            if let Some(l) = n.local.as_mut() {
                l.note_handed_off(generation, changes_then);
            }
            settle(n, valid)
        });
        if settled == Some(Settled::Conflicted) {
            self.take_server_version(ino).await;
        }
    }

    /// The upload record of `ino`'s local content (`fallback` when the inode is gone), for the
    /// queue. Called under the queue's lock, so the base version read here cannot go stale.
    pub(super) fn upload_record(&self, ino: u64, fallback: &LocalContent, parent: &ItemId, name: &str) -> UploadRecord {
        let now = self
            .inodes
            .get(ino)
            .and_then(|n| n.local)
            .unwrap_or_else(|| fallback.clone());
        UploadRecord {
            key: now.key.clone(),
            parent: parent.as_str().to_string(),
            name: name.to_string(),
            staged: now.staged.clone(),
            size: now.size,
            mtime_ns: UploadRecord::mtime_ns_of(now.mtime),
            base_version: now.base_version.as_ref().map(|v| v.as_str().to_string()),
            attempts: 0,
            last_error: None,
            resume: None,
            ours: Vec::new(),
            conflict_copy: None,
            state: UploadState::Pending,
        }
    }

    /// Wait until generation `generation` of `local`, sealed by the queue's `seal_growing`, is
    /// safe: on the server, or journaled with its staged file on disk, whichever comes first.
    /// The upload usually wins, and then the close never waits for the disk.
    pub(super) async fn secure(&self, wb: &WriteBack, local: &LocalContent, generation: u64) -> FsResult<()> {
        let landed = wb.queue.wait(&local.key, generation);
        let file = local.file.clone();
        let journaled = async {
            let dir = wb.staging.dir().to_path_buf();
            tokio::task::spawn_blocking(move || {
                file.sync_all()?;
                std::fs::File::open(dir)?.sync_all()
            })
            .await
            .map_err(|e| io_err("sync staged", std::io::Error::other(e)))?
            .map_err(|e| io_err("sync staged", e))?;
            wb.queue
                .journal_sealed(&local.key, generation)
                .await
                .map_err(|e| io_err("journal", e))
        };
        tokio::pin!(landed, journaled);
        let (mut upload_failed, mut journal_error) = (false, None);
        loop {
            tokio::select! {
                r = &mut landed, if !upload_failed => match r {
                    Ok(()) => return Ok(()),
                    Err(_) => upload_failed = true,
                },
                r = &mut journaled, if journal_error.is_none() => match r {
                    Ok(()) => return Ok(()),
                    Err(e) => journal_error = Some(e),
                },
            }
            if let (true, Some(e)) = (upload_failed, journal_error.take()) {
                return Err(e);
            }
        }
    }

    /// `close()` of a descriptor: its changes go to the upload queue's journal; when this returns
    /// `Ok`, they survive a crash. They are sent when the last descriptor of the open file closes
    /// ([`release`](DriveFs::release)): a shell's `>` closes a duplicate descriptor before the
    /// command writes, and sending then would show other devices an empty version.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.files.get(fh) else { return Ok(()) };
        if h.writable {
            self.hand_off(h.ino, true).await?;
        }
        Ok(())
    }

    /// `fsync()` through any handle of the file, written through or not (`sync FILE` opens it
    /// read-only): returns once the server holds the file's content (or with the reason it does
    /// not yet; the data stays queued).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.files.get(fh) else { return Ok(()) };
        if self.writeback.get().is_none() || self.inodes.get(h.ino).is_none_or(|n| n.local.is_none()) {
            // Nothing of it waits to go up.
            return Ok(());
        }
        if let Some((key, generation)) = self.hand_off(h.ino, false).await? {
            self.wb()?.queue.wait(&key, generation).await?;
        }
        Ok(())
    }

    pub(in crate::vfs) async fn release_writer(&self, h: &FileHandle) -> FsResult<()> {
        // Counted off before the hand-off, in one step with reading what is left: two releases
        // running at once (the kernel sends them in the background) must not both see the other
        // as still open and hold the upload for a last close that already happened.
        let others = self
            .inodes
            .with_node(h.ino, |n| {
                n.local.as_mut().map(|l| {
                    l.writers = l.writers.saturating_sub(1);
                    l.writers > 0
                })
            })
            .flatten()
            .unwrap_or(false);
        let result = self.hand_off(h.ino, others).await;
        let valid = self.valid_until();
        let settled = self.inodes.with_node(h.ino, |n| settle(n, valid));
        if settled == Some(Settled::Conflicted) {
            self.take_server_version(h.ino).await;
        }
        result.map(|_| ())
    }

    /// The upload queue reports: keep our view of the file in step with the server. Returns the
    /// inode whose name now holds another device's version (ours went up as a conflict copy and
    /// nothing local is left): see [`DriveFs::take_server_version`].
    ///
    /// Also returns the modification time the landed content shows (the upload's, or a time set
    /// after it was handed over, kept as metadata: see `DriveFs::change_meta`), read under the
    /// node's lock together with the landing; `None` when a newer generation follows.
    pub(super) fn on_upload_event(&self, ev: UploadEvent) -> (Option<u64>, Option<SystemTime>) {
        let UploadEvent::Uploaded {
            record,
            entry,
            conflict_copy,
            generation,
        } = ev
        else {
            return (None, None);
        };
        let mut shown_mtime = Some(record.mtime());
        let Some(ino) = self.inodes.by_local_key(&record.key) else {
            return (None, shown_mtime);
        };
        let valid = self.valid_until();
        let parent = self.inodes.get(ino).map(|n| n.parent);
        let settled = self
            .inodes
            .with_node(ino, |n| {
                let Some(local) = n.local.as_mut() else {
                    return Settled::Kept;
                };
                // Metadata is given at the landing of the latest generation only (what was set
                // while pending waits for the content it was set on).
                shown_mtime = (local.generation == Some(generation) && !conflict_copy).then_some(local.mtime);
                // A time the server keeps as metadata is the one about to be sent again.
                let mut landed = entry.clone();
                if let (Some(_), Some(t)) = (landed.meta.mtime, shown_mtime) {
                    landed.meta.mtime = Some(t);
                }
                local.note_landed(generation, &landed, conflict_copy);
                if !conflict_copy {
                    n.entry.id = entry.id.clone();
                }
                settle(n, valid)
            })
            .unwrap_or(Settled::Kept);
        if let (Some(parent), false) = (parent, conflict_copy) {
            let mut shown = entry;
            if let Some(n) = self.inodes.get(ino) {
                // The listing shows what the node shows: our size and time.
                shown.size = n.entry.size;
                shown.mtime = n.entry.mtime;
                if let (Some(_), Some(t)) = (shown.meta.mtime, shown_mtime) {
                    shown.meta.mtime = Some(t);
                }
            }
            self.inodes.listing_insert(parent, shown);
        }
        ((settled == Settled::Conflicted).then_some(ino), shown_mtime)
    }

    /// Our version of `ino` went up as a conflict copy: its name holds the other device's version,
    /// which the change feed reported while ours was in flight (and the applier skipped, the local
    /// edit winning) and will not report again. Take the server's current state of the item
    /// through the applier, so that the kernel, the folder's listing and the cache forget ours.
    pub(super) async fn take_server_version(&self, ino: u64) {
        let Some(node) = self.inodes.get(ino).filter(|n| n.local.is_none()) else {
            return;
        };
        let Some(parent) = self.inodes.get(node.parent) else {
            return;
        };
        let change = match self.remote.stat(&node.entry.id).await {
            Ok(entry) => Change::Upsert {
                parent: parent.entry.id,
                entry,
            },
            Err(RemoteError::NotFound) => Change::Deleted { id: node.entry.id },
            Err(e) => {
                // The TTL brings it back in time.
                tracing::debug!(ino, error = %e, "cannot read the server's version after a conflict copy");
                return;
            }
        };
        self.apply_changes(ChangeBatch::Changes(vec![change]));
    }
}
