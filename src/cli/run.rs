//! The mount lifecycle: resolve the remote, connect, mount, report readiness, serve until
//! unmounted (by `umount`, `fusermount3 -u`, `cloudmount unmount`, SIGINT or SIGTERM).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::config::{default_config_path, run_password_command, ConfigFile, DriveTarget, OneDriveSettings, RemoteKind};
use super::daemon::Readiness;
use super::registry::{self, Registration};
use super::state::{self, MountStatus, RemoteState, UploadLine};
use super::{progress, MountArgs};
use crate::auth::{AuthState, AuthStateHandle, Flow, OAuthTokenSource, TokenStore};
use crate::error::RemoteError;
use crate::fuse::session::{self, MountSettings};
use crate::graph::{ConnectError, DriveSelector, GraphConfig, GraphRemote};
use crate::http::{HttpClient, HttpConfig, RetryPolicy};
use crate::remote::Remote;
use crate::vfs::writeback::queue::QueueConfig;
use crate::vfs::writeback::WriteBackPaths;
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
    /// The remote's `ca_cert` in the config.
    pub ca_cert: Option<PathBuf>,
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

/// A OneDrive remote resolved from the config file and the command line.
#[derive(Clone, Debug)]
pub struct OneDriveTarget {
    /// The remote's name in the config (also names its token file).
    pub name: String,
    /// Sign-in settings and the drive to mount.
    pub settings: OneDriveSettings,
    /// The exact command that signs this remote in again (with --config / --state-dir when they
    /// are not the defaults).
    pub login_command: String,
    /// The remote's `ca_cert` in the config.
    pub ca_cert: Option<PathBuf>,
}

/// What to mount.
#[derive(Clone, Debug)]
pub enum Target {
    /// A WebDAV share.
    Webdav(ResolvedRemote),
    /// A OneDrive or SharePoint drive through Microsoft Graph.
    OneDrive(Box<OneDriveTarget>),
}

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

/// Whether the command line names a OneDrive drive.
fn drive_flags(args: &MountArgs) -> bool {
    args.drive_id.is_some() || args.drive_user.is_some() || args.sharepoint.is_some()
}

/// `cloudmount login onedrive NAME`, with the flow's flag and the --config / --state-dir this mount
/// was given, so that it can be pasted as is.
fn login_command(settings: &OneDriveSettings, args: &MountArgs) -> String {
    with_locations(settings.oauth.login_command(), args)
}

/// `cmd` followed by the --config and --state-dir of `args`, when they were given.
fn with_locations(mut cmd: String, args: &MountArgs) -> String {
    let quote = |p: &Path| super::shell_quote(&p.to_string_lossy());
    if let Some(c) = &args.config {
        cmd.push_str(&format!(" --config {}", quote(c)));
    }
    if let Some(d) = &args.state_dir {
        cmd.push_str(&format!(" --state-dir {}", quote(d)));
    }
    cmd
}

fn resolve_onedrive(args: &MountArgs, remote: &super::config::RemoteConfig) -> Result<OneDriveTarget> {
    if args.user.is_some() || args.password_command.is_some() {
        bail!(
            "--user and --password-command are WebDAV Basic auth; remote {:?} is OneDrive, which signs in with \
             `{}` (for another user's drive: --drive-user UPN)",
            args.remote,
            with_locations(
                format!("cloudmount login onedrive {}", super::shell_quote(&args.remote)),
                args
            )
        );
    }
    let mut r = remote.clone();
    if drive_flags(args) {
        // One drive target: the command line's replaces the config's.
        r.drive_id.clone_from(&args.drive_id);
        r.drive_user.clone_from(&args.drive_user);
        r.sharepoint.clone_from(&args.sharepoint);
        r.library.clone_from(&args.library);
    }
    let settings = r.onedrive(&args.remote)?;
    Ok(OneDriveTarget {
        name: args.remote.clone(),
        login_command: login_command(&settings, args),
        settings,
        ca_cert: remote.ca_cert.clone(),
    })
}

