//! The memory block cache: fixed-size blocks of file content keyed by (item, content version,
//! block index), evicted least-recently-used under a byte cap.
//!
//! Because the content version is part of the key, a file that changed on the server can never be
//! answered from blocks of its old version: they simply miss, and [`BlockCache::purge_other_versions`]
//! frees them early. Concurrent requests for one block (a reader and the prefetcher, or two readers)
//! share a single download: the first caller fetches, the others wait for its result. A failed
//! fetch leaves nothing behind, so the next caller tries again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::OnceCell;

use super::error::FsResult;
use crate::remote::{ItemId, Version};

/// Identity of one cached block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockKey {
    /// The item the block belongs to.
    pub id: ItemId,
    /// The content version it was read from.
    pub version: Version,
    /// Block number: the block covers `[index * block_size, (index + 1) * block_size)`.
    pub index: u64,
}

impl Hash for BlockKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.version.as_str().hash(state);
        self.index.hash(state);
    }
}

type Slot = Arc<OnceCell<Bytes>>;

struct Inner {
    blocks: LruCache<BlockKey, Bytes>,
    bytes: u64,
    in_flight: HashMap<BlockKey, Slot>,
}

/// Memory block cache with a byte cap. Cheap to share (`Arc`).
pub struct BlockCache {
    block_size: u64,
    cap_bytes: u64,
    inner: Mutex<Inner>,
}

/// Counters for tests and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks held.
    pub blocks: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Downloads under way.
    pub in_flight: usize,
}

