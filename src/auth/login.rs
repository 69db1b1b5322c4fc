//! One interactive (or app-only) sign-in, start to end: run the remote's flow and store the
//! tokens. Used by `cloudmount login onedrive NAME` and by tests.

use std::time::Duration;

use super::browser::browser;
use super::config::{Flow, OAuthConfig};
use super::device::{device_code, DevicePrompt};
use super::oauth::{self, TokenError};
use super::store::{StoredTokens, TokenStore};
use crate::error::RemoteError;
use crate::http::HttpClient;

/// Why a sign-in did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The person refused (device code declined, `access_denied` on the redirect).
    #[error("the sign-in was declined")]
    Declined,
    /// The device code expired before the sign-in finished.
    #[error("the sign-in code expired before the sign-in finished; run the command again")]
    Expired,
    /// The redirect's `state` was not ours: the answer is not for this sign-in.
    #[error("the sign-in redirect carried an unexpected state; refusing it (run the command again)")]
    StateMismatch,
    /// The identity platform answered with an error.
    #[error("the identity platform refused the sign-in: {0}")]
    Refused(String),
    /// The token endpoint failed.
    #[error("{0}")]
    Token(TokenError),
    /// A local problem (listener, store, secret).
    #[error("{0}")]
    Local(String),
}

impl From<RemoteError> for LoginError {
    fn from(e: RemoteError) -> Self {
        LoginError::Token(if e.is_transient() {
            TokenError::Transient(e)
        } else {
            TokenError::Failed(e)
        })
    }
}

/// How a sign-in talks to the person.
pub struct LoginUi {
    /// Shows the device code prompt.
    pub device_prompt: Box<dyn Fn(&DevicePrompt) + Send + Sync>,
    /// Sends the person to the authorize URL.
    pub open_browser: Box<dyn Fn(&str) + Send + Sync>,
    /// How long the browser flow waits for the redirect.
    pub browser_wait: Duration,
}

impl LoginUi {
    /// Print to the terminal; start `xdg-open` when there is a display.
    pub fn terminal() -> LoginUi {
        LoginUi {
            device_prompt: Box::new(|p| {
                println!(
                    "To sign in, open {} in a browser and enter the code {} (valid for {} minutes).",
                    p.verification_uri,
                    p.user_code,
                    p.expires_in.as_secs().div_ceil(60)
                );
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }),
            open_browser: Box::new(|url| {
                println!("To sign in, open this page in a browser:\n{url}");
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                let display = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
                if display {
                    let _ = std::process::Command::new("xdg-open")
                        .arg(url)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn();
                }
            }),
            browser_wait: Duration::from_secs(300),
        }
    }
}

/// Run `cfg`'s flow and save the tokens in `store`, replacing what it held.
pub async fn login(
    cfg: &OAuthConfig,
    http: &HttpClient,
    store: &TokenStore,
    ui: &LoginUi,
) -> Result<StoredTokens, LoginError> {
    let issued = match cfg.flow {
        Flow::Device => device_code(cfg, http, &*ui.device_prompt).await?,
        Flow::Browser => browser(cfg, http, &*ui.open_browser, ui.browser_wait).await?,
        Flow::ClientCredentials => {
            let secret = oauth::read_secret(cfg).map_err(LoginError::Token)?;
            oauth::client_credentials(cfg, http, &secret)
                .await
                .map_err(LoginError::Token)?
        }
    };
    if cfg.flow != Flow::ClientCredentials && issued.refresh_token.is_none() {
        return Err(LoginError::Refused(
            "no refresh token came back (is offline_access among the scopes?)".into(),
        ));
    }
    let tokens = issued.into_stored(cfg, None);
    store
        .save(&tokens)
        .map_err(|e| LoginError::Local(format!("cannot save the tokens in {}: {e}", store.path().display())))?;
    Ok(tokens)
}
