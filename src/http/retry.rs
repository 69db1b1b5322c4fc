//! When a failed request goes again and after how long: the policy (deadline, backoff with
//! jitter), what each request allows ([`Retry`]), which failures are worth it, and `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::error::RemoteError;

/// Longest client-wide pause a `Retry-After` can impose: a broken proxy asking for a day must not
/// freeze a mount for a day.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(3600);

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
}
