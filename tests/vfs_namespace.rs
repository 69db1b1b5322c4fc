//! The inode table's cost, driven through the filesystem core against the in-memory remote:
//! work is counted (nodes and listing entries the table copies or visits), not timed, so the
//! check holds on a loaded machine.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::memory::MemoryRemote;
use cloudmount::vfs::writeback::queue::QueueConfig;
use cloudmount::vfs::writeback::WriteBackPaths;
use cloudmount::vfs::{DriveFs, FsConfig};

const FILES: usize = 10_000;
const BATCH: usize = 1_000;

/// Filling a listed folder with files costs the same per file at the end as at the start: the
/// table neither copies the folder's listing nor walks every node on each create (it did, which
/// made filling a folder with N files cost N² and held every other operation back meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_files_in_a_listed_folder_costs_the_same_at_any_size() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_dir("big");
    remote.put_file("big/already-there.txt", &b"x"[..]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = FsConfig {
        read_only: false,
        // The folder stays listed (fresh) for the whole test.
        attr_ttl: Duration::from_secs(3600),
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    let paths = WriteBackPaths {
        journal: dir.path().join("journal"),
        staging: dir.path().join("staging"),
        min_free_bytes: 0,
    };
    let queue = QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    fs.enable_writes(&paths, queue).unwrap();
    let big = fs.lookup(1, OsStr::new("big")).await.unwrap().attr.ino;
    let dh = fs.opendir(big).await.unwrap();
    fs.releasedir(dh);

    let mut per_batch = Vec::new();
    for batch in 0..FILES / BATCH {
        let before = fs.namespace_work();
        for i in 0..BATCH {
            let name = format!("file-{batch:02}-{i:04}.txt");
            let (looked, opened) = fs
                .create(big, OsStr::new(&name), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
                .await
                .unwrap();
            fs.write(opened.fh, 0, name.as_bytes()).await.unwrap();
            fs.release(opened.fh).await.unwrap();
            fs.forget(looked.attr.ino, 1);
        }
        // Each batch's uploads land within it (their landing updates the table too).
        let left = fs.upload_queue().unwrap().drain(Duration::from_secs(120)).await;
        assert!(left.is_empty(), "uploads still queued: {left:?}");
        per_batch.push(fs.namespace_work() - before);
    }
    eprintln!("table work per {BATCH} creates: {per_batch:?}");
    let (first, last) = (per_batch[0], per_batch[per_batch.len() - 1]);
    assert!(
        last <= 2 * first,
        "the last {BATCH} creates cost {last}, more than twice the first {BATCH} ({first}): {per_batch:?}"
    );
    let dh = fs.opendir(big).await.unwrap();
    let mut listed = 0;
    fs.readdir(dh, 0, |_| {
        listed += 1;
        false
    })
    .unwrap();
    fs.releasedir(dh);
    assert_eq!(
        listed,
        FILES + 3,
        "every file is listed (with ., .. and the one already there)"
    );
}
