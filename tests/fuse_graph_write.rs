//! Writes to OneDrive through real FUSE mounts of the `cloudmount` binary, against the fake Graph
//! server running in this process (issue 6): large files in aligned session fragments, fragments
//! that fail or time out, a daemon killed mid-upload, fsx, the everyday tools (cp, rsync, mv, rm,
//! truncate, edits in place) and what the user sees of conflicts, locks, a full drive and names
//! OneDrive refuses.
//!
//! The server side is read through the fake's drive handle and its request log. Every wait polls a
//! condition with a generous bound; nothing sleeps in place of an assertion.

#[macro_use]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::files::{assert_same_bytes, assert_tree, make_tree, random_bytes};
use common::graph::GraphDrive;
use common::mount::{errno, eventually, run, run_ok, three_moves, within, Mount};
use fake_graph::{FakeGraph, RouteClass};

const MIB: u64 = 1 << 20;
/// The mount's fragment size (the Graph remote's default) and the alignment Graph asks for.
const FRAGMENT: u64 = 10 * MIB;
const ALIGN: u64 = 327_680;
const QUICK: Duration = Duration::from_secs(60);
/// Bound for hundreds of MiB through a debug build on a loaded 2-core box.
const BULK: Duration = Duration::from_secs(600);

/// Waits until `server` holds (the server side of what was written), then until the mount at `m`
/// has no upload left to do. (The status file is refreshed every second, so an empty upload list
/// alone could predate the write.)
fn settled(d: &GraphDrive, m: &Mount, limit: Duration, what: &str, mut server: impl FnMut() -> bool) {
    eventually(limit, what, &mut server);
    let mut last = Vec::new();
    eventually(limit, "the upload queue to empty", || {
        last = d.status(m.path()).uploads;
        last.is_empty()
    });
}

/// Byte `i` of the patterned content: cheap, position-dependent, not periodic in a fragment.
fn pattern_at(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        *b = ((i.wrapping_mul(0x9E37_79B9) >> 7) ^ (i >> 13)) as u8;
    }
}

