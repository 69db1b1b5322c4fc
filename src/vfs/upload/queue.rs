//! The upload queue: takes staged files that the core has recorded in the [`Journal`] and makes
//! the server hold them, in the background, with bounded parallelism, never dropping data.
//!
//! Rules that keep data safe and the callers informed:
//! - A record is written to the journal before [`UploadQueue::enqueue`] returns, and leaves it only
//!   once the server has the bytes. A restarted daemon loads the journal and carries on.
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
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, Notify};

use super::conflict::conflict_name;
use super::journal::{Journal, OwnVersion, UploadRecord, UploadState};
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{
    Entry, EntryKind, GrowingFile, ItemId, Precondition, Remote, ResumeSlot, TransferProgress, UploadCtx, UploadSource,
    UploadTarget, Version,
};

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

type Waiter = (u64, oneshot::Sender<RemoteResult<()>>);

/// An attempt the dispatcher may start.
struct Ready {
    record: UploadRecord,
    generation: u64,
    sent: TransferProgress,
    /// Upload the file as it grows (see [`GrowingFile`]) rather than whole.
    growing: Option<Arc<GrowingFile>>,
}
/// Hears every outcome. It runs under the queue's lock: it must not call the queue.
type EventSink = Box<dyn Fn(UploadEvent) + Send + Sync>;

struct Item {
    record: UploadRecord,
    generation: u64,
    running: bool,
    /// Bytes sent by the running (or last) attempt.
    sent: TransferProgress,
    not_before: Instant,
    waiters: Vec<Waiter>,
    /// Staged files of older generations, deleted once no attempt uses them.
    superseded: Vec<PathBuf>,
    /// The file is uploaded while it is written (see the module doc).
    growing: Option<Arc<GrowingFile>>,
    /// Whether the writer handed the growing file over (sealed; the record is complete).
    handed_over: bool,
    /// Whether the record is in the journal. A growing file may be handed over before it is:
    /// see [`UploadQueue::seal_growing`].
    journaled: bool,
    /// Journaled but not to be sent yet: a descriptor of the file was closed while others stay
    /// open (bash's `>` closes a duplicate first), so the upload waits for the last close, or
    /// for anyone who [`wait`](UploadQueue::wait)s for it. A restart sends it.
    held: bool,
    /// Why the server refused the record for good, so every later fsync gets that error's errno
    /// (EACCES for 403, ENOENT for 404), not only the one that waited for the attempt.
    refusal: Option<RemoteError>,
}

