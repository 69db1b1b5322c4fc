//! The configuration file: named remotes in TOML.
//!
//! ```toml
//! [remotes.nas]
//! type = "webdav"
//! url = "https://nas.example/remote.php/dav/files/me/"
//! user = "me"
//! password_command = "pass show nas"   # or: password = "..."
//!
//! [remotes.work]
//! type = "onedrive"                    # tokens: <state>/tokens/work.json, via `cloudmount login`
//! auth = "device"                      # or "browser", "client_credentials"
//! tenant = "common"                    # client credentials need a real tenant
//! # client_id, login_url, graph_url (national clouds, test servers), scopes,
//! # drive_id | drive_user | sharepoint (+ library), client_secret_file | client_secret_env
//!
//! [remotes.work.mount]                 # mount options, named as the flags (under those given)
//! cache_size = 512
//! ```
//!
//! Secrets may sit in this file (then keep it 0600) or come from a command; they are never logged.
//! OAuth tokens never sit here: they live in the state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::auth::config::{default_scopes, DEFAULT_GRAPH_URL, DEFAULT_LOGIN_URL, DEFAULT_TENANT};
use crate::auth::{Flow, OAuthConfig, SecretSource, DEFAULT_CLIENT_ID};

/// Errors reading the configuration or resolving a remote.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No remote of that name.
    #[error("no remote named {0:?} in the config (known: {1})")]
    UnknownRemote(String, String),
    /// The remote's settings do not fit together.
    #[error("remote {0:?}: {1}")]
    Invalid(String, String),
    /// The password command failed.
    #[error("password command failed: {0}")]
    PasswordCommand(String),
}

/// Kinds of remote the config can name.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// A WebDAV share.
    Webdav,
    /// OneDrive (personal, business) or a SharePoint library, through Microsoft Graph.
    Onedrive,
}

/// One `[remotes.NAME]` table.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The kind of server.
    #[serde(rename = "type")]
    pub kind: RemoteKind,
    /// Base URL of the share (WebDAV; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// User for Basic auth (WebDAV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password, when kept in the file (WebDAV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A shell command that prints the password (WebDAV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (`--ca-cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// OneDrive: application (client) id (default: [`DEFAULT_CLIENT_ID`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// OneDrive: tenant (default `common`; client credentials need a real one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// OneDrive: Graph service root (default `https://graph.microsoft.com/v1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_url: Option<String>,
    /// OneDrive: identity platform base (default `https://login.microsoftonline.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// OneDrive: sign-in flow (default `device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Flow>,
    /// OneDrive client credentials: a file holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// OneDrive client credentials: an environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// OneDrive: mount this drive id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_id: Option<String>,
    /// OneDrive: mount this user's drive (UPN or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_user: Option<String>,
    /// OneDrive: a SharePoint site URL (`https://contoso.sharepoint.com/sites/eng`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharepoint: Option<String>,
    /// OneDrive: document library of the SharePoint site (default: the site's default library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// OneDrive: delegated scopes (default `Files.ReadWrite.All offline_access`, plus
    /// `Sites.Read.All` for a SharePoint site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Mount options of this remote (`[remotes.NAME.mount]`), by the names of the command line's
    /// flags (`cache_size = 512`, `ttl = 60`, `umask = "027"`); a flag given on the command line
    /// wins, and what neither gives is [`super::options::DEFAULTS`]'s. Checked when the file is
    /// read ([`super::MountOptions::from_config`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<toml::Table>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_command", &self.password_command)
            .field("ca_cert", &self.ca_cert)
            .field("client_id", &self.client_id)
            .field("tenant", &self.tenant)
            .field("graph_url", &self.graph_url)
            .field("login_url", &self.login_url)
            .field("auth", &self.auth)
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .field("drive_id", &self.drive_id)
            .field("drive_user", &self.drive_user)
            .field("sharepoint", &self.sharepoint)
            .field("library", &self.library)
            .field("scopes", &self.scopes)
            .field("mount", &self.mount)
            .finish()
    }
}

