//! The checked plan of a mount: every argument validated and converted, the remote resolved, so
//! mistakes are reported on the terminal before any fork or thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::options::secs;
use super::resolve::{check_signed_in, configured_mount_options, resolve_remote, Target};
use super::state;
use super::{MountArgs, MountOptions};
use crate::fuse::session;
use crate::vfs::FsConfig;

/// Everything `mount` needs, checked before any fork or thread, so mistakes are reported on the
/// terminal.
#[derive(Debug)]
pub struct MountPlan {
    /// The remote.
    pub remote: Target,
    /// Absolute mountpoint.
    pub mountpoint: PathBuf,
    /// Core settings.
    pub fs: FsConfig,
    /// Network deadline per operation.
    pub timeout: Duration,
    /// `allow_other`.
    pub allow_other: bool,
    /// Where the daemon logs.
    pub log_file: PathBuf,
    /// Where the daemon's log can be read, for messages (none in the foreground or on the journal).
    pub daemon_log: Option<PathBuf>,
    /// Upload journals, staged content and (OneDrive) tokens.
    pub state_dir: PathBuf,
    /// Free space the state disk keeps.
    pub min_free_bytes: u64,
    /// Uploads at once.
    pub uploads: usize,
    /// `--poll-interval`: how often to look for changes made elsewhere .
    pub poll_interval: Duration,
    /// How long to keep trying to reach the server at mount time.
    pub wait_online: Duration,
    /// CA certificates to trust besides the system's (`--ca-cert`, else the remote's `ca_cert`).
    pub ca_cert: Option<PathBuf>,
    /// The options in force: the command line's over the config file's over the defaults.
    pub options: MountOptions,
}

fn default_log_file(mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = directories::ProjectDirs::from("", "", "cloudmount")
        .map(|d| d.cache_dir().join("logs"))
        .unwrap_or_else(|| std::env::temp_dir().join("cloudmount-logs"));
    base.join(format!("mount{name}.log"))
}

/// Check the arguments and resolve the remote (no network yet).
pub fn plan(args: &MountArgs) -> Result<MountPlan> {
    let remote = resolve_remote(args)?;
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mountpoint {} does not exist", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mountpoint {} is not a folder", mountpoint.display());
    }
    if session::is_mounted(&mountpoint) {
        bail!("{} is already a mountpoint", mountpoint.display());
    }
    let o = &match configured_mount_options(args)? {
        Some(table) => args.options.over_config(&args.given, &table)?,
        None => args.options.clone(),
    };
    let fs = o.fs_config()?;
    let timeout = secs("timeout", o.timeout)?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    if o.uploads == 0 {
        bail!("--uploads must be at least 1");
    }
    let poll_interval = secs("poll-interval", o.poll_interval)?;
    if poll_interval.is_zero() {
        bail!("--poll-interval must be a positive number of seconds");
    }
    let wait_online = secs("wait-online", o.wait_online)?;
    let log_file = o.log_file.clone().unwrap_or_else(|| default_log_file(&mountpoint));
    let state_dir = o.state_dir.clone().unwrap_or_else(state::default_state_dir);
    if let Target::OneDrive(t) = &remote {
        check_signed_in(t, &state_dir)?;
    }
    let ca_cert = o.ca_cert.clone().or_else(|| match &remote {
        Target::Webdav(r) => r.ca_cert.clone(),
        Target::OneDrive(t) => t.ca_cert.clone(),
    });
    if let Some(ca) = &ca_cert {
        // Said on the terminal, before the daemon starts.
        std::fs::File::open(ca).with_context(|| format!("cannot read the CA certificate file {}", ca.display()))?;
    }
    Ok(MountPlan {
        remote,
        mountpoint,
        fs,
        timeout,
        allow_other: o.allow_other,
        daemon_log: (!o.foreground && (o.log_file.is_some() || !super::daemon::stderr_is_journal()))
            .then(|| log_file.clone()),
        log_file,
        state_dir,
        min_free_bytes: o.min_free.saturating_mul(1 << 20),
        uploads: o.uploads,
        poll_interval,
        wait_online,
        ca_cert,
        options: o.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    /// `cloudmount mount NAME DIR` takes the remote's mount options from the config file, under
    /// the flags given.
    #[test]
    fn a_plan_takes_the_remotes_options_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            "[remotes.nas]\ntype = \"webdav\"\nurl = \"http://h/dav/\"\n\
             [remotes.nas.mount]\ncache_size = 64\nttl = 60\nuploads = 2\n",
        )
        .unwrap();
        let mountpoint = dir.path().join("m");
        std::fs::create_dir(&mountpoint).unwrap();
        let argv = [
            "cloudmount",
            "mount",
            "nas",
            mountpoint.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ];
        let plan_of = |extra: &[&str]| {
            let mut argv = argv.to_vec();
            argv.extend_from_slice(extra);
            match Cli::try_parse_args(argv).unwrap().command {
                Command::Mount(a) => plan(&a).unwrap(),
                _ => unreachable!(),
            }
        };
        let p = plan_of(&[]);
        assert_eq!(
            (p.fs.cache_bytes, p.fs.attr_ttl, p.uploads),
            (64 << 20, Duration::from_secs(60), 2)
        );
        let p = plan_of(&["--ttl", "5", "--uploads", "4"]);
        assert_eq!(
            (p.fs.cache_bytes, p.fs.attr_ttl, p.uploads),
            (64 << 20, Duration::from_secs(5), 4)
        );
    }
}
