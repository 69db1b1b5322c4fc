//! Content reads: ranged `GET`s on `@microsoft.graph.downloadUrl`, without `Authorization`.
//!
//! Download URLs are short-lived and bound to one content version, so they are cached per item
//! together with the version and size they came with and the time they were fetched
//! ([`UrlCache`]). Listings and lookups fill the cache for free (their items carry the URL), so a
//! first read usually needs no extra metadata request. When the download host refuses a URL
//! (401/403/404/410: expired or revoked), the caller re-reads the item once for a fresh URL; our
//! OAuth token is never involved.
//!
//! A read returns exactly the bytes asked for, fewer only at the end of the file. A body that
//! breaks off early is a transient failure (the request is retried within its deadline); an
//! answer for another range than the one asked, or a longer one, is a protocol error.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use reqwest::header::{HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::error::{RemoteError, RemoteResult};
use crate::http::{error_chain, map_reqwest_error, HttpRequest};
use crate::remote::{EntryKind, ItemId, Version};
use crate::webdav::read::parse_content_range;

use super::client::GraphClient;
use super::item::DriveItem;

/// How many items' URLs are kept.
const CACHE_ITEMS: usize = 4096;

/// A download URL with what it was issued for.
#[derive(Clone, Debug)]
pub struct CachedUrl {
    /// The pre-authenticated URL.
    pub url: Url,
    /// Content version the URL serves.
    pub version: Option<Version>,
    /// Size of that version.
    pub size: u64,
    /// When we got it.
    pub fetched: Instant,
}

/// Download URLs per item, each with the version it serves.
#[derive(Debug)]
pub struct UrlCache {
    map: Mutex<LruCache<ItemId, CachedUrl>>,
    max_age: Duration,
}

impl UrlCache {
    /// A cache whose URLs are used for at most `max_age`.
    pub fn new(max_age: Duration) -> UrlCache {
        UrlCache {
            map: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ITEMS).unwrap_or(NonZeroUsize::MIN),
            )),
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<ItemId, CachedUrl>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The URL of `id` for `version` (any version when `None`), if fresh enough.
    pub fn get(&self, id: &ItemId, version: Option<&Version>) -> Option<CachedUrl> {
        let mut map = self.lock();
        let hit = map.get(id)?;
        let fits = version.is_none_or(|v| hit.version.as_ref() == Some(v));
        if fits && hit.fetched.elapsed() < self.max_age {
            Some(hit.clone())
        } else {
            None
        }
    }

    /// Remember the URL of `id`.
    pub fn put(&self, id: ItemId, url: CachedUrl) {
        self.lock().put(id, url);
    }

    /// Cache the download URL a file item came with; `None` (nothing cached) for folders and
    /// items without one.
    pub fn remember(&self, item: &DriveItem) -> Option<CachedUrl> {
        if item.kind() != Some(EntryKind::File) {
            return None;
        }
        let url = Url::parse(item.download_url.as_deref()?).ok()?;
        let cached = CachedUrl {
            url,
            version: item.version(),
            size: item.size.unwrap_or(0).max(0) as u64,
            fetched: Instant::now(),
        };
        self.put(ItemId::new(item.id.as_str()), cached.clone());
        Some(cached)
    }

    /// Forget the URL of `id` (it was refused).
    pub fn remove(&self, id: &ItemId) {
        self.lock().pop(id);
    }
}

/// What one ranged GET gave.
#[derive(Debug)]
pub enum Fetched {
    /// The bytes asked for.
    Data(Bytes),
    /// The download host refused the URL with this status: get a fresh one.
    Refused(u16),
}

/// Statuses of a download host that mean "this URL no longer works".
const REFUSED: [StatusCode; 4] = [
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::NOT_FOUND,
    StatusCode::GONE,
];

