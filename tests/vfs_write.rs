//! The write path of the filesystem core, driven directly (no FUSE) against the in-memory remote:
//! what a writer is promised (close, fsync) and what the server ends up holding.

use cloudmount::fuse::ToErrno;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::error::RemoteError;
use cloudmount::remote::memory::MemoryRemote;
use cloudmount::remote::Remote;
use cloudmount::vfs::writeback::queue::QueueConfig;
use cloudmount::vfs::writeback::WriteBackPaths;
use cloudmount::vfs::{DriveFs, FsConfig};

struct Setup {
    remote: Arc<MemoryRemote>,
    fs: Arc<DriveFs>,
    dir: tempfile::TempDir,
}

fn paths(dir: &std::path::Path, min_free: u64) -> WriteBackPaths {
    WriteBackPaths {
        journal: dir.join("journal"),
        staging: dir.join("staging"),
        min_free_bytes: min_free,
    }
}

fn queue_cfg() -> QueueConfig {
    QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

async fn writable_over(remote: Arc<MemoryRemote>, dir: tempfile::TempDir, min_free: u64) -> Setup {
    let cfg = FsConfig {
        read_only: false,
        block_size: 4096,
        cache_bytes: 1 << 20,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    fs.enable_writes(&paths(dir.path(), min_free), queue_cfg()).unwrap();
    Setup { remote, fs, dir }
}

async fn setup() -> Setup {
    writable_over(Arc::new(MemoryRemote::new()), tempfile::tempdir().unwrap(), 0).await
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn ino_of(fs: &DriveFs, path: &str) -> u64 {
    let mut ino = 1;
    for seg in path.split('/') {
        ino = fs.lookup(ino, os(seg)).await.unwrap().attr.ino;
    }
    ino
}

async fn write_file(fs: &DriveFs, parent: u64, name: &str, data: &[u8]) {
    let (_, o) = fs.create(parent, os(name), libc::O_WRONLY).await.unwrap();
    for (i, chunk) in data.chunks(1000).enumerate() {
        fs.write(o.fh, (i * 1000) as u64, chunk).await.unwrap();
    }
    fs.fsync(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
}

async fn read_file(fs: &DriveFs, path: &str) -> Vec<u8> {
    let ino = ino_of(fs, path).await;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let data = fs.read(fh, 0, u32::MAX).await.unwrap().to_vec();
    fs.release(fh).await.unwrap();
    data
}

async fn read_ino(fs: &DriveFs, ino: u64) -> Vec<u8> {
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    let data = fs.read(fh, 0, u32::MAX).await.unwrap().to_vec();
    fs.release(fh).await.unwrap();
    data
}

async fn until_uploaded(s: &Setup) {
    let left = s.fs.upload_queue().unwrap().drain(Duration::from_secs(20)).await;
    assert!(left.is_empty(), "uploads still queued: {left:?}");
}

#[tokio::test]
async fn a_new_file_reaches_the_server_when_fsync_returns() {
    let s = setup().await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    write_file(&s.fs, 1, "new #1.bin", &data).await;
    assert_eq!(
        s.remote.file_content("new #1.bin").unwrap().as_ref(),
        &data[..],
        "fsync returned: the server has it"
    );
    assert_eq!(read_file(&s.fs, "new #1.bin").await, data);
}

#[tokio::test]
async fn close_queues_the_upload_and_readers_see_it_at_once() {
    let s = setup().await;
    s.remote.set_upload_delay(Duration::from_millis(300));
    let (_, o) = s.fs.create(1, os("slow.txt"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"queued bytes").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    // Not on the server yet, but listed and readable through the mount.
    let dh = s.fs.opendir(1).await.unwrap();
    let mut names = Vec::new();
    s.fs.readdir(dh, 2, |i| {
        names.push(i.name.to_string());
        false
    })
    .unwrap();
    assert!(names.contains(&"slow.txt".to_string()), "listed: {names:?}");
    assert_eq!(read_file(&s.fs, "slow.txt").await, b"queued bytes");
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("slow.txt").unwrap().as_ref(), b"queued bytes");
}

#[tokio::test]
async fn editing_in_place_keeps_the_bytes_around_the_edit() {
    let s = setup().await;
    s.remote.put_file("doc.txt", &b"hello wonderful world"[..]);
    let ino = ino_of(&s.fs, "doc.txt").await;
    let o = s.fs.open(ino, libc::O_RDWR).await.unwrap();
    s.fs.write(o.fh, 6, b"WONDERFUL").await.unwrap();
    assert_eq!(&s.fs.read(o.fh, 0, 100).await.unwrap()[..], b"hello WONDERFUL world");
    s.fs.fsync(o.fh).await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    assert_eq!(
        s.remote.file_content("doc.txt").unwrap().as_ref(),
        b"hello WONDERFUL world"
    );
}

#[tokio::test]
async fn o_trunc_and_truncate_up_and_down() {
    let s = setup().await;
    s.remote.put_file("t.bin", vec![9u8; 5000]);
    let ino = ino_of(&s.fs, "t.bin").await;
    let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    s.fs.write(o.fh, 0, b"abc").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("t.bin").unwrap().as_ref(), b"abc");

    let attr = s.fs.truncate(ino, 10, None).await.unwrap();
    assert_eq!(attr.size, 10);
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("t.bin").unwrap().as_ref(), b"abc\0\0\0\0\0\0\0");
    s.fs.truncate(ino, 2, None).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("t.bin").unwrap().as_ref(), b"ab");
    assert_eq!(s.fs.getattr(ino).await.unwrap().0.size, 2);
}

#[tokio::test]
async fn folders_are_made_and_removed_on_the_server() {
    let s = setup().await;
    let d = s.fs.mkdir(1, os("dir é")).await.unwrap().attr.ino;
    assert_eq!(s.fs.mkdir(1, os("dir é")).await.unwrap_err().errno(), libc::EEXIST);
    write_file(&s.fs, d, "f", b"x").await;
    assert_eq!(s.remote.file_content("dir é/f").unwrap().as_ref(), b"x");
    assert_eq!(s.fs.rmdir(1, os("dir é")).await.unwrap_err().errno(), libc::ENOTEMPTY);
    assert_eq!(s.fs.unlink(1, os("dir é")).await.unwrap_err().errno(), libc::EISDIR);
    s.fs.unlink(d, os("f")).await.unwrap();
    assert!(s.remote.file_content("dir é/f").is_none());
    s.fs.rmdir(1, os("dir é")).await.unwrap();
    assert_eq!(s.fs.lookup(1, os("dir é")).await.unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test]
async fn renames_move_files_and_replace_only_when_allowed() {
    let s = setup().await;
    let a = s.fs.mkdir(1, os("a")).await.unwrap().attr.ino;
    let b = s.fs.mkdir(1, os("b")).await.unwrap().attr.ino;
    write_file(&s.fs, a, "one", b"1").await;
    write_file(&s.fs, b, "two", b"2").await;
    s.fs.rename(a, os("one"), b, os("moved"), false).await.unwrap();
    assert!(s.remote.file_content("a/one").is_none());
    assert_eq!(s.remote.file_content("b/moved").unwrap().as_ref(), b"1");
    assert_eq!(
        s.fs.rename(b, os("moved"), b, os("two"), true)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    s.fs.rename(b, os("moved"), b, os("two"), false).await.unwrap();
    assert_eq!(s.remote.file_content("b/two").unwrap().as_ref(), b"1");
    assert_eq!(read_file(&s.fs, "b/two").await, b"1");
    assert_eq!(
        s.fs.rename(1, os("a"), a, os("inside"), false)
            .await
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
}

#[tokio::test]
async fn a_folder_moves_with_its_pending_uploads() {
    let s = setup().await;
    let d = s.fs.mkdir(1, os("proj")).await.unwrap().attr.ino;
    s.remote.set_upload_delay(Duration::from_millis(200));
    for i in 0..3 {
        let (_, o) = s.fs.create(d, os(&format!("f{i}")), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, format!("content {i}").as_bytes()).await.unwrap();
        s.fs.release(o.fh).await.unwrap();
    }
    s.fs.rename(1, os("proj"), 1, os("renamed"), false).await.unwrap();
    until_uploaded(&s).await;
    for i in 0..3 {
        let want = format!("content {i}");
        assert_eq!(
            s.remote.file_content(&format!("renamed/f{i}")).unwrap().as_ref(),
            want.as_bytes()
        );
        assert_eq!(read_file(&s.fs, &format!("renamed/f{i}")).await, want.as_bytes());
    }
    assert!(s.remote.file_content("proj/f0").is_none());
}

#[tokio::test]
async fn deleting_a_file_before_its_upload_leaves_nothing_on_the_server() {
    let s = setup().await;
    s.remote.set_upload_delay(Duration::from_millis(100));
    let (_, o) = s.fs.create(1, os("temp"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"scratch").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    s.fs.unlink(1, os("temp")).await.unwrap();
    until_uploaded(&s).await;
    assert!(s.remote.file_content("temp").is_none());
    assert_eq!(s.fs.lookup(1, os("temp")).await.unwrap_err().errno(), libc::ENOENT);
}

/// A daemon restarted on the state directory `keep` of one that "crashed", over a fresh drive: returns the drive
/// once the restarted queue has uploaded everything the journal held.
async fn restart_and_drain(keep: &std::path::Path) -> Arc<MemoryRemote> {
    let remote = Arc::new(MemoryRemote::new());
    let cfg = FsConfig {
        read_only: false,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    fs.enable_writes(&paths(keep, 0), queue_cfg()).unwrap();
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(10)).await;
    assert!(left.is_empty(), "the restarted queue still holds {left:?}");
    remote
}

#[tokio::test]
async fn accepted_writes_survive_a_restart() {
    let remote = Arc::new(MemoryRemote::new());
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        s.remote.fail_next_uploads(1000, RemoteError::Connect("down".into()));
        let (_, o) = s.fs.create(1, os("precious"), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, b"do not lose me").await.unwrap();
        s.fs.release(o.fh).await.unwrap();
        let q = s.fs.upload_queue().unwrap();
        assert_eq!(
            q.drain(Duration::from_millis(200)).await.len(),
            1,
            "still queued while the server fails"
        );
        q.stop();
        std::mem::forget(s.dir); // the daemon "crashes": its state directory stays
    }
    let remote2 = restart_and_drain(&keep).await;
    assert_eq!(remote2.file_content("precious").unwrap().as_ref(), b"do not lose me");
    std::fs::remove_dir_all(&keep).unwrap();
}

/// After a restart, files still waiting in the journal show in their folders with the local size and content
/// (a new file the server lacks, and an edit of a file the server holds in an older version), until they land.
#[tokio::test]
async fn queued_files_stay_visible_after_a_restart() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_dir("docs");
    remote.put_file("docs/old.txt", &b"old version"[..]);
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        s.remote.fail_next_uploads(1000, RemoteError::Connect("down".into()));
        let docs = ino_of(&s.fs, "docs").await;
        let (_, o) = s.fs.create(docs, os("new.txt"), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, b"written before the crash").await.unwrap();
        s.fs.release(o.fh).await.unwrap();
        let old = ino_of(&s.fs, "docs/old.txt").await;
        let o = s.fs.open(old, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
        s.fs.write(o.fh, 0, b"new version, longer").await.unwrap();
        s.fs.release(o.fh).await.unwrap();
        let q = s.fs.upload_queue().unwrap();
        assert_eq!(q.drain(Duration::from_millis(200)).await.len(), 2);
        q.stop();
        // An attempt already started finishes before the "restart": a crashed daemon makes no
        // more, but this queue lives on in the test's process and would race the next one.
        while q.status().iter().any(|u| u.running) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::forget(s.dir);
    }
    // The server is still down for uploads after the restart.
    remote.fail_next_uploads(1000, RemoteError::Connect("down".into()));
    let cfg = FsConfig {
        read_only: false,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    fs.enable_writes(&paths(&keep, 0), queue_cfg()).unwrap();
    let docs = ino_of(&fs, "docs").await;
    let dh = fs.opendir(docs).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(dh, 0, |item| {
        names.push(item.name.to_string());
        false
    })
    .unwrap();
    names.sort();
    assert_eq!(names, [".", "..", "new.txt", "old.txt"]);
    assert_eq!(read_file(&fs, "docs/new.txt").await, b"written before the crash");
    assert_eq!(read_file(&fs, "docs/old.txt").await, b"new version, longer");
    let attr = fs.lookup(docs, os("old.txt")).await.unwrap().attr;
    assert_eq!(attr.size, b"new version, longer".len() as u64);
    assert!(remote.file_content("docs/new.txt").is_none());

    // Once the server takes uploads again, both land and the tree shows the server's copies.
    remote.clear_upload_failures();
    assert!(fs
        .upload_queue()
        .unwrap()
        .drain(Duration::from_secs(10))
        .await
        .is_empty());
    assert_eq!(
        remote.file_content("docs/new.txt").unwrap().as_ref(),
        b"written before the crash"
    );
    assert_eq!(
        remote.file_content("docs/old.txt").unwrap().as_ref(),
        b"new version, longer"
    );
    assert_eq!(read_file(&fs, "docs/new.txt").await, b"written before the crash");
    std::fs::remove_dir_all(&keep).unwrap();
}

/// A file unlinked while open stays usable through its descriptors, as on a local disk (tmpfile() does this):
/// no links, writes and reads work, nothing reaches the server, and the last close frees it.
#[tokio::test]
async fn an_unlinked_file_stays_usable_until_closed() {
    let s = setup().await;
    let (_, o) = s.fs.create(1, os("scratch"), libc::O_RDWR).await.unwrap();
    s.fs.write(o.fh, 0, b"before unlink").await.unwrap();
    s.fs.flush(o.fh).await.unwrap(); // queued once, like a close of another descriptor
    let ino = ino_of(&s.fs, "scratch").await;
    s.fs.unlink(1, os("scratch")).await.unwrap();
    assert_eq!(s.fs.lookup(1, os("scratch")).await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(s.fs.getattr(ino).await.unwrap().0.nlink, 0);
    s.fs.write(o.fh, 13, b", and after").await.unwrap();
    s.fs.flush(o.fh).await.unwrap();
    assert_eq!(&s.fs.read(o.fh, 0, 100).await.unwrap()[..], b"before unlink, and after");
    // A new file of the same name is another file.
    write_file(&s.fs, 1, "scratch", b"new").await;
    assert_eq!(&s.fs.read(o.fh, 0, 100).await.unwrap()[..], b"before unlink, and after");
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("scratch").unwrap().as_ref(), b"new");
    assert_eq!(read_file(&s.fs, "scratch").await, b"new");
    let staged: Vec<_> = std::fs::read_dir(s.dir.path().join("staging"))
        .unwrap()
        .flatten()
        .collect();
    assert!(staged.is_empty(), "staged copies left behind: {staged:?}");
}

/// A folder listing that the server took before our own upload landed does not hide the new file afterwards.
#[tokio::test]
async fn a_listing_racing_our_upload_does_not_hide_the_file() {
    let s = setup().await;
    s.remote.put_dir("d");
    let d = ino_of(&s.fs, "d").await;
    s.remote.set_upload_delay(Duration::from_millis(100));
    s.remote.set_list_delay(Duration::from_millis(300));
    let (_, o) = s.fs.create(d, os("new.bin"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"fresh").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    // The listing is taken now (without the file), the upload lands while it is on its way back.
    let dh = s.fs.opendir(d).await.unwrap();
    s.fs.releasedir(dh);
    until_uploaded(&s).await;
    s.remote.set_list_delay(Duration::ZERO);
    assert_eq!(s.remote.file_content("d/new.bin").unwrap().as_ref(), b"fresh");
    assert_eq!(read_file(&s.fs, "d/new.bin").await, b"fresh");
    let dh = s.fs.opendir(d).await.unwrap();
    let mut names = Vec::new();
    s.fs.readdir(dh, 0, |item| {
        names.push(item.name.to_string());
        false
    })
    .unwrap();
    assert!(names.contains(&"new.bin".to_string()), "{names:?}");
}

#[tokio::test]
async fn a_change_on_the_server_while_editing_keeps_both_versions() {
    let s = setup().await;
    s.remote.put_file("shared.txt", &b"v1"[..]);
    let ino = ino_of(&s.fs, "shared.txt").await;
    let o = s.fs.open(ino, libc::O_RDWR).await.unwrap();
    s.fs.write(o.fh, 2, b"-ours").await.unwrap();
    s.remote.put_file("shared.txt", &b"v2-theirs"[..]);
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("shared.txt").unwrap().as_ref(), b"v2-theirs");
    let dh = s.fs.opendir(1).await;
    drop(dh);
    let listing = s.remote.list(&cloudmount::remote::ItemId::new("")).await.unwrap();
    let copy = listing
        .iter()
        .find(|e| e.name.starts_with("shared (conflict "))
        .expect("a conflict copy");
    assert_eq!(s.remote.file_content(&copy.name).unwrap().as_ref(), b"v1-ours");
}

#[tokio::test]
async fn a_full_staging_disk_refuses_new_bytes_with_enospc() {
    let s = writable_over(
        Arc::new(MemoryRemote::new()),
        tempfile::tempdir().unwrap(),
        u64::MAX / 2,
    )
    .await;
    let (_, o) = s.fs.create(1, os("big"), libc::O_WRONLY).await.unwrap();
    assert_eq!(s.fs.write(o.fh, 0, b"x").await.unwrap_err().errno(), libc::ENOSPC);
    s.fs.release(o.fh).await.unwrap();
}

#[tokio::test]
async fn what_remotes_cannot_hold_is_refused() {
    let s = setup().await;
    assert_eq!(
        s.fs.create(1, os("a/b"), libc::O_WRONLY).await.unwrap_err().errno(),
        libc::EINVAL
    );
    let long = "n".repeat(256);
    assert_eq!(
        s.fs.create(1, os(&long), libc::O_WRONLY).await.unwrap_err().errno(),
        libc::ENAMETOOLONG
    );
    write_file(&s.fs, 1, "x", b"1").await;
    assert_eq!(
        s.fs.create(1, os("x"), libc::O_WRONLY | libc::O_EXCL)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
}

/// Wait (up to 20 s) until `cond` holds.
async fn soon(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

const MIB: usize = 1 << 20;

/// A remote that can take a file while it is written.
async fn streaming_setup() -> Setup {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_streams_growing_uploads(true);
    writable_over(remote, tempfile::tempdir().unwrap(), 0).await
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Create `name` and append `data` in 256 KiB writes; returns the handle, still open.
async fn append_open(fs: &DriveFs, name: &str, data: &[u8]) -> u64 {
    let (_, o) = fs.create(1, os(name), libc::O_WRONLY).await.unwrap();
    append(fs, o.fh, 0, data).await;
    o.fh
}

async fn append(fs: &DriveFs, fh: u64, at: usize, data: &[u8]) {
    for (i, chunk) in data.chunks(256 << 10).enumerate() {
        fs.write(fh, (at + i * (256 << 10)) as u64, chunk).await.unwrap();
    }
}

/// A big file written in order goes up while it is written: the server has received the bytes
/// before the close, holds nothing until the writer is done, and then exactly the content.
#[tokio::test]
async fn a_file_written_in_order_uploads_while_it_is_written() {
    let s = streaming_setup().await;
    let data = pattern(12 * MIB, 1);
    let fh = append_open(&s.fs, "big.bin", &data[..8 * MIB]).await;
    let remote = s.remote.clone();
    soon("the server received the first 8 MiB", || {
        remote.growing_received.load(std::sync::atomic::Ordering::Relaxed) >= 8 * MIB as u64
    })
    .await;
    assert_eq!(
        s.remote.file_content("big.bin"),
        None,
        "nothing is committed before the writer is done"
    );
    append(&s.fs, fh, 8 * MIB, &data[8 * MIB..]).await;
    s.fs.fsync(fh).await.unwrap();
    assert_eq!(s.remote.file_content("big.bin").unwrap().as_ref(), &data[..]);
    s.fs.release(fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.growing_started.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        s.remote.growing_applied.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the upload that followed the writer is the one that landed"
    );
    assert_eq!(
        s.remote.uploads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one upload, not a second whole-file one"
    );
    assert_eq!(read_file(&s.fs, "big.bin").await, data);
}

/// A write behind the writer's end (a header filled in at the end, as zip and media muxers do)
/// stops the upload under way; the whole file goes up at close and nothing else lands.
#[tokio::test]
async fn a_rewrite_behind_the_end_falls_back_to_the_whole_file() {
    let s = streaming_setup().await;
    let mut data = pattern(8 * MIB, 2);
    let fh = append_open(&s.fs, "muxed.mp4", &data).await;
    let remote = s.remote.clone();
    soon("the upload started", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    s.fs.write(fh, 100, b"HEADER").await.unwrap();
    data[100..106].copy_from_slice(b"HEADER");
    s.fs.release(fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("muxed.mp4").unwrap().as_ref(), &data[..]);
    assert_eq!(s.remote.uploads.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.remote.growing_applied.load(std::sync::atomic::Ordering::Relaxed), 0);
    let names: Vec<String> = s
        .remote
        .list(&cloudmount::remote::ItemId::new(""))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["muxed.mp4"], "no conflict copies");
}

/// Deleting or renaming a file whose upload follows its writer neither hangs nor leaves the old
/// name behind.
#[tokio::test]
async fn delete_and_rename_stop_the_upload_that_follows_the_writer() {
    let s = streaming_setup().await;
    let gone = pattern(6 * MIB, 3);
    let fh = append_open(&s.fs, "gone.bin", &gone).await;
    let moved = pattern(6 * MIB, 4);
    let fh2 = append_open(&s.fs, "before.bin", &moved).await;
    let remote = s.remote.clone();
    soon("both uploads started", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 2
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), s.fs.unlink(1, os("gone.bin")))
        .await
        .expect("unlink must not wait for the writer")
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        s.fs.rename(1, os("before.bin"), 1, os("after.bin"), false),
    )
    .await
    .expect("rename must not wait for the writer")
    .unwrap();
    s.fs.write(fh2, moved.len() as u64, b"tail").await.unwrap();
    s.fs.release(fh).await.unwrap();
    s.fs.fsync(fh2).await.unwrap();
    s.fs.release(fh2).await.unwrap();
    until_uploaded(&s).await;
    let mut want = moved.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(s.remote.file_content("after.bin").unwrap().as_ref(), &want[..]);
    assert_eq!(s.remote.file_content("before.bin"), None);
    assert_eq!(s.remote.file_content("gone.bin"), None);
}

/// When the upload that followed the writer fails at the end, the whole file goes up instead,
/// and fsync waits for that.
#[tokio::test]
async fn a_failed_upload_while_writing_is_retried_whole() {
    let s = streaming_setup().await;
    let data = pattern(6 * MIB, 5);
    let fh = append_open(&s.fs, "retry.bin", &data).await;
    let remote = s.remote.clone();
    soon("the upload started", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    s.remote.fail_next_uploads(
        1,
        RemoteError::Http {
            status: 500,
            message: "injected".into(),
        },
    );
    s.fs.fsync(fh).await.unwrap();
    assert_eq!(s.remote.file_content("retry.bin").unwrap().as_ref(), &data[..]);
    s.fs.release(fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.uploads.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.remote.growing_applied.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A close of a file whose upload followed the writer returns once the upload landed or the journal holds the
/// file, whichever comes first: with a server that never finishes, the journal wins, and a restart uploads it.
#[tokio::test]
async fn a_streamed_file_closed_while_the_server_stalls_survives_a_restart() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_streams_growing_uploads(true);
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    let data = pattern(6 * MIB, 6);
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        s.remote.set_upload_delay(Duration::from_secs(3600));
        let fh = append_open(&s.fs, "stalled.bin", &data).await;
        let r = remote.clone();
        soon("the upload started", || {
            r.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await;
        tokio::time::timeout(Duration::from_secs(20), s.fs.release(fh))
            .await
            .expect("close must not wait for the server")
            .unwrap();
        let journal: Vec<_> = std::fs::read_dir(keep.join("journal")).unwrap().flatten().collect();
        assert_eq!(journal.len(), 1, "the close journaled the file: {journal:?}");
        s.fs.upload_queue().unwrap().stop();
        std::mem::forget(s.dir); // the daemon "crashes": its state directory stays
    }
    let remote2 = restart_and_drain(&keep).await;
    assert_eq!(remote2.file_content("stalled.bin").unwrap().as_ref(), &data[..]);
    std::fs::remove_dir_all(&keep).unwrap();
}

/// The close of a streamed file that landed leaves nothing in the journal or staging area.
#[tokio::test]
async fn a_streamed_file_leaves_nothing_behind() {
    let s = streaming_setup().await;
    let data = pattern(6 * MIB, 7);
    let fh = append_open(&s.fs, "clean.bin", &data).await;
    let remote = s.remote.clone();
    soon("the upload started", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    s.fs.release(fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("clean.bin").unwrap().as_ref(), &data[..]);
    assert_eq!(s.remote.growing_applied.load(std::sync::atomic::Ordering::Relaxed), 1);
    for sub in ["journal", "staging"] {
        let left: Vec<_> = std::fs::read_dir(s.dir.path().join(sub))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{sub} keeps {left:?}");
    }
}

/// A reader that opened a new file before its first upload landed goes on reading it after the local copy is gone
/// (it then reads the server's copy, which holds the same bytes).
#[tokio::test]
async fn a_reader_opened_before_the_first_upload_reads_on_after_it() {
    let s = setup().await;
    let (_, o) = s.fs.create(1, os("fresh.txt"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"new bytes, read later").await.unwrap();
    s.fs.flush(o.fh).await.unwrap();
    let ino = ino_of(&s.fs, "fresh.txt").await;
    let reader = s.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert!(s.remote.file_content("fresh.txt").is_some());
    let got = s.fs.read(reader, 0, 100).await.unwrap();
    assert_eq!(&got[..], b"new bytes, read later");
    s.fs.release(reader).await.unwrap();
}

/// Files being written for a long time (uploads that follow their writers) never hold back the uploads of files
/// already closed.
#[tokio::test]
async fn files_still_being_written_do_not_hold_back_closed_ones() {
    let s = streaming_setup().await; // two uploads at once
    let a = append_open(&s.fs, "slow-a.bin", &pattern(5 * MIB, 8)).await;
    let b = append_open(&s.fs, "slow-b.bin", &pattern(5 * MIB, 9)).await;
    let remote = s.remote.clone();
    soon("both writers are followed", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 2
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(20),
        write_file(&s.fs, 1, "small.txt", b"closed while the others are open"),
    )
    .await
    .expect("a closed file's upload must not wait for files still being written"); // fsync inside
    assert_eq!(
        s.remote.file_content("small.txt").unwrap().as_ref(),
        b"closed while the others are open"
    );
    s.fs.release(a).await.unwrap();
    s.fs.release(b).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.growing_applied.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// A file rewritten while its streamed upload is still landing ends with the new content on the server (the newer
/// version goes up whole, not through the old writer's stream).
#[tokio::test]
async fn a_rewrite_while_the_streamed_upload_lands_ends_with_the_new_content() {
    let s = streaming_setup().await;
    let old = pattern(6 * MIB, 10);
    let fh = append_open(&s.fs, "twice.bin", &old).await;
    let remote = s.remote.clone();
    soon("the upload started", || {
        remote.growing_started.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    s.remote.set_upload_delay(Duration::from_millis(300));
    s.fs.release(fh).await.unwrap(); // sealed; the upload lands after the delay
    let ino = ino_of(&s.fs, "twice.bin").await;
    let fh = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap().fh;
    let new = pattern(3 * MIB, 11);
    append(&s.fs, fh, 0, &new).await;
    s.fs.release(fh).await.unwrap();
    s.remote.set_upload_delay(Duration::ZERO);
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("twice.bin").unwrap().as_ref(), &new[..]);
}

// ---- Issue 14: the open file's state and the upload queue's events ----

/// Names of the files in the drive's root, as the server holds them.
async fn server_names(remote: &MemoryRemote) -> Vec<String> {
    use cloudmount::remote::ItemId;
    let mut names: Vec<String> = remote
        .list(&ItemId::new(""))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

fn conflicts(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.contains("(conflict")).collect()
}

#[tokio::test]
async fn server_names_that_begin_with_local_are_server_items() {
    let s = setup().await;
    s.remote.put_file("local:top.txt", &b"top"[..]);
    s.remote.put_dir("local:notes");
    s.remote.put_file("local:notes/a.txt", &b"a"[..]);
    // As the kernel does, look the names up first (it holds them while it acts on them).
    ino_of(&s.fs, "local:top.txt").await;
    ino_of(&s.fs, "local:notes/a.txt").await;
    s.fs.unlink(1, os("local:top.txt")).await.unwrap();
    assert_eq!(s.remote.file_content("local:top.txt"), None, "rm reached the server");
    let notes = ino_of(&s.fs, "local:notes").await;
    s.fs.rename(notes, os("a.txt"), notes, os("b.txt"), false)
        .await
        .unwrap();
    assert_eq!(
        s.remote.file_content("local:notes/a.txt"),
        None,
        "mv reached the server"
    );
    assert_eq!(s.remote.file_content("local:notes/b.txt").unwrap().as_ref(), b"a");
    // A file we create there is ours until its upload lands, whatever its name.
    let (_, o) = s.fs.create(notes, os("local:new.txt"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"new").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    s.fs.unlink(notes, os("local:new.txt")).await.unwrap();
    assert_eq!(s.remote.file_content("local:notes/local:new.txt"), None);
}

/// Item 4: a write that copies the staged file while the previous upload lands must not undo
/// that upload's news (its version, the server's id): the next upload would be sent as a new
/// file (`If-None-Match: *`) and end as a conflict copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_racing_the_previous_upload_keeps_its_version() {
    let s = setup().await;
    let big = pattern(8 << 20, 3);
    for round in 0..30u64 {
        let name = format!("race{round}.bin");
        // Vary when the first upload lands relative to the copy the next write makes.
        s.remote.set_upload_delay(Duration::from_micros((round % 10) * 1000));
        let (_, o) = s.fs.create(1, os(&name), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, &big).await.unwrap();
        s.fs.flush(o.fh).await.unwrap();
        s.fs.write(o.fh, big.len() as u64, b"tail\n").await.unwrap();
        s.fs.release(o.fh).await.unwrap();
        until_uploaded(&s).await;
        let mut want = big.clone();
        want.extend_from_slice(b"tail\n");
        let got = s.remote.file_content(&name).expect("uploaded");
        assert!(
            got.as_ref() == &want[..],
            "round {round}: the server lost the appended bytes"
        );
    }
    let names = server_names(&s.remote).await;
    assert!(conflicts(&names).is_empty(), "no conflict copies: {names:?}");
}

/// Item 5 (and 7): an upload that lands while its writer is still open (fsync before close) must
/// leave the file on the version it made: the next reader gets the new bytes, not the old
/// version's cached blocks, and the next `O_TRUNC` write is based on it (no conflict copy).
#[tokio::test]
async fn an_upload_landing_before_close_moves_the_file_to_its_version() {
    let s = setup().await;
    s.remote.put_file("F", &b"AAAA-old-content\n"[..]);
    // The kernel looks the name up once and then holds the inode: later opens ask no server.
    let ino = ino_of(&s.fs, "F").await;
    assert_eq!(
        read_ino(&s.fs, ino).await,
        b"AAAA-old-content\n",
        "cached blocks of the old version"
    );
    // dd conv=notrunc,fsync: same size, in place.
    let o = s.fs.open(ino, libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"B").await.unwrap();
    s.fs.fsync(o.fh).await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    assert_eq!(
        read_ino(&s.fs, ino).await,
        b"BAAA-old-content\n",
        "read your own writes"
    );
    // printf CCCC > F
    let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    s.fs.write(o.fh, 0, b"CCCC\n").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("F").unwrap().as_ref(), b"CCCC\n");
    let names = server_names(&s.remote).await;
    assert!(conflicts(&names).is_empty(), "no conflict copies: {names:?}");
    assert_eq!(read_ino(&s.fs, ino).await, b"CCCC\n");
}

/// Item 7: a reader that opens while the upload is still queued reads on, after the upload
/// landed and the local copy went, from the version that upload made.
#[tokio::test]
async fn a_reader_opened_while_the_edit_is_queued_reads_the_edit_after_it_lands() {
    let s = setup().await;
    s.remote.put_file("edit.bin", pattern(64 << 10, 1));
    let mut model = read_file(&s.fs, "edit.bin").await;
    let ino = ino_of(&s.fs, "edit.bin").await;
    s.remote.set_upload_delay(Duration::from_millis(200));
    let o = s.fs.open(ino, libc::O_WRONLY).await.unwrap();
    let patch = pattern(4096, 9);
    s.fs.write(o.fh, 40960, &patch).await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    model[40960..40960 + 4096].copy_from_slice(&patch);
    let r = s.fs.open(ino, libc::O_RDONLY).await.unwrap();
    until_uploaded(&s).await;
    let got = s.fs.read(r.fh, 0, u32::MAX).await.unwrap();
    s.fs.release(r.fh).await.unwrap();
    assert!(got.as_ref() == &model[..], "the reader saw the old version");
}

/// Item 6: the modification time a file was written with stays, to the nanosecond, after its
/// upload and after the server's answers (which keep whole seconds) come back.
#[tokio::test]
async fn the_time_a_file_was_written_with_stays() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_whole_second_mtimes(true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = FsConfig {
        read_only: false,
        block_size: 4096,
        cache_bytes: 1 << 20,
        attr_ttl: Duration::from_millis(50),
        negative_ttl: Duration::from_millis(50),
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    fs.enable_writes(&paths(dir.path(), 0), queue_cfg()).unwrap();
    let s = Setup { remote, fs, dir };
    let (looked, o) = s.fs.create(1, os("G"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"hello\n").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    let ino = looked.attr.ino;
    let written = s.fs.getattr(ino).await.unwrap().0.mtime;
    until_uploaded(&s).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(s.fs.getattr(ino).await.unwrap().0.mtime, written, "stat after the TTL");
    let again = s.fs.lookup(1, os("G")).await.unwrap();
    assert_eq!(again.attr.mtime, written, "lookup after the TTL");
}

/// Item 12: fsync through a handle that did not write (`sync FILE` opens read-only) waits for
/// the file's pending upload.
#[tokio::test]
async fn fsync_on_a_read_only_handle_waits_for_the_upload() {
    let s = setup().await;
    s.remote.set_upload_delay(Duration::from_millis(300));
    let (looked, o) = s.fs.create(1, os("sync.txt"), libc::O_WRONLY).await.unwrap();
    s.fs.write(o.fh, 0, b"synced").await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    let r = s.fs.open(looked.attr.ino, libc::O_RDONLY).await.unwrap();
    s.fs.fsync(r.fh).await.unwrap();
    assert_eq!(
        s.remote.file_content("sync.txt").map(|b| b.to_vec()),
        Some(b"synced".to_vec()),
        "fsync returned: the server has it"
    );
    s.fs.release(r.fh).await.unwrap();
}

/// Item 9: `echo x > file` on an existing file (bash closes a duplicate descriptor before the
/// command writes) sends one upload, never an empty version.
#[tokio::test]
async fn a_close_of_a_duplicate_descriptor_uploads_nothing_yet() {
    let s = setup().await;
    s.remote.put_file("echo.txt", &b"old content\n"[..]);
    let ino = ino_of(&s.fs, "echo.txt").await;
    let before = s.remote.uploads.load(std::sync::atomic::Ordering::SeqCst);
    let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    s.fs.flush(o.fh).await.unwrap(); // close(3) after dup2(3, 1)
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.remote.file_content("echo.txt").unwrap().as_ref(),
        b"old content\n",
        "no empty version went up"
    );
    s.fs.write(o.fh, 0, b"x\n").await.unwrap();
    s.fs.flush(o.fh).await.unwrap();
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    assert_eq!(s.remote.file_content("echo.txt").unwrap().as_ref(), b"x\n");
    let uploads = s.remote.uploads.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(uploads, 1, "one upload for one command");
}

/// Item 9: what a close put in the journal survives a crash even though it is sent only at the
/// last close.
#[tokio::test]
async fn a_held_upload_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(Arc::new(MemoryRemote::new()), dir, 0).await;
        let (_, o) = s.fs.create(1, os("held.txt"), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, b"kept by the journal").await.unwrap();
        s.fs.flush(o.fh).await.unwrap();
        assert_eq!(s.remote.file_content("held.txt"), None, "held until the last close");
        assert!(
            s.fs.staging().unwrap().dir_syncs() > 0,
            "item 17: the staging folder was made durable"
        );
        // The daemon dies here, the descriptor still open.
        s.fs.upload_queue().unwrap().stop();
        std::mem::forget(s.dir);
    }
    let remote = restart_and_drain(&keep).await;
    assert_eq!(
        remote.file_content("held.txt").unwrap().as_ref(),
        b"kept by the journal"
    );
    std::fs::remove_dir_all(&keep).unwrap();
}

/// Issue 15 item 5: an empty version (bash's `>` opened, truncated, closed) that meets another
/// device's change is not worth a conflict copy: the name keeps the other version.
#[tokio::test]
async fn an_empty_version_meeting_a_change_makes_no_conflict_copy() {
    let s = setup().await;
    s.remote.put_file("e.txt", &b"original\n"[..]);
    let ino = ino_of(&s.fs, "e.txt").await;
    let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    s.remote.put_file("e.txt", &b"other device\n"[..]);
    s.fs.release(o.fh).await.unwrap();
    until_uploaded(&s).await;
    let names = server_names(&s.remote).await;
    assert!(conflicts(&names).is_empty(), "no conflict copy of nothing: {names:?}");
    assert_eq!(s.remote.file_content("e.txt").unwrap().as_ref(), b"other device\n");
}

/// Item 15: the daemon dies while our upload's reply is on its way, after newer content of the
/// same file was journaled on top of it. After the restart the server holds that upload, which
/// the journal never heard landed: it is ours, not another device's change, so the newer
/// content replaces it without a conflict copy.
#[tokio::test]
async fn our_own_upload_that_landed_unheard_before_a_crash_is_no_conflict() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f3.bin", pattern(10_000, 0));
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        let ino = ino_of(&s.fs, "f3.bin").await;
        s.remote.set_lose_upload_replies(true);
        for (round, seed) in [(1, 1u8), (2, 2u8)] {
            let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
            s.fs.write(o.fh, 0, &pattern(10_000, seed)).await.unwrap();
            s.fs.release(o.fh).await.unwrap();
            if round == 1 {
                let r = s.remote.clone();
                soon("the first rewrite on the server", move || {
                    r.file_content("f3.bin")
                        .is_some_and(|b| b.as_ref() == &pattern(10_000, 1)[..])
                })
                .await;
            }
        }
        s.fs.upload_queue().unwrap().stop();
        std::mem::forget(s.dir); // killed: the state directory stays
    }
    remote.set_lose_upload_replies(false);
    restart_over(remote.clone(), &keep).await;
    assert!(
        remote.file_content("f3.bin").unwrap().as_ref() == &pattern(10_000, 2)[..],
        "the last accepted write holds the name"
    );
    let names = server_names(&remote).await;
    assert!(conflicts(&names).is_empty(), "no conflict copies: {names:?}");
    let staged: Vec<_> = std::fs::read_dir(keep.join("staging")).unwrap().collect();
    assert!(staged.is_empty(), "nothing left in staging: {staged:?}");
    std::fs::remove_dir_all(&keep).unwrap();
}

/// Item 15: a conflict copy is uploaded at most once, even when the daemon dies after the server
/// took it and before the journal heard.
#[tokio::test]
async fn a_conflict_copy_goes_up_once_across_a_crash() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("c.txt", &b"original\n"[..]);
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        let ino = ino_of(&s.fs, "c.txt").await;
        let o = s.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
        s.fs.write(o.fh, 0, b"mine\n").await.unwrap();
        s.remote.put_file("c.txt", &b"another device\n"[..]);
        s.remote.set_lose_upload_replies(true);
        s.fs.release(o.fh).await.unwrap();
        let r = s.remote.clone();
        let mut waited = 0;
        while conflicts(&server_names(&r).await).is_empty() {
            assert!(waited < 200, "no conflict copy went up");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        s.fs.upload_queue().unwrap().stop();
        std::mem::forget(s.dir); // killed: the state directory stays
    }
    remote.set_lose_upload_replies(false);
    restart_over(remote.clone(), &keep).await;
    let names = server_names(&remote).await;
    assert_eq!(conflicts(&names).len(), 1, "one conflict copy: {names:?}");
    assert_eq!(remote.file_content("c.txt").unwrap().as_ref(), b"another device\n");
    std::fs::remove_dir_all(&keep).unwrap();
}

/// A daemon started again over `remote` with the state directory `keep`, drained.
async fn restart_over(remote: Arc<MemoryRemote>, keep: &std::path::Path) {
    let cfg = FsConfig {
        read_only: false,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote, cfg).await.unwrap();
    fs.enable_writes(&paths(keep, 0), queue_cfg()).unwrap();
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(10)).await;
    assert!(left.is_empty(), "the restarted queue still holds {left:?}");
}

/// A new file whose first upload landed but whose answer never came (a timeout, a lost reply, a crash) is sent
/// again as a create; the server then already holds exactly these bytes, which is no one else's change: no conflict
/// copy (seen as `.v1.txt (conflict …).swp` from vim's swap file on a loaded machine).
#[tokio::test]
async fn a_create_that_landed_unheard_is_no_conflict_when_sent_again() {
    let remote = Arc::new(MemoryRemote::new());
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let s = writable_over(remote.clone(), dir, 0).await;
        s.remote.set_lose_upload_replies(true);
        let (_, o) = s.fs.create(1, os("new.swp"), libc::O_WRONLY).await.unwrap();
        s.fs.write(o.fh, 0, &pattern(5_000, 3)).await.unwrap();
        s.fs.release(o.fh).await.unwrap();
        let r = s.remote.clone();
        soon("the create on the server", move || {
            r.file_content("new.swp")
                .is_some_and(|b| b.as_ref() == &pattern(5_000, 3)[..])
        })
        .await;
        s.fs.upload_queue().unwrap().stop();
        std::mem::forget(s.dir); // killed: the state directory stays
    }
    remote.set_lose_upload_replies(false);
    restart_over(remote.clone(), &keep).await;
    assert_eq!(remote.file_content("new.swp").unwrap().as_ref(), &pattern(5_000, 3)[..]);
    let names = server_names(&remote).await;
    assert!(conflicts(&names).is_empty(), "no conflict copies: {names:?}");
    std::fs::remove_dir_all(&keep).unwrap();
}

/// Two descriptors of one file closed at the same moment (the kernel sends FUSE releases in the
/// background, so a close followed by an open and a close can release two handles at once): the
/// last of them lets the upload go, whichever finishes first. Seen in CI as fsx's file never
/// reaching the server: both releases counted the other as still open and held the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_descriptors_released_at_once_let_the_upload_go() {
    let s = setup().await;
    for round in 0..40 {
        let name = format!("pair{round}.txt");
        let (_, a) = s.fs.create(1, os(&name), libc::O_WRONLY).await.unwrap();
        let ino = ino_of(&s.fs, &name).await;
        let b = s.fs.open(ino, libc::O_WRONLY).await.unwrap();
        s.fs.write(a.fh, 0, b"from a, ").await.unwrap();
        s.fs.write(b.fh, 8, format!("from b {round}").as_bytes()).await.unwrap();
        s.fs.flush(a.fh).await.unwrap();
        s.fs.flush(b.fh).await.unwrap();
        let (fs1, fs2) = (s.fs.clone(), s.fs.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { fs1.release(a.fh).await }),
            tokio::spawn(async move { fs2.release(b.fh).await }),
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
        let want = format!("from a, from b {round}");
        soon(&format!("round {round}: the upload went after the last close"), || {
            s.remote
                .file_content(&name)
                .is_some_and(|c| c.as_ref() == want.as_bytes())
        })
        .await;
    }
}

/// Writes run without a lock, closes and truncates of the same file mark it busy: racing them
/// on several threads never loses a write nor lets one land in a staged file the upload queue
/// already owns. One handle writes distinct blocks while another keeps closing (handing the file
/// to the queue, so each next write works on a copy) and truncates to its full length keep
/// resizing and queueing it; at the end the server holds every block.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_closes_and_truncates_of_one_file_lose_nothing() {
    const BLOCKS: usize = 64;
    const BLOCK: usize = 512;
    for round in 0..20 {
        let s = setup().await;
        let name = format!("race{round}.bin");
        let (looked, w) = s.fs.create(1, os(&name), libc::O_RDWR).await.unwrap();
        let ino = looked.attr.ino;
        let closer = s.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
        let last = vec![BLOCKS as u8; BLOCK];
        s.fs.write(w.fh, ((BLOCKS - 1) * BLOCK) as u64, &last).await.unwrap();
        let writer = {
            let fs = s.fs.clone();
            tokio::spawn(async move {
                for b in 0..BLOCKS - 1 {
                    let data = vec![b as u8 + 1; BLOCK];
                    assert_eq!(fs.write(w.fh, (b * BLOCK) as u64, &data).await.unwrap(), BLOCK as u32);
                    tokio::task::yield_now().await;
                }
            })
        };
        let flusher = {
            let fs = s.fs.clone();
            tokio::spawn(async move {
                for _ in 0..BLOCKS {
                    fs.flush(closer).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let extender = {
            let fs = s.fs.clone();
            tokio::spawn(async move {
                // To the length the file has had since its last block was written: cuts nothing,
                // but copies or resizes the staged file and hands it to the queue each time.
                for _ in 0..BLOCKS / 4 {
                    fs.truncate(ino, (BLOCKS * BLOCK) as u64, None).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        writer.await.unwrap();
        flusher.await.unwrap();
        extender.await.unwrap();
        s.fs.fsync(w.fh).await.unwrap();
        s.fs.release(w.fh).await.unwrap();
        s.fs.release(closer).await.unwrap();
        let expected: Vec<u8> = (0..BLOCKS).flat_map(|b| vec![b as u8 + 1; BLOCK]).collect();
        assert_eq!(
            s.remote.file_content(&name).map(|b| b.to_vec()),
            Some(expected),
            "round {round}"
        );
    }
}
