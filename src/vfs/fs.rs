//! [`DriveFs`]: the filesystem operations, FUSE-free and async. The fuser adapter calls these and
//! only translates arguments and replies; tests call them directly against an in-memory remote.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind, ItemId, Quota, Remote, Version};

use super::attr::{content_tag, Attr, Ownership};
use super::cache::{BlockCache, CacheStats};
use super::disk_cache::{DiskCache, DiskCacheError, DiskStats};
use super::error::FsResult;
use super::handles::{DirHandle, FileHandle, HandleTable};
use super::namespace::{InodeTable, DETACHED, ROOT_INO};

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
    pub(super) rt: tokio::runtime::Handle,
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

    pub(super) fn drop_replaced(&self, id: &ItemId, replaced: Option<Version>, current: &Entry) {
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
