//! The thin fuser adapter and the mount session around it. This is the only module that names
//! fuser.

mod adapter;
pub mod session;

pub use adapter::FuseAdapter;
