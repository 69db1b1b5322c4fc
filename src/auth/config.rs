//! What the OAuth code needs to know about one OneDrive remote: which identity endpoints, which
//! application, which flow and scopes. Built by the CLI from the config file; no secret lives here
//! (a client secret is only named: a file or an environment variable, read when needed).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

/// The public client id used when a remote names none. Override it at build time with the
/// `CLOUDMOUNT_CLIENT_ID` environment variable, or per remote with `client_id` in the config.
/// (The default is the Microsoft Graph command-line tools public client, which allows the device
/// code flow and loopback redirects on every tenant.)
pub const DEFAULT_CLIENT_ID: &str = match option_env!("CLOUDMOUNT_CLIENT_ID") {
    Some(id) => id,
    None => "14d82eec-204b-4c2f-b7e8-296a70dab67e",
};

/// Login host of the global cloud.
pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";

/// Graph service root of the global cloud.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// Tenant used when a remote names none (work/school and personal accounts).
pub const DEFAULT_TENANT: &str = "common";

/// How a remote signs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Device code: works headless (print a URL and a code, sign in elsewhere).
    #[default]
    Device,
    /// Authorization code + PKCE with a localhost redirect.
    Browser,
    /// App-only client credentials (a client secret, no user, no refresh token).
    ClientCredentials,
}

impl Flow {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Device => "device",
            Flow::Browser => "browser",
            Flow::ClientCredentials => "client_credentials",
        }
    }
}

/// Where a client secret comes from. Never the command line, never the config file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (trailing newline ignored).
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

impl SecretSource {
    /// Read the secret now.
    pub fn read(&self) -> Result<crate::auth::Secret, String> {
        let raw = match self {
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the client secret file {}: {e}", p.display()))?,
            SecretSource::Env(v) => {
                std::env::var(v).map_err(|_| format!("the environment variable {v} (client secret) is not set"))?
            }
        };
        let s = raw.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            return Err("the client secret is empty".into());
        }
        Ok(crate::auth::Secret::new(s))
    }
}

/// OAuth settings of one OneDrive remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthConfig {
    /// Name of the remote in the config (used in the "run this command" message).
    pub remote: String,
    /// Identity platform base, e.g. `https://login.microsoftonline.com`.
    pub login_url: Url,
    /// Graph service root, e.g. `https://graph.microsoft.com/v1.0` (gives the `.default` scope of
    /// app-only tokens).
    pub graph_url: Url,
    /// Tenant: `common`, `organizations`, `consumers`, a GUID or a domain.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Sign-in flow.
    pub flow: Flow,
    /// Delegated scopes (ignored by client credentials, which use `{graph}/.default`).
    pub scopes: Vec<String>,
    /// Client secret source (client credentials only).
    pub client_secret: Option<SecretSource>,
}

impl OAuthConfig {
    /// Settings for the global cloud with the default client and scopes.
    pub fn new(remote: impl Into<String>) -> OAuthConfig {
        OAuthConfig {
            remote: remote.into(),
            login_url: Url::parse(DEFAULT_LOGIN_URL).expect("valid constant"),
            graph_url: Url::parse(DEFAULT_GRAPH_URL).expect("valid constant"),
            tenant: DEFAULT_TENANT.into(),
            client_id: DEFAULT_CLIENT_ID.into(),
            flow: Flow::Device,
            scopes: default_scopes(false),
            client_secret: None,
        }
    }

    /// `{login_url}/{tenant}/oauth2/v2.0/{name}` for `authorize`, `token` and `devicecode`.
    pub fn endpoint(&self, name: &str) -> String {
        format!(
            "{}/{}/oauth2/v2.0/{name}",
            self.login_url.as_str().trim_end_matches('/'),
            self.tenant
        )
    }

    /// The scopes to request: `{graph host}/.default` for app-only tokens, else [`Self::scopes`].
    pub fn request_scopes(&self) -> Vec<String> {
        match self.flow {
            Flow::ClientCredentials => {
                let mut root = self.graph_url.clone();
                root.set_path("");
                root.set_query(None);
                vec![format!("{}/.default", root.as_str().trim_end_matches('/'))]
            }
            _ => self.scopes.clone(),
        }
    }

    /// The command a person runs to sign this remote in again.
    pub fn login_command(&self) -> String {
        let mut cmd = format!("cloudmount login onedrive {}", self.remote);
        match self.flow {
            Flow::Device => {}
            Flow::Browser => cmd.push_str(" --browser"),
            Flow::ClientCredentials => cmd.push_str(" --client-credentials"),
        }
        cmd
    }
}

/// Delegated scopes for a mount: files read/write and a refresh token, plus site lookups for a
/// SharePoint library.
pub fn default_scopes(sharepoint: bool) -> Vec<String> {
    let mut s = vec!["Files.ReadWrite.All".to_string(), "offline_access".to_string()];
    if sharepoint {
        s.insert(1, "Sites.Read.All".into());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_scopes_and_command() {
        let mut c = OAuthConfig::new("work");
        c.login_url = Url::parse("http://127.0.0.1:9/").unwrap();
        c.tenant = "contoso.onmicrosoft.com".into();
        assert_eq!(
            c.endpoint("token"),
            "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.request_scopes(), vec!["Files.ReadWrite.All", "offline_access"]);
        assert_eq!(c.login_command(), "cloudmount login onedrive work");
        c.flow = Flow::ClientCredentials;
        c.graph_url = Url::parse("https://graph.microsoft.us/v1.0").unwrap();
        assert_eq!(c.request_scopes(), vec!["https://graph.microsoft.us/.default"]);
        assert_eq!(c.login_command(), "cloudmount login onedrive work --client-credentials");
    }

    #[test]
    fn secret_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(SecretSource::File(p).read().unwrap().expose(), "abc");
        assert!(SecretSource::Env("CLOUDMOUNT_TEST_SURELY_UNSET_VAR".into())
            .read()
            .is_err());
    }
}
