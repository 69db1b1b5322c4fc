//! Request accounting: counters per route class, bytes served by download URLs, requests that arrived while
//! a Retry-After pause was running, headers seen on upload URLs, and a log of recent requests.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::state::push_bounded;

/// Route classes used for counters and fault targeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// Identity platform: `/{tenant}/oauth2/v2.0/{authorize,token,devicecode}`, `/devicelogin`.
    Token,
    /// Drive and site resolution: `/me`, `/me/drive(s)`, `/drives/{d}`, `/users/{u}/drive`, `/sites/...`.
    DriveInfo,
    /// `GET`/`HEAD` of one item (by id or path).
    Metadata,
    /// `GET …/children`.
    Children,
    /// `GET …/delta` (and its nextLink/deltaLink).
    Delta,
    /// `GET …/content` (the 302 to the download URL).
    Content,
    /// `GET {downloadUrl}` (pre-authenticated, no bearer).
    Download,
    /// `PUT …/content` (simple upload).
    SimpleUpload,
    /// `POST …/createUploadSession`.
    CreateSession,
    /// Any method on an `uploadUrl` (pre-authenticated).
    UploadUrl,
    /// `PATCH`/`DELETE` an item, `POST …/children` (create folder), `POST …/copy`.
    Write,
    /// `GET {monitorUrl}` of a copy or asynchronous move.
    Monitor,
}

impl RouteClass {
    /// True for routes under `/v1.0` (bearer-authenticated Graph calls).
    pub fn is_graph(self) -> bool {
        !matches!(
            self,
            RouteClass::Token | RouteClass::Download | RouteClass::UploadUrl | RouteClass::Monitor
        )
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every request, including identity and pre-authenticated URLs.
    All,
    /// Every `/v1.0` Graph request (what real Graph throttling covers).
    Graph,
    /// One route class.
    Class(RouteClass),
}

impl From<RouteClass> for Scope {
    fn from(c: RouteClass) -> Self {
        Scope::Class(c)
    }
}

impl Scope {
    /// Does this scope cover requests of class `c`?
    pub fn matches(self, c: RouteClass) -> bool {
        match self {
            Scope::All => true,
            Scope::Graph => c.is_graph(),
            Scope::Class(x) => x == c,
        }
    }
}

/// A request that arrived while a `Retry-After` pause (set by an injected 429/503) was still running.
#[derive(Clone, Debug)]
pub struct PauseViolation {
    /// Class of the offending request.
    pub class: RouteClass,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// How long after the throttled response it arrived.
    pub after_throttle: Duration,
    /// How much of the pause was still left.
    pub early_by: Duration,
}

/// One entry of the recent-request log.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Route class.
    pub class: RouteClass,
    /// HTTP method.
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// `Range` request header, if any.
    pub range: Option<String>,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// `Content-Range` request header (upload fragments), if any.
    pub content_range: Option<String>,
}

/// Snapshot of the counters ([`FakeGraph::stats`](crate::FakeGraph::stats)).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests per route class (every request counts, including rejected and fault-injected ones).
    pub requests: BTreeMap<RouteClass, u64>,
    /// Body bytes actually handed to the connection by downloadUrl responses.
    pub download_bytes: u64,
    /// Injected 429/503 throttling responses sent.
    pub throttled_responses: u64,
    /// Injected 5xx failures sent (`fail_next`, `fail_next_upload_after_accept`).
    pub injected_failures: u64,
    /// Requests that arrived during a Retry-After pause, in the throttle's scope.
    pub pause_violations: Vec<PauseViolation>,
    /// Requests to an uploadUrl that carried an `Authorization` header.
    pub upload_url_requests_with_authorization: u64,
    /// Body bytes of upload fragments received in full by upload URLs (stored or not).
    pub upload_fragment_bytes: u64,
    /// Headers (lower-case names) of the last request to an uploadUrl.
    pub last_upload_url_headers: Vec<(String, String)>,
    /// The last 4096 requests, oldest first.
    pub recent: Vec<RequestRecord>,
}

impl Stats {
    /// Requests counted for `class`.
    pub fn count(&self, class: RouteClass) -> u64 {
        self.requests.get(&class).copied().unwrap_or(0)
    }

    /// Recent requests of `class`.
    pub fn recent_of(&self, class: RouteClass) -> Vec<&RequestRecord> {
        self.recent.iter().filter(|r| r.class == class).collect()
    }

    /// `(start, length, total, status)` of every upload-session fragment PUT among the recent
    /// requests, in order, from their `Content-Range`.
    pub fn upload_fragments(&self) -> Vec<(u64, u64, u64, u16)> {
        self.recent_of(RouteClass::UploadUrl)
            .iter()
            .filter(|r| r.method == "PUT")
            .map(|r| {
                let cr = r.content_range.as_deref().expect("a fragment PUT has a Content-Range");
                let (range, total) = cr.trim_start_matches("bytes ").split_once('/').expect("range/total");
                let (a, b) = range.split_once('-').expect("first-last");
                let (a, b): (u64, u64) = (a.parse().expect("first"), b.parse().expect("last"));
                (a, b - a + 1, total.parse().expect("total"), r.status)
            })
            .collect()
    }
}

/// An active Retry-After pause.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pause {
    pub scope: Scope,
    pub start: Instant,
    pub until: Instant,
}

#[derive(Default)]
pub(crate) struct StatsState {
    pub requests: BTreeMap<RouteClass, u64>,
    pub throttled: u64,
    pub injected_failures: u64,
    pub pause: Option<Pause>,
    pub violations: Vec<PauseViolation>,
    pub upload_auth: u64,
    pub upload_fragment_bytes: u64,
    pub last_upload_headers: Vec<(String, String)>,
    pub recent: VecDeque<RequestRecord>,
}

impl StatsState {
    /// Counts an arriving request and checks it against the running pause.
    pub fn arrive(&mut self, class: RouteClass, method: &str, path: &str, now: Instant) {
        *self.requests.entry(class).or_default() += 1;
        if let Some(p) = self.pause {
            if now >= p.until {
                self.pause = None;
            } else if p.scope.matches(class) {
                self.violations.push(PauseViolation {
                    class,
                    method: method.into(),
                    path: path.into(),
                    after_throttle: now - p.start,
                    early_by: p.until - now,
                });
            }
        }
    }

    pub fn record(&mut self, r: RequestRecord) {
        push_bounded(&mut self.recent, r, 4096);
    }

    pub fn snapshot(&self, download_bytes: u64) -> Stats {
        Stats {
            requests: self.requests.clone(),
            download_bytes,
            throttled_responses: self.throttled,
            injected_failures: self.injected_failures,
            pause_violations: self.violations.clone(),
            upload_url_requests_with_authorization: self.upload_auth,
            upload_fragment_bytes: self.upload_fragment_bytes,
            last_upload_url_headers: self.last_upload_headers.clone(),
            recent: self.recent.iter().cloned().collect(),
        }
    }
}
