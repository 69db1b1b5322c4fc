//! Acceptance tests of the writable mount, on real FUSE mounts of the `cloudmount` binary against
//! the in-process `dav-server` and Apache mod_dav: what a writer is promised (close, fsync, unmount)
//! and what the server ends up holding, including across a crash of the daemon.
//!
//! They need root and /dev/fuse, Apache and rsync from `scripts/install-test-deps.sh`; they fail,
//! never skip, without them. Every filesystem access is bounded, so a hang fails instead of blocking.

#[macro_use]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::{assert_same_bytes, assert_tree, make_tree, put_file, random_bytes};
use common::mount::{cloudmount_bin, errno, eventually, run, run_ok, three_moves, within, Mount};
use common::servers::TestServer;
use common::writer::Writer;

const QUICK: Duration = Duration::from_secs(60);
const BULK: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------------------------
// Checks run against both servers
// ---------------------------------------------------------------------------------------------------------------

/// `cp -r` of a tree into the mount reaches the server once unmounted; `cp -r` back out of a fresh mount and the
/// server's copy both equal the original.
fn copies_a_tree_in_and_out(server: &dyn TestServer) {
    let src = tempfile::tempdir().unwrap();
    let files = make_tree(src.path());
    let m = Mount::start(&server.url(), &[]);
    run_ok(
        Command::new("cp").arg("-r").arg(src.path()).arg(m.path().join("tree")),
        BULK,
    );
    assert_tree(&m.path().join("tree"), &files, "through the mount before unmount");
    m.unmount(); // waits for the uploads
    assert_tree(&server.root().join("tree"), &files, "on the server");

    let m = Mount::start(&server.url(), &[]);
    let out = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(m.path().join("tree"))
            .arg(out.path().join("copy")),
        BULK,
    );
    assert_tree(&out.path().join("copy"), &files, "copied back out");
    m.unmount();
}

/// rsync (temporary file, then rename over the target) into the mount, twice: the second run replaces files.
fn rsyncs_a_tree_in(server: &dyn TestServer) {
    let src = tempfile::tempdir().unwrap();
    let mut files = make_tree(src.path());
    let m = Mount::start(&server.url(), &[]);
    let dest = format!("{}/", m.path().join("synced").display());
    let source = format!("{}/", src.path().display());
    run_ok(Command::new("rsync").args(["-r", "--checksum", &source, &dest]), BULK);
    files[0].1 = b"changed content".to_vec();
    fs::write(src.path().join(&files[0].0), &files[0].1).unwrap();
    run_ok(Command::new("rsync").args(["-r", "--checksum", &source, &dest]), BULK);
    m.unmount();
    assert_tree(&server.root().join("synced"), &files, "on the server after rsync");
    let leftovers: Vec<_> = fs::read_dir(server.root().join("synced"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "rsync temporaries left on the server: {leftovers:?}"
    );
}

/// Open without O_TRUNC, write in the middle, close: the bytes around the edit stay, on the server and through a
/// second, fresh mount.
fn edits_a_file_in_place(server: &dyn TestServer) {
    let original = random_bytes(7, 1 << 20);
    put_file(server.root(), "doc.bin", &original);
    let m = Mount::start(&server.url(), &[]);
    let path = m.path().join("doc.bin");
    within(QUICK, "edit in place", move || {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"EDITED IN THE MIDDLE", 500_000).unwrap();
    });
    m.unmount();
    let mut want = original.clone();
    want[500_000..500_020].copy_from_slice(b"EDITED IN THE MIDDLE");
    assert_same_bytes(
        &fs::read(server.root().join("doc.bin")).unwrap(),
        &want,
        "on the server",
    );
    let m = Mount::start(&server.url(), &[]);
    assert_same_bytes(
        &fs::read(m.path().join("doc.bin")).unwrap(),
        &want,
        "through a fresh mount",
    );
    m.unmount();
}

/// mv across folders and over an existing file, and rm -r, as the server sees them.
fn moves_and_removes(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &[]);
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
    three_moves(&root, QUICK);
    assert_eq!(fs::read(root.join("b/inner-moved/deep.txt")).unwrap(), b"deep");
    run_ok(Command::new("rm").arg("-r").arg(root.join("a")), QUICK);
    assert!(!root.join("a").exists());
    m.unmount();
    let s = server.root();
    assert_eq!(fs::read(s.join("b/target.txt")).unwrap(), b"from a");
    assert_eq!(fs::read(s.join("b/inner-moved/deep.txt")).unwrap(), b"deep");
    assert!(!s.join("b/moved.txt").exists());
    assert!(!s.join("a").exists(), "rm -r removed the folder on the server");
}

