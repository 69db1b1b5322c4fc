//! The shared client: one connection pool, one throttling state, and the loop that sends a
//! request, retries it per its [`Retry`] and the [`RetryPolicy`], and hands the answer over.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use tracing::{debug, warn};

use super::body::{file_body, growing_body, stall_guard, Progress};
use super::error::{
    error_chain, map_reqwest_error, shown, stall_error, status_error, timeout_error, DowngradeRefused, TooManyRedirects,
};
use super::request::{HttpRequest, RequestBody};
use super::retry::{parse_retry_after, should_retry, Retry, RetryPolicy, MAX_PAUSE};
use crate::error::{RemoteError, RemoteResult};

/// Most redirects followed for one request (reqwest's own default).
pub const MAX_REDIRECTS: usize = 10;

/// HTTP Basic credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password (may be empty).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings of the shared client.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Deadlines and backoff.
    pub policy: RetryPolicy,
    /// Basic auth sent with every request, if any.
    pub credentials: Option<Credentials>,
    /// Idle connections kept per host: a filesystem sends bursts of small parallel requests, and
    /// a warm connection saves a TCP (and TLS) handshake on each.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub pool_idle_timeout: Duration,
    /// A PEM file of CA certificates to trust besides the system's (a server whose certificate
    /// comes from a private CA, or is self-signed).
    pub ca_cert: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            policy: RetryPolicy::default(),
            credentials: None,
            pool_max_idle_per_host: 16,
            pool_idle_timeout: Duration::from_secs(60),
            ca_cert: None,
        }
    }
}

pub(super) struct Inner {
    client: reqwest::Client,
    policy: RetryPolicy,
    credentials: Option<Credentials>,
    /// When a server said "come back later" (429/503 + Retry-After), no request of this client is
    /// sent before this instant: hammering a throttling server only prolongs the throttling.
    paused_until: Mutex<Option<Instant>>,
}

/// The shared HTTP client: cheap to clone, one connection pool, one throttling state.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.inner.policy)
            .field("credentials", &self.inner.credentials)
            .finish()
    }
}

/// Why one attempt failed, plus how long the server asked us to wait and whether the failure
/// proves that the server did not act on the request (see [`Retry::IfNotApplied`]).
pub(super) struct AttemptError {
    error: RemoteError,
    retry_after: Option<Duration>,
    not_applied: bool,
}

impl From<RemoteError> for AttemptError {
    fn from(error: RemoteError) -> Self {
        AttemptError {
            error,
            retry_after: None,
            not_applied: false,
        }
    }
}

