//! [`OAuthTokenSource`]: the [`TokenSource`] of a OneDrive remote. It hands out the stored access
//! token while it is fresh, renews it in a background task at 80% of its lifetime (saving the
//! rotated refresh token), renews on demand when a token is rejected (once per rejected token,
//! shared by all callers), keeps retrying when the token endpoint cannot be reached, and switches
//! to "sign-in needed" only when the grant itself is refused. A later `cloudmount login` that
//! rewrites the token file is picked up without a restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::config::{Flow, OAuthConfig};
use super::oauth::{self, TokenError};
use super::store::{Stamp, StoredTokens, TokenStore};
use super::TokenSource;
use crate::error::{RemoteError, RemoteResult};
use crate::http::HttpClient;

/// How often the token file is looked at while a sign-in is needed.
const LOGIN_POLL: Duration = Duration::from_secs(1);

/// Longest wait between two attempts after the token endpoint failed.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// What `cloudmount status` shows about a remote's sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuthState {
    /// Signed in; a token is at hand or will be fetched when needed.
    Ok,
    /// A new access token is being fetched.
    Refreshing,
    /// The token endpoint could not be reached or failed; retrying. Not a sign-in problem.
    Retrying {
        /// The last error.
        error: String,
    },
    /// The grant was refused: a person must sign in again with `command`. Cached data stays
    /// readable; operations that need the server fail with EACCES.
    LoginNeeded {
        /// The command to run, e.g. `cloudmount login onedrive work`.
        command: String,
        /// Why (OAuth error and AADSTS code), for the log and `status`.
        reason: String,
    },
}

/// A read-only view of a source's [`AuthState`], cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthStateHandle(watch::Receiver<AuthState>);

impl AuthState {
    /// One line for `cloudmount status`.
    pub fn summary(&self) -> String {
        match self {
            AuthState::Ok => "signed in".into(),
            AuthState::Refreshing => "signed in (renewing the access token)".into(),
            AuthState::Retrying { error } => format!("signed in; token endpoint unavailable, retrying ({error})"),
            AuthState::LoginNeeded { command, reason } => format!("sign-in needed ({reason}): run `{command}`"),
        }
    }
}

impl AuthStateHandle {
    /// The state now.
    pub fn get(&self) -> AuthState {
        self.0.borrow().clone()
    }

    /// Whether a sign-in is needed.
    pub fn login_needed(&self) -> bool {
        matches!(*self.0.borrow(), AuthState::LoginNeeded { .. })
    }

    /// Wait until `pred` holds for the state (returns at once if it already does).
    pub async fn wait_for(&mut self, pred: impl FnMut(&AuthState) -> bool) -> AuthState {
        let found = self.0.wait_for(pred).await.map(|s| s.clone()).ok();
        // When the source is gone, report the last state.
        found.unwrap_or_else(|| self.get())
    }
}

struct Current {
    tokens: Option<StoredTokens>,
    stamp: Option<Stamp>,
    /// Why a sign-in is needed, when it is.
    login_needed: Option<String>,
    /// Whether the current sign-in-needed episode has been logged.
    logged: bool,
}

struct Inner {
    cfg: OAuthConfig,
    http: HttpClient,
    store: TokenStore,
    cur: Mutex<Current>,
    /// Held while a renewal runs, so that concurrent callers share one.
    renewing: tokio::sync::Mutex<()>,
    state: watch::Sender<AuthState>,
}

