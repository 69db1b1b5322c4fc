//! cloudmount as a system filesystem: util-linux mount(8) with `-t fuse.cloudmount` and a temporary
//! fstab (`mount -T`), the mount.fuse3 form, the fstab line and systemd units of docs/fstab.md (read
//! from that file, so the docs are what is tested), systemd readiness over `NOTIFY_SOCKET`,
//! uid/gid/umask and allow_other as other users see them, a plain `umount` with an upload pending,
//! and `cloudmount install`.
//!
//! They need root (mount(8) runs helpers from /sbin, and `runuser`), /dev/fuse and fuse3; without
//! root they print why and skip. Tests that create `/sbin/mount.fuse.cloudmount` hold one lock, so
//! only one of them touches /sbin at a time, and remove the link (restoring any earlier one) after.

#[macro_use]
mod common;

use std::fs;
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::dav::DavServer;
use common::files::{put_dir, put_file};
use common::mount::{
    cloudmount_bin, is_mounted, require_fuse, run, run_ok, within, Finished, Mount, MountPoint, EXIT_DEADLINE,
    MOUNT_DEADLINE,
};

const QUICK: Duration = Duration::from_secs(60);
const HELPER: &str = "/sbin/mount.fuse.cloudmount";

/// False (after saying why) when these tests cannot run here.
fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the mount helper tests need root (mount(8) runs /sbin helpers; runuser)");
        return false;
    }
    require_fuse();
    true
}

/// One test at a time touches /sbin.
static SBIN: Mutex<()> = Mutex::new(());

/// `/sbin/mount.fuse.cloudmount` pointing at the binary under test while it lives.
struct HelperLink {
    backup: Option<PathBuf>,
    _guard: MutexGuard<'static, ()>,
}

impl HelperLink {
    fn install() -> HelperLink {
        let guard = SBIN.lock().unwrap_or_else(|e| e.into_inner());
        let backup = fs::symlink_metadata(HELPER).ok().map(|_| {
            let b = PathBuf::from(format!("{HELPER}.test-backup-{}", std::process::id()));
            fs::rename(HELPER, &b).expect("move the installed helper aside");
            b
        });
        std::os::unix::fs::symlink(cloudmount_bin(), HELPER).expect("link /sbin/mount.fuse.cloudmount");
        HelperLink { backup, _guard: guard }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = fs::remove_file(HELPER);
        if let Some(b) = &self.backup {
            let _ = fs::rename(b, HELPER);
        }
    }
}

