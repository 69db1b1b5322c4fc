//! Unit tests of the disk block cache.

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
