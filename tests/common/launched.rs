//! A packaged WebDAV server started through `scripts/webdav-servers.sh` (the launcher the demo uses too) on a free
//! loopback port, serving a fresh temp dir, with its state (config, pid, logs) in the temp dir too; stopped by its pid
//! on drop. The shared part of `nginx.rs` and `lighttpd.rs` (Apache has its own, with auth and more).
//!
//! The servers run as `www-data` (the script hands the served dir to that user when it is root's), so files the tests
//! put there must be world-readable (see `files::put_file`).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::mount::run;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/webdav-servers.sh");
/// Generous: on a loaded 2-core box a first start (config test + fork) can take a few seconds.
const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Ports are picked free and then handed to the server, so another process can grab one in between: retry.
const PORT_TRIES: usize = 5;

/// A running server of one kind (`nginx`, `lighttpd`).
pub struct LaunchedServer {
    kind: &'static str,
    port: u16,
    root: PathBuf,
    state: PathBuf,
    url: String,
    // Last, so the temp dir is removed only after the server has stopped.
    _base: tempfile::TempDir,
}

/// Panics with a clear message when one of `files` is missing: these tests must never silently skip.
pub fn require(kind: &str, files: &[&str]) {
    let missing: Vec<&str> = files.iter().copied().filter(|f| !Path::new(f).exists()).collect();
    assert!(
        missing.is_empty(),
        "{kind} WebDAV tests need {} : run scripts/install-test-deps.sh (as root) first",
        missing.join(", ")
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl LaunchedServer {
    /// Starts a `kind` server without authentication over a fresh empty directory.
    pub fn start(kind: &'static str) -> LaunchedServer {
        let base = tempfile::Builder::new()
            .prefix(&format!("cloudmount-{kind}-"))
            .tempdir()
            .expect("create temp dir");
        // The server's user must reach both the served dir and its state dir through this one.
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let root = base.path().join("data");
        let state = base.path().join("state");
        fs::create_dir(&root).expect("create served dir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod served dir");
        let mut last_failure = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let mut cmd = Command::new("bash");
            cmd.arg(SCRIPT)
                .args(["start", kind])
                .arg(port.to_string())
                .arg(&root)
                .env("STATE_DIR", &state);
            let f = run(&mut cmd, START_LIMIT);
            if f.status.success() {
                return LaunchedServer {
                    kind,
                    port,
                    root,
                    url: format!("http://127.0.0.1:{port}/"),
                    state,
                    _base: base,
                };
            }
            let error_log = super::mount::tail(&state.join(format!("{kind}-{port}/logs/error.log")), 40);
            last_failure = format!("{}\nerror.log:\n{error_log}", f.both());
            if !f.stderr.contains("is taken") && !error_log.contains("in use") {
                break;
            }
        }
        panic!("could not start {kind} with {SCRIPT}:\n{last_failure}");
    }

    /// Base URL of the share, with a trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The served directory: the "server side" that tests create and modify files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's error log (for failure messages).
    pub fn error_log(&self) -> String {
        super::mount::tail(
            &self.state.join(format!("{}-{}/logs/error.log", self.kind, self.port)),
            usize::MAX,
        )
    }
}

impl Drop for LaunchedServer {
    fn drop(&mut self) {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(["stop", self.kind])
            .arg(self.port.to_string())
            .env("STATE_DIR", &self.state);
        // Never panic in drop (it may run while unwinding).
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut cmd, STOP_LIMIT)));
        match stopped {
            Ok(f) if f.status.success() => {}
            Ok(f) => eprintln!("stopping {} on port {} failed:\n{}", self.kind, self.port, f.both()),
            Err(_) => eprintln!("stopping {} on port {} timed out", self.kind, self.port),
        }
    }
}
