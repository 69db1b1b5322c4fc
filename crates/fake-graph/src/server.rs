//! HTTP front: one dispatcher for every request. It classifies the request, counts it, applies injected
//! faults, routes it, and stamps `request-id` / `client-request-id` on the response.
//!
//! Routes:
//! * `/v1.0/...` Graph (bearer required) → `graph.rs`
//! * `/_dl/{token}` pre-authenticated download URLs (Range, expiry)
//! * `/_up/{session}` upload session URLs → `upload.rs`
//! * `/_monitor/{id}` long-running operation monitors (copy, asynchronous move)
//! * `/{tenant}/oauth2/v2.0/{authorize,token,devicecode}` identity platform → `identity.rs`
//! * `/devicelogin` a tiny page to approve device codes by hand

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use crate::error::{AadError, GraphError, ReqIds};
use crate::faults::Injected;
use crate::graph::{self, Route};
use crate::state::{JobStatus, Shared};
use crate::stats::{RequestRecord, RouteClass};
use crate::upload;
use crate::util;

/// Builds a JSON response.
pub(crate) fn json_resp(status: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Builds an empty response.
pub(crate) fn empty(status: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub(crate) fn set_header(r: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        axum::http::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

/// Renders a Graph error.
pub(crate) fn graph_error(e: &GraphError, ids: &ReqIds) -> Response {
    let mut r = json_resp(e.status, &e.body(ids));
    for (k, v) in &e.headers {
        set_header(&mut r, k, v);
    }
    r
}

/// Renders an identity error.
pub(crate) fn aad_error(e: &AadError, ids: &ReqIds) -> Response {
    let mut r = json_resp(e.status, &e.body(ids));
    for (k, v) in &e.headers {
        set_header(&mut r, k, v);
    }
    r
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What the dispatcher decided a request is.
enum Target {
    Graph(Result<Route, GraphError>),
    Download(String),
    Upload(String),
    Monitor(String),
    Identity { tenant: String, endpoint: String },
    DeviceLogin,
    Unknown,
}

fn classify(method: &str, path: &str) -> (Target, RouteClass) {
    if let Some(rest) = path.strip_prefix("/v1.0/") {
        let route = graph::parse_route(rest);
        let class = match &route {
            Ok(r) => r.class(method),
            Err(_) => RouteClass::Metadata,
        };
        return (Target::Graph(route), class);
    }
    if let Some(t) = path.strip_prefix("/_dl/") {
        return (Target::Download(t.to_string()), RouteClass::Download);
    }
    if let Some(t) = path.strip_prefix("/_up/") {
        return (Target::Upload(t.to_string()), RouteClass::UploadUrl);
    }
    if let Some(t) = path.strip_prefix("/_monitor/") {
        return (Target::Monitor(t.to_string()), RouteClass::Monitor);
    }
    if path == "/devicelogin" || path == "/devicelogin/" {
        return (Target::DeviceLogin, RouteClass::Token);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.len() == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" {
        let tenant = util::decode_segment(segs[0]).unwrap_or_default();
        return (
            Target::Identity {
                tenant,
                endpoint: segs[3].to_string(),
            },
            RouteClass::Token,
        );
    }
    (Target::Unknown, RouteClass::Metadata)
}

/// The single request handler.
pub(crate) async fn dispatch(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let now = SystemTime::now();
    let ids = ReqIds {
        request_id: util::random_guid_lower(),
        client_request_id: header_str(req.headers(), "client-request-id").map(str::to_string),
        date: now,
    };
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let range = header_str(req.headers(), "range").map(str::to_string);
    let content_range = header_str(req.headers(), "content-range").map(str::to_string);
    let authorization = req.headers().contains_key("authorization");
    let (target, class) = classify(&method, &path);

    let hook = {
        let mut st = shared.lock();
        st.stats.arrive(class, &method, &path_q, Instant::now());
        st.faults.take_hook(class)
    };
    if let Some(hook) = hook {
        hook();
    }
    let injected = {
        let mut st = shared.lock();
        let st = &mut *st;
        st.faults.take(class, &mut st.stats.pause, Instant::now())
    };

    let mut resp = match injected {
        Some(inj) => injected_response(&shared, &inj, class, &ids),
        None => match target {
            Target::Graph(route) => match route {
                Ok(route) => graph::handle(shared.clone(), route, req, &ids, now).await,
                Err(e) => graph_error(&e, &ids),
            },
            Target::Download(tok) => download(&shared, &tok, req.headers(), &ids, now),
            Target::Upload(id) => upload::handle_upload_url(shared.clone(), &id, req, &ids, now).await,
            Target::Monitor(id) => monitor(&shared, &id, &method, &ids),
            Target::Identity { tenant, endpoint } => identity(&shared, &tenant, &endpoint, req, &ids, now).await,
            Target::DeviceLogin => device_login(&shared, req).await,
            Target::Unknown => graph_error(
                &GraphError::new(404, "itemNotFound", format!("No route for {path}")),
                &ids,
            ),
        },
    };
    set_header(&mut resp, "request-id", &ids.request_id);
    if let Some(c) = &ids.client_request_id {
        set_header(&mut resp, "client-request-id", c);
    }
    let status = resp.status().as_u16();
    shared.lock().stats.record(RequestRecord {
        class,
        method,
        path: path_q,
        status,
        range,
        authorization,
        content_range,
    });
    resp
}

fn injected_response(shared: &Shared, inj: &Injected, class: RouteClass, ids: &ReqIds) -> Response {
    {
        let mut st = shared.lock();
        if inj.throttle {
            st.stats.throttled += 1;
        } else {
            st.stats.injected_failures += 1;
        }
    }
    let mut resp = if class == RouteClass::Token {
        let e = AadError::new(
            "temporarily_unavailable",
            Some(if inj.throttle { 50196 } else { 50001 }),
            "The service is temporarily unavailable (injected fault).",
        )
        .status(inj.status);
        aad_error(&e, ids)
    } else {
        let e = if inj.throttle && inj.status == 429 {
            GraphError::new(429, "activityLimitReached", "The request has been throttled")
                .inner("throttledRequest")
                .inner("quota")
        } else if inj.throttle {
            GraphError::new(
                inj.status,
                "serviceNotAvailable",
                "The service is temporarily unavailable",
            )
            .inner("throttledRequest")
        } else if inj.status == 503 {
            GraphError::new(
                503,
                "serviceNotAvailable",
                "The service is not available. Try the request again after a delay.",
            )
        } else {
            GraphError::new(inj.status, "generalException", "An unspecified error has occurred.")
        };
        graph_error(&e, ids)
    };
    if let Some(s) = inj.retry_after {
        set_header(&mut resp, "Retry-After", &s.to_string());
    }
    resp
}

/// Streams a byte slice in chunks, counting what it hands out, optionally failing after a cut-off.
struct CountingBody {
    data: Bytes,
    pos: usize,
    counter: Arc<AtomicU64>,
    cut_at: Option<usize>,
    /// Before failing at `cut_at`, wait a little so the bytes before the cut reach the client.
    cut_delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

const CHUNK: usize = 256 * 1024;

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(cut) = this.cut_at {
            if this.pos >= cut && this.pos < this.data.len() {
                let delay = this
                    .cut_delay
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))));
                if std::future::Future::poll(delay.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "fake-graph: injected download truncation",
                ))));
            }
        }
        if this.pos >= this.data.len() {
            return Poll::Ready(None);
        }
        let mut end = (this.pos + CHUNK).min(this.data.len());
        if let Some(cut) = this.cut_at {
            end = end.min(cut.max(this.pos + 1));
        }
        let chunk = this.data.slice(this.pos..end);
        this.pos = end;
        this.counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.data.len() - self.pos) as u64)
    }
}

