//! The filesystem core's error: every error carries the errno it becomes, decided where it is
//! raised, so the FUSE adapter only translates.

use crate::error::RemoteError;

/// An error of a filesystem operation, with the errno the caller will see.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    errno: i32,
    message: String,
}

impl FsError {
    /// An error with an explicit errno and a message for the log.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }

    /// The errno to hand to the kernel.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether this is an expected outcome (a missing name) rather than a failure worth logging.
    pub fn is_not_found(&self) -> bool {
        self.errno == libc::ENOENT
    }
}

impl From<RemoteError> for FsError {
    fn from(e: RemoteError) -> Self {
        FsError {
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}

/// Result of a filesystem core operation.
pub type FsResult<T> = Result<T, FsError>;

/// Shorthand for building an [`FsError`]: `fs_err!(libc::EROFS, "read-only mount")`.
#[macro_export]
macro_rules! fs_err {
    ($errno:expr, $($arg:tt)+) => {
        $crate::vfs::FsError::new($errno, format!($($arg)+))
    };
}