fn resolve_remote(args: &MountArgs) -> Result<Target> {
    let looks_like_url = args.remote.starts_with("http://") || args.remote.starts_with("https://");
    if looks_like_url && drive_flags(args) {
        bail!("--drive-id, --drive-user, --sharepoint and --library are for OneDrive remotes (a name in the config), not WebDAV URLs");
    }
    let (url, mut user, mut password, mut password_command, ca_cert) = if looks_like_url {
        (args.remote.clone(), None, None, None, None)
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
            RemoteKind::Webdav if drive_flags(args) => {
                bail!(
                    "--drive-id, --drive-user, --sharepoint and --library are for OneDrive remotes; {:?} is WebDAV",
                    args.remote
                )
            }
            RemoteKind::Webdav => {}
            RemoteKind::Onedrive => {
                return resolve_onedrive(args, r)
                    .map(|t| Target::OneDrive(Box::new(t)))
                    .with_context(|| format!("in {}", path.display()));
            }
        }
        (
            r.url.clone().context("the remote has no url")?,
            r.user.clone(),
            r.password.clone(),
            r.password_command.clone(),
            r.ca_cert.clone(),
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
    Ok(Target::Webdav(ResolvedRemote {
        url,
        user,
        password,
        ca_cert,
    }))
}

/// A OneDrive remote must have been signed in (client credentials excepted: they sign in at mount).
fn check_signed_in(t: &OneDriveTarget, state_dir: &Path) -> Result<()> {
    if t.settings.oauth.flow == Flow::ClientCredentials {
        return Ok(());
    }
    let store = TokenStore::new(state_dir, &t.name)?;
    match store.load() {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!(
            "remote {:?} is not signed in (no tokens in {}): run `{}`",
            t.name,
            store.path().display(),
            t.login_command
        ),
        Err(e) => bail!(
            "cannot read the tokens of remote {:?} in {}: {e}; sign in again with `{}`",
            t.name,
            store.path().display(),
            t.login_command
        ),
    }
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

/// Have big buffers (the block cache's 1 MiB blocks, upload chunks) come straight from mmap and go
/// back to the system when freed. By default glibc raises its mmap threshold to the size of the
/// first such buffer freed and from then on serves them from its per-thread arenas, which fragment
/// and keep the memory: copying 512 MiB out of a mount then peaked about 60 MiB above the cache cap.
/// The threshold sits at 512 KiB, above hyper's socket read buffers (at most about 408 KiB): below
/// it they came from fresh mappings too, and faulting their pages in cost a tenth of a cold read's
/// CPU. (The 1 MiB buffers are also reused through [`crate::buffers`].)
fn return_big_buffers_to_the_system() {
    // SAFETY: mallopt only changes allocator settings and is thread-safe.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
    }
}

/// Connect, mount, report readiness and serve until unmounted. Runs in the daemon (or in the
/// foreground); `readiness` carries the outcome to a waiting parent.
pub fn serve(plan: MountPlan, mut readiness: Readiness) -> Result<()> {
    return_big_buffers_to_the_system();
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

/// A connected remote, with what the rest of the lifecycle needs to know about it.
struct Connected {
    remote: Arc<dyn Remote>,
    /// Names the remote in logs and status (no credentials), and keys its upload journal.
    key: String,
    /// The sign-in state and the command that signs in again (OneDrive).
    auth: Option<(AuthStateHandle, String)>,
}

fn connect(rt: &tokio::runtime::Runtime, plan: &MountPlan) -> Result<Connected> {
    match &plan.remote {
        Target::Webdav(r) => {
            let remote: Arc<dyn Remote> = Arc::new(DavRemote::new_with(
                DavConfig {
                    url: r.url.clone(),
                    user: r.user.clone(),
                    password: r.password.clone(),
                    timeout: plan.timeout,
                    connect_timeout: plan.timeout.min(Duration::from_secs(10)),
                },
                HttpConfig {
                    ca_cert: plan.ca_cert.clone(),
                    ..HttpConfig::default()
                },
            )?);
            Ok(Connected {
                remote,
                key: r.url.to_string(),
                auth: None,
            })
        }
        Target::OneDrive(t) => connect_onedrive(rt, t, plan),
    }
}

fn drive_selector(target: &DriveTarget) -> DriveSelector {
    match target {
        DriveTarget::Me => DriveSelector::Me,
        DriveTarget::DriveId(id) => DriveSelector::DriveId(id.clone()),
        DriveTarget::User(u) => DriveSelector::User(u.clone()),
        DriveTarget::SharePoint { site, library } => DriveSelector::SharePoint {
            site_url: site.clone(),
            library: library.clone(),
        },
    }
}

/// Sign in from the token store and resolve the drive, retrying for `--wait-online` while the
/// server cannot be reached. Errors say what to do.
fn connect_onedrive(rt: &tokio::runtime::Runtime, t: &OneDriveTarget, plan: &MountPlan) -> Result<Connected> {
    let http = HttpConfig {
        policy: RetryPolicy {
            deadline: plan.timeout,
            connect_timeout: plan.timeout.min(Duration::from_secs(10)),
            ..RetryPolicy::default()
        },
        ca_cert: plan.ca_cert.clone(),
        ..HttpConfig::default()
    };
    let (tokens, auth) = {
        let _in_rt = rt.enter();
        OAuthTokenSource::from_store(&t.settings.oauth, &plan.state_dir, HttpClient::new(http.clone())?)
            .with_context(|| format!("cannot open the tokens of remote {:?}", t.name))?
    };
    let mut config = GraphConfig::new(drive_selector(&t.settings.drive)).with_graph_url(t.settings.graph_url.clone());
    config.timeout = plan.timeout;
    config.connect_timeout = plan.timeout.min(Duration::from_secs(10));
    let graph = &t.settings.graph_url;
    let deadline = std::time::Instant::now() + plan.wait_online;
    let remote = loop {
        match rt.block_on(GraphRemote::connect(config.clone(), http.clone(), tokens.clone())) {
            Ok(r) => break r,
            Err(ConnectError::Remote(e)) if e.is_transient() && std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "cannot reach {graph} yet; trying again (--wait-online)");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(ConnectError::Remote(e)) if e.is_transient() => {
                let hint = if plan.wait_online.is_zero() {
                    "is the network up? --wait-online SECS waits for it".to_string()
                } else {
                    format!("gave up after waiting {:?}", plan.wait_online)
                };
                bail!("cannot reach {graph}: {e} ({hint})");
            }
            Err(ConnectError::Remote(RemoteError::Unauthorized(why))) => match auth.get() {
                AuthState::LoginNeeded { reason, .. } => {
                    bail!(
                        "remote {:?} needs a new sign-in ({reason}): run `{}`",
                        t.name,
                        t.login_command
                    )
                }
                _ => bail!(
                    "Microsoft Graph refused the sign-in of remote {:?} ({why}); sign in again with `{}`",
                    t.name,
                    t.login_command
                ),
            },
            Err(e) => return Err(e).with_context(|| format!("cannot mount remote {:?}", t.name)),
        }
    };
    let key = format!("{}/drives/{}", graph.as_str().trim_end_matches('/'), remote.drive_id());
    Ok(Connected {
        remote: Arc::new(remote),
        key,
        auth: Some((auth, t.login_command.clone())),
    })
}

fn mount_and_run(rt: &tokio::runtime::Runtime, plan: &MountPlan, readiness: &mut Readiness) -> Result<()> {
    let Connected { remote, key, auth } = connect(rt, plan)?;
    let mut fs_cfg = plan.fs.clone();
    if fs_cfg.disk_cache_bytes > 0 && fs_cfg.disk_cache_dir.is_none() {
        let dir = state::default_disk_cache_dir(&key);
        // `.../cloudmount/blocks/KEY`: older versions made `cloudmount`, `blocks` and `logs`
        // beside it world-readable, and their listings name the remotes and mountpoints.
        if let Some(base) = dir.parent().and_then(Path::parent) {
            for old in [base.to_path_buf(), base.join("blocks"), base.join("logs")] {
                if let Err(e) = crate::private_fs::make_existing_dir_private(&old) {
                    tracing::warn!(folder = %old.display(), error = %e, "cannot make this folder private");
                }
            }
        }
        fs_cfg.disk_cache_dir = Some(dir);
    }
    make_local_folders_private(&plan.state_dir, fs_cfg.disk_cache_dir.as_deref())?;
    if !remote.capabilities().writes && !fs_cfg.read_only {
        tracing::info!(
            remote = %remote.describe(),
            "this remote cannot write yet (no upload support): mounting read-only; changes answer EROFS"
        );
        fs_cfg.read_only = true;
    }
    let fs = first_contact(rt, &remote, &fs_cfg, &key, plan)?;
    // The journal of a remote is used by one mount at a time, and resumed by the next one.
    let remote_state = if fs_cfg.read_only {
        None
    } else {
        let st = RemoteState::acquire(&plan.state_dir, &key)?;
        let paths = WriteBackPaths {
            journal: st.journal(),
            staging: st.staging(),
            min_free_bytes: plan.min_free_bytes,
        };
        let _in_rt = rt.enter();
        fs.enable_writes(
            &paths,
            QueueConfig {
                parallel: plan.uploads,
                ..QueueConfig::default()
            },
        )
        .with_context(|| format!("cannot open the upload journal in {}", st.dir.display()))?;
        Some(st)
    };
    let settings = MountSettings {
        mountpoint: plan.mountpoint.clone(),
        // The URL (WebDAV) or the drive URL (OneDrive): no spaces, unlike a OneDrive description.
        fsname: key.clone(),
        allow_other: plan.allow_other,
        read_only: fs_cfg.read_only,
    };
    let session::Mounted {
        mut session,
        fuser_owns_mount,
    } = session::mount(fs.clone(), rt.handle().clone(), &settings)
        .with_context(|| format!("cannot mount on {}", plan.mountpoint.display()))?;
    let publisher = Arc::new(Publisher {
        fs: fs.clone(),
        remote: key.clone(),
        mountpoint: plan.mountpoint.clone(),
        auth: auth.clone(),
        log_file: plan.daemon_log.clone(),
        state_dir: plan.state_dir.canonicalize().unwrap_or_else(|_| plan.state_dir.clone()),
        mounted: std::sync::atomic::AtomicBool::new(true),
    });
    // Registered before saying ready: `cloudmount status` and `cloudmount unmount` find the mount
    // there, whatever its --state-dir.
    let (finished_tx, finished_rx) = tokio::sync::watch::channel(None::<MountStatus>);
    let mut registration = match Registration::create(&plan.mountpoint) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, dir = %registry::registry_dir().display(),
                "cannot register the mount: `cloudmount status` and `cloudmount unmount` will not find it");
            None
        }
    };
    let watchers = match registration.as_mut() {
        Some(r) => {
            let _in_rt = rt.enter();
            let p = publisher.clone();
            match r.serve(Arc::new(move || p.snapshot()), finished_rx) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot answer on the registry socket");
                    None
                }
            }
        }
        None => None,
    };
    tracing::info!(remote = %key, mountpoint = %plan.mountpoint.display(), read_only = fs_cfg.read_only, "mounted");
    readiness.ready();
    // Changes made elsewhere: the remote's feed (its position kept under the state dir), else
    // revalidation of what the mount has listed.
    let changes = remote.changes(Some(&plan.state_dir.join("changes").join(state::remote_key(&key))));
    tracing::info!(
        feed = changes.is_some(),
        "polling for changes made elsewhere every {:?}",
        plan.poll_interval
    );
    let polling = {
        let _in_rt = rt.enter();
        fs.start_change_polling(plan.poll_interval, changes)
    };

    // A save refused while the sign-in was revoked goes up as soon as `cloudmount login` stored new
    // tokens, not at the next mount.
    let retrying = match (&auth, fs.upload_queue()) {
        (Some((state, _)), Some(queue)) => Some(rt.spawn(retry_after_login(state.clone(), queue.clone()))),
        _ => None,
    };
    let (signals_tx, mut signals) = tokio::sync::watch::channel(0u32);
    let unmounter = fuser_owns_mount.then(|| session.unmount_callable());
    rt.spawn(unmount_on_signal(plan.mountpoint.clone(), unmounter, signals_tx));
    let ran = match session.run() {
        // Some kernels end the connection of a mount that went away (umount, fusermount3 -u) with
        // ECONNABORTED rather than ENODEV; with the mount gone, that is a normal end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) && !session::is_mounted(&plan.mountpoint) => {
            tracing::debug!("the kernel closed the FUSE connection after the unmount");
            Ok(())
        }
        other => other,
    };
    readiness.stopping();
    if ran.is_err() && !fuser_owns_mount && session::is_mounted(&plan.mountpoint) {
        // fuser unmounts its own mounts when its loop fails; ours we take down here.
        let _ = session::unmount(&plan.mountpoint);
    }
    publisher.mounted.store(false, std::sync::atomic::Ordering::SeqCst);
    ran.context("the FUSE session ended with an error")?;
    polling.abort();
    // Blocks on their way to the disk cache are worth the next mount's reads.
    rt.block_on(fs.flush_disk_cache());
    tracing::info!(mountpoint = %plan.mountpoint.display(), "unmounted");

    if let Some(queue) = fs.upload_queue() {
        // Everything accepted is in the journal already; finishing it now is a courtesy that
        // `cloudmount unmount` waits for. A second signal stops waiting; nothing is lost.
        signals.mark_unchanged();
        loop {
            let left = queue.status();
            let pending: Vec<_> = left.iter().filter(|u| !u.failed).collect();
            if pending.is_empty() {
                break;
            }
            tracing::info!(count = pending.len(), files = ?pending.iter().map(|u| &u.name).collect::<Vec<_>>(),
                "waiting for uploads to finish (signal again to stop waiting; they stay queued)");
            let stop = rt.block_on(async {
                tokio::select! {
                    _ = queue.drain(Duration::from_secs(5)) => false,
                    _ = signals.changed() => true,
                }
            });
            if stop {
                break;
            }
        }
        queue.stop();
        if let Some(r) = retrying {
            r.abort();
        }
        let left = queue.status();
        if let Some(st) = &remote_state {
            if left.is_empty() {
                tracing::info!("every upload reached the server");
            } else {
                tracing::warn!(count = left.len(), files = ?left.iter().map(|u| &u.name).collect::<Vec<_>>(),
                    journal = %st.journal().display(),
                    "uploads stay queued on disk; they resume at the next mount of this remote");
            }
        }
    }
    // The last word for `cloudmount unmount` (what stays queued), then a moment for the clients
    // watching to read it before the socket goes away.
    let mut last = publisher.snapshot();
    last.done = true;
    finished_tx.send_replace(Some(last));
    if let Some(w) = watchers {
        let end = std::time::Instant::now() + Duration::from_secs(3);
        while w.load(std::sync::atomic::Ordering::SeqCst) > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(registration);
    Ok(())
}

