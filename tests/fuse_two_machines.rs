//! Two machines on one drive: two mounts of the same server, each with its own state directory and disk cache (as
//! two laptops have), `--poll-interval 2 --ttl 1`, racing on purpose, many rounds each:
//!
//! - both edit one file at once: every write that returned is on the server or in a conflict copy;
//! - both create one new file at once: likewise;
//! - one moves a file into a folder while the other removes that folder: no `rmdir` destroys a file.
//!
//! On the in-process server and Apache (whose weak ETags made a second writer overwrite the first without a
//! conflict copy), and for rmdir on the fake Graph server (a personal drive, whose folder cTags follow their members).
//! Every round is set up first, then the mounts wait once until both see it, so each race itself is short.

#[macro_use]
mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::graph::{store_fake_tokens, GraphDrive, GRAPH_REMOTE};
use common::mount::{eventually, Mount};
use common::servers::TestServer;
use fake_graph::{FakeGraphConfig, Flavour};

const ROUNDS: usize = 20;
/// How long uploads and the other mount's view may take to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);
const TWO_MACHINE_ARGS: [&str; 4] = ["--poll-interval", "2", "--ttl", "1"];

/// Two mounts of one WebDAV URL, each with its own state and disk cache (Mount::start makes them).
fn two_mounts(url: &str) -> (Mount, Mount) {
    (
        Mount::start(url, &TWO_MACHINE_ARGS),
        Mount::start(url, &TWO_MACHINE_ARGS),
    )
}

/// Run `a` and `b` on two threads released together; returns what each returned.
fn race<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce(&Barrier) -> RA + Send + 'static,
    B: FnOnce(&Barrier) -> RB + Send + 'static,
    RA: Send + 'static,
    RB: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let (ba, bb) = (barrier.clone(), barrier);
    let ta = thread::spawn(move || a(&ba));
    let tb = thread::spawn(move || b(&bb));
    (ta.join().expect("thread a"), tb.join().expect("thread b"))
}

/// Open `path` for writing (truncating; creating when `create`), wait at `barrier` until the other writer has opened
/// too, then write `data` and close. Both writers therefore start from the same version: whatever each close
/// uploads is a concurrent edit of it.
fn write_after_both_opened(path: PathBuf, data: Vec<u8>, create: bool, barrier: &Barrier) -> std::io::Result<()> {
    let opened = OpenOptions::new().write(true).truncate(true).create(create).open(&path);
    barrier.wait();
    let mut f = opened?;
    f.write_all(&data)?;
    drop(f);
    Ok(())
}

/// The contents of `name` and of its conflict copies (`name (conflict …)`) in server folder `dir`.
fn versions_on_server(dir: &Path, name: &str) -> Vec<Vec<u8>> {
    let stem = Path::new(name).file_stem().unwrap().to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == name || n.starts_with(&format!("{stem} (conflict"))
        })
        .filter_map(|e| fs::read(e.path()).ok())
        .collect()
}

