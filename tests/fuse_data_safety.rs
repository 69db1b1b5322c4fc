//! Data safety of everyday writes on a real FUSE mount (issue 14): editors and shells writing a
//! file while its previous upload is still on its way, reads of one's own writes, `sync FILE`,
//! modification times under an editor, names that look like ours, and repeated crashes through a
//! slow link. Against the in-process WebDAV server and Apache mod_dav.
//!
//! Races run many rounds, the loaded ones with CPU hogs beside them. Every filesystem access is
//! bounded, so a hang fails instead of blocking.

#[macro_use]
mod common;

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::mount::{eventually, run, run_ok, within, Mount};
use common::relay::Relay;
use common::servers::TestServer;

const QUICK: Duration = Duration::from_secs(60);

/// `yes > /dev/null` children that keep the CPUs busy until dropped (then killed, by pid).
struct CpuHogs(Vec<Child>);

impl CpuHogs {
    fn start(n: usize) -> CpuHogs {
        CpuHogs(
            (0..n)
                .map(|_| Command::new("yes").stdout(Stdio::null()).spawn().expect("start yes"))
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `sh -c SCRIPT` in `dir`, which must succeed within [`QUICK`].
fn sh(dir: &Path, script: &str) {
    run_ok(Command::new("sh").arg("-c").arg(script).current_dir(dir), QUICK);
}

/// Names of the conflict copies anywhere below `root`.
fn conflict_copies(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if e.file_name().to_string_lossy().contains("(conflict") {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

fn read(path: &Path) -> Vec<u8> {
    let p = path.to_path_buf();
    within(QUICK, "read", move || fs::read(&p).unwrap())
}

fn addr_of(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    format!("127.0.0.1:{}", u.port().unwrap()).parse().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Checks run against both servers
// ---------------------------------------------------------------------------------------------------------------

/// Item 1: server items whose names begin with `local:` are server items: `rm` reaches the server.
fn a_name_that_begins_with_local_is_removed_on_the_server(server: &dyn TestServer) {
    fs::write(server.root().join("local:top.txt"), b"top\n").unwrap();
    let m = Mount::start(&server.url(), &[]);
    sh(m.path(), "rm local:top.txt");
    assert!(!server.root().join("local:top.txt").exists(), "rm reached the server");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !m.path().join("local:top.txt").exists(),
        "the removed file does not come back"
    );
    m.unmount();
}

/// Item 1: `mv` inside a folder called `local:notes` reaches the server. (In-process server only: Apache answers
/// 500 to a MOVE whose paths hold a `:`, a WebDAV client matter of its own.)
#[test]
fn a_move_below_a_folder_called_local_reaches_the_server() {
    let server = DavServer::start();
    fs::create_dir(server.root().join("local:notes")).unwrap();
    fs::write(server.root().join("local:notes/a.txt"), b"a\n").unwrap();
    let m = Mount::start(&server.url(), &[]);
    sh(m.path(), "mv local:notes/a.txt local:notes/b.txt");
    assert!(
        !server.root().join("local:notes/a.txt").exists(),
        "mv reached the server"
    );
    assert_eq!(fs::read(server.root().join("local:notes/b.txt")).unwrap(), b"a\n");
    m.unmount();
}

/// Item 3: vim's save (open without O_TRUNC, ftruncate, a write of the same size, fsync, close) right after the
/// file was written: the mount shows the saved text at once and the server ends up with it, no conflict copy.
fn a_same_size_save_right_after_a_write_is_kept(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &[]);
    for i in 0..4 {
        sh(
            m.path(),
            &format!("printf 'line1\\nline2\\n' > v{i}.txt && vim -u NONE -es -c '%s/line1/LINE1/' -c wq v{i}.txt"),
        );
        assert_eq!(
            read(&m.path().join(format!("v{i}.txt"))),
            b"LINE1\nline2\n",
            "round {i}: the mount shows the save"
        );
    }
    thread::sleep(Duration::from_secs(2));
    for i in 0..4 {
        assert_eq!(
            read(&m.path().join(format!("v{i}.txt"))),
            b"LINE1\nline2\n",
            "round {i}: two seconds later"
        );
    }
    m.unmount();
    for i in 0..4 {
        assert_eq!(
            fs::read(server.root().join(format!("v{i}.txt"))).unwrap(),
            b"LINE1\nline2\n",
            "round {i}: server"
        );
    }
    assert!(
        conflict_copies(server.root()).is_empty(),
        "{:?}",
        conflict_copies(server.root())
    );
}

/// Items 4 and 9: `/bin/echo x > F` (create, a close of bash's duplicate descriptor, write, close), many rounds
/// on a loaded machine: every file holds its line, no conflict copies.
fn echo_into_new_files_keeps_every_line(server: &dyn TestServer) {
    let _hogs = CpuHogs::start(2);
    let m = Mount::start(&server.url(), &[]);
    sh(
        m.path(),
        "for i in $(seq 1 150); do /bin/echo \"line $i\" > f$i.txt; done",
    );
    // And over existing files, as in item 9.
    sh(
        m.path(),
        "for i in $(seq 1 50); do /bin/echo \"again $i\" > f$i.txt; done",
    );
    m.unmount();
    for i in 1..=150 {
        let want = if i <= 50 {
            format!("again {i}\n")
        } else {
            format!("line {i}\n")
        };
        let got = fs::read_to_string(server.root().join(format!("f{i}.txt"))).unwrap();
        assert_eq!(got, want, "f{i}.txt on the server");
    }
    assert!(
        conflict_copies(server.root()).is_empty(),
        "{:?}",
        conflict_copies(server.root())
    );
}

/// Item 5: an upload that lands while the file is still open (dd conv=fsync) moves the mount to its version: the
/// next `>` is based on it (no conflict copy) and reads see the new bytes.
fn a_rewrite_after_an_in_place_fsync_is_no_conflict(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &[]);
    for i in 0..3 {
        sh(m.path(), &format!("printf 'AAAA\\n' > F{i}"));
        thread::sleep(Duration::from_millis(1500));
        sh(
            m.path(),
            &format!("printf B | dd of=F{i} conv=notrunc,fsync status=none"),
        );
        assert_eq!(
            read(&m.path().join(format!("F{i}"))),
            b"BAAA\n",
            "round {i}: read your own writes"
        );
        sh(m.path(), &format!("printf 'CCCC\\n' > F{i}"));
        assert_eq!(read(&m.path().join(format!("F{i}"))), b"CCCC\n", "round {i}");
    }
    m.unmount();
    for i in 0..3 {
        assert_eq!(
            fs::read(server.root().join(format!("F{i}"))).unwrap(),
            b"CCCC\n",
            "round {i}: server"
        );
    }
    assert!(
        conflict_copies(server.root()).is_empty(),
        "{:?}",
        conflict_copies(server.root())
    );
}

/// Items 5 and 7: read a file, rewrite it in place with fsync, close: the next read returns the new bytes (not the
/// old version's cached blocks), of the same size and of another size, many rounds on a loaded machine.
fn reads_after_an_in_place_rewrite_see_it(server: &dyn TestServer) {
    let _hogs = CpuHogs::start(2);
    let old: Vec<u8> = (0..131u32).map(|i| b'a' + (i % 26) as u8).collect();
    for i in 0..6 {
        fs::write(server.root().join(format!("r{i}.txt")), &old).unwrap();
    }
    let m = Mount::start(&server.url(), &[]);
    for i in 0..6 {
        let f = m.path().join(format!("r{i}.txt"));
        assert_eq!(read(&f), old);
        let new: Vec<u8> = if i % 2 == 0 {
            old.iter().map(|b| b.to_ascii_uppercase()).collect()
        } else {
            let mut v = old.clone();
            v.extend_from_slice(b"+2");
            v
        };
        let src = tempfile::NamedTempFile::new().unwrap();
        fs::write(src.path(), &new).unwrap();
        run_ok(
            Command::new("dd")
                .arg(format!("if={}", src.path().display()))
                .arg(format!("of={}", f.display()))
                .args(["conv=notrunc,fsync", "status=none"]),
            QUICK,
        );
        assert_eq!(read(&f), new, "round {i}: read after the rewrite");
        assert_eq!(fs::metadata(&f).unwrap().len(), new.len() as u64, "round {i}: stat");
    }
    m.unmount();
}

/// Item 6: the modification time a file was written with stays, to the nanosecond, after the TTL (servers keep
/// whole seconds), so an editor does not think someone else changed it.
fn the_time_a_file_was_written_with_stays(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &["--ttl", "1"]);
    let g = m.path().join("G");
    sh(m.path(), "echo hello > G");
    let first = fs::metadata(&g).unwrap();
    thread::sleep(Duration::from_millis(2500));
    let later = fs::metadata(&g).unwrap();
    assert_eq!(
        (later.mtime(), later.mtime_nsec()),
        (first.mtime(), first.mtime_nsec()),
        "mtime after the TTL"
    );
    // vim compares it to the nanosecond before saving: the save must happen.
    sh(m.path(), "vim -u NONE -es -c '%s/hello/HELLO/' -c wq G");
    assert_eq!(read(&g), b"HELLO\n");
    m.unmount();
    assert_eq!(fs::read(server.root().join("G")).unwrap(), b"HELLO\n");
}

on_both_servers!(
    dav,
    apache,
    start(),
    [
        a_name_that_begins_with_local_is_removed_on_the_server,
        a_same_size_save_right_after_a_write_is_kept,
        echo_into_new_files_keeps_every_line,
        a_rewrite_after_an_in_place_fsync_is_no_conflict,
        reads_after_an_in_place_rewrite_see_it,
        the_time_a_file_was_written_with_stays,
    ]
);

// ---------------------------------------------------------------------------------------------------------------
// Through a slow link to Apache
// ---------------------------------------------------------------------------------------------------------------

/// Item 3 through a 4 MiB/s link, where the first upload is still on its way when vim saves.
#[test]
fn a_same_size_save_through_a_slow_link_is_kept() {
    let server = ApacheServer::start();
    let relay = Relay::start(addr_of(&server.url()), 4 << 20);
    let m = Mount::start(&relay.url_for(&server.url()), &[]);
    for i in 0..6 {
        sh(
            m.path(),
            &format!("printf 'line1\\nline2\\n' > v{i}.txt && vim -u NONE -es -c '%s/line1/LINE1/' -c wq v{i}.txt"),
        );
    }
    m.unmount();
    for i in 0..6 {
        assert_eq!(
            fs::read(server.root().join(format!("v{i}.txt"))).unwrap(),
            b"LINE1\nline2\n",
            "round {i}"
        );
    }
    assert!(
        conflict_copies(server.root()).is_empty(),
        "{:?}",
        conflict_copies(server.root())
    );
}

/// Item 12: `sync FILE` (a read-only open and fsync) returns only once the server holds the file.
#[test]
fn sync_file_waits_for_the_upload() {
    let server = ApacheServer::start();
    let relay = Relay::start(addr_of(&server.url()), 1 << 20);
    let m = Mount::start(&relay.url_for(&server.url()), &[]);
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), &data).unwrap();
    run_ok(Command::new("cp").arg(src.path()).arg(m.path().join("big.bin")), QUICK);
    run_ok(Command::new("sync").arg(m.path().join("big.bin")), QUICK);
    assert_eq!(
        fs::metadata(server.root().join("big.bin")).map(|md| md.len()).ok(),
        Some(data.len() as u64),
        "sync FILE returned: the server holds all of it"
    );
    m.unmount();
}

