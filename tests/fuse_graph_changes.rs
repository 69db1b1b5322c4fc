//! Issue 7 for OneDrive: changes made on the server show up in a live mount of the fake Graph drive
//! (`crates/fake-graph`) without a remount. Every check mounts with a 1 s poll interval and a 60 s TTL, so
//! only the delta poller (and the kernel invalidations it sends) can explain what the mount shows; a
//! process holds the parent folder open the whole time. Each change must be seen by `stat`, `cat` and `ls`
//! within 30 s. Server-side changes go through the fake's drive handle, as another device would make them.
//!
//! Beyond the plain cases: a `410 Gone` on delta, a round failing mid-paging, the delta position kept
//! across a remount, and a local edit in flight meeting a server change (a conflict copy).
//!
//! `CLOUDMOUNT_TEST_POLL_INTERVAL=1000` mounts with that poll interval instead, to show that the checks
//! fail without the poller.

#[macro_use]
mod common;

use std::fs::{self};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::files::random_bytes;
use common::mount::{within, Mount};
use common::seen::{eventually, hold_open, ls, shows_file, shows_no_file, stat_size, wait_for};
use fake_graph::{DriveHandle, FakeGraph, FakeGraphConfig, RouteClass};

/// Bound of one look through the mount.
const QUICK: Duration = Duration::from_secs(20);
const REMOTE: &str = "work";

/// A fake Graph server plus a config file and a state directory naming it, signed in.
struct Fixture {
    g: FakeGraph,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let g = FakeGraph::spawn(FakeGraphConfig::default()).expect("start the fake Graph server");
        let dir = tempfile::tempdir().expect("temp dir");
        let fx = Fixture { g, dir };
        fs::write(
            fx.config(),
            format!(
                "[remotes.{REMOTE}]\ntype = \"onedrive\"\ngraph_url = \"{}\"\nlogin_url = \"{}\"\nclient_id = \"{}\"\n",
                fx.g.graph_url(),
                fx.g.login_url(),
                fx.g.client_id()
            ),
        )
        .unwrap();
        fx.sign_in();
        fx
    }

    fn drive(&self) -> DriveHandle {
        self.g.drive()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Stores a delegated token pair issued by the fake, as `cloudmount login` would.
    fn sign_in(&self) {
        common::graph::store_fake_tokens(&self.g, &self.state(), REMOTE);
    }

    /// A mount with a 1 s poll interval and a 60 s TTL, plus `extra` flags.
    fn mount(&self, extra: &[&str]) -> Mount {
        let poll = std::env::var("CLOUDMOUNT_TEST_POLL_INTERVAL").unwrap_or_else(|_| "1".into());
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config().to_str().unwrap().into(),
            "--state-dir".into(),
            self.state().to_str().unwrap().into(),
            "--poll-interval".into(),
            poll,
            "--ttl".into(),
            "60".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Mount::start(REMOTE, &args)
    }

    /// The delta requests the fake has logged, oldest first: (kind of token, status).
    fn delta_log(&self) -> Vec<(Token, u16)> {
        self.g
            .stats()
            .recent_of(RouteClass::Delta)
            .iter()
            .map(|r| (token_kind(&r.path), r.status))
            .collect()
    }
}

/// What a delta request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// No token: a full enumeration.
    None,
    /// A deltaLink token: the changes since a finished round.
    Delta,
    /// A nextLink token: a later page of a round.
    Page,
    Other,
}

