//! The WebDAV remote: PROPFIND for metadata, ranged GET for content, PUT/MKCOL/DELETE/MOVE/PROPPATCH
//! for changes.
//!
//! Module map: [`href`] turns item IDs into URLs and hrefs back into IDs; [`propfind`] holds the
//! request bodies and the streaming multistatus parser; [`props`] our dead properties (mode,
//! owner, times) and the probe for them; [`read`] does ranged reads; [`mod@write`] the
//! write operations and what the server can do ([`DavRemote::probe_capabilities`]). This file ties
//! them to [`crate::http::HttpClient`] and implements [`Remote`].

/// The namespace of our dead properties ([`props::META_NS`]), as a literal for `concat!`.
macro_rules! meta_ns {
    () => {
        "urn:x-cloudmount:meta:1"
    };
}

pub mod href;
pub mod propfind;
pub mod props;
pub mod read;
pub mod write;

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Response};
use tracing::warn;
use url::Url;

use crate::error::{RemoteError, RemoteResult};
use crate::http::{Credentials, HttpClient, HttpConfig, HttpRequest, RetryPolicy};
use crate::remote::{
    Capabilities, Entry, EntryKind, ItemId, Meta, Precondition, Quota, Remote, UploadCtx, UploadSource, UploadTarget,
    Version,
};

use propfind::{DavResponse, PROPFIND_ENTRY, PROPFIND_ENTRY_AND_QUOTA};

/// How to reach a WebDAV share.
#[derive(Clone)]
pub struct DavConfig {
    /// Base URL of the share; item IDs are paths relative to its path. User info in it is used as
    /// credentials when `user` is `None`, and never appears in logs or [`Remote::describe`].
    pub url: Url,
    /// Basic auth user name.
    pub user: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
    /// Deadline of one whole operation, retries included (see [`RetryPolicy::deadline`]).
    pub timeout: Duration,
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
}

impl fmt::Debug for DavConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("redacted"));
        }
        f.debug_struct("DavConfig")
            .field("url", &shown.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A WebDAV share as a [`Remote`]. Item IDs are decoded paths relative to the base URL.
#[derive(Debug)]
pub struct DavRemote {
    http: HttpClient,
    /// Base URL without user info, path ending in `/`.
    base: Url,
    /// Decoded segments of the base path, which every href of ours starts with.
    base_segments: Vec<String>,
    /// What has been learnt about the server's write behaviour.
    caps: Mutex<write::CapState>,
    /// Keeps concurrent first uploads from probing the server more than once.
    probe_lock: tokio::sync::Mutex<()>,
    /// Whether the server keeps dead properties; `None` until probed (see
    /// [`DavRemote::probe_meta`]).
    dead_props: Mutex<Option<bool>>,
    /// Collection ETags change with any descendant (Nextcloud, ownCloud).
    propagating: std::sync::atomic::AtomicBool,
    /// The server writes a PUT body aside and puts it in place only once complete, so a PUT cut
    /// off halfway changes nothing (see [`Capabilities::streams_growing_uploads`]).
    stages_puts: std::sync::atomic::AtomicBool,
    /// The server is nginx, whose PROPFIND (dav-ext) reports no `getetag` while its GET and HEAD
    /// carry one built from the modification time and size (see [`nginx_etag`]).
    nginx: std::sync::atomic::AtomicBool,
    /// New files go up under a temporary name and are moved into place with `Overwrite: F`
    /// (Apache, nginx: see `write::DavRemote::create_by_move`).
    creates_by_move: std::sync::atomic::AtomicBool,
}

/// The ETag nginx sends with GET and HEAD: `"{mtime in seconds:x}-{size:x}"`
/// (`ngx_http_set_etag`). Its dav-ext PROPFIND leaves `getetag` out, so without this every file
/// there would look versionless, and an edit could not say which version it replaces (it would
/// be taken for a create and end as a conflict copy). Built from the same PROPFIND's
/// `getlastmodified` and `getcontentlength`, it is the value nginx compares `If-Match` with.
fn nginx_etag(props: &propfind::Props) -> Option<String> {
    if props.collection {
        return None;
    }
    let secs = props
        .last_modified?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(format!("\"{secs:x}-{:x}\"", props.content_length?))
}

fn propfind_method() -> Method {
    // A valid token, so this cannot fail; fall back to a harmless method rather than panic.
    Method::from_bytes(b"PROPFIND").unwrap_or(Method::OPTIONS)
}

/// Depth of a PROPFIND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    Zero,
    One,
}

