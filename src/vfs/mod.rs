//! The FUSE-free filesystem core: namespace (inode table), handles, block cache and prefetch over a
//! [`Remote`](crate::remote::Remote). It knows nothing of fuser; the adapter in
//! [`crate::fuse`] translates.
//!
//! # Two rules every lock in the core keeps
//!
//! **1. No lock is held across network or disk I/O.** Slow work reads what it needs under a lock,
//! lets go, does the I/O, then commits its result under the lock again, checking that what it
//! started from still holds (a generation, a key, a busy mark) and redoing the work or failing
//! with the right error when it does not. For a file's staged copy the check is its
//! [`local::FileState`] and [`local::Busy`] mark (see [`mod@write`]); for the upload journal, the
//! queue decides each change under its lock and the journal's own thread writes it after
//! ([`writeback::journal::JournalWriter`]), in the order decided. Waiting for another operation's
//! slow work is waiting for a signal (`DriveFs::file_changed`, the queue's waiters), never for a
//! lock. (Syncing a staged file or copying one happens on the caller's task, with no lock held.)
//!
//! **2. Locks are taken in one order**, each only after the ones before it in this chain, never
//! the other way round (a lock may be skipped):
//!
//! 1. `WriteBack::restored` (files a previous run left queued, not shown yet);
//! 2. `UploadQueue::state` (the upload queue; its event sink and record builders run under it and
//!    read or update the inode table);
//! 3. `InodeTable::inner` (nodes, listings and each file's [`local::LocalContent`]);
//! 4. leaves, which call nothing that locks while held: a [`crate::remote::GrowingFile`]'s
//!    progress, `HandleTable::map`, `FileHandle::pattern`, the block cache's and the disk
//!    cache's indexes, `DriveFs::quota` and `DriveFs::invalidate_tx`.
//!
//! All of them are `std::sync::Mutex`es held for a few map operations: none is held across an
//! `.await`.

pub mod attr;
pub mod cache;
pub mod changes;
pub mod dir;
pub mod disk_cache;
mod error;
pub mod fs;
pub mod handles;
pub mod links;
pub mod local;
mod meta;
pub mod namespace;
pub mod prefetch;
mod read;
pub mod write;
pub mod writeback;

pub use attr::{Attr, Ownership};
pub use error::{FsError, FsErrorKind, FsResult, RemoteFailure};
pub use fs::{DirItem, DriveFs, FsConfig, Looked, Opened, StatFs};
pub use namespace::{Applied, Invalidation};
