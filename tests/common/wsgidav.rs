//! WsgiDAV (PyPI, in the venv `scripts/install-test-deps.sh` makes under `target/test-tools/`) on a free loopback
//! port, serving a fresh temp dir: the one test server that lets clients set modification times (PROPPATCH of
//! `getlastmodified`, enabled by the launcher's config) and reports quota. Started through
//! `scripts/webdav-servers.sh`, with its state (config, pid, log) in the temp dir too; it runs as the test user.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::mount::run;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/webdav-servers.sh");
/// Where `scripts/install-test-deps.sh` puts WsgiDAV.
pub const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tools/venv-wsgidav");
const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(30);
const PORT_TRIES: usize = 5;

/// A running WsgiDAV server; stopped (by its pid) on drop.
pub struct WsgiDavServer {
    port: u16,
    root: PathBuf,
    state: PathBuf,
    // Last, so the temp dir is removed only after the server has stopped.
    _base: tempfile::TempDir,
}

/// Panics with a clear message if WsgiDAV is not installed: these tests must never silently skip.
pub fn require_wsgidav() {
    assert!(
        Path::new(VENV).join("bin/wsgidav").is_file(),
        "WsgiDAV tests need WsgiDAV in {VENV}: run scripts/install-test-deps.sh first"
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl WsgiDavServer {
    /// Starts WsgiDAV, without authentication, serving a fresh empty directory.
    pub fn start() -> WsgiDavServer {
        require_wsgidav();
        let base = tempfile::Builder::new()
            .prefix("cloudmount-wsgidav-")
            .tempdir()
            .expect("create temp dir");
        let root = base.path().join("data");
        let state = base.path().join("state");
        fs::create_dir(&root).expect("create served dir");
        let mut last_failure = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let mut cmd = Command::new("bash");
            cmd.arg(SCRIPT)
                .args(["start", "wsgidav"])
                .arg(port.to_string())
                .arg(&root)
                .env("STATE_DIR", &state)
                .env("WSGIDAV_VENV", VENV);
            let f = run(&mut cmd, START_LIMIT);
            if f.status.success() {
                return WsgiDavServer {
                    port,
                    root,
                    state,
                    _base: base,
                };
            }
            let log = super::mount::tail(&state.join(format!("wsgidav-{port}/log")), 40);
            last_failure = format!("{}\nlog:\n{log}", f.both());
            if !f.stderr.contains("is taken") && !log.contains("in use") {
                break;
            }
        }
        panic!("could not start WsgiDAV with {SCRIPT}:\n{last_failure}");
    }

    /// Base URL of the share, with a trailing slash: `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for WsgiDavServer {
    fn drop(&mut self) {
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT)
            .args(["stop", "wsgidav"])
            .arg(self.port.to_string())
            .env("STATE_DIR", &self.state);
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut cmd, STOP_LIMIT)));
        match stopped {
            Ok(f) if f.status.success() => {}
            Ok(f) => eprintln!("stopping WsgiDAV on port {} failed:\n{}", self.port, f.both()),
            Err(_) => eprintln!("stopping WsgiDAV on port {} timed out", self.port),
        }
    }
}
