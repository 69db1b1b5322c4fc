//! The filesystem core's error: what happened (an [`FsErrorKind`]), where (a context for the
//! log), and why (the error underneath: the remote's, or the local disk's). The core says what
//! happened and never picks an errno: the FUSE adapter does, from the kind, in one function
//! (`crate::fuse::errno_of`). Code that branches on an error asks its kind: a retry after "the
//! version we relied on changed" tests [`FsError::is_version_changed`], not an errno.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::error::RemoteError;

/// What went wrong, in the terms of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrorKind {
    /// No item of that name or number.
    NotFound,
    /// The name is taken.
    Exists,
    /// The folder holds something.
    NotEmpty,
    /// A folder was needed and this is a file.
    NotADirectory,
    /// A file was needed and this is a folder.
    IsADirectory,
    /// The mount refuses changes (read-only, or writes never enabled).
    ReadOnly,
    /// The version of the item we relied on changed on the server (or changed kind) under us:
    /// looking again may succeed.
    VersionChanged,
    /// No space left, on the server (quota) or on the local disk that stages uploads.
    NoSpace,
    /// The name cannot exist here (not UTF-8, `/`, a name the server forbids).
    InvalidName,
    /// The name, or the path it makes, is too long.
    NameTooLong,
    /// The request makes no sense (moving a folder into itself).
    InvalidArgument,
    /// No open handle of that number, or not open for that.
    BadHandle,
    /// An offset or size beyond what a file can have.
    FileTooLarge,
    /// A change the remote cannot keep (owners, modes, times on some servers).
    NotPermitted,
    /// An operation this remote does not have.
    Unsupported,
    /// Reading or writing local disk failed; the source is the [`std::io::Error`].
    LocalIo,
    /// The core's own state is not what it should be (a bug, or local content lost).
    Internal,
    /// Talking to the server failed.
    Remote(RemoteFailure),
}

/// How talking to the server failed, when the failure says nothing about the item itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The server refused the credentials or the access.
    AccessDenied,
    /// The server cannot be reached (refused, unreachable, DNS).
    Unreachable,
    /// No answer within the deadline.
    TimedOut,
    /// The server kept throttling past the deadline.
    Throttled,
    /// The item is locked on the server.
    Locked,
    /// Anything else: a broken connection, TLS, an HTTP status or an answer we cannot read.
    Failed,
}

impl From<&RemoteError> for FsErrorKind {
    fn from(e: &RemoteError) -> Self {
        use FsErrorKind as K;
        match e {
            RemoteError::NotFound => K::NotFound,
            RemoteError::AlreadyExists => K::Exists,
            RemoteError::NotEmpty => K::NotEmpty,
            RemoteError::VersionChanged | RemoteError::PreconditionFailed => K::VersionChanged,
            RemoteError::InsufficientStorage => K::NoSpace,
            RemoteError::TooLarge => K::FileTooLarge,
            RemoteError::Unsupported(_) => K::Unsupported,
            RemoteError::InvalidName(_) => K::InvalidName,
            RemoteError::NameTooLong(_) => K::NameTooLong,
            RemoteError::Unauthorized(_) | RemoteError::Forbidden(_) => K::Remote(RemoteFailure::AccessDenied),
            RemoteError::Connect(_) => K::Remote(RemoteFailure::Unreachable),
            RemoteError::Timeout(_) => K::Remote(RemoteFailure::TimedOut),
            RemoteError::Throttled { .. } => K::Remote(RemoteFailure::Throttled),
            RemoteError::Locked => K::Remote(RemoteFailure::Locked),
            RemoteError::ConnectionLost(_)
            | RemoteError::Tls(_)
            | RemoteError::Http { .. }
            | RemoteError::Protocol(_)
            | RemoteError::LocalFile(_) => K::Remote(RemoteFailure::Failed),
        }
    }
}