/// Writes `len` patterned bytes to `path` in 1 MiB chunks.
fn write_patterned(path: &Path, len: u64) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < len {
        let n = MIB.min(len - off) as usize;
        pattern_at(off, &mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    f.flush().unwrap();
}

/// The server's copy at `path` is the patterned content of `len` bytes, and its quickXorHash is the
/// one the fake's own implementation computes for that content.
fn assert_patterned_on_server(g: &FakeGraph, path: &str, len: u64) {
    let got = g.drive().file_bytes(path).expect("on the server");
    assert_eq!(got.len() as u64, len, "{path}: size on the server");
    let mut want = vec![0u8; MIB as usize];
    let mut h = fake_graph::quickxorhash::QuickXorHash::new();
    for (i, chunk) in got.chunks(MIB as usize).enumerate() {
        let w = &mut want[..chunk.len()];
        pattern_at(i as u64 * MIB, w);
        assert!(chunk == &w[..], "{path}: content differs in MiB {i}");
        h.update(w);
    }
    let item = g.drive().item_json(path).unwrap();
    assert_eq!(
        item["file"]["hashes"]["quickXorHash"].as_str(),
        Some(h.finalize().as_str()),
        "{path}: quickXorHash"
    );
}

/// Every fragment starts on a fragment boundary, and all but the last of a file are a whole
/// fragment (a multiple of 320 KiB).
fn assert_aligned(frags: &[(u64, u64, u64, u16)], size: u64) {
    assert!(!frags.is_empty(), "no fragment was sent");
    for (i, &(a, len, total, _)) in frags.iter().enumerate() {
        assert_eq!(total, size, "fragment {i}: declared size");
        assert_eq!(a % FRAGMENT, 0, "fragment {i} starts at {a}");
        if a + len < size {
            assert_eq!(len, FRAGMENT, "fragment {i}: length");
            assert_eq!(len % ALIGN, 0, "fragment {i}: aligned");
        } else {
            assert_eq!(a + len, size, "the last fragment ends the file");
        }
    }
}

fn list(path: &Path) -> Vec<String> {
    let p = path.to_path_buf();
    within(QUICK, &format!("listing {}", p.display()), move || {
        let mut names: Vec<String> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Large files: sessions, failed fragments, a daemon killed halfway
// ---------------------------------------------------------------------------------------------------------------

/// `cp` of a 300 MiB file: one upload session, 30 aligned fragments in order, every byte sent
/// once; the server's copy is identical and its quickXorHash matches.
#[test]
fn cp_of_300_mib_goes_in_aligned_session_fragments() {
    let d = GraphDrive::start();
    let size = 300 * MIB;
    let src = d.dir.path().join("big.local");
    write_patterned(&src, size);
    let m = d.mount(&[]);
    d.g.reset_stats();
    run_ok(Command::new("cp").arg(&src).arg(m.path().join("big.bin")), BULK);
    settled(&d, &m, BULK, "big.bin on the server", || d.drive().exists("/big.bin"));
    let s = d.g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1, "one session");
    assert_eq!(s.count(RouteClass::SimpleUpload), 0);
    assert_eq!(s.upload_fragment_bytes, size, "every byte sent once");
    let frags = d.g.stats().upload_fragments();
    assert_eq!(frags.len(), 30, "{frags:?}");
    assert_aligned(&frags, size);
    let starts: Vec<u64> = frags.iter().map(|f| f.0).collect();
    assert_eq!(starts, (0..30).map(|i| i * FRAGMENT).collect::<Vec<_>>(), "in order");
    assert_patterned_on_server(&d.g, "/big.bin", size);
    assert_eq!(fs::metadata(m.path().join("big.bin")).unwrap().len(), size);
    m.unmount();
}

/// A fragment answered 500, then one the server takes but never answers in time: the upload asks
/// the session where to go on each time and carries on from there in the same session; only the
/// timed-out fragment goes twice.
#[test]
fn failed_and_timed_out_fragments_resume_from_next_expected_ranges() {
    let d = GraphDrive::start();
    let size = 3 * FRAGMENT + 12_345;
    let src = d.dir.path().join("f.local");
    write_patterned(&src, size);
    let m = d.mount(&["--timeout", "5"]);
    d.g.reset_stats();
    let f = d.g.faults();
    f.fail_next(RouteClass::UploadUrl, 1, 500);
    f.stall_next_upload_fragments(1, Duration::from_secs(20));
    run_ok(Command::new("cp").arg(&src).arg(m.path().join("f.bin")), BULK);
    settled(&d, &m, BULK, "f.bin on the server", || d.drive().exists("/f.bin"));
    let s = d.g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1, "one session throughout");
    assert_eq!(
        s.upload_fragment_bytes,
        size + FRAGMENT,
        "only the timed-out fragment went twice"
    );
    let frags = d.g.stats().upload_fragments();
    assert_aligned(&frags, size);
    assert!(frags.iter().any(|f| f.3 == 500), "{frags:?}");
    let status_gets = s
        .recent_of(RouteClass::UploadUrl)
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!(status_gets >= 2, "asked the session after each failure ({status_gets})");
    assert_patterned_on_server(&d.g, "/f.bin", size);
    m.unmount();
}

/// kill -9 of the daemon halfway through a 200 MiB upload; a new daemon with the same state
/// directory carries on in the same session from where the server is, and the file arrives intact.
#[test]
fn kill_9_halfway_through_200_mib_resumes_the_same_session() {
    let d = GraphDrive::start();
    let size = 200 * MIB;
    let src = d.dir.path().join("half.local");
    write_patterned(&src, size);
    let m = d.mount(&[]);
    d.g.reset_stats();
    // A slow service: each 10 MiB fragment takes at least half a second, so the upload is caught
    // in the middle.
    d.g.faults().slow_upload_fragments(Some(Duration::from_millis(500)));
    run_ok(Command::new("cp").arg(&src).arg(m.path().join("half.bin")), BULK);
    let mut sent = 0;
    eventually(BULK, "status to show half the file sent", || {
        sent = d.upload(m.path(), "half.bin").map_or(0, |u| u.sent);
        sent >= size / 2
    });
    assert!(sent < size, "the upload was not caught halfway ({sent} sent)");
    // SAFETY: kill(2) of our own child daemon.
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) }, 0);
    drop(m); // cleans up the dead mount
    assert!(!d.drive().exists("/half.bin"), "the file was complete before the kill");
    let before = d.g.stats().upload_fragments().len();
    assert!(before >= 5, "{before} fragments before the kill");
    assert_eq!(d.g.stats().count(RouteClass::CreateSession), 1);

    let m = d.mount(&[]);
    // Until it is on the server, the new mount shows the journal's copy: its size and content.
    let p = m.path().join("half.bin");
    let (len, got) = within(QUICK, "stat and read the file being resumed", move || {
        let f = File::open(&p).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, 150 * MIB).unwrap();
        (f.metadata().unwrap().len(), buf)
    });
    assert_eq!(len, size, "size shown while the upload resumes");
    let mut want = vec![0u8; 4096];
    pattern_at(150 * MIB, &mut want);
    assert_same_bytes(&got, &want, "4 KiB at 150 MiB while the upload resumes");
    d.g.faults().slow_upload_fragments(None);
    settled(&d, &m, BULK, "half.bin on the server", || d.drive().exists("/half.bin"));
    let s = d.g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1, "the same session was resumed");
    assert!(
        s.upload_fragment_bytes <= size + 2 * FRAGMENT,
        "{} bytes received for a {size}-byte file",
        s.upload_fragment_bytes
    );
    let frags = d.g.stats().upload_fragments();
    assert_aligned(&frags, size);
    assert_eq!(
        frags.iter().filter(|f| f.0 == 0).count(),
        1,
        "nothing was sent again from zero: {frags:?}"
    );
    // Half was sent when the daemon died, so the server held at least all but the fragment in
    // flight; the new daemon starts there (the fragment cut off may be logged after `before`).
    let resumed_at = frags[before..]
        .iter()
        .map(|f| f.0)
        .min()
        .expect("fragments after the restart");
    assert!(
        resumed_at >= size / 2 - FRAGMENT,
        "the new daemon started at {resumed_at}, not mid-file"
    );
    assert_patterned_on_server(&d.g, "/half.bin", size);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------------------------
// fsx
// ---------------------------------------------------------------------------------------------------------------