/// A private home for mounts made through mount(8): XDG dirs (state, logs, config) in a temp dir,
/// so nothing lands in root's real ones.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("cloudmount-sandbox-")
                .tempdir()
                .unwrap(),
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        c
    }

    /// The daemons' state dir (`$XDG_STATE_HOME/cloudmount`).
    fn state(&self) -> PathBuf {
        self.dir.path().join("state/cloudmount")
    }

    /// A config naming `work` -> `url`.
    fn config(&self, url: &str) -> PathBuf {
        let p = self.dir.path().join("cloudmount.toml");
        fs::write(&p, format!("[remotes.work]\ntype = \"webdav\"\nurl = \"{url}\"\n")).unwrap();
        p
    }

    /// The pid of the daemon of the mount at `dir`, as `cloudmount status --json DIR` gives it.
    fn daemon_pid(&self, dir: &Path) -> u32 {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let f = run(self.cmd(cloudmount_bin()).args(["status", "--json"]).arg(dir), QUICK);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&f.stdout) {
                if let Some(pid) = v[0]["pid"].as_u64() {
                    return pid as u32;
                }
            }
            assert!(Instant::now() < end, "no status for {}: {}", dir.display(), f.both());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every daemon log under `$XDG_CACHE_HOME/cloudmount/logs`.
    fn logs(&self) -> String {
        let mut out = String::new();
        for e in fs::read_dir(self.dir.path().join("cache/cloudmount/logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
        }
        out
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_exit(pid: u32, limit: Duration, why: &str) {
    let end = Instant::now() + limit;
    while alive(pid) {
        assert!(Instant::now() < end, "daemon {pid} still running {limit:?} after {why}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// `mount ...` succeeded, the mount is live as it returns, and no daemon holds its pipes.
fn assert_mounted_by(f: &Finished, dir: &Path, what: &str) {
    assert!(f.status.success(), "{what} failed with {}\n{}", f.status, f.both());
    assert!(
        is_mounted(dir),
        "{what} returned 0 but {} is not mounted",
        dir.display()
    );
    assert!(
        !f.pipes_left_open,
        "{what} left its output pipes to a background process"
    );
}

/// `umount DIR` removes the mount, and the daemon then exits.
fn umount_and_wait(sb: &Sandbox, dir: &Path) {
    let pid = sb.daemon_pid(dir);
    run_ok(Command::new("umount").arg(dir), QUICK);
    assert!(!is_mounted(dir), "{} still mounted after umount", dir.display());
    wait_exit(pid, EXIT_DEADLINE, "umount");
}

/// The fenced block of docs/fstab.md whose info string is `info`.
fn doc_block(info: &str) -> String {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fstab.md")).unwrap();
    let start = doc
        .find(&format!("```{info}\n"))
        .unwrap_or_else(|| panic!("docs/fstab.md has no ```{info} block"));
    let body = &doc[start + info.len() + 4..];
    body[..body.find("```").expect("unterminated block")].to_string()
}

/// `Key=` values of a unit file section.
fn unit_key(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
        .to_string()
}

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// mount(8) -t fuse.cloudmount with options: live when mount returns, shown by findmnt with the
/// options, uid/gid/umask in stat, then umount removes it and the daemon exits.
#[test]
fn mount_t_with_options_then_findmnt_then_umount() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    put_dir(server.root(), "sub");
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let _link = HelperLink::install();
    let f = run(
        sb.cmd("mount")
            .args(["-t", "fuse.cloudmount", &server.url()])
            .arg(mp.path())
            .args(["-o", "allow_other,uid=1234,gid=2345,umask=027,cache_size=64,poll_interval=30,_netdev,nofail,defaults,x-systemd.automount,x-systemd.idle-timeout=60"]),
        MOUNT_DEADLINE,
    );
    assert_mounted_by(&f, mp.path(), "mount -t fuse.cloudmount");

    let shown = run_ok(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--mountpoint"])
            .arg(mp.path()),
        QUICK,
    )
    .stdout_text();
    assert!(shown.starts_with("fuse.cloudmount "), "findmnt: {shown}");
    assert!(shown.contains(&server.url()), "findmnt source: {shown}");
    for opt in ["allow_other", "default_permissions", "nodev", "nosuid"] {
        assert!(shown.contains(opt), "findmnt lacks {opt}: {shown}");
    }

    let root = mp.path().to_path_buf();
    let (file, dir, top) = within(QUICK, "stat", move || {
        (mode(&root.join("hello.txt")), mode(&root.join("sub")), mode(&root))
    });
    assert_eq!(file, (1234, 2345, 0o640), "file owner and mode");
    assert_eq!(dir, (1234, 2345, 0o750), "folder owner and mode");
    assert_eq!(top, (1234, 2345, 0o750), "root folder owner and mode");
    let p = mp.path().join("hello.txt");
    assert_eq!(within(QUICK, "read", move || fs::read(p).unwrap()), b"hello");

    umount_and_wait(&sb, mp.path());
    assert!(
        sb.logs().contains("polling for changes made elsewhere every 30s"),
        "the log does not show poll_interval=30 in force:\n{}",
        sb.logs()
    );
}

/// Without allow_other another user gets EACCES; with it the kernel admits them and checks the
/// modes (`default_permissions`), so umask=077 shuts them out again.
#[test]
fn other_users_need_allow_other() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let as_nobody = |args: &[&str], dir: &Path| {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).args(args).arg(dir);
        run(&mut c, QUICK)
    };

    let m = Mount::start(&server.url(), &[]);
    let f = as_nobody(&["ls"], m.path());
    assert!(
        !f.status.success(),
        "nobody listed a mount without allow_other:\n{}",
        f.both()
    );
    assert!(f.stderr.contains("Permission denied"), "{}", f.both());
    m.unmount();

    let m = Mount::start(&server.url(), &["--allow-other"]);
    let f = as_nobody(&["ls"], m.path());
    assert!(
        f.status.success(),
        "nobody could not list with allow_other:\n{}",
        f.both()
    );
    assert!(f.stdout_text().contains("hello.txt"), "{}", f.both());
    let f = as_nobody(&["cat"], &m.path().join("hello.txt"));
    assert_eq!(f.stdout_text(), "hello", "{}", f.both());
    let f = as_nobody(&["touch"], &m.path().join("new.txt"));
    assert!(
        !f.status.success(),
        "nobody wrote into root's 0755 folder:\n{}",
        f.both()
    );
    m.unmount();

    let m = Mount::start(&server.url(), &["--allow-other", "--umask", "077"]);
    let f = as_nobody(&["ls"], m.path());
    assert!(
        f.stderr.contains("Permission denied"),
        "umask=077 let nobody in:\n{}",
        f.both()
    );
    m.unmount();
}

/// The fstab line of docs/fstab.md, in a temporary fstab, mounts with `mount -T FILE DIR`.
#[test]
fn fstab_line_from_docs_mounts_with_mount_t_file() {
    if !can_run() {
        return;
    }
    let line = doc_block("fstab");
    for opt in ["_netdev", "x-systemd.automount", "fuse.cloudmount"] {
        assert!(line.contains(opt), "the documented fstab line lacks {opt}: {line}");
    }
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let line = line
        .replace(
            "/etc/cloudmount/config.toml",
            sb.config(&server.url()).to_str().unwrap(),
        )
        .replace("/mnt/work", mp.path().to_str().unwrap());
    let fstab = sb.dir.path().join("fstab");
    fs::write(&fstab, format!("# test\n{line}")).unwrap();

    let _link = HelperLink::install();
    let f = run(sb.cmd("mount").arg("-T").arg(&fstab).arg(mp.path()), MOUNT_DEADLINE);
    assert_mounted_by(&f, mp.path(), "mount -T FSTAB DIR");
    let p = mp.path().join("hello.txt");
    assert_eq!(within(QUICK, "read", move || fs::read(p).unwrap()), b"hello");
    umount_and_wait(&sb, mp.path());
}

/// docs/fstab.md's second mount of a mounted remote: without a `state_dir` of its own it fails
/// saying what to add; the documented line (with one) mounts beside the first.
#[test]
fn second_mount_of_one_remote_from_docs() {
    if !can_run() {
        return;
    }
    let line = doc_block("fstab second-mount");
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let sb = Sandbox::new();
    let (first, second) = (MountPoint::new(), MountPoint::new());
    let _link = HelperLink::install();
    let f = run(
        sb.cmd("mount")
            .args(["-t", "fuse.cloudmount", &server.url()])
            .arg(first.path()),
        MOUNT_DEADLINE,
    );
    assert_mounted_by(&f, first.path(), "the first mount");
    let own_state = sb.dir.path().join("second-state");
    let line = line
        .replace("http://127.0.0.1:8765/dav/", &server.url())
        .replace("/mnt/demo2", second.path().to_str().unwrap());
    let without = line.replace(",state_dir=/var/lib/cloudmount-demo2", "");
    assert_ne!(without, line, "the documented line has no state_dir: {line}");
    let fstab = sb.dir.path().join("fstab");
    fs::write(&fstab, format!("{without}\n")).unwrap();
    let f = run(sb.cmd("mount").arg("-T").arg(&fstab).arg(second.path()), MOUNT_DEADLINE);
    assert!(!f.status.success(), "a second mount sharing the journal was accepted");
    assert!(
        f.both().contains("state_dir=DIR"),
        "the refusal does not say what to add: {}",
        f.both()
    );
    let line = line.replace("/var/lib/cloudmount-demo2", own_state.to_str().unwrap());
    fs::write(&fstab, format!("{line}\n")).unwrap();
    let f = run(sb.cmd("mount").arg("-T").arg(&fstab).arg(second.path()), MOUNT_DEADLINE);
    assert_mounted_by(&f, second.path(), "the documented second mount");
    let p = second.path().join("hello.txt");
    assert_eq!(within(QUICK, "read", move || fs::read(p).unwrap()), b"hello");
    umount_and_wait(&sb, second.path());
    umount_and_wait(&sb, first.path());
}

/// The systemd units of docs/fstab.md pass `systemd-analyze verify`, and their What=, Where=,
/// Type= and Options= mount through mount(8) as systemd would run it.
#[test]
fn systemd_units_from_docs_verify_and_mount() {
    if !can_run() {
        return;
    }
    let mount_unit = doc_block("systemd mnt-work.mount");
    let automount = doc_block("systemd mnt-work.automount");
    assert_eq!(unit_key(&mount_unit, "Where"), unit_key(&automount, "Where"));
    assert_eq!(unit_key(&mount_unit, "Where"), "/mnt/work", "unit names follow Where=");

    let units = tempfile::tempdir().unwrap();
    fs::write(units.path().join("mnt-work.mount"), &mount_unit).unwrap();
    fs::write(units.path().join("mnt-work.automount"), &automount).unwrap();
    match common::mount::which("systemd-analyze") {
        Some(analyze) => {
            let f = run(
                Command::new(analyze)
                    .arg("verify")
                    .arg(units.path().join("mnt-work.mount"))
                    .arg(units.path().join("mnt-work.automount")),
                QUICK,
            );
            assert!(f.status.success(), "systemd-analyze verify failed:\n{}", f.both());
            assert!(
                !f.both().contains("mnt-work"),
                "systemd-analyze verify complains about the units:\n{}",
                f.both()
            );
        }
        None => eprintln!("systemd-analyze is not installed (Debian: systemd); only mounting the units' fields"),
    }

    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let options = unit_key(&mount_unit, "Options").replace(
        "/etc/cloudmount/config.toml",
        sb.config(&server.url()).to_str().unwrap(),
    );
    let _link = HelperLink::install();
    // systemd runs: mount -t TYPE WHAT WHERE -o OPTIONS (with -n? not with util-linux 2.38 mount units).
    let f = run(
        sb.cmd("mount")
            .arg("-t")
            .arg(unit_key(&mount_unit, "Type"))
            .arg(unit_key(&mount_unit, "What"))
            .arg(mp.path())
            .arg("-o")
            .arg(options),
        MOUNT_DEADLINE,
    );
    assert_mounted_by(&f, mp.path(), "mount with the unit's fields");
    let p = mp.path().join("hello.txt");
    assert_eq!(within(QUICK, "read", move || fs::read(p).unwrap()), b"hello");
    umount_and_wait(&sb, mp.path());
}

/// Collect datagrams until `quiet` passes without one.
fn datagrams(sock: &UnixDatagram, quiet: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

/// A background mount with NOTIFY_SOCKET (a path) sends READY=1 exactly once, from the daemon,
/// after the mount is live; STOPPING=1 when unmounted.
#[test]
fn notify_socket_gets_ready_once_from_the_daemon() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let sock_path = sb.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let f = run(
        sb.cmd(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .env("NOTIFY_SOCKET", &sock_path),
        MOUNT_DEADLINE,
    );
    assert_mounted_by(&f, mp.path(), "cloudmount mount");
    let got = datagrams(&sock, Duration::from_secs(3));
    assert_eq!(got, vec!["READY=1".to_string()], "notifications after mounting");
    let pid = sb.daemon_pid(mp.path());
    umount_and_wait(&sb, mp.path());
    let got = datagrams(&sock, Duration::from_secs(1));
    assert_eq!(
        got,
        vec!["STOPPING=1".to_string()],
        "notifications after unmounting (daemon {pid})"
    );
}

/// The same in the foreground (`Type=notify` services), with an abstract socket name.
#[test]
fn notify_socket_abstract_name_in_the_foreground() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let name = format!("cloudmount-test-notify-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let m = Mount::start_with_env(&server.url(), &[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let got = datagrams(&sock, Duration::from_secs(3));
    assert_eq!(got, vec!["READY=1".to_string()], "notifications after mounting");
    m.unmount();
    assert_eq!(datagrams(&sock, Duration::from_secs(1)), vec!["STOPPING=1".to_string()]);
}

/// Unknown options and an unreachable server fail with a message and non-zero, mounting nothing;
/// wait_online=SECS waits for a server that comes up late.
#[test]
fn failures_are_clear_and_wait_online_waits() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let _link = HelperLink::install();
    let mount = |opts: &str| {
        let mut c = sb.cmd("mount");
        c.args(["-t", "fuse.cloudmount", &server.url()])
            .arg(mp.path())
            .args(["-o", opts]);
        c
    };

    let f = run(&mut mount("allow_other,frobnicate=1"), QUICK);
    assert!(!f.status.success(), "an unknown option was accepted:\n{}", f.both());
    assert!(
        f.stderr.contains("unknown mount option \"frobnicate=1\""),
        "{}",
        f.both()
    );
    assert!(!is_mounted(mp.path()));

    server.stop();
    let started = Instant::now();
    let f = run(&mut mount("timeout=3"), QUICK);
    assert!(!f.status.success(), "mounted an unreachable server:\n{}", f.both());
    assert!(
        f.stderr.contains("cannot reach") && f.stderr.contains("wait_online"),
        "unclear failure:\n{}",
        f.both()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(!is_mounted(mp.path()));

    let mut late = mount("timeout=2,wait_online=40");
    let waiting = thread::spawn(move || run(&mut late, Duration::from_secs(90)));
    thread::sleep(Duration::from_secs(4));
    assert!(!waiting.is_finished(), "gave up before wait_online passed");
    server.restart();
    let f = waiting.join().unwrap();
    assert_mounted_by(&f, mp.path(), "mount with wait_online");
    umount_and_wait(&sb, mp.path());
    assert!(sb.logs().contains("trying again"), "no retries logged:\n{}", sb.logs());
}

/// mount.fuse3 (what mount(8) falls back to without our helper) runs `cloudmount SOURCE DIR -o
/// OPTS` from PATH; that form mounts too.
#[test]
fn mount_fuse3_form() {
    if !can_run() {
        return;
    }
    let Some(mount_fuse3) = common::mount::which("mount.fuse3") else {
        panic!("mount.fuse3 is missing: run scripts/install-test-deps.sh (fuse3)");
    };
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let bin = sb.dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(cloudmount_bin(), bin.join("cloudmount")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let f = run(
        sb.cmd(mount_fuse3.to_str().unwrap())
            .arg(server.url())
            .arg(mp.path())
            .args(["-t", "fuse.cloudmount", "-o", "_netdev,umask=077,x-systemd.automount"])
            .env("PATH", path),
        MOUNT_DEADLINE,
    );
    assert_mounted_by(&f, mp.path(), "mount.fuse3");
    let p = mp.path().join("hello.txt");
    assert_eq!(within(QUICK, "stat", move || mode(&p)).2, 0o600);
    umount_and_wait(&sb, mp.path());
}

/// A mount made by mount(8) with its state and log in the sandbox, and a file whose upload hangs
/// on the server; returns the daemon's pid and its log file.
fn mount_with_a_hung_upload(server: &DavServer, sb: &Sandbox, mp: &MountPoint) -> (u32, PathBuf) {
    let log = sb.dir.path().join("daemon.log");
    let opts = format!("state_dir={},log_file={}", sb.state().display(), log.display());
    let f = {
        let _link = HelperLink::install();
        run(
            sb.cmd("mount")
                .args(["-t", "fuse.cloudmount", &server.url()])
                .arg(mp.path())
                .args(["-o", &opts]),
            MOUNT_DEADLINE,
        )
    };
    assert_mounted_by(&f, mp.path(), "mount -t fuse.cloudmount");
    let pid = sb.daemon_pid(mp.path());
    let path = mp.path().join("late.bin");
    let file = within(QUICK, "create", move || fs::File::create(&path).unwrap());
    server.set_hang(true);
    within(QUICK, "write and close", move || {
        let mut f = file;
        f.write_all(b"arrives after umount").unwrap();
    });
    (pid, log)
}

/// `cloudmount status DIR` shows the mount unmounted and still owing late.bin.
fn wait_status_shows_pending(sb: &Sandbox, dir: &Path) {
    let status = || {
        run(
            Command::new(cloudmount_bin())
                .arg("status")
                .arg(dir)
                .arg("--state-dir")
                .arg(sb.state()),
            QUICK,
        )
        .stdout_text()
    };
    let end = Instant::now() + Duration::from_secs(10);
    let mut shown = status();
    while !(shown.contains("unmounted, finishing uploads") && shown.contains("late.bin")) {
        assert!(
            Instant::now() < end,
            "status does not show the pending upload:\n{shown}"
        );
        thread::sleep(Duration::from_millis(200));
        shown = status();
    }
}

/// `umount` or `fusermount3 -u` while an upload is stuck: the daemon says which file it waits for
/// (log and `cloudmount status`), finishes it once the server answers, says so, then exits.
fn unmount_with_an_upload_pending_finishes_it(unmount: &[&str]) {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let (pid, log) = mount_with_a_hung_upload(&server, &sb, &mp);

    run_ok(Command::new(unmount[0]).args(&unmount[1..]).arg(mp.path()), QUICK);
    assert!(!is_mounted(mp.path()), "still mounted after {unmount:?}");
    wait_status_shows_pending(&sb, mp.path());
    thread::sleep(Duration::from_secs(1));
    assert!(alive(pid), "the daemon exited with an upload pending");
    server.set_hang(false);
    wait_exit(pid, Duration::from_secs(120), "the server came back");
    assert_eq!(
        fs::read(server.root().join("late.bin")).unwrap(),
        b"arrives after umount"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("waiting for uploads to finish") && text.contains("late.bin"),
        "the log does not say which upload it waited for:\n{text}"
    );
    assert!(text.contains("every upload reached the server"), "{text}");
}

#[test]
fn plain_umount_with_an_upload_pending_finishes_it() {
    unmount_with_an_upload_pending_finishes_it(&["umount"]);
}

#[test]
fn fusermount3_u_with_an_upload_pending_finishes_it() {
    unmount_with_an_upload_pending_finishes_it(&["fusermount3", "-u"]);
}

/// SIGTERM unmounts and the daemon waits for the upload; a second SIGTERM (systemd cleaning up)
/// ends the wait: the log names the file kept in the journal, and the next mount uploads it.
#[test]
fn second_sigterm_keeps_uploads_for_the_next_mount() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let (pid, log) = mount_with_a_hung_upload(&server, &sb, &mp);
    let term = || {
        // SAFETY: kill(2) on the daemon this test started (found through its status file).
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    };
    term();
    let end = Instant::now() + Duration::from_secs(10);
    while is_mounted(mp.path()) {
        assert!(Instant::now() < end, "SIGTERM did not unmount");
        thread::sleep(Duration::from_millis(50));
    }
    wait_status_shows_pending(&sb, mp.path());
    assert!(alive(pid), "the daemon exited with an upload pending");
    term();
    wait_exit(pid, EXIT_DEADLINE, "the second SIGTERM");
    let text = fs::read_to_string(&log).unwrap();
    let kept = text.lines().find(|l| l.contains("uploads stay queued on disk"));
    assert!(
        kept.is_some_and(|l| l.contains("late.bin")),
        "the log does not name the upload kept for the next mount:\n{text}"
    );
    assert!(!server.root().join("late.bin").exists(), "uploaded despite the hang");

    server.set_hang(false);
    let pid2 = {
        let _link = HelperLink::install();
        let opts = format!("state_dir={},log_file={}", sb.state().display(), log.display());
        let f = run(
            sb.cmd("mount")
                .args(["-t", "fuse.cloudmount", &server.url()])
                .arg(mp.path())
                .args(["-o", &opts]),
            MOUNT_DEADLINE,
        );
        assert_mounted_by(&f, mp.path(), "the next mount");
        sb.daemon_pid(mp.path())
    };
    let end = Instant::now() + Duration::from_secs(60);
    while fs::read(server.root().join("late.bin")).ok().as_deref() != Some(b"arrives after umount".as_slice()) {
        assert!(Instant::now() < end, "the next mount did not upload the kept file");
        thread::sleep(Duration::from_millis(200));
    }
    run_ok(Command::new("umount").arg(mp.path()), QUICK);
    wait_exit(pid2, EXIT_DEADLINE, "umount");
}

/// `cloudmount install --prefix DIR` copies the binary and links the helper to where the binary
/// will be; running it again is fine.
#[test]
fn install_into_a_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let f = run_ok(
            Command::new(cloudmount_bin())
                .arg("install")
                .arg("--prefix")
                .arg(prefix.path()),
            QUICK,
        );
        assert!(f.stdout_text().contains("mount.fuse.cloudmount"), "{}", f.both());
    }
    let bin = prefix.path().join("usr/local/bin/cloudmount");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(cloudmount_bin()).unwrap());
    assert_eq!(fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
    let link = prefix.path().join("sbin/mount.fuse.cloudmount");
    assert_eq!(fs::read_link(link).unwrap(), Path::new("/usr/local/bin/cloudmount"));
}

/// When stderr is the journal (JOURNAL_STREAM names it), the background daemon keeps logging there,
/// as `<N>` priority lines without timestamps or colours.
#[test]
fn logs_go_to_the_journal_stream_in_its_format() {
    if !can_run() {
        return;
    }
    let server = DavServer::start();
    let sb = Sandbox::new();
    let mp = MountPoint::new();
    let journal = sb.dir.path().join("journal-stream");
    let stream = fs::File::create(&journal).unwrap();
    let meta = stream.metadata().unwrap();
    let mut c = sb.cmd(cloudmount_bin());
    c.arg("mount")
        .arg(server.url())
        .arg(mp.path())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stream);
    let status = c.status().unwrap();
    assert!(
        status.success() && is_mounted(mp.path()),
        "mount failed: {}",
        fs::read_to_string(&journal).unwrap()
    );
    umount_and_wait(&sb, mp.path());
    let text = fs::read_to_string(&journal).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>cloudmount") && l.contains("mounted")),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "lines without a priority:\n{text}"
    );
    assert!(!text.contains('\x1b'), "colours in the journal:\n{text}");
    assert!(sb.logs().is_empty(), "the daemon also wrote a log file: {}", sb.logs());
}

