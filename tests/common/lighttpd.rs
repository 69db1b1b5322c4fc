//! lighttpd with mod_webdav (and its sqlite database for properties and locks) on a free loopback port, serving a
//! fresh temp dir (see `launched.rs`). Strong ETags everywhere; `If-Match`, `If-None-Match: *` and `If:` are enforced
//! on files; a collection's ETag changes with its members but is not checked in `If:` (docs/webdav-servers.md).

use std::path::Path;

use super::launched::{require, LaunchedServer};

/// A running lighttpd WebDAV server; stopped on drop.
pub struct LighttpdServer(LaunchedServer);

impl LighttpdServer {
    /// Starts lighttpd, without authentication, serving a fresh empty directory.
    pub fn start() -> LighttpdServer {
        require("lighttpd", &["/usr/sbin/lighttpd", "/usr/lib/lighttpd/mod_webdav.so"]);
        LighttpdServer(LaunchedServer::start("lighttpd"))
    }

    /// Base URL of the share: `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        self.0.root()
    }

    /// lighttpd's error log (for failure messages).
    pub fn error_log(&self) -> String {
        self.0.error_log()
    }
}
