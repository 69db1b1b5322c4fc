//! `cloudmount login onedrive NAME`: merge the command line into the remote's config entry,
//! validate it, run the sign-in, store the tokens, then save the config entry.

use anyhow::{bail, Context, Result};

use super::config::{default_config_path, upsert_remote, ConfigFile, RemoteConfig, RemoteKind};
use super::state::default_state_dir;
use super::OneDriveLoginArgs;
use crate::auth::{login, Flow, LoginUi, TokenStore};
use crate::http::{HttpClient, HttpConfig};

/// The remote's entry after applying the command line to what the config holds.
pub fn merged_remote(existing: Option<&RemoteConfig>, args: &OneDriveLoginArgs) -> Result<RemoteConfig> {
    let mut r = match existing {
        Some(r) if r.kind != RemoteKind::Onedrive => {
            bail!("remote {:?} exists and is not a OneDrive remote", args.name)
        }
        Some(r) => r.clone(),
        None => RemoteConfig::onedrive_default(),
    };
    if args.browser {
        r.auth = Some(Flow::Browser);
    } else if args.client_credentials {
        r.auth = Some(Flow::ClientCredentials);
    } else if args.device {
        r.auth = Some(Flow::Device);
    }
    let set = |field: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            field.clone_from(v);
        }
    };
    set(&mut r.tenant, &args.tenant);
    set(&mut r.client_id, &args.client_id);
    set(&mut r.login_url, &args.login_url);
    set(&mut r.graph_url, &args.graph_url);
    // One drive target: a new one replaces the old.
    if args.sharepoint.is_some() || args.drive_id.is_some() || args.drive_user.is_some() {
        r.sharepoint.clone_from(&args.sharepoint);
        r.library.clone_from(&args.library);
        r.drive_id.clone_from(&args.drive_id);
        r.drive_user.clone_from(&args.drive_user);
    }
    if args.client_secret_file.is_some() || args.client_secret_env.is_some() {
        r.client_secret_file.clone_from(&args.client_secret_file);
        r.client_secret_env.clone_from(&args.client_secret_env);
    }
    if r.auth != Some(Flow::ClientCredentials) && (args.browser || args.device) {
        // Switching to a delegated sign-in: the app secret no longer applies.
        r.client_secret_file = None;
        r.client_secret_env = None;
    }
    Ok(r)
}

/// The command that mounts the remote just signed in on a folder `DIR`, with the --config and
/// --state-dir this login was given (without them the mount would not find the remote or its
/// tokens).
pub fn mount_hint(args: &OneDriveLoginArgs) -> String {
    let mut cmd = format!("cloudmount mount {} DIR", super::shell_quote(&args.name));
    if let Some(c) = &args.config {
        cmd.push_str(&format!(" --config {}", super::shell_quote(&c.to_string_lossy())));
    }
    if let Some(d) = &args.state_dir {
        cmd.push_str(&format!(" --state-dir {}", super::shell_quote(&d.to_string_lossy())));
    }
    cmd
}

/// Run the command; returns what to print.
pub fn login_onedrive(args: &OneDriveLoginArgs) -> Result<String> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => default_config_path().context("cannot find the config directory")?,
    };
    // A missing file is fine: login creates it.
    let cfg = ConfigFile::load(&path, false)?;
    let existed = cfg.remotes.contains_key(&args.name);
    let remote = merged_remote(cfg.remotes.get(&args.name), args)?;
    let settings = remote.onedrive(&args.name)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let store = TokenStore::new(&state_dir, &args.name)?;
    let http = HttpClient::new(HttpConfig::default())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ui = LoginUi::terminal();
    let tokens = rt
        .block_on(login(&settings.oauth, &http, &store, &ui))
        .with_context(|| format!("signing in remote {:?}", args.name))?;
    upsert_remote(&path, &args.name, &remote)?;
    let how = match settings.oauth.flow {
        Flow::Device => "device code",
        Flow::Browser => "browser",
        Flow::ClientCredentials => "client credentials",
    };
    Ok(format!(
        "Signed in remote {name} ({how}; tenant {tenant}); tokens saved in {store} (mode 0600{rt}).\n{what} {config}.\nMount it with: {mount}\n",
        mount = mount_hint(args),
        name = args.name,
        tenant = settings.oauth.tenant,
        store = store.path().display(),
        rt = if tokens.refresh_token.is_some() { ", with a refresh token" } else { "" },
        what = if existed { "Updated the remote in" } else { "Added the remote to" },
        config = path.display(),
    ))
}
