//! Running uploads: the dispatcher that starts ready ones, one whole-file attempt (with the
//! checks that tell our own earlier versions from another device's change), and the end of an
//! attempt, which updates the queue and the journal and tells the core.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::journal::{OwnVersion, UploadRecord, UploadState};
use super::queue::{is_retryable, Ready, UploadEvent, UploadQueue, Waiter};
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{
    Entry, EntryKind, ItemId, Precondition, ResumeSlot, TransferProgress, UploadCtx, UploadSource, UploadTarget,
    Version,
};

impl UploadQueue {
    fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .cfg
            .base_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        exp.min(self.cfg.max_backoff)
    }

    /// Pick work that may start now; returns it and the time of the next delayed item.
    pub(super) fn take_ready(&self) -> (Vec<Ready>, Option<Instant>) {
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
    pub(super) fn resume_slot(
        self: &Arc<Self>,
        key: &str,
        generation: u64,
        initial: Option<serde_json::Value>,
    ) -> ResumeSlot {
        let weak = Arc::downgrade(self);
        let key = key.to_string();
        ResumeSlot::persisted(initial, move |value| {
            let Some(q) = weak.upgrade() else { return };
            let written = {
                let mut state = q.lock();
                let Some(item) = state.items.get_mut(&key) else { return };
                if item.generation != generation {
                    return;
                }
                item.record.resume = value.cloned();
                q.journal.put(&item.record)
            };
            if let Err(e) = written.wait() {
                tracing::error!(error = %e, "cannot keep the upload's resume state in the journal");
            }
        })
    }

    pub(super) async fn attempt(
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
    pub(super) async fn ours_on_server(&self, record: &UploadRecord) -> Option<Entry> {
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
    pub(super) async fn this_version_on_server(&self, record: &UploadRecord) -> Option<Entry> {
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
    pub(super) async fn same_content(&self, entry: &Entry, own: &OwnVersion) -> bool {
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

    pub(super) fn finish(&self, key: &str, generation: u64, result: RemoteResult<(Entry, bool)>) {
        let mut state = self.lock();
        state.running -= 1;
        let Some(item) = state.items.get_mut(key) else { return };
        item.running = false;
        // Waiters are woken only after the event is delivered, so whoever waited (fsync, a rename)
        // finds the core already updated.
        let mut wake: Vec<(oneshot::Sender<RemoteResult<()>>, RemoteResult<()>)> = Vec::new();
        let mut unused: Vec<_> = item.superseded.drain(..).collect();
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
                        unused.push(own.staged);
                    }
                }
                if item.generation == generation {
                    let item = state.items.remove(key).expect("present");
                    // Not waited for (the server has the bytes; a record left behind by a crash
                    // is found on the server at the next attempt); a failure is logged.
                    drop(self.journal.remove(key));
                    unused.push(item.record.staged);
                } else {
                    // A newer version waits: it now replaces what we just wrote.
                    item.record.base_version = entry.version.as_ref().map(|v| v.as_str().to_string());
                    drop(self.journal.put(&item.record));
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
                    drop(self.journal.put(&item.record));
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
        let deleted = self.journal.delete_staged(unused);
        drop(state);
        // Staged files we are done with are gone before anyone waiting hears (no lock held).
        let _ = deleted.wait();
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
pub(super) async fn dispatch(q: Arc<UploadQueue>) {
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
