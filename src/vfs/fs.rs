//! [`DriveFs`]: the filesystem operations, FUSE-free and async. The fuser adapter calls these and
//! only translates arguments and replies; tests call them directly against an in-memory remote.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind, ItemId, Quota, Remote, Version};

use super::attr::{content_tag, Attr, Ownership};
use super::cache::{BlockCache, BlockKey, CacheStats};
use super::disk_cache::{DiskCache, DiskCacheError, DiskStats};
use super::error::{FsError, FsResult};
use super::handles::{DirHandle, DirSlot, FileHandle, HandleTable};
use super::namespace::{InodeTable, DETACHED, ROOT_INO};
use super::prefetch::ReadPattern;

/// Settings of the filesystem core.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Owner and modes shown for every item.
    pub ownership: Ownership,
    /// How long attributes and folder listings are trusted without asking the server.
    pub attr_ttl: Duration,
    /// How long the kernel may remember that a name does not exist.
    pub negative_ttl: Duration,
    /// Size of one cached block, in bytes.
    pub block_size: u64,
    /// Memory cap of the block cache, in bytes.
    pub cache_bytes: u64,
    /// Where downloaded blocks are kept on disk (`None`: memory only). One mount per folder.
    pub disk_cache_dir: Option<PathBuf>,
    /// Cap of the disk cache, in bytes (0: no disk cache).
    pub disk_cache_bytes: u64,
    /// Share of the disk cache's filesystem it leaves free (0.05: no block is stored when that
    /// would leave less than 5% free).
    pub disk_cache_min_free: f64,
    /// How far ahead a sequential reader may prefetch, in bytes (also kept within a quarter of
    /// the cache, so prefetched blocks are not evicted before they are read).
    pub max_prefetch_bytes: u64,
    /// Whether the mount refuses every change (`--read-only`, or a remote without writes). A core
    /// whose writes were never enabled ([`DriveFs::enable_writes`]) refuses them too.
    pub read_only: bool,
    /// Whether modes, owners and times set here are kept (on the server where it can hold them,
    /// else in the local store given by [`DriveFs::enable_metadata`]); `false` is
    /// `--no-metadata`: the defaults of [`Ownership`], and changes accepted without effect.
    pub keep_metadata: bool,
}

impl FsConfig {
    /// How long attributes and listings are trusted, by default (`--ttl`).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
    /// Size of one cached block, by default (`--block-size`).
    pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
    /// Memory cap of the block cache, by default (`--cache-size`).
    pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;
    /// Cap of the disk cache, by default (`--disk-cache-size`; it is used once a folder is given).
    pub const DEFAULT_DISK_CACHE_BYTES: u64 = 1 << 30;
    /// Share of the disk cache's filesystem left free, by default (`--disk-cache-min-free`).
    pub const DEFAULT_DISK_CACHE_MIN_FREE: f64 = super::disk_cache::MIN_FREE_FRACTION;
    /// How far ahead sequential reads prefetch, by default (`--prefetch`).
    pub const DEFAULT_PREFETCH_BYTES: u64 = 32 << 20;
}

/// The core of a mount made with no options (what `cloudmount mount REMOTE DIR` runs, less the
/// disk cache's folder, which the command line picks per remote): the command line's defaults
/// are these constants.
impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            ownership: Ownership::current_user(),
            attr_ttl: Self::DEFAULT_TTL,
            negative_ttl: Self::DEFAULT_TTL,
            block_size: Self::DEFAULT_BLOCK_SIZE,
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
            disk_cache_dir: None,
            disk_cache_bytes: Self::DEFAULT_DISK_CACHE_BYTES,
            disk_cache_min_free: Self::DEFAULT_DISK_CACHE_MIN_FREE,
            max_prefetch_bytes: Self::DEFAULT_PREFETCH_BYTES,
            read_only: false,
            keep_metadata: true,
        }
    }
}

/// An answer to `lookup`: the attributes and how long the kernel may keep them.
#[derive(Clone, Copy, Debug)]
pub struct Looked {
    /// Attributes of the item found.
    pub attr: Attr,
    /// Validity of the entry and attributes.
    pub ttl: Duration,
}

