//! Mounting and unmounting: builds fuser's session for a [`DriveFs`], and unmounts a mountpoint
//! the way the kernel allows for who we are.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle;

use super::FuseAdapter;
use crate::vfs::DriveFs;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountSettings {
    /// Where.
    pub mountpoint: PathBuf,
    /// The source shown by `mount`/`findmnt` (for example the remote's URL).
    pub fsname: String,
    /// Let users other than the one mounting in (`allow_other`).
    pub allow_other: bool,
    /// Mount read-only in the kernel too.
    pub read_only: bool,
}

/// Mount `fs` and return the session, ready to [`run`](Session::run). The mount is live when this
/// returns.
pub fn mount(fs: Arc<DriveFs>, rt: Handle, settings: &MountSettings) -> io::Result<Session<FuseAdapter>> {
    let mut options = vec![
        MountOption::FSName(settings.fsname.clone()),
        MountOption::Subtype("cloudmount".into()),
        // Let the kernel check modes and owners, so allow_other does not open everything to all.
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    options.push(if settings.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    let mut cfg = Config::default();
    cfg.mount_options = options;
    cfg.acl = if settings.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(2);
    cfg.clone_fd = true;
    Session::new(FuseAdapter::new(fs, rt), &settings.mountpoint, &cfg)
}

/// Whether `dir` is a mountpoint right now (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mountinfo(m)) == dir)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount `dir`. As root: a plain unmount, or a lazy one when the mount is busy (it then goes
/// away when its last user leaves). Otherwise through `fusermount3 -u` (lazy with `-z` as the
/// fallback).
pub fn unmount(dir: &Path) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                tracing::warn!(dir = %dir.display(), "mount is busy; detaching it lazily");
                return nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let status = Command::new("fusermount3").arg("-u").arg("--").arg(dir).status()?;
    if status.success() {
        return Ok(());
    }
    let status = Command::new("fusermount3").args(["-u", "-z", "--"]).arg(dir).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u {} failed", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
    }
}