/// Make the folders this mount keeps things in (state: journal, staging, status files, change
/// feed positions; the disk block cache) the mounting user's only: folders 0700, files 0600.
/// Everything is created so, but older versions left the umask's modes (0755 / 0644), through
/// which another local user could read cached file content.
fn make_local_folders_private(state_dir: &Path, disk_cache_dir: Option<&Path>) -> Result<()> {
    for dir in std::iter::once(state_dir).chain(disk_cache_dir) {
        let changed = crate::private_fs::make_private_tree(dir)
            .with_context(|| format!("cannot make {} private to this user", dir.display()))?;
        if changed > 0 {
            tracing::info!(folder = %dir.display(), changed, "made files other users could read private (0700/0600)");
        }
    }
    Ok(())
}

/// Give refused uploads another try each time the sign-in comes back after being lost (a
/// `cloudmount login` wrote new tokens, which the token source picks up).
async fn retry_after_login(mut auth: AuthStateHandle, queue: Arc<crate::vfs::writeback::queue::UploadQueue>) {
    let lost = |s: &AuthState| matches!(s, AuthState::LoginNeeded { .. });
    loop {
        if !lost(&auth.wait_for(lost).await) {
            return; // the token source is gone
        }
        if lost(&auth.wait_for(|s| !lost(s)).await) {
            return;
        }
        let n = queue.retry_now();
        if n > 0 {
            tracing::info!(count = n, "signed in again: retrying the uploads that were refused");
        }
    }
}

