//! The checked plan of a mount: every argument validated and converted, the remote resolved, so
//! mistakes are reported on the terminal before any fork or thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::resolve::{check_signed_in, resolve_remote, Target};
use super::state;
use super::MountArgs;
use crate::fuse::session;
use crate::vfs::{FsConfig, Ownership};

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
    /// `--poll-interval`: how often to look for changes made elsewhere (default 30 s).
    pub poll_interval: Duration,
    /// How long to keep trying to reach the server at mount time.
    pub wait_online: Duration,
    /// CA certificates to trust besides the system's (`--ca-cert`, else the remote's `ca_cert`).
    pub ca_cert: Option<PathBuf>,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
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
    if !(4..=16384).contains(&args.block_size) {
        bail!("--block-size must be between 4 and 16384 KiB");
    }
    let block_size = args.block_size * 1024;
    let cache_bytes = args.cache_size.saturating_mul(1 << 20);
    if cache_bytes < 4 * block_size {
        bail!("--cache-size must hold at least 4 blocks ({} KiB)", 4 * args.block_size);
    }
    if !(0.0..=100.0).contains(&args.disk_cache_min_free) {
        bail!("--disk-cache-min-free must be a percentage between 0 and 100");
    }
    let attr_ttl = secs("ttl", args.ttl)?;
    let negative_ttl = match args.negative_ttl {
        super::NegativeTtl::Secs(v) => secs("negative-ttl", v)?,
        super::NegativeTtl::FollowTtl => attr_ttl,
    };
    let timeout = secs("timeout", args.timeout)?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    if args.uploads == 0 {
        bail!("--uploads must be at least 1");
    }
    let poll_interval = secs("poll-interval", args.poll_interval)?;
    if poll_interval.is_zero() {
        bail!("--poll-interval must be a positive number of seconds");
    }
    let wait_online = secs("wait-online", args.wait_online)?;
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let ownership = Ownership::new(args.uid.unwrap_or(uid), args.gid.unwrap_or(gid), args.umask);
    let log_file = args.log_file.clone().unwrap_or_else(|| default_log_file(&mountpoint));
    let state_dir = args.state_dir.clone().unwrap_or_else(state::default_state_dir);
    if let Target::OneDrive(t) = &remote {
        check_signed_in(t, &state_dir)?;
    }
    let ca_cert = args.ca_cert.clone().or_else(|| match &remote {
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
        fs: FsConfig {
            ownership,
            attr_ttl,
            negative_ttl,
            block_size,
            cache_bytes,
            disk_cache_dir: args.disk_cache_dir.clone(),
            disk_cache_bytes: args.disk_cache_size.saturating_mul(1 << 20),
            disk_cache_min_free: args.disk_cache_min_free / 100.0,
            max_prefetch_bytes: args.prefetch.saturating_mul(1 << 20),
            read_only: args.read_only,
        },
        timeout,
        allow_other: args.allow_other,
        daemon_log: (!args.foreground && (args.log_file.is_some() || !super::daemon::stderr_is_journal()))
            .then(|| log_file.clone()),
        log_file,
        state_dir,
        min_free_bytes: args.min_free.saturating_mul(1 << 20),
        uploads: args.uploads,
        poll_interval,
        wait_online,
        ca_cert,
    })
}