/// The fake's tokens are unpadded URL-safe base64 of `d.…` (deltaLink) or `n.…` (nextLink), which encode
/// to `ZC…` and `bi…`.
fn token_kind(path: &str) -> Token {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    match query.split('&').find_map(|kv| kv.strip_prefix("token=")) {
        None => Token::None,
        Some(t) if t.starts_with("ZC") => Token::Delta,
        Some(t) if t.starts_with("bi") => Token::Page,
        Some(_) => Token::Other,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The plain cases
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_file_that_grows_is_seen() {
    let fx = Fixture::new();
    let small = random_bytes(1, 10_000);
    fx.drive().put_file("/dir/grows.bin", small.clone()).unwrap();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first version", || shows_file(&dir, "grows.bin", &small));

    let big = random_bytes(2, 300_000);
    fx.drive().put_file("/dir/grows.bin", big.clone()).unwrap();
    eventually(&m, "the grown file", || shows_file(&dir, "grows.bin", &big));
    drop(held);
    m.unmount();
}

#[test]
fn a_same_size_change_is_seen() {
    let fx = Fixture::new();
    let (old, new) = (random_bytes(3, 100_000), random_bytes(4, 100_000));
    let ago = |secs| Some(SystemTime::now() - Duration::from_secs(secs));
    // Distinct modification times, as two saves by another device have: business delta records
    // carry no cTag, and a same-size change within the same second as the last is not told apart.
    fx.drive()
        .put_file_with_mtime("/dir/same.bin", old.clone(), ago(60))
        .unwrap();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first version", || shows_file(&dir, "same.bin", &old));
    // Read twice so that both our block cache and the kernel's page cache hold the old bytes.
    eventually(&m, "the first version again", || shows_file(&dir, "same.bin", &old));

    fx.drive()
        .put_file_with_mtime("/dir/same.bin", new.clone(), ago(50))
        .unwrap();
    eventually(&m, "the same-size rewrite", || shows_file(&dir, "same.bin", &new));
    drop(held);
    m.unmount();
}

#[test]
fn renames_moves_and_deletes_are_seen() {
    let fx = Fixture::new();
    let (a, b, c) = (b"renamed".to_vec(), b"moved away".to_vec(), b"deleted".to_vec());
    let d = fx.drive();
    d.put_file("/dir/a.txt", a.clone()).unwrap();
    d.put_file("/dir/b.txt", b.clone()).unwrap();
    d.put_file("/dir/c.txt", c.clone()).unwrap();
    d.mkdir("/other").unwrap();
    let m = fx.mount(&[]);
    let (dir, other) = (m.path().join("dir"), m.path().join("other"));
    let held = hold_open(&dir);
    for (name, data) in [("a.txt", &a), ("b.txt", &b), ("c.txt", &c)] {
        eventually(&m, "the first state", || shows_file(&dir, name, data));
    }
    eventually(&m, "the empty folder", || {
        ls(&other).is_empty().then_some(()).ok_or("other/ is not empty".into())
    });

    d.rename("/dir/a.txt", "/dir/a2.txt").unwrap();
    d.rename("/dir/b.txt", "/other/b.txt").unwrap();
    d.remove("/dir/c.txt").unwrap();

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

#[test]
fn a_new_folder_tree_is_seen() {
    let fx = Fixture::new();
    fx.drive().put_file("/dir/existing.txt", &b"here before"[..]).unwrap();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first state", || {
        shows_file(&dir, "existing.txt", b"here before")
    });
    // Names looked up before they exist leave negative entries in the kernel (60 s TTL).
    assert_eq!(stat_size(&dir.join("tree")), None);

    fx.drive().mkdir("/dir/tree/sub/deeper").unwrap();
    fx.drive().put_file("/dir/tree/top.txt", &b"top"[..]).unwrap();
    fx.drive()
        .put_file("/dir/tree/sub/deeper/leaf.txt", &b"leaf of the tree"[..])
        .unwrap();

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

// ---------------------------------------------------------------------------------------------------------------
// When delta goes wrong
// ---------------------------------------------------------------------------------------------------------------

/// A `410 Gone` on delta: the mount enumerates the drive again and shows the current tree, including a
/// delete and a rename made just before the 410 (which only the full enumeration can tell about) and a
/// file created after it.
#[test]
fn after_a_410_the_mount_shows_the_current_tree() {
    let fx = Fixture::new();
    let d = fx.drive();
    d.put_file("/dir/keep.txt", &b"old content"[..]).unwrap();
    d.put_file("/dir/gone.txt", &b"deleted around the 410"[..]).unwrap();
    d.put_file("/dir/old-name.txt", &b"renamed around the 410"[..]).unwrap();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first state", || {
        shows_file(&dir, "keep.txt", b"old content")?;
        shows_file(&dir, "gone.txt", b"deleted around the 410")?;
        shows_file(&dir, "old-name.txt", b"renamed around the 410")
    });
    wait_for(&m, "a first delta round", || {
        fx.delta_log().iter().any(|(_, s)| *s == 200)
    });

    fx.g.faults().delta_resync_next();
    d.remove("/dir/gone.txt").unwrap();
    d.rename("/dir/old-name.txt", "/dir/new-name.txt").unwrap();
    d.put_file("/dir/keep.txt", &b"new content, longer"[..]).unwrap();
    wait_for(&m, "the fake to answer 410 to a delta request", || {
        fx.delta_log().iter().any(|(_, s)| *s == 410)
    });
    d.put_file("/dir/after.txt", &b"created after the 410"[..]).unwrap();

    eventually(&m, "the tree after the 410", || {
        shows_no_file(&dir, "gone.txt")?;
        shows_no_file(&dir, "old-name.txt")?;
        shows_file(&dir, "new-name.txt", b"renamed around the 410")?;
        shows_file(&dir, "keep.txt", b"new content, longer")?;
        shows_file(&dir, "after.txt", b"created after the 410")
    });
    assert!(
        fx.delta_log().iter().any(|(t, s)| *t == Token::None && *s == 200),
        "no full enumeration after the 410: {:?}",
        fx.delta_log()
    );
    drop(held);
    m.unmount();
}

