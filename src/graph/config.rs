//! What a Graph mount points at: the service root, which drive, and how long to wait.
//!
//! The drive is chosen by a [`DriveSelector`] rather than by a drive id alone because users know
//! their drive as "mine", "this user's" (app-only tokens cannot say "mine") or "the Documents
//! library of this SharePoint site"; [`crate::graph::GraphRemote::connect`] turns it into a drive id
//! once, and everything after is addressed by that id.

use std::time::Duration;

use url::Url;

/// The global Graph v1.0 service root. National clouds and the test server use other roots.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// Which drive to mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveSelector {
    /// The signed-in user's OneDrive (`/me/drive`). Needs a delegated token.
    Me,
    /// A drive by its id (`/drives/{id}`); works with any token that may see it.
    DriveId(String),
    /// A user's OneDrive by id or principal name (`/users/{u}/drive`): what app-only tokens use.
    User(String),
    /// A SharePoint document library: the site by URL (`https://contoso.sharepoint.com/sites/eng`),
    /// the library by its name (`Documents`), compared case-insensitively; without a name, the
    /// site's default library (`/sites/{id}/drive`, whatever it is called in the site's language).
    SharePoint {
        /// Address of the site as a browser shows it.
        site_url: Url,
        /// Library (drive) name; `None` for the site's default library.
        library: Option<String>,
    },
}

/// How to reach one Graph drive.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// Graph service root, e.g. [`DEFAULT_GRAPH_URL`] or `http://127.0.0.1:PORT/v1.0`.
    pub graph_url: Url,
    /// Which drive.
    pub drive: DriveSelector,
    /// Deadline of one whole operation, retries and throttling pauses included.
    pub timeout: Duration,
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
    /// `$top` of children listings (1..=1000; Graph's default is 200).
    pub page_size: u32,
    /// How long a cached `@microsoft.graph.downloadUrl` is used before the item is read again for
    /// a fresh one. Graph documents these URLs as short-lived ("a few minutes" to "about an hour");
    /// an expired one is also caught by its 401/403, this only saves that failed request.
    pub download_url_max_age: Duration,
    /// Fragment size of upload sessions (files over 4 MiB). Rounded down to a multiple of 320 KiB
    /// and kept between 320 KiB and 62,586,880 bytes (the largest such multiple under 60 MiB).
    pub upload_fragment_size: u64,
}

impl GraphConfig {
    /// Defaults for `drive` on the global cloud.
    pub fn new(drive: DriveSelector) -> GraphConfig {
        GraphConfig {
            // A constant known to parse (checked by the `defaults` test).
            graph_url: Url::parse(DEFAULT_GRAPH_URL).expect("the default Graph URL is valid"),
            drive,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            page_size: 200,
            download_url_max_age: Duration::from_secs(300),
            upload_fragment_size: 10 << 20,
        }
    }

    /// The same settings against another service root (a national cloud or a test server).
    pub fn with_graph_url(mut self, graph_url: Url) -> GraphConfig {
        self.graph_url = graph_url;
        self
    }
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig::new(DriveSelector::Me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = GraphConfig::default();
        assert_eq!(c.graph_url.as_str(), "https://graph.microsoft.com/v1.0");
        assert_eq!(c.drive, DriveSelector::Me);
        assert_eq!(c.page_size, 200);
    }
}
