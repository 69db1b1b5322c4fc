//! The write-back machinery: staged content on local disk, the durable journal of uploads still
//! owed to the server, and the queue that sends them. This module is the only code that touches
//! the journal (through [`journal::JournalWriter`], owned by the queue).
//!
//! - [`staging`]: where file content lives on local disk until the server has it.
//! - [`journal`]: the records of uploads owed, and the thread that writes them.
//! - [`queue`]: the upload queue (scheduling, generations, waiting).
//! - `attempt`: one whole-file upload attempt, with its checks for our own earlier versions.
//! - `follow`: uploads that follow a writer while the file grows.
//! - [`conflict`]: conflict copies (keeping both versions).

mod attempt;
pub mod conflict;
mod follow;
pub mod journal;
pub mod queue;
pub mod staging;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::remote::Remote;

use journal::Journal;
use queue::{EventSink, QueueConfig, UploadQueue};
use staging::StagingArea;

/// Where a mount keeps its write-back state.
#[derive(Clone, Debug)]
pub struct WriteBackPaths {
    /// The upload journal (must survive reboots: a state directory).
    pub journal: PathBuf,
    /// Staged file content (same filesystem as nothing else in particular; a cache directory).
    pub staging: PathBuf,
    /// Free space the staging disk must keep; writes past it get ENOSPC.
    pub min_free_bytes: u64,
}

/// The write-back machinery of one mount.
pub struct WriteBack {
    /// The upload queue.
    pub queue: Arc<UploadQueue>,
    /// Where staged files live.
    pub staging: StagingArea,
    /// Keys of uploads a previous run left in the journal that are not shown in the tree yet: they
    /// join their folder's entries the first time that folder is used (see
    /// `DriveFs::show_restored_uploads`).
    pub restored: Mutex<HashSet<String>>,
    /// How many keys `restored` holds, so the common case (none) costs no lock.
    pub restored_left: AtomicU64,
}

impl WriteBack {
    /// Open the journal and the staging area in `paths` and start the upload queue over them
    /// (resuming what a previous run left). Call within the tokio runtime.
    pub fn open(
        paths: &WriteBackPaths,
        remote: Arc<dyn Remote>,
        cfg: QueueConfig,
        events: Option<EventSink>,
    ) -> std::io::Result<WriteBack> {
        let journal = Journal::open(&paths.journal)?;
        let staging = StagingArea::open(&paths.staging, paths.min_free_bytes)?;
        let queue = UploadQueue::start(remote, journal, cfg, events)?;
        let mut restored = HashSet::new();
        queue.for_each_queued(|record, _| {
            restored.insert(record.key.clone());
        });
        let restored_left = AtomicU64::new(restored.len() as u64);
        Ok(WriteBack {
            queue,
            staging,
            restored: Mutex::new(restored),
            restored_left,
        })
    }
}

#[cfg(test)]
mod tests;
