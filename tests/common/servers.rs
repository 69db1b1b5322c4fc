//! The WebDAV servers the FUSE checks run against, behind one trait, and macros that make one #[test] per server for
//! each check function: `on_both_servers!` (the in-process server and Apache) and `on_all_servers!` (those two, nginx
//! and lighttpd).

use std::path::Path;

use super::apache::ApacheServer;
use super::dav::DavServer;
use super::lighttpd::LighttpdServer;
use super::nginx::NginxServer;

/// What a check needs of a server: where to mount from and where to put files "on the server".
pub trait TestServer {
    fn url(&self) -> String;
    fn root(&self) -> &Path;
}

impl TestServer for DavServer {
    fn url(&self) -> String {
        DavServer::url(self)
    }
    fn root(&self) -> &Path {
        DavServer::root(self)
    }
}

impl TestServer for ApacheServer {
    fn url(&self) -> String {
        ApacheServer::url(self)
    }
    fn root(&self) -> &Path {
        ApacheServer::root(self)
    }
}

impl TestServer for NginxServer {
    fn url(&self) -> String {
        NginxServer::url(self)
    }
    fn root(&self) -> &Path {
        NginxServer::root(self)
    }
}

impl TestServer for LighttpdServer {
    fn url(&self) -> String {
        LighttpdServer::url(self)
    }
    fn root(&self) -> &Path {
        LighttpdServer::root(self)
    }
}

/// For each check fn, one #[test] against the in-process server (module `$dav`) and one against Apache (`$apache`),
/// both servers made with the same constructor call.
macro_rules! on_both_servers {
    ($dav:ident, $apache:ident, $start:ident $args:tt, [$($check:ident),+ $(,)?]) => {
        mod $dav {
            use super::*;
            $( #[test] fn $check() { super::$check(&DavServer::$start $args); } )+
        }
        mod $apache {
            use super::*;
            $( #[test] fn $check() { super::$check(&ApacheServer::$start $args); } )+
        }
    };
}

/// For each check fn, one #[test] per server: the in-process server (module `$dav`), Apache (`$apache`), nginx
/// (`$nginx`) and lighttpd (`$lighttpd`), all made with the same constructor call (`start()`).
macro_rules! on_all_servers {
    ($dav:ident, $apache:ident, $nginx:ident, $lighttpd:ident, $start:ident $args:tt, [$($check:ident),+ $(,)?]) => {
        on_both_servers!($dav, $apache, $start $args, [$($check),+]);
        mod $nginx {
            use super::*;
            $( #[test] fn $check() { super::$check(&common::nginx::NginxServer::$start $args); } )+
        }
        mod $lighttpd {
            use super::*;
            $( #[test] fn $check() { super::$check(&common::lighttpd::LighttpdServer::$start $args); } )+
        }
    };
}
