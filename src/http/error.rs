//! How HTTP statuses and transport failures become [`RemoteError`]s, with messages that never carry
//! a URL's user info or query.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

use super::client::MAX_REDIRECTS;
use crate::error::RemoteError;

/// A redirect from https to plain http, refused by [`redirect_policy`].
#[derive(Debug)]
pub(super) struct DowngradeRefused {
    pub(super) from: String,
    pub(super) to: String,
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
pub(super) struct TooManyRedirects;

impl fmt::Display for TooManyRedirects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {MAX_REDIRECTS} redirects")
    }
}

impl StdError for TooManyRedirects {}

/// A URL for messages: origin and path, never user info or the query (which may carry tokens).
pub(super) fn shown(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// rustls's error in `error`, looking inside `io::Error`s (whose `source` skips what they wrap;
/// the TLS connector wraps it twice).
pub(super) fn rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// What went wrong in TLS, if `error` is a TLS failure.
pub(super) fn tls_failure(error: &reqwest::Error) -> Option<String> {
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
pub(super) fn redirect_failure(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(s) = source {
        if s.is::<DowngradeRefused>() || s.is::<TooManyRedirects>() {
            return Some(s.to_string());
        }
        source = s.source();
    }
    None
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

pub(super) fn timeout_error(context: &str, deadline: Duration) -> RemoteError {
    RemoteError::Timeout(format!("{context}: no complete answer within {deadline:?}"))
}

pub(super) fn stall_error(context: &str, limit: Duration) -> RemoteError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
