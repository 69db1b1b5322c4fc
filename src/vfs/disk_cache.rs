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
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::Semaphore;

use super::cache::BlockKey;
use crate::remote::{ItemId, Version};

/// What a block file starts with.
const MAGIC: &[u8; 8] = b"CMDISKBK";
/// Format of the header; files of another format are removed on sight.
const FORMAT: u32 = 1;
/// Checksum granularity: a random 4 KiB read checks (and reads) 64 KiB, not the whole block.
pub const SEGMENT: u64 = 64 * 1024;
/// Bytes of the header before the variable part (id, version, checksums).
const FIXED_HEADER: usize = 44;
/// First read of a header: big enough for any usual id and version, so a read takes two preads.
const HEADER_PROBE: usize = 4096;
/// A header longer than this is corrupt (ids and versions are short).
const MAX_HEADER: usize = 1 << 20;
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

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskCacheError + '_ {
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

// -----------------------------------------------------------------------------------------------
// File format
// -----------------------------------------------------------------------------------------------

/// A decoded header.
struct Header {
    /// Header bytes (data starts here).
    len: usize,
    index: u64,
    data_len: u64,
    id: String,
    version: String,
    /// CRC-32C of each [`SEGMENT`] of the data.
    crcs: Vec<u32>,
}

fn segment_count(data_len: u64) -> u64 {
    data_len.div_ceil(SEGMENT)
}