/// Which drive a OneDrive remote mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveTarget {
    /// The signed-in user's OneDrive (`/me/drive`; delegated sign-ins only).
    Me,
    /// A drive by id (`/drives/{id}`).
    DriveId(String),
    /// A user's OneDrive (`/users/{upn}/drive`).
    User(String),
    /// A SharePoint site's library (`/sites/{host}:{path}` then its drives).
    SharePoint {
        /// The site URL.
        site: Url,
        /// The library name; `None` for the site's default library.
        library: Option<String>,
    },
}

/// A validated OneDrive remote: how to sign in and what to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneDriveSettings {
    /// Sign-in settings (endpoints, client, flow, scopes, secret source).
    pub oauth: OAuthConfig,
    /// Graph service root.
    pub graph_url: Url,
    /// The drive to mount.
    pub drive: DriveTarget,
}

const WEBDAV_ONLY: &str = "user, password and password_command";

fn parse_http_url(name: &str, field: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid(name.into(), format!("{field} {value:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Invalid(
            name.into(),
            format!("{field} {value:?} is not an http(s) URL"),
        ));
    }
    Ok(url)
}

impl RemoteConfig {
    /// An empty OneDrive remote (every setting at its default).
    pub fn onedrive_default() -> RemoteConfig {
        RemoteConfig {
            kind: RemoteKind::Onedrive,
            url: None,
            user: None,
            password: None,
            password_command: None,
            ca_cert: None,
            client_id: None,
            tenant: None,
            graph_url: None,
            login_url: None,
            auth: None,
            client_secret_file: None,
            client_secret_env: None,
            drive_id: None,
            drive_user: None,
            sharepoint: None,
            library: None,
            scopes: None,
            mount: None,
        }
    }