/// fsx-rs, 10,000 random operations (with frequent close/reopen and fsync) on the Graph mount,
/// with a delta round every second bringing our own uploads back meanwhile.
#[test]
fn fsx_10000_operations() {
    let fsx = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/bin/fsx");
    assert!(
        fsx.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        fsx.display()
    );
    let d = GraphDrive::start();
    let m = d.mount(&["--poll-interval", "1"]);
    fs::create_dir(m.path().join("fsx")).unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fsx-remote.toml");
    let f = run(
        Command::new(fsx)
            .arg("-f")
            .arg(&config)
            .args(["-N", "10000", "-S", "42", "-P"])
            .arg(artifacts.path())
            .arg(m.path().join("fsx/testfile")),
        BULK,
    );
    assert!(
        f.status.success() && f.both().contains("All operations completed A-OK!"),
        "fsx failed: {}\n{}",
        f.status,
        f.both()
    );
    let rounds = d.g.stats().count(RouteClass::Delta);
    assert!(rounds >= 3, "only {rounds} delta rounds ran alongside fsx");
    let local = fs::read(m.path().join("fsx/testfile")).unwrap();
    settled(&d, &m, QUICK, "fsx's file on the server as the mount shows it", || {
        d.drive()
            .file_bytes("/fsx/testfile")
            .is_some_and(|b| b[..] == local[..])
    });
    assert_same_bytes(
        &d.drive().file_bytes("/fsx/testfile").unwrap(),
        &local,
        "the server's copy after fsx",
    );
    m.unmount();
}

// ---------------------------------------------------------------------------------------------------------------
// Everyday tools
// ---------------------------------------------------------------------------------------------------------------

fn assert_tree_on_server(g: &FakeGraph, root: &str, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let got = g
            .drive()
            .file_bytes(&format!("{root}/{rel}"))
            .unwrap_or_else(|| panic!("{root}/{rel} is not on the server"));
        assert_same_bytes(&got, data, &format!("on the server: {rel}"));
    }
}

/// `cp -r` of a tree in, then out of a fresh mount: `cmp` equal, and the server holds the tree.
#[test]
fn cp_r_of_a_tree_in_and_out() {
    let d = GraphDrive::start();
    let src = tempfile::tempdir().unwrap();
    let files = make_tree(src.path());
    let m = d.mount(&[]);
    run_ok(
        Command::new("cp").arg("-r").arg(src.path()).arg(m.path().join("tree")),
        BULK,
    );
    assert_tree(&m.path().join("tree"), &files, "through the mount before unmount");
    m.unmount(); // waits for the uploads
    assert_tree_on_server(&d.g, "/tree", &files);

    let m = d.mount(&[]);
    let out = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(m.path().join("tree"))
            .arg(out.path().join("copy")),
        BULK,
    );
    for (rel, _) in &files {
        run_ok(
            Command::new("cmp")
                .arg(src.path().join(rel))
                .arg(out.path().join("copy").join(rel)),
            QUICK,
        );
    }
    m.unmount();
}

/// rsync (temporary file, then rename over the target) into the mount, twice: the second run
/// replaces a changed file; no temporaries are left on the server.
#[test]
fn rsync_of_a_tree_in_twice() {
    let d = GraphDrive::start();
    let src = tempfile::tempdir().unwrap();
    let mut files = make_tree(src.path());
    let m = d.mount(&[]);
    let dest = format!("{}/", m.path().join("synced").display());
    let source = format!("{}/", src.path().display());
    run_ok(Command::new("rsync").args(["-r", "--checksum", &source, &dest]), BULK);
    files[0].1 = b"changed content".to_vec();
    fs::write(src.path().join(&files[0].0), &files[0].1).unwrap();
    run_ok(Command::new("rsync").args(["-r", "--checksum", &source, &dest]), BULK);
    m.unmount();
    assert_tree_on_server(&d.g, "/synced", &files);
    let leftovers: Vec<String> = d
        .drive()
        .list("/synced")
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "rsync temporaries left on the server: {leftovers:?}"
    );
}

/// Open without O_TRUNC, write in the middle, close: the bytes around the edit stay, on the server
/// and through a fresh mount. A 6 MiB file, so the edit goes back in a session.
#[test]
fn edit_in_place_keeps_the_rest() {
    let d = GraphDrive::start();
    let original = random_bytes(7, 6 << 20);
    d.drive().put_file("/doc.bin", original.clone()).unwrap();
    let m = d.mount(&[]);
    let path = m.path().join("doc.bin");
    within(QUICK, "edit in place", move || {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"EDITED IN THE MIDDLE", 3_000_000).unwrap();
    });
    m.unmount();
    let mut want = original;
    want[3_000_000..3_000_020].copy_from_slice(b"EDITED IN THE MIDDLE");
    assert_same_bytes(&d.drive().file_bytes("/doc.bin").unwrap(), &want, "on the server");
    let m = d.mount(&[]);
    let path = m.path().join("doc.bin");
    let got = within(QUICK, "read back", move || fs::read(path).unwrap());
    assert_same_bytes(&got, &want, "through a fresh mount");
    m.unmount();
}