/// Truncating up fills with zeros, down cuts; both with a handle (ftruncate) and by path (truncate).
fn truncates_up_and_down(server: &dyn TestServer) {
    put_file(server.root(), "t.bin", &[7u8; 1000]);
    let m = Mount::start(&server.url(), &[]);
    let path = m.path().join("t.bin");
    within(QUICK, "ftruncate", {
        let path = path.clone();
        move || {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(3000).unwrap();
        }
    });
    assert_eq!(fs::metadata(&path).unwrap().len(), 3000);
    run_ok(Command::new("truncate").args(["-s", "10"]).arg(&path), QUICK);
    assert_eq!(fs::read(&path).unwrap(), vec![7u8; 10]);
    m.unmount();
    assert_eq!(fs::read(server.root().join("t.bin")).unwrap(), vec![7u8; 10]);
}

/// When fsync returns, the server has the bytes (checked on the server side before close).
fn fsync_means_the_server_has_it(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &[]);
    let data = random_bytes(3, 3 << 20);
    let (path, d) = (m.path().join("synced.bin"), data.clone());
    let f = within(QUICK, "write and fsync", move || {
        let mut f = File::create(&path).unwrap();
        f.write_all(&d).unwrap();
        f.sync_all().unwrap();
        f
    });
    assert_same_bytes(
        &fs::read(server.root().join("synced.bin")).unwrap(),
        &data,
        "server side after fsync",
    );
    drop(f);
    m.unmount();
}

on_all_servers!(
    dav_server,
    apache,
    nginx,
    lighttpd,
    start(),
    [
        copies_a_tree_in_and_out,
        rsyncs_a_tree_in,
        edits_a_file_in_place,
        moves_and_removes,
        truncates_up_and_down,
        fsync_means_the_server_has_it,
    ]
);

// ---------------------------------------------------------------------------------------------------------------
// In-process server only: outages, crashes, status, refusals
// ---------------------------------------------------------------------------------------------------------------

fn state_args(dir: &Path) -> Vec<String> {
    vec!["--state-dir".into(), dir.display().to_string()]
}

/// A 20 MiB file written and closed while the server hangs survives kill -9 of the daemon: a new mount with the
/// same state directory uploads it intact.
#[test]
fn a_closed_file_survives_kill_9_of_the_daemon() {
    let server = DavServer::start();
    let state = tempfile::tempdir().unwrap();
    let args = state_args(state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = random_bytes(20, 20 << 20);

    let m = Mount::start(&server.url(), &args);
    let path = m.path().join("precious.bin");
    let f = within(QUICK, "create", move || File::create(&path).unwrap());
    server.set_hang(true);
    let d = data.clone();
    within(QUICK, "write and close while the server hangs", move || {
        let mut f = f;
        f.write_all(&d).unwrap();
        drop(f); // close(): must return although the server does not answer
    });
    // SAFETY: kill(2) of our own child daemon.
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) }, 0);
    thread::sleep(Duration::from_millis(300));
    drop(m); // cleans up the dead mount
    server.set_hang(false);
    assert!(
        !server.root().join("precious.bin").exists() || fs::read(server.root().join("precious.bin")).unwrap() != data
    );

    let m = Mount::start(&server.url(), &args);
    let target = server.root().join("precious.bin");
    eventually(
        Duration::from_secs(120),
        "the journal's upload reaches the server",
        || fs::read(&target).map(|b| b == data).unwrap_or(false),
    );
    m.unmount();
}

/// `cloudmount status --json` of the mounts that use state directory `state`: the answer parsed (`Null` when it is
/// not JSON) and all its output, for messages.
fn status_json(state: &Path) -> (serde_json::Value, String) {
    let status = run(
        Command::new(cloudmount_bin())
            .args(["status", "--json", "--state-dir"])
            .arg(state),
        QUICK,
    );
    let parsed = serde_json::from_str(&status.stdout_text()).unwrap_or(serde_json::Value::Null);
    (parsed, status.both())
}