impl DavRemote {
    /// Set up the client. Makes no request: [`Remote::root`] is what checks the server.
    pub fn new(cfg: DavConfig) -> RemoteResult<DavRemote> {
        Self::new_with(cfg, HttpConfig::default())
    }

    /// [`DavRemote::new`] with HTTP settings beyond the config's (a CA certificate to trust);
    /// their deadlines and credentials are replaced by `cfg`'s.
    pub fn new_with(cfg: DavConfig, http: HttpConfig) -> RemoteResult<DavRemote> {
        let base = href::normalize_base(&cfg.url)?;
        let base_segments = href::path_segments(&base)?;
        let credentials = match (&cfg.user, &cfg.password) {
            (Some(user), password) => Some(Credentials {
                user: user.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, password) if !cfg.url.username().is_empty() => {
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                Some(Credentials {
                    user: decode(cfg.url.username()),
                    password: password
                        .clone()
                        .unwrap_or_else(|| cfg.url.password().map(decode).unwrap_or_default()),
                })
            }
            _ => None,
        };
        let http = HttpClient::new(HttpConfig {
            policy: RetryPolicy {
                deadline: cfg.timeout,
                connect_timeout: cfg.connect_timeout,
                ..RetryPolicy::default()
            },
            credentials,
            ..http
        })?;
        Ok(DavRemote {
            http,
            base_segments,
            caps: Mutex::new(write::CapState::default()),
            probe_lock: tokio::sync::Mutex::new(()),
            dead_props: Mutex::new(None),
            // Nextcloud and ownCloud serve WebDAV under remote.php, and propagate collection ETags
            // to the root; Apache, nginx, dav-server and WsgiDAV do not.
            propagating: std::sync::atomic::AtomicBool::new(base.path().contains("/remote.php/")),
            // Nextcloud and ownCloud write uploads to a part file first; Apache and nginx are
            // recognised by their answers (see `note_server`).
            stages_puts: std::sync::atomic::AtomicBool::new(base.path().contains("/remote.php/")),
            nginx: std::sync::atomic::AtomicBool::new(false),
            creates_by_move: std::sync::atomic::AtomicBool::new(false),
            base,
        })
    }

    /// Say whether collection ETags change with any descendant, overriding what the URL suggests
    /// (see [`Capabilities::propagates_versions`]).
    pub fn set_propagates_versions(&self, on: bool) {
        self.propagating.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The shared HTTP client (for callers that add operations, e.g. uploads).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The base URL (no user info, ending in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of an item; `collection` adds the trailing slash.
    pub fn url_of(&self, id: &ItemId, collection: bool) -> RemoteResult<Url> {
        href::item_url(&self.base, id.as_str(), collection)
    }

    /// PROPFIND `url` and collect the responses that name existing items, as (id, response).
    async fn propfind(&self, url: Url, depth: Depth, body: &'static str) -> RemoteResult<Vec<(String, DavResponse)>> {
        let req = HttpRequest::idempotent(propfind_method(), url)
            .header(
                HeaderName::from_static("depth"),
                HeaderValue::from_static(match depth {
                    Depth::Zero => "0",
                    Depth::One => "1",
                }),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
            .body(body);
        self.http.execute(&req, |resp| self.parse_propfind(resp)).await
    }

    /// Learn from a response's `Server` header whether the server stages PUT bodies: Apache's
    /// mod_dav_fs writes them to a temporary file renamed into place at the end (since httpd
    /// 2.4, bug 39815), nginx's dav module to its client body file, likewise. Others (dav-server,
    /// rclone, WsgiDAV, unknown ones) are not assumed to.
    fn note_server(&self, resp: &Response) {
        let Some(server) = resp
            .headers()
            .get(reqwest::header::SERVER)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        let server = server.trim_start().to_ascii_lowercase();
        if server.starts_with("apache") || server.starts_with("nginx") {
            self.stages_puts.store(true, std::sync::atomic::Ordering::Relaxed);
            self.creates_by_move.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if server.starts_with("nginx") {
            self.nginx.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn parse_propfind(&self, resp: Response) -> RemoteResult<Vec<(String, DavResponse)>> {
        self.note_server(&resp);
        let request_path = resp.url().path().to_string();
        if resp.status().as_u16() != 207 {
            // A 200 with an HTML page (a proxy's login page, a plain web server) is not WebDAV.
            return Err(RemoteError::Protocol(format!(
                "PROPFIND {request_path}: expected 207 Multi-Status, got {}",
                resp.status()
            )));
        }
        let body = resp.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(body);
        let mut out = Vec::new();
        let nginx = self.nginx.load(std::sync::atomic::Ordering::Relaxed);
        propfind::parse_multistatus(reader, |mut r| {
            if !r.is_ok() {
                return Ok(());
            }
            if nginx && r.props.etag.is_none() {
                r.props.etag = nginx_etag(&r.props);
            }
            match href::href_to_id(&r.href, &self.base_segments, &request_path) {
                Some(id) => out.push((id, r)),
                None => {
                    warn!(href = %href::printable(&r.href), "ignoring an href outside the share or not a valid name")
                }
            }
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Depth-0 PROPFIND of `id`, as an entry named after `id`.
    async fn stat_id(&self, id: &str, body: &'static str) -> RemoteResult<(Entry, DavResponse)> {
        let url = href::item_url(&self.base, id, id.is_empty())?;
        let responses = self.propfind(url, Depth::Zero, body).await?;
        // Servers answer with the one resource asked for; if one says more, prefer the matching
        // href, else take the first.
        let pos = responses.iter().position(|(rid, _)| rid == id).unwrap_or(0);
        let Some((_, resp)) = responses.into_iter().nth(pos) else {
            return Err(RemoteError::NotFound);
        };
        if let Some(why) = &resp.props.invalid {
            warn!(item = %href::printable(id), "the server describes this item wrongly: {why}");
            return Err(RemoteError::Protocol(format!("{}: {why}", href::printable(id))));
        }
        // The ID asked for names the entry, not the href: a case-insensitive server may spell it
        // differently, and the layers above know the item by the name they looked up.
        Ok((to_entry(id.to_string(), &resp), resp))
    }
}

/// Build an [`Entry`]. A missing or unreadable `getlastmodified` becomes `UNIX_EPOCH`, not "now":
/// a fixed value keeps the entry stable between two stats, whereas "now" would make every stat
/// look like a modification and defeat revalidation by mtime.
fn to_entry(id: String, resp: &DavResponse) -> Entry {
    let p = &resp.props;
    let kind = if p.collection {
        EntryKind::Directory
    } else {
        EntryKind::File
    };
    Entry {
        name: href::name_of(&id).to_string(),
        id: ItemId::new(id),
        kind,
        size: p.content_length.unwrap_or(0),
        mtime: p.last_modified.unwrap_or(SystemTime::UNIX_EPOCH),
        version: p
            .etag
            .as_deref()
            .map(Version::from_etag)
            .filter(|v| !v.as_str().is_empty()),
        meta: props::entry_meta(p),
    }
}

#[async_trait]
impl Remote for DavRemote {
    fn describe(&self) -> String {
        self.base.to_string()
    }

    async fn root(&self) -> RemoteResult<Entry> {
        let (entry, _) = self.stat_id("", PROPFIND_ENTRY_AND_QUOTA).await?;
        if entry.kind != EntryKind::Directory {
            return Err(RemoteError::Protocol(format!(
                "{} is not a WebDAV collection",
                self.base
            )));
        }
        Ok(entry)
    }

    async fn stat(&self, id: &ItemId) -> RemoteResult<Entry> {
        Ok(self.stat_id(id.as_str(), PROPFIND_ENTRY).await?.0)
    }

    async fn lookup(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(RemoteError::NotFound);
        }
        let id = href::join(parent.as_str(), name);
        Ok(self.stat_id(&id, PROPFIND_ENTRY).await?.0)
    }

    async fn list(&self, dir: &ItemId) -> RemoteResult<Vec<Entry>> {
        let url = href::item_url(&self.base, dir.as_str(), true)?;
        let responses = self.propfind(url, Depth::One, PROPFIND_ENTRY).await?;
        let mut entries = Vec::with_capacity(responses.len().saturating_sub(1));
        let mut seen = std::collections::HashSet::new();
        for (id, resp) in responses {
            // Keep direct children only: skips the folder itself, and anything deeper a server
            // might volunteer.
            if id == dir.as_str() || href::parent_of(&id) != Some(dir.as_str()) {
                continue;
            }
            // The same item twice: the first answer counts, every time.
            if !seen.insert(id.clone()) {
                warn!(item = %href::printable(&id), "the listing names this item twice; keeping the first");
                continue;
            }
            if let Some(why) = &resp.props.invalid {
                warn!(item = %href::printable(&id), "leaving this item out of the listing: {why}");
                continue;
            }
            entries.push(to_entry(id, &resp));
        }
        Ok(entries)
    }

    async fn read(&self, id: &ItemId, version: Option<&Version>, offset: u64, len: u64) -> RemoteResult<Bytes> {
        let url = href::item_url(&self.base, id.as_str(), false)?;
        read::read_range(&self.http, url, version, offset, len).await
    }

    async fn quota(&self) -> RemoteResult<Option<Quota>> {
        let (_, resp) = self.stat_id("", PROPFIND_ENTRY_AND_QUOTA).await?;
        let p = resp.props;
        if p.quota_available.is_none() && p.quota_used.is_none() {
            return Ok(None);
        }
        Ok(Some(Quota {
            used: p.quota_used,
            available: p.quota_available,
        }))
    }

    fn moved_id(&self, id: &ItemId, from: &ItemId, to: &ItemId) -> Option<ItemId> {
        // Ids are paths: what was below the folder is now below its new path.
        crate::remote::moved_path_id(id, from, to)
    }

    /// What has been learnt so far: `false` until known (see [`DavRemote::probe_capabilities`]).
    fn capabilities(&self) -> Capabilities {
        self.known_capabilities()
    }

    async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
        DavRemote::upload(self, to, from, cx).await
    }

    async fn mkdir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        self.make_dir(parent, name).await
    }

    async fn delete(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_item(id).await
    }

    async fn delete_empty_folder(&self, id: &ItemId) -> RemoteResult<()> {
        self.delete_empty_dir(id).await
    }

    async fn rename(&self, id: &ItemId, new_parent: &ItemId, new_name: &str, replace: bool) -> RemoteResult<Entry> {
        self.move_item(id, new_parent, new_name, replace).await
    }

    async fn set_mtime(&self, id: &ItemId, mtime: SystemTime) -> RemoteResult<Entry> {
        self.set_mtime_inner(id.as_str(), mtime).await
    }

    async fn set_meta(&self, id: &ItemId, meta: &Meta, precondition: Precondition) -> RemoteResult<Entry> {
        self.set_meta_inner(id, meta, precondition).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> DavConfig {
        DavConfig {
            url: Url::parse(url).unwrap(),
            user: None,
            password: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn nextcloud_and_owncloud_urls_propagate_collection_etags() {
        let nc = DavRemote::new(cfg("https://cloud.example.com/remote.php/dav/files/alice/")).unwrap();
        assert!(nc.capabilities().propagates_versions);
        let oc = DavRemote::new(cfg("https://oc.example.com/remote.php/webdav/")).unwrap();
        assert!(oc.capabilities().propagates_versions);
        let apache = DavRemote::new(cfg("https://example.com/dav/")).unwrap();
        assert!(!apache.capabilities().propagates_versions);
        apache.set_propagates_versions(true);
        assert!(apache.capabilities().propagates_versions);
    }

    #[test]
    fn describe_hides_credentials() {
        let r = DavRemote::new(cfg("https://alice:s3cret@example.com/dav")).unwrap();
        assert_eq!(r.describe(), "https://example.com/dav/");
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(!format!("{:?}", cfg("https://alice:s3cret@example.com/dav")).contains("s3cret"));
        let mut c = cfg("https://example.com/");
        c.password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn rejects_non_http_urls() {
        assert!(DavRemote::new(cfg("file:///tmp")).is_err());
    }

    #[test]
    fn entries_from_responses() {
        let mut resp = DavResponse {
            href: "/x".into(),
            ..Default::default()
        };
        let e = to_entry("a/b c".into(), &resp);
        assert_eq!(e.name, "b c");
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, 0);
        assert_eq!(e.mtime, SystemTime::UNIX_EPOCH);
        assert_eq!(e.version, None);
        resp.props.etag = Some("W/\"abc\"".into());
        resp.props.collection = true;
        let e = to_entry("".into(), &resp);
        assert_eq!(e.name, "");
        assert_eq!(e.kind, EntryKind::Directory);
        assert_eq!(e.version, Some(Version::from_etag("abc")));
        resp.props.etag = Some("\"\"".into());
        assert_eq!(to_entry("x".into(), &resp).version, None);
    }
}
