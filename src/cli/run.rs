//! The mount lifecycle: connect, mount, report readiness, serve until unmounted (by `umount`,
//! `fusermount3 -u`, `cloudmount unmount`, SIGINT or SIGTERM), then finish the uploads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::connect::{connect, first_contact, Connected};
use super::daemon::Readiness;
use super::plan::MountPlan;
use super::registry::{self, Registration};
use super::state::{self, MountStatus, RemoteState, UploadLine};
use crate::auth::{AuthState, AuthStateHandle};
use crate::fuse::session::{self, MountSettings};
use crate::vfs::writeback::queue::QueueConfig;
use crate::vfs::writeback::WriteBackPaths;
use crate::vfs::DriveFs;

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
        let store = if fs_cfg.keep_metadata {
            let dir = st.metadata();
            let store = crate::metastore::MetaStore::open(&dir)
                .with_context(|| format!("cannot open the metadata store in {}", dir.display()))?;
            Some(Arc::new(store))
        } else {
            None
        };
        rt.block_on(fs.enable_metadata(store));
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
        // What landed uploads carry of modes and times is given to their items.
        rt.block_on(fs.settle_metadata(Duration::from_secs(30)));
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
