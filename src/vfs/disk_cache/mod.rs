//! The on-disk block cache: blocks downloaded once are kept as local files, so later reads of them
//! (in this mount or the next one) never go to the server, while the memory cache stays small.
//!
//! # Layout
//! `DIR/lock` is held with `flock` by the one mount using `DIR` (two mounts sharing a directory
//! would evict each other's files under their feet). `DIR/blocks/<hash of item id>/<hash of
//! version>-<block index>.blk` holds one block each: a header naming the block (item id, version,
//! index, data length), a CRC-32C per 64 KiB segment of the data, then the data.
//!
//! # Never serving wrong bytes
//! A read checks the header against the key asked for and the file's length against the header,
//! reads only the segments covering the range asked and checks their checksums. Anything that does
//! not match (a torn write after a crash, a file another program changed, a hash collision between
//! two names, an I/O error) is a miss: the file is removed and the block is downloaded again. That
//! is why writes need no fsync and the cache needs no clean-shutdown marker. Blocks are written
//! under a temporary name and renamed, so a reader never sees half a file of this mount's own.
//!
//! # Space
//! The block files add up to at most the byte cap (least recently used go first), and no block is
//! stored when it would leave less than a share of the cache's filesystem free (by default
//! [`MIN_FREE_FRACTION`]). A write
//! that fails (full disk, I/O error) is logged and forgotten: the cache is only an optimisation.
//!
//! The index (which blocks exist, their recency) lives in memory and is rebuilt at open by reading
//! the headers of the files found; recency then comes from the files' times.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::Semaphore;

mod format;
#[cfg(test)]
mod tests;

use super::cache::BlockKey;
use crate::remote::{ItemId, Version};
pub use format::SEGMENT;
use format::*;

/// Share of the cache's filesystem kept free by default, as mountpoint-s3 does.
pub const MIN_FREE_FRACTION: f64 = 0.05;
/// Blocks handed to the writer and not yet on disk, at most: bounds the memory they hold. A
/// downloader waits for room (disk writes are much faster than downloads, so it rarely does).
const MAX_PENDING_WRITES: usize = 8;
/// Suffix of block files.
const BLOCK_EXT: &str = "blk";
/// Prefix of files being written.
const TMP_PREFIX: &str = ".tmp-";

/// Why the disk cache could not be opened, or a block file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    /// A file operation failed.
    #[error("disk cache {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process (another mount) holds the directory.
    #[error("disk cache {} is in use by another mount", .0.display())]
    Locked(PathBuf),
    /// A block file does not hold what its name and the index promise.
    #[error("block file {} is unusable: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What did not match.
        why: &'static str,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskCacheError + '_ {
    move |source| DiskCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Space on a filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Free for unprivileged users.
    pub available: u64,
    /// Size of the filesystem.
    pub total: u64,
}

/// Tells how much space the cache's filesystem has. A trait so tests can pin the answer.
pub trait SpaceProbe: Send + Sync {
    /// Space of the filesystem holding `dir`.
    fn space(&self, dir: &Path) -> io::Result<Space>;
}

/// The real probe: `statvfs(2)`.
pub struct Statvfs;

impl SpaceProbe for Statvfs {
    fn space(&self, dir: &Path) -> io::Result<Space> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        let frag = st.fragment_size() as u64;
        Ok(Space {
            available: (st.blocks_available() as u64).saturating_mul(frag),
            total: (st.blocks() as u64).saturating_mul(frag),
        })
    }
}

/// Counters for tests and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Block files known.
    pub blocks: usize,
    /// Their bytes on disk (headers included), plus writes under way.
    pub bytes: u64,
}

struct Index {
    /// Block files on disk and their size, least recently used first.
    files: LruCache<BlockKey, u64>,
    /// Bytes of `files` plus space reserved by writes under way.
    bytes: u64,
    /// Blocks handed to the writer and not on disk yet: readers are served from here.
    pending: HashMap<BlockKey, Bytes>,
}

/// The on-disk block store of one mount. Share it in an `Arc`.
pub struct DiskCache {
    blocks_dir: PathBuf,
    cap_bytes: u64,
    min_free_fraction: f64,
    space: Box<dyn SpaceProbe>,
    index: Mutex<Index>,
    writes: Arc<Semaphore>,
    tmp_seq: AtomicU64,
    /// Held for the life of the cache: the directory's `flock`.
    _lock: File,
}

