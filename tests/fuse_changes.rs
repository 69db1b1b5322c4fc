//! Issue 7: changes made on the server show up in a live mount without a remount. Every check mounts with a 1 s
//! poll interval and a 60 s TTL, so only the change poller (and the kernel invalidations it sends) can explain what
//! the mount shows; a process holds the parent folder open the whole time. Each change must be seen by `stat`,
//! `cat` and `ls` within 30 s.

#[macro_use]
mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::{put_dir, put_file, random_bytes, set_mtime_ago};
use common::mount::{run, within, Mount};
use common::servers::TestServer;

/// How long a change may take to show.
const SEEN_WITHIN: Duration = Duration::from_secs(30);
/// Bound of one look through the mount.
const QUICK: Duration = Duration::from_secs(20);

on_both_servers!(
    dav_server,
    apache,
    start(),
    [
        a_file_that_grows_is_seen,
        a_same_size_change_is_seen,
        renames_moves_and_deletes_are_seen,
        a_new_folder_tree_is_seen,
    ]
);

fn mount(server: &dyn TestServer) -> Mount {
    Mount::start(&server.url(), &["--poll-interval", "1", "--ttl", "60"])
}

/// Keeps `dir` open (a directory handle in the mount) until dropped.
fn hold_open(dir: &Path) -> File {
    let d = dir.to_path_buf();
    within(QUICK, "opening the parent folder", move || File::open(&d)).expect("open the parent folder")
}

