//! The registry of live mounts: one Unix socket per mount daemon in a folder of the user's that
//! does not depend on `--state-dir` (`$XDG_RUNTIME_DIR/cloudmount`, `/run/cloudmount` for root),
//! so that `cloudmount status` and `cloudmount unmount DIR` find every mount the user has.
//!
//! The daemon answers on its socket with what it knows at that moment, so a file is shown as
//! pending as soon as its close returned (no status file written now and then):
//! - `status\n`: one [`MountStatus`] as JSON, then the connection closes;
//! - `watch\n`: a [`MountStatus`] per line, about four a second, until the daemon has finished
//!   (unmounted and done with the uploads it could finish); the last line has `done: true` and
//!   lists what stays queued. `cloudmount unmount` reads it to wait, show progress and report.
//!
//! The folder is 0700, the sockets 0600. A socket nobody answers on is a daemon that died: it is
//! ignored and removed.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::state::{remote_key, MountStatus};

/// How often a `watch` stream sends a line.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a client waits for a daemon's answer before taking it for stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `/run/cloudmount` for root (system mounts from fstab or systemd); `$XDG_RUNTIME_DIR/cloudmount`
/// for a user; `$TMPDIR/cloudmount-UID` when the session has no runtime folder (su, cron).
pub fn registry_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/cloudmount");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() && d.is_dir() => d.join("cloudmount"),
        _ => std::env::temp_dir().join(format!("cloudmount-{uid}")),
    }
}

/// Create the registry folder (0700) if needed, and refuse one that another user owns or others
/// can enter (in a shared /tmp someone could have made it first).
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a folder of user {uid}", dir.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A daemon's entry in the registry: its socket. Removed when dropped.
pub struct Registration {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
}

impl Registration {
    /// Create the socket of the daemon of `mountpoint` (named by the mountpoint and our pid, so a
    /// new mount on a folder whose last daemon still finishes its uploads does not collide).
    pub fn create(mountpoint: &Path) -> io::Result<Registration> {
        let dir = registry_dir();
        ensure_dir(&dir)?;
        let path = dir.join(format!(
            "{}-{}.sock",
            remote_key(&mountpoint.to_string_lossy()),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Registration {
            path,
            listener: Some(listener),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answer clients on the current tokio runtime: `snapshot` says how the mount is now,
    /// `finished` holds the last word once the daemon is done. Returns the number of `watch`
    /// streams still open, so the daemon can let them read the last word before it exits.
    pub fn serve(
        &mut self,
        snapshot: Arc<dyn Fn() -> MountStatus + Send + Sync>,
        finished: watch::Receiver<Option<MountStatus>>,
    ) -> io::Result<Arc<AtomicUsize>> {
        let listener =
            tokio::net::UnixListener::from_std(self.listener.take().ok_or_else(|| {
                io::Error::new(io::ErrorKind::AlreadyExists, "the registry socket is already served")
            })?)?;
        let watchers = Arc::new(AtomicUsize::new(0));
        let w = watchers.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (snapshot, finished, w) = (snapshot.clone(), finished.clone(), w.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(conn, snapshot, finished, w).await {
                        tracing::debug!(error = %e, "a status client went away");
                    }
                });
            }
        });
        Ok(watchers)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Counts an open `watch` stream while it lives.
struct Watching(Arc<AtomicUsize>);

impl Watching {
    fn new(n: Arc<AtomicUsize>) -> Watching {
        n.fetch_add(1, Ordering::SeqCst);
        Watching(n)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(
    conn: tokio::net::UnixStream,
    snapshot: Arc<dyn Fn() -> MountStatus + Send + Sync>,
    mut finished: watch::Receiver<Option<MountStatus>>,
    watchers: Arc<AtomicUsize>,
) -> io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut request = String::new();
    let mut read = tokio::io::BufReader::new(read);
    tokio::time::timeout(ANSWER_TIMEOUT, read.read_line(&mut request))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let now = |finished: &watch::Receiver<Option<MountStatus>>| finished.borrow().clone().unwrap_or_else(|| snapshot());
    match request.trim() {
        "status" => {
            let line = serde_json::to_string(&now(&finished)).map_err(io::Error::other)? + "\n";
            write.write_all(line.as_bytes()).await
        }
        "watch" => {
            let _counted = Watching::new(watchers);
            loop {
                let status = now(&finished);
                let line = serde_json::to_string(&status).map_err(io::Error::other)? + "\n";
                write.write_all(line.as_bytes()).await?;
                if status.done {
                    return write.flush().await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    _ = finished.changed() => {}
                }
            }
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown request {other:?}"),
        )),
    }
}

/// A live daemon found in the registry.
#[derive(Debug, Clone)]
pub struct LiveMount {
    /// Its socket.
    pub socket: PathBuf,
    /// What it said.
    pub status: MountStatus,
}

fn connect(socket: &Path, request: &str) -> io::Result<BufReader<UnixStream>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    Ok(BufReader::new(s))
}

fn read_status(r: &mut BufReader<UnixStream>) -> io::Result<Option<MountStatus>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line).map(Some).map_err(io::Error::other)
}