/// Whether a failure to reach the server may go away by itself (no network yet, server starting).
fn unreachable(e: &crate::vfs::FsError) -> bool {
    matches!(e.errno(), libc::EHOSTUNREACH | libc::ETIMEDOUT | libc::EAGAIN)
}

/// Open the remote's root, retrying for `--wait-online` while the server cannot be reached.
fn first_contact(
    rt: &tokio::runtime::Runtime,
    remote: &Arc<dyn Remote>,
    fs: &crate::vfs::FsConfig,
    url: &str,
    plan: &MountPlan,
) -> Result<Arc<DriveFs>> {
    let deadline = std::time::Instant::now() + plan.wait_online;
    loop {
        match rt.block_on(DriveFs::new(remote.clone(), fs.clone())) {
            Ok(fs) => return Ok(fs),
            Err(e) if unreachable(&e) && std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "cannot reach {url} yet; trying again (--wait-online)");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) if unreachable(&e) => {
                let hint = if plan.wait_online.is_zero() {
                    "is the network up? --wait-online SECS (mount option wait_online=SECS) waits for it".to_string()
                } else {
                    format!("gave up after waiting {:?}", plan.wait_online)
                };
                bail!("cannot reach {url}: {e} ({hint})");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {url}")),
        }
    }
}

/// What a mount says about itself to `cloudmount status` and `cloudmount unmount`, taken from the
/// upload queue when asked (so a file is pending from the moment its close returned).
struct Publisher {
    fs: Arc<DriveFs>,
    remote: String,
    mountpoint: PathBuf,
    auth: Option<(AuthStateHandle, String)>,
    log_file: Option<PathBuf>,
    state_dir: PathBuf,
    mounted: std::sync::atomic::AtomicBool,
}