/// Item 15: kill -9 of the daemon, again and again on one state directory, through a 512 KiB/s link, while a writer
/// copies new files and rewrites files of earlier rounds (each `cp` returns 0). After a graceful unmount every file
/// holds its last accepted content and no conflict copy exists: nobody else wrote.
#[test]
fn repeated_crashes_keep_the_last_write_and_make_no_conflicts() {
    let server = ApacheServer::start();
    let relay = Relay::start(addr_of(&server.url()), 512 << 10);
    let url = relay.url_for(&server.url());
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().display().to_string();
    let src = tempfile::tempdir().unwrap();
    let mut expected: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for round in 0..8u32 {
        let m = Mount::start(&url, &["--state-dir", &state_arg]);
        let mut writes = vec![format!("f{round}.bin")];
        if round >= 1 {
            writes.push(format!("f{}.bin", round - 1));
        }
        if round >= 3 {
            writes.push(format!("f{}.bin", round - 3));
        }
        for name in writes {
            let content: Vec<u8> = (0..(200u32 << 10))
                .map(|i| ((i * 7 + round * 13) % 251) as u8)
                .collect();
            let from = src.path().join(&name);
            fs::write(&from, &content).unwrap();
            let f = run(Command::new("cp").arg(&from).arg(m.path().join(&name)), QUICK);
            assert!(f.status.success(), "cp {name} in round {round}: {}", f.both());
            expected.insert(name, content);
        }
        thread::sleep(Duration::from_millis(1000 + 250 * (round as u64 % 5)));
        m.stop_with_signal_unchecked(libc::SIGKILL);
    }
    let m = Mount::start(&url, &["--state-dir", &state_arg]);
    m.unmount();
    for (name, content) in &expected {
        let got = fs::read(server.root().join(name)).unwrap();
        assert!(got == *content, "{name}: the server holds an older version");
    }
    let copies = conflict_copies(server.root());
    assert!(copies.is_empty(), "no conflict copies: {copies:?}");
}

