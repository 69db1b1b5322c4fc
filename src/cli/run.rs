//! The mount lifecycle: resolve the remote, connect, mount, report readiness, serve until
//! unmounted (by `umount`, `fusermount3 -u`, `cloudmount unmount`, SIGINT or SIGTERM).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::config::{default_config_path, run_password_command, ConfigFile, RemoteKind};
use super::daemon::Readiness;
use super::MountArgs;
use crate::fuse::session::{self, MountSettings};
use crate::remote::Remote;
use crate::vfs::{DriveFs, FsConfig, Ownership};
use crate::webdav::{DavConfig, DavRemote};

/// A remote resolved from the command line and the config file, ready to connect to.
#[derive(Clone)]
pub struct ResolvedRemote {
    /// Base URL of the share.
    pub url: url::Url,
    /// Basic auth user.
    pub user: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
}

impl std::fmt::Debug for ResolvedRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedRemote")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything `mount` needs, checked before any fork or thread, so mistakes are reported on the
/// terminal.
#[derive(Debug)]
pub struct MountPlan {
    /// The remote.
    pub remote: ResolvedRemote,
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
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn resolve_remote(args: &MountArgs) -> Result<ResolvedRemote> {
    let looks_like_url = args.remote.starts_with("http://") || args.remote.starts_with("https://");
    let (url, mut user, mut password, mut password_command) = if looks_like_url {
        (args.remote.clone(), None, None, None)
    } else {
        let (path, explicit) = match &args.config {
            Some(p) => (p.clone(), true),
            None => (
                default_config_path().context("cannot find the config directory")?,
                false,
            ),
        };
        let cfg = ConfigFile::load(&path, explicit)?;
        let r = cfg
            .remote(&args.remote)
            .with_context(|| format!("in {}", path.display()))?;
        match r.kind {
            RemoteKind::Webdav => {}
        }
        (
            r.url.clone(),
            r.user.clone(),
            r.password.clone(),
            r.password_command.clone(),
        )
    };
    if args.user.is_some() {
        user = args.user.clone();
    }
    if args.password_command.is_some() {
        password_command = args.password_command.clone();
        password = None;
    } else if let Ok(p) = std::env::var("CLOUDMOUNT_PASSWORD") {
        password = Some(p);
        password_command = None;
    }
    if let Some(cmd) = password_command {
        password = Some(run_password_command(&cmd)?);
    }
    let mut url = url::Url::parse(&url).with_context(|| format!("{url:?} is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{url} is not an http(s) URL");
    }
    // Credentials in the URL itself are accepted but moved out of it, so the URL can be shown.
    if !url.username().is_empty() {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        user.get_or_insert_with(|| decode(url.username()));
        if let Some(p) = url.password() {
            password.get_or_insert_with(|| decode(p));
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(ResolvedRemote { url, user, password })
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
    let attr_ttl = secs("ttl", args.ttl)?;
    let negative_ttl = match args.negative_ttl {
        Some(v) => secs("negative-ttl", v)?,
        None => attr_ttl,
    };
    let timeout = secs("timeout", args.timeout)?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    if !args.read_only {
        eprintln!("cloudmount: writes are not supported yet; mounting read-only");
    }
    let log_file = args.log_file.clone().unwrap_or_else(|| default_log_file(&mountpoint));
    Ok(MountPlan {
        remote,
        mountpoint,
        fs: FsConfig {
            ownership: Ownership::current_user(),
            attr_ttl,
            negative_ttl,
            block_size,
            cache_bytes,
            max_prefetch_bytes: args.prefetch.saturating_mul(1 << 20),
            read_only: true,
        },
        timeout,
        allow_other: args.allow_other,
        log_file,
    })
}

/// Connect, mount, report readiness and serve until unmounted. Runs in the daemon (or in the
/// foreground); `readiness` carries the outcome to a waiting parent.
pub fn serve(plan: MountPlan, mut readiness: Readiness) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("cloudmount-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = mount_and_run(&rt, &plan, &mut readiness);
    if let Err(e) = &result {
        readiness.failed(&format!("{e:#}"));
    }
    // Blocks still downloading for prefetch are of no use now.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

fn mount_and_run(rt: &tokio::runtime::Runtime, plan: &MountPlan, readiness: &mut Readiness) -> Result<()> {
    let url = plan.remote.url.clone();
    let remote: Arc<dyn Remote> = Arc::new(DavRemote::new(DavConfig {
        url: url.clone(),
        user: plan.remote.user.clone(),
        password: plan.remote.password.clone(),
        timeout: plan.timeout,
        connect_timeout: plan.timeout.min(Duration::from_secs(10)),
    })?);
    let fs = rt
        .block_on(DriveFs::new(remote.clone(), plan.fs.clone()))
        .with_context(|| format!("cannot open {url}"))?;
    let settings = MountSettings {
        mountpoint: plan.mountpoint.clone(),
        fsname: remote.describe(),
        allow_other: plan.allow_other,
        read_only: plan.fs.read_only,
    };
    let mut session = session::mount(fs, rt.handle().clone(), &settings)
        .with_context(|| format!("cannot mount on {}", plan.mountpoint.display()))?;
    tracing::info!(remote = %url, mountpoint = %plan.mountpoint.display(), "mounted");
    readiness.ready();

    let mountpoint = plan.mountpoint.clone();
    let unmounter = session.unmount_callable();
    rt.spawn(async move {
        unmount_on_signal(mountpoint, unmounter).await;
    });
    session.run().context("the FUSE session ended with an error")?;
    tracing::info!(mountpoint = %plan.mountpoint.display(), "unmounted");
    Ok(())
}

/// Wait for SIGINT or SIGTERM, then unmount; the FUSE session then ends and the process exits.
async fn unmount_on_signal(mountpoint: PathBuf, unmounter: fuser::SessionUnmounter) {
    let unmounter = Arc::new(std::sync::Mutex::new(unmounter));
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers; unmount with `cloudmount unmount`");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "unmounting");
        let (mp, unmounter) = (mountpoint.clone(), unmounter.clone());
        // fuser's own unmounter first (it then knows the mount is gone); our lazy fallback when busy.
        let attempt = move || match unmounter.lock().unwrap_or_else(|e| e.into_inner()).unmount() {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "plain unmount failed; trying again");
                session::unmount(&mp)
            }
        };
        match tokio::task::spawn_blocking(attempt).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => tracing::error!(error = %e, "unmount failed"),
            Err(e) => tracing::error!(error = %e, "unmount task failed"),
        }
    }
}

/// `cloudmount unmount DIR`.
pub fn unmount(dir: &Path) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", dir.display()))?;
    if !session::is_mounted(&dir) {
        bail!("{} is not mounted", dir.display());
    }
    session::unmount(&dir).with_context(|| format!("cannot unmount {}", dir.display()))
}
