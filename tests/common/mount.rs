//! Real FUSE mounts of the `cloudmount` binary for integration tests, and bounded runs of the tools used to look at
//! them.
//!
//! Everything here is written so that a broken daemon fails a test instead of blocking CI forever: every wait has a
//! deadline, external tools are killed when they overstay, and dropping a [`Mount`] tears the mount down even when
//! its FUSE connection is wedged (by aborting the connection through `/sys/fs/fuse/connections`).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long `cloudmount mount` gets to make the mount live.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the daemon gets to exit after an unmount or a signal.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);
/// How often deadlines are polled.
const POLL: Duration = Duration::from_millis(20);
/// What the daemon's log shows of itself when a test fails: its last lines.
const LOG_TAIL_LINES: usize = 80;

/// The binary under test, built by cargo for integration tests.
pub fn cloudmount_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cloudmount")
}

/// Panics with a clear message unless this process can mount FUSE filesystems and clean them up: root (for the
/// connection-abort escape hatch and `mount -t fusectl`), an openable `/dev/fuse`, and `fusermount3`.
pub fn require_fuse() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the FUSE tests must run as root (euid is {euid}): run `sudo scripts/test.sh`, or run cargo test as root"
    );
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        panic!("the FUSE tests need /dev/fuse, which cannot be opened ({e}); in a container, pass --device /dev/fuse");
    }
    assert!(
        which("fusermount3").is_some(),
        "fusermount3 is missing: run scripts/install-test-deps.sh (it installs the fuse3 package)"
    );
}

/// The full path of an executable found on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------------------------
// Bounded runs
// ---------------------------------------------------------------------------------------------------------------

/// What a bounded run of an external command produced.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (up to the moment its pipes closed, see `pipes_left_open`).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr, lossily decoded.
    pub stderr: String,
    /// True when the process exited but something it started (a daemon) still held its stdout or stderr open a
    /// few seconds later. A shell's `$(cmd)` would then never return.
    pub pipes_left_open: bool,
}

impl Finished {
    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout and stderr, for failure messages.
    pub fn both(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout_text(), self.stderr)
    }
}

/// A short printable form of a command line, for failure messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Reads a pipe to its end on a thread, so that a chatty child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` (stdin from /dev/null) and returns what it did; panics if it has not exited after `limit`.
///
/// On a timeout the child gets SIGKILL first. A process stuck in a FUSE request may not die even then (the kernel
/// waits for the daemon's answer), so we do not wait for it: the panic unwinds, and dropping the [`Mount`] aborts
/// the connection, which frees it.
pub fn run(cmd: &mut Command, limit: Duration) -> Finished {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let Some(status) = wait_deadline(&mut child, limit) else {
        let _ = child.kill();
        let _ = wait_deadline(&mut child, Duration::from_secs(2));
        panic!("`{what}` did not finish within {limit:?} (killed it)");
    };
    // Once the process is gone its pipes normally close at once; a daemon it left behind may keep them open.
    let grace = Duration::from_secs(3);
    let stdout = out.recv_timeout(grace);
    let stderr = err.recv_timeout(grace);
    Finished {
        status,
        pipes_left_open: stdout.is_err() || stderr.is_err(),
        stdout: stdout.unwrap_or_default(),
        stderr: String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned(),
    }
}

/// The moves of the move-and-remove tests, with `mv`, in a mounted tree holding `a/f.txt`, `a/inner/` and
/// `b/target.txt`: a file into another folder, then over another file, then a folder into another folder.
pub fn three_moves(root: &Path, limit: Duration) {
    run_ok(
        Command::new("mv")
            .arg(root.join("a/f.txt"))
            .arg(root.join("b/moved.txt")),
        limit,
    );
    run_ok(
        Command::new("mv")
            .arg(root.join("b/moved.txt"))
            .arg(root.join("b/target.txt")),
        limit,
    );
    run_ok(
        Command::new("mv")
            .arg(root.join("a/inner"))
            .arg(root.join("b/inner-moved")),
        limit,
    );
}

