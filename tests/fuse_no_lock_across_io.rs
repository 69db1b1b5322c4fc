//! No lock is held across network or disk I/O (issue 17 item 1): slow work on one file never
//! stops the rest of the mount. Opening a large file read-write without `O_TRUNC` downloads it
//! into a staged copy first; while that download crawls through a slow link, other files are
//! written, closed, synced and listed as usual.
//!
//! The checks are ordering-based, not timing-based: the big open is seen to be still in progress
//! (its download under way, the call not returned) while the other operations complete. Every
//! filesystem call is bounded, so a mount that blocks fails instead of hanging.

#[macro_use]
mod common;

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::dav::DavServer;
use common::mount::{eventually, within, Mount};
use common::relay::Relay;

/// Bound of each operation that must not wait for the big download (which, at the relay's rate,
/// takes minutes).
const LIMIT: Duration = Duration::from_secs(30);

fn addr_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    format!("127.0.0.1:{}", u.port().unwrap()).parse().unwrap()
}

/// While one thread opens a 1 GiB file read-write (the mount downloads it first, through a
/// 4 MiB/s link), a write and close of another file, its fsync and an `ls` of the folder complete,
/// and the big open is still in progress when they have.
#[test]
fn a_slow_read_write_open_does_not_stop_other_writers() {
    let server = DavServer::start();
    fs::create_dir(server.root().join("d")).unwrap();
    // Sparse: costs the server's disk nothing.
    let big = fs::File::create(server.root().join("d/big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    fs::write(server.root().join("d/small.txt"), b"old\n").unwrap();
    let relay = Relay::start(addr_of(&server.url()), 4 << 20);
    let m = Mount::start(&relay.url_for(&server.url()), &[]);
    let dir = m.path().join("d");
    // Listed once before, so the later `ls` needs the mount, not only its cache.
    let names = within(LIMIT, "first ls", {
        let dir = dir.clone();
        move || fs::read_dir(dir).unwrap().count()
    });
    assert_eq!(names, 2);

    server.reset_counters();
    let opened = Arc::new(AtomicBool::new(false));
    let opener = {
        let (path, opened) = (dir.join("big.bin"), opened.clone());
        thread::spawn(move || {
            let r = fs::OpenOptions::new().read(true).write(true).open(path);
            opened.store(true, Ordering::SeqCst);
            r.map(|_| ())
        })
    };
    // The open is downloading (holding whatever it holds while it does).
    eventually(LIMIT, "the big file's download starts", || server.get_body_bytes() > 0);
    assert!(
        !opened.load(Ordering::SeqCst),
        "a 1 GiB open through 4 MiB/s cannot be done yet"
    );

    within(LIMIT, "write, close and fsync of another file", {
        let path = dir.join("small.txt");
        move || {
            let mut f = fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
            f.write_all(b"new\n").unwrap();
            f.sync_all().unwrap();
            drop(f);
            let mut g = fs::File::create(path.with_file_name("fresh.txt")).unwrap();
            g.write_all(b"fresh\n").unwrap();
        }
    });
    let listed = within(LIMIT, "ls of the folder", {
        let dir = dir.clone();
        move || {
            let mut names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    });
    assert_eq!(listed, ["big.bin", "fresh.txt", "small.txt"]);
    assert_eq!(
        within(LIMIT, "read back", {
            let path = dir.join("small.txt");
            move || fs::read(path).unwrap()
        }),
        b"new\n"
    );
    // Ordering, not timing: all of the above finished while the big open still had not.
    assert!(
        !opened.load(Ordering::SeqCst),
        "the big open finished first: the test proved nothing"
    );
    assert_eq!(fs::read(server.root().join("d/small.txt")).unwrap(), b"new\n");

    // End the download: the open fails (the link is gone) or the unmount releases it.
    relay.cut();
    drop(m);
    let _ = within(LIMIT, "the big open returns once the link is cut", move || {
        opener.join()
    });
}
