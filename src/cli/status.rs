//! `cloudmount status`: every live mount of the user and the uploads it has not finished.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::progress;
use super::registry;
use super::state::MountStatus;

/// The mounts `cloudmount status` shows: every live one of the user, or the one at `dir`, or
/// those using `state_dir`.
fn mounts_to_show(dir: Option<&Path>, state_dir: Option<&Path>) -> Result<Vec<MountStatus>> {
    let state_dir = state_dir.map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
    let want = match dir {
        Some(d) => Some(
            d.canonicalize()
                .with_context(|| format!("{} does not exist", d.display()))?,
        ),
        None => None,
    };
    let mounts: Vec<MountStatus> = registry::live_mounts()
        .into_iter()
        .map(|m| m.status)
        .filter(|s| want.as_ref().map(|w| &s.mountpoint == w).unwrap_or(true))
        .filter(|s| state_dir.is_none() || s.state_dir == state_dir)
        .collect();
    if mounts.is_empty() {
        bail!(
            "no cloudmount mount{}{} (looked in {})",
            want.map(|w| format!(" at {}", w.display())).unwrap_or_default(),
            state_dir
                .map(|d| format!(" with state directory {}", d.display()))
                .unwrap_or_default(),
            registry::registry_dir().display()
        );
    }
    Ok(mounts)
}

/// `cloudmount status [DIR] [--json]`: text for people, or the status records as a JSON array.
pub fn status(dir: Option<&Path>, state_dir: Option<&Path>, json: bool) -> Result<String> {
    let mounts = mounts_to_show(dir, state_dir)?;
    if json {
        return Ok(serde_json::to_string_pretty(&mounts)? + "\n");
    }
    let mut out = String::new();
    for m in &mounts {
        out.push_str(&mount_header(m));
        out.push('\n');
        if let Some(a) = &m.auth {
            out.push_str(&format!("  auth: {}\n", a.summary()));
        }
        if m.uploads.is_empty() {
            out.push_str("  uploads: none pending\n");
        }
        for u in &m.uploads {
            let what = if u.failed {
                "FAILED"
            } else if u.running {
                "sending"
            } else {
                "waiting"
            };
            let amount = if u.running {
                format!(
                    "{} of {} sent",
                    progress::human_bytes(u.sent.min(u.size)),
                    progress::human_bytes(u.size)
                )
            } else {
                progress::human_bytes(u.size)
            };
            out.push_str(&format!("  {what:8} {}: {amount}, {} attempt(s)", u.name, u.attempts));
            if let Some(e) = &u.error {
                out.push_str(&format!(", last error: {e}"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

fn mount_header(m: &MountStatus) -> String {
    let state = if m.mounted {
        "mounted"
    } else {
        "unmounted, finishing uploads"
    };
    format!("{} on {} (pid {}, {state})", m.remote, m.mountpoint.display(), m.pid)
}

/// `cloudmount status --watch [DIR]`: the uploads with bytes sent, rate and time left, every half
/// second, until the mounts are gone (or Ctrl-C).
pub fn status_watch(dir: Option<&Path>, state_dir: Option<&Path>) -> Result<()> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut screen = progress::Screen::new(stdout, terminal);
    let mut first = true;
    loop {
        let mounts = match mounts_to_show(dir, state_dir) {
            Ok(m) => m,
            Err(e) if first => return Err(e),
            Err(_) => {
                println!("cloudmount: no mount left to watch");
                return Ok(());
            }
        };
        first = false;
        let mut header = String::new();
        let mut uploads = Vec::new();
        for m in &mounts {
            if !header.is_empty() {
                header.push('\n');
            }
            header.push_str(&mount_header(m));
            if let Some(a) = &m.auth {
                header.push_str(&format!("; auth: {}", a.summary()));
            }
            if m.uploads.is_empty() {
                header.push_str("; uploads: none pending");
            }
            uploads.extend(m.uploads.iter().cloned());
        }
        if terminal {
            screen.show(&header, &uploads);
        } else {
            screen.show("", &uploads);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