    /// Check that the settings fit the remote's type; `name` is for messages.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if let Some(table) = &self.mount {
            super::MountOptions::from_config(table)
                .map_err(|e| ConfigError::Invalid(name.into(), format!("in its mount options: {e}")))?;
        }
        match self.kind {
            RemoteKind::Webdav => {
                let invalid = |m: String| Err(ConfigError::Invalid(name.into(), m));
                let Some(url) = &self.url else {
                    return invalid("a webdav remote needs url".into());
                };
                if url.is_empty() {
                    return invalid("url is empty".into());
                }
                let onedrive_only = [
                    ("client_id", self.client_id.is_some()),
                    ("tenant", self.tenant.is_some()),
                    ("graph_url", self.graph_url.is_some()),
                    ("login_url", self.login_url.is_some()),
                    ("auth", self.auth.is_some()),
                    ("client_secret_file", self.client_secret_file.is_some()),
                    ("client_secret_env", self.client_secret_env.is_some()),
                    ("drive_id", self.drive_id.is_some()),
                    ("drive_user", self.drive_user.is_some()),
                    ("sharepoint", self.sharepoint.is_some()),
                    ("library", self.library.is_some()),
                    ("scopes", self.scopes.is_some()),
                ];
                if let Some((field, _)) = onedrive_only.iter().find(|(_, set)| *set) {
                    return invalid(format!("{field} is a onedrive setting; this remote is webdav"));
                }
                Ok(())
            }
            RemoteKind::Onedrive => self.onedrive(name).map(|_| ()),
        }
    }

    /// The validated settings of a OneDrive remote called `name`.
    pub fn onedrive(&self, name: &str) -> Result<OneDriveSettings, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(name.into(), m.to_string());
        if self.kind != RemoteKind::Onedrive {
            return Err(invalid("not a onedrive remote"));
        }
        if self.url.is_some() {
            return Err(invalid(
                "url is a webdav setting; a onedrive remote uses graph_url (and login_url) instead",
            ));
        }
        if self.user.is_some() || self.password.is_some() || self.password_command.is_some() {
            return Err(invalid(&format!(
                "{WEBDAV_ONLY} are webdav settings; onedrive signs in with `cloudmount login onedrive {name}`"
            )));
        }
        let flow = self.auth.unwrap_or_default();
        let login_url = parse_http_url(
            name,
            "login_url",
            self.login_url.as_deref().unwrap_or(DEFAULT_LOGIN_URL),
        )?;
        let graph_url = parse_http_url(
            name,
            "graph_url",
            self.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH_URL),
        )?;
        let tenant = self.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.into());
        if tenant.is_empty() || tenant.contains(['/', '?', '#', ' ']) {
            return Err(invalid(&format!("tenant {tenant:?} is not a tenant name or id")));
        }
        let client_id = self.client_id.clone().unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        if client_id.trim().is_empty() {
            return Err(invalid("client_id is empty"));
        }
        let targets = [
            self.drive_id.is_some(),
            self.drive_user.is_some(),
            self.sharepoint.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            return Err(invalid("give only one of drive_id, drive_user and sharepoint"));
        }
        if self.library.is_some() && self.sharepoint.is_none() {
            return Err(invalid("library needs sharepoint (the site URL)"));
        }
        let drive = if let Some(id) = &self.drive_id {
            DriveTarget::DriveId(id.clone())
        } else if let Some(u) = &self.drive_user {
            DriveTarget::User(u.clone())
        } else if let Some(site) = &self.sharepoint {
            DriveTarget::SharePoint {
                site: parse_http_url(name, "sharepoint", site)?,
                library: self.library.clone(),
            }
        } else {
            DriveTarget::Me
        };
        let secret = match (&self.client_secret_file, &self.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(invalid("give only one of client_secret_file and client_secret_env"));
            }
            (Some(p), None) => Some(SecretSource::File(p.clone())),
            (None, Some(v)) => Some(SecretSource::Env(v.clone())),
            (None, None) => None,
        };
        if flow == Flow::ClientCredentials {
            if secret.is_none() {
                return Err(invalid(
                    "auth = \"client_credentials\" needs client_secret_file or client_secret_env (never the secret itself)",
                ));
            }
            if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    "auth = \"client_credentials\" needs a real tenant (its id or domain), not common/organizations/consumers",
                ));
            }
            if drive == DriveTarget::Me {
                return Err(invalid(
                    "auth = \"client_credentials\" signs in as an application, which has no /me: give drive_id, drive_user or sharepoint",
                ));
            }
        } else if secret.is_some() {
            return Err(invalid(
                "client_secret_file / client_secret_env are only for auth = \"client_credentials\"",
            ));
        }
        let scopes = match &self.scopes {
            Some(s) if s.is_empty() => return Err(invalid("scopes is empty")),
            Some(s) => s.clone(),
            None => default_scopes(self.sharepoint.is_some()),
        };
        if flow != Flow::ClientCredentials && !scopes.iter().any(|s| s.eq_ignore_ascii_case("offline_access")) {
            return Err(invalid(
                "scopes must include offline_access, or no refresh token is issued",
            ));
        }
        Ok(OneDriveSettings {
            oauth: OAuthConfig {
                remote: name.into(),
                login_url,
                graph_url: graph_url.clone(),
                tenant,
                client_id,
                flow,
                scopes,
                client_secret: secret,
            },
            graph_url,
            drive,
        })
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Remotes by name.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteConfig>,
}

/// Where the config lives when `--config` is not given: `$XDG_CONFIG_HOME/cloudmount/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "cloudmount").map(|d| d.config_dir().join("config.toml"))
}

impl ConfigFile {
    /// Read `path`; a missing file at the default location is an empty config.
    pub fn load(path: &Path, must_exist: bool) -> Result<ConfigFile, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(ConfigFile::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let cfg: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for (name, r) in &cfg.remotes {
            r.validate(name)?;
        }
        Ok(cfg)
    }

