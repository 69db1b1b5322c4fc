#![allow(dead_code)]
//! Helpers shared by the integration tests: an in-process WebDAV server, a packaged Apache mod_dav,
//! test data, and a harness that mounts cloudmount for real.

pub mod apache;
pub mod dav;
pub mod files;
pub mod mount;
pub mod scripted;
pub mod wsgidav;
