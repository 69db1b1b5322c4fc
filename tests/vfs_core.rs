//! The filesystem core driven directly (no FUSE) against the in-memory remote: correctness of
//! lookups, listings, reads and cache behaviour, and what the remote is asked for.

use cloudmount::fuse::ToErrno;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::memory::MemoryRemote;
use cloudmount::remote::EntryKind;
use cloudmount::vfs::{DriveFs, FsConfig};

const BS: u64 = 4096;

fn config(ttl: Duration) -> FsConfig {
    FsConfig {
        attr_ttl: ttl,
        negative_ttl: ttl,
        block_size: BS,
        cache_bytes: 64 * BS,
        max_prefetch_bytes: 8 * BS,
        ..FsConfig::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn fs_over(remote: &Arc<MemoryRemote>, ttl: Duration) -> Arc<DriveFs> {
    DriveFs::new(remote.clone(), config(ttl)).await.expect("core starts")
}

async fn read_all(fs: &DriveFs, ino: u64, chunk: u32) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let mut out = Vec::new();
    loop {
        let b = fs.read(fh, out.len() as u64, chunk).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(fh).await.unwrap();
    out
}

#[tokio::test]
async fn lookup_getattr_and_listing_of_a_tree() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("docs/a b #%+.txt", &b"hello"[..]);
    remote.put_file("docs/日本 é 🎉.txt", &b"unicode"[..]);
    let long = "x".repeat(200);
    remote.put_file(&format!("docs/{long}"), &b"long"[..]);
    let fs = fs_over(&remote, Duration::from_secs(60)).await;

    let docs = fs.lookup(1, OsStr::new("docs")).await.unwrap();
    assert_eq!(docs.attr.kind, EntryKind::Directory);
    let fh = fs.opendir(docs.attr.ino).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(fh, 0, |item| {
        names.push(item.name.to_string());
        false
    })
    .unwrap();
    fs.releasedir(fh);
    assert_eq!(names.len(), 5);
    assert_eq!(&names[..2], &[".", ".."]);
    assert!(names.contains(&"a b #%+.txt".to_string()));
    assert!(names.contains(&long));

    let f = fs.lookup(docs.attr.ino, OsStr::new("日本 é 🎉.txt")).await.unwrap();
    assert_eq!(f.attr.size, 7);
    assert_eq!(read_all(&fs, f.attr.ino, 4096).await, b"unicode");
    let err = fs.lookup(docs.attr.ino, OsStr::new("missing")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    let err = fs.lookup(f.attr.ino, OsStr::new("x")).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTDIR);
}

#[tokio::test]
async fn listing_a_big_folder_costs_one_request_and_answers_lookups() {
    let remote = Arc::new(MemoryRemote::new());
    for i in 0..1000 {
        remote.put_file(&format!("big/f{i:04}"), vec![0u8; i]);
    }
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let big = fs.lookup(1, OsStr::new("big")).await.unwrap().attr.ino;
    let (lists0, lookups0) = (
        remote.lists.load(Ordering::SeqCst),
        remote.lookups.load(Ordering::SeqCst),
    );
    let fh = fs.opendir(big).await.unwrap();
    let mut seen = Vec::new();
    // A small buffer: the kernel comes back with the offset of the first entry that did not fit.
    let mut offset = 0;
    loop {
        let mut batch = 0;
        fs.readdirplus(fh, offset, |item, attr, _| {
            if batch == 100 {
                return true;
            }
            batch += 1;
            offset = item.next_offset;
            seen.push((item.name.to_string(), attr.size));
            false
        })
        .unwrap();
        if batch == 0 {
            break;
        }
    }
    fs.releasedir(fh);
    assert_eq!(seen.len(), 1002);
    assert!(seen.iter().any(|(n, s)| n == "f0999" && *s == 999));
    for i in (0..1000).step_by(97) {
        let l = fs.lookup(big, OsStr::new(&format!("f{i:04}"))).await.unwrap();
        assert_eq!(l.attr.size, i as u64);
    }
    assert!(fs.lookup(big, OsStr::new("nope")).await.is_err());
    assert_eq!(remote.lists.load(Ordering::SeqCst) - lists0, 1, "one listing");
    assert_eq!(
        remote.lookups.load(Ordering::SeqCst) - lookups0,
        0,
        "lookups answered from the listing"
    );
}

#[tokio::test]
async fn reads_at_any_offset_and_size_return_the_right_bytes() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(10 * BS as usize + 123, 7);
    remote.put_file("f", content.clone());
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let mut x = 99u64;
    for _ in 0..300 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 33) % (content.len() as u64 + 100);
        let len = ((x >> 13) % (3 * BS)) as u32;
        let got = fs.read(fh, off, len).await.unwrap();
        let start = (off as usize).min(content.len());
        let end = (off as usize + len as usize).min(content.len());
        assert_eq!(&got[..], &content[start..end], "read {len} at {off}");
    }
    assert_eq!(read_all(&fs, ino, 1000).await, content);
}