/// Like [`run`], and also panics (showing its output) unless the command exited 0.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Finished {
    let what = describe(cmd);
    let f = run(cmd, limit);
    assert!(f.status.success(), "`{what}` failed with {}\n{}", f.status, f.both());
    f
}

/// Waits for `child` to exit, at most `limit`; `None` if it is still running.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= end => return None,
            Ok(None) => thread::sleep(POLL),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// Runs `f` (typically std::fs calls on a mount) on its own thread and returns its result; panics if it has not
/// returned after `limit`. A panic inside `f` is passed on unchanged.
///
/// A filesystem call blocked on a wedged FUSE daemon cannot be cancelled, so on a timeout the thread is left behind;
/// dropping the [`Mount`] aborts the connection and so releases it.
pub fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------------------------------------------

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Device major number (0 for FUSE).
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Filesystem type, e.g. `fuse` or `fuse.cloudmount`.
    pub fstype: String,
    /// Mount source (the fsname for FUSE).
    pub source: String,
}

impl MountEntry {
    /// The name of this mount's directory under `/sys/fs/fuse/connections` (the kernel's dev_t, MKDEV(major, minor)).
    pub fn fuse_connection(&self) -> u32 {
        (self.major << 20) | self.minor
    }
}

/// Decodes mountinfo's octal escapes (`\040` is a space, `\134` a backslash, ...).
pub fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a line that does not have the documented shape.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mut right = right.split(' ');
    Some(MountEntry {
        mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        fstype: right.next()?.to_string(),
        source: unescape_mountinfo(right.next()?),
    })
}

/// Every mount this process sees. Reading mountinfo never touches the FUSE filesystems themselves, so it is safe to
/// call while a daemon is wedged.
pub fn mounts() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// The topmost mount at exactly `dir`, if any.
pub fn mount_at(dir: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mount_point == dir)
}

/// Whether something is mounted at exactly `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    mount_at(dir).is_some()
}

// ---------------------------------------------------------------------------------------------------------------
// Tearing mounts down
// ---------------------------------------------------------------------------------------------------------------

/// Makes sure the FUSE control filesystem is mounted, so that connections can be aborted.
fn ensure_fusectl() -> PathBuf {
    let dir = PathBuf::from("/sys/fs/fuse/connections");
    if !mounts().iter().any(|m| m.mount_point == dir) {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    dir
}

/// Aborts the kernel side of a FUSE connection: every request waiting on the daemon fails at once (ECONNABORTED)
/// and the mount stops answering. This is the only way to free processes stuck on a daemon that never answers.
pub fn abort_fuse_connection(entry: &MountEntry) {
    if !entry.fstype.starts_with("fuse") {
        return;
    }
    let abort = ensure_fusectl().join(entry.fuse_connection().to_string()).join("abort");
    if let Err(e) = fs::write(&abort, "1") {
        eprintln!("cannot abort FUSE connection via {}: {e}", abort.display());
    }
}

/// Runs an unmount tool for at most a few seconds and says whether it exited 0. Never panics: used from `Drop`.
fn try_tool(program: &str, args: &[&str], dir: &Path) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    match wait_deadline(&mut child, Duration::from_secs(5)) {
        Some(status) => status.success(),
        None => {
            let _ = child.kill();
            false
        }
    }
}

/// Best-effort removal of whatever is mounted at `dir`, escalating: a polite unmount, then an abort of the FUSE
/// connection and a lazy unmount. Returns whether `dir` is free afterwards. Never panics.
pub fn force_unmount(dir: &Path) -> bool {
    if !is_mounted(dir) {
        return true;
    }
    if try_tool("fusermount3", &["-u"], dir) && !is_mounted(dir) {
        return true;
    }
    if let Some(entry) = mount_at(dir) {
        abort_fuse_connection(&entry);
    }
    let _ = try_tool("fusermount3", &["-uz"], dir) || try_tool("umount", &["-l"], dir);
    !is_mounted(dir)
}