/// mv across folders, over an existing file, and of a folder; rm -r; as the server sees them.
#[test]
fn mv_and_rm_r() {
    let d = GraphDrive::start();
    let m = d.mount(&[]);
    let root = m.path().to_path_buf();
    within(QUICK, "mkdir and write", {
        let root = root.clone();
        move || {
            fs::create_dir_all(root.join("a/inner")).unwrap();
            fs::create_dir(root.join("b")).unwrap();
            fs::write(root.join("a/f.txt"), b"from a").unwrap();
            fs::write(root.join("a/inner/deep.txt"), b"deep").unwrap();
            fs::write(root.join("b/target.txt"), b"to be replaced").unwrap();
        }
    });
    settled(&d, &m, QUICK, "the files on the server", || {
        d.drive()
            .file_bytes("/b/target.txt")
            .is_some_and(|b| &b[..] == b"to be replaced")
            && d.drive().exists("/a/inner/deep.txt")
            && d.drive().exists("/a/f.txt")
    });
    assert_eq!(&d.drive().file_bytes("/b/target.txt").unwrap()[..], b"to be replaced");
    three_moves(&root, QUICK);
    assert_eq!(fs::read(root.join("b/inner-moved/deep.txt")).unwrap(), b"deep");
    assert_eq!(fs::read(root.join("b/target.txt")).unwrap(), b"from a");
    run_ok(Command::new("rm").arg("-r").arg(root.join("a")), QUICK);
    assert!(!root.join("a").exists());
    m.unmount();
    let s = d.drive();
    assert_eq!(&s.file_bytes("/b/target.txt").unwrap()[..], b"from a");
    assert_eq!(&s.file_bytes("/b/inner-moved/deep.txt").unwrap()[..], b"deep");
    assert!(!s.exists("/b/moved.txt"));
    assert!(!s.exists("/a"), "rm -r removed the folder on the server");
    assert_eq!(s.list("/b"), vec!["inner-moved", "target.txt"]);
}