    /// The remote called `name`.
    pub fn remote(&self, name: &str) -> Result<&RemoteConfig, ConfigError> {
        self.remotes.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.remotes.keys().map(String::as_str).collect();
            ConfigError::UnknownRemote(
                name.into(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            )
        })
    }
}

/// Create or replace `[remotes.NAME]` in the config file at `path`, keeping every other entry, and
/// write the file atomically (temp file, fsync, rename). A new file gets mode 0600; an existing
/// file keeps its mode.
pub fn upsert_remote(path: &Path, name: &str, remote: &RemoteConfig) -> Result<(), ConfigError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let read_err = |source: std::io::Error| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let parse_err = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let (mut doc, mode) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let doc: toml::Table = toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            let mode = std::fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o7777;
            (doc, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (toml::Table::new(), 0o600),
        Err(e) => return Err(read_err(e)),
    };
    let remotes = doc
        .entry("remotes")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(remotes) = remotes.as_table_mut() else {
        return Err(parse_err("remotes is not a table".into()));
    };
    let value = toml::Value::try_from(remote).map_err(|e| parse_err(e.to_string()))?;
    remotes.insert(name.to_string(), value);
    let text = toml::to_string(&doc).map_err(|e| parse_err(e.to_string()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(read_err)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("config.toml");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(read_err)
}

/// Run `command` through `sh -c` and return what it printed, without the trailing newline.
pub fn run_password_command(command: &str) -> Result<String, ConfigError> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ConfigError::PasswordCommand(e.to_string()))?;
    if !out.status.success() {
        return Err(ConfigError::PasswordCommand(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut s =
        String::from_utf8(out.stdout).map_err(|_| ConfigError::PasswordCommand("output is not UTF-8".into()))?;
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remotes_and_rejects_unknown_keys() {
        let c: ConfigFile = toml::from_str(
            "[remotes.nas]\ntype = \"webdav\"\nurl = \"http://h/dav/\"\nuser = \"me\"\npassword_command = \"echo x\"\n",
        )
        .unwrap();
        let r = c.remote("nas").unwrap();
        assert_eq!(r.kind, RemoteKind::Webdav);
        assert_eq!(r.user.as_deref(), Some("me"));
        assert!(matches!(c.remote("other"), Err(ConfigError::UnknownRemote(..))));
        assert!(toml::from_str::<ConfigFile>("[remotes.x]\ntype = \"webdav\"\nurl = \"u\"\npasswd = \"p\"\n").is_err());
    }

    fn onedrive(extra: &str) -> Result<OneDriveSettings, ConfigError> {
        let c: ConfigFile = toml::from_str(&format!("[remotes.w]\ntype = \"onedrive\"\n{extra}")).unwrap();
        c.remote("w").unwrap().onedrive("w")
    }

    #[test]
    fn onedrive_defaults() {
        let s = onedrive("").unwrap();
        assert_eq!(s.oauth.flow, Flow::Device);
        assert_eq!(s.oauth.tenant, "common");
        assert_eq!(s.oauth.client_id, DEFAULT_CLIENT_ID);
        assert_eq!(s.oauth.login_url.as_str(), "https://login.microsoftonline.com/");
        assert_eq!(s.graph_url.as_str(), "https://graph.microsoft.com/v1.0");
        assert_eq!(s.drive, DriveTarget::Me);
        assert_eq!(s.oauth.scopes, vec!["Files.ReadWrite.All", "offline_access"]);
        assert_eq!(s.oauth.login_command(), "cloudmount login onedrive w");
    }

    #[test]
    fn onedrive_national_cloud_sharepoint_and_browser() {
        let s = onedrive(
            "auth = \"browser\"\nlogin_url = \"https://login.microsoftonline.us\"\ngraph_url = \"https://graph.microsoft.us/v1.0\"\ntenant = \"contoso.onmicrosoft.us\"\nclient_id = \"abc\"\nsharepoint = \"https://contoso.sharepoint.us/sites/eng\"\nlibrary = \"Documents\"\n",
        )
        .unwrap();
        assert_eq!(s.oauth.flow, Flow::Browser);
        assert_eq!(
            s.oauth.endpoint("token"),
            "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"
        );
        assert_eq!(s.oauth.client_id, "abc");
        assert!(s.oauth.scopes.iter().any(|x| x == "Sites.Read.All"));
        assert!(matches!(s.drive, DriveTarget::SharePoint { library: Some(ref l), .. } if l == "Documents"));
    }

    #[test]
    fn onedrive_client_credentials_rules() {
        let ok = onedrive(
            "auth = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_secret_env = \"S\"\ndrive_user = \"megan@contoso.com\"\n",
        )
        .unwrap();
        assert_eq!(ok.oauth.client_secret, Some(SecretSource::Env("S".into())));
        assert_eq!(ok.drive, DriveTarget::User("megan@contoso.com".into()));
        let err = |extra: &str| onedrive(extra).unwrap_err().to_string();
        assert!(err("auth = \"client_credentials\"\ntenant = \"t\"\nclient_secret_env = \"S\"\n").contains("/me"));
        assert!(
            err("auth = \"client_credentials\"\nclient_secret_env = \"S\"\ndrive_id = \"d\"\n").contains("real tenant")
        );
        assert!(err("auth = \"client_credentials\"\ntenant = \"t\"\ndrive_id = \"d\"\n").contains("client_secret_file"));
        assert!(err("client_secret_env = \"S\"\n").contains("only for"));
        assert!(err("drive_id = \"d\"\ndrive_user = \"u\"\n").contains("only one"));
        assert!(err("library = \"Documents\"\n").contains("needs sharepoint"));
        assert!(err("url = \"http://h/\"\n").contains("graph_url"));
        assert!(err("password = \"p\"\n").contains("webdav settings"));
        assert!(err("login_url = \"ftp://x\"\n").contains("http(s)"));
        assert!(err("scopes = [\"Files.Read\"]\n").contains("offline_access"));
        // Unknown keys stay refused.
        assert!(toml::from_str::<ConfigFile>("[remotes.w]\ntype = \"onedrive\"\nclient_secret = \"x\"\n").is_err());
    }

    #[test]
    fn webdav_needs_url_and_refuses_onedrive_settings() {
        let c: ConfigFile = toml::from_str("[remotes.n]\ntype = \"webdav\"\n").unwrap();
        assert!(c
            .remote("n")
            .unwrap()
            .validate("n")
            .unwrap_err()
            .to_string()
            .contains("needs url"));
        let c: ConfigFile =
            toml::from_str("[remotes.n]\ntype = \"webdav\"\nurl = \"http://h/\"\ntenant = \"t\"\n").unwrap();
        assert!(c.remote("n").unwrap().validate("n").is_err());
    }

    #[test]
    fn upsert_keeps_other_remotes_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut r = RemoteConfig::onedrive_default();
        r.tenant = Some("contoso".into());
        upsert_remote(&path, "work", &r).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(
            &path,
            format!(
                "{}\n[remotes.nas]\ntype = \"webdav\"\nurl = \"http://h/\"\n",
                std::fs::read_to_string(&path).unwrap()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        r.auth = Some(Flow::Browser);
        upsert_remote(&path, "work", &r).unwrap();
        let c = ConfigFile::load(&path, true).unwrap();
        assert_eq!(c.remote("nas").unwrap().url.as_deref(), Some("http://h/"));
        assert_eq!(c.remote("work").unwrap().auth, Some(Flow::Browser));
        assert_eq!(c.remote("work").unwrap().tenant.as_deref(), Some("contoso"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c: ConfigFile =
            toml::from_str("[remotes.nas]\ntype = \"webdav\"\nurl = \"http://h/\"\npassword = \"hunter2\"\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn password_command_output_is_trimmed_and_failures_reported() {
        assert_eq!(run_password_command("printf 'pw\\n'").unwrap(), "pw");
        assert!(run_password_command("exit 3").is_err());
    }
}