/// `cloudmount status` shows an upload under way with the bytes sent so far; once the server reads again, the
/// file arrives intact.
#[test]
fn status_shows_the_bytes_sent_of_an_upload_under_way() {
    let server = DavServer::start();
    let state = tempfile::tempdir().unwrap();
    let args = state_args(state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = random_bytes(21, 20 << 20);
    let m = Mount::start(&server.url(), &args);
    let path = m.path().join("precious.bin");
    server.set_hang_large_puts(true);
    let d = data.clone();
    within(QUICK, "write and close", move || fs::write(&path, &d).unwrap());
    // `cloudmount status` shows the upload under way, with the bytes the connection has taken so far (the hung
    // server reads none of them, so they stop at what the socket buffers hold).
    let mut last = String::new();
    eventually(
        Duration::from_secs(20),
        "`cloudmount status --json` shows bytes sent",
        || {
            let mounts;
            (mounts, last) = status_json(state.path());
            let upload = &mounts[0]["uploads"][0];
            let sent = upload["sent"].as_u64().unwrap_or(0);
            upload["name"] == "precious.bin" && upload["running"] == true && sent > 0 && sent < 20 << 20
        },
    );
    assert!(last.contains("\"size\": 20971520"), "{last}");
    let text = run(
        Command::new(cloudmount_bin())
            .arg("status")
            .arg(m.path())
            .arg("--state-dir")
            .arg(state.path()),
        QUICK,
    );
    assert!(
        text.stdout_text().contains("sending  precious.bin: "),
        "{}",
        text.both()
    );
    assert!(text.stdout_text().contains(" of 20.0 MiB sent"), "{}", text.both());
    server.set_hang_large_puts(false);
    let target = server.root().join("precious.bin");
    eventually(Duration::from_secs(60), "the upload completes", || {
        fs::read(&target).map(|b| b == data).unwrap_or(false)
    });
    m.unmount();
}

/// `cloudmount unmount` waits for pending uploads and says which; the file is on the server when it returns.
#[test]
fn unmount_waits_for_uploads_and_says_which() {
    let server = DavServer::start();
    let state = tempfile::tempdir().unwrap();
    let args = state_args(state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Mount::start(&server.url(), &args);
    let path = m.path().join("late.bin");
    let f = within(QUICK, "create", move || File::create(&path).unwrap());
    server.set_hang(true);
    within(QUICK, "write and close", move || {
        let mut f = f;
        f.write_all(b"arrives before unmount returns").unwrap();
    });

    // The status file is refreshed every second.
    let mut last = String::new();
    eventually(
        Duration::from_secs(10),
        "`cloudmount status` shows the pending upload",
        || {
            let status = run(
                Command::new(cloudmount_bin())
                    .arg("status")
                    .arg(m.path())
                    .arg("--state-dir")
                    .arg(state.path()),
                QUICK,
            );
            last = status.both();
            status.status.success() && status.stdout_text().contains("late.bin")
        },
    );
    assert!(last.contains("late.bin"));

    let mp = m.path().to_path_buf();
    let st = state.path().to_path_buf();
    let unmounting = thread::spawn(move || {
        run(
            Command::new(cloudmount_bin())
                .arg("unmount")
                .arg(&mp)
                .arg("--state-dir")
                .arg(&st),
            BULK,
        )
    });
    thread::sleep(Duration::from_secs(2));
    assert!(
        !unmounting.is_finished(),
        "unmount returned while an upload was still pending"
    );
    server.set_hang(false);
    let done = unmounting.join().unwrap();
    assert!(done.status.success(), "unmount failed: {}", done.both());
    assert!(
        done.stderr.contains("waiting for 1 upload(s): late.bin"),
        "unmount did not say what it waited for:\n{}",
        done.both()
    );
    assert_eq!(
        fs::read(server.root().join("late.bin")).unwrap(),
        b"arrives before unmount returns"
    );
    drop(m);
}

/// What no remote can hold fails at once with the errno the man pages give.
#[test]
fn refuses_what_remotes_cannot_hold() {
    let server = DavServer::start();
    put_file(server.root(), "f.txt", b"x");
    let m = Mount::start(&server.url(), &[]);
    let root = m.path().to_path_buf();
    let results = within(QUICK, "refused operations", move || {
        let f = root.join("f.txt");
        vec![
            ("hard link", errno(fs::hard_link(&f, root.join("hard")))),
            // chmod and chown are kept since issue 18 (tests/vfs_meta.rs, fuse_standard_tools.rs).
            ("mkfifo", {
                let c = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
                // SAFETY: mkfifo with a valid C string.
                let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                (rc != 0).then(|| io::Error::last_os_error().raw_os_error().unwrap())
            }),
        ]
    });
    for (what, err) in results {
        assert_eq!(err, Some(libc::EPERM), "{what}: want EPERM, got {err:?}");
    }
    // A "change" to what is already shown is no change, and succeeds (cp -p, rsync -a do this).
    let root = m.path().to_path_buf();
    let unchanged = within(QUICK, "no-op chmod and chown", move || {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let f = root.join("f.txt");
        let meta = fs::metadata(&f).unwrap();
        (
            errno(fs::set_permissions(
                &f,
                fs::Permissions::from_mode(meta.mode() & 0o7777),
            )),
            errno(std::os::unix::fs::chown(&f, Some(meta.uid()), Some(meta.gid()))),
        )
    });
    assert_eq!(unchanged, (None, None), "chmod/chown to the current mode and owner");
    m.unmount();
}

/// A full staging disk gives the writer ENOSPC; a file accepted before stays safe and reaches the server.
#[test]
fn a_full_cache_disk_gives_enospc_and_loses_nothing_accepted() {
    let server = DavServer::start();
    let small = tempfile::tempdir().unwrap();
    let rc = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(small.path())
        .status()
        .unwrap();
    assert!(rc.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.path().to_path_buf());
    let args = state_args(small.path());
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--min-free", "1"]);
    let m = Mount::start(&server.url(), &args);
    let (ok_path, big_path) = (m.path().join("small.txt"), m.path().join("big.bin"));
    // Both files exist before the server stops answering, so nothing below needs it.
    let (small_file, big_file) = within(QUICK, "create", move || {
        (File::create(&ok_path).unwrap(), File::create(&big_path).unwrap())
    });
    server.set_hang(true);
    let err = within(QUICK, "writes", move || {
        let mut small_file = small_file;
        small_file.write_all(b"accepted before the disk filled").unwrap();
        drop(small_file);
        let mut f = big_file;
        let chunk = vec![1u8; 1 << 20];
        let mut err = None;
        for _ in 0..32 {
            if let Err(e) = f.write_all(&chunk) {
                err = e.raw_os_error();
                break;
            }
        }
        err
    });
    assert_eq!(err, Some(libc::ENOSPC), "writing past the staging disk");
    server.set_hang(false);
    let target = server.root().join("small.txt");
    eventually(Duration::from_secs(60), "the accepted file reaches the server", || {
        fs::read(&target)
            .map(|b| b == b"accepted before the disk filled")
            .unwrap_or(false)
    });
    drop(m);
}

// ---------------------------------------------------------------------------------------------------------------
// Apache only: uploads that follow the writer (Apache stages PUT bodies, so a cut-off PUT changes nothing)
// ---------------------------------------------------------------------------------------------------------------

/// Bytes sent so far by the running upload of `name`, from `cloudmount status --json`.
fn bytes_sent(state: &Path, name: &str) -> u64 {
    let (mounts, _) = status_json(state);
    mounts[0]["uploads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["name"] == name && u["running"] == true)
        .filter_map(|u| u["sent"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A big file written in order goes up while it is written: before the close the server has taken most of it
/// (but shows nothing of it), and after the close it holds exactly the content.
#[test]
fn apache_takes_a_big_file_while_it_is_written() {
    let server = ApacheServer::start();
    let state = tempfile::tempdir().unwrap();
    let args = state_args(state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = random_bytes(31, 24 << 20);
    let m = Mount::start(&server.url(), &args);
    let mut w = Writer::open(&m.path().join("growing.bin"), &data, true);
    w.write(0, 0..16 << 20);
    eventually(
        Duration::from_secs(60),
        "the upload has sent 8 MiB while the file is still open",
        || bytes_sent(state.path(), "growing.bin") >= 8 << 20,
    );
    let on_server = fs::metadata(server.root().join("growing.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(on_server, 0, "nothing of an unfinished upload is visible on the server");
    w.write(16 << 20, 16 << 20..24 << 20);
    w.fsync();
    assert_same_bytes(
        &fs::read(server.root().join("growing.bin")).unwrap(),
        &data,
        "server side after fsync",
    );
    w.close();
    m.unmount();
}

/// A writer that goes back (a header filled in at the end) stops the upload under way: the server keeps its
/// old copy whole meanwhile, and after the close holds the new content, with no conflict copy or leftover.
#[test]
fn apache_keeps_its_copy_whole_when_a_writer_goes_back() {
    let server = ApacheServer::start();
    let state = tempfile::tempdir().unwrap();
    let args = state_args(state.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old = random_bytes(32, 1 << 20);
    put_file(server.root(), "muxed.bin", &old);
    // The writer's source: the content with a placeholder header, then the real header.
    let mut source = random_bytes(33, 16 << 20);
    source.extend_from_slice(b"HEADER");
    let mut data = source[..16 << 20].to_vec();
    data[..6].copy_from_slice(b"HEADER");
    let m = Mount::start(&server.url(), &args);
    let mut w = Writer::open(&m.path().join("muxed.bin"), &source, true);
    w.write(0, 0..16 << 20);
    eventually(Duration::from_secs(60), "the upload follows the writer", || {
        bytes_sent(state.path(), "muxed.bin") >= 8 << 20
    });
    w.write(0, 16 << 20..(16 << 20) + 6);
    eventually(
        Duration::from_secs(60),
        "the upload that followed the writer stops",
        || bytes_sent(state.path(), "muxed.bin") == 0,
    );
    assert_same_bytes(
        &fs::read(server.root().join("muxed.bin")).unwrap(),
        &old,
        "the server's copy while the file is open",
    );
    w.fsync();
    w.close();
    assert_same_bytes(
        &fs::read(server.root().join("muxed.bin")).unwrap(),
        &data,
        "server side after fsync",
    );
    m.unmount();
    let mut names: Vec<String> = fs::read_dir(server.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["muxed.bin"],
        "no conflict copies or partial uploads left on the server"
    );
}