/// The token source of one OneDrive remote. Dropping it stops its refresher.
pub struct OAuthTokenSource {
    inner: Arc<Inner>,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for OAuthTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokenSource")
            .field("remote", &self.inner.cfg.remote)
            .field("store", &self.inner.store.path())
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Drop for OAuthTokenSource {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl OAuthTokenSource {
    /// The source of remote `cfg.remote` with its tokens in `<state_dir>/tokens/<remote>.json`, and
    /// a handle on its state for `status`. Must be called within a tokio runtime (it starts the
    /// background refresher). A missing token file is not an error: the source starts in the
    /// sign-in-needed state (except for client credentials, which need no stored grant).
    pub fn from_store(
        cfg: &OAuthConfig,
        state_dir: &Path,
        http: HttpClient,
    ) -> std::io::Result<(Arc<dyn TokenSource>, AuthStateHandle)> {
        let store = TokenStore::new(state_dir, &cfg.remote)?;
        let src = OAuthTokenSource::new(cfg.clone(), store, http)?;
        let state = src.state();
        Ok((src, state))
    }

    /// The source over an explicit store. Must be called within a tokio runtime.
    pub fn new(cfg: OAuthConfig, store: TokenStore, http: HttpClient) -> std::io::Result<Arc<OAuthTokenSource>> {
        let (tokens, stamp) = match store.load()? {
            Some((t, s)) => (Some(t), s),
            None => (None, None),
        };
        let (state, _) = watch::channel(AuthState::Ok);
        let inner = Arc::new(Inner {
            cfg,
            http,
            store,
            cur: Mutex::new(Current {
                tokens,
                stamp,
                login_needed: None,
                logged: false,
            }),
            renewing: tokio::sync::Mutex::new(()),
            state,
        });
        {
            let mut cur = inner.lock();
            if cur.tokens.is_none() && inner.cfg.flow != Flow::ClientCredentials {
                inner.enter_login_needed(&mut cur, "not signed in yet".into());
            }
        }
        let refresher = tokio::spawn(refresher(inner.clone()));
        Ok(Arc::new(OAuthTokenSource { inner, refresher }))
    }

    /// A handle on the sign-in state.
    pub fn state(&self) -> AuthStateHandle {
        AuthStateHandle(self.inner.state.subscribe())
    }
}

#[async_trait]
impl TokenSource for OAuthTokenSource {
    async fn access_token(&self) -> RemoteResult<String> {
        self.inner.token(None).await
    }

    async fn token_rejected(&self, rejected: &str) -> RemoteResult<String> {
        self.inner.token(Some(rejected)).await
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.cur.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn login_error(&self, why: &str) -> RemoteError {
        RemoteError::Unauthorized(format!(
            "sign-in needed for remote {} ({why}): run `{}`",
            self.cfg.remote,
            self.cfg.login_command()
        ))
    }

    fn enter_login_needed(&self, cur: &mut Current, why: String) {
        if !cur.logged {
            error!(
                remote = %self.cfg.remote,
                "sign-in needed ({why}): run `{}`; cached files stay readable, operations that need the server fail with EACCES until then",
                self.cfg.login_command()
            );
            cur.logged = true;
        }
        self.state.send_replace(AuthState::LoginNeeded {
            command: self.cfg.login_command(),
            reason: why.clone(),
        });
        cur.login_needed = Some(why);
    }

    /// Adopt the token file's content if another process (a `login`) rewrote it.
    fn reload_if_changed(&self, cur: &mut Current) {
        let stamp = self.store.stamp();
        if stamp.is_none() || stamp == cur.stamp {
            return;
        }
        match self.store.load() {
            Ok(Some((tokens, stamp))) => {
                cur.stamp = stamp;
                if cur.tokens.as_ref() == Some(&tokens) {
                    return;
                }
                cur.tokens = Some(tokens);
                if cur.login_needed.take().is_some() {
                    info!(remote = %self.cfg.remote, "new sign-in picked up from {}", self.store.path().display());
                    cur.logged = false;
                    self.state.send_replace(AuthState::Ok);
                }
            }
            Ok(None) => cur.stamp = None,
            Err(e) => {
                // Half-written files cannot happen (atomic rename); keep what we have.
                warn!(remote = %self.cfg.remote, "cannot read the token file: {e}");
                cur.stamp = stamp;
            }
        }
    }

    /// The token to use now; `rejected` is a token the server refused.
    async fn token(&self, rejected: Option<&str>) -> RemoteResult<String> {
        if let Some(t) = self.fresh(rejected)? {
            return Ok(t);
        }
        let _renewing = self.renewing.lock().await;
        // Someone else may have renewed while we waited.
        if let Some(t) = self.fresh(rejected)? {
            return Ok(t);
        }
        self.renew().await
    }

    /// The current token if it can be used, `Err` when a sign-in is needed.
    /// The token file is only looked at when the token in memory will not do (sign-in needed,
    /// stale, rejected), not on every request.
    fn fresh(&self, rejected: Option<&str>) -> RemoteResult<Option<String>> {
        let mut cur = self.lock();
        let pick = |cur: &Current| {
            cur.tokens
                .as_ref()
                .filter(|t| t.usable(SystemTime::now()) && rejected != Some(t.access_token.expose()))
                .map(|t| t.access_token.expose().to_string())
        };
        if cur.login_needed.is_none() {
            if let Some(t) = pick(&cur) {
                return Ok(Some(t));
            }
        }
        self.reload_if_changed(&mut cur);
        if let Some(why) = &cur.login_needed {
            return Err(self.login_error(why));
        }
        Ok(pick(&cur))
    }

    /// Get a new access token from the endpoint and store it. Call with `renewing` held.
    async fn renew(&self) -> RemoteResult<String> {
        let previous = self.lock().tokens.clone();
        self.state.send_replace(AuthState::Refreshing);
        let result = match self.cfg.flow {
            Flow::ClientCredentials => match oauth::read_secret(&self.cfg) {
                Ok(secret) => oauth::client_credentials(&self.cfg, &self.http, &secret).await,
                Err(e) => Err(e),
            },
            _ => match previous.as_ref().and_then(|t| t.refresh_token.clone()) {
                Some(rt) => oauth::refresh(&self.cfg, &self.http, &rt).await,
                None => Err(TokenError::LoginNeeded("no refresh token stored".into())),
            },
        };
        let mut cur = self.lock();
        match result {
            Ok(issued) => {
                let tokens = issued.into_stored(&self.cfg, previous.and_then(|t| t.refresh_token));
                match self.store.save(&tokens) {
                    Ok(stamp) => cur.stamp = stamp,
                    Err(e) => error!(
                        remote = %self.cfg.remote,
                        "cannot save the renewed tokens in {}: {e}; they are kept in memory",
                        self.store.path().display()
                    ),
                }
                let at = tokens.access_token.expose().to_string();
                cur.tokens = Some(tokens);
                self.state.send_replace(AuthState::Ok);
                Ok(at)
            }
            Err(TokenError::LoginNeeded(why)) => {
                // A login may have replaced the file while we asked: then that one wins.
                self.reload_if_changed(&mut cur);
                if cur.tokens.as_ref() != previous.as_ref() {
                    if let Some(t) = cur.tokens.as_ref().filter(|t| t.usable(SystemTime::now())) {
                        return Ok(t.access_token.expose().to_string());
                    }
                }
                self.enter_login_needed(&mut cur, why.clone());
                Err(self.login_error(&why))
            }
            Err(e) => {
                let e = e.into_remote();
                warn!(remote = %self.cfg.remote, "cannot renew the access token: {e}; will retry");
                self.state.send_replace(AuthState::Retrying { error: e.to_string() });
                Err(e)
            }
        }
    }
}

/// Renews the access token at 80% of its lifetime; backs off when the endpoint fails; while a
/// sign-in is needed, watches the token file for a new one.
async fn refresher(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    loop {
        let wait = {
            let mut cur = inner.lock();
            inner.reload_if_changed(&mut cur);
            if cur.login_needed.is_some() {
                Some(LOGIN_POLL)
            } else {
                let now = SystemTime::now();
                match &cur.tokens {
                    Some(t) if failures == 0 => t.refresh_due().duration_since(now).ok().filter(|d| !d.is_zero()),
                    _ => None,
                }
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
            continue;
        }
        let result = {
            let _renewing = inner.renewing.lock().await;
            let due = {
                let mut cur = inner.lock();
                inner.reload_if_changed(&mut cur);
                cur.login_needed.is_none()
                    && cur
                        .tokens
                        .as_ref()
                        .is_none_or(|t| failures > 0 || t.refresh_due() <= SystemTime::now())
            };
            if due {
                Some(inner.renew().await)
            } else {
                None
            }
        };
        match result {
            Some(Err(e)) if e.is_transient() || !matches!(e, RemoteError::Unauthorized(_)) => {
                failures += 1;
                let wait = inner.http.policy().backoff(failures).max(Duration::from_millis(500));
                tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
            }
            _ => failures = 0,
        }
    }
}
