//! Streamed request bodies: a local file (or a range of it) read as the connection takes it, a
//! growing file followed as it is written, and the stall limit that bounds them instead of the
//! deadline.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::request::BodyObserver;
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{GrowingFile, TransferProgress};

/// When a streamed upload last made progress (a chunk taken by the connection), for the stall
/// limit.
pub(super) struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Run `fut` to completion, or give up (`None`) once `progress` has not moved for `limit`.
pub(super) async fn stall_guard<F: Future>(fut: F, progress: &Progress, limit: Duration) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let idle_until = progress.last() + limit;
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep_until(idle_until.into()) => {
                if progress.last() + limit <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// Size of the chunks a streamed file is read in.
pub(super) const FILE_CHUNK: usize = 1 << 20;

/// Open `path` and make a body that streams exactly its current length (which goes into
/// `Content-Length`), touching `progress` as the connection takes each chunk and counting its
/// bytes in `sent`.
pub(super) async fn file_body(
    path: &Path,
    range: Option<(u64, u64)>,
    progress: Option<Arc<Progress>>,
    sent: Option<TransferProgress>,
    observer: Option<BodyObserver>,
) -> RemoteResult<(reqwest::Body, u64)> {
    let local = |e: std::io::Error| RemoteError::LocalFile(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    let meta = file.metadata().await.map_err(local)?;
    if !meta.is_file() {
        return Err(RemoteError::LocalFile(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let (start, len) = match range {
        None => (0, meta.len()),
        Some((offset, len)) => {
            if offset.checked_add(len).is_none_or(|end| end > meta.len()) {
                return Err(RemoteError::LocalFile(format!(
                    "{}: holds {} bytes, cannot send {len} from {offset}",
                    path.display(),
                    meta.len()
                )));
            }
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(offset))
                .await
                .map_err(local)?;
            (offset, len)
        }
    };
    let limited = tokio::io::AsyncReadExt::take(file, len);
    if let Some(sent) = &sent {
        sent.set(0);
    }
    let mut at = start;
    let stream = tokio_util::io::ReaderStream::with_capacity(limited, FILE_CHUNK).inspect(move |chunk| {
        if let Some(p) = &progress {
            p.touch();
        }
        if let Ok(chunk) = chunk {
            if let Some(sent) = &sent {
                sent.add(chunk.len() as u64);
            }
            if let Some(o) = &observer {
                (o.0)(at, chunk);
            }
            at += chunk.len() as u64;
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), len))
}

/// A body that follows growing file `file` as it is written (no length: chunked), touching
/// `progress` and counting in `sent` as the connection takes each chunk.
pub(super) fn growing_body(
    file: &Arc<GrowingFile>,
    progress: Option<Arc<Progress>>,
    sent: Option<TransferProgress>,
) -> reqwest::Body {
    if let Some(sent) = &sent {
        sent.set(0);
    }
    let stream = file.clone().body(move |n| {
        if let Some(p) = &progress {
            p.touch();
        }
        if let Some(sent) = &sent {
            sent.add(n);
        }
    });
    reqwest::Body::wrap_stream(stream)
}