/// An answer to `open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Handle number.
    pub fh: u64,
    /// Whether the kernel may keep the page cache it holds for this file: true only when the
    /// content version is the same as at the previous open.
    pub keep_cache: bool,
}

/// One entry handed to a `readdir` replier.
#[derive(Clone, Debug)]
pub struct DirItem<'a> {
    /// Inode number.
    pub ino: u64,
    /// Offset of the next entry.
    pub next_offset: u64,
    /// Name.
    pub name: &'a str,
    /// File or folder.
    pub kind: EntryKind,
    /// A file shown as a symbolic link (see [`crate::vfs::links`]).
    pub link: bool,
}

/// Space figures for `statfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes (unknown on remotes: a large number).
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

/// Space reported when the server does not say: 1 PiB, the same choice as rclone, so file
/// managers do not refuse copies for lack of space we know nothing about.
const UNKNOWN_SPACE: u64 = 1 << 50;
const STATFS_BSIZE: u64 = 4096;

/// The filesystem core over one remote.
pub struct DriveFs {
    pub(super) remote: Arc<dyn Remote>,
    pub(super) cfg: FsConfig,
    pub(super) inodes: InodeTable,
    pub(super) cache: Arc<BlockCache>,
    /// Blocks kept on local disk, under the memory cache (see [`super::disk_cache`]).
    pub(super) disk: Option<Arc<DiskCache>>,
    pub(super) files: HandleTable<FileHandle>,
    pub(super) dirs: HandleTable<DirHandle>,
    quota: Mutex<Option<(Instant, Option<Quota>)>>,
    /// Staging and upload queue, once writes are enabled.
    pub(super) writeback: std::sync::OnceLock<super::writeback::WriteBack>,
    /// Woken whenever slow work on a file's staged copy ends or its last write in flight does:
    /// who waits for a file (see [`super::local::Busy`]) looks at it again. A signal, not a lock.
    pub(super) file_changed: tokio::sync::Notify,
    /// Where remote changes tell the kernel what to forget (see [`super::changes`]).
    pub(super) invalidate_tx: Mutex<Option<tokio::sync::mpsc::UnboundedSender<super::namespace::Invalidation>>>,
    /// The runtime the core was built in, so reads answered outside it
    /// ([`DriveFs::try_read_now`]) can still start prefetches.
    rt: tokio::runtime::Handle,
    /// Modes, owners and times kept here and on the server (see [`super::meta`]).
    pub(super) meta: super::meta::MetaWiring,
}

impl DriveFs {
    /// Connect to the remote (its root must answer) and build the core.
    pub async fn new(remote: Arc<dyn Remote>, cfg: FsConfig) -> FsResult<Arc<Self>> {
        let root = remote.root().await?;
        if root.kind != EntryKind::Directory {
            return Err(fs_err!(NotADirectory, "the remote's root is not a folder"));
        }
        let inodes = InodeTable::new(root, Instant::now() + cfg.attr_ttl)
            .with_case_insensitive_names(remote.capabilities().case_insensitive_names);
        let cache = Arc::new(BlockCache::new(cfg.block_size, cfg.cache_bytes));
        let disk = open_disk_cache(&cfg).await;
        Ok(Arc::new(DriveFs {
            remote,
            cfg,
            inodes,
            cache,
            disk,
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            quota: Mutex::new(None),
            writeback: std::sync::OnceLock::new(),
            file_changed: tokio::sync::Notify::new(),
            invalidate_tx: Mutex::new(None),
            rt: tokio::runtime::Handle::current(),
            meta: super::meta::MetaWiring::default(),
        }))
    }

    /// The settings in force.
    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    /// Block cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Disk cache counters (`None` when the mount has no disk cache).
    pub fn disk_cache_stats(&self) -> Option<DiskStats> {
        self.disk.as_ref().map(|d| d.stats())
    }

    /// Wait until the blocks handed to the disk cache are written (tests, and before exit).
    pub async fn flush_disk_cache(&self) {
        if let Some(disk) = &self.disk {
            disk.flush().await;
        }
    }