/// Truncating up fills with zeros, down cuts; with a handle (ftruncate) and by path (truncate).
#[test]
fn truncate_up_and_down() {
    let d = GraphDrive::start();
    d.drive().put_file("/t.bin", vec![7u8; 1000]).unwrap();
    let m = d.mount(&[]);
    let path = m.path().join("t.bin");
    within(QUICK, "ftruncate", {
        let path = path.clone();
        move || {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(3000).unwrap();
        }
    });
    assert_eq!(fs::metadata(&path).unwrap().len(), 3000);
    let mut want = vec![7u8; 1000];
    want.resize(3000, 0);
    settled(&d, &m, QUICK, "the longer file on the server", || {
        d.drive().file_bytes("/t.bin").is_some_and(|b| b[..] == want[..])
    });
    assert_eq!(
        &d.drive().file_bytes("/t.bin").unwrap()[..],
        &want[..],
        "up, on the server"
    );
    run_ok(Command::new("truncate").args(["-s", "10"]).arg(&path), QUICK);
    assert_eq!(fs::read(&path).unwrap(), vec![7u8; 10]);
    m.unmount();
    assert_eq!(
        &d.drive().file_bytes("/t.bin").unwrap()[..],
        &[7u8; 10][..],
        "down, on the server"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// What the user sees when the server says no
// ---------------------------------------------------------------------------------------------------------------

/// The server's copy changed after it was read: ours goes to a conflict copy next to it, theirs
/// stays, and the folder shows both.
#[test]
fn a_file_changed_on_the_server_meanwhile_becomes_a_conflict_copy() {
    let d = GraphDrive::start();
    d.drive().put_file("/notes.txt", &b"version one"[..]).unwrap();
    let m = d.mount(&["--ttl", "1"]);
    let path = m.path().join("notes.txt");
    let p = path.clone();
    let f = within(QUICK, "open and read", move || {
        let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "version one");
        f
    });
    d.drive().put_file("/notes.txt", &b"another device"[..]).unwrap();
    within(QUICK, "write, fsync and close", move || {
        f.write_all_at(b"OURS", 0).unwrap();
        f.sync_all().unwrap();
    });
    settled(&d, &m, QUICK, "a conflict copy on the server", || {
        d.drive().list("/").iter().any(|n| n.starts_with("notes (conflict "))
    });
    assert_eq!(&d.drive().file_bytes("/notes.txt").unwrap()[..], b"another device");
    let copy = d
        .drive()
        .list("/")
        .into_iter()
        .find(|n| n.starts_with("notes (conflict ") && n.ends_with(").txt"))
        .expect("a conflict copy on the server");
    assert_eq!(&d.drive().file_bytes(&format!("/{copy}")).unwrap()[..], b"OURSion one");
    let root = m.path().to_path_buf();
    eventually(QUICK, "the folder shows both files", || {
        let names = list(&root);
        names.contains(&"notes.txt".to_string()) && names.contains(&copy)
    });
    eventually(QUICK, "the mount shows the server's notes.txt", || {
        fs::read(&path).map(|b| b == b"another device").unwrap_or(false)
    });
    assert_eq!(fs::read(m.path().join(&copy)).unwrap(), b"OURSion one");
    m.unmount();
}

/// Issue 14.2: another device replaces the file while our upload finishes (its PUT landed, the PATCH
/// that puts our time back is held by a 429 with Retry-After 3). Both versions survive: theirs at
/// the name, ours as a conflict copy; nothing uploads ours over theirs.
#[test]
fn a_change_elsewhere_while_our_upload_finishes_keeps_both_versions() {
    let d = GraphDrive::start();
    d.drive().put_file("/c.txt", &b"ORIGINAL"[..]).unwrap();
    let m = d.mount(&[]);
    let path = m.path().join("c.txt");
    let p = path.clone();
    assert_eq!(within(QUICK, "read", move || fs::read(&p).unwrap()), b"ORIGINAL");
    let faults = d.g.faults();
    faults.throttle_next(RouteClass::Write, 1, 429, Some(3));
    let other = d.drive();
    faults.before_next(RouteClass::Write, move || {
        other.put_file("/c.txt", &b"OTHER DEVICE"[..]).unwrap();
    });
    let p = path.clone();
    within(QUICK, "write LOCAL", move || fs::write(&p, b"LOCAL").unwrap());
    settled(&d, &m, QUICK, "the upload to end", || {
        d.drive().list("/").len() == 2 || d.drive().file_bytes("/c.txt").is_some_and(|b| b[..] == b"LOCAL"[..])
    });
    let names = d.drive().list("/");
    assert_eq!(
        &d.drive().file_bytes("/c.txt").unwrap()[..],
        b"OTHER DEVICE",
        "theirs stays at the name ({names:?})"
    );
    let copy = names
        .iter()
        .find(|n| n.starts_with("c (conflict ") && n.ends_with(").txt"))
        .unwrap_or_else(|| panic!("a conflict copy: {names:?}"));
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(&d.drive().file_bytes(&format!("/{copy}")).unwrap()[..], b"LOCAL");
    eventually(QUICK, "the mount shows theirs at the name", || {
        fs::read(&path).map(|b| b == b"OTHER DEVICE").unwrap_or(false)
    });
    assert_eq!(fs::read(m.path().join(copy)).unwrap(), b"LOCAL");
    m.unmount();
}

/// A locked file (423) stays queued and is retried, status says why, and other files go past it;
/// once unlocked it arrives, with no conflict copy.
#[test]
fn a_locked_file_is_retried_without_holding_up_others() {
    let d = GraphDrive::start();
    d.drive().put_file("/locked.docx", &b"old"[..]).unwrap();
    d.g.faults().lock_item("/locked.docx").unwrap();
    let m = d.mount(&[]);
    let root = m.path().to_path_buf();
    within(QUICK, "write both files", move || {
        fs::write(root.join("locked.docx"), b"new content").unwrap();
        fs::write(root.join("other.txt"), b"other file").unwrap();
    });
    eventually(QUICK, "the other file to arrive", || {
        d.drive()
            .file_bytes("/other.txt")
            .is_some_and(|b| &b[..] == b"other file")
    });
    let mut last = None;
    eventually(QUICK, "status to show the lock", || {
        last = d.upload(m.path(), "locked.docx");
        last.as_ref()
            .and_then(|u| u.error.as_deref())
            .is_some_and(|e| e.to_lowercase().contains("locked"))
    });
    let u = last.unwrap();
    assert!(!u.failed, "a lock is waited out, not given up on: {u:?}");
    assert_eq!(&d.drive().file_bytes("/locked.docx").unwrap()[..], b"old");
    d.g.faults().unlock_item("/locked.docx").unwrap();
    settled(&d, &m, QUICK, "the unlocked file on the server", || {
        d.drive()
            .file_bytes("/locked.docx")
            .is_some_and(|b| &b[..] == b"new content")
    });
    assert_eq!(&d.drive().file_bytes("/locked.docx").unwrap()[..], b"new content");
    assert!(
        d.drive().list("/").iter().all(|n| !n.contains("conflict")),
        "{:?}",
        d.drive().list("/")
    );
    m.unmount();
}

/// A full drive (507): fsync says ENOSPC, the data stays queued (status shows it), and it uploads
/// once there is room.
#[test]
fn a_full_drive_is_enospc_at_fsync_and_uploads_once_there_is_room() {
    let d = GraphDrive::start();
    let m = d.mount(&[]);
    d.g.faults().quota_exceeded(true);
    let data = random_bytes(5, 100_000);
    let (path, dd) = (m.path().join("full.bin"), data.clone());
    let err = within(QUICK, "write and fsync", move || {
        let mut f = File::create(&path).unwrap();
        f.write_all(&dd).unwrap();
        errno(f.sync_all())
    });
    assert_eq!(err, Some(libc::ENOSPC), "fsync on a full drive");
    let mut last = None;
    eventually(QUICK, "status to show the upload queued for want of space", || {
        last = d.upload(m.path(), "full.bin");
        last.as_ref()
            .and_then(|u| u.error.as_deref())
            .is_some_and(|e| e.contains("no space"))
    });
    let u = last.unwrap();
    assert!(!u.failed, "waits for room, not given up on: {u:?}");
    assert!(!d.drive().exists("/full.bin"));
    d.g.faults().quota_exceeded(false);
    settled(&d, &m, QUICK, "the file on the server", || {
        d.drive().exists("/full.bin")
    });
    assert_same_bytes(&d.drive().file_bytes("/full.bin").unwrap(), &data, "once there is room");
    m.unmount();
}

/// Names OneDrive refuses are EINVAL at once, and no request reaches the server.
#[test]
fn names_onedrive_refuses_are_einval_with_no_request() {
    let d = GraphDrive::start();
    d.drive().put_file("/x", &b"x"[..]).unwrap();
    d.drive().put_file("/sub/y", &b"y"[..]).unwrap();
    let m = d.mount(&["--ttl", "600"]);
    assert_eq!(list(m.path()), vec!["sub", "x"]);
    d.g.reset_stats();
    let root = m.path().to_path_buf();
    let touch = run(Command::new("touch").arg(root.join("a:b")), QUICK);
    assert!(!touch.status.success());
    assert!(touch.both().contains("Invalid argument"), "{}", touch.both());
    let mkdir = run(Command::new("mkdir").arg(root.join("CON")), QUICK);
    assert!(!mkdir.status.success());
    assert!(mkdir.both().contains("Invalid argument"), "{}", mkdir.both());
    // rename(2) answers EINVAL, which mv words as "a subdirectory of itself".
    let mv = run(Command::new("mv").arg(root.join("x")).arg(root.join("y.")), QUICK);
    assert!(!mv.status.success(), "{}", mv.both());
    let r = root.clone();
    let errs = within(QUICK, "the same calls directly", move || {
        (
            errno(File::create(r.join("a:b"))),
            errno(fs::create_dir(r.join("CON"))),
            errno(fs::rename(r.join("x"), r.join("y."))),
        )
    });
    assert_eq!(errs, (Some(libc::EINVAL), Some(libc::EINVAL), Some(libc::EINVAL)));
    let s = d.g.stats();
    assert_eq!(s.requests.values().sum::<u64>(), 0, "requests: {:?}", s.requests);
    assert_eq!(list(&root), vec!["sub", "x"]);
    assert_eq!(d.drive().list("/"), vec!["sub", "x"]);

    // In a folder never listed, the kernel's lookup of the name comes first: it must not ask the
    // server either (no item can have such a name).
    let r = root.clone();
    within(QUICK, "stat sub", move || fs::metadata(r.join("sub")).unwrap());
    d.g.reset_stats();
    let r = root.clone();
    let errs = within(QUICK, "refused names in an unlisted folder", move || {
        (
            errno(File::create(r.join("sub/a:b"))),
            errno(fs::create_dir(r.join("sub/CON"))),
            errno(fs::rename(r.join("sub/y"), r.join("sub/y."))),
        )
    });
    assert_eq!(errs, (Some(libc::EINVAL), Some(libc::EINVAL), Some(libc::EINVAL)));
    let s = d.g.stats();
    let asked: Vec<String> = s.recent.iter().map(|q| format!("{} {}", q.method, q.path)).collect();
    assert!(
        asked
            .iter()
            .all(|q| !q.contains("/a%3Ab") && !q.contains("/CON") && !q.contains("/y.")),
        "{asked:#?}"
    );
    assert_eq!(s.count(RouteClass::Write) + s.count(RouteClass::SimpleUpload), 0);
    assert_eq!(d.drive().list("/sub"), vec!["y"]);
    m.unmount();
}

/// Issue 14.14: OneDrive compares names case-insensitively, and so does the mount, also within
/// `--ttl` of a listing: a name in another case finds the item (as the server would), and a create
/// in another case opens the existing file (as on Windows) instead of making a second, empty one
/// that the server refuses and that goes up as a conflict copy. Listings keep the server's
/// spelling, and a folder cannot be made again in another case.
#[test]
fn names_match_case_insensitively_as_on_onedrive() {
    let d = GraphDrive::start();
    d.drive().put_file("/notes/note 1.txt", &b"one"[..]).unwrap();
    d.drive().put_file("/hello.txt", &b"hello"[..]).unwrap();
    let m = d.mount(&["--ttl", "60"]);
    let root = m.path().to_path_buf();
    assert_eq!(list(&root), vec!["hello.txt", "notes"]);
    assert_eq!(list(&root.join("notes")), vec!["note 1.txt"]);
    let r = root.clone();
    let (meta, bytes) = within(QUICK, "stat and read in another case", move || {
        (
            fs::metadata(r.join("notes/NOTE 1.TXT")),
            fs::read(r.join("NOTES/Note 1.txt")),
        )
    });
    assert_eq!(meta.expect("stat notes/NOTE 1.TXT").len(), 3);
    assert_eq!(bytes.expect("read NOTES/Note 1.txt"), b"one");
    let r = root.clone();
    let missing = within(QUICK, "stat a name that is not there", move || {
        errno(fs::metadata(r.join("notes/NOTE 2.TXT")))
    });
    assert_eq!(missing, Some(libc::ENOENT));

    run_ok(Command::new("touch").arg(root.join("Hello.TXT")), QUICK);
    let r = root.clone();
    within(QUICK, "write through another case", move || {
        fs::write(r.join("HELLO.txt"), b"HELLO AGAIN").unwrap()
    });
    settled(&d, &m, QUICK, "the write on the server", || {
        d.drive()
            .file_bytes("/hello.txt")
            .is_some_and(|b| b[..] == b"HELLO AGAIN"[..])
    });
    assert_eq!(d.drive().list("/"), vec!["hello.txt", "notes"], "no second file");
    assert_eq!(list(&root), vec!["hello.txt", "notes"]);
    assert_eq!(fs::read(root.join("hello.txt")).unwrap(), b"HELLO AGAIN");

    let r = root.clone();
    let again = within(QUICK, "mkdir in another case", move || {
        errno(fs::create_dir(r.join("Notes")))
    });
    assert_eq!(again, Some(libc::EEXIST));
    let r = root.clone();
    let excl = within(QUICK, "O_EXCL create in another case", move || {
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(r.join("HELLO.TXT")),
        )
    });
    assert_eq!(excl, Some(libc::EEXIST));
    assert_eq!(d.drive().list("/"), vec!["hello.txt", "notes"]);
    m.unmount();
}