/// A round that fails mid-paging (5xx on every later page) applies nothing and keeps its position: its
/// changes, spread over several pages, all show up once the fault clears.
#[test]
fn a_round_failing_mid_paging_loses_no_changes() {
    let fx = Fixture::new();
    let d = fx.drive();
    d.put_file("/dir/a.txt", &b"renamed in the failing round"[..]).unwrap();
    d.put_file("/dir/b.txt", &b"deleted in the failing round"[..]).unwrap();
    // A short deadline, so that a failing page gives up its retries (and fails the round) quickly.
    let m = fx.mount(&["--timeout", "5"]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first state", || {
        shows_file(&dir, "a.txt", b"renamed in the failing round")?;
        shows_file(&dir, "b.txt", b"deleted in the failing round")
    });
    wait_for(&m, "a first delta round", || {
        fx.delta_log().iter().any(|(_, s)| *s == 200)
    });

    // Delta pages hold 200 records: 450 new files make a round of three pages, the rename and the
    // delete among them (deletions come last, on the last page).
    fx.g.faults().fail_next_delta_pages(u32::MAX, 503);
    for i in 0..450 {
        d.put_file(&format!("/bulk/f{i:03}.txt"), format!("bulk file {i}"))
            .unwrap();
    }
    d.rename("/dir/a.txt", "/dir/a2.txt").unwrap();
    d.remove("/dir/b.txt").unwrap();
    // A whole round failed: a page was refused, and a later round started over from the stored position.
    wait_for(&m, "a round to fail mid-paging and the next one to start", || {
        let log = fx.delta_log();
        let failed = log.iter().position(|(t, s)| *t == Token::Page && *s >= 500);
        failed.is_some_and(|i| log[i + 1..].iter().any(|(t, _)| *t == Token::Delta))
    });
    assert!(
        ls(&dir).iter().any(|n| n == "b.txt"),
        "a failed round changed the mount"
    );
    fx.g.faults().clear();

    let bulk = m.path().join("bulk");
    eventually(&m, "the changes of the failed round", || {
        shows_no_file(&dir, "a.txt")?;
        shows_file(&dir, "a2.txt", b"renamed in the failing round")?;
        shows_no_file(&dir, "b.txt")?;
        let names = ls(&bulk);
        if names.len() != 450 {
            return Err(format!("ls bulk shows {} files, want 450", names.len()));
        }
        shows_file(&bulk, "f000.txt", b"bulk file 0")?;
        shows_file(&bulk, "f449.txt", b"bulk file 449")
    });
    drop(held);
    m.unmount();
}

