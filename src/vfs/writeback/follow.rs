//! Uploads that follow the writer: a file written in order from its start may start uploading
//! while it is written (see [`GrowingFile`]). Until the writer hands it over, such an item is in
//! memory only and its staged file still belongs to the core; the hand-over journals it (or
//! [`UploadQueue::journal_sealed`] does, once the staged file is durable) and seals the growing
//! file, and only then can its upload end. Any failure of a growing upload is not an upload
//! failure: the item falls back to the whole-file upload (or, not yet handed over, leaves the
//! queue as if it had never come).

use std::sync::Arc;

use super::journal::{UploadRecord, UploadState};
use super::queue::{Item, UploadQueue};
use crate::error::RemoteResult;
use crate::remote::{
    Entry, GrowingFile, ItemId, Precondition, ResumeSlot, TransferProgress, UploadCtx, UploadSource, UploadTarget,
    Version,
};

impl UploadQueue {
    /// Start uploading a file while its writer is still at it (see [`GrowingFile`]). `build`
    /// makes the record the upload is for (under the queue's lock, as for
    /// [`enqueue_with`](Self::enqueue_with)); its size is not known yet. Returns `false`, changing
    /// nothing, when the file already has an item in the queue (an upload of it may be running,
    /// and uploads of one key go one at a time) or the queue is stopping.
    pub fn start_growing(&self, key: &str, file: Arc<GrowingFile>, build: impl FnOnce() -> UploadRecord) -> bool {
        let mut state = self.lock();
        if state.stopped || state.items.contains_key(key) {
            return false;
        }
        let mut record = build();
        record.state = UploadState::Pending;
        let generation = state.next_generation();
        let mut item = Item::first(record, generation);
        item.growing = Some(file);
        item.handed_over = false;
        item.journaled = false;
        state.items.insert(key.to_string(), item);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Hand over a growing file without journaling it yet: its upload may end at once, while the
    /// caller makes the staged file durable and then calls [`journal_sealed`](Self::journal_sealed);
    /// whichever comes first makes the content safe, so a close need not wait for both. Returns
    /// the generation, or `None` (changing nothing but spoiling the upload) when the growing
    /// upload cannot stand for `build`'s record: then use [`enqueue_with`](Self::enqueue_with).
    pub fn seal_growing(&self, key: &str, build: impl FnOnce() -> UploadRecord) -> Option<u64> {
        let mut state = self.lock();
        let item = state.items.get_mut(key)?;
        let mut record = build();
        record.state = UploadState::Pending;
        match self.hand_over(item, &mut record, false) {
            Some((generation, _)) if item.growing.is_some() => Some(generation),
            Some(_) => {
                // Sealing failed (another length): the item holds the record but no upload can
                // stand for it. Let the caller journal it the ordinary way.
                None
            }
            _ => None,
        }
    }

    /// Put generation `generation` of `key`, handed over by [`seal_growing`](Self::seal_growing),
    /// into the journal, unless it already landed (or newer content replaced it, which is
    /// journaled itself).
    pub async fn journal_sealed(&self, key: &str, generation: u64) -> std::io::Result<()> {
        let written = {
            let mut state = self.lock();
            let Some(item) = state.items.get_mut(key) else {
                return Ok(());
            };
            if item.generation != generation || item.journaled {
                return Ok(());
            }
            item.journaled = true;
            self.journal.put(&item.record)
        };
        written.done().await
    }

    /// Upload a file while it is written: no conflict copies, no content checks (the whole-file
    /// upload that takes over after any failure does those).
    pub(super) async fn attempt_growing(
        &self,
        record: &UploadRecord,
        file: &Arc<GrowingFile>,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        let parent = ItemId::new(record.parent.as_str());
        let precondition = match &record.base_version {
            Some(v) => Precondition::Matches(Version::from_etag(v)),
            None => Precondition::Absent,
        };
        let result = self
            .remote
            .upload(
                UploadTarget::new(&parent, &record.name, precondition),
                UploadSource::Growing(file),
                &UploadCtx::new(sent.clone(), ResumeSlot::new()),
            )
            .await;
        if result.is_err() {
            // Whatever happened, this upload is over: the writer must not wait for it.
            file.spoil();
        }
        result
    }

    /// The end of a growing upload. Success counts only for content handed over (sealed); any
    /// failure hands the item to the whole-file upload, or, when the writer never handed it over,
    /// removes it as if it had never been queued (nothing of it is journaled, the staged file is
    /// the core's).
    pub(super) fn finish_growing(&self, key: &str, generation: u64, file: &GrowingFile, result: RemoteResult<Entry>) {
        match result {
            // Sealed content was handed over (journaled) under this generation, whether or not a
            // newer one came since: the ordinary ending applies.
            Ok(entry) if file.sealed().is_some() => {
                tracing::debug!(file = %key, "uploaded while it was written");
                {
                    // `finish` ends an ordinary attempt: count this one as such. Newer content
                    // queued meanwhile goes up whole, never through this writer's file.
                    let mut state = self.lock();
                    state.following -= 1;
                    state.running += 1;
                    if let Some(item) = state.items.get_mut(key) {
                        item.growing = None;
                    }
                }
                self.finish(key, generation, Ok((entry, false)));
            }
            outcome => {
                if let Err(e) = &outcome {
                    tracing::info!(file = %key, error = %e,
                        "the upload that followed the writer stopped; the whole file goes up instead");
                }
                let mut state = self.lock();
                state.following -= 1;
                if let Some(item) = state.items.get_mut(key) {
                    item.running = false;
                    item.growing = None;
                    item.sent = TransferProgress::new();
                    if !item.handed_over {
                        state.items.remove(key);
                    }
                }
                drop(state);
                self.wake.notify_one();
                self.idle.notify_waiters();
            }
        }
    }
}
