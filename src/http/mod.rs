//! The one HTTP client every remote uses (WebDAV and Microsoft Graph, and the sign-in flows), with
//! one retry policy.
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
//! certificate) is [`crate::error::RemoteError::Tls`] and is not retried: asking again gets the same certificate.
//! A private CA is added with [`HttpConfig::ca_cert`] (`--ca-cert`); the system's roots, and
//! `SSL_CERT_FILE`, still apply.
//!
//! Module map: `client` holds the shared client and its retry loop, `request` a request as a
//! value, `retry` when and how long to wait before asking again, `body` streamed upload bodies and
//! their stall limit, `error` how statuses and transport failures become
//! [`crate::error::RemoteError`]s. The names callers use are the ones named here.

mod body;
mod client;
mod error;
mod request;
mod retry;

pub use client::{Credentials, HttpClient, HttpConfig, MAX_REDIRECTS};
pub use error::{error_chain, map_reqwest_error, status_error};
pub use request::{BodyObserver, HttpRequest, ObserveFn};
pub use retry::{parse_retry_after, should_retry, Retry, RetryPolicy};
