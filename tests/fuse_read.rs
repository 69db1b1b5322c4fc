//! Acceptance tests of the first milestone, a read-only WebDAV mount, on real FUSE mounts of the `cloudmount`
//! binary. Most checks run against both the in-process `dav-server` (which can also count bytes, hang and go down)
//! and Apache mod_dav (a real packaged server with its own quirks).
//!
//! They need root and /dev/fuse, and Apache from `scripts/install-test-deps.sh`; they fail, never skip, without them.
//! Every filesystem access goes through a bounded helper, so a hung daemon fails the test instead of blocking CI;
//! time bounds are generous because the CI box has 2 loaded cores and runs a debug build.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::{assert_same_bytes, put_file, put_random_file, random_bytes, set_mtime_ago};
use common::mount::{
    cloudmount_bin, errno, eventually, is_mounted, require_fuse, run, run_ok, wait_no_process_mentions, within, Mount,
    MountPoint,
};
use common::servers::TestServer;

const MIB: u64 = 1 << 20;
/// Bound for listing, stat'ing or reading small files.
const QUICK: Duration = Duration::from_secs(60);
/// Bound for reading tens or hundreds of MiB through a debug build on a loaded 2-core box.
const BULK: Duration = Duration::from_secs(300);
/// How long an operation may take to fail while the server is down or hangs, with `--timeout 3`.
const OUTAGE_BOUND: Duration = Duration::from_secs(30);
const USER: &str = "alice";
const PASS: &str = "secret";

on_both_servers!(
    dav_server,
    apache,
    start(),
    [
        lists_a_folder_of_1000_files,
        reads_a_64_mib_file_byte_exact,
        lists_stats_and_reads_odd_names,
        sees_server_changes_once_the_ttl_runs_out,
        reads_256_mib_in_bounded_memory,
        reads_512_mib_with_default_settings_in_bounded_memory,
        refuses_every_write_with_erofs,
    ]
);

on_both_servers!(
    dav_server_with_auth,
    apache_with_auth,
    start_with_auth(USER, PASS),
    [
        mounts_with_user_and_password_command,
        mounts_with_password_from_the_environment,
        mounts_named_remotes_from_a_config_file,
        refuses_a_wrong_password_without_mounting,
    ]
);

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// `fs::read` through the mount, bounded.
fn read_mounted(path: &Path) -> Vec<u8> {
    let p = path.to_path_buf();
    within(QUICK, &format!("reading {}", p.display()), move || fs::read(&p))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Names in a mounted folder, via std::fs::read_dir, bounded.
fn names_in(dir: &Path) -> BTreeSet<String> {
    sizes_in(dir).into_keys().collect()
}

/// Names and sizes in a mounted folder, via std::fs::read_dir and metadata, bounded.
fn sizes_in(dir: &Path) -> BTreeMap<String, u64> {
    let d = dir.to_path_buf();
    within(QUICK, &format!("read_dir {}", d.display()), move || {
        fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()))
            .map(|e| {
                let e = e.expect("directory entry");
                let len = e.metadata().expect("metadata of a listed entry").len();
                (e.file_name().into_string().expect("utf-8 name"), len)
            })
            .collect()
    })
}

/// Names and sizes as `ls -ln` prints them (regular files only; names without spaces).
fn ls_sizes(dir: &Path) -> BTreeMap<String, u64> {
    let f = run_ok(
        Command::new("ls")
            .args(["-ln", "--time-style=+%s"])
            .arg(dir)
            .env("LC_ALL", "C"),
        QUICK,
    );
    f.stdout_text()
        .lines()
        .filter(|l| !l.starts_with("total "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(
                cols.len() == 7 && cols[0].starts_with('-'),
                "unexpected `ls -ln` line: {l:?}"
            );
            (cols[6].to_string(), cols[4].parse().expect("size column"))
        })
        .collect()
}
/// `cmp` of a server-side file with its mounted twin: proves the mounted bytes are exactly the server's.
fn cmp_with_server(server_copy: &Path, mounted: &Path) {
    run_ok(Command::new("cmp").arg(server_copy).arg(mounted), BULK);
}

