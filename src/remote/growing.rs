//! A staged file that is still being written, uploaded while it grows.
//!
//! Uploading only once a file is closed makes writing a big file cost the time to write it plus
//! the time to send it. When a file is created (or truncated) and then written strictly in order,
//! the upload can instead start at once and follow the writer: [`GrowingFile`] is the shared
//! record of how far the writer got. The writer calls [`GrowingFile::appended`] after each write,
//! and [`GrowingFile::seal`] once the content is final (at close, after the staged file is on disk
//! and queued in the journal); the uploader streams the bytes as they become available and ends
//! its request only after the seal. Anything but an append (a write elsewhere, a truncate, a
//! rename, the file deleted) calls [`GrowingFile::spoil`]: the request then fails before it ends,
//! so the server never takes a version the writer did not mean, and the ordinary whole-file
//! upload takes over. A remote streams growing files only where an upload cut off halfway leaves
//! the server's copy as it was (see [`super::Capabilities::streams_growing_uploads`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

/// How far the writer got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Growth {
    /// Bytes `[0, written)` hold their content.
    written: u64,
    /// The final length and modification time, once the writer is done.
    sealed: Option<(u64, SystemTime)>,
    /// The content is no longer an in-order stream: the upload must not complete.
    spoiled: bool,
}

/// What [`GrowingFile::wait_beyond`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grown {
    /// Bytes up to this offset (exclusive) can be read.
    To(u64),
    /// The file is final at the offset asked about: nothing more will come.
    End,
    /// The upload must stop.
    Spoiled,
}

/// A staged file being written in order, shared by its writer and its uploader.
#[derive(Debug)]
pub struct GrowingFile {
    path: PathBuf,
    growth: watch::Sender<Growth>,
}

/// Size of the chunks the body is read in (pooled buffers: see [`crate::buffers`]).
const CHUNK: u64 = crate::buffers::BUFFER_SIZE as u64;

impl GrowingFile {
    /// The file at `path`, written from byte 0 up to `written` so far.
    pub fn new(path: impl Into<PathBuf>, written: u64) -> Arc<Self> {
        let (growth, _) = watch::channel(Growth {
            written,
            sealed: None,
            spoiled: false,
        });
        Arc::new(GrowingFile {
            path: path.into(),
            growth,
        })
    }

    /// The staged file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer wrote `[offset, end)`. An append moves the readable end on; any other write
    /// spoils the upload (returns `false`).
    pub fn appended(&self, offset: u64, end: u64) -> bool {
        let mut in_order = false;
        self.growth.send_modify(|g| {
            if !g.spoiled && g.sealed.is_none() && offset == g.written {
                g.written = end;
                in_order = true;
            } else {
                g.spoiled = true;
            }
        });
        in_order
    }

    /// The content stopped being an in-order stream (or nobody wants it any more): make the upload
    /// fail. Does nothing once sealed: sealed content is final.
    pub fn spoil(&self) {
        self.growth.send_if_modified(|g| {
            if g.sealed.is_some() || g.spoiled {
                return false;
            }
            g.spoiled = true;
            true
        });
    }

    /// The writer is done: the file holds `size` bytes, to be kept with `mtime`. Returns `false`
    /// (and spoils) when the upload cannot stand for that content: it was spoiled already, or the
    /// length differs from what was appended.
    pub fn seal(&self, size: u64, mtime: SystemTime) -> bool {
        let mut sealed = false;
        self.growth.send_modify(|g| {
            if g.spoiled || g.sealed.is_some() || g.written != size {
                g.spoiled = true;
            } else {
                g.sealed = Some((size, mtime));
                sealed = true;
            }
        });
        sealed
    }

    /// Whether the upload was spoiled.
    pub fn is_spoiled(&self) -> bool {
        self.growth.borrow().spoiled
    }

    /// The final length and modification time, once sealed.
    pub fn sealed(&self) -> Option<(u64, SystemTime)> {
        let g = self.growth.borrow();
        if g.spoiled {
            None
        } else {
            g.sealed
        }
    }

