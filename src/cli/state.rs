//! Where a mount keeps what must outlive it: the upload journal and staged content of each remote
//! (under the XDG state directory, never a cache that cleaners empty), and what a live mount says
//! about itself to `cloudmount status` and `cloudmount unmount` (through [`super::registry`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vfs::writeback::queue::UploadStatus;

/// `$XDG_STATE_HOME/cloudmount` (`~/.local/state/cloudmount`), or `/var/lib/cloudmount` when
/// there is no home.
pub fn default_state_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "cloudmount")
        .and_then(|d| d.state_dir().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/var/lib/cloudmount"))
}

/// The disk cache folder of remote `url` (a URL or a drive URL): `$XDG_CACHE_HOME/cloudmount/blocks/KEY`
/// (`~/.cache/...`) for a user, `/var/cache/cloudmount/blocks/KEY` for root (a system mount from
/// fstab, whose home is not the place for a cache) or when there is no home.
pub fn default_disk_cache_dir(url: &str) -> PathBuf {
    // SAFETY: geteuid cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let base = directories::ProjectDirs::from("", "", "cloudmount")
        .filter(|_| !root)
        .map(|d| d.cache_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/var/cache/cloudmount"));
    base.join("blocks").join(remote_key(url))
}

/// A stable, readable folder name for a remote URL: its host and path made safe, plus a hash of
/// the whole URL so two similar URLs never share a journal.
pub fn remote_key(url: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for b in url.bytes() {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{}-{hash:016x}", readable.trim_matches('_'))
}

/// The upload state of one remote, held exclusively while a mount uses it.
pub struct RemoteState {
    /// The folder.
    pub dir: PathBuf,
    _lock: File,
}

impl RemoteState {
    /// Take the state folder of remote `url` under `root`; fails when another mount holds it.
    pub fn acquire(root: &Path, url: &str) -> io::Result<RemoteState> {
        let dir = root.join("uploads").join(remote_key(url));
        crate::private_fs::create_private_dir_all(&dir)?;
        let lock = crate::private_fs::open_private(
            crate::private_fs::private_options()
                .create(true)
                .truncate(false)
                .write(true),
            &dir.join("lock"),
        )?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{url} is already mounted by another cloudmount (its upload journal {} is in use); \
                     to mount it a second time, give this mount a state folder of its own: \
                     --state-dir DIR (mount option state_dir=DIR)",
                    dir.display()
                ),
            ));
        }
        Ok(RemoteState { dir, _lock: lock })
    }

    /// The upload journal.
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// Staged content.
    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// Folder of the local metadata store (`crate::metastore`): modes, owners and times the
    /// server cannot keep.
    pub fn metadata(&self) -> PathBuf {
        self.dir.join("meta")
    }
}

/// What a live mount publishes about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountStatus {
    /// Daemon process id.
    pub pid: u32,
    /// The remote (no credentials).
    pub remote: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Whether the mount is still attached (false while it drains uploads after unmount).
    pub mounted: bool,
    /// The daemon is done (unmounted, no more uploads it will finish): `uploads` stay queued on
    /// disk for the next mount of the remote. The last word of a `watch` stream.
    #[serde(default)]
    pub done: bool,
    /// The mount's state directory (`--state-dir`), so `status --state-dir` can pick its mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Where the daemon logs (absent when it logs to the journal or a terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// The sign-in state of remotes that sign in (OneDrive); `None` for WebDAV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::AuthState>,
    /// Uploads not yet on the server.
    pub uploads: Vec<UploadLine>,
}

/// One waiting upload, for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadLine {
    /// File name.
    pub name: String,
    /// Folder (remote id).
    pub folder: String,
    /// Bytes to send.
    pub size: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Whether it is being sent now.
    pub running: bool,
    /// Bytes of the current (or last) attempt that have gone out.
    #[serde(default)]
    pub sent: u64,
    /// Last error.
    pub error: Option<String>,
    /// Whether the queue gave up until the next mount.
    pub failed: bool,
}

impl From<&UploadStatus> for UploadLine {
    fn from(u: &UploadStatus) -> Self {
        UploadLine {
            name: u.name.clone(),
            folder: u.parent.clone(),
            size: u.size,
            attempts: u.attempts,
            running: u.running,
            sent: u.sent,
            error: u.last_error.clone(),
            failed: u.failed,
        }
    }
}

/// Whether process `pid` is running (a zombie, exited but not yet reaped, is not).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_keys_are_safe_and_distinct() {
        let a = remote_key("http://127.0.0.1:8080/dav/");
        let b = remote_key("http://127.0.0.1:8080/dav2/");
        assert_ne!(a, b);
        assert!(a.starts_with("127.0.0.1_8080_dav-"));
        assert!(!remote_key("https://h/a b/../x").contains('/'));
    }

    #[test]
    fn a_second_holder_of_one_remote_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = RemoteState::acquire(dir.path(), "http://h/").unwrap();
        let err = RemoteState::acquire(dir.path(), "http://h/").err().expect("refused");
        assert!(err.to_string().contains("already mounted"));
        drop(first);
        RemoteState::acquire(dir.path(), "http://h/").unwrap();
    }
}