impl FsErrorKind {
    /// What the kind says, for an error raised without a context.
    fn describe(self) -> &'static str {
        use FsErrorKind as K;
        match self {
            K::NotFound => "not found",
            K::Exists => "the name is taken",
            K::NotEmpty => "the folder is not empty",
            K::NotADirectory => "not a folder",
            K::IsADirectory => "a folder",
            K::ReadOnly => "the mount is read-only",
            K::VersionChanged => "the item changed on the server",
            K::NoSpace => "no space left",
            K::InvalidName => "invalid name",
            K::NameTooLong => "name too long",
            K::InvalidArgument => "invalid argument",
            K::BadHandle => "unknown handle",
            K::FileTooLarge => "file too large",
            K::NotPermitted => "not permitted on this remote",
            K::Unsupported => "not supported by this remote",
            K::LocalIo => "local disk error",
            K::Internal => "internal error",
            K::Remote(_) => "the server failed",
        }
    }
}

/// An error of a filesystem operation: its kind, a context for the log, and its cause.
#[derive(Debug, Clone)]
pub struct FsError {
    kind: FsErrorKind,
    /// What the core was doing; empty when the error is the source's as it came.
    context: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl FsError {
    /// An error of `kind`, described by `context`.
    pub fn new(kind: FsErrorKind, context: impl Into<String>) -> Self {
        FsError {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`, described by `context`.
    pub fn caused_by(
        kind: FsErrorKind,
        context: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        FsError {
            kind,
            context: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A local disk error while doing `what`: [`FsErrorKind::NoSpace`] for a full disk, else
    /// [`FsErrorKind::LocalIo`] (whose errno is the disk's own).
    pub fn io(what: &str, e: std::io::Error) -> Self {
        let kind = match e.raw_os_error() {
            Some(libc::ENOSPC) => FsErrorKind::NoSpace,
            _ => FsErrorKind::LocalIo,
        };
        FsError::caused_by(kind, what, e)
    }

    /// The same error, with `context` saying what the core was doing.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        let context = context.into();
        self.context = if self.context.is_empty() {
            context
        } else {
            format!("{context}: {}", self.context)
        };
        self
    }

    /// What happened.
    pub fn kind(&self) -> FsErrorKind {
        self.kind
    }

    /// The local disk error underneath, if that is what this is.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<std::io::Error>())
    }

    /// The remote's error underneath, if that is what this is.
    pub fn remote_error(&self) -> Option<&RemoteError> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<RemoteError>())
    }

    /// Whether the name or item does not exist: often an expected answer, not a failure.
    pub fn is_not_found(&self) -> bool {
        self.kind == FsErrorKind::NotFound
    }

    /// Whether the version of the item we relied on changed under us, so that looking at the
    /// item again and retrying may succeed.
    pub fn is_version_changed(&self) -> bool {
        self.kind == FsErrorKind::VersionChanged
    }

    /// Whether the server could not be reached or did not answer in time: a failure that may go
    /// away by itself (no network yet, a server starting).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.kind,
            FsErrorKind::Remote(RemoteFailure::Unreachable | RemoteFailure::TimedOut | RemoteFailure::Throttled)
        )
    }
}

/// Shown as `context: source` (or either alone): the error tells its own story, and
/// [`Error::source`] goes on with what lies under its source.
impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.context.is_empty()) {
            (Some(source), true) => source.fmt(f),
            (Some(source), false) => write!(f, "{}: {source}", self.context),
            (None, true) => f.write_str(self.kind.describe()),
            (None, false) => f.write_str(&self.context),
        }
    }
}

impl Error for FsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        // The source itself is part of this error's text (see Display); its cause comes next.
        self.source.as_deref()?.source()
    }
}

impl From<RemoteError> for FsError {
    fn from(e: RemoteError) -> Self {
        FsError {
            kind: FsErrorKind::from(&e),
            context: String::new(),
            source: Some(Arc::new(e)),
        }
    }
}

/// Result of a filesystem core operation.
pub type FsResult<T> = Result<T, FsError>;

/// Shorthand for building an [`FsError`]: `fs_err!(ReadOnly, "the mount is read-only")`, with
/// the kind's name and a `format!` context.
#[macro_export]
macro_rules! fs_err {
    ($kind:ident, $($arg:tt)+) => {
        $crate::vfs::FsError::new($crate::vfs::FsErrorKind::$kind, format!($($arg)+))
    };
}
