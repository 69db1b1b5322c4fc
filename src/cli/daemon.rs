//! Running in the background: fork before any thread exists (tokio, fuser), let the parent wait
//! until the child says the mount is live or failed, then exit with that outcome. This is how
//! `cloudmount mount` (and later mount(8) and systemd) get a truthful exit code.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The child's side of the readiness pipe.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// No parent is waiting (foreground mode).
    pub fn foreground() -> Self {
        Readiness { pipe: None }
    }

    /// Tell the waiting parent the mount is live.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"ok\n");
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

/// Fork. The parent blocks until the child reports and returns the exit code; the child detaches
/// from the terminal, sends stdout and stderr to `log_path`, and gets the pipe to report on.
///
/// Must be called before any thread is started.
pub fn fork_daemon(log_path: &Path) -> std::io::Result<Forked> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
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
                    eprintln!(
                        "cloudmount: the mount daemon exited before mounting (see {})",
                        log_path.display()
                    );
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
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
            Ok(Forked::Child(Readiness {
                pipe: Some(File::from(write_end)),
            }))
        }
    }
}
