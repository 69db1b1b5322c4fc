//! One request as a value (method, URL without user info, headers, body, retry choice), so that a
//! retry can send it again.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::retry::Retry;
use crate::remote::{GrowingFile, TransferProgress};

/// What a request sends.
#[derive(Clone, Debug)]
pub(super) enum RequestBody {
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
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<RequestBody>,
    pub(super) retry: Retry,
    pub(super) accept: Vec<StatusCode>,
    pub(super) sent: Option<TransferProgress>,
    pub(super) observer: Option<BodyObserver>,
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
    /// belong in [`super::Credentials`], where they are sent as a header and never end up in a log line.
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
    /// does not grow with its size. A failure to read it is [`crate::error::RemoteError::LocalFile`]. The
    /// request is bound by a stall limit instead of the total deadline (see the module doc).
    pub fn body_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.body = Some(RequestBody::File(Arc::new(path.into()), None));
        self
    }

    /// Like [`body_file`](Self::body_file), but only bytes `[offset, offset + len)` of the file
    /// (an upload fragment). The file must hold them all, else [`crate::error::RemoteError::LocalFile`].
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
    pub(super) fn streams(&self) -> bool {
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

    pub(super) fn accepts(&self, status: StatusCode) -> bool {
        status.is_success() || self.accept.contains(&status)
    }

    /// "METHOD /path" for messages: never the host's user info, never the query (which may carry
    /// tokens).
    pub(super) fn label(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_drop_user_info() {
        let url = Url::parse("http://bob:secret@example.com/dav/a%20b?x=1").unwrap();
        let req = HttpRequest::idempotent(Method::GET, url);
        assert_eq!(req.url().as_str(), "http://example.com/dav/a%20b?x=1");
        assert_eq!(req.label(), "GET /dav/a%20b");
        assert_eq!(req.retry(), Retry::Idempotent);
    }
}