#[tokio::test]
async fn a_random_read_downloads_only_its_blocks() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(256 * BS as usize, 3);
    remote.put_file("big", content.clone());
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("big")).await.unwrap().attr.ino;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let off = 192 * BS + 100;
    let got = fs.read(fh, off, 4096).await.unwrap();
    assert_eq!(&got[..], &content[off as usize..off as usize + 4096]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fetched = remote.bytes_read.load(Ordering::SeqCst);
    assert!(fetched <= 2 * BS, "fetched {fetched} bytes for a 4 KiB read");
}

#[tokio::test]
async fn a_sequential_read_prefetches_and_downloads_each_byte_once() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(48 * BS as usize, 5);
    remote.put_file("seq", content.clone());
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("seq")).await.unwrap().attr.ino;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    fs.read(fh, 0, BS as u32).await.unwrap();
    // The prefetcher runs in the background: the next blocks arrive without being asked for.
    for _ in 0..200 {
        if remote.reads.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(remote.reads.load(Ordering::SeqCst) >= 2, "prefetch started");
    fs.release(fh).await.unwrap();
    assert_eq!(read_all(&fs, ino, BS as u32).await, content);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        remote.bytes_read.load(Ordering::SeqCst),
        content.len() as u64,
        "no block fetched twice"
    );
    assert!(fs.cache_stats().bytes <= 64 * BS, "cache stays under its cap");
}

#[tokio::test]
async fn the_cache_cap_holds_for_files_larger_than_the_cache() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(300 * BS as usize, 11);
    remote.put_file("huge", content.clone());
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("huge")).await.unwrap().attr.ino;
    assert_eq!(read_all(&fs, ino, 128 * 1024).await, content);
    let s = fs.cache_stats();
    assert!(s.bytes <= 64 * BS, "cache holds {} bytes", s.bytes);
}

#[tokio::test]
async fn a_changed_file_is_seen_after_the_ttl_and_old_blocks_are_never_served() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", data(3 * BS as usize, 1));
    let fs = fs_over(&remote, Duration::from_millis(200)).await;
    let ino = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    let old = read_all(&fs, ino, 8192).await;
    let old_handle = fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(old_handle.keep_cache, "same version: the kernel may keep its pages");
    // This handle has served data: it is bound to the old version from now on.
    assert_eq!(&fs.read(old_handle.fh, 0, 10).await.unwrap()[..], &old[..10]);
    // This one has served nothing yet.
    let idle_handle = fs.open(ino, libc::O_RDONLY).await.unwrap();

    let new = data(3 * BS as usize, 2);
    assert_ne!(old, new);
    remote.put_file("f", new.clone());
    // Within the TTL, the old version stands; after it, a reopen sees the new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reopened = fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert!(!reopened.keep_cache, "new version: the kernel must drop its pages");
    fs.release(reopened.fh).await.unwrap();
    assert_eq!(read_all(&fs, ino, 8192).await, new);

    // A handle that served the old version never mixes in new bytes: blocks still cached are the
    // old ones, others are refused as stale.
    for offset in [0, 2 * BS] {
        match fs.read(old_handle.fh, offset, 100).await {
            Ok(b) => assert_eq!(&b[..], &old[offset as usize..offset as usize + 100]),
            Err(e) => assert_eq!(e.errno(), libc::ESTALE),
        }
    }
    // A handle that served nothing through the core, but whose open kept the kernel's page cache,
    // is bound to the old version as well: the kernel may have answered its reads from those
    // pages (issue 15 item 3), so it must not move to the new version now.
    assert!(idle_handle.keep_cache);
    for offset in [0, 2 * BS] {
        match fs.read(idle_handle.fh, offset, 100).await {
            Ok(b) => assert_eq!(&b[..], &old[offset as usize..offset as usize + 100]),
            Err(e) => assert_eq!(e.errno(), libc::ESTALE),
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_gives_errors_and_recovery_follows() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("d/f", &b"x"[..]);
    let fs = fs_over(&remote, Duration::ZERO).await;
    remote.set_down(true);
    let err = fs.lookup(1, OsStr::new("d")).await.unwrap_err();
    assert_eq!(err.errno(), libc::EHOSTUNREACH);
    assert_eq!(fs.opendir(1).await.unwrap_err().errno(), libc::EHOSTUNREACH);
    remote.set_down(false);
    let d = fs.lookup(1, OsStr::new("d")).await.unwrap();
    assert!(fs.opendir(d.attr.ino).await.is_ok());
}

#[tokio::test]
async fn a_vanished_file_gives_enoent_after_the_ttl() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", &b"x"[..]);
    let fs = fs_over(&remote, Duration::ZERO).await;
    let ino = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    remote.remove("f");
    assert_eq!(fs.getattr(ino).await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(fs.open(ino, libc::O_RDONLY).await.unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test]
async fn writes_are_refused_with_erofs() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", &b"x"[..]);
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(fs.open(ino, flags).await.unwrap_err().errno(), libc::EROFS);
    }
    assert_eq!(fs.check_writable().unwrap_err().errno(), libc::EROFS);
    assert_eq!(fs.open(1, libc::O_RDONLY).await.unwrap_err().errno(), libc::EISDIR);
}