impl Publisher {
    fn snapshot(&self) -> MountStatus {
        let uploads = self.fs.upload_queue().map(|q| q.status()).unwrap_or_default();
        let auth = self.auth.as_ref().map(|(h, login)| match h.get() {
            // The command the mount itself would run: with its --config and --state-dir.
            AuthState::LoginNeeded { reason, .. } => AuthState::LoginNeeded {
                command: login.clone(),
                reason,
            },
            other => other,
        });
        MountStatus {
            pid: std::process::id(),
            remote: self.remote.clone(),
            mountpoint: self.mountpoint.clone(),
            mounted: self.mounted.load(std::sync::atomic::Ordering::SeqCst),
            done: false,
            state_dir: Some(self.state_dir.clone()),
            log_file: self.log_file.clone(),
            auth,
            uploads: uploads.iter().map(UploadLine::from).collect(),
        }
    }
}

/// Wait for SIGINT or SIGTERM, then unmount; the FUSE session then ends. Every signal is counted
/// in `signals`, so a second one can stop the wait for uploads.
async fn unmount_on_signal(
    mountpoint: PathBuf,
    unmounter: Option<fuser::SessionUnmounter>,
    signals: tokio::sync::watch::Sender<u32>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let unmounter = Arc::new(std::sync::Mutex::new(unmounter));
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::error!("cannot install signal handlers; unmount with `cloudmount unmount`");
        return;
    };
    let mut unmounted = false;
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        signals.send_modify(|n| *n += 1);
        if unmounted || !session::is_mounted(&mountpoint) {
            continue;
        }
        tracing::info!(signal = name, "unmounting");
        let (mp, unmounter) = (mountpoint.clone(), unmounter.clone());
        // fuser's own unmounter first when it made the mount (it then knows the mount is gone);
        // ours otherwise, and as the lazy fallback when busy.
        let attempt = move || match unmounter.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(u) => u.unmount().or_else(|e| {
                tracing::debug!(error = %e, "plain unmount failed; trying again");
                session::unmount(&mp)
            }),
            None => session::unmount(&mp),
        };
        match tokio::task::spawn_blocking(attempt).await {
            Ok(Ok(())) => unmounted = true,
            Ok(Err(e)) => tracing::error!(error = %e, "unmount failed"),
            Err(e) => tracing::error!(error = %e, "unmount task failed"),
        }
    }
}

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

