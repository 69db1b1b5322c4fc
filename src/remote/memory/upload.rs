//! Uploads into the in-memory drive, and the switches that make them misbehave as a server or a
//! link would: failures, delays, lost replies, a connection cut partway (which leaves a resumable
//! session, as a Graph upload session does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::{join, MemoryRemote, Node};
use crate::error::{RemoteError, RemoteResult};
use crate::remote::upload::local_size;
use crate::remote::{Entry, EntryKind, ItemId, Meta, Precondition, UploadCtx, UploadSource, UploadTarget};

/// Chunks a file upload is received in (progress moves, and a cut can fall, between them).
const CHUNK: usize = 64 << 10;

/// Bytes of an upload the drive received before its connection was cut, kept for a resume.
pub(super) struct Session {
    parent: String,
    name: String,
    size: u64,
    data: Vec<u8>,
}

/// Sessions by number, and the number the next one gets.
#[derive(Default)]
pub(super) struct Sessions {
    open: HashMap<u64, Session>,
    next: u64,
}

impl MemoryRemote {
    /// [`crate::remote::Remote::upload`]: receive the body (a finished file from where a resumed
    /// session left off, or a growing one as it is written), then apply it as a server applies a
    /// complete upload.
    pub(super) async fn receive(
        &self,
        to: UploadTarget<'_>,
        from: UploadSource<'_>,
        cx: &UploadCtx,
    ) -> RemoteResult<Entry> {
        self.check_up()?;
        Self::check_name(to.name)?;
        match from {
            UploadSource::File { path, mtime } => {
                let local = |e: std::io::Error| RemoteError::LocalFile(format!("{}: {e}", path.display()));
                let size = local_size(path).await?;
                let mut data = self.resumed_session(&to, size, cx);
                cx.progress.set(data.len() as u64);
                let mut file = tokio::fs::File::open(path).await.map_err(local)?;
                tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(data.len() as u64))
                    .await
                    .map_err(local)?;
                let chunks = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
                let cut = self.cut_next_upload.lock().unwrap().take();
                if let Err(e) = self.take_body(chunks, &mut data, cut, &self.bytes_received, cx).await {
                    self.keep_session(&to, size, data, cx);
                    return Err(e);
                }
                cx.resume.set(None);
                self.apply_upload(&to, data.into(), mtime).await
            }
            UploadSource::Growing(file) => {
                if !self.streams_growing.load(Ordering::SeqCst) {
                    return Err(RemoteError::Unsupported(
                        "this remote cannot upload a file while it is written".into(),
                    ));
                }
                self.growing_started.fetch_add(1, Ordering::Relaxed);
                cx.progress.set(0);
                let mut data = Vec::new();
                let body = file.clone().body(|_| {});
                self.take_body(body, &mut data, None, &self.growing_received, cx)
                    .await?;
                let (_, mtime) = file
                    .sealed()
                    .ok_or_else(|| RemoteError::LocalFile("growing file ended unsealed".into()))?;
                let entry = self.apply_upload(&to, data.into(), mtime).await?;
                self.growing_applied.fetch_add(1, Ordering::Relaxed);
                Ok(entry)
            }
        }
    }

    /// Append the chunks of `body` to `data`, counting them in `received` and as sent; with
    /// `cut`, the connection breaks once `data` holds that many bytes.
    async fn take_body(
        &self,
        body: impl Stream<Item = std::io::Result<Bytes>>,
        data: &mut Vec<u8>,
        cut: Option<u64>,
        received: &AtomicU64,
        cx: &UploadCtx,
    ) -> RemoteResult<()> {
        let mut body = std::pin::pin!(body.map_err(|e| RemoteError::LocalFile(e.to_string())));
        while let Some(chunk) = body.next().await.transpose()? {
            let room = cut.map_or(chunk.len(), |at| {
                (at.saturating_sub(data.len() as u64) as usize).min(chunk.len())
            });
            data.extend_from_slice(&chunk[..room]);
            received.fetch_add(room as u64, Ordering::Relaxed);
            cx.progress.add(room as u64);
            if room < chunk.len() {
                return Err(RemoteError::ConnectionLost(
                    "memory remote: connection cut mid-upload".into(),
                ));
            }
        }
        Ok(())
    }

    /// What a session named in `cx.resume` holds of this very upload (then counted as resumed);
    /// nothing, and the token dropped, when there is none or it is for another upload.
    fn resumed_session(&self, to: &UploadTarget<'_>, size: u64, cx: &UploadCtx) -> Vec<u8> {
        let Some(token) = cx.resume.get() else {
            return Vec::new();
        };
        cx.resume.set(None);
        let Some(n) = token.get("memory_session").and_then(Value::as_u64) else {
            return Vec::new();
        };
        let mut sessions = self.sessions.lock().unwrap();
        match sessions.open.remove(&n) {
            Some(s) if s.parent == to.parent.as_str() && s.name == to.name && s.size == size => {
                self.resumed.fetch_add(1, Ordering::Relaxed);
                s.data
            }
            _ => Vec::new(),
        }
    }

    /// Keep what an interrupted upload delivered, and say where in `cx.resume`.
    fn keep_session(&self, to: &UploadTarget<'_>, size: u64, data: Vec<u8>, cx: &UploadCtx) {
        let mut sessions = self.sessions.lock().unwrap();
        sessions.next += 1;
        let n = sessions.next;
        let session = Session {
            parent: to.parent.as_str().to_string(),
            name: to.name.to_string(),
            size,
            data,
        };
        sessions.open.insert(n, session);
        drop(sessions);
        cx.resume.set(Some(json!({ "memory_session": n })));
    }

    /// Break the connection of the next upload of a finished file once the drive holds `bytes`
    /// of it: the upload fails with `ConnectionLost`, and its resume slot names a session that
    /// a later upload of the same file to the same place carries on from.
    pub fn cut_next_upload_at(&self, bytes: u64) {
        *self.cut_next_upload.lock().unwrap() = Some(bytes);
    }

    /// Let the core upload files while they are written ([`UploadSource::Growing`]); off by
    /// default, like remotes that cannot promise an interrupted upload changes nothing.
    pub fn set_streams_growing_uploads(&self, on: bool) {
        self.streams_growing.store(on, Ordering::SeqCst);
    }

    /// Store `data` at `to` the way a server applies a complete upload: after the
    /// upload delay and scripted failures, checking the precondition at that moment.
    async fn apply_upload(&self, to: &UploadTarget<'_>, data: Bytes, mtime: SystemTime) -> RemoteResult<Entry> {
        let delay = *self.upload_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = self.upload_failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        let entry = self.apply_now(to.parent, to.name, data, mtime, &to.precondition)?;
        if self.lose_upload_replies.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(entry)
    }

    /// The upload's effect on the drive, checked and applied at once.
    fn apply_now(
        &self,
        parent: &ItemId,
        name: &str,
        data: Bytes,
        mtime: SystemTime,
        precondition: &Precondition,
    ) -> RemoteResult<Entry> {
        self.check_up()?;
        let path = join(parent.as_str(), name);
        let mut nodes = self.nodes.lock().unwrap();
        Self::check_parent(&nodes, parent.as_str())?;
        let existing = nodes.get(&path);
        match (precondition, existing) {
            (Precondition::Absent, Some(_)) => return Err(RemoteError::AlreadyExists),
            (Precondition::Matches(_), None) => return Err(RemoteError::PreconditionFailed),
            (Precondition::Matches(v), Some(n)) if v.as_str() != n.version.to_string() => {
                return Err(RemoteError::PreconditionFailed)
            }
            _ => {}
        }
        if existing.is_some_and(|n| n.kind == EntryKind::Directory) {
            return Err(RemoteError::Http {
                status: 405,
                message: "cannot upload over a folder".into(),
            });
        }
        let node = Node {
            kind: EntryKind::File,
            data,
            mtime: self.stored_mtime(mtime),
            version: self.bump(),
            // A replaced file keeps its mode and owner, as on a local filesystem (and on WebDAV,
            // whose dead properties outlive a PUT); the new content brings its own time.
            meta: Meta {
                mtime: None,
                ..existing.map(|n| n.meta.clone()).unwrap_or_default()
            },
        };
        let entry = Self::entry(&path, &node);
        nodes.insert(path, node);
        self.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(entry)
    }

    /// Make the next `n` uploads fail with `error` (after the upload delay, without changing
    /// anything), on top of failures already queued.
    pub fn fail_next_uploads(&self, n: usize, error: RemoteError) {
        let mut q = self.upload_failures.lock().unwrap();
        q.extend(std::iter::repeat_n(error, n));
    }

    /// Drop the upload failures still queued by [`MemoryRemote::fail_next_uploads`].
    pub fn clear_upload_failures(&self) {
        self.upload_failures.lock().unwrap().clear();
    }

    /// From now on, apply each upload and then never answer it, as when the daemon is killed
    /// while the server's reply is on its way: the server holds the content, the client never
    /// hears it did.
    pub fn set_lose_upload_replies(&self, on: bool) {
        self.lose_upload_replies.store(on, Ordering::SeqCst);
    }

    /// Keep modification times in whole seconds from now on, as Apache and OneDrive do.
    pub fn set_whole_second_mtimes(&self, on: bool) {
        self.whole_seconds.store(on, Ordering::SeqCst);
    }

    pub(super) fn stored_mtime(&self, mtime: SystemTime) -> SystemTime {
        if !self.whole_seconds.load(Ordering::SeqCst) {
            return mtime;
        }
        let secs = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Make every upload take `delay` before it is applied (or fails), as a slow link would.
    pub fn set_upload_delay(&self, delay: Duration) {
        *self.upload_delay.lock().unwrap() = delay;
    }
}
