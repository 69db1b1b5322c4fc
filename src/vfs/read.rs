//! Reading files: open (checking the version against the server), reads from local content, the
//! memory and disk caches or the server, and the prefetch a sequential reader starts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::future::try_join_all;

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind, Remote};

use super::attr::content_tag;
use super::cache::{BlockCache, BlockKey};
use super::disk_cache::DiskCache;
use super::error::{FsError, FsResult};
use super::fs::{DriveFs, Opened};
use super::handles::FileHandle;
use super::prefetch::ReadPattern;

impl DriveFs {
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