impl DiskCache {
    /// Open (creating) the cache in `dir` with a byte cap, keeping `min_free_fraction` of its
    /// filesystem free; takes its lock and indexes the blocks already there.
    pub fn open(dir: &Path, cap_bytes: u64, min_free_fraction: f64) -> Result<DiskCache, DiskCacheError> {
        DiskCache::open_with(dir, cap_bytes, min_free_fraction, Box::new(Statvfs))
    }

    /// [`open`](Self::open) with the filesystem's space as `space` reports it.
    pub fn open_with(
        dir: &Path,
        cap_bytes: u64,
        min_free_fraction: f64,
        space: Box<dyn SpaceProbe>,
    ) -> Result<DiskCache, DiskCacheError> {
        let blocks_dir = dir.join("blocks");
        crate::private_fs::create_private_dir_all(&blocks_dir).map_err(io_err(&blocks_dir))?;
        let lock = take_lock(dir)?;
        let cache = DiskCache {
            blocks_dir,
            cap_bytes,
            min_free_fraction,
            space,
            index: Mutex::new(Index {
                files: LruCache::unbounded(),
                bytes: 0,
                pending: HashMap::new(),
            }),
            writes: Arc::new(Semaphore::new(MAX_PENDING_WRITES)),
            tmp_seq: AtomicU64::new(0),
            _lock: lock,
        };
        cache.rebuild_index()?;
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The byte cap.
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// Current counters.
    pub fn stats(&self) -> DiskStats {
        let index = self.lock();
        DiskStats {
            blocks: index.files.len(),
            bytes: index.bytes,
        }
    }

    /// Whether the block is on disk or being written (so a prefetch need not download it).
    pub fn contains(&self, key: &BlockKey) -> bool {
        let index = self.lock();
        index.files.contains(key) || index.pending.contains_key(key)
    }

    fn item_dir(&self, id: &ItemId) -> PathBuf {
        self.blocks_dir.join(format!("{:016x}", fnv1a(id.as_str().as_bytes())))
    }

    /// Where the block `key` lives.
    pub fn block_path(&self, key: &BlockKey) -> PathBuf {
        self.item_dir(&key.id).join(format!(
            "{:016x}-{}.{BLOCK_EXT}",
            fnv1a(key.version.as_str().as_bytes()),
            key.index
        ))
    }

    // -------------------------------------------------------------------------------------------
    // Reads
    // -------------------------------------------------------------------------------------------

    /// `len` bytes at `offset` of block `key`, whose full length is `block_len`, or `None` on a miss.
    /// Blocking (file I/O): call from a blocking context, or use [`read`](Self::read).
    pub fn read_blocking(&self, key: &BlockKey, block_len: u64, offset: u64, len: u64) -> Option<Bytes> {
        {
            let mut index = self.lock();
            if let Some(data) = index.pending.get(key) {
                return range_of(data, block_len, offset, len);
            }
            index.files.get(key)?;
        }
        let path = self.block_path(key);
        match read_range(&path, key, block_len, offset, len) {
            Ok(data) => Some(data),
            Err(e) => {
                match &e {
                    DiskCacheError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                        tracing::debug!(error = %e, "block file gone")
                    }
                    _ => tracing::warn!(error = %e, "dropping a cached block"),
                }
                self.forget(key, &path);
                None
            }
        }
    }

