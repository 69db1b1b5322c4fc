//! The upload queue: takes staged files that the core has recorded in the [`Journal`] and makes
//! the server hold them, in the background, with bounded parallelism, never dropping data.
//!
//! Rules that keep data safe and the callers informed:
//! - A record is written to the journal before [`UploadQueue::enqueue`] returns (or before the
//!   [`Written`] of [`UploadQueue::enqueue_held`] is done), and leaves it only once the server has
//!   the bytes. A restarted daemon loads the journal and carries on.
//! - The journal is written by its own thread ([`JournalWriter`]): changes are decided under the
//!   queue's lock and handed over in that order, and nobody holds the lock while one is written.
//! - A staged file handed to the queue is immutable and owned by the queue: a newer version of the
//!   same file comes as a new staged file (a new *generation* of the same key). Generations of one
//!   key upload one at a time, in order; an older one that lands while a newer one waits makes the
//!   newer one's base version the one we just wrote, so it is not taken for a conflict.
//! - Transient failures (network, 5xx, throttling, 423 Locked, 507 quota) are retried with
//!   exponential backoff for as long as it takes. Errors that retrying cannot fix (403, 413, a name
//!   the server refuses) mark the record failed: the data stays on disk and in the journal for the
//!   user, and a restart tries again.
//! - `fsync` waits through [`UploadQueue::wait`]: it returns when the server has that generation, or
//!   with the error of the attempt that failed (the data stays queued either way), so it never hangs
//!   on a dead server beyond one attempt's deadline.
//! - A conflict (the server's copy changed since we read it, or a file appeared under a name we
//!   created) keeps both: ours goes up under a conflict name next to it, and it is logged.
//! - A file written in order may start uploading before it is closed ([`UploadQueue::start_growing`],
//!   see [`GrowingFile`]). Until the writer hands it over, such an item is in memory only and its
//!   staged file still belongs to the core; the hand-over ([`UploadQueue::enqueue_with`] for the
//!   same staged file) journals it and seals the growing file, and only then can its upload end.
//!   Any failure of a growing upload is not an upload failure: the item falls back to the
//!   whole-file upload (or, not yet handed over, leaves the queue as if it had never come).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::journal::{Journal, JournalWriter, OwnVersion, UploadRecord, UploadState, Written};
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{Entry, GrowingFile, Remote, TransferProgress};

/// Settings of the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Uploads running at once.
    pub parallel: usize,
    /// First retry delay; doubles per failed attempt.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            parallel: 4,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What happened to an upload, for the core to update its view of the item.
#[derive(Clone, Debug)]
pub enum UploadEvent {
    /// The server holds the content. `entry` describes it; `conflict_copy` says it went up under
    /// a conflict name because the original name's content had changed on the server.
    Uploaded {
        /// The record that was uploaded.
        record: UploadRecord,
        /// The item on the server.
        entry: Entry,
        /// Whether it was stored as a conflict copy.
        conflict_copy: bool,
        /// The generation that landed.
        generation: u64,
    },
    /// An attempt failed; `will_retry` says whether the queue keeps trying by itself.
    Failed {
        /// The record concerned.
        record: UploadRecord,
        /// What went wrong.
        error: RemoteError,
        /// Whether another attempt is scheduled.
        will_retry: bool,
    },
}

/// One line of `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// Record key.
    pub key: String,
    /// Folder item id.
    pub parent: String,
    /// File name.
    pub name: String,
    /// Bytes to send.
    pub size: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Whether an attempt is running now.
    pub running: bool,
    /// Bytes of the running (or last) attempt that have gone out.
    pub sent: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Whether the queue gave up until restart.
    pub failed: bool,
}

pub(super) type Waiter = (u64, oneshot::Sender<RemoteResult<()>>);

/// An attempt the dispatcher may start.
pub(super) struct Ready {
    pub(super) record: UploadRecord,
    pub(super) generation: u64,
    pub(super) sent: TransferProgress,
    /// Upload the file as it grows (see [`GrowingFile`]) rather than whole.
    pub(super) growing: Option<Arc<GrowingFile>>,
}
/// Hears every outcome. It runs under the queue's lock: it must not call the queue.
pub type EventSink = Box<dyn Fn(UploadEvent) + Send + Sync>;