impl Item {
    /// The first generation (numbered `generation`) of a record, ready to start.
    fn first(record: UploadRecord, generation: u64) -> Item {
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
    fn unclaimed(&self) -> bool {
        self.growing.is_some() && !self.handed_over
    }
}

#[derive(Default)]
struct State {
    items: BTreeMap<String, Item>,
    running: usize,
    /// Uploads that follow a writer, running: counted apart, so files being written slowly (a
    /// download saved into the mount) never hold back the uploads of closed files. At most
    /// `parallel` of them too.
    following: usize,
    stopped: bool,
    /// The last generation handed out. Queue-wide, so a key queued again after its item left the
    /// queue never reuses a generation its file has already seen land (the core keeps the last
    /// landed generation with the file's local content, and would take the new one for done).
    last_generation: u64,
}

impl State {
    fn next_generation(&mut self) -> u64 {
        self.last_generation += 1;
        self.last_generation
    }
}

/// The queue of one mount.
pub struct UploadQueue {
    remote: Arc<dyn Remote>,
    journal: Journal,
    cfg: QueueConfig,
    state: Mutex<State>,
    wake: Notify,
    idle: Notify,
    events: Option<EventSink>,
}

/// Earlier versions of one file kept as "ours" (see [`OwnVersion`]); older ones are let go.
const MAX_OURS: usize = 8;

/// `a (conflict …).txt` → `a (conflict … 2).txt`.
fn numbered(conflict: &str, n: u32) -> String {
    match conflict.rfind(')') {
        Some(i) => format!("{} {n}{}", &conflict[..i], &conflict[i..]),
        None => format!("{conflict} {n}"),
    }
}

fn is_retryable(e: &RemoteError) -> bool {
    e.is_transient() || matches!(e, RemoteError::Locked | RemoteError::InsufficientStorage)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove a staged file");
        }
    }
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
            journal,
            cfg,
            state: Mutex::new(state),
            wake: Notify::new(),
            idle: Notify::new(),
            events,
        });
        tokio::spawn(dispatch(queue.clone()));
        Ok(queue)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `record` durably and schedule it; returns its generation for [`wait`](Self::wait).
    /// A record with the key of one already queued replaces it (a newer version of the same file).
    pub fn enqueue(&self, record: UploadRecord) -> std::io::Result<u64> {
        self.enqueue_with(move || record)
    }

    /// [`enqueue`](Self::enqueue) a record that `build` makes under the queue's lock, so no upload
    /// event (also delivered under it) can land between reading the file's base version and
    /// queueing: `build` must not call the queue.
    pub fn enqueue_with(&self, build: impl FnOnce() -> UploadRecord) -> std::io::Result<u64> {
        self.enqueue_held(build, false)
    }

    /// [`enqueue_with`](Self::enqueue_with), and when `hold`, keep the upload from starting until
    /// [`release_hold`](Self::release_hold) (or a [`wait`](Self::wait)): the record is journaled
    /// now all the same, so the content survives a crash.
    pub fn enqueue_held(&self, build: impl FnOnce() -> UploadRecord, hold: bool) -> std::io::Result<u64> {
        let generation = self.enqueue_locked(build, hold)?;
        self.wake.notify_one();
        Ok(generation)
    }

    /// Let the held upload of `key` start (the file's last descriptor closed).
    pub fn release_hold(&self, key: &str) {
        if let Some(item) = self.lock().items.get_mut(key) {
            item.held = false;
        }
        self.wake.notify_one();
    }

    fn enqueue_locked(&self, build: impl FnOnce() -> UploadRecord, hold: bool) -> std::io::Result<u64> {
        let mut state = self.lock();
        let mut record = build();
        record.state = UploadState::Pending;
        let key = record.key.clone();
        if let Some(item) = state.items.get_mut(&record.key) {
            if let Some(generation) = self.hand_over(item, &mut record, true)? {
                return Ok(generation);
            }
        }
        let next = state.next_generation();
        let generation = match state.items.get_mut(&record.key) {
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
                self.journal.put(&record)?;
                item.handed_over = true;
                item.journaled = true;
                item.record = record;
                item.generation = next;
                item.not_before = Instant::now();
                next
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
                self.journal.put(&record)?;
                item.record = record;
                item.journaled = true;
                item.generation = next;
                item.not_before = Instant::now();
                if !item.running {
                    for old in item.superseded.drain(..) {
                        remove_quietly(&old);
                    }
                }
                item.generation
            }
            None => {
                self.journal.put(&record)?;
                state.items.insert(key.clone(), Item::first(record, next));
                next
            }
        };
        if let Some(item) = state.items.get_mut(&key) {
            item.held = hold;
        }
        Ok(generation)
    }

    /// The writer hands over `record` for an item being uploaded while it grew: when it is the
    /// same staged file and the growing upload can stand for its content, journal it and seal the
    /// growing file, keeping the item's generation (returned). `None` when the item is not such
    /// an upload or the growing upload is spoiled (it is spoiled for good then).
    fn hand_over(&self, item: &mut Item, record: &mut UploadRecord, journal: bool) -> std::io::Result<Option<u64>> {
        let Some(growing) = item.growing.clone().filter(|_| !item.handed_over) else {
            return Ok(None);
        };
        if growing.is_spoiled() || record.staged != item.record.staged {
            growing.spoil();
            return Ok(None);
        }
        record.base_version = item.record.base_version.clone();
        // Journal first: the upload may complete the moment the file is sealed.
        if journal {
            if let Err(e) = self.journal.put(record) {
                growing.spoil();
                return Err(e);
            }
        }
        item.journaled = journal;
        if !growing.seal(record.size, record.mtime()) {
            // The length differs from what was appended. The record is journaled: the whole-file
            // upload takes over once the spoiled attempt ends.
            item.record = record.clone();
            item.handed_over = true;
            item.growing = None;
            return Ok(Some(item.generation));
        }
        item.record = record.clone();
        item.handed_over = true;
        Ok(Some(item.generation))
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
            Ok(Some(generation)) if item.growing.is_some() => Some(generation),
            Ok(Some(_)) => {
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
    pub fn journal_sealed(&self, key: &str, generation: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let Some(item) = state.items.get_mut(key) else {
            return Ok(());
        };
        if item.generation != generation || item.journaled {
            return Ok(());
        }
        self.journal.put(&item.record)?;
        item.journaled = true;
        Ok(())
    }

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
        drop(state);
        if let Err(e) = self.journal.remove(key) {
            tracing::error!(error = %e, "cannot remove a cancelled upload from the journal");
        }
        if let (Some(token), Ok(rt)) = (item.record.resume.clone(), tokio::runtime::Handle::try_current()) {
            // Let the server drop what it keeps for the half-done upload (a Graph session).
            let remote = self.remote.clone();
            rt.spawn(async move { remote.discard_resume(token).await });
        }
        remove_quietly(&item.record.staged);
        for old in item.superseded.iter().chain(item.record.ours.iter().map(|o| &o.staged)) {
            remove_quietly(old);
        }
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
                    if let Err(e) = self.journal.put(&item.record) {
                        tracing::error!(error = %e, "cannot update the upload journal");
                    }
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

    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .cfg
            .base_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        exp.min(self.cfg.max_backoff)
    }

    /// Pick work that may start now; returns it and the time of the next delayed item.
    fn take_ready(&self) -> (Vec<Ready>, Option<Instant>) {
        let mut state = self.lock();
        if state.stopped {
            return (Vec::new(), None);
        }
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut next = None::<Instant>;
        let mut free = self.cfg.parallel.saturating_sub(state.running);
        let mut free_following = self.cfg.parallel.saturating_sub(state.following);
        let (mut started, mut started_following) = (0, 0);
        for item in state.items.values_mut() {
            if item.running || item.held || !matches!(item.record.state, UploadState::Pending) {
                continue;
            }
            if item.not_before > now {
                next = Some(next.map_or(item.not_before, |n| n.min(item.not_before)));
                continue;
            }
            let slots = if item.growing.is_some() {
                &mut free_following
            } else {
                &mut free
            };
            if *slots > 0 {
                *slots -= 1;
                if item.growing.is_some() {
                    started_following += 1;
                } else {
                    started += 1;
                }
                item.running = true;
                item.sent = TransferProgress::new();
                ready.push(Ready {
                    record: item.record.clone(),
                    generation: item.generation,
                    sent: item.sent.clone(),
                    growing: item.growing.clone(),
                });
            }
        }
        state.running += started;
        state.following += started_following;
        (ready, next)
    }

    /// The resume slot of one attempt at generation `generation` of `key`: starts with what the
    /// journal holds, and every change the remote makes goes durably into the record, unless the
    /// record has moved on to newer content (then the token belongs to content nobody wants).
    fn resume_slot(self: &Arc<Self>, key: &str, generation: u64, initial: Option<serde_json::Value>) -> ResumeSlot {
        let weak = Arc::downgrade(self);
        let key = key.to_string();
        ResumeSlot::persisted(initial, move |value| {
            let Some(q) = weak.upgrade() else { return };
            let mut state = q.lock();
            let Some(item) = state.items.get_mut(&key) else { return };
            if item.generation != generation {
                return;
            }
            item.record.resume = value.cloned();
            if let Err(e) = q.journal.put(&item.record) {
                tracing::error!(error = %e, "cannot keep the upload's resume state in the journal");
            }
        })
    }

    async fn attempt(
        &self,
        record: &UploadRecord,
        generation: u64,
        sent: &TransferProgress,
        resume: &ResumeSlot,
    ) -> RemoteResult<(Entry, bool)> {
        let meta = tokio::fs::metadata(&record.staged).await.map_err(|e| {
            RemoteError::Protocol(format!("staged file {} is unreadable: {e}", record.staged.display()))
        })?;
        if meta.len() != record.size {
            return Err(RemoteError::Protocol(format!(
                "staged file {} holds {} bytes, the journal says {}",
                record.staged.display(),
                meta.len(),
                record.size
            )));
        }
        let parent = ItemId::new(record.parent.as_str());
        let precondition = match &record.base_version {
            Some(v) => Precondition::Matches(Version::from_etag(v)),
            None => Precondition::Absent,
        };
        let mtime = record.mtime();
        let answer = self
            .remote
            .upload(
                UploadTarget::new(&parent, &record.name, precondition),
                UploadSource::file(&record.staged, mtime),
                &UploadCtx::new(sent.clone(), resume.clone()),
            )
            .await;
        if matches!(
            answer,
            Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists)
        ) {
            if let Some(entry) = self.this_version_on_server(record).await {
                // An earlier attempt of this very content landed without its answer reaching us
                // (a timeout, a lost reply on a loaded machine): it is on the server, no conflict.
                tracing::info!(file = %record.name, "the server already holds this version; an earlier attempt landed");
                return Ok((entry, false));
            }
        }
        match answer {
            Ok(entry) => Ok((entry, false)),
            Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists) if !record.ours.is_empty() => {
                match self.ours_on_server(record).await {
                    Some(server) => {
                        // The "change" is our own earlier upload: ours replaces it, no conflict.
                        tracing::info!(file = %record.name,
                            "the server holds our own earlier version; replacing it");
                        let precondition = match &server.version {
                            Some(v) => Precondition::Matches(v.clone()),
                            None => Precondition::Any,
                        };
                        let entry = self
                            .remote
                            .upload(
                                UploadTarget::new(&parent, &record.name, precondition),
                                UploadSource::file(&record.staged, mtime),
                                &UploadCtx::new(sent.clone(), resume.clone()),
                            )
                            .await?;
                        Ok((entry, false))
                    }
                    None => self.keep_both(record, generation, sent, resume).await,
                }
            }
            Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists) if record.size == 0 => {
                // An empty version (a shell's `>` opened, truncated, closed) is nothing worth
                // keeping beside another device's change: the name keeps that change.
                match self.remote.lookup(&parent, &record.name).await {
                    Ok(entry) => {
                        tracing::info!(file = %record.name,
                            "an empty version met a change on the server; keeping the server's");
                        Ok((entry, true))
                    }
                    // Gone from the server meanwhile: the empty file is all there is.
                    Err(RemoteError::NotFound) => self
                        .remote
                        .upload(
                            UploadTarget::new(&parent, &record.name, Precondition::Absent),
                            UploadSource::file(&record.staged, mtime),
                            &UploadCtx::new(sent.clone(), resume.clone()),
                        )
                        .await
                        .map(|entry| (entry, false)),
                    Err(e) => Err(e),
                }
            }
            Err(RemoteError::PreconditionFailed | RemoteError::AlreadyExists) => {
                self.keep_both(record, generation, sent, resume).await
            }
            Err(e) => Err(e),
        }
    }

    /// The server's copy under `record`'s name when it is one of our own earlier versions of
    /// the file ([`UploadRecord::ours`]): same length and the same bytes.
    async fn ours_on_server(&self, record: &UploadRecord) -> Option<Entry> {
        let parent = ItemId::new(record.parent.as_str());
        let server = self.remote.lookup(&parent, &record.name).await.ok()?;
        for own in record.ours.iter().filter(|o| o.size == server.size) {
            if self.same_content(&server, own).await {
                return Some(server);
            }
        }
        None
    }

    /// The server's copy under `record`'s name when it holds exactly the content `record` sends.
    async fn this_version_on_server(&self, record: &UploadRecord) -> Option<Entry> {
        let parent = ItemId::new(record.parent.as_str());
        let server = self.remote.lookup(&parent, &record.name).await.ok()?;
        let own = OwnVersion {
            staged: record.staged.clone(),
            size: record.size,
        };
        (server.kind == EntryKind::File && server.size == own.size && self.same_content(&server, &own).await)
            .then_some(server)
    }

    /// Whether the server's `entry` holds exactly `own`'s bytes.
    async fn same_content(&self, entry: &Entry, own: &OwnVersion) -> bool {
        use std::os::unix::fs::FileExt;
        const CHUNK: u64 = 4 << 20;
        let Ok(file) = std::fs::File::open(&own.staged) else {
            return false;
        };
        let mut off = 0;
        while off < own.size {
            let len = CHUNK.min(own.size - off);
            let Ok(theirs) = self.remote.read(&entry.id, entry.version.as_ref(), off, len).await else {
                return false;
            };
            let mut mine = vec![0u8; len as usize];
            if theirs.len() as u64 != len || file.read_exact_at(&mut mine, off).is_err() || theirs[..] != mine[..] {
                return false;
            }
            off += len;
        }
        true
    }

    /// The server's copy changed since we read it: ours goes up under a conflict name beside it.
    /// The name is journaled before the copy is sent, so a restart sends it there again rather
    /// than making a second copy.
    async fn keep_both(
        &self,
        record: &UploadRecord,
        generation: u64,
        sent: &TransferProgress,
        resume: &ResumeSlot,
    ) -> RemoteResult<(Entry, bool)> {
        let parent = ItemId::new(record.parent.as_str());
        let mtime = record.mtime();
        if let Some(copy) = &record.conflict_copy {
            tracing::warn!(file = %record.name, conflict_copy = %copy, "sending the conflict copy chosen before");
            let entry = self
                .remote
                .upload(
                    UploadTarget::new(&parent, copy, Precondition::Any),
                    UploadSource::file(&record.staged, mtime),
                    &UploadCtx::new(sent.clone(), resume.clone()),
                )
                .await?;
            return Ok((entry, true));
        }
        let base = conflict_name(&record.name, SystemTime::now());
        // Two conflicts within one second would want one name: number the later ones.
        for n in 1..=100u32 {
            let copy = if n == 1 { base.clone() } else { numbered(&base, n) };
            tracing::warn!(file = %record.name, conflict_copy = %copy,
                "the server's copy changed since it was read; keeping both");
            self.remember_conflict_copy(&record.key, generation, &copy)
                .map_err(|e| RemoteError::LocalFile(format!("journal: {e}")))?;
            match self
                .remote
                .upload(
                    UploadTarget::new(&parent, &copy, Precondition::Absent),
                    UploadSource::file(&record.staged, mtime),
                    &UploadCtx::new(sent.clone(), resume.clone()),
                )
                .await
            {
                Ok(entry) => return Ok((entry, true)),
                Err(RemoteError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::AlreadyExists)
    }

    /// Journal `copy` as the conflict-copy name of generation `generation` of `key`.
    fn remember_conflict_copy(&self, key: &str, generation: u64, copy: &str) -> std::io::Result<()> {
        let mut state = self.lock();
        let Some(item) = state.items.get_mut(key).filter(|i| i.generation == generation) else {
            return Ok(());
        };
        item.record.conflict_copy = Some(copy.to_string());
        if item.journaled {
            self.journal.put(&item.record)?;
        }
        Ok(())
    }

    /// Upload a file while it is written: no conflict copies, no content checks (the whole-file
    /// upload that takes over after any failure does those).
    async fn attempt_growing(
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
    fn finish_growing(&self, key: &str, generation: u64, file: &GrowingFile, result: RemoteResult<Entry>) {
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

    fn finish(&self, key: &str, generation: u64, result: RemoteResult<(Entry, bool)>) {
        let mut state = self.lock();
        state.running -= 1;
        let Some(item) = state.items.get_mut(key) else { return };
        item.running = false;
        // Waiters are woken only after the event is delivered, so whoever waited (fsync, a rename)
        // finds the core already updated.
        let mut wake: Vec<(oneshot::Sender<RemoteResult<()>>, RemoteResult<()>)> = Vec::new();
        for old in item.superseded.drain(..) {
            remove_quietly(&old);
        }
        let event = match result {
            Ok((entry, conflict_copy)) => {
                let uploaded = item.record.clone();
                let (done, waiting): (Vec<Waiter>, Vec<Waiter>) =
                    item.waiters.drain(..).partition(|(g, _)| *g <= generation);
                item.waiters = waiting;
                wake = done.into_iter().map(|(_, tx)| (tx, Ok(()))).collect();
                // The server's version is known again: earlier content of ours need not be kept.
                for own in std::mem::take(&mut item.record.ours) {
                    if own.staged != item.record.staged {
                        remove_quietly(&own.staged);
                    }
                }
                if item.generation == generation {
                    let item = state.items.remove(key).expect("present");
                    if let Err(e) = self.journal.remove(key) {
                        tracing::error!(error = %e, "cannot remove an upload from the journal; it may upload again");
                    }
                    remove_quietly(&item.record.staged);
                } else {
                    // A newer version waits: it now replaces what we just wrote.
                    item.record.base_version = entry.version.as_ref().map(|v| v.as_str().to_string());
                    if let Err(e) = self.journal.put(&item.record) {
                        tracing::error!(error = %e, "cannot update the upload journal");
                    }
                }
                UploadEvent::Uploaded {
                    record: uploaded,
                    entry,
                    conflict_copy,
                    generation,
                }
            }
            Err(error) => {
                let will_retry = is_retryable(&error);
                item.record.attempts += 1;
                item.record.last_error = Some(error.to_string());
                if will_retry {
                    item.not_before = Instant::now() + self.backoff(item.record.attempts);
                    tracing::warn!(file = %item.record.name, attempt = item.record.attempts, error = %error,
                        "upload failed; will retry");
                } else {
                    item.record.state = UploadState::Failed {
                        error: error.to_string(),
                    };
                    item.refusal = Some(error.clone());
                    tracing::error!(file = %item.record.name, error = %error,
                        "upload failed; the data stays queued on disk until the next mount (or, after a lost sign-in, `cloudmount login`)");
                }
                // A record not journaled yet goes there once its staged file is durable
                // (`journal_sealed`), not before.
                if item.journaled {
                    if let Err(e) = self.journal.put(&item.record) {
                        tracing::error!(error = %e, "cannot update the upload journal");
                    }
                }
                // Callers waiting in fsync learn the truth now rather than hang on a dead server.
                if item.generation == generation {
                    wake = item.waiters.drain(..).map(|(_, tx)| (tx, Err(error.clone()))).collect();
                }
                UploadEvent::Failed {
                    record: item.record.clone(),
                    error,
                    will_retry,
                }
            }
        };
        let pending = state
            .items
            .values()
            .any(|i| matches!(i.record.state, UploadState::Pending));
        // The event is delivered under the queue's lock, so nobody can see the upload gone from
        // the queue before the core knows it landed (a rename would take the file for one never
        // uploaded). The sink must therefore never call back into the queue.
        if let Some(sink) = &self.events {
            sink(event);
        }
        drop(state);
        for (tx, result) in wake {
            let _ = tx.send(result);
        }
        if !pending {
            self.idle.notify_waiters();
        }
        self.wake.notify_one();
    }
}

/// The dispatcher: starts ready uploads, sleeps until work arrives or a backoff ends. It runs until
/// [`UploadQueue::stop`].
async fn dispatch(q: Arc<UploadQueue>) {
    loop {
        let woken = q.wake.notified();
        let (ready, next) = q.take_ready();
        for Ready {
            record,
            generation,
            sent,
            growing,
        } in ready
        {
            let q2 = q.clone();
            tokio::spawn(async move {
                if let Some(file) = growing {
                    let result = q2.attempt_growing(&record, &file, &sent).await;
                    q2.finish_growing(&record.key, generation, &file, result);
                    return;
                }
                let slot = q2.resume_slot(&record.key, generation, record.resume.clone());
                let result = q2.attempt(&record, generation, &sent, &slot).await;
                q2.finish(&record.key, generation, result);
            });
        }
        if q.lock().stopped {
            return;
        }
        let sleep = next
            .map(|n| n.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{EntryKind, Quota};
    use async_trait::async_trait;
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::Semaphore;

    /// `impl Remote for $ty` for a test remote that only takes uploads: nothing to read, no quota,
    /// and the upload methods given.
    macro_rules! upload_only_remote {
        ($ty:ty, $name:literal, { $($uploads:tt)* }) => {
            #[async_trait]
            impl Remote for $ty {
                fn describe(&self) -> String {
                    $name.into()
                }
                async fn root(&self) -> RemoteResult<Entry> {
                    Err(RemoteError::Unsupported("test".into()))
                }
                async fn stat(&self, _: &ItemId) -> RemoteResult<Entry> {
                    Err(RemoteError::Unsupported("test".into()))
                }
                async fn lookup(&self, _: &ItemId, _: &str) -> RemoteResult<Entry> {
                    Err(RemoteError::Unsupported("test".into()))
                }
                async fn list(&self, _: &ItemId) -> RemoteResult<Vec<Entry>> {
                    Err(RemoteError::Unsupported("test".into()))
                }
                async fn read(&self, _: &ItemId, _: Option<&Version>, _: u64, _: u64) -> RemoteResult<Bytes> {
                    Err(RemoteError::Unsupported("test".into()))
                }
                async fn quota(&self) -> RemoteResult<Option<Quota>> {
                    Ok(None)
                }
                $($uploads)*
            }
        };
    }

    /// A remote that only stores uploads: conditional semantics, scripted failures, and a gate
    /// that holds uploads until a test lets them through.
    struct UploadRemote {
        files: Mutex<HashMap<String, (Bytes, u64)>>,
        versions: AtomicU32,
        failures: Mutex<Vec<RemoteError>>,
        gate: Semaphore,
        uploads: AtomicU32,
    }

    impl UploadRemote {
        fn new(open: bool) -> Arc<Self> {
            Arc::new(UploadRemote {
                files: Mutex::new(HashMap::new()),
                versions: AtomicU32::new(1),
                failures: Mutex::new(Vec::new()),
                gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
                uploads: AtomicU32::new(0),
            })
        }
        fn fail_next(&self, errors: Vec<RemoteError>) {
            *self.failures.lock().unwrap() = errors.into_iter().rev().collect();
        }
        fn put(&self, name: &str, data: &[u8]) -> String {
            let v = self.versions.fetch_add(1, Ordering::SeqCst) as u64;
            self.files
                .lock()
                .unwrap()
                .insert(name.into(), (Bytes::copy_from_slice(data), v));
            format!("v{v}")
        }
        fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.files.lock().unwrap().get(name).map(|(b, _)| b.to_vec())
        }
        fn entry(name: &str, size: u64, v: u64) -> Entry {
            Entry {
                id: ItemId::new(name),
                name: name.into(),
                kind: EntryKind::File,
                size,
                mtime: SystemTime::UNIX_EPOCH,
                version: Some(Version::from_etag(&format!("v{v}"))),
                meta: Default::default(),
            }
        }
    }

    upload_only_remote!(UploadRemote, "uploads", {
        async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, _cx: &UploadCtx) -> RemoteResult<Entry> {
            let (name, source, precondition) = (to.name, from.path(), to.precondition);
            self.gate.acquire().await.expect("gate").forget();
            if let Some(e) = self.failures.lock().unwrap().pop() {
                return Err(e);
            }
            let data = tokio::fs::read(source)
                .await
                .map_err(|e| RemoteError::Protocol(e.to_string()))?;
            let mut files = self.files.lock().unwrap();
            let current = files.get(name).map(|(_, v)| format!("v{v}"));
            match (&precondition, &current) {
                (Precondition::Absent, Some(_)) => return Err(RemoteError::AlreadyExists),
                (Precondition::Matches(want), Some(have)) if want.as_str() != have => {
                    return Err(RemoteError::PreconditionFailed)
                }
                (Precondition::Matches(_), None) => return Err(RemoteError::PreconditionFailed),
                _ => {}
            }
            let v = self.versions.fetch_add(1, Ordering::SeqCst) as u64;
            files.insert(name.into(), (Bytes::from(data.clone()), v));
            self.uploads.fetch_add(1, Ordering::SeqCst);
            Ok(Self::entry(name, data.len() as u64, v))
        }
    });

    struct Fixture {
        dir: tempfile::TempDir,
        n: u32,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                n: 0,
            }
        }
        fn journal(&self) -> Journal {
            Journal::open(self.dir.path().join("journal")).unwrap()
        }
        fn stage(&mut self, key: &str, name: &str, data: &[u8], base: Option<&str>) -> UploadRecord {
            self.n += 1;
            let staged = self.dir.path().join(format!("staged-{}", self.n));
            std::fs::write(&staged, data).unwrap();
            UploadRecord {
                key: key.into(),
                parent: String::new(),
                name: name.into(),
                staged,
                size: data.len() as u64,
                mtime_ns: 0,
                base_version: base.map(String::from),
                attempts: 0,
                last_error: None,
                resume: None,
                ours: Vec::new(),
                conflict_copy: None,
                state: UploadState::Pending,
            }
        }
    }

    fn quick() -> QueueConfig {
        QueueConfig {
            parallel: 2,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        }
    }

    #[test]
    fn later_conflict_copies_of_one_second_are_numbered() {
        assert_eq!(
            numbered("a (conflict 2026-11-23 101502).txt", 2),
            "a (conflict 2026-11-23 101502 2).txt"
        );
        assert_eq!(
            numbered("Makefile (conflict 2026-11-23 101502)", 3),
            "Makefile (conflict 2026-11-23 101502 3)"
        );
    }

    #[tokio::test]
    async fn an_upload_reaches_the_server_and_leaves_nothing_behind() {
        let mut fx = Fixture::new();
        let remote = UploadRemote::new(true);
        let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        let rec = fx.stage("k1", "a.txt", b"hello", None);
        let staged = rec.staged.clone();
        let generation = q.enqueue(rec).unwrap();
        q.wait("k1", generation).await.unwrap();
        assert_eq!(remote.get("a.txt").unwrap(), b"hello");
        assert!(q.drain(Duration::from_secs(5)).await.is_empty());
        assert!(fx.journal().load().unwrap().records.is_empty());
        assert!(!staged.exists(), "the staged file goes once uploaded");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_fsync_hears_about_them() {
        let mut fx = Fixture::new();
        let remote = UploadRemote::new(true);
        remote.fail_next(vec![
            RemoteError::Connect("refused".into()),
            RemoteError::Http {
                status: 502,
                message: "bad gateway".into(),
            },
        ]);
        let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        let generation = q.enqueue(fx.stage("k", "b.txt", b"data", None)).unwrap();
        let first = q.wait("k", generation).await;
        assert!(
            matches!(first, Err(RemoteError::Connect(_))),
            "fsync reports the failed attempt: {first:?}"
        );
        assert!(
            q.drain(Duration::from_secs(10)).await.is_empty(),
            "retried until it went up"
        );
        assert_eq!(remote.get("b.txt").unwrap(), b"data");
    }

    #[tokio::test]
    async fn a_restarted_queue_resumes_from_the_journal() {
        let mut fx = Fixture::new();
        let down = UploadRemote::new(true);
        down.fail_next(vec![RemoteError::Connect("down".into()); 1000]);
        let q = UploadQueue::start(down, fx.journal(), quick(), None).unwrap();
        q.enqueue(fx.stage("k", "c.txt", b"survives", None)).unwrap();
        let left = q.drain(Duration::from_millis(300)).await;
        assert_eq!(left.len(), 1);
        assert!(left[0].attempts >= 1 && left[0].last_error.is_some());
        q.stop();

        let up = UploadRemote::new(true);
        let q2 = UploadQueue::start(up.clone(), fx.journal(), quick(), None).unwrap();
        assert!(q2.drain(Duration::from_secs(10)).await.is_empty());
        assert_eq!(up.get("c.txt").unwrap(), b"survives");
    }

    #[tokio::test]
    async fn newer_versions_upload_in_order_without_false_conflicts() {
        let mut fx = Fixture::new();
        let remote = UploadRemote::new(false);
        let base = remote.put("d.txt", b"server");
        let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        let g1 = q.enqueue(fx.stage("k", "d.txt", b"first", Some(&base))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // gen 1 is now held in the gate
        let g2 = q.enqueue(fx.stage("k", "d.txt", b"second", Some(&base))).unwrap();
        assert_eq!((g1, g2), (1, 2));
        remote.gate.add_permits(10);
        q.wait("k", g2).await.unwrap();
        assert_eq!(remote.get("d.txt").unwrap(), b"second");
        assert!(remote.files.lock().unwrap().keys().all(|k| !k.contains("conflict")));
        assert!(q.drain(Duration::from_secs(5)).await.is_empty());
    }

    #[tokio::test]
    async fn a_conflict_keeps_both_versions() {
        let mut fx = Fixture::new();
        let remote = UploadRemote::new(true);
        let seen = remote.put("e.txt", b"what we read");
        remote.put("e.txt", b"changed elsewhere");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let q = UploadQueue::start(
            remote.clone(),
            fx.journal(),
            quick(),
            Some(Box::new(move |e| sink.lock().unwrap().push(e))),
        )
        .unwrap();
        let generation = q.enqueue(fx.stage("k", "e.txt", b"ours", Some(&seen))).unwrap();
        q.wait("k", generation).await.unwrap();
        assert_eq!(remote.get("e.txt").unwrap(), b"changed elsewhere");
        let files = remote.files.lock().unwrap();
        let copy = files
            .keys()
            .find(|k| k.starts_with("e (conflict ") && k.ends_with(").txt"))
            .expect("copy");
        assert_eq!(&files[copy].0[..], b"ours");
        assert!(matches!(
            events.lock().unwrap()[0],
            UploadEvent::Uploaded {
                conflict_copy: true,
                ..
            }
        ));
    }

    /// A remote that resumes: the first attempt saves a token and fails, later attempts must be
    /// handed that token back.
    struct ResumingRemote {
        fail_first: bool,
        seen: Mutex<Vec<Option<serde_json::Value>>>,
    }

    upload_only_remote!(ResumingRemote, "resuming", {
        async fn upload(&self, to: UploadTarget<'_>, _from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
            let (name, resume) = (to.name, &cx.resume);
            self.seen.lock().unwrap().push(resume.get());
            if self.fail_first {
                resume.set(Some(serde_json::json!({"session": "s-1", "offset": 5})));
                return Err(RemoteError::Forbidden("stop here".into()));
            }
            resume.set(None);
            Ok(UploadRemote::entry(name, 1, 1))
        }
    });

    #[tokio::test]
    async fn resume_tokens_are_journaled_and_handed_to_the_next_attempt() {
        let mut fx = Fixture::new();
        let first = Arc::new(ResumingRemote {
            fail_first: true,
            seen: Mutex::new(Vec::new()),
        });
        let q = UploadQueue::start(first.clone(), fx.journal(), quick(), None).unwrap();
        let generation = q.enqueue(fx.stage("k", "r.bin", b"resume me", None)).unwrap();
        assert!(q.wait("k", generation).await.is_err());
        let token = serde_json::json!({"session": "s-1", "offset": 5});
        let on_disk = fx.journal().load().unwrap().records;
        assert_eq!(on_disk[0].resume.as_ref(), Some(&token), "in the journal at once");
        assert_eq!(*first.seen.lock().unwrap(), vec![None]);
        q.stop();

        // A restarted daemon hands the token to the remote.
        let second = Arc::new(ResumingRemote {
            fail_first: false,
            seen: Mutex::new(Vec::new()),
        });
        let q2 = UploadQueue::start(second.clone(), fx.journal(), quick(), None).unwrap();
        assert!(q2.drain(Duration::from_secs(5)).await.is_empty());
        assert_eq!(*second.seen.lock().unwrap(), vec![Some(token)]);
        assert!(fx.journal().load().unwrap().records.is_empty());
    }

    #[tokio::test]
    async fn new_content_drops_the_resume_token() {
        let mut fx = Fixture::new();
        let remote = Arc::new(ResumingRemote {
            fail_first: true,
            seen: Mutex::new(Vec::new()),
        });
        let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        let g1 = q.enqueue(fx.stage("k", "r.bin", b"old", None)).unwrap();
        assert!(q.wait("k", g1).await.is_err());
        assert!(fx.journal().load().unwrap().records[0].resume.is_some());
        let mut newer = fx.stage("k", "r.bin", b"new content", None);
        newer.resume = Some(serde_json::json!("stale"));
        q.enqueue(newer).unwrap();
        assert_eq!(fx.journal().load().unwrap().records[0].resume, None);
    }

    #[tokio::test]
    async fn errors_retrying_cannot_fix_keep_the_data_for_the_next_mount() {
        let mut fx = Fixture::new();
        let remote = UploadRemote::new(true);
        remote.fail_next(vec![RemoteError::Forbidden("no".into())]);
        let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        let rec = fx.stage("k", "f.txt", b"keep me", None);
        let staged = rec.staged.clone();
        let generation = q.enqueue(rec).unwrap();
        assert!(matches!(q.wait("k", generation).await, Err(RemoteError::Forbidden(_))));
        let left = q.drain(Duration::from_millis(200)).await;
        assert!(left[0].failed, "not retried by itself");
        assert!(q.wait("k", generation).await.is_err(), "fsync keeps telling the truth");
        assert!(staged.exists(), "the data stays on disk");
        q.stop();
        let q2 = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
        assert!(
            q2.drain(Duration::from_secs(5)).await.is_empty(),
            "a restart tries again"
        );
        assert_eq!(remote.get("f.txt").unwrap(), b"keep me");
    }
}
