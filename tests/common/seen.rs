//! Checks that a change made elsewhere is seen through a mount: `stat`, `cat` and `ls` each
//! asked, polled until they agree (shared by the WebDAV and Graph change tests).

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::mount::{run, within, Mount};

/// How long a change made elsewhere may take to show.
pub const SEEN_WITHIN: Duration = Duration::from_secs(30);
/// Limit of one filesystem call.
const QUICK: Duration = Duration::from_secs(20);

/// Keeps `dir` open (a directory handle in the mount) until dropped.
pub fn hold_open(dir: &Path) -> File {
    let d = dir.to_path_buf();
    within(QUICK, "opening the parent folder", move || File::open(&d)).expect("open the parent folder")
}

/// `stat` through the mount: `Some(size)`, or `None` when the name does not exist.
pub fn stat_size(p: &Path) -> Option<u64> {
    let p = p.to_path_buf();
    within(QUICK, &format!("stat {}", p.display()), move || {
        match fs::metadata(&p) {
            Ok(m) => Some(m.len()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => panic!("stat {}: {e}", p.display()),
        }
    })
}

/// `cat` through the mount: `Some(bytes)`, or `None` when it fails.
pub fn cat(p: &Path) -> Option<Vec<u8>> {
    let f = run(Command::new("cat").arg(p), QUICK);
    f.status.success().then_some(f.stdout)
}

/// `ls -1A` through the mount.
pub fn ls(dir: &Path) -> Vec<String> {
    let f = run(Command::new("ls").arg("-1A").arg(dir).env("LC_ALL", "C"), QUICK);
    assert!(f.status.success(), "ls {} failed: {}", dir.display(), f.both());
    f.stdout_text().lines().map(str::to_string).collect()
}

/// Polls `check` until it returns `Ok`, failing with its last complaint (and the daemon's log) after 30 s.
pub fn eventually(m: &Mount, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if start.elapsed() > SEEN_WITHIN => {
                panic!(
                    "{what}: not seen within {SEEN_WITHIN:?}: {why}\ndaemon log:\n{}",
                    m.log()
                )
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `stat`, `cat` and `ls` all show `name` in `dir` with content `data`.
pub fn shows_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let p = dir.join(name);
    match stat_size(&p) {
        Some(n) if n == data.len() as u64 => {}
        other => return Err(format!("stat {name}: size {other:?}, want {}", data.len())),
    }
    match cat(&p) {
        Some(d) if d == data => {}
        Some(d) => return Err(format!("cat {name}: {} bytes, not the server's content", d.len())),
        None => return Err(format!("cat {name} failed")),
    }
    if !ls(dir).iter().any(|n| n == name) {
        return Err(format!("ls does not list {name}"));
    }
    Ok(())
}

/// `stat`, `cat` and `ls` all agree that `name` is not in `dir`.
pub fn shows_no_file(dir: &Path, name: &str) -> Result<(), String> {
    let p = dir.join(name);
    if let Some(n) = stat_size(&p) {
        return Err(format!("stat {name} still finds it ({n} bytes)"));
    }
    if cat(&p).is_some() {
        return Err(format!("cat {name} still reads it"));
    }
    if ls(dir).iter().any(|n| n == name) {
        return Err(format!("ls still lists {name}"));
    }
    Ok(())
}

/// Polls `cond` every 100 ms until it holds; panics with `what` (and the daemon's log) after 30 s.
pub fn wait_for(m: &Mount, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + SEEN_WITHIN;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {SEEN_WITHIN:?} waiting for {what}\ndaemon log:\n{}",
            m.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}
