//! The two WebDAV servers every FUSE check runs against, behind one trait, and a macro that makes
//! one #[test] per server for each check function.

use std::path::Path;

use super::apache::ApacheServer;
use super::dav::DavServer;

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