/// `GET url` for bytes `[offset, offset + want)`, where `want > 0` and the range lies inside the
/// file as its metadata describes it (so nothing shorter is acceptable).
pub async fn fetch_range(client: &GraphClient, url: Url, offset: u64, want: u64) -> RemoteResult<Fetched> {
    let last = offset + want - 1;
    let range = HeaderValue::from_str(&format!("bytes={offset}-{last}"))
        .map_err(|e| RemoteError::Protocol(format!("bad Range header: {e}")))?;
    let mut req = HttpRequest::idempotent(Method::GET, url)
        .header(RANGE, range)
        .accept_status(StatusCode::RANGE_NOT_SATISFIABLE);
    for s in REFUSED {
        req = req.accept_status(s);
    }
    client
        .preauthenticated(&req, |resp| take_range(resp, offset, want))
        .await
}

/// Turn one answer into exactly `want` bytes from `offset`.
async fn take_range(mut resp: Response, offset: u64, want: u64) -> RemoteResult<Fetched> {
    // The path of a download URL is an opaque token: say only which host refused.
    let context = format!("GET download URL on {}", resp.url().host_str().unwrap_or("?"));
    let status = resp.status();
    if REFUSED.contains(&status) {
        return Ok(Fetched::Refused(status.as_u16()));
    }
    // 416 inside the file's known size: the content there is not the one our metadata describes.
    if status == StatusCode::RANGE_NOT_SATISFIABLE {
        return Ok(Fetched::Refused(416));
    }
    let skip = match status {
        StatusCode::PARTIAL_CONTENT => {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| RemoteError::Protocol(format!("{context}: 206 without a valid Content-Range")))?;
            let sent = cr.last - cr.first + 1;
            if cr.first != offset || sent != want {
                return Err(RemoteError::Protocol(format!(
                    "{context}: asked for {want} bytes at {offset}, got {sent} at {}",
                    cr.first
                )));
            }
            if let Some(n) = resp.content_length().filter(|n| *n != want) {
                return Err(RemoteError::Protocol(format!(
                    "{context}: Content-Length {n} does not match the {want} bytes of the range"
                )));
            }
            0
        }
        // Range ignored (allowed, A6): the whole file follows; skip to `offset`.
        StatusCode::OK => offset,
        other => {
            return Err(RemoteError::Protocol(format!(
                "{context}: unexpected status {other} for a read"
            )))
        }
    };
    let mut out = crate::buffers::with_capacity(want.min(16 << 20) as usize);
    let mut to_skip = skip;
    let mut extra = false;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // reqwest reports a body that breaks off as a decode error; it is a lost connection,
            // worth another attempt, not a protocol violation.
            Err(e) if e.is_timeout() => return Err(map_reqwest_error(&context, &e)),
            Err(e) => {
                return Err(RemoteError::Connect(format!(
                    "{context}: connection lost in the body: {}",
                    error_chain(&e)
                )))
            }
        };
        let mut chunk: &[u8] = &chunk;
        if to_skip > 0 {
            let n = to_skip.min(chunk.len() as u64) as usize;
            chunk = &chunk[n..];
            to_skip -= n as u64;
        }
        let room = (want - out.len() as u64).min(chunk.len() as u64) as usize;
        out.extend_from_slice(&chunk[..room]);
        if room < chunk.len() {
            extra = true;
        }
        if out.len() as u64 == want && (status == StatusCode::OK || extra) {
            // Whole-file answer: the rest is not ours to read. Dropping `resp` discards it.
            break;
        }
    }
    if status == StatusCode::PARTIAL_CONTENT && extra {
        return Err(RemoteError::Protocol(format!(
            "{context}: the body is longer than the {want} bytes of its range"
        )));
    }
    if (out.len() as u64) < want {
        // Broke off: like a lost connection, worth another attempt.
        return Err(RemoteError::Connect(format!(
            "{context}: body ended after {} of {want} bytes",
            out.len()
        )));
    }
    Ok(Fetched::Data(crate::buffers::freeze(out)))
}