/// A rename that only changes case. Both spellings are one file to the mount (as to OneDrive), so
/// GNU `mv a.txt A.txt` refuses it as "the same file" (as on every case-insensitive filesystem
/// under Linux: the kernel resolves both names to one inode) and nothing is lost; in two steps it
/// works, and the server then holds the new spelling.
#[test]
fn a_case_only_rename_keeps_the_file() {
    let d = GraphDrive::start();
    d.drive().put_file("/a.txt", &b"keep me"[..]).unwrap();
    let m = d.mount(&["--ttl", "60"]);
    let root = m.path().to_path_buf();
    assert_eq!(list(&root), vec!["a.txt"]);
    let one_step = run(
        Command::new("mv").arg(root.join("a.txt")).arg(root.join("A.txt")),
        QUICK,
    );
    assert!(
        !one_step.status.success() && one_step.stderr.contains("same file"),
        "{}",
        one_step.both()
    );
    assert_eq!(d.drive().list("/"), vec!["a.txt"]);
    assert_eq!(fs::read(root.join("A.txt")).unwrap(), b"keep me");
    run_ok(
        Command::new("mv").arg(root.join("a.txt")).arg(root.join("a.txt.tmp")),
        QUICK,
    );
    run_ok(
        Command::new("mv").arg(root.join("a.txt.tmp")).arg(root.join("A.txt")),
        QUICK,
    );
    assert_eq!(list(&root), vec!["A.txt"]);
    assert_eq!(fs::read(root.join("A.txt")).unwrap(), b"keep me");
    assert_eq!(d.drive().list("/"), vec!["A.txt"]);
    assert_eq!(&d.drive().file_bytes("/A.txt").unwrap()[..], b"keep me");

    m.unmount();
}

