#![allow(dead_code, unused_macros)]
//! Helpers shared by the integration tests: an in-process WebDAV server, packaged servers (Apache
//! mod_dav, WsgiDAV), scripted HTTP servers for quirks, test data, and a harness that mounts
//! cloudmount for real.

pub mod apache;
pub mod dav;
pub mod files;
pub mod graph;
pub mod hostile;
pub mod launched;
pub mod lighttpd;
pub mod mount;
pub mod nginx;
pub mod relay;
pub mod remote;
pub mod scripted;
pub mod seen;
#[macro_use]
pub mod servers;
pub mod writer;
pub mod wsgidav;
