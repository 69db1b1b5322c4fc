//! Which remote a mount means: the command line and the config file resolved into a WebDAV share
//! or a OneDrive drive, with its credentials, before anything touches the network.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::{default_config_path, run_password_command, ConfigFile, OneDriveSettings, RemoteKind};
use super::MountArgs;
use crate::auth::{Flow, TokenStore};

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
    if let Some(d) = &args.options.state_dir {
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

/// The remote's `[remotes.NAME.mount]` options in the config file (none for a URL).
pub(super) fn configured_mount_options(args: &MountArgs) -> Result<Option<toml::Table>> {
    if args.remote.starts_with("http://") || args.remote.starts_with("https://") {
        return Ok(None);
    }
    let (cfg, path) = load_config(args)?;
    let remote = cfg
        .remote(&args.remote)
        .with_context(|| format!("in {}", path.display()))?;
    Ok(remote.mount.clone())
}

/// The config file `--config` names (it must exist), else the default one (which may not), and
/// its path.
fn load_config(args: &MountArgs) -> Result<(ConfigFile, PathBuf)> {
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (
            default_config_path().context("cannot find the config directory")?,
            false,
        ),
    };
    Ok((ConfigFile::load(&path, explicit)?, path))
}

pub(super) fn resolve_remote(args: &MountArgs) -> Result<Target> {
    let looks_like_url = args.remote.starts_with("http://") || args.remote.starts_with("https://");
    if looks_like_url && drive_flags(args) {
        bail!("--drive-id, --drive-user, --sharepoint and --library are for OneDrive remotes (a name in the config), not WebDAV URLs");
    }
    let (url, mut user, mut password, mut password_command, ca_cert) = if looks_like_url {
        (args.remote.clone(), None, None, None, None)
    } else {
        let (cfg, path) = load_config(args)?;
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
pub(super) fn check_signed_in(t: &OneDriveTarget, state_dir: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::config::DriveTarget;
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