/// The large-file (session) path of the failure cases: a full drive, a lock and a conflict.
#[test]
fn session_uploads_fail_the_same_way() {
    let d = GraphDrive::start();
    let big = random_bytes(3, 6 << 20);
    d.drive().put_file("/locked.bin", &b"old"[..]).unwrap();
    d.drive().put_file("/changed.bin", big.clone()).unwrap();
    let m = d.mount(&[]);
    let root = m.path().to_path_buf();

    // 507
    d.g.faults().quota_exceeded(true);
    let (p, b) = (root.join("full.bin"), big.clone());
    let err = within(QUICK, "write and fsync", move || {
        let mut f = File::create(&p).unwrap();
        f.write_all(&b).unwrap();
        errno(f.sync_all())
    });
    assert_eq!(err, Some(libc::ENOSPC), "fsync on a full drive");
    d.g.faults().quota_exceeded(false);

    // 423
    d.g.faults().lock_item("/locked.bin").unwrap();
    let (p, b) = (root.join("locked.bin"), big.clone());
    within(QUICK, "write the locked file", move || fs::write(&p, &b).unwrap());

    // conflict
    let p = root.join("changed.bin");
    let f = within(QUICK, "open and read", move || {
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let mut buf = vec![0u8; 10];
        f.read_exact_at(&mut buf, 0).unwrap();
        f
    });
    d.drive().put_file("/changed.bin", &b"another device"[..]).unwrap();
    within(QUICK, "write and close", move || {
        f.write_all_at(b"OURS", 5 << 20).unwrap();
    });

    eventually(BULK, "the full drive's file to arrive", || {
        d.drive().file_bytes("/full.bin").is_some_and(|b| b[..] == big[..])
    });
    eventually(BULK, "the conflict copy", || {
        d.drive().list("/").iter().any(|n| n.starts_with("changed (conflict "))
    });
    let copy = d
        .drive()
        .list("/")
        .into_iter()
        .find(|n| n.starts_with("changed (conflict "))
        .unwrap();
    let mut want = big.clone();
    want[5 << 20..(5 << 20) + 4].copy_from_slice(b"OURS");
    assert_same_bytes(&d.drive().file_bytes(&format!("/{copy}")).unwrap(), &want, "our copy");
    assert_eq!(&d.drive().file_bytes("/changed.bin").unwrap()[..], b"another device");
    assert_eq!(&d.drive().file_bytes("/locked.bin").unwrap()[..], b"old");
    d.g.faults().unlock_item("/locked.bin").unwrap();
    settled(&d, &m, BULK, "the unlocked file", || {
        d.drive().file_bytes("/locked.bin").is_some_and(|b| b[..] == big[..])
    });
    m.unmount();
}

