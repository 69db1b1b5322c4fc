//! Apache httpd with mod_dav_fs on a free loopback port, serving a fresh temp dir: the best-behaved packaged WebDAV
//! server, so that the tests are not only run against the in-process `dav-server` that shares our HTTP stack.
//!
//! It is started through `scripts/webdav-servers.sh` (the same launcher the demo uses) with its state (config, pid,
//! logs) in the temp dir too. Apache refuses to run as root and runs as `www-data`: the script hands the served dir
//! to that user, and files the tests put there must be world-readable (see `files::put_file`).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::mount::{run, which};

/// The launcher script, found relative to the crate so tests work from any current directory.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/webdav-servers.sh");
/// Generous: on a loaded 2-core box Apache's first start (config test + fork) can take a few seconds.
const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Ports are picked free and then handed to Apache, so another process can grab one in between: retry.
const PORT_TRIES: usize = 5;

/// A running Apache mod_dav server; stopped (by its pid) on drop.
pub struct ApacheServer {
    port: u16,
    root: PathBuf,
    state: PathBuf,
    url: String,
    // Last, so the temp dir is removed only after the server has stopped.
    base: tempfile::TempDir,
}

/// Panics with a clear message if Apache or the tools the launcher needs are missing: these tests must never
/// silently skip.
pub fn require_apache() {
    let missing: Vec<&str> = [
        ("/usr/sbin/apache2", Path::new("/usr/sbin/apache2").is_file()),
        (
            "mod_dav_fs",
            Path::new("/usr/lib/apache2/modules/mod_dav_fs.so").is_file(),
        ),
        ("htpasswd", which("htpasswd").is_some()),
        ("curl", which("curl").is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect();
    assert!(
        missing.is_empty(),
        "Apache WebDAV tests need apache2, apache2-utils and curl, but {} is missing: run scripts/install-test-deps.sh \
         (as root) first",
        missing.join(", ")
    );
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl ApacheServer {
    /// Starts Apache, without authentication, serving a fresh empty directory.
    pub fn start() -> ApacheServer {
        ApacheServer::launch(None)
    }

    /// Starts Apache demanding HTTP Basic auth with this user and password.
    pub fn start_with_auth(user: &str, pass: &str) -> ApacheServer {
        ApacheServer::launch(Some((user, pass)))
    }

    fn launch(auth: Option<(&str, &str)>) -> ApacheServer {
        require_apache();
        let base = tempfile::Builder::new()
            .prefix("cloudmount-apache-")
            .tempdir()
            .expect("create temp dir");
        // www-data must be able to reach both the served dir and the state dir (lock DB) through this one.
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
                .args(["start", "apache"])
                .arg(port.to_string())
                .arg(&root)
                .env("STATE_DIR", &state);
            if let Some((user, pass)) = auth {
                cmd.args([user, pass]);
            }
            let f = run(&mut cmd, START_LIMIT);
            if f.status.success() {
                let url = format!("http://127.0.0.1:{port}/dav/");
                return ApacheServer {
                    port,
                    root,
                    state,
                    url,
                    base,
                };
            }
            let error_log = super::mount::tail(&state.join(format!("apache-{port}/logs/error.log")), 40);
            last_failure = format!("{}\nerror.log:\n{error_log}", f.both());
            if !f.stderr.contains("is taken") && !error_log.contains("Address already in use") {
                break;
            }
        }
        panic!("could not start Apache with {SCRIPT}:\n{last_failure}");
    }

    /// Base URL of the share, with a trailing slash: `http://127.0.0.1:PORT/dav/`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The served directory: the "server side" that tests create and modify files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The port Apache listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Apache's pid, from the launcher's state.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.state.join(format!("apache-{}/pid", self.port)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Apache's error log (for failure messages).
    pub fn error_log(&self) -> String {
        super::mount::tail(
            &self.state.join(format!("apache-{}/logs/error.log", self.port)),
            usize::MAX,
        )
    }
}

impl Drop for ApacheServer {
    fn drop(&mut self) {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(["stop", "apache"])
            .arg(self.port.to_string())
            .env("STATE_DIR", &self.state);
        // Never panic in drop (it may run while unwinding); a failed stop is reported and the temp dir kept.
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut cmd, STOP_LIMIT)));
        match stopped {
            Ok(f) if f.status.success() => {}
            Ok(f) => eprintln!("stopping Apache on port {} failed:\n{}", self.port, f.both()),
            Err(_) => eprintln!("stopping Apache on port {} timed out", self.port),
        }
    }
}