/// Ask one daemon how it is.
pub fn query(socket: &Path) -> io::Result<MountStatus> {
    let mut r = connect(socket, "status")?;
    read_status(&mut r)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))
}

/// Every live daemon of this user, by mountpoint. Sockets of daemons that died are removed.
pub fn live_mounts() -> Vec<LiveMount> {
    let Ok(dir) = std::fs::read_dir(registry_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<LiveMount> = Vec::new();
    for e in dir.flatten() {
        let socket = e.path();
        if socket.extension().and_then(|x| x.to_str()) != Some("sock") {
            continue;
        }
        match query(&socket) {
            Ok(status) => out.push(LiveMount { socket, status }),
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => {
                // Nobody listens: the daemon died without cleaning up.
                let _ = std::fs::remove_file(&socket);
            }
            Err(e) => tracing::warn!(socket = %socket.display(), error = %e, "a mount daemon does not answer"),
        }
    }
    out.sort_by(|a, b| {
        a.status
            .mountpoint
            .cmp(&b.status.mountpoint)
            .then(a.status.pid.cmp(&b.status.pid))
    });
    out
}

/// A `watch` stream: each item is the daemon's status at that moment; it ends after the one with
/// `done: true`, or early (`None`) when the daemon dies.
pub struct WatchStream(BufReader<UnixStream>);

impl WatchStream {
    /// Open the stream of the daemon at `socket`.
    pub fn open(socket: &Path) -> io::Result<WatchStream> {
        connect(socket, "watch").map(WatchStream)
    }

    /// The next status; `Ok(None)` when the daemon closed the stream.
    pub fn next_status(&mut self) -> io::Result<Option<MountStatus>> {
        read_status(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(done: bool) -> MountStatus {
        MountStatus {
            pid: std::process::id(),
            remote: "http://h/".into(),
            mountpoint: "/mnt/x".into(),
            mounted: !done,
            done,
            auth: None,
            state_dir: None,
            log_file: None,
            uploads: vec![],
        }
    }

    #[test]
    fn a_daemon_answers_status_and_watch_and_dead_sockets_are_cleaned() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut reg = Registration {
            path: path.clone(),
            listener: Some(listener),
        };
        let (tx, rx) = watch::channel(None);
        let watchers = reg.serve(Arc::new(|| status(false)), rx).unwrap();
        assert_eq!(query(&path).unwrap(), status(false));
        let mut w = WatchStream::open(&path).unwrap();
        assert_eq!(w.next_status().unwrap(), Some(status(false)));
        tx.send_replace(Some(status(true)));
        let mut last = None;
        while let Some(s) = w.next_status().unwrap() {
            last = Some(s);
        }
        assert_eq!(last, Some(status(true)));
        assert_eq!(watchers.load(Ordering::SeqCst), 0);
        drop(reg);
        assert!(!path.exists(), "the registration removes its socket");
        // A socket file nobody listens on is refused.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(query(&path).is_err());
    }
}
