//! Running in the background: fork before any thread exists (tokio, fuser), let the parent wait
//! until the child says the mount is live or failed, then exit with that outcome. This is how
//! `cloudmount mount` (and later mount(8) and systemd) get a truthful exit code.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::notify::Notifier;

/// The child's side of the readiness pipe, and systemd's readiness socket.
pub struct Readiness {
    pipe: Option<File>,
    notifier: Notifier,
    notified_ready: bool,
}

impl Readiness {
    /// No parent is waiting (foreground mode); systemd may be, through `notifier`.
    pub fn foreground(notifier: Notifier) -> Self {
        Readiness {
            pipe: None,
            notifier,
            notified_ready: false,
        }
    }

    /// Tell the waiting parent, and systemd (`READY=1`, once), that the mount is live.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"ok\n");
        }
        if !self.notified_ready {
            self.notified_ready = true;
            if let Err(e) = self.notifier.notify("READY=1") {
                tracing::warn!(error = %e, "cannot tell systemd the mount is ready (NOTIFY_SOCKET)");
            }
        }
    }

    /// Tell systemd the mount is going away (`STOPPING=1`), after a successful `ready`.
    pub fn stopping(&mut self) {
        if self.notified_ready {
            let _ = self.notifier.notify("STOPPING=1");
        }
    }

    /// Tell the waiting parent why mounting failed.
    pub fn failed(&mut self, message: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(message.as_bytes());
        }
    }
}

/// What `fork_daemon` returns in each process.
pub enum Forked {
    /// In the parent: the exit code to leave with.
    Parent(i32),
    /// In the daemon.
    Child(Readiness),
}

/// Whether stderr is connected to the systemd journal: `JOURNAL_STREAM` names its device and inode
/// (systemd.exec(5)), so a stderr redirected elsewhere by the user does not count.
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>() == Ok(st.st_dev) && ino.parse::<u64>() == Ok(st.st_ino)
}

/// Fork. The parent blocks until the child reports and returns the exit code; the child detaches
/// from the terminal, sends stdout and stderr to `log_path` (or keeps stderr when it is the
/// systemd journal and no log file was asked for), and gets the pipe to report on.
///
/// Must be called before any thread is started.
pub fn fork_daemon(log_path: &Path, keep_stderr: bool, notifier: Notifier) -> std::io::Result<Forked> {
    let log = if keep_stderr {
        None
    } else {
        if let Some(dir) = log_path.parent() {
            crate::private_fs::create_private_dir_all(dir)?;
        }
        Some(crate::private_fs::open_private(
            crate::private_fs::private_options().create(true).append(true),
            log_path,
        )?)
    };
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    // SAFETY: no other thread exists yet (the caller's contract), so the child may run freely.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write_end);
            let mut msg = String::new();
            File::from(read_end).read_to_string(&mut msg)?;
            if msg.trim() == "ok" {
                Ok(Forked::Parent(0))
            } else {
                if msg.trim().is_empty() {
                    let log = if keep_stderr {
                        "the journal".to_string()
                    } else {
                        log_path.display().to_string()
                    };
                    eprintln!("cloudmount: the mount daemon exited before mounting (see {log})");
                } else {
                    eprintln!("cloudmount: {}", msg.trim_end());
                }
                Ok(Forked::Parent(1))
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid()?;
            let devnull = File::open("/dev/null")?;
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe {
                libc::dup2(devnull.as_raw_fd(), 0);
                match &log {
                    Some(log) => {
                        libc::dup2(log.as_raw_fd(), 1);
                        libc::dup2(log.as_raw_fd(), 2);
                    }
                    None => {
                        libc::dup2(2, 1);
                    }
                }
            }
            Ok(Forked::Child(Readiness {
                pipe: Some(File::from(write_end)),
                notifier,
                notified_ready: false,
            }))
        }
    }
}