/// magic, format, header length, block index, data length, id length, version length, segment
/// count, id, version, segment CRCs, and a CRC of all that.
fn encode_header(key: &BlockKey, data: &[u8]) -> Vec<u8> {
    let (id, version) = (key.id.as_str().as_bytes(), key.version.as_str().as_bytes());
    let segments: Vec<u32> = data.chunks(SEGMENT as usize).map(crc32c::crc32c).collect();
    let len = FIXED_HEADER + id.len() + version.len() + 4 * segments.len() + 4;
    let mut h = Vec::with_capacity(len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.extend_from_slice(&key.index.to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&(id.len() as u32).to_le_bytes());
    h.extend_from_slice(&(version.len() as u32).to_le_bytes());
    h.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    h.extend_from_slice(id);
    h.extend_from_slice(version);
    for c in &segments {
        h.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(h.len(), len);
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Read exactly `buf.len()` bytes at `offset`; a short file is an error.
fn pread_exact(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<(), DiskCacheError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DiskCacheError::Corrupt {
            path: path.to_path_buf(),
            why: "shorter than its header says",
        },
        _ => DiskCacheError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

fn read_header(file: &File, path: &Path) -> Result<Header, DiskCacheError> {
    let corrupt = |why| DiskCacheError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let mut buf = vec![0u8; HEADER_PROBE];
    let got = file.read_at(&mut buf, 0).map_err(io_err(path))?;
    if got < FIXED_HEADER {
        return Err(corrupt("shorter than a header"));
    }
    if &buf[..8] != MAGIC || u32_at(&buf, 8) != FORMAT {
        return Err(corrupt("not a block file of this format"));
    }
    let len = u32_at(&buf, 12) as usize;
    let (index, data_len) = (u64_at(&buf, 16), u64_at(&buf, 24));
    let (id_len, ver_len, segs) = (
        u32_at(&buf, 32) as usize,
        u32_at(&buf, 36) as usize,
        u32_at(&buf, 40) as u64,
    );
    if len > MAX_HEADER
        || segs != segment_count(data_len)
        || len as u64 != FIXED_HEADER as u64 + id_len as u64 + ver_len as u64 + 4 * segs + 4
    {
        return Err(corrupt("inconsistent header"));
    }
    if len > got {
        buf.resize(len, 0);
        pread_exact(file, &mut buf[got..], got as u64, path)?;
    }
    buf.truncate(len);
    if crc32c::crc32c(&buf[..len - 4]) != u32_at(&buf, len - 4) {
        return Err(corrupt("header checksum mismatch"));
    }
    let mut at = FIXED_HEADER;
    let id = String::from_utf8(buf[at..at + id_len].to_vec()).map_err(|_| corrupt("id is not UTF-8"))?;
    at += id_len;
    let version = String::from_utf8(buf[at..at + ver_len].to_vec()).map_err(|_| corrupt("version is not UTF-8"))?;
    at += ver_len;
    let crcs = (0..segs as usize).map(|i| u32_at(&buf, at + 4 * i)).collect();
    Ok(Header {
        len,
        index,
        data_len,
        id,
        version,
        crcs,
    })
}

/// `len` bytes at `offset` of the block stored at `path`, checked against `key`, `block_len` and
/// the checksums of the segments read.
fn read_range(path: &Path, key: &BlockKey, block_len: u64, offset: u64, len: u64) -> Result<Bytes, DiskCacheError> {
    let corrupt = |why| DiskCacheError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let header = read_header(&file, path)?;
    if header.id != key.id.as_str() || header.version != key.version.as_str() || header.index != key.index {
        return Err(corrupt("holds another block"));
    }
    if header.data_len != block_len {
        return Err(corrupt("length differs from the block's"));
    }
    let file_len = file.metadata().map_err(io_err(path))?.len();
    if file_len != header.len as u64 + header.data_len {
        return Err(corrupt("length differs from the header's"));
    }
    let end = offset.checked_add(len).filter(|e| *e <= block_len && len > 0);
    let Some(end) = end else {
        return Err(corrupt("range outside the block"));
    };
    let (first, last) = (offset / SEGMENT, (end - 1) / SEGMENT);
    let from = first * SEGMENT;
    let to = ((last + 1) * SEGMENT).min(header.data_len);
    let mut buf = vec![0u8; (to - from) as usize];
    pread_exact(&file, &mut buf, header.len as u64 + from, path)?;
    for (i, seg) in buf.chunks(SEGMENT as usize).enumerate() {
        if crc32c::crc32c(seg) != header.crcs[first as usize + i] {
            return Err(corrupt("data checksum mismatch"));
        }
    }
    let start = (offset - from) as usize;
    Ok(Bytes::from(buf).slice(start..start + len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, v: &str, index: u64) -> BlockKey {
        BlockKey {
            id: ItemId::new(id),
            version: Version::from_etag(v),
            index,
        }
    }

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// A filesystem that is always this big and this free.
    struct FixedSpace(Space);

    impl SpaceProbe for FixedSpace {
        fn space(&self, _: &Path) -> io::Result<Space> {
            Ok(self.0)
        }
    }

    /// A roomy filesystem: only the cap limits.
    fn open(dir: &Path, cap: u64) -> DiskCache {
        let space = FixedSpace(Space {
            available: 1 << 40,
            total: 1 << 40,
        });
        DiskCache::open_with(dir, cap, MIN_FREE_FRACTION, Box::new(space)).unwrap()
    }

    const BLOCK: usize = 200 * 1024; // four segments, the last one short

    #[test]
    fn round_trip_of_whole_blocks_and_ranges_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8 << 20);
        let data = block(1, BLOCK);
        let k = key("item", "v1", 3);
        assert!(cache.store_blocking(&k, &data).unwrap());
        assert!(cache.contains(&k));
        let n = BLOCK as u64;
        assert_eq!(&cache.read_blocking(&k, n, 0, n).unwrap()[..], &data[..]);
        for (off, len) in [
            (0u64, 4096u64),
            (65_530, 20),
            (SEGMENT * 3, n - SEGMENT * 3),
            (n - 1, 1),
        ] {
            let got = cache.read_blocking(&k, n, off, len).unwrap();
            assert_eq!(&got[..], &data[off as usize..(off + len) as usize], "range {off}+{len}");
        }
        // A range past the end, or a block of another length, is no hit.
        assert!(cache.read_blocking(&k, n, n - 1, 2).is_none());
    }

    #[test]
    fn a_flipped_byte_is_a_miss_and_the_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8 << 20);
        let data = block(2, BLOCK);
        let k = key("item", "v1", 0);
        cache.store_blocking(&k, &data).unwrap();
        let path = cache.block_path(&k);
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - BLOCK + 70_000; // in the second segment
        raw[at] ^= 0x40;
        fs::write(&path, &raw).unwrap();
        // The first segment is intact and still served; the damaged one is refused.
        assert!(cache.read_blocking(&k, BLOCK as u64, 0, 4096).is_some());
        assert!(cache.read_blocking(&k, BLOCK as u64, 69_000, 4096).is_none());
        assert!(!path.exists(), "a corrupt block file is removed");
        assert!(!cache.contains(&k));
        assert_eq!(cache.stats(), DiskStats::default());
    }

    #[test]
    fn a_truncated_file_is_a_miss_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8 << 20);
        let k = key("item", "v1", 0);
        cache.store_blocking(&k, &block(3, BLOCK)).unwrap();
        let path = cache.block_path(&k);
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        // Even a range the short file still holds is refused: the file is not what was written.
        assert!(cache.read_blocking(&k, BLOCK as u64, 0, 10).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn a_header_of_another_block_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8 << 20);
        let (a, b) = (key("item", "v1", 0), key("item", "v1", 1));
        cache.store_blocking(&a, &block(4, BLOCK)).unwrap();
        cache.store_blocking(&b, &block(5, BLOCK)).unwrap();
        // As if two names collided: b's file holds a's block.
        fs::copy(cache.block_path(&a), cache.block_path(&b)).unwrap();
        assert!(cache.read_blocking(&b, BLOCK as u64, 0, 10).is_none());
        assert!(cache.read_blocking(&a, BLOCK as u64, 0, 10).is_some());
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let one = (BLOCK + 1024) as u64; // a block file and some header room
        let cache = open(dir.path(), 3 * one);
        let keys: Vec<BlockKey> = (0..4).map(|i| key("item", "v1", i)).collect();
        for k in &keys[..3] {
            assert!(cache.store_blocking(k, &block(k.index as u8, BLOCK)).unwrap());
        }
        // Block 0 is read, so block 1 is now the least recently used.
        assert!(cache.read_blocking(&keys[0], BLOCK as u64, 0, 1).is_some());
        assert!(cache.store_blocking(&keys[3], &block(9, BLOCK)).unwrap());
        assert!(cache.contains(&keys[0]));
        assert!(!cache.contains(&keys[1]));
        assert!(
            !cache.block_path(&keys[1]).exists(),
            "the evicted block's file is removed"
        );
        assert!(cache.contains(&keys[2]) && cache.contains(&keys[3]));
        let s = cache.stats();
        assert_eq!(s.blocks, 3);
        assert!(s.bytes <= 3 * one);
    }

    #[test]
    fn another_version_does_not_hit_and_purging_frees_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 8 << 20);
        let (old, new) = (key("item", "v1", 0), key("item", "v2", 0));
        cache.store_blocking(&old, &block(6, BLOCK)).unwrap();
        assert!(!cache.contains(&new));
        assert!(cache.read_blocking(&new, BLOCK as u64, 0, 10).is_none());
        cache.store_blocking(&new, &block(7, BLOCK)).unwrap();
        cache.purge_other_versions(&ItemId::new("item"), Some(&Version::from_etag("v2")));
        assert!(!cache.contains(&old) && !cache.block_path(&old).exists());
        assert!(cache.contains(&new));
        // A deleted item loses every block, and its folder.
        cache.purge_other_versions(&ItemId::new("item"), None);
        assert!(!cache.contains(&new) && !cache.item_dir(&new.id).exists());
        assert_eq!(cache.stats(), DiskStats::default());
    }

    #[test]
    fn a_reopened_store_finds_its_blocks_and_drops_junk() {
        let dir = tempfile::tempdir().unwrap();
        let data = block(8, BLOCK);
        let (k, bad) = (key("item", "v1", 5), key("item", "v1", 6));
        let (good_path, bad_path, tmp_path) = {
            let cache = open(dir.path(), 8 << 20);
            cache.store_blocking(&k, &data).unwrap();
            cache.store_blocking(&bad, &data).unwrap();
            let bad_path = cache.block_path(&bad);
            fs::write(&bad_path, b"CMDISKBK garbage").unwrap();
            let tmp = bad_path.with_file_name(".tmp-left-by-a-crash");
            fs::write(&tmp, b"half").unwrap();
            (cache.block_path(&k), bad_path, tmp)
        };
        let cache = open(dir.path(), 8 << 20);
        assert!(cache.contains(&k));
        assert_eq!(
            &cache.read_blocking(&k, BLOCK as u64, 100, 50).unwrap()[..],
            &data[100..150]
        );
        assert!(!cache.contains(&bad));
        assert!(good_path.exists() && !bad_path.exists() && !tmp_path.exists());
        assert_eq!(cache.stats().blocks, 1);
    }

    #[test]
    fn reopening_with_a_smaller_cap_evicts_down_to_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = open(dir.path(), 8 << 20);
            for i in 0..4 {
                cache.store_blocking(&key("item", "v1", i), &block(1, BLOCK)).unwrap();
            }
        }
        let cache = open(dir.path(), 2 * (BLOCK as u64 + 1024));
        assert_eq!(cache.stats().blocks, 2);
    }

    #[test]
    fn the_free_space_floor_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        // 100 MiB filesystem: 5 MiB must stay free.
        let total = 100 << 20;
        let tight = FixedSpace(Space {
            available: (5 << 20) + BLOCK as u64 / 2,
            total,
        });
        let cache = DiskCache::open_with(dir.path(), 1 << 30, MIN_FREE_FRACTION, Box::new(tight)).unwrap();
        let k = key("item", "v1", 0);
        assert!(!cache.store_blocking(&k, &block(1, BLOCK)).unwrap());
        assert!(!cache.contains(&k) && !cache.block_path(&k).exists());
        drop(cache);
        let roomy = FixedSpace(Space {
            available: (5 << 20) + 2 * BLOCK as u64,
            total,
        });
        let cache = DiskCache::open_with(dir.path(), 1 << 30, MIN_FREE_FRACTION, Box::new(roomy)).unwrap();
        assert!(cache.store_blocking(&k, &block(1, BLOCK)).unwrap());
    }

    #[test]
    fn a_second_open_of_a_held_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), 8 << 20);
        let second = DiskCache::open(dir.path(), 8 << 20, 0.0);
        assert!(matches!(second, Err(DiskCacheError::Locked(_))), "{:?}", second.err());
        drop(first);
        assert!(DiskCache::open(dir.path(), 8 << 20, 0.0).is_ok());
    }

    #[tokio::test]
    async fn stored_blocks_are_served_while_and_after_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(open(dir.path(), 8 << 20));
        let data = Bytes::from(block(9, BLOCK));
        let k = key("item", "v1", 0);
        cache.store(k.clone(), data.clone()).await;
        assert!(cache.contains(&k));
        assert_eq!(cache.read(&k, BLOCK as u64, 10, 20).await.unwrap(), data.slice(10..30));
        cache.flush().await;
        assert!(cache.block_path(&k).exists());
        assert_eq!(cache.read(&k, BLOCK as u64, 10, 20).await.unwrap(), data.slice(10..30));
    }
}
