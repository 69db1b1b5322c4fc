//! First contact with the remote: build the WebDAV or Graph client, sign in, and open the drive's
//! root, waiting for the network for `--wait-online`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::config::DriveTarget;
use super::plan::MountPlan;
use super::resolve::{OneDriveTarget, Target};
use crate::auth::{AuthState, AuthStateHandle, OAuthTokenSource};
use crate::error::RemoteError;
use crate::graph::{ConnectError, DriveSelector, GraphConfig, GraphRemote};
use crate::http::{HttpClient, HttpConfig, RetryPolicy};
use crate::remote::Remote;
use crate::vfs::DriveFs;
use crate::webdav::{DavConfig, DavRemote};

/// A connected remote, with what the rest of the lifecycle needs to know about it.
pub(super) struct Connected {
    pub(super) remote: Arc<dyn Remote>,
    /// Names the remote in logs and status (no credentials), and keys its upload journal.
    pub(super) key: String,
    /// The sign-in state and the command that signs in again (OneDrive).
    pub(super) auth: Option<(AuthStateHandle, String)>,
}

pub(super) fn connect(rt: &tokio::runtime::Runtime, plan: &MountPlan) -> Result<Connected> {
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

/// Open the remote's root, retrying for `--wait-online` while the server cannot be reached.
pub(super) fn first_contact(
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
            Err(e) if e.is_unreachable() && std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "cannot reach {url} yet; trying again (--wait-online)");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) if e.is_unreachable() => {
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