// ---------------------------------------------------------------------------------------------------------------
// Checks run against both servers
// ---------------------------------------------------------------------------------------------------------------

/// `ls -l` of a folder of 1,000 files shows every one with its size, and read_dir agrees.
fn lists_a_folder_of_1000_files(server: &dyn TestServer) {
    let expected: BTreeMap<String, u64> = (0..1000u64)
        .map(|i| (format!("file-{i:04}.dat"), i * 37 % 5000))
        .collect();
    for (i, (name, size)) in expected.iter().enumerate() {
        put_file(
            server.root(),
            &format!("many/{name}"),
            &random_bytes(i as u64, *size as usize),
        );
    }
    let m = Mount::start(&server.url(), &[]);
    let dir = m.path().join("many");

    let listed = ls_sizes(&dir);
    assert_eq!(listed.len(), 1000, "`ls -l` shows {} entries, want 1000", listed.len());
    assert_eq!(listed, expected, "`ls -l` names or sizes differ from the server's");
    assert_eq!(sizes_in(&dir), expected, "read_dir + metadata disagree with the server");
    m.unmount();
}

/// A 64 MiB random file reads back identical to the server's copy.
fn reads_a_64_mib_file_byte_exact(server: &dyn TestServer) {
    let src = put_random_file(server.root(), "big.bin", 64, 64 * MIB);
    let m = Mount::start(&server.url(), &[]);
    assert_eq!(sizes_in(m.path()).get("big.bin"), Some(&(64 * MIB)));
    cmp_with_server(&src, &m.path().join("big.bin"));
    m.unmount();
}

/// Names that need percent-encoding or are long survive listing, stat and read.
fn lists_stats_and_reads_odd_names(server: &dyn TestServer) {
    let long = format!("{}.txt", &"long-name-".repeat(20)[..196]);
    assert_eq!(long.chars().count(), 200);
    let folder = "folder #1 é%";
    let mut files: Vec<String> = [
        "with space.txt",
        "hash#tag.txt",
        "100% sure.txt",
        "%41%2F is not an escape.txt",
        "a+b=c.txt",
        "café.txt",
        "日本.txt",
        "emoji 😀🎉.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.push(long);
    files.push(format!("{folder}/inner + file 日本 #.txt"));
    let contents: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, _)| random_bytes(100 + i as u64, 1000 + i * 321))
        .collect();
    for (name, data) in files.iter().zip(&contents) {
        put_file(server.root(), name, data);
    }
    let m = Mount::start(&server.url(), &[]);

    let want_top: BTreeSet<String> = files.iter().map(|f| f.split('/').next().unwrap().to_string()).collect();
    assert_eq!(names_in(m.path()), want_top, "read_dir of the mount root");
    let ls = run_ok(
        Command::new("ls")
            .args(["-1A", "--quoting-style=literal"])
            .arg(m.path()),
        QUICK,
    );
    let ls_names: BTreeSet<String> = ls.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(ls_names, want_top, "`ls` of the mount root");

    for (name, data) in files.iter().zip(&contents) {
        let path = m.path().join(name);
        let p = path.clone();
        let meta = within(QUICK, "stat", move || fs::metadata(p)).unwrap_or_else(|e| panic!("stat {name:?}: {e}"));
        assert!(meta.is_file(), "{name:?} is not a regular file");
        assert_eq!(meta.len(), data.len() as u64, "size of {name:?}");
        let st = run_ok(Command::new("stat").args(["-c", "%s"]).arg(&path), QUICK);
        assert_eq!(
            st.stdout_text().trim(),
            data.len().to_string(),
            "`stat` size of {name:?}"
        );
        assert_same_bytes(&read_mounted(&path), data, name);
    }
    m.unmount();
}