/// A file moved, and another removed, while their uploads are still under way: the server ends up
/// with the moved file at its new path only, and the removed one nowhere.
#[test]
fn mv_and_rm_while_uploading() {
    let d = GraphDrive::start();
    let m = d.mount(&[]);
    let root = m.path().to_path_buf();
    let data = random_bytes(9, 30 << 20);
    d.g.faults().slow_upload_fragments(Some(Duration::from_millis(300)));
    let (r, b) = (root.clone(), data.clone());
    within(QUICK, "write two files", move || {
        fs::create_dir(r.join("sub")).unwrap();
        fs::write(r.join("moving.bin"), &b).unwrap();
        fs::write(r.join("doomed.bin"), &b).unwrap();
    });
    eventually(QUICK, "an upload under way", || {
        d.status(m.path()).uploads.iter().any(|u| u.running && u.sent > 0)
    });
    run_ok(
        Command::new("mv")
            .arg(root.join("moving.bin"))
            .arg(root.join("sub/moved.bin")),
        QUICK,
    );
    run_ok(Command::new("rm").arg(root.join("doomed.bin")), QUICK);
    d.g.faults().slow_upload_fragments(None);
    settled(&d, &m, BULK, "the moved file at its new path", || {
        d.drive()
            .file_bytes("/sub/moved.bin")
            .is_some_and(|b| b[..] == data[..])
    });
    assert_eq!(d.drive().list("/"), vec!["sub"]);
    assert_eq!(list(&root), vec!["sub"]);
    assert_eq!(d.drive().list("/sub"), vec!["moved.bin"]);
    m.unmount();
    assert_eq!(d.drive().list("/"), vec!["sub"]);
}

/// A new file whose name was taken on the server (in another case) before it was uploaded: theirs
/// stays, ours becomes a conflict copy.
#[test]
fn a_new_file_whose_name_was_taken_meanwhile_becomes_a_conflict_copy() {
    let d = GraphDrive::start();
    let m = d.mount(&[]);
    let p = m.path().join("New.txt");
    let f = within(QUICK, "create and write", move || {
        let mut f = File::create(&p).unwrap();
        f.write_all(b"ours").unwrap();
        f
    });
    d.drive().put_file("/new.txt", &b"theirs"[..]).unwrap();
    let r = within(QUICK, "fsync and close", move || f.sync_all());
    r.unwrap();
    settled(&d, &m, QUICK, "a conflict copy", || {
        d.drive().list("/").iter().any(|n| n.contains("(conflict "))
    });
    let names = d.drive().list("/");
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(&d.drive().file_bytes("/new.txt").unwrap()[..], b"theirs");
    let copy = names.iter().find(|n| n.contains("(conflict ")).unwrap();
    assert!(copy.starts_with("New (conflict ") && copy.ends_with(").txt"), "{copy}");
    assert_eq!(&d.drive().file_bytes(&format!("/{copy}")).unwrap()[..], b"ours");
    m.unmount();
}

/// Our own uploads come back through the delta feed (polled every second here): edits that follow
/// them, and fsx's close/reopen cycles, are never mistaken for changes made elsewhere (no conflict
/// copy, nothing lost).
#[test]
fn own_uploads_seen_through_delta_are_not_conflicts() {
    let d = GraphDrive::start();
    let m = d.mount(&["--poll-interval", "1"]);
    let path = m.path().join("log.txt");
    let mut want = Vec::new();
    for i in 0..8u8 {
        let line = format!("line {i}\n");
        want.extend_from_slice(line.as_bytes());
        let p = path.clone();
        within(QUICK, "append", move || {
            let mut f = OpenOptions::new().create(true).append(true).open(&p).unwrap();
            f.write_all(line.as_bytes()).unwrap();
            f.sync_all().unwrap();
        });
        let w = want.clone();
        settled(&d, &m, QUICK, "the append on the server", || {
            d.drive().file_bytes("/log.txt").is_some_and(|b| b[..] == w[..])
        });
        if i % 2 == 1 {
            thread::sleep(Duration::from_millis(1500)); // let a delta round see it
        }
    }
    assert_eq!(d.drive().list("/"), vec!["log.txt"]);
    assert_eq!(fs::read(&path).unwrap(), want);
    m.unmount();
}

/// A file edited again while its first upload is still under way (in a session): the server ends
/// with the second version, and our own first upload is not taken for a change made elsewhere.
#[test]
fn an_edit_during_its_own_upload_is_not_a_conflict() {
    let d = GraphDrive::start();
    d.drive().put_file("/doc.bin", &b"the original"[..]).unwrap();
    let m = d.mount(&[]);
    let path = m.path().join("doc.bin");
    let mut want = random_bytes(12, 30 << 20);
    d.g.faults().slow_upload_fragments(Some(Duration::from_millis(400)));
    let (p, b) = (path.clone(), want.clone());
    within(QUICK, "replace the content", move || fs::write(&p, &b).unwrap());
    eventually(QUICK, "the first upload under way", || {
        d.upload(m.path(), "doc.bin").is_some_and(|u| u.running && u.sent > 0)
    });
    let p = path.clone();
    within(QUICK, "edit again", move || {
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"SECOND EDIT", 25 << 20).unwrap();
    });
    want[25 << 20..(25 << 20) + 11].copy_from_slice(b"SECOND EDIT");
    d.g.faults().slow_upload_fragments(None);
    settled(&d, &m, QUICK, "the second version on the server", || {
        d.drive().file_bytes("/doc.bin").is_some_and(|b| b[..] == want[..])
    });
    assert_eq!(d.drive().list("/"), vec!["doc.bin"], "no conflict copy");
    m.unmount();
}