    /// [`read_blocking`](Self::read_blocking) on tokio's blocking pool.
    pub async fn read(self: &Arc<Self>, key: &BlockKey, block_len: u64, offset: u64, len: u64) -> Option<Bytes> {
        if !self.contains(key) {
            return None;
        }
        let (this, key) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || this.read_blocking(&key, block_len, offset, len))
            .await
            .unwrap_or(None)
    }

    /// Drop `key` from the index and remove its file (it was found unusable).
    fn forget(&self, key: &BlockKey, path: &Path) {
        {
            let mut index = self.lock();
            if let Some(size) = index.files.pop(key) {
                index.bytes = index.bytes.saturating_sub(size);
            }
        }
        remove_quietly(path);
    }

    // -------------------------------------------------------------------------------------------
    // Writes
    // -------------------------------------------------------------------------------------------

    /// Hand a freshly downloaded block to the writer. Returns once the writer took it (it waits only
    /// while [`MAX_PENDING_WRITES`] blocks are already queued); the write itself runs on tokio's
    /// blocking pool, off the read path. Readers are served from the queued copy meanwhile.
    pub async fn store(self: &Arc<Self>, key: BlockKey, data: Bytes) {
        if self.contains(&key) {
            return;
        }
        let Ok(permit) = self.writes.clone().acquire_owned().await else {
            return;
        };
        {
            let mut index = self.lock();
            if index.files.contains(&key) || index.pending.contains_key(&key) {
                return;
            }
            index.pending.insert(key.clone(), data.clone());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let stored = this.store_blocking(&key, &data);
            this.lock().pending.remove(&key);
            // Let go of the cache before the permit: once `flush` returns, no write holds it.
            drop(this);
            if let Err(e) = stored {
                tracing::warn!(error = %e, "could not keep a block on disk; carrying on without it");
            }
            drop(permit);
        });
    }

    /// Wait until every block handed to [`store`](Self::store) is written (or given up).
    pub async fn flush(&self) {
        if let Ok(all) = self.writes.acquire_many(MAX_PENDING_WRITES as u32).await {
            drop(all);
        }
    }

    /// Write block `key` to disk now, within the cap and the free-space floor. `Ok(false)` when it
    /// was not stored for lack of room.
    pub fn store_blocking(&self, key: &BlockKey, data: &[u8]) -> Result<bool, DiskCacheError> {
        let header = encode_header(key, data);
        let size = (header.len() + data.len()) as u64;
        if !self.reserve(key, size)? {
            return Ok(false);
        }
        let path = self.block_path(key);
        match self.write_file(&path, &header, data) {
            Ok(()) => {
                let mut index = self.lock();
                if let Some(old) = index.files.put(key.clone(), size) {
                    index.bytes = index.bytes.saturating_sub(old);
                }
                Ok(true)
            }
            Err(e) => {
                let mut index = self.lock();
                index.bytes = index.bytes.saturating_sub(size);
                Err(e)
            }
        }
    }

    /// Make room for `size` more bytes under the cap (evicting least recently used blocks, never
    /// `key` itself) and check the free-space floor. On `Ok(true)` the bytes are counted.
    fn reserve(&self, key: &BlockKey, size: u64) -> Result<bool, DiskCacheError> {
        if size > self.cap_bytes {
            return Ok(false);
        }
        let victims = {
            let mut index = self.lock();
            let mut victims = Vec::new();
            while index.bytes + size > self.cap_bytes {
                match index.files.pop_lru() {
                    Some((k, s)) => {
                        index.bytes = index.bytes.saturating_sub(s);
                        if &k != key {
                            victims.push(k);
                        }
                    }
                    None => break,
                }
            }
            victims
        };
        for k in &victims {
            remove_quietly(&self.block_path(k));
        }
        let space = self.space.space(&self.blocks_dir).map_err(io_err(&self.blocks_dir))?;
        let floor = (space.total as f64 * self.min_free_fraction) as u64;
        if space.available < floor.saturating_add(size) {
            tracing::debug!(
                available = space.available,
                floor,
                "disk cache: keeping the filesystem's free space, block not stored"
            );
            return Ok(false);
        }
        let mut index = self.lock();
        if index.bytes + size > self.cap_bytes {
            // Other writes took the room meanwhile.
            return Ok(false);
        }
        index.bytes += size;
        Ok(true)
    }

    fn write_file(&self, path: &Path, header: &[u8], data: &[u8]) -> Result<(), DiskCacheError> {
        let dir = path.parent().expect("block files live in an item folder");
        let name = path.file_name().expect("block file name").to_string_lossy();
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{name}-{seq}"));
        let result = (|| {
            let mut file = match crate::private_fs::create_private_file(&tmp) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // First block of the item, or its empty folder was just removed.
                    crate::private_fs::create_private_dir_all(dir).map_err(io_err(dir))?;
                    crate::private_fs::create_private_file(&tmp)
                }
                other => other,
            }
            .map_err(io_err(&tmp))?;
            file.write_all(header).map_err(io_err(&tmp))?;
            file.write_all(data).map_err(io_err(&tmp))?;
            fs::rename(&tmp, path).map_err(io_err(path))
        })();
        if result.is_err() {
            remove_quietly(&tmp);
        }
        result
    }

    // -------------------------------------------------------------------------------------------
    // Invalidation
    // -------------------------------------------------------------------------------------------

    /// Remove every block of `id` whose version is not `keep` (all of them for `None`: the item is
    /// gone). Their keys could never be asked for again; this frees the space early.
    pub fn purge_other_versions(&self, id: &ItemId, keep: Option<&Version>) {
        let stale: Vec<BlockKey> = {
            let mut index = self.lock();
            let stale: Vec<BlockKey> = index
                .files
                .iter()
                .filter(|(k, _)| &k.id == id && Some(&k.version) != keep)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &stale {
                if let Some(size) = index.files.pop(k) {
                    index.bytes = index.bytes.saturating_sub(size);
                }
            }
            stale
        };
        if stale.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = stale.iter().map(|k| self.block_path(k)).collect();
        let item_dir = self.item_dir(id);
        let remove = move || {
            for p in &paths {
                remove_quietly(p);
            }
            // Succeeds only when nothing else is left in it.
            let _ = fs::remove_dir(&item_dir);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }

    // -------------------------------------------------------------------------------------------
    // Start
    // -------------------------------------------------------------------------------------------

    /// Index the block files found, most recently used last; remove what is unusable, then evict
    /// down to the cap (it may have been lowered since).
    fn rebuild_index(&self) -> Result<(), DiskCacheError> {
        let mut found = Vec::new();
        for item in fs::read_dir(&self.blocks_dir).map_err(io_err(&self.blocks_dir))? {
            let item = item.map_err(io_err(&self.blocks_dir))?.path();
            if !item.is_dir() {
                remove_quietly(&item);
                continue;
            }
            let Ok(files) = fs::read_dir(&item) else { continue };
            for file in files.flatten() {
                let path = file.path();
                match self.index_file(&path) {
                    Ok(entry) => found.push(entry),
                    Err(e) => {
                        tracing::debug!(error = %e, "removing a leftover from the disk cache");
                        remove_quietly(&path);
                    }
                }
            }
            let _ = fs::remove_dir(&item);
        }
        found.sort_by_key(|(_, _, recency)| *recency);
        let victims = {
            let mut index = self.lock();
            for (key, size, _) in found {
                index.bytes += size;
                index.files.put(key, size);
            }
            let mut victims = Vec::new();
            while index.bytes > self.cap_bytes {
                let Some((k, s)) = index.files.pop_lru() else { break };
                index.bytes = index.bytes.saturating_sub(s);
                victims.push(k);
            }
            victims
        };
        for k in &victims {
            remove_quietly(&self.block_path(k));
        }
        let s = self.stats();
        tracing::info!(dir = %self.blocks_dir.display(), blocks = s.blocks, bytes = s.bytes, "disk cache opened");
        Ok(())
    }

    /// The key, size and recency of block file `path`, if its header is sound and it sits where its
    /// key says.
    fn index_file(&self, path: &Path) -> Result<(BlockKey, u64, i64), DiskCacheError> {
        let corrupt = |why| DiskCacheError::Corrupt {
            path: path.to_path_buf(),
            why,
        };
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        if name.starts_with(TMP_PREFIX) {
            return Err(corrupt("an unfinished write"));
        }
        let file = File::open(path).map_err(io_err(path))?;
        let meta = file.metadata().map_err(io_err(path))?;
        let header = read_header(&file, path)?;
        if meta.len() != header.len as u64 + header.data_len {
            return Err(corrupt("length differs from the header's"));
        }
        let key = BlockKey {
            id: ItemId::new(header.id),
            version: Version::from_etag(&header.version),
            index: header.index,
        };
        if self.block_path(&key) != path {
            return Err(corrupt("not where its key belongs"));
        }
        Ok((key, meta.len(), meta.mtime().max(meta.atime())))
    }
}

/// Take `dir/lock` exclusively, or fail with [`DiskCacheError::Locked`].
fn take_lock(dir: &Path) -> Result<File, DiskCacheError> {
    let path = dir.join("lock");
    let lock = crate::private_fs::open_private(
        crate::private_fs::private_options()
            .create(true)
            .truncate(false)
            .write(true),
        &path,
    )
    .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            DiskCacheError::Locked(dir.to_path_buf())
        } else {
            DiskCacheError::Io { path, source: e }
        });
    }
    Ok(lock)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove a disk cache file");
        }
    }
}

/// FNV-1a: a hash that stays the same across builds and toolchains, so file names do too.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= *b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn range_of(data: &Bytes, block_len: u64, offset: u64, len: u64) -> Option<Bytes> {
    let end = offset.checked_add(len)?;
    (data.len() as u64 == block_len && end <= block_len).then(|| data.slice(offset as usize..end as usize))
}
