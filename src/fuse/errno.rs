//! The errno every error becomes: chosen here, at the FUSE edge, from what the core says
//! happened ([`FsErrorKind`]), in one function. The core and the remotes below it never pick an
//! errno themselves.

use crate::error::RemoteError;
use crate::vfs::{FsError, FsErrorKind, RemoteFailure};

/// The errno the kernel gets for `e`.
pub fn errno_of(e: &FsError) -> i32 {
    use FsErrorKind as K;
    match e.kind() {
        K::NotFound => libc::ENOENT,
        K::Exists => libc::EEXIST,
        K::NotEmpty => libc::ENOTEMPTY,
        K::NotADirectory => libc::ENOTDIR,
        K::IsADirectory => libc::EISDIR,
        K::ReadOnly => libc::EROFS,
        K::VersionChanged => libc::ESTALE,
        K::NoSpace => libc::ENOSPC,
        K::InvalidName | K::InvalidArgument => libc::EINVAL,
        K::NameTooLong => libc::ENAMETOOLONG,
        K::BadHandle => libc::EBADF,
        K::FileTooLarge => libc::EFBIG,
        K::NotPermitted => libc::EPERM,
        K::Unsupported => libc::ENOTSUP,
        // The local disk's own errno (EDQUOT, EACCES, EIO...).
        K::LocalIo => e.io_error().and_then(|io| io.raw_os_error()).unwrap_or(libc::EIO),
        K::Internal => libc::EIO,
        K::Remote(RemoteFailure::AccessDenied) => libc::EACCES,
        K::Remote(RemoteFailure::Unreachable) => libc::EHOSTUNREACH,
        K::Remote(RemoteFailure::TimedOut) => libc::ETIMEDOUT,
        K::Remote(RemoteFailure::Throttled) => libc::EAGAIN,
        K::Remote(RemoteFailure::Locked) => libc::EBUSY,
        K::Remote(RemoteFailure::Failed) => libc::EIO,
    }
}

/// Whether `e` is an ordinary answer to what was asked (a missing name, a name taken, a folder
/// that is not empty, a change this mount or remote cannot make), logged at debug, rather than a
/// failure worth a warning.
pub fn is_expected(e: &FsError) -> bool {
    use FsErrorKind as K;
    matches!(
        e.kind(),
        K::NotFound
            | K::Exists
            | K::NotEmpty
            | K::NotADirectory
            | K::IsADirectory
            | K::ReadOnly
            | K::InvalidName
            | K::NameTooLong
            | K::InvalidArgument
            | K::NotPermitted
            | K::Unsupported
    )
}

/// `.errno()` on the errors of the layers below, as a caller of the filesystem would see them
/// (for tests and messages): `use cloudmount::fuse::ToErrno;`.
pub trait ToErrno {
    /// The errno this error becomes at the FUSE edge.
    fn errno(&self) -> i32;
}

impl ToErrno for FsError {
    fn errno(&self) -> i32 {
        errno_of(self)
    }
}