impl HttpClient {
    /// Build the client once; it is meant to live as long as the mount.
    pub fn new(config: HttpConfig) -> RemoteResult<Self> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &config.ca_cert {
            builder = builder.tls_certs_merge(read_ca_certs(path)?);
        }
        let client = builder
            .redirect(redirect_policy())
            .connect_timeout(config.policy.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("cloudmount/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Protocol(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                policy: config.policy,
                credentials: config.credentials,
                paused_until: Mutex::new(None),
            }),
        })
    }

    /// The retry policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// Until when all requests are held back because the server throttled us, if they are.
    pub fn paused_until(&self) -> Option<Instant> {
        let guard = self.inner.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.filter(|t| *t > Instant::now())
    }

    fn pause_until(&self, until: Instant) {
        let mut guard = self.inner.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// Send `req` and return the response's head; the caller reads the body. Body reading is still
    /// bounded by the time left of the deadline, but a body that fails is not retried: prefer
    /// [`HttpClient::execute`], which retries body failures too.
    pub async fn send(&self, req: &HttpRequest) -> RemoteResult<Response> {
        self.execute(req, |resp| async move { Ok(resp) }).await
    }

    /// Send `req`, retrying per the policy, and hand each response with an accepted status (2xx or
    /// one given to [`HttpRequest::accept_status`]) to `handle`. Other statuses become errors. An
    /// error from `handle` that is transient (timeout, lost connection, 5xx...) makes an idempotent
    /// request go round again; anything else is returned as is.
    pub async fn execute<T, F, Fut>(&self, req: &HttpRequest, mut handle: F) -> RemoteResult<T>
    where
        F: FnMut(Response) -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        let policy = self.inner.policy;
        let start = Instant::now();
        // A deadline too far to represent is as good as a year.
        let deadline = start
            .checked_add(policy.deadline)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        let mut deadline = deadline;
        let label = req.label();
        let streams = req.streams();
        let mut attempt: u32 = 0;
        loop {
            // Honour a client-wide throttling pause, unless it outlasts our deadline.
            if let Some(until) = self.paused_until() {
                if until >= deadline {
                    return Err(RemoteError::Throttled {
                        retry_after: Some(until.saturating_duration_since(Instant::now())),
                    });
                }
                tokio::time::sleep_until(until.into()).await;
            }
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                return Err(timeout_error(&label, policy.deadline));
            }
            attempt += 1;
            let outcome = if streams {
                // Bound by progress, not by the clock; the time spent streaming does not eat the
                // budget for the waits between attempts.
                let progress = Progress::new();
                let attempt_fut = self.attempt(req, None, Some(&progress), &label, &mut handle);
                let out = stall_guard(attempt_fut, &progress, policy.deadline).await;
                deadline += now.elapsed();
                out.unwrap_or_else(|| Err(AttemptError::from(stall_error(&label, policy.deadline))))
            } else {
                let attempt_fut = self.attempt(req, Some(remaining), None, &label, &mut handle);
                tokio::time::timeout(remaining, attempt_fut)
                    .await
                    .unwrap_or_else(|_elapsed| Err(AttemptError::from(timeout_error(&label, policy.deadline))))
            };
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            // A throttling answer holds back every request of this client, whether or not this
            // one is retried. A zero delay (or a date in the past) is no reason to pause, and is
            // treated like a missing header: plain backoff, so that we never spin.
            let pause = failure.retry_after.filter(|d| !d.is_zero()).map(|d| d.min(MAX_PAUSE));
            if let Some(after) = pause {
                self.pause_until(Instant::now() + after);
            }
            let retry = match req.retry {
                Retry::Idempotent => should_retry(&failure.error),
                Retry::IfNotApplied => failure.not_applied && should_retry(&failure.error),
                Retry::Once => false,
            };
            if !retry {
                return Err(failure.error);
            }
            let wait = pause.unwrap_or_else(|| policy.backoff(attempt));
            if Instant::now() + wait >= deadline {
                debug!(request = %label, attempts = attempt, "giving up: no time left for another attempt");
                return Err(failure.error);
            }
            warn!(
                request = %label,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %failure.error,
                "request failed; retrying"
            );
            // A pause is waited out at the top of the loop (with everyone else); backoff here.
            if pause.is_none() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    async fn attempt<T, F, Fut>(
        &self,
        req: &HttpRequest,
        remaining: Option<Duration>,
        progress: Option<&Arc<Progress>>,
        label: &str,
        handle: &mut F,
    ) -> Result<T, AttemptError>
    where
        F: FnMut(Response) -> Fut,
        Fut: Future<Output = RemoteResult<T>>,
    {
        let mut builder = self
            .inner
            .client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(remaining) = remaining {
            builder = builder.timeout(remaining);
        }
        if let Some(c) = &self.inner.credentials {
            builder = builder.basic_auth(&c.user, Some(&c.password));
        }
        match &req.body {
            Some(RequestBody::Bytes(body)) => builder = builder.body(body.clone()),
            Some(RequestBody::File(path, range)) => {
                let (body, len) =
                    file_body(path, *range, progress.cloned(), req.sent.clone(), req.observer.clone()).await?;
                builder = builder.header(CONTENT_LENGTH, len).body(body);
            }
            Some(RequestBody::Growing(file)) => {
                builder = builder.body(growing_body(file, progress.cloned(), req.sent.clone()));
            }
            None => {}
        }
        let started = Instant::now();
        let resp = match builder.send().await {
            Ok(resp) => resp,
            Err(e) => {
                debug!(request = %label, elapsed_ms = started.elapsed().as_millis() as u64, error = %error_chain(&e), "http error");
                let error = map_reqwest_error(label, &e);
                if let RemoteError::Tls(why) = &error {
                    warn!(request = %label, "TLS failed, not retrying: {why}");
                }
                return Err(AttemptError {
                    error,
                    retry_after: None,
                    // No connection could be made: nothing reached the server.
                    not_applied: e.is_connect(),
                });
            }
        };
        let status = resp.status();
        debug!(
            method = %req.method,
            path = %req.url.path(),
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "http"
        );
        if req.accepts(status) {
            return handle(resp).await.map_err(AttemptError::from);
        }
        let retry_after = if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
        } else {
            None
        };
        Err(AttemptError {
            error: status_error(status, label, retry_after),
            retry_after,
            // The server turned the request away without handling it.
            not_applied: status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE,
        })
    }
}

/// Read the CA certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks).
pub(super) fn read_ca_certs(path: &Path) -> RemoteResult<Vec<reqwest::Certificate>> {
    let bad = |why: String| RemoteError::LocalFile(format!("CA certificate file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Follow redirects, but never from https to http (see the module doc). reqwest itself drops
/// `Authorization` when a redirect leaves the origin.
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .last()
            .filter(|from| from.scheme() == "https" && attempt.url().scheme() == "http")
            .map(|from| DowngradeRefused {
                from: shown(from),
                to: shown(attempt.url()),
            });
        if let Some(refused) = downgrade {
            warn!("{refused}");
            attempt.error(refused)
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(TooManyRedirects)
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let c = Credentials {
            user: "alice".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
        let client = HttpClient::new(HttpConfig {
            credentials: Some(c),
            ..HttpConfig::default()
        })
        .unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