/// A same-size rewrite on the server is seen after reopen once the TTL has run out, and the old bytes never come
/// back; a file added on the server shows up in the listing.
fn sees_server_changes_once_the_ttl_runs_out(server: &dyn TestServer) {
    let (old, new) = (random_bytes(1, 200_000), random_bytes(2, 200_000));
    let src = put_file(server.root(), "changing.bin", &old);
    set_mtime_ago(&src, 60);
    let m = Mount::start(&server.url(), &["--ttl", "1"]);
    let mounted = m.path().join("changing.bin");
    assert_same_bytes(&read_mounted(&mounted), &old, "first read");
    assert_same_bytes(&read_mounted(&mounted), &old, "second read (cached)");

    // Rewrite in place, same size; the mtime moves 5 s later so that every server's ETag changes.
    put_file(server.root(), "changing.bin", &new);
    set_mtime_ago(&src, 55);
    put_file(server.root(), "added.txt", b"added on the server");
    // The TTL is 1 s; wait 3 so that any metadata cached before the change has expired, whatever the load.
    thread::sleep(Duration::from_secs(3));

    for i in 0..5 {
        assert_same_bytes(&read_mounted(&mounted), &new, &format!("read {i} after the TTL"));
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        names_in(m.path()).contains("added.txt"),
        "a file added on the server is not listed after the TTL"
    );
    m.unmount();
}

/// Reading a 256 MiB file with a 32 MiB cache keeps the daemon's peak RSS under 32 + 64 MiB.
fn reads_256_mib_in_bounded_memory(server: &dyn TestServer) {
    let src = put_random_file(server.root(), "huge.bin", 256, 256 * MIB);
    let m = Mount::start(&server.url(), &["--cache-size", "32"]);
    cmp_with_server(&src, &m.path().join("huge.bin"));
    let peak = m.peak_rss_kib();
    let limit = (32 + 64) * 1024;
    assert!(
        peak < limit,
        "daemon peak RSS {peak} KiB, want < {limit} KiB (cache 32 MiB + 64 MiB overhead)"
    );
    m.unmount();
}

/// With the default settings (a 128 MiB cache, 32 MiB prefetch), copying a file far bigger than the cache stays
/// well under the 256 MiB peak RSS target (docs/benchmarks.md): the cap counts downloads under way, and freed
/// blocks go back to the system rather than fragmenting the allocator's arenas.
fn reads_512_mib_with_default_settings_in_bounded_memory(server: &dyn TestServer) {
    let src = put_random_file(server.root(), "bigger.bin", 512, 512 * MIB);
    let m = Mount::start(&server.url(), &[]);
    cmp_with_server(&src, &m.path().join("bigger.bin"));
    let peak = m.peak_rss_kib();
    let limit = (128 + 64) * 1024;
    assert!(
        peak < limit,
        "daemon peak RSS {peak} KiB, want < {limit} KiB (default cache 128 MiB + 64 MiB overhead)"
    );
    m.unmount();
    fs::remove_file(&src).expect("remove the 512 MiB file");
}