impl ToErrno for RemoteError {
    fn errno(&self) -> i32 {
        errno_of(&FsError::from(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(e: RemoteError) -> i32 {
        e.errno()
    }

    /// Every remote error keeps the errno it had when remote errors chose their own.
    #[test]
    fn remote_errors_map_to_their_errnos() {
        use std::time::Duration;
        assert_eq!(remote(RemoteError::NotFound), libc::ENOENT);
        assert_eq!(remote(RemoteError::Unauthorized("x".into())), libc::EACCES);
        assert_eq!(remote(RemoteError::Forbidden("x".into())), libc::EACCES);
        assert_eq!(remote(RemoteError::VersionChanged), libc::ESTALE);
        assert_eq!(remote(RemoteError::PreconditionFailed), libc::ESTALE);
        assert_eq!(remote(RemoteError::AlreadyExists), libc::EEXIST);
        let throttled = RemoteError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(remote(throttled), libc::EAGAIN);
        assert_eq!(remote(RemoteError::Timeout("x".into())), libc::ETIMEDOUT);
        assert_eq!(remote(RemoteError::Connect("x".into())), libc::EHOSTUNREACH);
        assert_eq!(remote(RemoteError::ConnectionLost("x".into())), libc::EIO);
        assert_eq!(remote(RemoteError::Tls("x".into())), libc::EIO);
        assert_eq!(remote(RemoteError::InsufficientStorage), libc::ENOSPC);
        assert_eq!(remote(RemoteError::Locked), libc::EBUSY);
        assert_eq!(remote(RemoteError::NotEmpty), libc::ENOTEMPTY);
        assert_eq!(remote(RemoteError::TooLarge), libc::EFBIG);
        let http = RemoteError::Http {
            status: 500,
            message: "x".into(),
        };
        assert_eq!(remote(http), libc::EIO);
        assert_eq!(remote(RemoteError::Protocol("x".into())), libc::EIO);
        assert_eq!(remote(RemoteError::LocalFile("x".into())), libc::EIO);
        assert_eq!(remote(RemoteError::Unsupported("x".into())), libc::ENOTSUP);
        assert_eq!(remote(RemoteError::InvalidName("x".into())), libc::EINVAL);
        assert_eq!(remote(RemoteError::NameTooLong("x".into())), libc::ENAMETOOLONG);
    }

    #[test]
    fn core_kinds_map_to_their_errnos() {
        use FsErrorKind as K;
        let cases = [
            (K::NotFound, libc::ENOENT),
            (K::Exists, libc::EEXIST),
            (K::NotEmpty, libc::ENOTEMPTY),
            (K::NotADirectory, libc::ENOTDIR),
            (K::IsADirectory, libc::EISDIR),
            (K::ReadOnly, libc::EROFS),
            (K::VersionChanged, libc::ESTALE),
            (K::NoSpace, libc::ENOSPC),
            (K::InvalidName, libc::EINVAL),
            (K::InvalidArgument, libc::EINVAL),
            (K::NameTooLong, libc::ENAMETOOLONG),
            (K::BadHandle, libc::EBADF),
            (K::FileTooLarge, libc::EFBIG),
            (K::NotPermitted, libc::EPERM),
            (K::Unsupported, libc::ENOTSUP),
            (K::Internal, libc::EIO),
            (K::LocalIo, libc::EIO),
        ];
        for (kind, errno) in cases {
            assert_eq!(errno_of(&FsError::new(kind, "x")), errno, "{kind:?}");
        }
    }

    /// A local disk error keeps the disk's errno, and a full disk is "no space" whatever its source.
    #[test]
    fn local_disk_errors_keep_their_errno() {
        let io = |errno| FsError::io("staging", std::io::Error::from_raw_os_error(errno));
        assert_eq!(errno_of(&io(libc::EDQUOT)), libc::EDQUOT);
        assert_eq!(errno_of(&io(libc::EACCES)), libc::EACCES);
        assert_eq!(io(libc::ENOSPC).kind(), FsErrorKind::NoSpace);
        assert_eq!(errno_of(&io(libc::ENOSPC)), libc::ENOSPC);
        let other = FsError::io("staging", std::io::Error::other("no errno"));
        assert_eq!(errno_of(&other), libc::EIO);
    }

    /// The cause stays with the error: a remote error keeps its kind, its text and its source,
    /// and a context is put in front of it.
    #[test]
    fn errors_keep_their_cause() {
        let e = FsError::from(RemoteError::PreconditionFailed);
        assert!(e.is_version_changed());
        assert!(matches!(e.remote_error(), Some(RemoteError::PreconditionFailed)));
        assert_eq!(e.to_string(), RemoteError::PreconditionFailed.to_string());
        let e = e.context("uploading a.txt");
        assert_eq!(
            e.to_string(),
            format!("uploading a.txt: {}", RemoteError::PreconditionFailed)
        );
        assert!(e.remote_error().is_some());
        let io = FsError::io("staging a.txt", std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(io.to_string().starts_with("staging a.txt: "), "{io}");
        assert_eq!(io.io_error().and_then(|e| e.raw_os_error()), Some(libc::EACCES));
        assert_eq!(errno_of(&e), libc::ESTALE);
        assert!(is_expected(&FsError::new(FsErrorKind::NotFound, "x")));
        assert!(!is_expected(&FsError::from(RemoteError::Connect("refused".into()))));
    }
}
