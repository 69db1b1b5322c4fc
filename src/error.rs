//! Errors raised by remote clients. Each variant says what happened precisely enough that the
//! layers above never guess from message text: the core turns it into a kind of filesystem error
//! ([`crate::vfs::FsErrorKind`]), and the FUSE edge chooses the errno ([`crate::fuse::errno_of`]).

use std::time::Duration;

/// What went wrong talking to a remote drive.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The item does not exist (HTTP 404, or a name missing from its parent).
    #[error("not found")]
    NotFound,
    /// The server refused the credentials (HTTP 401).
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    /// The server understood who we are and still said no (HTTP 403).
    #[error("permission denied: {0}")]
    Forbidden(String),
    /// The item changed on the server while we were reading a version we had seen before.
    #[error("item changed on the server while it was being read")]
    VersionChanged,
    /// The server kept throttling (429/503) past our deadline.
    #[error("server is throttling requests (retry after {retry_after:?})")]
    Throttled {
        /// How long the server last asked us to wait.
        retry_after: Option<Duration>,
    },
    /// No answer within the configured timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The server could not be reached at all (refused, unreachable, DNS).
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// A connection was made, then closed (or reset) before a complete answer came: the server
    /// was reached, so this is no "host unreachable". Worth another attempt.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The TLS handshake failed: the server's certificate is not trusted (unknown issuer, expired,
    /// wrong name...) or the server does not speak TLS. Asking again gives the same answer, so
    /// this is never retried.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The quota on the server is exhausted (HTTP 507).
    #[error("no space left on the server")]
    InsufficientStorage,
    /// A conditional write found another version on the server than the one we based it on
    /// (HTTP 412): someone else changed the item.
    #[error("the item changed on the server (precondition failed)")]
    PreconditionFailed,
    /// The name is already taken (MKCOL on an existing name, create-only upload, rename without
    /// replace).
    #[error("an item of that name already exists")]
    AlreadyExists,
    /// A folder that was to be deleted only if empty holds something (it may have been added
    /// after the caller looked: see [`crate::remote::Remote::delete_empty_folder`]).
    #[error("the folder is not empty")]
    NotEmpty,
    /// The item is locked on the server (HTTP 423).
    #[error("item is locked on the server")]
    Locked,
    /// The request was too large for the server (HTTP 413).
    #[error("request too large for the server")]
    TooLarge,
    /// Any other HTTP status we do not map to something more precise.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// A short description (never contains credentials).
        message: String,
    },
    /// The server answered something we could not understand (bad XML, missing fields, short body).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The operation is not something this remote can do.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The local file to upload could not be read (a problem on this machine, not the server's).
    #[error("cannot read the local file: {0}")]
    LocalFile(String),
    /// The server does not allow this name (OneDrive: forbidden characters, reserved names...).
    /// Checked before anything is sent where the rules are known ([`crate::remote::Remote::check_name`]).
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The name, or the path it would make, is longer than the server allows.
    #[error("name too long: {0}")]
    NameTooLong(String),
}

impl RemoteError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Throttled { .. }
            | RemoteError::Timeout(_)
            | RemoteError::Connect(_)
            | RemoteError::ConnectionLost(_) => true,
            RemoteError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Result alias for remote operations.
pub type RemoteResult<T> = Result<T, RemoteError>;
