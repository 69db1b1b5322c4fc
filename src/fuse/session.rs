//! Mounting and unmounting: builds fuser's session for a [`DriveFs`], and unmounts a mountpoint
//! the way the kernel allows for who we are.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle;

use super::FuseAdapter;
use crate::vfs::{DriveFs, Invalidation};

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

/// The filesystem type mount(8), findmnt and systemd see: `fuse.cloudmount`.
pub const FSTYPE: &str = "fuse.cloudmount";

/// A live FUSE session, and whether fuser itself made the mount (and so can unmount it).
pub struct Mounted {
    /// The session, ready to [`run`](Session::run).
    pub session: Session<FuseAdapter>,
    /// False when we mounted through mount(2) ourselves: fuser's unmounter then does nothing, and
    /// [`unmount`] is the way.
    pub fuser_owns_mount: bool,
}

/// Mount `fs` and return the session. The mount is live when this returns.
///
/// As root we call mount(2) ourselves, because fuser's own mount(2) always uses the type `fuse`
/// and drops the subtype; through fusermount3 (everyone else) the type is `fuse.cloudmount` anyway.
pub fn mount(fs: Arc<DriveFs>, rt: Handle, settings: &MountSettings) -> io::Result<Mounted> {
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
    let adapter = FuseAdapter::new(fs.clone(), rt);
    // SAFETY: geteuid cannot fail.
    let mounted = if unsafe { libc::geteuid() } == 0 {
        mount_as_root(adapter, settings, cfg).map(|session| Mounted {
            session,
            fuser_owns_mount: false,
        })
    } else {
        Session::new(adapter, &settings.mountpoint, &cfg).map(|session| Mounted {
            session,
            fuser_owns_mount: true,
        })
    }?;
    spawn_invalidator(&fs, mounted.session.notifier())?;
    Ok(mounted)
}

/// Tell the kernel about remote changes from a thread of its own, never from inside a FUSE
/// handler: a notification may wait for locks that a request in progress holds. Ends when the
/// core drops the channel.
fn spawn_invalidator(fs: &DriveFs, notifier: fuser::Notifier) -> io::Result<()> {
    let mut rx = fs.invalidations();
    std::thread::Builder::new()
        .name("cloudmount-inval".into())
        .spawn(move || {
            while let Some(inv) = rx.blocking_recv() {
                let r = match &inv {
                    Invalidation::Inode(ino) => notifier.inval_inode(fuser::INodeNo(*ino), 0, 0),
                    Invalidation::Entry { parent, name } => {
                        notifier.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name))
                    }
                };
                match r {
                    Ok(()) => tracing::trace!(?inv, "kernel cache invalidated"),
                    // The connection is gone: the mount ended.
                    Err(e) if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::EBADF) => return,
                    Err(e) => tracing::debug!(?inv, error = %e, "kernel cache invalidation refused"),
                }
            }
        })
        .map(|_| ())
}

/// mount(2) of type `fuse.cloudmount` with the options fuser would use, then fuser's session on
/// the `/dev/fuse` descriptor (its handshake answers the kernel's INIT, so the mount is live).
fn mount_as_root(adapter: FuseAdapter, settings: &MountSettings, cfg: Config) -> io::Result<Session<FuseAdapter>> {
    use nix::mount::MsFlags;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let rootmode = std::fs::metadata(&settings.mountpoint)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if settings.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME;
    if settings.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(settings.fsname.as_str()),
        &settings.mountpoint,
        Some(FSTYPE),
        flags,
        Some(data.as_str()),
    )?;
    let acl = cfg.acl;
    Session::from_fd(adapter, dev.into(), acl, cfg).inspect_err(|_| {
        let _ = nix::mount::umount2(&settings.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    })
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