/// `stat` through the mount: `Some(size)`, or `None` when the name does not exist.
fn stat_size(p: &Path) -> Option<u64> {
    let p = p.to_path_buf();
    within(QUICK, &format!("stat {}", p.display()), move || {
        match fs::metadata(&p) {
            Ok(m) => Some(m.len()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => panic!("stat {}: {e}", p.display()),
        }
    })
}

/// `cat` through the mount: `Some(bytes)`, or `None` when it fails.
fn cat(p: &Path) -> Option<Vec<u8>> {
    let f = run(Command::new("cat").arg(p), QUICK);
    f.status.success().then_some(f.stdout)
}

/// `ls -1A` through the mount.
fn ls(dir: &Path) -> Vec<String> {
    let f = run(Command::new("ls").arg("-1A").arg(dir).env("LC_ALL", "C"), QUICK);
    assert!(f.status.success(), "ls {} failed: {}", dir.display(), f.both());
    f.stdout_text().lines().map(str::to_string).collect()
}

/// Polls `check` until it returns `Ok`, failing with its last complaint (and the daemon's log) after 30 s.
fn eventually(m: &Mount, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if start.elapsed() > SEEN_WITHIN => {
                panic!(
                    "{what}: not seen within {SEEN_WITHIN:?}: {why}\ndaemon log:\n{}",
                    m.log()
                )
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `stat`, `cat` and `ls` all show `name` in `dir` with content `data`.
fn shows_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let p = dir.join(name);
    match stat_size(&p) {
        Some(n) if n == data.len() as u64 => {}
        other => return Err(format!("stat {name}: size {other:?}, want {}", data.len())),
    }
    match cat(&p) {
        Some(d) if d == data => {}
        Some(d) => return Err(format!("cat {name}: {} bytes, not the server's content", d.len())),
        None => return Err(format!("cat {name} failed")),
    }
    if !ls(dir).iter().any(|n| n == name) {
        return Err(format!("ls does not list {name}"));
    }
    Ok(())
}

/// `stat`, `cat` and `ls` all agree that `name` is not in `dir`.
fn shows_no_file(dir: &Path, name: &str) -> Result<(), String> {
    let p = dir.join(name);
    if let Some(n) = stat_size(&p) {
        return Err(format!("stat {name} still finds it ({n} bytes)"));
    }
    if cat(&p).is_some() {
        return Err(format!("cat {name} still reads it"));
    }
    if ls(dir).iter().any(|n| n == name) {
        return Err(format!("ls still lists {name}"));
    }
    Ok(())
}

/// Writes `data` to `rel` on the server, with its mtime `ago` seconds in the past (so every server's ETag moves).
fn server_write(server: &dyn TestServer, rel: &str, data: &[u8], ago: u64) -> PathBuf {
    let p = put_file(server.root(), rel, data);
    set_mtime_ago(&p, ago);
    p
}

fn a_file_that_grows_is_seen(server: &dyn TestServer) {
    let small = random_bytes(1, 10_000);
    server_write(server, "dir/grows.bin", &small, 60);
    let m = mount(server);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first version", || shows_file(&dir, "grows.bin", &small));

    let big = random_bytes(2, 300_000);
    server_write(server, "dir/grows.bin", &big, 50);
    eventually(&m, "the grown file", || shows_file(&dir, "grows.bin", &big));
    drop(held);
    m.unmount();
}

fn a_same_size_change_is_seen(server: &dyn TestServer) {
    let (old, new) = (random_bytes(3, 100_000), random_bytes(4, 100_000));
    server_write(server, "dir/same.bin", &old, 60);
    let m = mount(server);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first version", || shows_file(&dir, "same.bin", &old));
    // Read twice so that both our block cache and the kernel's page cache hold the old bytes.
    eventually(&m, "the first version again", || shows_file(&dir, "same.bin", &old));

    server_write(server, "dir/same.bin", &new, 50);
    eventually(&m, "the same-size rewrite", || shows_file(&dir, "same.bin", &new));
    drop(held);
    m.unmount();
}

fn renames_moves_and_deletes_are_seen(server: &dyn TestServer) {
    let (a, b, c) = (b"renamed".to_vec(), b"moved away".to_vec(), b"deleted".to_vec());
    server_write(server, "dir/a.txt", &a, 60);
    server_write(server, "dir/b.txt", &b, 60);
    server_write(server, "dir/c.txt", &c, 60);
    put_dir(server.root(), "other");
    let m = mount(server);
    let (dir, other) = (m.path().join("dir"), m.path().join("other"));
    let held = hold_open(&dir);
    for (name, data) in [("a.txt", &a), ("b.txt", &b), ("c.txt", &c)] {
        eventually(&m, "the first state", || shows_file(&dir, name, data));
    }
    eventually(&m, "the empty folder", || {
        ls(&other).is_empty().then_some(()).ok_or("other/ is not empty".into())
    });

    let root = server.root();
    fs::rename(root.join("dir/a.txt"), root.join("dir/a2.txt")).unwrap();
    fs::rename(root.join("dir/b.txt"), root.join("other/b.txt")).unwrap();
    fs::remove_file(root.join("dir/c.txt")).unwrap();

    eventually(&m, "the rename", || {
        shows_no_file(&dir, "a.txt")?;
        shows_file(&dir, "a2.txt", &a)
    });
    eventually(&m, "the move", || {
        shows_no_file(&dir, "b.txt")?;
        shows_file(&other, "b.txt", &b)
    });
    eventually(&m, "the delete", || shows_no_file(&dir, "c.txt"));
    drop(held);
    m.unmount();
}

fn a_new_folder_tree_is_seen(server: &dyn TestServer) {
    server_write(server, "dir/existing.txt", b"here before", 60);
    let m = mount(server);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first state", || {
        shows_file(&dir, "existing.txt", b"here before")
    });
    // Names looked up before they exist leave negative entries in the kernel (60 s TTL).
    assert_eq!(stat_size(&dir.join("tree")), None);

    put_dir(server.root(), "dir/tree/sub/deeper");
    server_write(server, "dir/tree/top.txt", b"top", 60);
    server_write(server, "dir/tree/sub/deeper/leaf.txt", b"leaf of the tree", 60);

    eventually(&m, "the new tree", || {
        if !ls(&dir).iter().any(|n| n == "tree") {
            return Err("ls does not list tree".into());
        }
        if stat_size(&dir.join("tree")).is_none() {
            return Err("stat does not find tree".into());
        }
        shows_file(&dir.join("tree"), "top.txt", b"top")?;
        shows_file(&dir.join("tree/sub/deeper"), "leaf.txt", b"leaf of the tree")
    });
    drop(held);
    m.unmount();
}