pub(super) struct Item {
    pub(super) record: UploadRecord,
    pub(super) generation: u64,
    pub(super) running: bool,
    /// Bytes sent by the running (or last) attempt.
    pub(super) sent: TransferProgress,
    pub(super) not_before: Instant,
    pub(super) waiters: Vec<Waiter>,
    /// Staged files of older generations, deleted once no attempt uses them.
    pub(super) superseded: Vec<PathBuf>,
    /// The file is uploaded while it is written (see the module doc).
    pub(super) growing: Option<Arc<GrowingFile>>,
    /// Whether the writer handed the growing file over (sealed; the record is complete).
    pub(super) handed_over: bool,
    /// Whether the record is in the journal. A growing file may be handed over before it is:
    /// see [`UploadQueue::seal_growing`].
    pub(super) journaled: bool,
    /// Journaled but not to be sent yet: a descriptor of the file was closed while others stay
    /// open (bash's `>` closes a duplicate first), so the upload waits for the last close, or
    /// for anyone who [`wait`](UploadQueue::wait)s for it. A restart sends it.
    pub(super) held: bool,
    /// Why the server refused the record for good, so every later fsync gets that error's errno
    /// (EACCES for 403, ENOENT for 404), not only the one that waited for the attempt.
    pub(super) refusal: Option<RemoteError>,
}

impl Item {
    /// The first generation (numbered `generation`) of a record, ready to start.
    pub(super) fn first(record: UploadRecord, generation: u64) -> Item {
        Item {
            record,
            generation,
            running: false,
            sent: TransferProgress::new(),
            not_before: Instant::now(),
            waiters: Vec::new(),
            superseded: Vec::new(),
            growing: None,
            handed_over: true,
            journaled: true,
            held: false,
            refusal: None,
        }
    }

    /// A growing file that its writer has not handed over yet: in memory only, its staged file
    /// still the core's.
    pub(super) fn unclaimed(&self) -> bool {
        self.growing.is_some() && !self.handed_over
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) items: BTreeMap<String, Item>,
    pub(super) running: usize,
    /// Uploads that follow a writer, running: counted apart, so files being written slowly (a
    /// download saved into the mount) never hold back the uploads of closed files. At most
    /// `parallel` of them too.
    pub(super) following: usize,
    pub(super) stopped: bool,
    /// The last generation handed out. Queue-wide, so a key queued again after its item left the
    /// queue never reuses a generation its file has already seen land (the core keeps the last
    /// landed generation with the file's local content, and would take the new one for done).
    pub(super) last_generation: u64,
}

impl State {
    pub(super) fn next_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }
}

/// The queue of one mount.
pub struct UploadQueue {
    pub(super) remote: Arc<dyn Remote>,
    /// Every journal change goes through it, decided under `state`'s lock and written after.
    pub(super) journal: JournalWriter,
    pub(super) cfg: QueueConfig,
    pub(super) state: Mutex<State>,
    pub(super) wake: Notify,
    pub(super) idle: Notify,
    pub(super) events: Option<EventSink>,
}

/// Earlier versions of one file kept as "ours" (see [`OwnVersion`]); older ones are let go.
pub(super) const MAX_OURS: usize = 8;

pub(super) fn is_retryable(e: &RemoteError) -> bool {
    e.is_transient() || matches!(e, RemoteError::Locked | RemoteError::InsufficientStorage)
}