#[tokio::test]
async fn forgotten_inodes_are_dropped() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", &b"x"[..]);
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let before = fs.inode_count();
    let a = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    let b = fs.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    assert_eq!(a, b);
    assert_eq!(fs.inode_count(), before + 1);
    fs.forget(a, 2);
    assert_eq!(fs.inode_count(), before);
}

#[tokio::test]
async fn statfs_reports_the_servers_quota() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", vec![0u8; 8192]);
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let s = fs.statfs().await.unwrap();
    assert_eq!(s.bsize, 4096);
    assert_eq!(s.bavail, (1u64 << 40) / 4096);
    assert_eq!(s.blocks, (8192 + (1u64 << 40)) / 4096);
}

/// The core with a disk cache in `dir` under the small memory cache of [`config`].
async fn fs_with_disk_cache(remote: &Arc<MemoryRemote>, ttl: Duration, dir: &std::path::Path) -> Arc<DriveFs> {
    let cfg = FsConfig {
        disk_cache_dir: Some(dir.to_path_buf()),
        disk_cache_bytes: 1 << 30,
        // Whatever the free space of the machine running the tests.
        disk_cache_min_free: 0.0,
        ..config(ttl)
    };
    DriveFs::new(remote.clone(), cfg).await.expect("core starts")
}

#[tokio::test]
async fn blocks_read_once_come_from_the_disk_cache_until_the_file_changes() {
    let remote = Arc::new(MemoryRemote::new());
    // Five times the memory cache: without the disk cache, a second pass downloads again.
    let blocks = 320;
    let old = data(blocks * BS as usize, 21);
    remote.put_file("big", old.clone());
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with_disk_cache(&remote, Duration::from_millis(200), dir.path()).await;
    let ino = fs.lookup(1, OsStr::new("big")).await.unwrap().attr.ino;
    assert_eq!(read_all(&fs, ino, 64 * 1024).await, old);
    fs.flush_disk_cache().await;
    assert_eq!(fs.disk_cache_stats().unwrap().blocks, blocks);
    let first_pass = remote.reads.load(Ordering::SeqCst);

    // Within the TTL or not, the version is unchanged: every byte comes from memory or disk.
    assert_eq!(read_all(&fs, ino, 64 * 1024).await, old);
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    for i in 0..200u64 {
        let off = (i * 7919 * 613) % (blocks as u64 * BS - 3000);
        let got = fs.read(fh, off, 3000).await.unwrap();
        assert_eq!(
            &got[..],
            &old[off as usize..off as usize + 3000],
            "random read at {off}"
        );
    }
    fs.release(fh).await.unwrap();
    assert_eq!(
        remote.reads.load(Ordering::SeqCst),
        first_pass,
        "reads of blocks already downloaded went to the server"
    );
    assert!(
        fs.cache_stats().bytes <= 64 * BS,
        "the memory cache stays under its cap"
    );

    // A new version on the server: its bytes, never the old blocks from disk.
    let new = data(blocks * BS as usize, 22);
    remote.put_file("big", new.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_all(&fs, ino, 64 * 1024).await, new);
    assert!(remote.reads.load(Ordering::SeqCst) > first_pass);
    fs.flush_disk_cache().await;
    assert_eq!(
        fs.disk_cache_stats().unwrap().blocks,
        blocks,
        "the old version's blocks were dropped from disk"
    );
}

