//! cloudmount: mount OneDrive and WebDAV drives as a Linux folder through FUSE.
//!
//! The crate is layered so that each layer can be tested alone:
//! - [`remote`]: the [`remote::Remote`] trait that every backend implements, speaking in stable item
//!   IDs and never in inodes, plus an in-memory double for tests of the layers above;
//! - [`http`], [`webdav`] and [`graph`]: HTTP-only clients (no FUSE);
//! - [`vfs`]: the FUSE-free filesystem core (inode table, handles, block cache, prefetch);
//! - [`fuse`]: the thin fuser adapter that only translates;
//! - [`cli`]: configuration and the mount lifecycle used by the binary;
//! - [`metastore`]: the mount's local store of metadata the remote cannot keep (modes, owners);
//! - [`private_fs`]: how every local file and folder is created (the mounting user's only).

pub mod auth;
pub mod buffers;
pub mod cli;
pub mod error;
pub mod fuse;
pub mod graph;
pub mod http;
pub mod metastore;
pub mod private_fs;
pub mod remote;
pub mod vfs;
pub mod webdav;