/// Every write that returned must end up on the server, as the file or as a conflict copy of it.
fn assert_every_write_kept(server_dir: &Path, name: &str, written: &[(&str, Vec<u8>, std::io::Result<()>)]) {
    for (who, data, result) in written {
        if result.is_err() {
            continue;
        }
        let end = std::time::Instant::now() + SETTLE;
        while !versions_on_server(server_dir, name).contains(data) {
            let there: Vec<String> = versions_on_server(server_dir, name)
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            assert!(
                std::time::Instant::now() < end,
                "{who}'s write of {name} ({:?}) is neither on the server nor in a conflict copy after {SETTLE:?}; \
                 there: {there:?}",
                String::from_utf8_lossy(data)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Both mounts rewrite one file they both read, at once: neither version may vanish.
fn simultaneous_edits_keep_both_versions(server: &dyn TestServer) {
    let (a, b) = two_mounts(&server.url());
    fs::create_dir(a.path().join("r")).unwrap();
    for i in 0..ROUNDS {
        fs::write(a.path().join(format!("r/f{i}.txt")), format!("base {i}\n")).unwrap();
    }
    for i in 0..ROUNDS {
        let (on_server, on_b) = (
            server.root().join(format!("r/f{i}.txt")),
            b.path().join(format!("r/f{i}.txt")),
        );
        let base = format!("base {i}\n").into_bytes();
        eventually(SETTLE, &format!("f{i} is on the server and B reads it"), || {
            fs::read(&on_server).ok().as_ref() == Some(&base) && fs::read(&on_b).ok().as_ref() == Some(&base)
        });
    }
    for i in 0..ROUNDS {
        let name = format!("f{i}.txt");
        let (pa, pb) = (a.path().join("r").join(&name), b.path().join("r").join(&name));
        let (da, db) = (format!("A {i}\n").into_bytes(), format!("B longer {i}\n").into_bytes());
        let (ra, rb) = {
            let (da, db) = (da.clone(), db.clone());
            race(
                move |bar| write_after_both_opened(pa, da, false, bar),
                move |bar| write_after_both_opened(pb, db, false, bar),
            )
        };
        assert_every_write_kept(&server.root().join("r"), &name, &[("A", da, ra), ("B", db, rb)]);
    }
    a.unmount();
    b.unmount();
}

/// Both mounts create one new file in one folder at once: both contents stay.
fn simultaneous_creates_keep_both_files(server: &dyn TestServer) {
    let (a, b) = two_mounts(&server.url());
    fs::create_dir(a.path().join("dir")).unwrap();
    eventually(SETTLE, "B sees dir", || b.path().join("dir").is_dir());
    for i in 0..ROUNDS {
        let name = format!("x{i}.txt");
        let (pa, pb) = (a.path().join("dir").join(&name), b.path().join("dir").join(&name));
        let (da, db) = (
            format!("from A {i}\n").into_bytes(),
            format!("from B, longer {i}\n").into_bytes(),
        );
        let (ra, rb) = {
            let (da, db) = (da.clone(), db.clone());
            race(
                move |bar| write_after_both_opened(pa, da, true, bar),
                move |bar| write_after_both_opened(pb, db, true, bar),
            )
        };
        assert_every_write_kept(&server.root().join("dir"), &name, &[("A", da, ra), ("B", db, rb)]);
    }
    a.unmount();
    b.unmount();
}

/// A moves `p{i}` into folder `t{i}` while B removes `t{i}`: whatever each call answers, `p{i}` still exists on
/// the server (where it was, or in `t{i}`), with its content. `read` gives the server's content of a path.
fn rmdir_races_a_move_in(a: &Mount, b: &Mount, read: &dyn Fn(&str) -> Option<Vec<u8>>) {
    for i in 0..ROUNDS {
        fs::create_dir(a.path().join(format!("t{i}"))).unwrap();
        fs::write(a.path().join(format!("p{i}")), format!("moved file {i}\n")).unwrap();
    }
    for i in 0..ROUNDS {
        let want = format!("moved file {i}\n").into_bytes();
        eventually(SETTLE, &format!("p{i} is on the server and B sees t{i}"), || {
            read(&format!("p{i}")).as_ref() == Some(&want) && b.path().join(format!("t{i}")).is_dir()
        });
    }
    let mut outcomes = Vec::new();
    for i in 0..ROUNDS {
        let (from, to) = (a.path().join(format!("p{i}")), a.path().join(format!("t{i}/p{i}")));
        let gone = b.path().join(format!("t{i}"));
        let (mv, rmdir) = race(
            move |bar| {
                bar.wait();
                fs::rename(from, to)
            },
            move |bar| {
                bar.wait();
                fs::remove_dir(gone)
            },
        );
        let want = format!("moved file {i}\n").into_bytes();
        let where_now = [format!("p{i}"), format!("t{i}/p{i}")];
        eventually(SETTLE, &format!("p{i} survives (mv: {mv:?}, rmdir: {rmdir:?})"), || {
            where_now.iter().any(|p| read(p).as_ref() == Some(&want))
        });
        outcomes.push((mv.is_ok(), rmdir.is_ok()));
    }
    eprintln!("(mv ok, rmdir ok) per round: {outcomes:?}");
}

fn rmdir_never_destroys_a_moved_in_file(server: &dyn TestServer) {
    let (a, b) = two_mounts(&server.url());
    let root = server.root().to_path_buf();
    rmdir_races_a_move_in(&a, &b, &|p| fs::read(root.join(p)).ok());
    a.unmount();
    b.unmount();
}

on_both_servers!(
    dav_server,
    apache,
    start(),
    [
        simultaneous_edits_keep_both_versions,
        simultaneous_creates_keep_both_files,
        rmdir_never_destroys_a_moved_in_file,
    ]
);

/// The rmdir race on OneDrive (the fake Graph server, personal drive): two mounts, each with its own state dir.
#[test]
fn graph_rmdir_never_destroys_a_moved_in_file() {
    let drive = GraphDrive::with(FakeGraphConfig::for_flavour(Flavour::Personal));
    let a = drive.mount(&TWO_MACHINE_ARGS);
    let other_state = drive.dir.path().join("state-b");
    store_fake_tokens(&drive.g, &other_state, GRAPH_REMOTE);
    let config = drive.config();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        other_state.to_str().unwrap(),
    ];
    args.extend_from_slice(&TWO_MACHINE_ARGS);
    let b = Mount::start(GRAPH_REMOTE, &args);
    let handle = drive.drive();
    rmdir_races_a_move_in(&a, &b, &|p| handle.file_bytes(p).map(|b| b.to_vec()));
    a.unmount();
    b.unmount();
}