/// A user other than root mounts through fusermount3; the type is fuse.cloudmount there too, and
/// uid/gid/umask apply.
#[test]
fn non_root_mount_through_fusermount3() {
    if !can_run() {
        return;
    }
    let probe = run(
        Command::new("runuser").args(["-u", "nobody", "--", "test", "-r", "/dev/fuse", "-a", "-w", "/dev/fuse"]),
        QUICK,
    );
    if !probe.status.success() {
        eprintln!("SKIPPED: /dev/fuse is not open to other users here (mode 0666 on a normal system)");
        return;
    }
    let server = DavServer::start();
    put_file(server.root(), "hello.txt", b"hello");
    let home = tempfile::Builder::new().prefix("cloudmount-nobody-").tempdir().unwrap();
    let mp = home.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
    run_ok(
        Command::new("chown").args(["-R", "nobody:nogroup"]).arg(home.path()),
        QUICK,
    );
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).args(args).env("HOME", home.path());
        c
    };
    let mpath = mp.to_str().unwrap();
    let state = home.path().join("state");
    let log = home.path().join("log");
    let f = run(
        as_nobody(&[cloudmount_bin(), "mount", &server.url(), mpath, "--umask", "077"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--log-file")
            .arg(&log),
        MOUNT_DEADLINE,
    );
    let unmount = || run(&mut as_nobody(&["fusermount3", "-u", mpath]), QUICK);
    if !f.status.success() {
        unmount();
        panic!(
            "nobody could not mount: {}\n{}",
            f.both(),
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let shown = run_ok(
        Command::new("findmnt").args(["-n", "-o", "FSTYPE", "--mountpoint", mpath]),
        QUICK,
    )
    .stdout_text();
    let modes = run(
        &mut as_nobody(&["stat", "-c", "%U %a", &format!("{mpath}/hello.txt")]),
        QUICK,
    )
    .stdout_text();
    let done = unmount();
    assert_eq!(shown.trim(), "fuse.cloudmount");
    assert_eq!(modes.trim(), "nobody 600");
    assert!(done.status.success(), "fusermount3 -u as nobody: {}", done.both());
    let end = Instant::now() + EXIT_DEADLINE;
    while common::mount::processes_mentioning(&mp).iter().any(|p| alive(*p)) {
        assert!(Instant::now() < end, "the daemon of nobody's mount did not exit");
        thread::sleep(Duration::from_millis(100));
    }
}