#[cfg(test)]
mod resolve_tests {
    use super::*;
    use clap::Parser;

    fn args(config: &Path, extra: &[&str]) -> MountArgs {
        let mut argv = vec!["cloudmount", "mount"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--config", config.to_str().unwrap()]);
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Mount(a) => a,
            _ => unreachable!(),
        }
    }

    fn config() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.toml"),
            "[remotes.work]\ntype = \"onedrive\"\ndrive_user = \"megan@contoso.com\"\n\
             [remotes.nas]\ntype = \"webdav\"\nurl = \"http://h/dav\"\n",
        )
        .unwrap();
        dir
    }

    fn onedrive(t: Target) -> OneDriveTarget {
        match t {
            Target::OneDrive(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn onedrive_remotes_resolve_with_overrides_and_the_login_to_run() {
        let dir = config();
        let c = dir.path().join("c.toml");
        let t = onedrive(resolve_remote(&args(&c, &["work", "/mnt"])).unwrap());
        assert_eq!(t.settings.drive, DriveTarget::User("megan@contoso.com".into()));
        assert_eq!(
            t.login_command,
            format!("cloudmount login onedrive work --config {}", c.display())
        );
        let t = onedrive(
            resolve_remote(&args(
                &c,
                &[
                    "work",
                    "/mnt",
                    "--sharepoint",
                    "https://contoso.sharepoint.com/sites/eng",
                ],
            ))
            .unwrap(),
        );
        assert!(matches!(
            t.settings.drive,
            DriveTarget::SharePoint { library: None, .. }
        ));
        let t = onedrive(resolve_remote(&args(&c, &["work", "/mnt", "--drive-id", "b!x"])).unwrap());
        assert_eq!(t.settings.drive, DriveTarget::DriveId("b!x".into()));
    }

    #[test]
    fn flags_of_the_other_kind_are_refused() {
        let dir = config();
        let c = dir.path().join("c.toml");
        let e = resolve_remote(&args(&c, &["work", "/mnt", "--user", "me"])).unwrap_err();
        assert!(format!("{e:#}").contains("--drive-user"), "{e:#}");
        let e = resolve_remote(&args(&c, &["nas", "/mnt", "--drive-id", "x"])).unwrap_err();
        assert!(format!("{e:#}").contains("OneDrive remotes"), "{e:#}");
        let e = resolve_remote(&args(&c, &["http://h/", "/mnt", "--drive-user", "x"])).unwrap_err();
        assert!(format!("{e:#}").contains("OneDrive remotes"), "{e:#}");
    }
}
