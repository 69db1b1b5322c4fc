//! The one decoder of Graph error answers, shared by every request (reads now, writes later).
//!
//! Graph says what went wrong in the HTTP status and in `error.code` (plus nested
//! `innerError.code`s). We map from those two only, never from `message`, whose wording changes
//! and is localised; the message is only carried along for the log.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::error::RemoteError;
use crate::http::parse_retry_after;

/// What an error body says, as far as we understood it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphErrorInfo {
    /// `error.code`, then each nested `innerError.code`, outermost first.
    pub codes: Vec<String>,
    /// `error.message`, for humans and logs only.
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    error: Detail,
}

#[derive(Deserialize)]
struct Detail {
    code: Option<String>,
    message: Option<String>,
    // Both spellings occur (`innerError`, `innererror`: docs/onedrive.md, Errors).
    #[serde(rename = "innerError", alias = "innererror")]
    inner: Option<Box<Detail>>,
}

impl GraphErrorInfo {
    /// Parse an error body; anything that is not Graph's error JSON gives an empty info (a proxy's
    /// HTML page still maps by status).
    pub fn parse(body: &[u8]) -> GraphErrorInfo {
        let Ok(b) = serde_json::from_slice::<Body>(body) else {
            return GraphErrorInfo::default();
        };
        let mut codes = Vec::new();
        let mut d = Some(&b.error);
        // Bounded: a hostile body cannot make us loop long.
        while let Some(detail) = d.filter(|_| codes.len() < 8) {
            if let Some(c) = &detail.code {
                codes.push(c.clone());
            }
            d = detail.inner.as_deref();
        }
        GraphErrorInfo {
            codes,
            message: b.error.message,
        }
    }

    fn has(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c.eq_ignore_ascii_case(code))
    }
}

/// The error for a Graph answer with a non-success `status`. `context` is "METHOD /path".
pub fn map_error(status: u16, info: &GraphErrorInfo, retry_after: Option<Duration>, context: &str) -> RemoteError {
    let describe = || {
        let code = info.codes.first().map(String::as_str).unwrap_or("-");
        let msg = info.message.as_deref().unwrap_or("");
        format!("{context}: {status} {code}: {msg}")
            .trim_end_matches([' ', ':'])
            .to_string()
    };
    // Statuses that decide on their own, whatever the code says: 423 comes with `accessDenied`
    // (which would otherwise read as 403), throttling with various codes.
    match status {
        401 => return RemoteError::Unauthorized(describe()),
        423 => return RemoteError::Locked,
        429 | 503 | 509 => return RemoteError::Throttled { retry_after },
        507 => return RemoteError::InsufficientStorage,
        _ => {}
    }
    if info.has("itemNotFound") {
        return RemoteError::NotFound;
    }
    if info.has("nameAlreadyExists") {
        return RemoteError::AlreadyExists;
    }
    if info.has("resourceModified") {
        return RemoteError::PreconditionFailed;
    }
    if info.has("quotaLimitReached") {
        return RemoteError::InsufficientStorage;
    }
    if info.has("resourceLocked") {
        return RemoteError::Locked;
    }
    if info.has("activityLimitReached") {
        return RemoteError::Throttled { retry_after };
    }
    if info.has("maxFileSizeExceeded") {
        return RemoteError::TooLarge;
    }
    if info.has("InvalidAuthenticationToken") || info.has("unauthenticated") {
        return RemoteError::Unauthorized(describe());
    }
    if info.has("accessDenied") {
        return RemoteError::Forbidden(describe());
    }
    if info.has("pathIsTooLong") || info.has("pathTooDeep") {
        return RemoteError::NameTooLong(describe());
    }
    if info.has("invalidPath") {
        return RemoteError::InvalidName(describe());
    }
    if info.has("notSupported") {
        return RemoteError::Unsupported(describe());
    }
    match status {
        403 => RemoteError::Forbidden(describe()),
        404 => RemoteError::NotFound,
        // A name conflict is keyed on 409 whatever its code (docs/onedrive.md, Errors).
        409 => RemoteError::AlreadyExists,
        412 => RemoteError::PreconditionFailed,
        413 => RemoteError::TooLarge,
        501 => RemoteError::Unsupported(describe()),
        _ => RemoteError::Http {
            status,
            message: describe(),
        },
    }
}

/// Decode a whole error answer: status, `Retry-After` and body.
pub fn decode_error(status: StatusCode, headers: &HeaderMap, body: &[u8], context: &str) -> RemoteError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    map_error(status.as_u16(), &GraphErrorInfo::parse(body), retry_after, context)
}