#[tokio::test]
async fn a_second_core_on_a_disk_cache_in_use_runs_without_it() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(4 * BS as usize, 23);
    remote.put_file("f", content.clone());
    let dir = tempfile::tempdir().unwrap();
    let first = fs_with_disk_cache(&remote, Duration::from_secs(60), dir.path()).await;
    let second = fs_with_disk_cache(&remote, Duration::from_secs(60), dir.path()).await;
    assert!(first.disk_cache_stats().is_some());
    assert!(second.disk_cache_stats().is_none(), "two mounts shared one disk cache");
    // It still reads, from memory and the server.
    let ino = second.lookup(1, OsStr::new("f")).await.unwrap().attr.ino;
    assert_eq!(read_all(&second, ino, 8192).await, content);
}

/// Reads answered without waiting (the FUSE thread's fast path) give the same bytes as the async path, only for
/// what is local, and keep the sequential prefetch going.
#[tokio::test]
async fn reads_of_cached_blocks_are_answered_at_once_and_keep_prefetching() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(32 * BS as usize, 9);
    remote.put_file("seq", content.clone());
    let fs = fs_over(&remote, Duration::from_secs(60)).await;
    let ino = fs.lookup(1, OsStr::new("seq")).await.unwrap().attr.ino;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    assert!(fs.try_read_now(fh, 0, 4096).is_none(), "nothing is cached yet");
    // The first read downloads block 0 and starts prefetching the next ones.
    let mut off = 0u64;
    let first = fs.read(fh, off, BS as u32).await.unwrap();
    assert_eq!(&first[..], &content[..BS as usize]);
    off += BS;
    // Then read on at once only: each block must come from the prefetch that the reads before it started
    // (a read at once that did not keep prefetching would leave the next block missing for good).
    while off < content.len() as u64 {
        let mut waited = 0;
        let got = loop {
            if let Some(r) = fs.try_read_now(fh, off, BS as u32) {
                break r.unwrap();
            }
            waited += 1;
            assert!(waited < 2000, "block at {off} never arrived: prefetching stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(
            &got[..],
            &content[off as usize..off as usize + BS as usize],
            "bytes at {off}"
        );
        off += BS;
    }
    // Every block was downloaded once: reads at once kept the prefetcher going.
    let fetched = remote.bytes_read.load(Ordering::SeqCst);
    assert_eq!(fetched, content.len() as u64, "each byte downloaded once");
    assert!(fs
        .try_read_now(fh, content.len() as u64, 10)
        .unwrap()
        .unwrap()
        .is_empty());
    fs.release(fh).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Listings that race our own uploads (issue 14 item 16)
// ---------------------------------------------------------------------------------------------

/// A writable core over `remote` with a 60 s TTL (only our own changes and listings matter).
async fn writable_over(remote: &Arc<MemoryRemote>, dir: &std::path::Path) -> Arc<DriveFs> {
    let cfg = FsConfig {
        read_only: false,
        ..config(Duration::from_secs(60))
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.expect("core starts");
    let paths = cloudmount::vfs::writeback::WriteBackPaths {
        journal: dir.join("journal"),
        staging: dir.join("staging"),
        min_free_bytes: 0,
    };
    let queue = cloudmount::vfs::writeback::queue::QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    fs.enable_writes(&paths, queue).expect("writes on");
    fs
}

/// Create `name` in `parent` holding `bytes` and close it (its upload is queued); returns its inode.
async fn create_and_close(fs: &DriveFs, parent: u64, name: &str, bytes: &[u8]) -> u64 {
    let (looked, o) = fs.create(parent, OsStr::new(name), libc::O_WRONLY).await.unwrap();
    fs.write(o.fh, 0, bytes).await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    looked.attr.ino
}

/// The names in a fresh snapshot of folder `ino`.
async fn listed_names(fs: &DriveFs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(fh, 0, |item| {
        names.push(item.name.to_string());
        false
    })
    .unwrap();
    fs.releasedir(fh);
    names.retain(|n| n != "." && n != "..");
    names.sort();
    names
}

#[tokio::test]
async fn a_listing_answered_after_our_uploads_landed_keeps_every_file() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_dir("d");
    let state = tempfile::tempdir().unwrap();
    let fs = writable_over(&remote, state.path()).await;
    let d = fs.lookup(1, OsStr::new("d")).await.unwrap().attr.ino;
    // Every listing is taken, then held 300 ms; uploads land one by one meanwhile, so each answer
    // (however many times it is asked again) misses files that are on the server by the time it
    // arrives.
    remote.set_list_delay(Duration::from_millis(300));
    remote.set_upload_delay(Duration::from_millis(120));
    let names: Vec<String> = (0..12).map(|i| format!("f{i:02}.bin")).collect();
    let mut inos = Vec::new();
    for (i, n) in names.iter().enumerate() {
        inos.push(create_and_close(&fs, d, n, &data(1000, i as u64)).await);
    }
    let listing = tokio::spawn({
        let fs = fs.clone();
        async move { listed_names(&fs, d).await }
    });
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(20)).await;
    assert!(left.is_empty(), "uploads still queued: {left:?}");
    assert_eq!(
        listing.await.unwrap(),
        names,
        "the snapshot taken while the uploads landed"
    );
    remote.set_list_delay(Duration::ZERO);
    assert_eq!(listed_names(&fs, d).await, names, "a listing after they landed");
    // The kernel lets go of the files; each name still resolves, and removing works.
    for ino in inos {
        fs.forget(ino, 1);
    }
    for n in &names {
        fs.lookup(d, OsStr::new(n))
            .await
            .unwrap_or_else(|e| panic!("lookup {n}: {e}"));
        fs.unlink(d, OsStr::new(n))
            .await
            .unwrap_or_else(|e| panic!("unlink {n}: {e}"));
        assert!(
            remote.file_content(&format!("d/{n}")).is_none(),
            "{n} is gone from the server"
        );
    }
    assert_eq!(listed_names(&fs, d).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_snapshot_from_before_an_upload_gives_the_kernel_the_same_inode() {
    let remote = Arc::new(MemoryRemote::new());
    let state = tempfile::tempdir().unwrap();
    let fs = writable_over(&remote, state.path()).await;
    remote.set_upload_delay(Duration::from_millis(200));
    let created = create_and_close(&fs, 1, "x.bin", b"content").await;
    // `ls` opens the folder while the file is only local, and reads the snapshot after the upload.
    let dh = fs.opendir(1).await.unwrap();
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(20)).await;
    assert!(left.is_empty(), "uploads still queued: {left:?}");
    let mut given = Vec::new();
    fs.readdirplus(dh, 0, |item, attr, _| {
        if item.name == "x.bin" {
            given.push((item.ino, attr.size));
        }
        false
    })
    .unwrap();
    fs.releasedir(dh);
    assert_eq!(given, vec![(created, 7)], "readdirplus names the file's own inode");
    // The kernel drops both references (the create's and readdirplus'); `rm` then works.
    fs.forget(created, 2);
    fs.unlink(1, OsStr::new("x.bin"))
        .await
        .expect("unlink after the snapshot");
    assert!(remote.file_content("x.bin").is_none(), "removed on the server");
}

// ---------------------------------------------------------------------------------------------
// Opens after another machine's change (issue 15 items 4 and 6)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_append_open_after_a_change_elsewhere_takes_the_new_version() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f.txt", &b"base\n"[..]);
    let state = tempfile::tempdir().unwrap();
    let fs = writable_over(&remote, state.path()).await;
    let ino = fs.lookup(1, OsStr::new("f.txt")).await.unwrap().attr.ino;
    // Another machine replaces it while our attributes are still trusted (60 s TTL).
    remote.put_file("f.txt", &b"changed elsewhere\n"[..]);
    let o = fs
        .open(ino, libc::O_WRONLY | libc::O_APPEND)
        .await
        .expect("the open takes the new version instead of failing");
    assert_eq!(
        fs.end_of_file(o.fh),
        Some(18),
        "appends go at the end of the new version"
    );
    fs.write(o.fh, 18, b"ours\n").await.unwrap();
    fs.release(o.fh).await.unwrap();
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(20)).await;
    assert!(left.is_empty(), "uploads still queued: {left:?}");
    assert_eq!(
        remote.file_content("f.txt").unwrap().as_ref(),
        b"changed elsewhere\nours\n"
    );
}

#[tokio::test]
async fn a_file_gone_from_the_server_keeps_its_attributes_while_open() {
    let remote = Arc::new(MemoryRemote::new());
    let content = data(3 * BS as usize, 7);
    remote.put_file("d/f", content.clone());
    let fs = fs_over(&remote, Duration::from_millis(100)).await;
    let d = fs.lookup(1, OsStr::new("d")).await.unwrap().attr.ino;
    let ino = fs.lookup(d, OsStr::new("f")).await.unwrap().attr.ino;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, u32::MAX).await.unwrap()[..], &content[..]);
    // Another machine moves the folder away: the item is no longer at its path.
    remote.remove("d/f");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (attr, _) = fs.getattr(ino).await.expect("an open file keeps its attributes");
    assert_eq!(attr.size, content.len() as u64);
    assert!(
        fs.read(fh, attr.size, 4096).await.unwrap().is_empty(),
        "a clean end of file"
    );
    fs.release(fh).await.unwrap();
    assert_eq!(
        fs.getattr(ino).await.unwrap_err().errno(),
        libc::ENOENT,
        "once closed, it is gone"
    );
}