    /// Drop the cached blocks (memory and disk) of `id` other than version `keep` (all for `None`).
    pub(super) fn purge_blocks(&self, id: &ItemId, keep: Option<&Version>) {
        self.cache.purge_other_versions(id, keep);
        if let Some(disk) = &self.disk {
            disk.purge_other_versions(id, keep);
        }
    }

    /// Number of inodes held.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Work the inode table has done so far (see its `work`): for tests that check an operation
    /// costs the same however large the tree, and for status reports.
    pub fn namespace_work(&self) -> u64 {
        self.inodes.work()
    }

    pub(super) fn valid_until(&self) -> Instant {
        Instant::now() + self.cfg.attr_ttl
    }

    fn drop_replaced(&self, id: &ItemId, replaced: Option<Version>, current: &Entry) {
        if replaced.is_some() {
            tracing::debug!(item = %id, "content changed on the server; dropping cached blocks");
            self.purge_blocks(id, Some(&content_tag(current)));
        }
    }

    pub(super) fn dir_node(&self, ino: u64) -> FsResult<super::namespace::Node> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if node.entry.kind != EntryKind::Directory {
            return Err(fs_err!(NotADirectory, "inode {ino} is not a folder"));
        }
        self.show_restored_uploads(&node);
        Ok(node)
    }

    /// Find the item called `name` on the drive in folder `parent` (a link by its `.rclonelink`
    /// name: the names the mount shows are mapped in [`crate::vfs::links`]); on success the kernel
    /// holds one more reference to it.
    pub(in crate::vfs) async fn lookup_item(&self, parent: u64, name: &str) -> FsResult<Looked> {
        let dir = self.dir_node(parent)?;
        let now = Instant::now();
        let epoch = self.inodes.local_epoch();
        let entry = match self.inodes.listed_child(parent, name, now) {
            Some(Some(entry)) => entry,
            Some(None) => return Err(fs_err!(NotFound, "{name:?} is not in the listing")),
            None => match self.remote.lookup(&dir.entry.id, name).await {
                Ok(entry) => entry,
                Err(RemoteError::NotFound) => match self.inodes.known_child(parent, name) {
                    // Our own upload of that name landed while the server was asked.
                    Some(entry) if self.inodes.local_epoch() != epoch => entry,
                    _ => return Err(fs_err!(NotFound, "{name:?} not found")),
                },
                Err(e @ RemoteError::Unauthorized(_)) => match self.inodes.known_child(parent, name) {
                    // Sign-in needed: what we saw before stays usable (cached data stays readable).
                    Some(entry) => {
                        tracing::debug!(name, error = %e, "cannot ask the server; using what we saw before");
                        entry
                    }
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            },
        };
        let up = self.inodes.upsert(parent, entry.clone(), self.valid_until(), 1);
        self.drop_replaced(&entry.id, up.replaced_tag, &entry);
        // What the mount knows now: a file seen while only local may have its server id since.
        let entry = self.inodes.get(up.ino).map(|n| n.entry).unwrap_or(entry);
        let entry = self.inodes.as_shown(up.ino, entry);
        Ok(Looked {
            attr: self.shown_attr(up.ino, &entry),
            ttl: self.cfg.attr_ttl,
        })
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Current attributes of `ino`, asking the server when ours are older than the TTL.
    ///
    /// A file open here whose item left its place on the server (deleted, or moved by another
    /// client, which on WebDAV changes its id) keeps its last attributes for its descriptors, as
    /// an open file does on a local disk: the kernel asks for them at end of file, and a reader
    /// that got every byte must not fail there.
    pub async fn getattr(&self, ino: u64) -> FsResult<(Attr, Duration)> {
        match self.fresh_entry(ino).await {
            Ok(entry) => Ok((self.attr_for(ino, &entry), self.cfg.attr_ttl)),
            Err(e) if e.is_not_found() && self.files.any(|h| h.ino == ino) => {
                let node = self.inodes.get(ino).ok_or(e)?;
                tracing::debug!(item = %node.entry.id, "gone from the server while open; keeping its attributes");
                Ok((self.attr_for(ino, &node.entry), self.cfg.attr_ttl))
            }
            Err(e) => Err(e),
        }
    }

    /// The attributes of `ino` showing `entry`; a file unlinked while open has no links left.
    pub(super) fn attr_for(&self, ino: u64, entry: &Entry) -> Attr {
        let mut attr = self.shown_attr(ino, entry);
        if self.inodes.get(ino).is_some_and(|n| n.parent == DETACHED) {
            attr.nlink = 0;
        }
        attr
    }

    pub(super) async fn fresh_entry(&self, ino: u64) -> FsResult<Entry> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if node.local.is_some() || Instant::now() < node.attr_valid_until {
            return Ok(node.entry);
        }
        self.stat_node(ino, node).await
    }

    /// What the server holds for `ino` now, whatever the TTL says (an open found the version it
    /// knew replaced); the node takes it. A file with local content shows that.
    pub(super) async fn server_entry(&self, ino: u64) -> FsResult<Entry> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if node.local.is_some() {
            return Ok(node.entry);
        }
        self.stat_node(ino, node).await
    }

    async fn stat_node(&self, ino: u64, node: super::namespace::Node) -> FsResult<Entry> {
        let entry = match self.remote.stat(&node.entry.id).await {
            Ok(e) => e,
            Err(RemoteError::NotFound) => return Err(fs_err!(NotFound, "{} is gone from the server", node.entry.id)),
            Err(e @ RemoteError::Unauthorized(_)) => {
                // Sign-in needed: keep serving what we know; the server is asked again next time.
                tracing::debug!(item = %node.entry.id, error = %e, "cannot ask the server; using what we saw before");
                return Ok(node.entry);
            }
            Err(e) => return Err(e.into()),
        };
        if entry.kind != node.entry.kind {
            return Err(fs_err!(
                VersionChanged,
                "{} changed between file and folder",
                node.entry.id
            ));
        }
        if let Some(up) = self.inodes.refresh(ino, entry.clone(), self.valid_until()) {
            self.drop_replaced(&entry.id, up.replaced_tag, &entry);
        }
        Ok(self.inodes.as_shown(ino, entry))
    }

    /// Refuse any change while the mount is read-only (or writes were never enabled).
    pub fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only || self.writeback.get().is_none() {
            Err(fs_err!(ReadOnly, "the mount is read-only"))
        } else {
            Ok(())
        }
    }

    /// Open file `ino` with open(2) `flags`. The content version is checked against the server
    /// when the attributes are older than the TTL; a new version never shares cached blocks with the
    /// old one.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
            return self.open_for_write(ino, flags).await;
        }
        let follows_local = self.inodes.get(ino).is_some_and(|n| n.local.is_some());
        let entry = self.fresh_entry(ino).await?;
        if entry.kind == EntryKind::Directory {
            return Err(fs_err!(IsADirectory, "inode {ino} is a folder"));
        }
        let tag = content_tag(&entry);
        // The kernel's page cache may hold this version (it is kept only when it is the one
        // recorded at the previous open; otherwise the kernel drops it now).
        let keep_cache = self.inodes.note_cached_tag(ino, &tag);
        let bs = self.cache.block_size();
        let window = (self.cfg.max_prefetch_bytes.min(self.cfg.cache_bytes / 4) / bs).max(1);
        let fh = self.files.insert(FileHandle {
            ino,
            id: entry.id.clone(),
            tag,
            remote_version: entry.version.clone(),
            size: entry.size,
            pattern: Mutex::new(ReadPattern::new(window)),
            writable: false,
            follows_local,
            // With the page cache kept, the kernel may answer reads of this version without
            // asking us: the handle is bound to it from the start, and a later read that finds
            // the server's copy changed fails with ESTALE instead of moving to the new version.
            // (A handle that follows local content is moved to our own upload's version by
            // `repin`, which holds the same bytes.)
            served: std::sync::atomic::AtomicBool::new(keep_cache),
        });
        Ok(Opened { fh, keep_cache })
    }

    /// The size of the file open as `fh` as the core holds it (its local content while there is
    /// some): where an `O_APPEND` write goes.
    pub fn end_of_file(&self, fh: u64) -> Option<u64> {
        let h = self.files.get(fh)?;
        let node = self.inodes.get(h.ino)?;
        Some(node.local.map(|l| l.size).unwrap_or(node.entry.size))
    }

    /// Read up to `size` bytes at `offset` through handle `fh`. Fewer bytes only at end of file.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let h = self
            .files
            .get(fh)
            .ok_or_else(|| fs_err!(BadHandle, "unknown file handle {fh}"))?;
        let node = self.inodes.get(h.ino);
        if let Some(local) = node.as_ref().and_then(|n| n.local.clone()) {
            // Content being written or waiting for upload is what every reader sees.
            return super::write::read_local(&local, offset, size);
        }
        let h = match node {
            // Opened while the file had local content: its upload has landed since (else it would
            // still have it), so read the version that upload made, which holds those bytes.
            Some(node) if h.follows_local => self.repin(fh, &h, &node.entry),
            _ => h,
        };
        match self.read_remote(&h, offset, size).await {
            // Nothing was served through this handle yet, so moving it to the server's current
            // version still gives the reader one consistent version. (Servers may report another
            // ETag right after a write than the one a read then sees.)
            Err(e) if e.is_version_changed() && !h.served.load(Ordering::Relaxed) => {
                let entry = self.remote.stat(&h.id).await?;
                if let Some(up) = self.inodes.refresh(h.ino, entry.clone(), self.valid_until()) {
                    self.drop_replaced(&entry.id, up.replaced_tag, &entry);
                }
                let repinned = self.repin(fh, &h, &entry);
                let data = self.read_remote(&repinned, offset, size).await?;
                repinned.served.store(true, Ordering::Relaxed);
                Ok(data)
            }
            Ok(data) => {
                h.served.store(true, Ordering::Relaxed);
                Ok(data)
            }
            Err(e) => Err(e),
        }
    }

    /// Point handle `fh` (now `h`) at `entry`'s content from here on, keeping its read pattern.
    fn repin(&self, fh: u64, h: &FileHandle, entry: &Entry) -> Arc<FileHandle> {
        let pattern = h.pattern.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let repinned = Arc::new(FileHandle {
            ino: h.ino,
            id: entry.id.clone(),
            tag: content_tag(entry),
            remote_version: entry.version.clone(),
            size: entry.size,
            pattern: Mutex::new(pattern),
            writable: h.writable,
            follows_local: false,
            served: Default::default(),
        });
        self.files.replace(fh, repinned.clone());
        repinned
    }

    /// [`DriveFs::read`] without waiting, for the FUSE thread: when every byte asked for is local
    /// (content being written, blocks in memory or in the disk cache), answer where the request
    /// arrived. A read from the disk cache is a `pread` of the page cache, and two thread hops
    /// (to a tokio worker, to the blocking pool) cost more than it: random 4 KiB reads of a
    /// cached file ran at a fifth of the speed through them. `None` when something has to be
    /// downloaded (or the handle is unknown): then call [`DriveFs::read`].
    pub fn try_read_now(&self, fh: u64, offset: u64, size: u32) -> Option<FsResult<Bytes>> {
        let h = self.files.get(fh)?;
        if let Some(local) = self.inodes.get(h.ino).and_then(|n| n.local) {
            return Some(super::write::read_local(&local, offset, size));
        }
        if h.follows_local {
            return None;
        }
        if offset >= h.size || size == 0 {
            return Some(Ok(Bytes::new()));
        }
        let end = offset.saturating_add(size as u64).min(h.size);
        let bs = self.cache.block_size();
        let (first, last) = (offset / bs, (end - 1) / bs);
        let mut parts = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            let block_start = index * bs;
            let from = offset.saturating_sub(block_start);
            let to = (end - block_start).min(bs);
            let key = self.block_key(&h, index);
            let part = match self.cache.get(&key) {
                Some(block) => slice_of(&block, from, to),
                None => {
                    let disk = self.disk.as_ref()?;
                    if !disk.contains(&key) {
                        return None;
                    }
                    disk.read_blocking(&key, block_len(&h, index, bs), from, to - from)?
                }
            };
            parts.push(part);
        }
        self.start_prefetch(&h, offset, end);
        h.served.store(true, Ordering::Relaxed);
        Some(Ok(concat(parts)))
    }

    /// Note a read of `[offset, end)` in `h`'s read pattern and start downloading the blocks it
    /// says a sequential reader will want next.
    fn start_prefetch(&self, h: &Arc<FileHandle>, offset: u64, end: u64) {
        let bs = self.cache.block_size();
        let block_count = h.size.div_ceil(bs);
        let ahead = h
            .pattern
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_read(offset, end - offset, bs, block_count);
        for index in ahead {
            let key = self.block_key(h, index);
            let on_disk = self.disk.as_ref().is_some_and(|d| d.contains(&key));
            if !on_disk && !self.cache.contains_or_pending(&key) {
                let (cache, disk, remote, h) = (self.cache.clone(), self.disk.clone(), self.remote.clone(), h.clone());
                self.rt.spawn(async move {
                    if let Err(e) = fetch_block(&cache, disk.as_ref(), remote.as_ref(), &h, index).await {
                        tracing::debug!(item = %h.id, block = index, error = %e, "prefetch failed");
                    }
                });
            }
        }
    }

    async fn read_remote(&self, h: &Arc<FileHandle>, offset: u64, size: u32) -> FsResult<Bytes> {
        if offset >= h.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(size as u64).min(h.size);
        let bs = self.cache.block_size();
        let (first, last) = (offset / bs, (end - 1) / bs);
        self.start_prefetch(h, offset, end);

        let parts = try_join_all((first..=last).map(|index| {
            let block_start = index * bs;
            let from = offset.saturating_sub(block_start);
            let to = (end - block_start).min(bs);
            self.block_range(h, index, from, to)
        }))
        .await?;
        Ok(concat(parts))
    }

    /// Bytes `[from, to)` of block `index` of `h`'s file: from memory, else from the disk cache
    /// (only the range: a random read must not pull whole blocks into memory), else downloaded
    /// into memory and handed to the disk cache.
    async fn block_range(&self, h: &FileHandle, index: u64, from: u64, to: u64) -> FsResult<Bytes> {
        let key = self.block_key(h, index);
        if let Some(block) = self.cache.get(&key) {
            return Ok(slice_of(&block, from, to));
        }
        if let Some(disk) = &self.disk {
            let block_len = block_len(h, index, self.cache.block_size());
            if let Some(data) = disk.read(&key, block_len, from, to - from).await {
                return Ok(data);
            }
        }
        let block = fetch_block(&self.cache, self.disk.as_ref(), self.remote.as_ref(), h, index).await?;
        Ok(slice_of(&block, from, to))
    }

    fn block_key(&self, h: &FileHandle, index: u64) -> BlockKey {
        BlockKey {
            id: h.id.clone(),
            version: h.tag.clone(),
            index,
        }
    }

    /// Close file handle `fh`; a handle that wrote hands its changes to the upload queue first.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.files.remove(fh) else { return Ok(()) };
        let result = if h.writable {
            self.release_writer(&h).await
        } else {
            Ok(())
        };
        self.drop_if_unlinked(h.ino);
        result
    }

    /// Open folder `ino`: take a snapshot of its entries, listing it on the server when our
    /// listing is older than the TTL.
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.dir_node(ino)?;
        let now = Instant::now();
        let children = match self.inodes.fresh_listing(ino, now) {
            Some(children) => children,
            None => {
                // The answer may predate changes of ours that land while it is on its way (an
                // upload, a create, a rename, a delete): the inode table keeps what we know of
                // those names over what the listing says.
                let asked_at = self.inodes.local_epoch();
                let listed = match self.remote.list(&node.entry.id).await {
                    Ok(listed) => listed,
                    // Sign-in needed: a folder listed before stays listable.
                    Err(e @ RemoteError::Unauthorized(_)) => match self.inodes.last_listing(ino) {
                        Some(children) => {
                            tracing::debug!(item = %node.entry.id, error = %e, "cannot ask the server; using the last listing");
                            return Ok(self.dir_snapshot(ino, node.parent, children));
                        }
                        None => return Err(e.into()),
                    },
                    Err(e) => return Err(e.into()),
                };
                let (children, replaced) = self
                    .inodes
                    .set_listing_asked_at(ino, listed, self.valid_until(), asked_at);
                for (id, _) in replaced {
                    if let Some((_, e)) = children.iter().find(|(_, e)| e.id == id) {
                        self.purge_blocks(&id, Some(&content_tag(e)));
                    }
                }
                children
            }
        };
        Ok(self.dir_snapshot(ino, node.parent, children))
    }

    fn dir_snapshot(&self, ino: u64, parent: u64, mut children: Vec<(u64, Entry)>) -> u64 {
        children.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut slots = Vec::with_capacity(children.len() + 2);
        slots.push(DirSlot {
            ino,
            name: ".".into(),
            entry: None,
            is_dir: true,
            link: false,
        });
        slots.push(DirSlot {
            ino: parent,
            name: "..".into(),
            entry: None,
            is_dir: true,
            link: false,
        });
        slots.extend(
            super::links::shown_children(children)
                .into_iter()
                .map(|(ino, e, shown, link)| DirSlot {
                    ino,
                    name: shown,
                    is_dir: e.kind == EntryKind::Directory,
                    link,
                    entry: Some(e),
                }),
        );
        self.dirs.insert(DirHandle { ino, slots })
    }

    fn dir_handle(&self, fh: u64) -> FsResult<Arc<DirHandle>> {
        self.dirs
            .get(fh)
            .ok_or_else(|| fs_err!(BadHandle, "unknown folder handle {fh}"))
    }

    /// Hand the entries of folder handle `fh` from `offset` on to `add`, which returns `true`
    /// when its buffer is full (that entry was not taken).
    pub fn readdir(&self, fh: u64, offset: u64, mut add: impl FnMut(DirItem<'_>) -> bool) -> FsResult<()> {
        let h = self.dir_handle(fh)?;
        for (i, slot) in h.slots.iter().enumerate().skip(offset as usize) {
            let kind = if slot.is_dir {
                EntryKind::Directory
            } else {
                EntryKind::File
            };
            if add(DirItem {
                ino: slot.ino,
                next_offset: i as u64 + 1,
                name: &slot.name,
                kind,
                link: slot.link,
            }) {
                break;
            }
        }
        Ok(())
    }

    /// Like [`readdir`](Self::readdir), with attributes. Every entry but `.` and `..` that `add`
    /// accepts gives the kernel one reference to its inode, as FUSE's readdirplus requires.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirItem<'_>, &Attr, Duration) -> bool,
    ) -> FsResult<()> {
        let h = self.dir_handle(fh)?;
        let ttl = self.cfg.attr_ttl;
        for (i, slot) in h.slots.iter().enumerate().skip(offset as usize) {
            let next_offset = i as u64 + 1;
            match &slot.entry {
                None => {
                    let attr = match self.inodes.get(slot.ino) {
                        Some(node) => self.shown_attr(slot.ino, &node.entry),
                        None => continue,
                    };
                    let item = DirItem {
                        ino: slot.ino,
                        next_offset,
                        name: &slot.name,
                        kind: EntryKind::Directory,
                        link: false,
                    };
                    if add(item, &attr, ttl) {
                        break;
                    }
                }
                Some(entry) => {
                    let (ino, entry) = self.inodes.add_lookup(h.ino, slot.ino, entry, self.valid_until());
                    let attr = self.shown_attr(ino, &self.inodes.as_shown(ino, entry.clone()));
                    if add(
                        DirItem {
                            ino,
                            next_offset,
                            name: &slot.name,
                            kind: entry.kind,
                            link: slot.link,
                        },
                        &attr,
                        ttl,
                    ) {
                        self.inodes.forget(ino, 1);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close folder handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }

    /// Space on the remote, asked at most once per TTL.
    pub async fn statfs(&self) -> FsResult<StatFs> {
        let cached = *self.quota.lock().unwrap_or_else(|e| e.into_inner());
        let quota = match cached {
            Some((at, q)) if at.elapsed() < self.cfg.attr_ttl => q,
            _ => {
                let q = self.remote.quota().await?;
                *self.quota.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), q));
                q
            }
        };
        let (total, free) = match quota {
            Some(Quota {
                used,
                available: Some(avail),
            }) => (used.unwrap_or(0).saturating_add(avail), avail),
            _ => (UNKNOWN_SPACE, UNKNOWN_SPACE),
        };
        Ok(StatFs {
            blocks: total / STATFS_BSIZE,
            bfree: free / STATFS_BSIZE,
            bavail: free / STATFS_BSIZE,
            files: u32::MAX as u64,
            ffree: u32::MAX as u64,
            bsize: STATFS_BSIZE as u32,
            namelen: 255,
        })
    }

    /// The root inode number.
    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }
}

