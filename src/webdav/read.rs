//! Ranged reads: `GET` with a `Range` header, coping with servers that ignore it.
//!
//! Versions are checked against the response's `ETag` rather than sent as `If-Match`/`If-Range`:
//! Apache hands out a weak ETag for a second after each write, and weak ETags never satisfy those
//! conditions, so a conditional request would fail (or fall back to the whole file) for no reason.

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::error::{RemoteError, RemoteResult};
use crate::http::{map_reqwest_error, HttpClient, HttpRequest};
use crate::remote::Version;

/// A parsed `Content-Range: bytes first-last/total` (`total` is `None` for `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte.
    pub first: u64,
    /// Last byte, inclusive.
    pub last: u64,
    /// Full length of the resource, when the server knows it.
    pub total: Option<u64>,
}

/// Parse a `Content-Range` header of a 206 answer. `None` for anything else (including the
/// `bytes */total` form, which only goes with 416).
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if last >= t {
                return None;
            }
            Some(t)
        }
    };
    Some(ContentRange { first, last, total })
}

/// Fail with `VersionChanged` when `version` is given and the response names another one. A
/// response without an ETag cannot be checked and passes (nginx sends no `getetag`, and then the
/// caller has no version to give anyway).
fn check_version(resp: &Response, version: Option<&Version>) -> RemoteResult<()> {
    let (Some(want), Some(etag)) = (version, resp.headers().get(ETAG)) else {
        return Ok(());
    };
    let Ok(etag) = etag.to_str() else {
        return Ok(());
    };
    if Version::from_etag(etag) != *want {
        return Err(RemoteError::VersionChanged);
    }
    Ok(())
}

/// Read bytes `[offset, offset + len)` of `url`. See [`crate::remote::Remote::read`].
pub async fn read_range(
    http: &HttpClient,
    url: Url,
    version: Option<&Version>,
    offset: u64,
    len: u64,
) -> RemoteResult<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let last = offset.saturating_add(len - 1);
    let range = HeaderValue::from_str(&format!("bytes={offset}-{last}"))
        .map_err(|e| RemoteError::Protocol(format!("bad Range header: {e}")))?;
    let req = HttpRequest::idempotent(Method::GET, url)
        .header(RANGE, range)
        .accept_status(StatusCode::RANGE_NOT_SATISFIABLE);
    http.execute(&req, |resp| take_range(resp, version, offset, len)).await
}

/// Turn one GET answer into the asked bytes.
async fn take_range(mut resp: Response, version: Option<&Version>, offset: u64, len: u64) -> RemoteResult<Bytes> {
    let context = format!("GET {}", resp.url().path());
    check_version(&resp, version)?;
    let status = resp.status();
    // How many bytes of the body to skip, how many to keep, and whether the body promised them.
    let (skip, want, promised) = match status {
        StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Bytes::new()),
        StatusCode::PARTIAL_CONTENT => {
            if resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/"))
            {
                return Err(RemoteError::Protocol(format!(
                    "{context}: unexpected multipart range answer"
                )));
            }
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| RemoteError::Protocol(format!("{context}: 206 without a valid Content-Range")))?;
            if cr.first != offset {
                return Err(RemoteError::Protocol(format!(
                    "{context}: asked for bytes from {offset}, got a range from {}",
                    cr.first
                )));
            }
            let sent = cr.last - cr.first + 1;
            if sent < len && cr.total.is_some_and(|t| cr.last + 1 < t) {
                return Err(RemoteError::Protocol(format!(
                    "{context}: server sent {sent} of {len} bytes before the end of the file"
                )));
            }
            (0, sent.min(len), true)
        }
        StatusCode::OK => {
            // The server ignored Range and sends the whole file: skip to `offset`, keep `len`.
            match resp.content_length() {
                Some(total) => (offset, total.saturating_sub(offset).min(len), true),
                None => (offset, len, false),
            }
        }
        other => {
            return Err(RemoteError::Protocol(format!(
                "{context}: unexpected status {other} for a read"
            )));
        }
    };
    let mut out = crate::buffers::with_capacity(want.min(16 << 20) as usize);
    let mut to_skip = skip;
    while (out.len() as u64) < want {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(map_reqwest_error(&context, &e)),
        };
        let mut chunk: &[u8] = &chunk;
        if to_skip > 0 {
            let n = (to_skip.min(chunk.len() as u64)) as usize;
            chunk = &chunk[n..];
            to_skip -= n as u64;
        }
        let room = (want - out.len() as u64).min(chunk.len() as u64) as usize;
        out.extend_from_slice(&chunk[..room]);
    }
    // Dropping `resp` here discards whatever is left (a whole-file answer past our range) without
    // reading it.
    if promised && (out.len() as u64) < want {
        return Err(RemoteError::Protocol(format!(
            "{context}: body ended after {} of {want} promised bytes",
            out.len()
        )));
    }
    Ok(crate::buffers::freeze(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(ContentRange {
                first: 0,
                last: 99,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 5-5/*"),
            Some(ContentRange {
                first: 5,
                last: 5,
                total: None
            })
        );
        assert_eq!(
            parse_content_range(" bytes  10-19 / 20 ").map(|c| c.total),
            Some(Some(20))
        );
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes a-b/c"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
