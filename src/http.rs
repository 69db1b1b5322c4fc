//! The one HTTP client every remote uses (WebDAV now, Microsoft Graph later), with one retry policy.
//!
//! Why a wrapper and not plain `reqwest`: a filesystem must never hang, so every operation gets a
//! hard deadline that covers all its retries; throttling (429/503 with `Retry-After`) must slow down
//! the whole client and not only the request that saw it; and no error message or log line may
//! carry credentials. Callers describe a request with [`HttpRequest`] (stating whether it may be
//! repeated) and hand [`HttpClient::execute`] a closure that consumes a successful response; the
//! closure runs inside the same deadline and is retried with the request, so a body that breaks off
//! half way is fetched again like any other transient failure.
//!
//! Uploads stream a local file as the body ([`HttpRequest::body_file`]): it is read from disk chunk
//! by chunk as the socket takes it, never held in memory, and reopened for a retry. Such a request
//! is not bound by the total deadline (a large file on a slow link takes as long as it takes) but
//! by a stall limit of the same length: it fails when no byte went out, and no answer came, for
//! that long. (Bytes still in the kernel's socket buffer when the file has been read to its end
//! count against that limit, together with the server's time to answer.)
//!
//! Redirects are followed (up to [`MAX_REDIRECTS`]) except from https to plain http: that would
//! send the request, and read the answer, in cleartext, so it is refused with an error and a log
//! line. reqwest drops `Authorization` (our Basic credentials) on a redirect to another origin
//! (scheme, host or port); Graph download URLs are such another origin by design and are sent
//! without credentials in the first place. A TLS failure (an untrusted, expired or misnamed
//! certificate) is [`RemoteError::Tls`] and is not retried: asking again gets the same certificate.
//! A private CA is added with [`HttpConfig::ca_cert`] (`--ca-cert`); the system's roots, and
//! `SSL_CERT_FILE`, still apply.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use tracing::{debug, warn};
use url::Url;

use crate::error::{RemoteError, RemoteResult};
use crate::remote::{GrowingFile, TransferProgress};

/// Most redirects followed for one request (reqwest's own default).
pub const MAX_REDIRECTS: usize = 10;

/// Longest client-wide pause a `Retry-After` can impose: a broken proxy asking for a day must not
/// freeze a mount for a day.
const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// How long operations may take and how retries are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Budget of one whole operation, all attempts, waits and body reading included. An operation
    /// against a hung or dead server fails when it runs out, so no caller waits longer than this.
    pub deadline: Duration,
    /// Limit for establishing one TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Wait before the first retry; doubled for each further retry.
    pub base_backoff: Duration,
    /// Upper bound of the wait between two attempts (before jitter).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry): exponential, capped, with
    /// "equal jitter" (a random value in `[d/2, d]`), so that clients that failed together do not
    /// come back together, yet each still waits a little.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        let jitter_ns = capped.saturating_sub(half).as_nanos().min(u64::MAX as u128) as u64;
        let extra = if jitter_ns == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ns)
        };
        half + Duration::from_nanos(extra)
    }
}

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

/// Whether a request may be sent more than once. There is no default: each caller has to say it,
/// because only the caller knows whether repeating its request is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Repeating the request has no further effect (GET, HEAD, PROPFIND, ...): it is retried on
    /// transient failures until the deadline.
    Idempotent,
    /// The request is sent at most once (POST, a PUT whose repetition could clobber a newer
    /// version, ...). It still waits out a client-wide throttling pause before being sent.
    Once,
    /// The request changes something and must not be repeated once the server may have acted on
    /// it (PUT, MKCOL, MOVE, DELETE: a repeat would clobber, or report "exists" or "not found"
    /// for our own first attempt). It is retried only after failures that prove the server did
    /// not: no connection could be made, or the server answered 429 or 503 (throttled, not
    /// handled). A timeout, or a connection lost after sending, is returned and never retried.
    IfNotApplied,
}

