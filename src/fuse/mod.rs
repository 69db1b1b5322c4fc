//! The thin fuser adapter and the mount session around it. This is the only module that names
//! fuser.

mod adapter;
mod errno;
pub mod session;

pub use adapter::FuseAdapter;
pub use errno::{errno_of, is_expected, ToErrno};