/// A mount whose daemon is killed: the kernel's mount goes with it (`fusermount3 -u` after the kill).
trait KillMount {
    fn stop_with_signal_unchecked(self, signal: i32);
}

impl KillMount for Mount {
    fn stop_with_signal_unchecked(self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        let dir = self.path().to_path_buf();
        eventually(QUICK, "the killed daemon's mount goes", || {
            let _ = Command::new("fusermount3").arg("-u").arg(&dir).status();
            !common::mount::is_mounted(&dir)
        });
        drop(self);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// OneDrive (the fake Graph server)
// ---------------------------------------------------------------------------------------------------------------

/// Item 3 on OneDrive: vim's same-size save right after the file was written lands, with no conflict copy.
#[test]
fn onedrive_a_same_size_save_right_after_a_write_is_kept() {
    let d = common::graph::GraphDrive::start();
    let m = d.mount(&[]);
    for i in 0..4 {
        sh(
            m.path(),
            &format!("printf 'line1\\nline2\\n' > v{i}.txt && vim -u NONE -es -c '%s/line1/LINE1/' -c wq v{i}.txt"),
        );
        assert_eq!(
            read(&m.path().join(format!("v{i}.txt"))),
            b"LINE1\nline2\n",
            "round {i}"
        );
    }
    m.unmount();
    for i in 0..4 {
        assert_eq!(
            d.drive().file_bytes(&format!("/v{i}.txt")).as_deref(),
            Some(&b"LINE1\nline2\n"[..]),
            "round {i}: on the server"
        );
    }
    let names = d.drive().list("/");
    assert!(!names.iter().any(|n| n.contains("(conflict")), "{names:?}");
}

/// Item 7 on OneDrive, on a loaded machine: a reader that opens right after an in-place patch, while its upload is
/// still queued, and reads once the upload has landed, reads the patch, every round.
#[test]
fn onedrive_reads_its_own_in_place_patch_under_load() {
    let _hogs = CpuHogs::start(2);
    let d = common::graph::GraphDrive::start();
    let original: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    let patch = tempfile::NamedTempFile::new().unwrap();
    fs::write(patch.path(), vec![0xEEu8; 4096]).unwrap();
    let mut model = original.clone();
    model[300 * 4096..301 * 4096].fill(0xEE);
    for round in 0..6 {
        d.drive().put_file("/r/edit.bin", original.clone()).unwrap();
        let m = d.mount(&[]);
        let f = m.path().join("r/edit.bin");
        // Read it once, as `cmp` did before the edit: the old version's blocks are cached.
        assert!(read(&f) == original, "round {round}: before the patch");
        run_ok(
            Command::new("dd")
                .arg(format!("if={}", patch.path().display()))
                .arg(format!("of={}", f.display()))
                .args(["bs=4096", "seek=300", "conv=notrunc", "status=none"]),
            QUICK,
        );
        // O_DIRECT: the kernel's page cache (which dd's writes went through) must not answer for the daemon.
        let reader = {
            let f = f.clone();
            within(QUICK, "open", move || {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(f)
                    .unwrap()
            })
        };
        eventually(QUICK, "the patch lands on the server", || {
            d.drive().file_bytes("/r/edit.bin").is_some_and(|b| b[..] == model[..])
        });
        let got = within(QUICK, "read", move || {
            let mut reader = reader;
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut v).unwrap();
            v
        });
        assert!(got == model, "round {round}: the read differs from what was written");
        m.unmount();
    }
}
