//! Issue 7: changes made on the server show up in a live mount without a remount. Every check mounts with a 1 s
//! poll interval and a 60 s TTL, so only the change poller (and the kernel invalidations it sends) can explain what
//! the mount shows; a process holds the parent folder open the whole time. Each change must be seen by `stat`,
//! `cat` and `ls` within 30 s.

#[macro_use]
mod common;

use std::fs;
use std::path::PathBuf;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::{put_dir, put_file, random_bytes, set_mtime_ago};
use common::mount::Mount;
use common::seen::{eventually, hold_open, ls, shows_file, shows_no_file, stat_size};
use common::servers::TestServer;

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