/// Length of block `index` of `h`'s file: the block size, less at the end of the file.
fn block_len(h: &FileHandle, index: u64, block_size: u64) -> u64 {
    block_size.min(h.size.saturating_sub(index * block_size))
}

/// The parts of a read as one buffer (no copy for a single part).
fn concat(parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in &parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

/// `block[from..to]`, clipped to the block.
fn slice_of(block: &Bytes, from: u64, to: u64) -> Bytes {
    let to = (to as usize).min(block.len());
    block.slice((from as usize).min(to)..to)
}

/// Open the disk cache the settings ask for. Failing that (another mount holds the folder, it
/// cannot be created) the mount goes on with the memory cache alone.
async fn open_disk_cache(cfg: &FsConfig) -> Option<Arc<DiskCache>> {
    let dir = cfg.disk_cache_dir.clone().filter(|_| cfg.disk_cache_bytes > 0)?;
    let (cap, min_free) = (cfg.disk_cache_bytes, cfg.disk_cache_min_free);
    let opened = tokio::task::spawn_blocking(move || DiskCache::open(&dir, cap, min_free)).await;
    match opened {
        Ok(Ok(disk)) => Some(Arc::new(disk)),
        Ok(Err(e @ DiskCacheError::Locked(_))) => {
            tracing::warn!(error = %e, "running without a disk cache: its folder is not shared between mounts");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "running without a disk cache");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "opening the disk cache failed; running without it");
            None
        }
    }
}

