//! nginx with its `dav` module and the dav-ext module (PROPFIND, OPTIONS, LOCK, UNLOCK) on a free loopback port,
//! serving a fresh temp dir (see `launched.rs`). What it does differently: PROPFIND reports no `getetag` (GET and HEAD
//! carry `"{mtime:x}-{size:x}"`), and PUT ignores `If-Match`, `If-None-Match: *` and the `If` header; locks and
//! `Overwrite: F` on MOVE are enforced (docs/webdav-servers.md).

use std::path::Path;

use super::launched::{require, LaunchedServer};

/// A running nginx WebDAV server; stopped on drop.
pub struct NginxServer(LaunchedServer);

impl NginxServer {
    /// Starts nginx, without authentication, serving a fresh empty directory.
    pub fn start() -> NginxServer {
        require(
            "nginx",
            &["/usr/sbin/nginx", "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"],
        );
        NginxServer(LaunchedServer::start("nginx"))
    }

    /// Base URL of the share: `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        self.0.root()
    }

    /// nginx's error log (for failure messages).
    pub fn error_log(&self) -> String {
        self.0.error_log()
    }
}