/// What a request sends.
#[derive(Clone, Debug)]
enum RequestBody {
    /// Bytes kept in memory (XML bodies).
    Bytes(Bytes),
    /// The whole content of a local file (or the range `(offset, len)` of it), streamed from disk
    /// at each attempt.
    File(Arc<PathBuf>, Option<(u64, u64)>),
    /// A file still being written, streamed as it grows, without a length (chunked). It can be
    /// sent only once: use it with [`Retry::Once`].
    Growing(Arc<GrowingFile>),
}

/// Sees every chunk of a streamed file body as the connection takes it, with the chunk's offset in
/// the file (for hashing while uploading, or progress in absolute terms). A retried attempt shows
/// the same bytes again.
#[derive(Clone)]
pub struct BodyObserver(pub Arc<ObserveFn>);

/// What a [`BodyObserver`] calls: `(offset in the file, chunk)`.
pub type ObserveFn = dyn Fn(u64, &[u8]) + Send + Sync;

impl fmt::Debug for BodyObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyObserver")
    }
}

/// One request as a value, so that it can be sent again for a retry.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<RequestBody>,
    retry: Retry,
    accept: Vec<StatusCode>,
    sent: Option<TransferProgress>,
    observer: Option<BodyObserver>,
}

impl HttpRequest {
    /// A request that may be repeated: see [`Retry::Idempotent`].
    pub fn idempotent(method: Method, url: Url) -> Self {
        Self::new(method, url, Retry::Idempotent)
    }

    /// A request sent at most once: see [`Retry::Once`].
    pub fn once(method: Method, url: Url) -> Self {
        Self::new(method, url, Retry::Once)
    }

    /// A request with an explicit retry choice. Any user info in `url` is removed: credentials
    /// belong in [`Credentials`], where they are sent as a header and never end up in a log line.
    pub fn new(method: Method, mut url: Url, retry: Retry) -> Self {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        HttpRequest {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            retry,
            accept: Vec::new(),
            sent: None,
            observer: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Set a body; it is kept so that a retry can send it again.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(RequestBody::Bytes(body.into()));
        self
    }

    /// Send the whole content of local file `path` as the body, with a `Content-Length`. The
    /// file is opened at each attempt and read as the connection takes the bytes, so memory use
    /// does not grow with its size. A failure to read it is [`RemoteError::LocalFile`]. The
    /// request is bound by a stall limit instead of the total deadline (see the module doc).
    pub fn body_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.body = Some(RequestBody::File(Arc::new(path.into()), None));
        self
    }

    /// Like [`body_file`](Self::body_file), but only bytes `[offset, offset + len)` of the file
    /// (an upload fragment). The file must hold them all, else [`RemoteError::LocalFile`].
    pub fn body_file_range(mut self, path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        self.body = Some(RequestBody::File(Arc::new(path.into()), Some((offset, len))));
        self
    }

    /// Send file `file` as it is written (see [`GrowingFile`]), without a `Content-Length`. The
    /// request must be [`Retry::Once`]: the writer's bytes cannot be followed twice.
    pub fn body_growing(mut self, file: Arc<GrowingFile>) -> Self {
        self.body = Some(RequestBody::Growing(file));
        self
    }