/// The delta position is kept under the state directory: after a remount the first round continues from
/// the stored deltaLink (no full enumeration), and the change made while unmounted shows up.
#[test]
fn a_remount_continues_from_the_stored_delta_position() {
    let fx = Fixture::new();
    let d = fx.drive();
    for i in 0..250 {
        d.put_file(&format!("/many/f{i:03}.txt"), format!("{i}")).unwrap();
    }
    d.put_file("/dir/a.txt", &b"first"[..]).unwrap();
    let m = fx.mount(&[]);
    wait_for(&m, "a first delta round", || {
        fx.delta_log().iter().any(|(t, s)| *t == Token::Delta && *s == 200)
    });
    // `<state>/changes/<remote key>/delta-<drive>`
    let stored = fs::read_dir(fx.state().join("changes"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|remote| fs::read_dir(remote.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("delta-"));
    assert!(
        stored,
        "no delta position under {}",
        fx.state().join("changes").display()
    );
    m.unmount();

    d.put_file("/dir/while-unmounted.txt", &b"made while unmounted"[..])
        .unwrap();
    fx.g.reset_stats();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    wait_for(&m, "the first delta round of the remount", || {
        fx.delta_log().iter().any(|(_, s)| *s == 200)
    });
    let log = fx.delta_log();
    assert_eq!(
        log.first().map(|(t, _)| *t),
        Some(Token::Delta),
        "the remount's first delta request does not carry the stored deltaLink: {log:?}"
    );
    assert!(
        !log.iter().any(|(t, _)| *t == Token::None),
        "the remount enumerated the whole drive: {log:?}"
    );

    d.put_file("/dir/after-remount.txt", &b"made after the remount"[..])
        .unwrap();
    eventually(&m, "the changes", || {
        shows_file(&dir, "while-unmounted.txt", b"made while unmounted")?;
        shows_file(&dir, "after-remount.txt", b"made after the remount")
    });
    let log = fx.delta_log();
    assert!(
        !log.iter().any(|(t, _)| *t == Token::None),
        "the remount enumerated the whole drive: {log:?}"
    );
    drop(held);
    m.unmount();
}

/// A file being written through the mount (its upload still owed) and changed on the server: the mount
/// keeps showing the local edit while it is in flight, and afterwards both versions are in the folder,
/// the server's under the name and ours as a conflict copy.
#[test]
fn a_local_edit_in_flight_and_a_server_change_give_a_conflict_copy() {
    let fx = Fixture::new();
    let d = fx.drive();
    d.put_file("/dir/x.txt", &b"original"[..]).unwrap();
    let m = fx.mount(&[]);
    let dir = m.path().join("dir");
    let held = hold_open(&dir);
    eventually(&m, "the first state", || shows_file(&dir, "x.txt", b"original"));

    let p = dir.join("x.txt");
    let writer = within(QUICK, "writing x.txt locally", move || {
        let mut f = fs::OpenOptions::new().write(true).truncate(true).open(&p)?;
        f.write_all(b"local edit")?;
        std::io::Result::Ok(f)
    })
    .expect("write through the mount");

    let remote = b"remote change, longer".to_vec();
    d.put_file("/dir/x.txt", remote.clone()).unwrap();
    // Two rounds that started after the change have finished: the poller has seen it.
    let seen = fx.delta_log().len();
    wait_for(&m, "two delta rounds after the server change", || {
        fx.delta_log()[seen..]
            .iter()
            .filter(|(t, s)| *t != Token::Page && *s == 200)
            .count()
            >= 2
    });
    shows_file(&dir, "x.txt", b"local edit").expect("the local edit in flight wins in the mount");

    within(QUICK, "closing x.txt", move || drop(writer));
    let mut copy = String::new();
    eventually(&m, "both versions", || {
        let copies: Vec<String> = ls(&dir)
            .into_iter()
            .filter(|n| n.starts_with("x (conflict ") && n.ends_with(").txt"))
            .collect();
        match &copies[..] {
            [one] => copy = one.clone(),
            [] => return Err("no conflict copy listed".into()),
            many => panic!("one edit made {} conflict copies: {many:?}", many.len()),
        }
        shows_file(&dir, &copy, b"local edit")?;
        shows_file(&dir, "x.txt", &remote)
    });
    assert_eq!(d.file_bytes("/dir/x.txt").unwrap().as_ref(), &remote[..]);
    assert_eq!(d.list("/dir").len(), 2, "{:?}", d.list("/dir"));
    assert_eq!(d.file_bytes(&format!("/dir/{copy}")).unwrap().as_ref(), b"local edit");
    drop(held);
    m.unmount();
}