/// Parses a single `Range: bytes=…` header against a size. `None` = ignore the header (serve 200),
/// `Some(Err(()))` = unsatisfiable, `Some(Ok((start, end_inclusive)))`.
fn parse_range(h: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multi-range: served as a plain 200 (allowed by RFC 7233 and §4.2)
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size.saturating_sub(n), size - 1)));
    }
    let start: u64 = a.parse().ok()?;
    let end: Option<u64> = if b.is_empty() { None } else { Some(b.parse().ok()?) };
    if let Some(e) = end {
        if e < start {
            return None; // syntactically invalid → ignored
        }
    }
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok((start, end.unwrap_or(size - 1).min(size - 1))))
}

/// `GET {downloadUrl}`: no bearer needed (an Authorization header is ignored), Range honoured, content bound
/// to the version at issue time, 401 after expiry.
fn download(shared: &Shared, tok: &str, headers: &HeaderMap, ids: &ReqIds, now: SystemTime) -> Response {
    let (content, etag, mime, cut) = {
        let mut st = shared.lock();
        let entry = st.downloads.map.get(tok).filter(|e| e.expires > now);
        let Some(e) = entry else {
            let err = GraphError::new(
                401,
                "unauthenticated",
                "The access token has expired. It's valid from the time it was issued for a limited time.",
            )
            .inner("expiredToken");
            return graph_error(&err, ids);
        };
        let (content, etag, mime) = (e.content.clone(), e.etag.clone(), e.mime);
        let mut cut = None;
        if let Some(t) = st.faults.truncate_downloads.first_mut() {
            t.0 -= 1;
            cut = Some(t.1 as usize);
            if t.0 == 0 {
                st.faults.truncate_downloads.remove(0);
            }
        }
        (content, etag, mime, cut)
    };
    let size = content.len() as u64;
    let (status, body, content_range) = match header_str(headers, "range").and_then(|h| parse_range(h, size)) {
        None => (200, content, None),
        Some(Err(())) => {
            let err = GraphError::new(416, "invalidRange", "The requested range is not satisfiable.");
            let mut r = graph_error(&err, ids);
            set_header(&mut r, "Content-Range", &format!("bytes */{size}"));
            return r;
        }
        Some(Ok((a, b))) => (
            206,
            content.slice(a as usize..=b as usize),
            Some(format!("bytes {a}-{b}/{size}")),
        ),
    };
    let counting = CountingBody {
        data: body,
        pos: 0,
        counter: shared.download_bytes.clone(),
        cut_at: cut,
        cut_delay: None,
    };
    let mut r = Response::new(Body::new(counting));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    set_header(&mut r, "Content-Type", mime);
    set_header(&mut r, "Accept-Ranges", "bytes");
    set_header(&mut r, "ETag", &quote_etag(&etag));
    if let Some(cr) = content_range {
        set_header(&mut r, "Content-Range", &cr);
    }
    r
}