/// One block of `h`'s file, from the memory cache or the server; a downloaded block is also handed
/// to the disk cache. A short answer that is not the end of the file means the server holds
/// something other than the version we opened.
async fn fetch_block(
    cache: &BlockCache,
    disk: Option<&Arc<DiskCache>>,
    remote: &dyn Remote,
    h: &FileHandle,
    index: u64,
) -> FsResult<Bytes> {
    let bs = cache.block_size();
    let key = BlockKey {
        id: h.id.clone(),
        version: h.tag.clone(),
        index,
    };
    let disk_key = key.clone();
    cache
        .get_or_fetch(key, || async move {
            let offset = index * bs;
            let len = block_len(h, index, bs);
            let data = remote
                .read(&h.id, h.remote_version.as_ref(), offset, len)
                .await
                .map_err(|e| match e {
                    RemoteError::VersionChanged => {
                        fs_err!(VersionChanged, "{} changed on the server while open; reopen it", h.id)
                    }
                    e => FsError::from(e),
                })?;
            if (data.len() as u64) < len {
                return Err(fs_err!(
                    VersionChanged,
                    "{} is shorter on the server than when opened; reopen it",
                    h.id
                ));
            }
            if let Some(disk) = disk {
                disk.store(disk_key, data.clone()).await;
            }
            Ok(data)
        })
        .await
}

/// A name to look for among existing items. Remote names are UTF-8, so one that is not cannot
/// exist (ENOENT); one longer than 255 bytes is ENAMETOOLONG here, before the server answers
/// something vaguer (Apache says 403 when its disk refuses the name).
pub(crate) fn existing_name(name: &OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or_else(|| fs_err!(NotFound, "name is not UTF-8"))?;
    if name.len() > 255 {
        return Err(fs_err!(NameTooLong, "name longer than 255 bytes"));
    }
    Ok(name)
}
