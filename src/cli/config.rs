//! The configuration file: named remotes in TOML.
//!
//! ```toml
//! [remotes.nas]
//! type = "webdav"
//! url = "https://nas.example/remote.php/dav/files/me/"
//! user = "me"
//! password_command = "pass show nas"   # or: password = "..."
//! ```
//!
//! Secrets may sit in this file (then keep it 0600) or come from a command; they are never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

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
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RemoteKind {
    /// A WebDAV share.
    Webdav,
}

/// One `[remotes.NAME]` table.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The kind of server.
    #[serde(rename = "type")]
    pub kind: RemoteKind,
    /// Base URL of the share.
    pub url: String,
    /// User for Basic auth.
    pub user: Option<String>,
    /// Password, when kept in the file.
    pub password: Option<String>,
    /// A shell command that prints the password.
    pub password_command: Option<String>,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_command", &self.password_command)
            .finish()
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
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