impl UploadQueue {
    /// Start the queue over `journal`, resuming every record in it (failed ones get another try).
    /// Must be called within a tokio runtime. `events` hears about every outcome.
    pub fn start(
        remote: Arc<dyn Remote>,
        journal: Journal,
        cfg: QueueConfig,
        events: Option<EventSink>,
    ) -> std::io::Result<Arc<Self>> {
        let loaded = journal.load()?;
        let mut state = State::default();
        for mut record in loaded.records {
            if matches!(record.state, UploadState::Failed { .. }) {
                record.state = UploadState::Pending;
            }
            tracing::info!(file = %record.name, size = record.size, "resuming upload from the journal");
            let key = record.key.clone();
            let generation = state.next_generation();
            state.items.insert(key, Item::first(record, generation));
        }
        let queue = Arc::new(UploadQueue {
            remote,
            journal: JournalWriter::start(journal)?,
            cfg,
            state: Mutex::new(state),
            wake: Notify::new(),
            idle: Notify::new(),
            events,
        });
        tokio::spawn(super::attempt::dispatch(queue.clone()));
        Ok(queue)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `record` durably and schedule it; returns its generation for [`wait`](Self::wait).
    /// A record with the key of one already queued replaces it (a newer version of the same file).
    pub fn enqueue(&self, record: UploadRecord) -> std::io::Result<u64> {
        self.enqueue_with(move || record)
    }

    /// The folder of the journal (for tests of its durability).
    pub fn journal_dir(&self) -> &Path {
        self.journal.dir()
    }

    /// [`enqueue`](Self::enqueue) a record that `build` makes under the queue's lock, so no upload
    /// event (also delivered under it) can land between reading the file's base version and
    /// queueing: `build` must not call the queue.
    pub fn enqueue_with(&self, build: impl FnOnce() -> UploadRecord) -> std::io::Result<u64> {
        let (generation, written) = self.enqueue_held(build, false);
        written.wait().map(|()| generation)
    }

    /// [`enqueue_with`](Self::enqueue_with), and when `hold`, keep the upload from starting until
    /// [`release_hold`](Self::release_hold) (or a [`wait`](Self::wait)): the record is journaled
    /// now all the same, so the content survives a crash.
    ///
    /// The item is queued (and owns the staged file) as soon as this returns; the record is
    /// durable once the returned [`Written`] is done. When that fails, the upload still runs,
    /// but the content would not survive a crash: the caller must report the failure.
    pub fn enqueue_held(&self, build: impl FnOnce() -> UploadRecord, hold: bool) -> (u64, Written) {
        let queued = self.enqueue_locked(build, hold);
        self.wake.notify_one();
        queued
    }

    /// Let the held upload of `key` start (the file's last descriptor closed).
    pub fn release_hold(&self, key: &str) {
        if let Some(item) = self.lock().items.get_mut(key) {
            item.held = false;
        }
        self.wake.notify_one();
    }

    fn enqueue_locked(&self, build: impl FnOnce() -> UploadRecord, hold: bool) -> (u64, Written) {
        let mut state = self.lock();
        let mut record = build();
        record.state = UploadState::Pending;
        let key = record.key.clone();
        if let Some(item) = state.items.get_mut(&record.key) {
            if let Some((generation, Some(written))) = self.hand_over(item, &mut record, true) {
                return (generation, written);
            }
        }
        let next = state.next_generation();
        let queued = match state.items.get_mut(&record.key) {
            Some(item) if item.unclaimed() => {
                // Its growing upload was spoiled: whatever it does now, it cannot land. The new
                // record takes the item over; the staged file was the core's and still is.
                if let Some(g) = &item.growing {
                    g.spoil();
                }
                if !item.running {
                    // Nothing follows the writer any more: the next attempt uploads the file whole.
                    item.growing = None;
                }
                record.base_version = item.record.base_version.clone();
                let written = self.journal.put(&record);
                item.handed_over = true;
                item.journaled = true;
                item.record = record;
                item.generation = next;
                item.not_before = Instant::now();
                (next, written)
            }
            Some(item) => {
                // The server still holds what the older generation replaced, unless it landed.
                record.base_version = item.record.base_version.clone();
                record.attempts = 0;
                // New content: a half-done upload of the old one cannot be continued with it.
                record.resume = None;
                if let (Some(token), false, Ok(rt)) = (
                    item.record.resume.clone(),
                    item.running,
                    tokio::runtime::Handle::try_current(),
                ) {
                    let remote = self.remote.clone();
                    rt.spawn(async move { remote.discard_resume(token).await });
                }
                // The older content may be on its way to the server, or there already without
                // us having heard (a crash while its reply was on the wire): keep it known as
                // ours until the server's version is known again.
                record.ours = std::mem::take(&mut item.record.ours);
                if item.record.staged != record.staged {
                    record.ours.push(OwnVersion {
                        staged: item.record.staged.clone(),
                        size: item.record.size,
                    });
                }
                if record.ours.len() > MAX_OURS {
                    let dropped: Vec<OwnVersion> = record.ours.drain(..record.ours.len() - MAX_OURS).collect();
                    item.superseded.extend(dropped.into_iter().map(|o| o.staged));
                }
                record.conflict_copy = None;
                let written = self.journal.put(&record);
                item.record = record;
                item.journaled = true;
                item.generation = next;
                item.not_before = Instant::now();
                if !item.running {
                    drop(self.journal.delete_staged(item.superseded.drain(..).collect()));
                }
                (item.generation, written)
            }
            None => {
                let written = self.journal.put(&record);
                state.items.insert(key.clone(), Item::first(record, next));
                (next, written)
            }
        };
        if let Some(item) = state.items.get_mut(&key) {
            item.held = hold;
        }
        queued
    }

    /// The writer hands over `record` for an item being uploaded while it grew: when it is the
    /// same staged file and the growing upload can stand for its content, journal it and seal the
    /// growing file, keeping the item's generation (returned, with the journal write when
    /// `journal`). `None` when the item is not such an upload or the growing upload is spoiled
    /// (it is spoiled for good then).
    pub(super) fn hand_over(
        &self,
        item: &mut Item,
        record: &mut UploadRecord,
        journal: bool,
    ) -> Option<(u64, Option<Written>)> {
        let growing = item.growing.clone().filter(|_| !item.handed_over)?;
        if growing.is_spoiled() || record.staged != item.record.staged {
            growing.spoil();
            return None;
        }
        record.base_version = item.record.base_version.clone();
        // Handed to the journal first: the upload may complete the moment the file is sealed,
        // and its removal from the journal then comes after this write.
        let written = journal.then(|| self.journal.put(record));
        item.journaled = journal;
        if !growing.seal(record.size, record.mtime()) {
            // The length differs from what was appended. The record is journaled: the whole-file
            // upload takes over once the spoiled attempt ends.
            item.record = record.clone();
            item.handed_over = true;
            item.growing = None;
            return Some((item.generation, written));
        }
        item.record = record.clone();
        item.handed_over = true;
        Some((item.generation, written))
    }

    /// Wait until the server holds generation `generation` of `key` (or a later one). Returns the
    /// error of the attempt that failed instead, when one does; the data stays queued.
    pub async fn wait(&self, key: &str, generation: u64) -> RemoteResult<()> {
        let rx = {
            let mut state = self.lock();
            let Some(item) = state.items.get_mut(key) else {
                return Ok(());
            };
            if let UploadState::Failed { error } = &item.record.state {
                return Err(item
                    .refusal
                    .clone()
                    .unwrap_or_else(|| RemoteError::Protocol(format!("upload failed: {error}"))));
            }
            // Whoever waits for it wants it sent now.
            item.held = false;
            self.wake.notify_one();
            let (tx, rx) = oneshot::channel();
            item.waiters.push((generation, tx));
            rx
        };
        rx.await
            .unwrap_or_else(|_| Err(RemoteError::Protocol("the upload queue stopped".into())))
    }

    /// Wait until nothing is pending (every record uploaded or failed), or `deadline` passes.
    /// Returns what is still in the queue.
    pub async fn drain(&self, deadline: Duration) -> Vec<UploadStatus> {
        let until = tokio::time::Instant::now() + deadline;
        for item in self.lock().items.values_mut() {
            item.held = false;
        }
        self.wake.notify_one();
        loop {
            let idle = self.idle.notified();
            let busy = self
                .lock()
                .items
                .values()
                .any(|i| matches!(i.record.state, UploadState::Pending) && !i.unclaimed());
            if !busy || tokio::time::timeout_at(until, idle).await.is_err() {
                // What the journal was told (records removed once uploaded) is on disk too.
                if let Err(e) = self.journal.barrier().done().await {
                    tracing::error!(error = %e, "the upload journal may be behind");
                }
                return self.status();
            }
        }
    }

    /// Every record still queued.
    pub fn status(&self) -> Vec<UploadStatus> {
        self.lock()
            .items
            .values()
            .map(|i| UploadStatus {
                key: i.record.key.clone(),
                parent: i.record.parent.clone(),
                name: i.record.name.clone(),
                size: i.record.size,
                attempts: i.record.attempts,
                running: i.running,
                sent: i.sent.get(),
                last_error: i.record.last_error.clone(),
                failed: matches!(i.record.state, UploadState::Failed { .. }),
            })
            .collect()
    }

    /// Run `f` on every queued record with its current generation, under the queue's lock, so no
    /// upload event (also delivered under it) lands meanwhile. `f` must not call the queue.
    pub fn for_each_queued(&self, mut f: impl FnMut(&UploadRecord, u64)) {
        let state = self.lock();
        for item in state.items.values().filter(|i| !i.unclaimed()) {
            f(&item.record, item.generation);
        }
    }

    /// Whether `key` is queued (pending, running or failed).
    pub fn contains(&self, key: &str) -> bool {
        self.lock().items.contains_key(key)
    }

    /// Forget `key` (its file was deleted or replaced): drop the record and its staged files.
    /// Returns `false`, changing nothing, while an attempt is running; wait for it and call again.
    pub fn cancel(&self, key: &str) -> bool {
        let mut state = self.lock();
        let Some(item) = state.items.get(key) else { return true };
        if item.unclaimed() {
            // Nothing of it is journaled and its staged file is the core's: stop its upload.
            if let Some(g) = &item.growing {
                g.spoil();
            }
            if item.running {
                return false;
            }
            state.items.remove(key);
            return true;
        }
        if item.running {
            return false;
        }
        let item = state.items.remove(key).expect("present");
        // In order after every earlier change of the record; a failure is logged by the writer.
        drop(self.journal.remove(key));
        drop(state);
        if let (Some(token), Ok(rt)) = (item.record.resume.clone(), tokio::runtime::Handle::try_current()) {
            // Let the server drop what it keeps for the half-done upload (a Graph session).
            let remote = self.remote.clone();
            rt.spawn(async move { remote.discard_resume(token).await });
        }
        let unused = std::iter::once(item.record.staged.clone())
            .chain(item.superseded.iter().cloned())
            .chain(item.record.ours.iter().map(|o| o.staged.clone()));
        // Gone once this returns, as the caller expects (no lock is held now).
        let _ = self.journal.delete_staged(unused.collect()).wait();
        for (_, tx) in item.waiters {
            let _ = tx.send(Ok(()));
        }
        true
    }

    /// Wait until no attempt for `key` is running.
    pub async fn settle(&self, key: &str) {
        // An upload following a writer ends only when the writer is done: stop it instead.
        if let Some(g) = self
            .lock()
            .items
            .get(key)
            .filter(|i| i.unclaimed())
            .and_then(|i| i.growing.clone())
        {
            g.spoil();
        }
        loop {
            let running = self.lock().items.get(key).map(|i| i.running).unwrap_or(false);
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Give every record that failed for good another try now, as a restart would: the cause may
    /// be gone (the user signed in again with `cloudmount login`). Returns how many.
    pub fn retry_now(&self) -> usize {
        let mut state = self.lock();
        let mut moved = 0;
        for item in state.items.values_mut() {
            if matches!(item.record.state, UploadState::Failed { .. }) {
                item.record.state = UploadState::Pending;
                item.refusal = None;
                item.not_before = Instant::now();
                if item.journaled {
                    // A failure is logged by the writer; the record stays queued in memory.
                    drop(self.journal.put(&item.record));
                }
                moved += 1;
            }
        }
        drop(state);
        if moved > 0 {
            self.wake.notify_one();
        }
        moved
    }

    /// Stop starting uploads (those running finish). Records stay in the journal.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        // Files still being written are handed over by their close, or come back at the next
        // mount through nothing: they were never journaled, and their content is the writer's.
        for item in state.items.values().filter(|i| i.unclaimed()) {
            if let Some(g) = &item.growing {
                g.spoil();
            }
        }
        drop(state);
        self.wake.notify_one();
    }
}