/// Pids of processes whose command line has an argument equal to `dir`: the daemons serving a mount there.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let want = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == want))
        })
        .collect()
}

/// Waits until no process mentions `dir` on its command line; returns the pids still there after `limit`.
pub fn wait_no_process_mentions(dir: &Path, limit: Duration) -> Vec<u32> {
    let end = Instant::now() + limit;
    loop {
        let left = processes_mentioning(dir);
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        thread::sleep(POLL);
    }
}

/// SIGKILLs the given pids (used only on processes this test started, found by their unique temp mountpoint).
pub fn kill_pids(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) with a pid we read from /proc; at worst it fails with ESRCH.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// The last `n` lines of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// MountPoint and Mount
// ---------------------------------------------------------------------------------------------------------------

/// A fresh empty directory to mount on. Dropping it unmounts whatever is still mounted there (escalating as far
/// as aborting the FUSE connection), kills any daemon still naming it, and removes it, or leaves it on disk if it
/// cannot be freed: deleting recursively through a live mount could hang or touch the remote.
pub struct MountPoint {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl MountPoint {
    /// A new directory under the system temp dir.
    pub fn new() -> MountPoint {
        let dir = tempfile::Builder::new()
            .prefix("cloudmount-mnt-")
            .tempdir()
            .expect("create mountpoint");
        // Canonical, because that is how mountinfo spells it.
        let path = dir.path().canonicalize().expect("canonicalize mountpoint");
        MountPoint { dir: Some(dir), path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for MountPoint {
    fn default() -> Self {
        MountPoint::new()
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        let freed = force_unmount(&self.path);
        kill_pids(&processes_mentioning(&self.path));
        if freed {
            let _ = wait_no_process_mentions(&self.path, Duration::from_secs(5));
        } else if let Some(dir) = self.dir.take() {
            eprintln!(
                "could not unmount {}; leaving the directory in place",
                self.path.display()
            );
            let _ = dir.keep();
        }
    }
}

/// A live `cloudmount mount REMOTE DIR --foreground ...` on a fresh directory.
///
/// Drop (for tests that fail or do not call [`Mount::unmount`]): prints the daemon's log if the test is failing,
/// unmounts (aborting the FUSE connection if it is wedged), kills the daemon and waits for it, all bounded.
pub struct Mount {
    // Field order matters: the child is dealt with in Drop, then the mountpoint's own Drop runs.
    child: Option<Child>,
    mountpoint: MountPoint,
    logs: tempfile::TempDir,
    what: String,
}

impl Mount {
    /// Mounts `remote` (a URL or a configured remote name) with `cloudmount mount REMOTE DIR --foreground ARGS...`
    /// and waits until the kernel lists the mount; panics with the daemon's output if that takes over 30 s or the
    /// daemon exits first.
    pub fn start(remote: &str, args: &[&str]) -> Mount {
        Mount::start_with_env(remote, args, &[])
    }

    /// [`Mount::start`] with extra environment variables for the daemon (e.g. `CLOUDMOUNT_PASSWORD`).
    pub fn start_with_env(remote: &str, args: &[&str], env: &[(&str, &str)]) -> Mount {
        require_fuse();
        let mountpoint = MountPoint::new();
        let logs = tempfile::Builder::new()
            .prefix("cloudmount-log-")
            .tempdir()
            .expect("create log dir");
        let log = File::create(logs.path().join("daemon.log")).expect("create daemon log");
        let mut cmd = Command::new(cloudmount_bin());
        cmd.arg("mount")
            .arg(remote)
            .arg(mountpoint.path())
            .arg("--foreground")
            .args(args);
        // Upload journals go to the test's own folder, never the user's state directory.
        if !args.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(logs.path().join("state"));
        }
        // Likewise the disk block cache, unless the test names one (to see it outlive a mount); with no free-space
        // floor, so every mount uses it however full the test machine's disk is.
        if !args.contains(&"--disk-cache-dir") {
            cmd.arg("--disk-cache-dir").arg(logs.path().join("disk-cache"));
        }
        if !args.contains(&"--disk-cache-min-free") {
            cmd.args(["--disk-cache-min-free", "0"]);
        }
        cmd.envs(env.iter().copied());
        let what = describe(&cmd);
        // Output goes to a file, not a pipe: a daemon that logs a lot must never block on a pipe nobody reads.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let mut mount = Mount {
            child: Some(child),
            mountpoint,
            logs,
            what,
        };
        mount.wait_until_mounted();
        mount
    }

    /// Polls mountinfo until the directory is a mountpoint; panics if the daemon exits or the deadline passes.
    fn wait_until_mounted(&mut self) {
        let end = Instant::now() + MOUNT_DEADLINE;
        let child = self.child.as_mut().expect("daemon");
        loop {
            if is_mounted(self.mountpoint.path()) {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "`{}` exited with {status} before the mount was live; its output:\n{}",
                    self.what,
                    self.log()
                );
            }
            if Instant::now() >= end {
                panic!(
                    "`{}` did not mount within {MOUNT_DEADLINE:?}; its output:\n{}",
                    self.what,
                    self.log()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        self.mountpoint.path()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon").id()
    }

    /// The daemon's peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read daemon's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Everything the daemon has printed so far.
    pub fn log(&self) -> String {
        tail(&self.logs.path().join("daemon.log"), usize::MAX)
    }

    /// Unmounts with `fusermount3 -u` and asserts that the daemon then exits 0 and the mount is gone.
    ///
    /// EBUSY is tried again for a few seconds: tests run as threads of one process, and a child
    /// another test forks holds a copy of every descriptor of ours until it execs (O_CLOEXEC closes
    /// them only then), so a file this test closed a moment ago can still keep the mount busy.
    pub fn unmount(mut self) {
        let dir = self.path().to_path_buf();
        let mut f = run(Command::new("fusermount3").arg("-u").arg(&dir), EXIT_DEADLINE);
        for _ in 0..25 {
            if f.status.success() || !f.stderr.contains("Device or resource busy") {
                break;
            }
            thread::sleep(Duration::from_millis(200));
            f = run(Command::new("fusermount3").arg("-u").arg(&dir), EXIT_DEADLINE);
        }
        assert!(
            f.status.success(),
            "fusermount3 -u {} failed: {}\n{}",
            dir.display(),
            f.status,
            f.both()
        );
        self.expect_clean_exit("fusermount3 -u");
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon and asserts that it exits 0 and the mount is gone.
    pub fn stop_with_signal(mut self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
        self.expect_clean_exit(&format!("signal {signal}"));
    }

    /// Waits (bounded) for the daemon to exit after `cause`, and asserts it exited 0 and left nothing mounted.
    fn expect_clean_exit(&mut self, cause: &str) {
        let mut child = self.child.take().expect("daemon");
        let Some(status) = wait_deadline(&mut child, EXIT_DEADLINE) else {
            self.child = Some(child); // so that Drop kills it and prints its log
            panic!("cloudmount did not exit within {EXIT_DEADLINE:?} after {cause}");
        };
        assert!(
            status.success(),
            "cloudmount exited with {status} after {cause}; its output:\n{}",
            self.log()
        );
        assert!(
            !is_mounted(self.path()),
            "{} is still mounted after {cause} and daemon exit",
            self.path().display()
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if thread::panicking() {
            eprintln!(
                "---- `{}` (pid {}), last {LOG_TAIL_LINES} lines of its output ----\n{}\n----",
                self.what,
                child.id(),
                tail(&self.logs.path().join("daemon.log"), LOG_TAIL_LINES)
            );
        }
        force_unmount(self.mountpoint.path());
        if wait_deadline(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            if wait_deadline(&mut child, Duration::from_secs(5)).is_none() {
                eprintln!("cloudmount pid {} survived SIGKILL (stuck in the kernel?)", child.id());
            }
        }
    }
}

/// The errno of a failed call, `None` on success (`-1` for an error without one).
pub fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < end, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
