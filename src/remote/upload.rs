//! What one upload needs, in the three parts [`super::Remote::upload`] takes: where it goes
//! ([`UploadTarget`]), what it sends ([`UploadSource`]), and what it reports and remembers on the
//! way ([`UploadCtx`]: progress and the resume slot). One method with these three, rather than a
//! method per combination, so a backend cannot implement one layer and silently lose another's
//! progress or resume.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::{GrowingFile, ItemId, Precondition};
use crate::error::{RemoteError, RemoteResult};

/// Where an upload goes: child `name` of folder `parent`, created or replaced per `precondition`.
#[derive(Clone, Debug)]
pub struct UploadTarget<'a> {
    /// The folder the file goes in.
    pub parent: &'a ItemId,
    /// The file's name in it.
    pub name: &'a str,
    /// What the upload may assume about an item already at that name.
    pub precondition: Precondition,
}

impl<'a> UploadTarget<'a> {
    /// Child `name` of `parent`, written per `precondition`.
    pub fn new(parent: &'a ItemId, name: &'a str, precondition: Precondition) -> Self {
        UploadTarget {
            parent,
            name,
            precondition,
        }
    }
}

/// What an upload sends.
#[derive(Clone, Copy, Debug)]
pub enum UploadSource<'a> {
    /// The whole content of a finished local file, streamed from disk, to be kept with `mtime`
    /// where the server allows.
    File {
        /// The local file.
        path: &'a Path,
        /// The modification time to keep.
        mtime: SystemTime,
    },
    /// A file still being written (see [`GrowingFile`]): the request follows the writer and
    /// completes only once the file is sealed; a spoiled file fails it. The modification time is
    /// the one given at the seal. Only for remotes whose [`super::Capabilities`] say
    /// `streams_growing_uploads`; others answer `Unsupported`. Any error means the ordinary
    /// upload has to take over: this one never makes conflict copies of its own.
    Growing(&'a Arc<GrowingFile>),
}

impl<'a> UploadSource<'a> {
    /// The finished file at `path`, to be kept with `mtime`.
    pub fn file(path: &'a Path, mtime: SystemTime) -> Self {
        UploadSource::File { path, mtime }
    }

    /// The local file the bytes come from.
    pub fn path(&self) -> &'a Path {
        match self {
            UploadSource::File { path, .. } => path,
            UploadSource::Growing(file) => file.path(),
        }
    }
}

/// The length of local file `path` about to be uploaded; `RemoteError::LocalFile` when it cannot
/// be read.
pub async fn local_size(path: &Path) -> RemoteResult<u64> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| RemoteError::LocalFile(format!("{}: {e}", path.display())))?;
    Ok(meta.len())
}

/// What an upload reports and remembers on the way: the bytes sent so far, and the slot where a
/// remote that can resume keeps its token. Cheap to clone (both parts are shared counters);
/// [`UploadCtx::default`] is a context nobody looks at.
#[derive(Clone, Debug, Default)]
pub struct UploadCtx {
    /// Bytes handed to the connection so far.
    pub progress: TransferProgress,
    /// Where a remote may keep what lets an interrupted upload carry on.
    pub resume: ResumeSlot,
}

impl UploadCtx {
    /// A context reporting into `progress` and resuming from (and keeping up to date) `resume`.
    pub fn new(progress: TransferProgress, resume: ResumeSlot) -> Self {
        UploadCtx { progress, resume }
    }
}

/// How many bytes of an upload have gone out so far, shared between the uploader and whoever
/// reports progress (`cloudmount status`). Bytes handed to the connection count as sent; a retry
/// that starts over sets the count back.
#[derive(Clone, Debug, Default)]
pub struct TransferProgress(Arc<std::sync::atomic::AtomicU64>);

impl TransferProgress {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes sent so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Say that `n` bytes in all have gone out (an attempt starting over says 0; a resumed one,
    /// the offset it resumes from).
    pub fn set(&self, n: u64) {
        self.0.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Count `n` more bytes sent.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a remote may keep state that lets an interrupted upload carry on instead of starting over
/// (a Graph upload session URL), opaque to everyone else. The upload queue hands each attempt a
/// slot holding what the last attempt of the same record left, and writes every change durably
/// into the record's journal entry before [`ResumeSlot::set`] returns, so a restarted daemon gets it
/// back. The queue drops the token when the record gets new content. Remotes that cannot resume
/// (WebDAV) never look at it. Cheap to clone; clones share the value.
#[derive(Clone, Default)]
pub struct ResumeSlot(Arc<ResumeInner>);

#[derive(Default)]
struct ResumeInner {
    value: std::sync::Mutex<Option<serde_json::Value>>,
    persist: Option<Box<PersistFn>>,
}

/// Stores a resume token durably (`None`: remove it).
type PersistFn = dyn Fn(Option<&serde_json::Value>) + Send + Sync;

impl fmt::Debug for ResumeSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResumeSlot").field(&self.get()).finish()
    }
}

impl ResumeSlot {
    /// An empty slot kept in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot holding `value`, kept in memory only.
    pub fn with_value(value: Option<serde_json::Value>) -> Self {
        ResumeSlot(Arc::new(ResumeInner {
            value: std::sync::Mutex::new(value),
            persist: None,
        }))
    }

    /// A slot holding `value` whose every change is also handed to `persist` (which stores it
    /// durably before returning).
    pub fn persisted(
        value: Option<serde_json::Value>,
        persist: impl Fn(Option<&serde_json::Value>) + Send + Sync + 'static,
    ) -> Self {
        ResumeSlot(Arc::new(ResumeInner {
            value: std::sync::Mutex::new(value),
            persist: Some(Box::new(persist)),
        }))
    }

    /// The token, if any.
    pub fn get(&self) -> Option<serde_json::Value> {
        self.0.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the token (`None` clears it), persisting it when the slot is persisted.
    pub fn set(&self, value: Option<serde_json::Value>) {
        let mut guard = self.0.value.lock().unwrap_or_else(|p| p.into_inner());
        if *guard == value {
            return;
        }
        *guard = value;
        if let Some(persist) = &self.0.persist {
            persist(guard.as_ref());
        }
    }
}
