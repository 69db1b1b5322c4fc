//! Building a WebDAV remote client for the client-level tests.

use std::time::Duration;

use cloudmount::webdav::DavConfig;

/// A client config for `url` without credentials, with the given operation deadline and connect
/// timeout.
pub fn dav_config(url: &str, timeout: Duration, connect_timeout: Duration) -> DavConfig {
    DavConfig {
        url: url::Url::parse(url).unwrap(),
        user: None,
        password: None,
        timeout,
        connect_timeout,
    }
}