/// With `--read-only`, creating, writing, deleting, renaming and chmod'ing all fail with EROFS, and the server's
/// files are untouched.
fn refuses_every_write_with_erofs(server: &dyn TestServer) {
    let data = random_bytes(9, 10_000);
    let src = put_file(server.root(), "dir/existing.txt", &data);
    for args in [&["--read-only"][..]] {
        let m = Mount::start(&server.url(), args);
        let root = m.path().to_path_buf();
        let results = within(QUICK, "write attempts", move || {
            let dir = root.join("dir");
            let existing = dir.join("existing.txt");
            vec![
                ("create a file", errno(File::create(root.join("newfile")))),
                ("mkdir", errno(fs::create_dir(root.join("newdir")))),
                (
                    "open an existing file for writing",
                    errno(OpenOptions::new().write(true).open(&existing)),
                ),
                (
                    "open for append",
                    errno(OpenOptions::new().append(true).open(&existing)),
                ),
                ("remove a file", errno(fs::remove_file(&existing))),
                ("remove a folder", errno(fs::remove_dir(&dir))),
                ("rename", errno(fs::rename(&existing, dir.join("renamed.txt")))),
                (
                    "chmod",
                    errno(fs::set_permissions(&existing, fs::Permissions::from_mode(0o600))),
                ),
            ]
        });
        for (what, err) in results {
            assert_eq!(
                err,
                Some(libc::EROFS),
                "{what} with mount args {args:?}: want EROFS, got {err:?}"
            );
        }
        let touch = run(
            Command::new("touch").arg(m.path().join("newfile")).env("LC_ALL", "C"),
            QUICK,
        );
        assert!(
            !touch.status.success(),
            "`touch newfile` succeeded on a read-only mount"
        );
        assert!(
            touch.stderr.contains("Read-only file system"),
            "touch: {}",
            touch.stderr
        );
        m.unmount();
    }
    assert_same_bytes(
        &fs::read(&src).expect("server copy"),
        &data,
        "server-side file after write attempts",
    );
    let server_names: BTreeSet<String> = fs::read_dir(server.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !server_names.contains("newfile") && !server_names.contains("newdir"),
        "server gained {server_names:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Basic auth (both servers, started with USER/PASS)
// ---------------------------------------------------------------------------------------------------------------

/// Puts a file on the server, mounts with `args`, reads the file back.
fn mount_and_read(server: &dyn TestServer, remote: &str, args: &[&str], env: &[(&str, &str)]) {
    let data = random_bytes(5, 5000);
    put_file(server.root(), "private.txt", &data);
    let m = Mount::start_with_env(remote, args, env);
    assert_same_bytes(
        &read_mounted(&m.path().join("private.txt")),
        &data,
        "private.txt through an authenticated mount",
    );
    m.unmount();
}

fn mounts_with_user_and_password_command(server: &dyn TestServer) {
    let cmd = format!("echo {PASS}");
    mount_and_read(
        server,
        &server.url(),
        &["--user", USER, "--password-command", &cmd],
        &[],
    );
}

fn mounts_with_password_from_the_environment(server: &dyn TestServer) {
    mount_and_read(
        server,
        &server.url(),
        &["--user", USER],
        &[("CLOUDMOUNT_PASSWORD", PASS)],
    );
}

/// Named remotes from `--config`, one with `password`, one with `password_command`.
fn mounts_named_remotes_from_a_config_file(server: &dyn TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let url = server.url();
    let text = format!(
        "[remotes.plain]\ntype = \"webdav\"\nurl = \"{url}\"\nuser = \"{USER}\"\npassword = \"{PASS}\"\n\n\
         [remotes.viacmd]\ntype = \"webdav\"\nurl = \"{url}\"\nuser = \"{USER}\"\npassword_command = \"echo {PASS}\"\n"
    );
    fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    mount_and_read(server, "plain", &["--config", config], &[]);
    mount_and_read(server, "viacmd", &["--config", config], &[]);
}

/// A wrong password makes `cloudmount mount` (daemon mode) fail with a message about authentication, and leaves
/// nothing mounted and no daemon behind.
fn refuses_a_wrong_password_without_mounting(server: &dyn TestServer) {
    require_fuse();
    let mp = MountPoint::new();
    let f = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .args(["--user", USER, "--password-command", "echo wrong", "--timeout", "10"]),
        QUICK,
    );
    let mounted_at_exit = is_mounted(mp.path());
    assert!(
        !f.status.success(),
        "mount with a wrong password exited 0\n{}",
        f.both()
    );
    let message = format!("{}{}", f.stderr, f.stdout_text()).to_lowercase();
    assert!(
        message.contains("authentic"),
        "the error does not mention authentication:\n{}",
        f.both()
    );
    assert!(
        !mounted_at_exit,
        "{} was mounted despite the wrong password",
        mp.path().display()
    );
    thread::sleep(Duration::from_secs(1));
    assert!(
        !is_mounted(mp.path()),
        "{} got mounted after the command failed",
        mp.path().display()
    );
    let left = wait_no_process_mentions(mp.path(), Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "processes {left:?} still serve {} after a failed mount",
        mp.path().display()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// In-process server only: byte counting, outages, daemon lifecycle
// ---------------------------------------------------------------------------------------------------------------

/// A 4 KiB pread at 48 MiB of a 64 MiB file on a fresh mount returns the right bytes and downloads ≤ 4 MiB.
#[test]
fn a_4k_read_at_48_mib_downloads_at_most_4_mib() {
    let server = DavServer::start();
    let src = put_random_file(server.root(), "big.bin", 48, 64 * MIB);
    let mut want = vec![0u8; 4096];
    File::open(&src).unwrap().read_exact_at(&mut want, 48 * MIB).unwrap();
    let m = Mount::start(&server.url(), &[]);

    let path = m.path().join("big.bin");
    let file = within(QUICK, "open", move || File::open(path)).expect("open big.bin on the mount");
    server.reset_counters();
    let (file, got) = within(QUICK, "pread", move || {
        let mut buf = vec![0u8; 4096];
        let r = file.read_exact_at(&mut buf, 48 * MIB).map(|_| buf);
        (file, r)
    });
    // Let any download the read started in the background land before counting.
    thread::sleep(Duration::from_millis(500));
    let downloaded = server.get_body_bytes();
    drop(file);

    assert_same_bytes(&got.expect("pread at 48 MiB"), &want, "4 KiB at 48 MiB");
    assert!(
        downloaded <= 4 * MIB,
        "a 4 KiB read downloaded {downloaded} bytes, want ≤ 4 MiB"
    );
    m.unmount();
}

/// A log line written deep in the core (here: a file deleted on the server while open keeps its attributes) carries
/// the span of the FUSE request it serves: the operation, the inode, the handle and the process.
#[test]
fn core_log_lines_carry_the_request_they_serve() {
    use std::os::unix::fs::MetadataExt;
    let server = DavServer::start();
    put_file(server.root(), "vanishing.txt", b"soon gone");
    let m = Mount::start_with_env(&server.url(), &["--ttl", "0"], &[("RUST_LOG", "cloudmount=debug")]);
    let path = m.path().join("vanishing.txt");
    let file = within(QUICK, "open", move || File::open(path)).expect("open vanishing.txt on the mount");
    let file = std::sync::Arc::new(file);
    let f = file.clone();
    let ino = within(QUICK, "fstat", move || f.metadata()).expect("fstat").ino();
    fs::remove_file(server.root().join("vanishing.txt")).unwrap();
    let said = "gone from the server while open";
    eventually(QUICK, "the core says the open file is gone from the server", || {
        let f = file.clone();
        within(QUICK, "fstat", move || f.metadata()).expect("fstat of an open file gone from the server");
        m.log().contains(said)
    });
    let log = m.log();
    let line = log.lines().find(|l| l.contains(said)).unwrap();
    let ino_field = format!("ino={ino}");
    assert!(
        line.contains("op=getattr")
            && line.contains("pid=")
            && line.contains("unique=")
            && line.split([' ', '}', '{']).any(|w| w == ino_field),
        "the core's line lacks the request's span (op=getattr, {ino_field}, pid, unique): {line}"
    );
    drop(file);
    m.unmount();
}

/// Block files in a disk cache folder.
fn block_files(dir: &Path) -> usize {
    let Ok(items) = fs::read_dir(dir.join("blocks")) else {
        return 0;
    };
    items
        .flatten()
        .filter_map(|item| fs::read_dir(item.path()).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "blk"))
        .count()
}

/// What one mount downloaded stays in its `--disk-cache-dir`: the next mount with that folder reads the file
/// without a single GET, and still sees the new bytes once the file is replaced on the server.
#[test]
fn the_disk_cache_outlives_the_mount_and_never_serves_a_replaced_file() {
    let server = DavServer::start();
    let old = random_bytes(61, 5 * MIB as usize + 123);
    let src = put_file(server.root(), "cached.bin", &old);
    // The replacement must get another ETag (dav-server derives it from size and mtime).
    set_mtime_ago(&src, 3600);
    let cache = tempfile::tempdir().expect("disk cache dir");
    let cache_dir = cache.path().to_str().expect("UTF-8 temp path");
    // No free-space floor: the test must not depend on how full the machine's disk is.
    let args = [
        "--disk-cache-dir",
        cache_dir,
        "--disk-cache-min-free",
        "0",
        "--ttl",
        "1",
    ];

    let m = Mount::start(&server.url(), &args);
    assert_same_bytes(&read_mounted(&m.path().join("cached.bin")), &old, "first read");
    // The daemon writes what it still holds for the disk cache before it exits.
    m.unmount();
    assert_eq!(
        block_files(cache.path()),
        6,
        "one file per 1 MiB block of the 5 MiB file"
    );

    server.reset_counters();
    let m = Mount::start(&server.url(), &args);
    let path = m.path().join("cached.bin");
    assert_same_bytes(&read_mounted(&path), &old, "read on the next mount");
    let p = path.clone();
    let tail = within(QUICK, "pread", move || {
        let mut buf = vec![0u8; 5000];
        File::open(&p)
            .and_then(|f| f.read_exact_at(&mut buf, 3 * MIB - 100))
            .map(|_| buf)
    })
    .expect("pread on the next mount");
    assert_same_bytes(
        &tail,
        &old[3 * MIB as usize - 100..3 * MIB as usize + 4900],
        "pread across blocks",
    );
    assert_eq!(
        server.get_requests(),
        0,
        "the next mount downloaded cached blocks again"
    );

    let new = random_bytes(62, old.len());
    put_file(server.root(), "cached.bin", &new);
    eventually(BULK, "the replaced file's new bytes are read", || {
        read_mounted(&path) == new
    });
    assert!(server.get_requests() > 0);
    m.unmount();
}

/// Sets up `sub1/` and `sub2/` on a server, mounts with `--timeout 3` and lists the root while the server is up.
fn mount_for_outage(server: &DavServer) -> Mount {
    put_file(server.root(), "sub1/a.txt", b"a");
    put_file(server.root(), "sub2/b.txt", b"b");
    let m = Mount::start(&server.url(), &["--timeout", "3"]);
    let want: BTreeSet<String> = ["sub1", "sub2"].map(String::from).into();
    assert_eq!(names_in(m.path()), want);
    m
}

/// `ls` of a folder not listed before must fail, within the bound, while the server is unreachable.
fn assert_ls_fails(dir: &Path, why: &str) {
    let f = run(Command::new("ls").arg(dir), OUTAGE_BOUND);
    assert!(
        !f.status.success(),
        "`ls {}` succeeded while {why}:\n{}",
        dir.display(),
        f.both()
    );
}

/// ... and work again once it is back.
fn assert_ls_lists(dir: &Path, name: &str) {
    let f = run_ok(Command::new("ls").arg(dir), QUICK);
    assert_eq!(
        f.stdout_text().trim(),
        name,
        "`ls {}` after the server came back",
        dir.display()
    );
}

#[test]
fn errors_within_the_timeout_while_the_server_is_down_then_recovers() {
    let server = DavServer::start();
    let m = mount_for_outage(&server);
    server.stop();
    assert_ls_fails(&m.path().join("sub1"), "the server was down");
    server.restart();
    assert_ls_lists(&m.path().join("sub1"), "a.txt");
    m.unmount();
}

#[test]
fn errors_within_the_timeout_while_the_server_hangs_then_recovers() {
    let server = DavServer::start();
    let m = mount_for_outage(&server);
    server.set_hang(true);
    assert_ls_fails(&m.path().join("sub2"), "the server hung");
    server.set_hang(false);
    assert_ls_lists(&m.path().join("sub2"), "b.txt");
    m.unmount();
}

/// Without `--foreground`, `cloudmount mount` returns 0 only once the mount is live, lets go of the caller's
/// stdout/stderr, and `cloudmount unmount` removes the mount and ends the daemon.
#[test]
fn daemon_mode_returns_once_mounted_and_unmount_removes_it() {
    require_fuse();
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let mp = MountPoint::new();
    let log = tempfile::tempdir().unwrap();
    let f = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .arg("--log-file")
            .arg(log.path().join("cloudmount.log"))
            .arg("--state-dir")
            .arg(log.path().join("state")),
        QUICK,
    );
    let mounted_at_exit = is_mounted(mp.path());
    assert!(
        f.status.success(),
        "`cloudmount mount` failed: {}\n{}",
        f.status,
        f.both()
    );
    assert!(
        mounted_at_exit,
        "`cloudmount mount` returned 0 before {} was a mountpoint",
        mp.path().display()
    );
    assert!(
        !f.pipes_left_open,
        "the daemon kept the caller's stdout/stderr open: `$(cloudmount mount ...)` hangs"
    );
    assert_eq!(read_mounted(&mp.path().join("hello.txt")), b"hello");

    run_ok(
        Command::new(cloudmount_bin())
            .arg("unmount")
            .arg(mp.path())
            .arg("--state-dir")
            .arg(log.path().join("state")),
        QUICK,
    );
    assert!(!is_mounted(mp.path()), "still mounted after `cloudmount unmount`");
    let left = wait_no_process_mentions(mp.path(), Duration::from_secs(15));
    assert!(
        left.is_empty(),
        "daemon(s) {left:?} still running after `cloudmount unmount`"
    );
}

/// Mounting a server that refuses connections fails (non-zero, a message) within the timeout and mounts nothing.
#[test]
fn mount_fails_cleanly_when_the_server_is_unreachable() {
    require_fuse();
    let server = DavServer::start();
    server.stop();
    let mp = MountPoint::new();
    let f = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .args(["--timeout", "3"]),
        QUICK,
    );
    assert!(
        !f.status.success(),
        "mounting an unreachable server exited 0\n{}",
        f.both()
    );
    assert!(
        !f.stderr.trim().is_empty(),
        "no error message for an unreachable server"
    );
    assert!(!is_mounted(mp.path()));
}

/// Puts a file on a fresh server and mounts it in the foreground.
fn foreground_mount() -> (DavServer, Mount) {
    let server = DavServer::start();
    put_file(server.root(), "f.txt", b"content");
    let m = Mount::start(&server.url(), &[]);
    assert_eq!(read_mounted(&m.path().join("f.txt")), b"content");
    (server, m)
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    let (_server, m) = foreground_mount();
    m.stop_with_signal(libc::SIGTERM);
}

#[test]
fn sigint_unmounts_and_exits_0() {
    let (_server, m) = foreground_mount();
    m.stop_with_signal(libc::SIGINT);
}

#[test]
fn fusermount3_u_ends_the_daemon_with_exit_0() {
    let (_server, m) = foreground_mount();
    m.unmount();
}

/// The memory checks rely on `peak_rss_kib` reading the daemon itself (not, say, a launcher that exited).
#[test]
fn peak_rss_is_read_from_the_live_daemon() {
    let (_server, m) = foreground_mount();
    let rss = m.peak_rss_kib();
    assert!(rss > 1024, "VmHWM of a running daemon cannot be {rss} KiB");
    m.unmount();
}