    /// Wait until bytes beyond `pos` can be read, the file is final at `pos`, or it is spoiled.
    pub async fn wait_beyond(&self, pos: u64) -> Grown {
        let mut rx = self.growth.subscribe();
        let g = rx
            .wait_for(|g| g.spoiled || g.written > pos || g.sealed.is_some())
            .await
            .map(|g| *g);
        match g {
            Err(_) => Grown::Spoiled,
            Ok(g) if g.spoiled => Grown::Spoiled,
            Ok(g) if g.written > pos => Grown::To(g.written),
            Ok(_) => Grown::End,
        }
    }

    /// The content as a stream of chunks for a request body: it follows the writer and ends once
    /// the file is sealed and every byte went out; it fails if the upload is spoiled, so the
    /// request ends with an error and the server keeps what it had. `on_chunk` sees each chunk's
    /// length as it is handed over (progress).
    pub fn body(
        self: Arc<Self>,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> impl Stream<Item = std::io::Result<Bytes>> {
        let on_chunk = Arc::new(on_chunk);
        futures::stream::try_unfold((self, None::<Arc<File>>, 0u64), move |(me, file, pos)| {
            let on_chunk = on_chunk.clone();
            async move {
                let end = match me.wait_beyond(pos).await {
                    Grown::End => return Ok(None),
                    Grown::Spoiled => {
                        return Err(std::io::Error::other(
                            "the file changed out of order while it was being uploaded",
                        ))
                    }
                    Grown::To(end) => end,
                };
                let file = match file {
                    Some(f) => f,
                    None => Arc::new(File::open(&me.path)?),
                };
                let len = (end - pos).min(CHUNK) as usize;
                let reader = file.clone();
                let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                    let mut buf = crate::buffers::with_capacity(CHUNK as usize);
                    buf.resize(len, 0);
                    reader.read_exact_at(&mut buf, pos)?;
                    Ok(crate::buffers::freeze(buf))
                })
                .await
                .map_err(std::io::Error::other)??;
                on_chunk(chunk.len() as u64);
                Ok(Some((chunk, (me, Some(file), pos + len as u64))))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    fn staged(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staged");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn the_body_follows_the_writer_and_ends_at_the_seal() {
        let (_dir, path) = staged(b"");
        let g = GrowingFile::new(&path, 0);
        let body = tokio::spawn(g.clone().body(|_| {}).map_ok(|b| b.to_vec()).try_concat());
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut at = 0;
        for part in [&b"hello "[..], b"growing ", b"world"] {
            f.write_all(part).unwrap();
            assert!(g.appended(at, at + part.len() as u64));
            at += part.len() as u64;
            tokio::task::yield_now().await;
        }
        assert!(!body.is_finished(), "the body must not end before the seal");
        assert!(g.seal(at, SystemTime::UNIX_EPOCH));
        let got = body.await.unwrap().unwrap();
        assert_eq!(&got[..], b"hello growing world");
    }

    #[tokio::test]
    async fn a_write_out_of_order_fails_the_body() {
        let (_dir, path) = staged(b"abcdef");
        let g = GrowingFile::new(&path, 6);
        let body = tokio::spawn(g.clone().body(|_| {}).map_ok(|b| b.to_vec()).try_concat());
        assert!(!g.appended(2, 4), "a rewrite is not an append");
        assert!(body.await.unwrap().is_err());
        assert!(!g.seal(6, SystemTime::UNIX_EPOCH), "spoiled content cannot be sealed");
        assert_eq!(g.sealed(), None);
    }

    #[tokio::test]
    async fn a_seal_at_another_length_spoils() {
        let (_dir, path) = staged(b"abc");
        let g = GrowingFile::new(&path, 3);
        assert!(!g.seal(2, SystemTime::UNIX_EPOCH));
        assert!(g.is_spoiled());
        assert_eq!(g.wait_beyond(3).await, Grown::Spoiled);
    }

    #[tokio::test]
    async fn spoil_after_seal_changes_nothing() {
        let (_dir, path) = staged(b"abc");
        let g = GrowingFile::new(&path, 3);
        assert!(g.seal(3, SystemTime::UNIX_EPOCH));
        g.spoil();
        assert!(!g.is_spoiled());
        let got = g
            .clone()
            .body(|_| {})
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(&got[..], b"abc");
    }
}