/// Statuses the Graph request helpers take back from [`crate::http::HttpClient`] to decode
/// themselves (the client would map them by status alone). 429 and 5xx are left to the client,
/// which retries them and honours `Retry-After`.
pub const DECODED_STATUSES: &[u16] = &[
    400, 401, 403, 404, 405, 406, 409, 410, 411, 412, 413, 415, 416, 422, 423, 507,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, inner: Option<&str>) -> Vec<u8> {
        let inner = inner
            .map(|i| serde_json::json!({ "code": i }))
            .unwrap_or(serde_json::Value::Null);
        serde_json::to_vec(&serde_json::json!({
            "error": { "code": code, "message": "Something happened.", "innerError": inner }
        }))
        .unwrap()
    }

    fn map(status: u16, code: &str) -> RemoteError {
        map_error(status, &GraphErrorInfo::parse(&body(code, None)), None, "GET /x")
    }

    #[test]
    fn parses_codes_and_both_inner_spellings() {
        let i = GraphErrorInfo::parse(&body("invalidRange", Some("fragmentOverlap")));
        assert_eq!(i.codes, vec!["invalidRange", "fragmentOverlap"]);
        let lower = br#"{"error":{"code":"a","message":"m","innererror":{"code":"b"}}}"#;
        assert_eq!(GraphErrorInfo::parse(lower).codes, vec!["a", "b"]);
        assert_eq!(GraphErrorInfo::parse(b"<html>").codes, Vec::<String>::new());
    }

    #[test]
    fn mapping_table() {
        assert!(matches!(map(404, "itemNotFound"), RemoteError::NotFound));
        assert!(matches!(map(409, "nameAlreadyExists"), RemoteError::AlreadyExists));
        assert!(matches!(map(412, "resourceModified"), RemoteError::PreconditionFailed));
        // Some 412s came with `notAllowed`: the status still says it.
        assert!(matches!(map(412, "notAllowed"), RemoteError::PreconditionFailed));
        assert!(matches!(
            map(507, "quotaLimitReached"),
            RemoteError::InsufficientStorage
        ));
        assert!(matches!(
            map(403, "quotaLimitReached"),
            RemoteError::InsufficientStorage
        ));
        assert!(matches!(map(423, "accessDenied"), RemoteError::Locked));
        assert!(matches!(map(403, "accessDenied"), RemoteError::Forbidden(_)));
        assert!(matches!(map(400, "accessDenied"), RemoteError::Forbidden(_)));
        assert!(matches!(
            map(401, "InvalidAuthenticationToken"),
            RemoteError::Unauthorized(_)
        ));
        assert!(matches!(map(401, "unauthenticated"), RemoteError::Unauthorized(_)));
        assert!(matches!(map(413, "invalidRequest"), RemoteError::TooLarge));
        assert!(matches!(map(400, "notSupported"), RemoteError::Unsupported(_)));
        assert!(matches!(map(501, "notImplemented"), RemoteError::Unsupported(_)));
        assert!(matches!(map(409, "conflict"), RemoteError::AlreadyExists));
        let path = |inner: &str| {
            map_error(
                400,
                &GraphErrorInfo::parse(&body("invalidRequest", Some(inner))),
                None,
                "PUT /x",
            )
        };
        assert!(matches!(path("invalidPath"), RemoteError::InvalidName(_)));
        assert!(matches!(path("pathIsTooLong"), RemoteError::NameTooLong(_)));
        assert!(matches!(map(404, "whatever"), RemoteError::NotFound));
        assert!(matches!(
            map(410, "resyncRequired"),
            RemoteError::Http { status: 410, .. }
        ));
        let t = map_error(
            429,
            &GraphErrorInfo::parse(&body("activityLimitReached", Some("throttledRequest"))),
            Some(Duration::from_secs(7)),
            "GET /x",
        );
        assert!(matches!(t, RemoteError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(7)));
        assert!(matches!(map(503, "serviceNotAvailable"), RemoteError::Throttled { .. }));
        assert!(matches!(
            map(400, "activityLimitReached"),
            RemoteError::Throttled { .. }
        ));
        let inner = map_error(
            423,
            &GraphErrorInfo::parse(&body("accessDenied", Some("resourceLocked"))),
            None,
            "DELETE /x",
        );
        assert!(matches!(inner, RemoteError::Locked));
    }

    #[test]
    fn never_from_message_text_and_messages_kept_for_logs() {
        // The message says "not found" but the code and status say bad request.
        let b = br#"{"error":{"code":"invalidRequest","message":"Item not found; name already exists"}}"#;
        match map_error(400, &GraphErrorInfo::parse(b), None, "GET /x") {
            RemoteError::Http { status: 400, message } => {
                assert_eq!(
                    message,
                    "GET /x: 400 invalidRequest: Item not found; name already exists"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        match map_error(500, &GraphErrorInfo::default(), None, "GET /y") {
            RemoteError::Http { status: 500, message } => assert_eq!(message, "GET /y: 500 -"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn retry_after_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        let e = decode_error(StatusCode::TOO_MANY_REQUESTS, &h, b"{}", "GET /x");
        assert!(matches!(e, RemoteError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(3)));
    }
}
