//! The FUSE-free filesystem core: namespace (inode table), handles, block cache and prefetch over a
//! [`Remote`](crate::remote::Remote). It knows nothing of fuser; the adapter in
//! [`crate::fuse`] translates.

pub mod attr;
pub mod cache;
pub mod changes;
pub mod disk_cache;
mod error;
pub mod fs;
pub mod handles;
pub mod local;
pub mod namespace;
pub mod prefetch;
pub mod upload;
pub mod write;

pub use attr::{Attr, Ownership};
pub use error::{FsError, FsResult};
pub use fs::{DirItem, DriveFs, FsConfig, Looked, Opened, StatFs};
pub use namespace::{Applied, Invalidation};