impl BlockCache {
    /// A cache of `block_size`-byte blocks holding at most `cap_bytes`.
    pub fn new(block_size: u64, cap_bytes: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        BlockCache {
            block_size,
            cap_bytes,
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                bytes: 0,
                in_flight: HashMap::new(),
            }),
        }
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The byte cap.
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the block is held or being downloaded (so a prefetch need not start it).
    pub fn contains_or_pending(&self, key: &BlockKey) -> bool {
        let inner = self.lock();
        inner.blocks.contains(key) || inner.in_flight.contains_key(key)
    }

    /// The block when held in memory (it becomes the most recently used).
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.lock().blocks.get(key).cloned()
    }

    /// The block, from memory when held, else from `fetch` (shared with concurrent callers asking
    /// for the same key).
    pub async fn get_or_fetch<F, Fut>(&self, key: BlockKey, fetch: F) -> FsResult<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = FsResult<Bytes>>,
    {
        let slot = {
            let mut inner = self.lock();
            if let Some(b) = inner.blocks.get(&key) {
                return Ok(b.clone());
            }
            if let Some(slot) = inner.in_flight.get(&key) {
                slot.clone()
            } else {
                let slot: Slot = Arc::new(OnceCell::new());
                inner.in_flight.insert(key.clone(), slot.clone());
                // The new download's buffer counts from now on.
                self.evict_locked(&mut inner, 0);
                slot
            }
        };
        let result = slot.get_or_try_init(fetch).await.cloned();
        let mut inner = self.lock();
        let ours = inner
            .in_flight
            .get(&key)
            .map(|s| Arc::ptr_eq(s, &slot))
            .unwrap_or(false);
        match &result {
            Ok(bytes) => {
                if ours {
                    inner.in_flight.remove(&key);
                }
                if !inner.blocks.contains(&key) {
                    self.insert_locked(&mut inner, key, bytes.clone());
                }
            }
            // Leave a slot that another waiter is filling right now; drop an empty one so the
            // next caller starts afresh.
            Err(_) if ours && slot.get().is_none() => {
                inner.in_flight.remove(&key);
            }
            Err(_) => {}
        }
        result
    }

    fn insert_locked(&self, inner: &mut Inner, key: BlockKey, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.cap_bytes {
            return;
        }
        // Make room first, so the new block is never the one evicted.
        self.evict_locked(inner, len);
        if let Some(old) = inner.blocks.put(key, bytes) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
    }

    /// Evict least recently used blocks until held blocks, downloads under way (a block each) and
    /// `extra` more bytes fit in the cap, or nothing is left to evict.
    fn evict_locked(&self, inner: &mut Inner, extra: u64) {
        let pending = inner.in_flight.len() as u64 * self.block_size;
        while inner.bytes + pending + extra > self.cap_bytes {
            match inner.blocks.pop_lru() {
                Some((_, b)) => inner.bytes -= b.len() as u64,
                None => break,
            }
        }
    }

    /// Drop every block of `id` whose version is not `keep`: the server has moved on.
    pub fn purge_other_versions(&self, id: &ItemId, keep: Option<&Version>) {
        let mut inner = self.lock();
        let stale: Vec<BlockKey> = inner
            .blocks
            .iter()
            .filter(|(k, _)| &k.id == id && Some(&k.version) != keep)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(b) = inner.blocks.pop(&k) {
                inner.bytes -= b.len() as u64;
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            blocks: inner.blocks.len(),
            bytes: inner.bytes,
            in_flight: inner.in_flight.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn key(id: &str, v: &str, index: u64) -> BlockKey {
        BlockKey {
            id: ItemId::new(id),
            version: Version::from_etag(v),
            index,
        }
    }

    #[tokio::test]
    async fn respects_byte_cap_and_evicts_least_recent() {
        let cache = BlockCache::new(4, 8);
        for i in 0..3 {
            cache
                .get_or_fetch(key("a", "1", i), || async { Ok(Bytes::from_static(b"abcd")) })
                .await
                .unwrap();
        }
        let s = cache.stats();
        assert_eq!((s.blocks, s.bytes), (2, 8));
        assert!(!cache.contains_or_pending(&key("a", "1", 0)));
        assert!(cache.contains_or_pending(&key("a", "1", 2)));
    }

    #[tokio::test]
    async fn downloads_under_way_count_against_the_cap() {
        let cache = Arc::new(BlockCache::new(4, 12));
        for i in 0..3 {
            cache
                .get_or_fetch(key("a", "1", i), || async { Ok(Bytes::from_static(b"abcd")) })
                .await
                .unwrap();
        }
        assert_eq!(cache.stats().bytes, 12);
        // Two downloads start and hang: they need two blocks of room, so the two least recently
        // used blocks go at once, before any byte arrives.
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 10..12 {
            let (cache, mut wait) = (cache.clone(), wait.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(key("b", "1", i), || async move {
                        let _ = wait.wait_for(|go| *go).await;
                        Ok(Bytes::from_static(b"efgh"))
                    })
                    .await
            }));
        }
        while cache.stats().in_flight < 2 {
            tokio::task::yield_now().await;
        }
        let s = cache.stats();
        assert_eq!((s.blocks, s.bytes, s.in_flight), (1, 4, 2));
        assert!(
            cache.contains_or_pending(&key("a", "1", 2)),
            "the most recent block stays"
        );
        release.send(true).unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let s = cache.stats();
        assert_eq!((s.blocks, s.bytes, s.in_flight), (3, 12, 0));
        assert!(cache.contains_or_pending(&key("b", "1", 10)));
        assert!(cache.contains_or_pending(&key("b", "1", 11)));
    }

    #[tokio::test]
    async fn other_versions_miss_and_can_be_purged() {
        let cache = BlockCache::new(4, 64);
        cache
            .get_or_fetch(key("a", "1", 0), || async { Ok(Bytes::from_static(b"old!")) })
            .await
            .unwrap();
        let got = cache
            .get_or_fetch(key("a", "2", 0), || async { Ok(Bytes::from_static(b"new!")) })
            .await
            .unwrap();
        assert_eq!(&got[..], b"new!");
        cache.purge_other_versions(&ItemId::new("a"), Some(&Version::from_etag("2")));
        assert!(!cache.contains_or_pending(&key("a", "1", 0)));
        assert!(cache.contains_or_pending(&key("a", "2", 0)));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_failures_are_not_cached() {
        let cache = Arc::new(BlockCache::new(4, 64));
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(key("a", "1", 0), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(Bytes::from_static(b"data"))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(&t.await.unwrap().unwrap()[..], b"data");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let err = cache
            .get_or_fetch(key("b", "1", 0), || async {
                Err(crate::vfs::FsError::new(crate::vfs::FsErrorKind::Internal, "boom"))
            })
            .await;
        assert!(err.is_err());
        assert_eq!(cache.stats().in_flight, 0);
        let ok = cache
            .get_or_fetch(key("b", "1", 0), || async { Ok(Bytes::from_static(b"ok")) })
            .await;
        assert_eq!(&ok.unwrap()[..], b"ok");
    }
}