/// HTTP `ETag` header value for an eTag (quoted if it is not already).
pub(crate) fn quote_etag(e: &str) -> String {
    if e.starts_with('"') {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
}

/// `GET {monitorUrl}` (no bearer): 202 while in progress, 200 with `completed` + `resourceId` or `failed`.
fn monitor(shared: &Shared, id: &str, method: &str, ids: &ReqIds) -> Response {
    if method != "GET" && method != "HEAD" {
        return graph_error(&GraphError::new(405, "BadRequest", "Method not allowed"), ids);
    }
    let st = shared.lock();
    let Some(job) = st.jobs.get(id) else {
        return graph_error(&GraphError::not_found(), ids);
    };
    match &job.status {
        JobStatus::InProgress => {
            let elapsed = job.created.elapsed().unwrap_or_default().as_secs_f64();
            let total = job.delay.as_secs_f64().max(0.001);
            let pct = ((elapsed / total) * 100.0).clamp(0.0, 99.0);
            let pct = (pct * 10.0).round() / 10.0;
            json_resp(
                202,
                &json!({ "operation": job.operation, "percentageComplete": pct, "status": "inProgress" }),
            )
        }
        JobStatus::Completed { resource_id } => json_resp(
            200,
            &json!({ "operation": job.operation, "percentageComplete": 100.0, "resourceId": resource_id, "status": "completed" }),
        ),
        JobStatus::Failed { code, message } => json_resp(
            200,
            &json!({ "operation": job.operation, "percentageComplete": 0.0, "status": "failed", "error": { "code": code, "message": message } }),
        ),
    }
}

async fn read_form(body: Body) -> Vec<(String, String)> {
    match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => form_urlencoded::parse(&b)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn identity(
    shared: &Shared,
    tenant: &str,
    endpoint: &str,
    req: Request,
    ids: &ReqIds,
    now: SystemTime,
) -> Response {
    let method = req.method().clone();
    match (endpoint, method.as_str()) {
        ("token", "POST") | ("devicecode", "POST") => {
            let form = read_form(req.into_body()).await;
            let mut st = shared.lock();
            let res = if endpoint == "token" {
                st.token(tenant, &form, now)
            } else {
                st.devicecode(tenant, &form, now)
            };
            match res {
                Ok(v) => {
                    let mut r = json_resp(200, &v);
                    set_header(&mut r, "Cache-Control", "no-store, no-cache");
                    r
                }
                Err(e) => aad_error(&e, ids),
            }
        }
        ("authorize", "GET") => {
            let q = util::parse_query(req.uri().query());
            let mut st = shared.lock();
            match st.authorize(tenant, &q, now) {
                Ok(location) => {
                    let mut r = empty(302);
                    set_header(&mut r, "Location", &location);
                    r
                }
                Err((status, html)) => {
                    let mut r = Response::new(Body::from(html));
                    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                    set_header(&mut r, "Content-Type", "text/html; charset=utf-8");
                    r
                }
            }
        }
        _ => aad_error(
            &AadError::new(
                "invalid_request",
                Some(900561),
                format!("The endpoint only accepts the documented method for '{endpoint}'."),
            ),
            ids,
        ),
    }
}

/// `GET /devicelogin[?otc=CODE[&decline=1]]` or `POST` with the same form fields: approves a device code.
async fn device_login(shared: &Shared, req: Request) -> Response {
    let mut params = util::parse_query(req.uri().query());
    if req.method() == "POST" {
        params.extend(read_form(req.into_body()).await);
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let html = match get("otc").or_else(|| get("user_code")) {
        Some(code) => {
            let approve = get("decline").is_none();
            if shared.lock().auth.set_device_code(&code, approve) {
                if approve {
                    "<p>You have signed in to the fake Graph application. You may now close this window.</p>"
                        .to_string()
                } else {
                    "<p>Sign-in declined.</p>".to_string()
                }
            } else {
                format!("<p>The code {code} is not valid or has expired.</p>")
            }
        }
        None => "<form method=\"post\"><p>Enter code</p><input name=\"otc\"/><button>Next</button></form>".to_string(),
    };
    let mut r = Response::new(Body::from(format!("<html><body>{html}</body></html>")));
    set_header(&mut r, "Content-Type", "text/html; charset=utf-8");
    r
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=90-1000", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-0", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("bytes=9-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