    /// Show every chunk of a streamed file body to `observer` as the connection takes it.
    pub fn observe_body(mut self, observer: BodyObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Count the bytes of a streamed file body in `sent` as the connection takes them (set back
    /// to zero when an attempt starts over), for upload progress reports.
    pub fn count_sent(mut self, sent: TransferProgress) -> Self {
        self.sent = Some(sent);
        self
    }

    /// Whether the body is streamed from a file (and the stall limit applies).
    fn streams(&self) -> bool {
        matches!(self.body, Some(RequestBody::File(..) | RequestBody::Growing(_)))
    }

    /// Hand responses with this (non-2xx) status to the caller's closure instead of turning them
    /// into an error, e.g. 416 for a range read past the end of a file.
    pub fn accept_status(mut self, status: StatusCode) -> Self {
        self.accept.push(status);
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The target URL (without user info).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether the request may be repeated.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    fn accepts(&self, status: StatusCode) -> bool {
        status.is_success() || self.accept.contains(&status)
    }

    /// "METHOD /path" for messages: never the host's user info, never the query (which may carry
    /// tokens).
    fn label(&self) -> String {
        format!("{} {}", self.method, self.url.path())
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

struct Inner {
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
struct AttemptError {
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

/// When a streamed upload last made progress (a chunk taken by the connection), for the stall
/// limit.
struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis().min(u64::MAX as u128) as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Run `fut` to completion, or give up (`None`) once `progress` has not moved for `limit`.
async fn stall_guard<F: Future>(fut: F, progress: &Progress, limit: Duration) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let idle_until = progress.last() + limit;
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep_until(idle_until.into()) => {
                if progress.last() + limit <= Instant::now() {
                    return None;
                }
            }
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
                let (progress, sent) = (progress.cloned(), req.sent.clone());
                if let Some(sent) = &sent {
                    sent.set(0);
                }
                let stream = file.clone().body(move |n| {
                    if let Some(p) = &progress {
                        p.touch();
                    }
                    if let Some(sent) = &sent {
                        sent.add(n);
                    }
                });
                builder = builder.body(reqwest::Body::wrap_stream(stream));
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
fn read_ca_certs(path: &Path) -> RemoteResult<Vec<reqwest::Certificate>> {
    let bad = |why: String| RemoteError::LocalFile(format!("CA certificate file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// A redirect from https to plain http, refused by [`redirect_policy`].
#[derive(Debug)]
struct DowngradeRefused {
    from: String,
    to: String,
}

impl fmt::Display for DowngradeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to follow a redirect from {} to {}: https to plain http would carry the request and the \
             answer in cleartext",
            self.from, self.to
        )
    }
}

impl StdError for DowngradeRefused {}

/// Too many redirects in a row.
#[derive(Debug)]
struct TooManyRedirects;

impl fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {MAX_REDIRECTS} redirects")
    }
}

impl StdError for TooManyRedirects {}

/// A URL for messages: origin and path, never user info or the query (which may carry tokens).
fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// Follow redirects, but never from https to http (see the module doc). reqwest itself drops
/// `Authorization` when a redirect leaves the origin.
fn redirect_policy() -> reqwest::redirect::Policy {
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

/// rustls's error in `error`, looking inside `io::Error`s (whose `source` skips what they wrap;
/// the TLS connector wraps it twice).
fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// What went wrong in TLS, if `error` is a TLS failure.
fn tls_failure(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(s) = source {
        if let Some(tls) = rustls_error(s) {
            let hint = match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    " (the server's certificate is not trusted; if it comes from a private CA, name that CA's \
                     certificate with --ca-cert FILE, or SSL_CERT_FILE)"
                }
                _ => "",
            };
            return Some(format!("{tls}{hint}"));
        }
        source = s.source();
    }
    None
}

/// The error a refused redirect carries, if `error` is one.
fn redirect_failure(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(s) = source {
        if s.is::<DowngradeRefused>() || s.is::<TooManyRedirects>() {
            return Some(s.to_string());
        }
        source = s.source();
    }
    None
}

/// Size of the chunks a streamed file is read in.
const FILE_CHUNK: usize = 1 << 20;

/// Open `path` and make a body that streams exactly its current length (which goes into
/// `Content-Length`), touching `progress` as the connection takes each chunk and counting its
/// bytes in `sent`.
async fn file_body(
    path: &Path,
    range: Option<(u64, u64)>,
    progress: Option<Arc<Progress>>,
    sent: Option<TransferProgress>,
    observer: Option<BodyObserver>,
) -> RemoteResult<(reqwest::Body, u64)> {
    let local = |e: std::io::Error| RemoteError::LocalFile(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    let meta = file.metadata().await.map_err(local)?;
    if !meta.is_file() {
        return Err(RemoteError::LocalFile(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    let (start, len) = match range {
        None => (0, meta.len()),
        Some((offset, len)) => {
            if offset.checked_add(len).is_none_or(|end| end > meta.len()) {
                return Err(RemoteError::LocalFile(format!(
                    "{}: holds {} bytes, cannot send {len} from {offset}",
                    path.display(),
                    meta.len()
                )));
            }
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(offset))
                .await
                .map_err(local)?;
            (offset, len)
        }
    };
    let limited = tokio::io::AsyncReadExt::take(file, len);
    if let Some(sent) = &sent {
        sent.set(0);
    }
    let mut at = start;
    let stream = tokio_util::io::ReaderStream::with_capacity(limited, FILE_CHUNK).inspect(move |chunk| {
        if let Some(p) = &progress {
            p.touch();
        }
        if let Ok(chunk) = chunk {
            if let Some(sent) = &sent {
                sent.add(chunk.len() as u64);
            }
            if let Some(o) = &observer {
                (o.0)(at, chunk);
            }
            at += chunk.len() as u64;
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), len))
}

/// Whether a failure is worth another attempt of an idempotent request: throttling, timeouts,
/// unreachable servers and server errors, except 501 (Not Implemented) and 505 (HTTP Version Not
/// Supported), which will not change by asking again. Other 4xx are the client's fault.
pub fn should_retry(error: &RemoteError) -> bool {
    match error {
        RemoteError::Throttled { .. }
        | RemoteError::Timeout(_)
        | RemoteError::Connect(_)
        | RemoteError::ConnectionLost(_) => true,
        RemoteError::Http { status, .. } => *status >= 500 && *status != 501 && *status != 505,
        _ => false,
    }
}

/// The error for a response status that the caller did not accept. `context` is "METHOD /path".
pub fn status_error(status: StatusCode, context: &str, retry_after: Option<Duration>) -> RemoteError {
    let reason = status.canonical_reason().unwrap_or("unknown status");
    let message = format!("{context}: {} {reason}", status.as_u16());
    match status.as_u16() {
        404 => RemoteError::NotFound,
        401 => RemoteError::Unauthorized(message),
        403 => RemoteError::Forbidden(message),
        412 => RemoteError::PreconditionFailed,
        413 => RemoteError::TooLarge,
        423 => RemoteError::Locked,
        429 | 503 => RemoteError::Throttled { retry_after },
        507 => RemoteError::InsufficientStorage,
        code => RemoteError::Http { status: code, message },
    }
}

/// Map a transport error. Messages are built from the error chain with the URL stripped, so they
/// can never leak credentials, and are prefixed by `context` ("METHOD /path").
pub fn map_reqwest_error(context: &str, error: &reqwest::Error) -> RemoteError {
    let detail = error_chain(error);
    if let Some(tls) = tls_failure(error) {
        RemoteError::Tls(format!("{context}: {tls}"))
    } else if let Some(refused) = redirect_failure(error) {
        RemoteError::Protocol(format!("{context}: {refused}"))
    } else if error.is_connect() {
        RemoteError::Connect(format!("{context}: {detail}"))
    } else if error.is_timeout() {
        RemoteError::Timeout(format!("{context}: {detail}"))
    } else if error.is_body() || error.is_request() {
        // The connection broke while the request or the response body was in flight, or closed
        // before any answer: the server was reached and went away (or a proxy cut us off).
        // Asking again may work; it is no "host unreachable".
        RemoteError::ConnectionLost(format!("{context}: {detail}"))
    } else if let Some(status) = error.status() {
        status_error(status, context, None)
    } else {
        RemoteError::Protocol(format!("{context}: {detail}"))
    }
}

fn timeout_error(context: &str, deadline: Duration) -> RemoteError {
    RemoteError::Timeout(format!("{context}: no complete answer within {deadline:?}"))
}

fn stall_error(context: &str, limit: Duration) -> RemoteError {
    RemoteError::Timeout(format!("{context}: no progress for {limit:?}"))
}

/// "outer: inner: innermost", without any URL (reqwest puts the URL in its own `Display`; the URL
/// could carry user info or tokens).
pub fn error_chain(error: &reqwest::Error) -> String {
    // `without_url` needs ownership; rebuild the top message by hand instead.
    let mut parts: Vec<String> = Vec::new();
    let top = if error.is_timeout() {
        "operation timed out"
    } else if error.is_connect() {
        "connect failed"
    } else if error.is_body() {
        "error reading the body"
    } else if error.is_decode() {
        "error decoding the body"
    } else if error.is_request() {
        "error sending the request"
    } else {
        "HTTP error"
    };
    parts.push(top.to_string());
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Parse a `Retry-After` value: delay in seconds or an HTTP date (then relative to `now`). A date
/// in the past means "now" (zero). Unparseable values give `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn statuses_map_to_errors() {
        let s = |code: u16| status_error(StatusCode::from_u16(code).unwrap(), "GET /x", None);
        assert!(matches!(s(404), RemoteError::NotFound));
        assert!(matches!(s(401), RemoteError::Unauthorized(_)));
        assert!(matches!(s(403), RemoteError::Forbidden(_)));
        assert!(matches!(s(423), RemoteError::Locked));
        assert!(matches!(s(507), RemoteError::InsufficientStorage));
        assert!(matches!(s(413), RemoteError::TooLarge));
        assert!(matches!(s(412), RemoteError::PreconditionFailed));
        assert!(matches!(s(429), RemoteError::Throttled { .. }));
        assert!(matches!(s(503), RemoteError::Throttled { .. }));
        assert!(matches!(s(500), RemoteError::Http { status: 500, .. }));
        assert!(matches!(s(409), RemoteError::Http { status: 409, .. }));
        match s(502) {
            RemoteError::Http { message, .. } => assert_eq!(message, "GET /x: 502 Bad Gateway"),
            other => panic!("unexpected {other:?}"),
        }
        let t = status_error(StatusCode::TOO_MANY_REQUESTS, "GET /x", Some(Duration::from_secs(3)));
        assert!(matches!(t, RemoteError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(3)));
    }

    #[test]
    fn what_is_retried() {
        let http = |status: u16| RemoteError::Http {
            status,
            message: String::new(),
        };
        assert!(should_retry(&http(500)));
        assert!(should_retry(&http(502)));
        assert!(should_retry(&http(504)));
        assert!(!should_retry(&http(501)));
        assert!(!should_retry(&http(505)));
        assert!(!should_retry(&http(400)));
        assert!(!should_retry(&http(409)));
        assert!(should_retry(&RemoteError::Throttled { retry_after: None }));
        assert!(should_retry(&RemoteError::Timeout(String::new())));
        assert!(should_retry(&RemoteError::Connect(String::new())));
        assert!(should_retry(&RemoteError::ConnectionLost(String::new())));
        assert!(!should_retry(&RemoteError::Tls(String::new())));
        assert!(!should_retry(&RemoteError::NotFound));
        assert!(!should_retry(&RemoteError::Unauthorized(String::new())));
        assert!(!should_retry(&RemoteError::VersionChanged));
        assert!(!should_retry(&RemoteError::Protocol(String::new())));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            deadline: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = p.backoff(3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b40 = p.backoff(40);
            assert!(
                b40 >= Duration::from_millis(500) && b40 <= Duration::from_secs(1),
                "{b40:?}"
            );
        }
    }

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

    #[test]
    fn requests_drop_user_info() {
        let url = Url::parse("http://bob:secret@example.com/dav/a%20b?x=1").unwrap();
        let req = HttpRequest::idempotent(Method::GET, url);
        assert_eq!(req.url().as_str(), "http://example.com/dav/a%20b?x=1");
        assert_eq!(req.label(), "GET /dav/a%20b");
        assert_eq!(req.retry(), Retry::Idempotent);
    }
}
