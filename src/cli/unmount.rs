//! `cloudmount unmount`: unmount a folder, then wait while its daemon finishes the uploads it owes.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::progress;
use super::registry;
use super::state::MountStatus;
use crate::auth::AuthState;
use crate::fuse::session;

/// The live daemon attached to `dir`, from the registry.
fn daemon_of(dir: &Path) -> Option<registry::LiveMount> {
    registry::live_mounts()
        .into_iter()
        .find(|m| m.status.mountpoint == dir && m.status.mounted)
}

/// `cloudmount unmount DIR`: unmount, then (unless `no_wait`) wait while the daemon finishes the
/// uploads it owes, showing their progress. Fails, naming them, when some stay queued.
pub fn unmount(dir: &Path, no_wait: bool) -> Result<()> {
    use std::io::IsTerminal;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", dir.display()))?;
    if !session::is_mounted(&dir) {
        bail!("{} is not mounted", dir.display());
    }
    let Some(daemon) = daemon_of(&dir) else {
        bail!(
            "no cloudmount daemon of this user answers for {dir} (looked in {reg}), so its uploads could \
             not be waited for; not unmounting. If it is another user's or an older version's mount, \
             `{umount} {quoted}` unmounts it (its daemon finishes the uploads in the background)",
            dir = dir.display(),
            reg = registry::registry_dir().display(),
            // SAFETY: geteuid cannot fail and touches no memory.
            umount = if unsafe { libc::geteuid() } == 0 {
                "umount"
            } else {
                "fusermount3 -u"
            },
            quoted = super::shell_quote(&dir.to_string_lossy())
        )
    };
    // The stream is open, and its first line read (so the daemon counts us among those it lets
    // read its last word before exiting), before the unmount.
    let mut stream = registry::WatchStream::open(&daemon.socket)
        .and_then(|mut s| s.next_status().map(|_| s))
        .with_context(|| format!("cannot ask the daemon of {} (pid {})", dir.display(), daemon.status.pid))?;
    session::unmount(&dir).with_context(|| format!("cannot unmount {}", dir.display()))?;
    if no_wait {
        let pending = daemon.status.uploads.len();
        if pending > 0 {
            eprintln!(
                "cloudmount: unmounted; {pending} upload(s) go on in the background (`cloudmount status` shows them)"
            );
        }
        return Ok(());
    }
    let stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    let mut screen = progress::Screen::new(stderr, terminal);
    let mut said_waiting = false;
    let last = loop {
        match stream.next_status() {
            Ok(Some(s)) if s.done => break s,
            Ok(Some(s)) => {
                if s.uploads.is_empty() {
                    continue;
                }
                if !said_waiting {
                    let names: Vec<String> = s
                        .uploads
                        .iter()
                        .map(|u| format!("{} ({})", u.name, progress::human_bytes(u.size)))
                        .collect();
                    eprintln!(
                        "cloudmount: unmounted {}; waiting for {} upload(s): {} \
                         (Ctrl-C stops waiting here; the daemon goes on in the background)",
                        dir.display(),
                        s.uploads.len(),
                        names.join(", ")
                    );
                    said_waiting = true;
                }
                screen.show(&format!("uploads of {}:", s.remote), &s.uploads);
            }
            Ok(None) => bail!(
                "the daemon of {} (pid {}) exited without saying whether every upload reached the server; \
                 `cloudmount status` after the next mount shows what is still queued{}",
                dir.display(),
                daemon.status.pid,
                log_hint(&daemon.status)
            ),
            Err(e) => bail!(
                "lost contact with the daemon of {} (pid {}): {e}; `cloudmount status` shows its uploads{}",
                dir.display(),
                daemon.status.pid,
                log_hint(&daemon.status)
            ),
        }
    };
    screen.release();
    if last.uploads.is_empty() {
        if said_waiting {
            eprintln!("cloudmount: every upload reached the server");
        }
        return Ok(());
    }
    let mut msg = format!(
        "{} file(s) did not reach the server and stay queued on disk:\n",
        last.uploads.len()
    );
    for u in &last.uploads {
        msg.push_str(&format!(
            "  {} ({}): {}\n",
            u.name,
            progress::human_bytes(u.size),
            u.error.as_deref().unwrap_or("not sent")
        ));
    }
    let login = match &last.auth {
        Some(AuthState::LoginNeeded { command, .. }) => format!("after `{command}`, "),
        _ => String::new(),
    };
    msg.push_str(&format!(
        "they go up {login}at the next mount of {}{}",
        last.remote,
        log_hint(&last)
    ));
    bail!(msg)
}

/// ` (log: FILE)` when the daemon logs to a file.
fn log_hint(s: &MountStatus) -> String {
    s.log_file
        .as_ref()
        .map(|f| format!(" (log: {})", f.display()))
        .unwrap_or_default()
}
