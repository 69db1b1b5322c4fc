//! Write operations: streamed PUT, MKCOL, DELETE, MOVE and PROPPATCH of the modification time, with
//! what real servers make of them (see `docs/webdav-servers.md`).
//!
//! Choices that apply to all of them:
//! - Nothing that changes the server is repeated once the server may have acted on it
//!   ([`Retry::IfNotApplied`]): a second PUT could clobber a newer version, a second MKCOL, MOVE or
//!   DELETE would report "exists" or "not found" for our own first attempt. Only a refused
//!   connection, 429 and 503 are retried; a timeout or a connection lost mid-request is returned
//!   as the transient error it is, for the caller to retry (an upload retried after it did land is
//!   recognised, see [`DavRemote::upload_file`]).
//! - Statuses that mean different things per method and server (405, 409, 403, 500...) are read
//!   here, and the cases they hide are told apart by a PROPFIND (is the source there, is the
//!   parent there) rather than by guessing.
//! - Every operation returns the item as a Depth-0 PROPFIND describes it afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use super::propfind::{self, DavResponse, PROPFIND_ENTRY};
use super::{href, read, DavRemote, Depth};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Capabilities, Entry, EntryKind, GrowingFile, ItemId, Precondition, TransferProgress, Version};

/// Nextcloud and ownCloud keep the modification time given in this header with a PUT, and answer
/// `X-OC-MTime: accepted`; other servers ignore it.
const X_OC_MTIME: &str = "x-oc-mtime";
/// Chunk size when comparing a local file with the server's copy.
const COMPARE_CHUNK: u64 = 1 << 20;
/// How long a create waits for another client's create gate (see `DavRemote::create_gate`).
const GATE_WAIT: Duration = Duration::from_secs(10);
/// A create gate older than this was left by a client that stopped: taken over.
const GATE_STALE: Duration = Duration::from_secs(60);
/// How long a replace waits for another client's lock on the file to go.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How long a lock of ours lasts if we cannot release it (a crash).
const LOCK_TIMEOUT: &str = "Second-30";
/// An exclusive write lock, as RFC 4918 §9.10 asks for it.
const LOCK_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>"#,
    r#"<D:locktype><D:write/></D:locktype><D:owner>cloudmount</D:owner></D:lockinfo>"#
);

/// The property a server lets us set the modification time through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MtimeProp {
    /// `DAV:getlastmodified` as an HTTP date (WsgiDAV with `mutable_live_props`).
    GetLastModified,
    /// `DAV:lastmodified` as Unix seconds (Nextcloud and ownCloud, which refuse the former).
    OcLastModified,
}

/// What this mount has learnt about the server's write behaviour. `None` is "not known yet".
#[derive(Debug, Default)]
pub(super) struct CapState {
    /// Whether `If-Match`/`If-None-Match` on PUT are enforced (probed, see
    /// [`DavRemote::probe_capabilities`]).
    conditional: Option<bool>,
    /// Whether a modification time can be set (learnt from the first attempt).
    set_mtime: Option<bool>,
    /// The property that worked.
    mtime_prop: Option<MtimeProp>,
    /// The server answered `X-OC-MTime: accepted` to a PUT (Nextcloud, ownCloud).
    oc_mtime: bool,
    /// Whether LOCK gives a token (learnt from the first attempt).
    locks: Option<bool>,
}

fn method(name: &'static str) -> Method {
    // Valid tokens, so this cannot fail; fall back to a harmless method rather than panic.
    Method::from_bytes(name.as_bytes()).unwrap_or(Method::OPTIONS)
}

/// Names a write may create: what `lookup` can find.
fn check_name(name: &str) -> RemoteResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(RemoteError::Unsupported(format!("invalid name {name:?}")));
    }
    Ok(())
}

/// Whole seconds since the epoch, for times HTTP dates can carry.
fn unix_secs(t: SystemTime) -> Option<u64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    // HTTP dates end with year 9999.
    (secs < 253_402_300_800).then_some(secs)
}

fn header(value: &str) -> RemoteResult<HeaderValue> {
    HeaderValue::from_str(value).map_err(|e| RemoteError::Protocol(format!("bad header value {value:?}: {e}")))
}

fn oc_mtime_accepted(headers: &HeaderMap) -> bool {
    headers
        .get(X_OC_MTIME)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("accepted"))
}

/// The PROPPATCH body that sets the modification time through `prop`.
fn proppatch_body(prop: MtimeProp, secs: u64) -> String {
    let (name, value) = match prop {
        MtimeProp::GetLastModified => (
            "getlastmodified",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)),
        ),
        MtimeProp::OcLastModified => ("lastmodified", secs.to_string()),
    };
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>"#,
            "<D:{name}>{value}</D:{name}>",
            "</D:prop></D:set></D:propertyupdate>"
        ),
        name = name,
        value = value
    )
}

/// What to do after looking at the item an upload with `Matches` would replace.
enum BeforeReplace {
    /// Send the PUT with this condition on the version replaced.
    Put(ReplaceCondition),
    /// The server already holds exactly our bytes: nothing to send.
    Done(Entry),
}

/// How a replace names the version it replaces.
enum ReplaceCondition {
    /// `If-Match` with the strong form: what the server's ETag is, or what it is compared with.
    IfMatch,
    /// WebDAV's `If: (["etag"])` with the ETag exactly as the server gave it. For a weak ETag
    /// (Apache's for a second after each write), which never satisfies `If-Match` (RFC 9110
    /// §13.1.1 compares strongly): RFC 4918 §10.4 evaluates `If` state lists with the server's own
    /// entity-tag comparison, and mod_dav matches its weak ETag there and answers 412 to any
    /// other, atomically with the PUT (see docs/webdav-servers.md for what each server enforces).
    IfHeader(String),
    /// Under our lock: `If: <url> (<token> ["etag"])`, the token that lets the PUT through and the
    /// ETag (as the server gave it) the replaced version must still have. Tagged with the URL, as
    /// Apache applies an untagged list to the parent folder too.
    Locked {
        url: String,
        token: String,
        etag: Option<String>,
    },
}

impl ReplaceCondition {
    /// The lock to release after the PUT, if this condition holds one.
    fn held(&self) -> Option<(url::Url, String)> {
        match self {
            ReplaceCondition::Locked { url, token, .. } => Some((url::Url::parse(url).ok()?, token.clone())),
            _ => None,
        }
    }

    fn apply(self, req: HttpRequest, v: &Version) -> RemoteResult<HttpRequest> {
        Ok(match self {
            ReplaceCondition::IfMatch => req.header(IF_MATCH, header(&format!("\"{}\"", v.as_str()))?),
            ReplaceCondition::IfHeader(etag) => req.header(
                HeaderName::from_static("if"),
                header(&format!("([{}])", if_etag(&etag)))?,
            ),
            ReplaceCondition::Locked { url, token, etag } => {
                let etag = etag.map(|e| format!(" [{}]", if_etag(&e))).unwrap_or_default();
                req.header(
                    HeaderName::from_static("if"),
                    header(&format!("<{url}> ({token}{etag})"))?,
                )
            }
        })
    }
}

impl DavRemote {
    /// What this mount knows about the server so far: both are `false` until learnt (the probe for
    /// conditional writes runs before the first upload, or through
    /// [`DavRemote::probe_capabilities`]; `set_mtime` is learnt from the first attempt).
    pub(super) fn known_capabilities(&self) -> Capabilities {
        let caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        Capabilities {
            writes: true,
            conditional_writes: caps.conditional == Some(true),
            set_mtime: caps.set_mtime == Some(true),
            case_insensitive_names: false,
            kept_meta: self.kept_meta(),
        }
    }

    fn caps(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.caps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Find out now whether the server enforces conditional writes (see
    /// [`DavRemote::upload_file`]), probing in the share's root folder, and return what is known.
    /// The daemon may call this at mount time; otherwise it happens before the first upload.
    pub async fn probe_capabilities(&self) -> RemoteResult<Capabilities> {
        self.conditional_writes_in("").await?;
        Ok(self.known_capabilities())
    }

    /// Whether conditional PUTs are enforced, probing once (in folder `dir`) if not known yet.
    async fn conditional_writes_in(&self, dir: &str) -> RemoteResult<bool> {
        if let Some(known) = self.caps().conditional {
            return Ok(known);
        }
        let _one_probe_at_a_time = self.probe_lock.lock().await;
        if let Some(known) = self.caps().conditional {
            return Ok(known);
        }
        let verdict = self.probe_conditional(dir).await?;
        self.caps().conditional = Some(verdict);
        info!(
            server = %self.base,
            conditional_writes = verdict,
            "probed whether the server enforces If-Match"
        );
        Ok(verdict)
    }

    /// The probe: a PUT with `If-Match` of a made-up ETag to a name that does not exist. A server
    /// that enforces preconditions answers 412 and creates nothing. One that ignores them (rclone,
    /// nginx) creates the file, which is deleted at once; so does WsgiDAV, which checks `If-Match`
    /// only on existing items, so a replace there could recreate an item deleted meanwhile: "not
    /// enforced" is the honest verdict for it too. Transient failures give no verdict (`Err`).
    async fn probe_conditional(&self, dir: &str) -> RemoteResult<bool> {
        let tag: u64 = rand::random();
        let id = href::join(dir, &format!(".cloudmount-probe-{tag:016x}"));
        let url = href::item_url(&self.base, &id, false)?;
        let req = HttpRequest::new(Method::PUT, url.clone(), Retry::IfNotApplied)
            .header(IF_MATCH, header(&format!("\"cloudmount-probe-{tag:016x}\""))?)
            .body(Bytes::new())
            .accept_status(StatusCode::PRECONDITION_FAILED);
        let answer = self
            .http
            .execute(&req, |resp| async move {
                // The first request of a mount may be this one: learn the server's kind from it
                // (new files on Apache and nginx are created by a move).
                self.note_server(&resp);
                Ok(resp.status())
            })
            .await;
        match answer {
            Ok(StatusCode::PRECONDITION_FAILED) => Ok(true),
            Ok(status) => {
                debug!(%status, "the probe PUT with a made-up If-Match went through; deleting it");
                let del = HttpRequest::new(Method::DELETE, url, Retry::IfNotApplied);
                if let Err(e) = self.http.send(&del).await {
                    warn!(item = %id, error = %e, "could not delete the probe file; please remove it");
                }
                Ok(false)
            }
            Err(e)
                if e.is_transient() || matches!(e, RemoteError::NotFound | RemoteError::Http { status: 409, .. }) =>
            {
                Err(e)
            }
            Err(e) => {
                // Refused outright (403, 405...): no way to tell, so assume nothing.
                debug!(error = %e, "the conditional-write probe was refused");
                Ok(false)
            }
        }
    }

    /// Depth-0 PROPFIND that says `None` for a missing item.
    async fn stat_opt(&self, id: &str) -> RemoteResult<Option<(Entry, DavResponse)>> {
        match self.stat_id(id, PROPFIND_ENTRY).await {
            Ok(found) => Ok(Some(found)),
            Err(RemoteError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the parent folder of `id` is missing (then a write there fails with `NotFound`,
    /// whatever status the server chose for it).
    async fn parent_missing(&self, id: &str) -> RemoteResult<bool> {
        match href::parent_of(id) {
            None | Some("") => Ok(false),
            Some(parent) => Ok(self.stat_opt(parent).await?.is_none()),
        }
    }

    /// Log the errors a user must hear about with the item's name (DESIGN §7), and pass them on.
    fn note(&self, op: &str, id: &str, e: RemoteError) -> RemoteError {
        if matches!(
            e,
            RemoteError::Locked | RemoteError::InsufficientStorage | RemoteError::TooLarge
        ) {
            warn!(op, item = %id, error = %e, "the server refused a write");
        }
        e
    }

    /// Whether the server's file `entry` holds exactly the bytes of local file `source`. Reads it
    /// back in chunks (pinned to its version), stopping at the first difference.
    async fn same_content(&self, entry: &Entry, source: &Path) -> RemoteResult<bool> {
        let local_err = |e: std::io::Error| RemoteError::LocalFile(format!("{}: {e}", source.display()));
        let mut file = tokio::fs::File::open(source).await.map_err(local_err)?;
        let len = file.metadata().await.map_err(local_err)?.len();
        if entry.kind != EntryKind::File || entry.size != len {
            return Ok(false);
        }
        let url = href::item_url(&self.base, entry.id.as_str(), false)?;
        let mut offset = 0;
        let mut local = vec![0u8; COMPARE_CHUNK as usize];
        while offset < len {
            let want = COMPARE_CHUNK.min(len - offset);
            let remote = match read::read_range(&self.http, url.clone(), entry.version.as_ref(), offset, want).await {
                Ok(bytes) => bytes,
                Err(RemoteError::VersionChanged | RemoteError::NotFound) => return Ok(false),
                Err(e) => return Err(e),
            };
            let buf = &mut local[..want as usize];
            file.read_exact(buf).await.map_err(local_err)?;
            if remote.as_ref() != &buf[..] {
                return Ok(false);
            }
            offset += want;
        }
        Ok(true)
    }

    /// `Ok(entry)` when the server already holds our bytes, else `Err(conflict)`.
    async fn unless_same(&self, entry: Entry, source: &Path, conflict: RemoteError) -> RemoteResult<Entry> {
        if self.same_content(&entry, source).await? {
            debug!(item = %entry.id, "the server already holds exactly these bytes");
            Ok(entry)
        } else {
            Err(conflict)
        }
    }

    /// Look at the item a `Matches(v)` upload replaces: fail early on another version (sparing the
    /// upload), and cope with Apache's weak ETags, which never satisfy `If-Match`: Apache reports
    /// `W/"x"` for a second after each write. When the ETag is weak and equal to our base, the PUT
    /// carries `If: (["W/\"x\""])` instead, which Apache evaluates atomically with the PUT (two
    /// mounts replacing one weak version at once: one gets 412 and keeps a conflict copy).
    async fn before_replace(&self, id: &str, v: &Version, source: &Path) -> RemoteResult<BeforeReplace> {
        let Some((entry, resp)) = self.stat_opt(id).await? else {
            // Deleted since we saw it.
            return Err(RemoteError::PreconditionFailed);
        };
        if entry.kind != EntryKind::File {
            return Err(RemoteError::PreconditionFailed);
        }
        match &entry.version {
            // No ETag now: the server judges the If-Match.
            None => return Ok(BeforeReplace::Put(ReplaceCondition::IfMatch)),
            Some(current) if current != v => {
                return self
                    .unless_same(entry, source, RemoteError::PreconditionFailed)
                    .await
                    .map(BeforeReplace::Done);
            }
            Some(_) => {}
        }
        if let Some(locked) = self.replace_under_lock(id, v, resp.props.etag.as_deref()).await? {
            return Ok(locked);
        }
        match resp.props.etag.as_deref().map(str::trim) {
            Some(etag) if etag.starts_with("W/") => {
                debug!(item = %id, "weak ETag equal to our base; replacing with an If header");
                Ok(BeforeReplace::Put(ReplaceCondition::IfHeader(etag.to_string())))
            }
            _ => Ok(BeforeReplace::Put(ReplaceCondition::IfMatch)),
        }
    }

    /// Lock file `id` for a replace where the server has locks: while we hold the lock no other
    /// client can write it, so the ETag condition sent with our PUT is checked and the body put
    /// in place as one step (servers check `If-Match` and then write, which two PUTs at once can
    /// both pass: the in-process dav-server and Apache alike). `None` without locks. A LOCK
    /// that created the file (deleted meanwhile) removes it again and fails the precondition.
    /// Where the server ignores the ETag in the `If` header (nginx), the version is looked at
    /// again under the lock, which is then the whole protection.
    async fn replace_under_lock(
        &self,
        id: &str,
        v: &Version,
        etag: Option<&str>,
    ) -> RemoteResult<Option<BeforeReplace>> {
        let url = href::item_url(&self.base, id, false)?;
        let Some((token, created)) = self.lock_for_replace(&url).await? else {
            return Ok(None);
        };
        if created {
            if let Ok(value) = header(&format!("<{url}> ({token})")) {
                let del = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied)
                    .header(HeaderName::from_static("if"), value);
                if let Err(e) = self.http.send(&del).await {
                    warn!(item = %id, error = %e, "could not remove the empty file a LOCK created");
                }
            }
            self.unlock(&url, &token).await;
            return Err(RemoteError::PreconditionFailed);
        }
        if self.caps().conditional != Some(true) {
            let now = match self.stat_opt(id).await {
                Ok(now) => now,
                Err(e) => {
                    self.unlock(&url, &token).await;
                    return Err(e);
                }
            };
            if now.and_then(|(entry, _)| entry.version).as_ref() != Some(v) {
                debug!(item = %id, "the file changed before our lock; not replacing it");
                self.unlock(&url, &token).await;
                return Err(RemoteError::PreconditionFailed);
            }
        }
        Ok(Some(BeforeReplace::Put(ReplaceCondition::Locked {
            url: url.to_string(),
            token,
            etag: etag.map(|e| e.trim().to_string()),
        })))
    }

    /// Release the lock a replace took, if it took one.
    async fn release(&self, held: Option<(url::Url, String)>) {
        if let Some((url, token)) = held {
            self.unlock(&url, &token).await;
        }
    }

    /// Whether new files are made by a PUT to a temporary name and a MOVE with `Overwrite: F`
    /// (see [`Self::create_by_move`]): on Apache and nginx, recognised by their `Server` header.
    fn creates_by_move(&self) -> bool {
        self.creates_by_move.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Create `id` so that a file another client creates under the same name at the same moment
    /// is never overwritten. Apache checks `If-None-Match: *` when the PUT starts and puts the
    /// body in place when it ends, so two creates at once both pass and the later one wins;
    /// nginx ignores the header altogether. Both check `Overwrite: F` on a MOVE and rename at
    /// once, so the body goes to a temporary name in the same folder first and is then moved
    /// to its name, failing with `AlreadyExists` (412) when the name was taken meanwhile. The
    /// temporary file is removed whatever happens.
    async fn create_by_move(
        &self,
        parent: &ItemId,
        id: &str,
        source: &Path,
        mtime: SystemTime,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        let (tmp, tmp_url) = self.temp_name(parent)?;
        let put = HttpRequest::new(Method::PUT, tmp_url.clone(), Retry::IfNotApplied)
            .body_file(source)
            .count_sent(sent.clone())
            .header(IF_NONE_MATCH, HeaderValue::from_static("*"));
        if let Err(e) = self.http.send(&put).await {
            return Err(match e {
                RemoteError::Http { status: 409 | 500, .. } if self.parent_missing(id).await? => RemoteError::NotFound,
                e => self.note("upload", id, e),
            });
        }
        self.move_new_into_place(parent, id, &tmp, tmp_url, source, mtime).await
    }

    /// A temporary name for a new file's body in folder `parent`, and its URL.
    fn temp_name(&self, parent: &ItemId) -> RemoteResult<(String, url::Url)> {
        let tag: u64 = rand::random();
        let tmp = href::join(parent.as_str(), &format!(".cloudmount-new-{tag:016x}"));
        let url = href::item_url(&self.base, &tmp, false)?;
        Ok((tmp, url))
    }

    /// Move the new file uploaded to `tmp` to `id` without replacing anything (see
    /// [`Self::create_by_move`]); `source` holds the same bytes locally.
    async fn move_new_into_place(
        &self,
        parent: &ItemId,
        id: &str,
        tmp: &str,
        tmp_url: url::Url,
        source: &Path,
        mtime: SystemTime,
    ) -> RemoteResult<Entry> {
        let gate = self.create_gate(parent, id).await;
        let to = href::item_url(&self.base, id, false)?;
        let mv = HttpRequest::new(method("MOVE"), tmp_url.clone(), Retry::IfNotApplied)
            .header(HeaderName::from_static("destination"), header(to.as_str())?)
            .header(HeaderName::from_static("overwrite"), HeaderValue::from_static("F"))
            .accept_status(StatusCode::PRECONDITION_FAILED);
        // Under the gate, a name taken by anyone is seen here, and no other cloudmount create of it
        // runs at once.
        let taken_already = match &gate {
            Ok(_) => self.stat_opt(id).await.map(|found| found.is_some()),
            Err(()) => Ok(false),
        };
        let moved = match taken_already {
            Ok(true) => Ok(StatusCode::PRECONDITION_FAILED),
            Ok(false) => self.http.execute(&mv, |resp| async move { Ok(resp.status()) }).await,
            Err(e) => Err(e),
        };
        if let Ok(gate) = gate {
            self.open_gate(gate).await;
        }
        let taken = matches!(moved, Ok(StatusCode::PRECONDITION_FAILED));
        if taken || moved.is_err() {
            let del = HttpRequest::new(Method::DELETE, tmp_url, Retry::IfNotApplied);
            if let Err(e) = self.http.send(&del).await {
                warn!(item = %tmp, error = %e, "could not remove a temporary upload; please remove it");
            }
        }
        if taken {
            debug!(item = %id, "the name was taken while the new file went up");
            return match self.stat_opt(id).await? {
                Some((existing, _)) => {
                    let entry = self.unless_same(existing, source, RemoteError::AlreadyExists).await?;
                    self.finish_upload(id, mtime, false, Some(entry)).await
                }
                None => Err(RemoteError::AlreadyExists),
            };
        }
        moved.map_err(|e| self.note("upload", id, e))?;
        self.finish_upload(id, mtime, false, None).await
    }

    /// Serialise cloudmount's creates of one name across clients: a folder
    /// `.cloudmount-create-{hash of the name}` made by MKCOL, which is atomic on every server (a
    /// mkdir), where `Overwrite: F` is not (Apache checks for the destination and renames
    /// afterwards, and a loaded server lets another MOVE in between). Held only for a look and a
    /// MOVE; waits up to [`GATE_WAIT`] for another client's, and takes over one older than
    /// [`GATE_STALE`] (a client that died holding it). `Err` when it could not be had: the
    /// create then relies on `Overwrite: F` alone.
    async fn create_gate(&self, parent: &ItemId, id: &str) -> Result<url::Url, ()> {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes() {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        let gate = href::join(parent.as_str(), &format!(".cloudmount-create-{hash:016x}"));
        let Ok(url) = href::item_url(&self.base, &gate, true) else {
            return Err(());
        };
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        let mut refused_without_gate = 0;
        loop {
            // Apache answers 403 to the second of two MKCOLs at once (its mkdir failed), 405 to
            // one of an existing folder: either way, someone may hold the gate.
            let mut req = HttpRequest::new(method("MKCOL"), url.clone(), Retry::IfNotApplied);
            for held in [403, 405, 409, 423] {
                if let Ok(status) = StatusCode::from_u16(held) {
                    req = req.accept_status(status);
                }
            }
            match self.http.execute(&req, |resp| async move { Ok(resp.status()) }).await {
                Ok(status) if status.is_success() => return Ok(url),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "could not make the create gate; relying on Overwrite: F");
                    return Err(());
                }
            }
            match self.stat_opt(&gate).await {
                Ok(Some((held, _))) => {
                    let age = SystemTime::now().duration_since(held.mtime).unwrap_or_default();
                    if age > GATE_STALE {
                        warn!(gate = %gate, "removing a create gate left by a client that stopped");
                        let del = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied);
                        let _ = self.http.send(&del).await;
                        continue;
                    }
                }
                Ok(None) => {
                    // Released meanwhile, or the server refuses such folders: try again, a few
                    // times.
                    refused_without_gate += 1;
                    if refused_without_gate >= 3 {
                        debug!(gate = %gate, "the server refuses the create gate; relying on Overwrite: F");
                        return Err(());
                    }
                    continue;
                }
                Err(_) => return Err(()),
            }
            if started.elapsed() > GATE_WAIT {
                return Err(());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Remove a create gate of ours.
    async fn open_gate(&self, url: url::Url) {
        let del = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied);
        if let Err(e) = self.http.send(&del).await {
            warn!(gate = %url, error = %e, "could not remove a create gate; it is taken over after a minute");
        }
    }

    /// [`crate::remote::Remote::upload`] on WebDAV: one PUT streaming the file from disk, with a
    /// `Content-Length` and `X-OC-Mtime`.
    ///
    /// Preconditions: `Absent` sends `If-None-Match: *`; `Matches(v)` sends `If-Match: "v"` (strong
    /// form) after a look at the current item (see [`Self::before_replace`]); `Any` sends neither.
    /// On a server that ignores them (`capabilities().conditional_writes` false: rclone, nginx,
    /// WsgiDAV for deleted items) the same checks are made by a PROPFIND just before the PUT, which
    /// narrows the window for a lost update but cannot close it.
    ///
    /// Retries: the PUT is resent only when it cannot have been applied (refused connection, 429,
    /// 503), so a retry never overwrites a newer version. A PUT that fails ambiguously (timeout,
    /// connection lost after sending) is returned as a transient error; when the caller retries
    /// and the precondition fails (412, or the name exists for `Absent`) because that first PUT
    /// did land, the server's copy is compared with the local file and, if it holds exactly these
    /// bytes, the upload succeeds instead of reporting a conflict.
    ///
    /// The modification time is kept where the server allows: Nextcloud and ownCloud take
    /// `X-OC-Mtime`; elsewhere a PROPPATCH follows when the server lets us set it (see
    /// [`Self::set_mtime_inner`]); otherwise the server's own time stays.
    pub(super) async fn upload_file(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        mtime: SystemTime,
        precondition: Precondition,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        check_name(name)?;
        let id = href::join(parent.as_str(), name);
        let url = href::item_url(&self.base, &id, false)?;
        let conditional = match self.conditional_writes_in(parent.as_str()).await {
            Ok(known) => known,
            Err(e) => {
                debug!(error = %e, "no verdict on conditional writes yet; checking by hand");
                false
            }
        };
        // No Content-Type: servers that keep one would keep ours; without it they go by the name.
        let mut req = HttpRequest::new(Method::PUT, url, Retry::IfNotApplied)
            .body_file(source)
            .count_sent(sent.clone())
            .accept_status(StatusCode::PRECONDITION_FAILED)
            .accept_status(StatusCode::CONFLICT);
        if let Some(secs) = unix_secs(mtime) {
            req = req.header(HeaderName::from_static(X_OC_MTIME), HeaderValue::from(secs));
        }
        let mut held = None;
        match &precondition {
            Precondition::Absent => {
                if !conditional || self.creates_by_move() {
                    if let Some((existing, _)) = self.stat_opt(&id).await? {
                        let entry = self.unless_same(existing, source, RemoteError::AlreadyExists).await?;
                        return self.finish_upload(&id, mtime, false, Some(entry)).await;
                    }
                }
                if self.creates_by_move() {
                    return self.create_by_move(parent, &id, source, mtime, sent).await;
                }
                req = req.header(IF_NONE_MATCH, HeaderValue::from_static("*"));
            }
            Precondition::Matches(v) => match self.before_replace(&id, v, source).await? {
                BeforeReplace::Done(entry) => return self.finish_upload(&id, mtime, false, Some(entry)).await,
                BeforeReplace::Put(condition) => {
                    held = condition.held();
                    req = condition.apply(req, v)?;
                }
            },
            Precondition::Any => {}
        }

        let answer = self
            .http
            .execute(&req, |resp: Response| async move {
                Ok((resp.status(), oc_mtime_accepted(resp.headers())))
            })
            .await;
        self.release(held).await;
        let (status, oc_accepted) = match answer {
            Ok(answer) => answer,
            Err(RemoteError::NotFound) => return Err(RemoteError::NotFound),
            Err(e @ RemoteError::Http { status: 500, .. }) => {
                // nginx's answer to a PUT into a missing folder.
                return Err(if self.parent_missing(&id).await? {
                    RemoteError::NotFound
                } else {
                    e
                });
            }
            Err(e) => return Err(self.note("upload", &id, e)),
        };
        match status {
            StatusCode::PRECONDITION_FAILED => {
                let now = self.stat_opt(&id).await?;
                match (&precondition, now) {
                    (Precondition::Absent, Some((existing, _))) => {
                        let entry = self.unless_same(existing, source, RemoteError::AlreadyExists).await?;
                        self.finish_upload(&id, mtime, false, Some(entry)).await
                    }
                    // dav-server answers a create in a missing folder with 412.
                    (Precondition::Absent, None) if self.parent_missing(&id).await? => Err(RemoteError::NotFound),
                    (Precondition::Absent, None) => Err(RemoteError::AlreadyExists),
                    (_, Some((existing, _))) => {
                        let entry = self
                            .unless_same(existing, source, RemoteError::PreconditionFailed)
                            .await?;
                        self.finish_upload(&id, mtime, false, Some(entry)).await
                    }
                    (_, None) => Err(RemoteError::PreconditionFailed),
                }
            }
            StatusCode::CONFLICT => Err(if self.parent_missing(&id).await? {
                RemoteError::NotFound
            } else {
                RemoteError::Http {
                    status: 409,
                    message: format!("PUT {id}: 409 Conflict"),
                }
            }),
            _ => {
                if status == StatusCode::CREATED && matches!(precondition, Precondition::Matches(_)) {
                    warn!(item = %id, "the item was deleted on the server meanwhile; the upload created it again");
                }
                if oc_accepted {
                    let mut caps = self.caps();
                    if !caps.oc_mtime {
                        caps.oc_mtime = true;
                        // Nextcloud refuses getlastmodified but takes lastmodified: learn again.
                        if caps.set_mtime == Some(false) {
                            caps.set_mtime = None;
                        }
                    }
                }
                self.finish_upload(&id, mtime, oc_accepted, None).await
            }
        }
    }

    /// [`crate::remote::Remote::upload_growing`] on WebDAV: one PUT without a length (chunked
    /// transfer coding) whose body follows the writer, with the same preconditions as
    /// [`Self::upload_file`] but none of its checks by hand: those need the final content, so on
    /// servers that do not enforce preconditions, or when the item already differs from our base,
    /// this fails and the whole-file upload does the work. The modification time, known only at
    /// the seal, follows the PUT as in [`Self::finish_upload`].
    pub(super) async fn upload_growing_file(
        &self,
        parent: &ItemId,
        name: &str,
        file: &Arc<GrowingFile>,
        precondition: Precondition,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        check_name(name)?;
        if !self.conditional_writes_in(parent.as_str()).await? {
            return Err(RemoteError::Unsupported(
                "the server does not enforce preconditions; uploading the whole file at close".into(),
            ));
        }
        let id = href::join(parent.as_str(), name);
        if precondition == Precondition::Absent && self.creates_by_move() {
            // `If-None-Match: *` is checked when the PUT starts, so two new files of one name
            // streamed at once would both pass: stream to a temporary name, then move it into
            // place as `create_by_move` does.
            let (tmp, tmp_url) = self.temp_name(parent)?;
            let req = HttpRequest::new(Method::PUT, tmp_url.clone(), Retry::Once)
                .body_growing(file.clone())
                .count_sent(sent.clone());
            let answer = self.http.execute(&req, |_resp: Response| async move { Ok(()) }).await;
            let sealed = file.sealed();
            if answer.is_err() || sealed.is_none() {
                let del = HttpRequest::new(Method::DELETE, tmp_url.clone(), Retry::IfNotApplied);
                if let Err(e) = self.http.send(&del).await {
                    debug!(item = %tmp, error = %e, "could not remove a temporary upload");
                }
            }
            answer.map_err(|e| self.note("upload", &id, e))?;
            let Some((_, mtime)) = sealed else {
                return Err(RemoteError::Protocol(format!(
                    "PUT {id}: the server answered before the file was complete"
                )));
            };
            return self
                .move_new_into_place(parent, &id, &tmp, tmp_url, file.path(), mtime)
                .await;
        }
        let url = href::item_url(&self.base, &id, false)?;
        let mut req = HttpRequest::new(Method::PUT, url, Retry::Once)
            .body_growing(file.clone())
            .count_sent(sent.clone());
        let mut held = None;
        match &precondition {
            Precondition::Absent => req = req.header(IF_NONE_MATCH, HeaderValue::from_static("*")),
            Precondition::Matches(v) => match self.before_replace(&id, v, file.path()).await? {
                BeforeReplace::Put(condition) => {
                    held = condition.held();
                    req = condition.apply(req, v)?;
                }
                BeforeReplace::Done(_) => return Err(RemoteError::PreconditionFailed),
            },
            Precondition::Any => {}
        }
        let answer = self.http.execute(&req, |_resp: Response| async move { Ok(()) }).await;
        self.release(held).await;
        answer.map_err(|e| self.note("upload", &id, e))?;
        let Some((_, mtime)) = file.sealed() else {
            return Err(RemoteError::Protocol(format!(
                "PUT {id}: the server answered before the file was complete"
            )));
        };
        self.finish_upload(&id, mtime, false, None).await
    }

    /// After the content is on the server: set the modification time where the server lets us
    /// (not needed when it took `X-OC-Mtime`), and describe the item.
    async fn finish_upload(
        &self,
        id: &str,
        mtime: SystemTime,
        mtime_kept: bool,
        known: Option<Entry>,
    ) -> RemoteResult<Entry> {
        let wanted = unix_secs(mtime);
        let already = known.as_ref().is_some_and(|e| unix_secs(e.mtime) == wanted);
        if !mtime_kept && !already && wanted.is_some() && self.caps().set_mtime != Some(false) {
            match self.set_mtime_inner(id, mtime).await {
                Ok(entry) => return Ok(entry),
                Err(RemoteError::Unsupported(_)) => {}
                // The content is there; a failed mtime does not undo that.
                Err(e) => warn!(item = %id, error = %e, "uploaded, but could not set the modification time"),
            }
        }
        match known {
            Some(entry) => Ok(entry),
            None => Ok(self.stat_id(id, PROPFIND_ENTRY).await?.0),
        }
    }

    /// [`crate::remote::Remote::mkdir`] on WebDAV: MKCOL (with the trailing slash nginx needs).
    /// A PROPFIND comes first, because rclone answers 201 to a MKCOL of an existing folder: that
    /// keeps `AlreadyExists` honest there; elsewhere the server's 405 covers a race.
    pub(super) async fn make_dir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        check_name(name)?;
        let id = href::join(parent.as_str(), name);
        if self.stat_opt(&id).await?.is_some() {
            return Err(RemoteError::AlreadyExists);
        }
        let url = href::item_url(&self.base, &id, true)?;
        let req = HttpRequest::new(method("MKCOL"), url, Retry::IfNotApplied)
            .accept_status(StatusCode::METHOD_NOT_ALLOWED)
            .accept_status(StatusCode::CONFLICT);
        let status = self
            .http
            .execute(&req, |resp| async move { Ok(resp.status()) })
            .await
            .map_err(|e| self.note("mkdir", &id, e))?;
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                return Err(if self.stat_opt(&id).await?.is_some() {
                    RemoteError::AlreadyExists
                } else {
                    RemoteError::Http {
                        status: 405,
                        message: format!("MKCOL {id}: 405 Method Not Allowed"),
                    }
                });
            }
            // The parent is missing (RFC 4918 §9.3.1).
            StatusCode::CONFLICT => return Err(RemoteError::NotFound),
            _ => {}
        }
        Ok(self.stat_id(&id, PROPFIND_ENTRY).await?.0)
    }

    /// [`crate::remote::Remote::delete`] on WebDAV: DELETE, which removes a folder with all it
    /// holds. A 207 answer lists members that could not be deleted: that is a failure, reported
    /// with the first member's status, never a success.
    pub(super) async fn delete_item(&self, id: &ItemId) -> RemoteResult<()> {
        if id.as_str().is_empty() {
            return Err(RemoteError::Unsupported("refusing to delete the share's root".into()));
        }
        let mut collection = false;
        loop {
            let url = href::item_url(&self.base, id.as_str(), collection)?;
            let req = HttpRequest::new(Method::DELETE, url, Retry::IfNotApplied)
                .accept_status(StatusCode::CONFLICT)
                .accept_status(StatusCode::MULTI_STATUS);
            let base_segments = &self.base_segments;
            let outcome = self
                .http
                .execute(&req, |resp| async move {
                    if resp.status() != StatusCode::MULTI_STATUS {
                        return Ok(Ok(resp.status()));
                    }
                    Ok(Err(first_failure(resp, base_segments).await))
                })
                .await
                .map_err(|e| self.note("delete", id.as_str(), e))?;
            match outcome {
                // nginx wants the trailing slash on a folder.
                Ok(StatusCode::CONFLICT) if !collection => match self.stat_opt(id.as_str()).await? {
                    Some((e, _)) if e.kind == EntryKind::Directory => collection = true,
                    None => return Err(RemoteError::NotFound),
                    Some(_) => return Err(conflict("DELETE", id.as_str())),
                },
                Ok(StatusCode::CONFLICT) => return Err(conflict("DELETE", id.as_str())),
                Ok(_) => return Ok(()),
                Err(e) => return Err(self.note("delete", id.as_str(), e)),
            }
        }
    }

    /// [`crate::remote::Remote::delete_empty_folder`] on WebDAV: a folder is deleted only once it
    /// has been moved where nobody else can put anything into it, and found empty there.
    ///
    /// 1. `PROPFIND` depth 1: any member means `NotEmpty`.
    /// 2. `MOVE` the folder to a hidden name beside it (`.cloudmount-rmdir-…`, `Overwrite: F`).
    ///    Servers rename a folder in one step (rename(2)), so a file another client moves or
    ///    uploads into it either arrived before (and travels with it) or fails for want of the
    ///    folder; it can never arrive after the look below.
    /// 3. `PROPFIND` depth 1 of the hidden folder: a member that came in before the move means
    ///    `NotEmpty`, and the folder is moved back to its name.
    /// 4. `DELETE` of the hidden folder, which nobody else knows of.
    ///
    /// Neither a lock nor the collection's ETag closes the window between a look and a DELETE on
    /// every server (Apache checks them when a request starts and acts later; a loaded server
    /// can let another request through in between); the rename does. If the move back fails (a
    /// new folder took the name meanwhile), the folder and what it holds stay under the hidden
    /// name, and the log says so.
    pub(super) async fn delete_empty_dir(&self, id: &ItemId) -> RemoteResult<()> {
        let name = href::name_of(id.as_str()).to_string();
        if id.as_str().is_empty() || name.is_empty() {
            return Err(RemoteError::Unsupported("refusing to delete the share's root".into()));
        }
        let parent = ItemId::new(href::parent_of(id.as_str()).unwrap_or(""));
        if self.has_members(id.as_str()).await? {
            return Err(RemoteError::NotEmpty);
        }
        let tag: u64 = rand::random();
        let hidden_name = format!(".cloudmount-rmdir-{tag:016x}");
        let hidden = self.move_item(id, &parent, &hidden_name, false).await?;
        if self.has_members(hidden.id.as_str()).await? {
            if let Err(e) = self.move_item(&hidden.id, &parent, &name, false).await {
                warn!(folder = %id, kept_at = %hidden.id, error = %e,
                    "a file arrived in a folder being removed; it could not be moved back, and is kept under its hidden name");
            }
            return Err(RemoteError::NotEmpty);
        }
        self.delete_item(&hidden.id).await
    }

    /// Whether folder `id` holds anything (a Depth-1 PROPFIND).
    async fn has_members(&self, id: &str) -> RemoteResult<bool> {
        let url = href::item_url(&self.base, id, true)?;
        let listed = self.propfind(url, Depth::One, PROPFIND_ENTRY).await?;
        Ok(listed.iter().any(|(rid, _)| rid != id))
    }

    /// Take an exclusive write lock on `url` at `depth`: the token, and whether the LOCK created
    /// the resource (RFC 4918 §9.10.4: a LOCK of a missing name makes an empty one). `None` when
    /// the server has no locks (remembered), `Err(Locked)` when someone else holds one.
    async fn lock(&self, url: &url::Url, depth: &'static str) -> RemoteResult<Option<(String, bool)>> {
        if self.caps().locks == Some(false) {
            return Ok(None);
        }
        let mut req = HttpRequest::new(method("LOCK"), url.clone(), Retry::IfNotApplied)
            .header(HeaderName::from_static("depth"), HeaderValue::from_static(depth))
            .header(
                HeaderName::from_static("timeout"),
                HeaderValue::from_static(LOCK_TIMEOUT),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
            .body(LOCK_BODY);
        for refusal in [400, 403, 405, 409, 412, 415, 422, 501] {
            if let Ok(status) = StatusCode::from_u16(refusal) {
                req = req.accept_status(status);
            }
        }
        let answer = self
            .http
            .execute(&req, |resp| async move {
                let token = resp
                    .headers()
                    .get(HeaderName::from_static("lock-token"))
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string())
                    .filter(|v| v.starts_with('<') && v.ends_with('>'));
                Ok((resp.status(), token))
            })
            .await;
        match answer {
            Ok((status, Some(token))) if status.is_success() => {
                self.caps().locks = Some(true);
                Ok(Some((token, status == StatusCode::CREATED)))
            }
            Ok((status, _)) => {
                if self.caps().locks.is_none() {
                    info!(server = %self.base, %status, "the server does not lock items; going on without locks");
                }
                self.caps().locks = Some(false);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// [`Self::lock`] at depth 0 for a replace, waiting a little while another client holds a
    /// lock (its own replace, a few requests long); `Err(Locked)` after that, which the upload
    /// queue retries later.
    async fn lock_for_replace(&self, url: &url::Url) -> RemoteResult<Option<(String, bool)>> {
        let mut wait = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        loop {
            match self.lock(url, "0").await {
                Err(RemoteError::Locked) if waited < LOCK_WAIT => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    wait = (wait * 2).min(Duration::from_millis(800));
                }
                other => return other,
            }
        }
    }

    /// Release a lock of ours; best effort (it times out anyway).
    async fn unlock(&self, url: &url::Url, token: &str) {
        let Ok(value) = header(token) else { return };
        let req = HttpRequest::new(method("UNLOCK"), url.clone(), Retry::IfNotApplied)
            .header(HeaderName::from_static("lock-token"), value)
            .accept_status(StatusCode::NOT_FOUND)
            .accept_status(StatusCode::CONFLICT)
            .accept_status(StatusCode::BAD_REQUEST);
        if let Err(e) = self.http.send(&req).await {
            debug!(folder = %url, error = %e, "UNLOCK failed; the lock times out by itself");
        }
    }

    /// [`crate::remote::Remote::rename`] on WebDAV: MOVE with an absolute, segment-encoded
    /// `Destination`, `Overwrite: T` or `F`, and trailing slashes on folders.
    ///
    /// Replacing: WebDAV's `Overwrite: T` deletes whatever is at the destination first, a whole
    /// folder tree included. POSIX rename(2) replaces a folder only by a folder and only when it is
    /// empty. This method refuses, as a safety net, to replace a folder that is not empty
    /// (`AlreadyExists`, which rename(2) allows as EEXIST for that case), checked by a PROPFIND
    /// just before the MOVE; the kind rules (EISDIR/ENOTDIR) are the filesystem core's, which
    /// knows both kinds. The check and the MOVE are two requests: a file added to the target in
    /// between is lost with it; WebDAV offers nothing atomic here.
    pub(super) async fn move_item(
        &self,
        id: &ItemId,
        new_parent: &ItemId,
        new_name: &str,
        replace: bool,
    ) -> RemoteResult<Entry> {
        check_name(new_name)?;
        if id.as_str().is_empty() {
            return Err(RemoteError::Unsupported("cannot move the share's root".into()));
        }
        let new_id = href::join(new_parent.as_str(), new_name);
        let Some((source, _)) = self.stat_opt(id.as_str()).await? else {
            return Err(RemoteError::NotFound);
        };
        if new_id == id.as_str() {
            return Ok(source);
        }
        let is_dir = source.kind == EntryKind::Directory;
        if replace {
            let dest_url = href::item_url(&self.base, &new_id, false)?;
            match self.propfind(dest_url, Depth::One, PROPFIND_ENTRY).await {
                Ok(found) => {
                    let dest_is_dir = found.iter().any(|(rid, r)| *rid == new_id && r.props.collection);
                    if dest_is_dir && found.iter().any(|(rid, _)| *rid != new_id) {
                        return Err(RemoteError::AlreadyExists);
                    }
                }
                Err(RemoteError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let from = href::item_url(&self.base, id.as_str(), is_dir)?;
        let to = href::item_url(&self.base, &new_id, is_dir)?;
        let req = HttpRequest::new(method("MOVE"), from, Retry::IfNotApplied)
            .header(HeaderName::from_static("destination"), header(to.as_str())?)
            .header(
                HeaderName::from_static("overwrite"),
                HeaderValue::from_static(if replace { "T" } else { "F" }),
            )
            .accept_status(StatusCode::PRECONDITION_FAILED)
            .accept_status(StatusCode::CONFLICT);
        let answer = self.http.execute(&req, |resp| async move { Ok(resp.status()) }).await;
        match answer {
            Ok(StatusCode::PRECONDITION_FAILED) if !replace => return Err(RemoteError::AlreadyExists),
            Ok(StatusCode::PRECONDITION_FAILED) => return Err(RemoteError::PreconditionFailed),
            // 409: the destination's folder is missing (RFC 4918 §9.9.4), or (nginx) a folder
            // cannot replace a folder.
            Ok(StatusCode::CONFLICT) => {
                return Err(if self.parent_missing(&new_id).await? {
                    RemoteError::NotFound
                } else {
                    conflict("MOVE", id.as_str())
                });
            }
            Ok(_) => {}
            // rclone answers 403 for a missing source or destination folder, Apache 500 for the
            // latter: tell what is missing.
            Err(e @ (RemoteError::Forbidden(_) | RemoteError::Http { status: 500, .. })) => {
                if self.stat_opt(id.as_str()).await?.is_none() || self.parent_missing(&new_id).await? {
                    return Err(RemoteError::NotFound);
                }
                return Err(e);
            }
            Err(e) => return Err(self.note("rename", id.as_str(), e)),
        }
        match self.stat_opt(&new_id).await? {
            Some((entry, _)) => Ok(entry),
            None => {
                // WsgiDAV decodes the Destination before parsing it as a URL, so a `?` or `;` in
                // the new name cuts it short: the item is somewhere we did not ask for.
                warn!(from = %id, to = %new_id, "the server reported a successful move, but nothing is at the destination");
                Err(RemoteError::Protocol(format!(
                    "MOVE {id} to {new_id}: the server reported success but nothing is at the destination \
                     (some servers cut names at '?' or ';')"
                )))
            }
        }
    }

    /// [`crate::remote::Remote::set_mtime`] on WebDAV: PROPPATCH of `DAV:getlastmodified` (an HTTP
    /// date; WsgiDAV allows it when configured to), or on Nextcloud/ownCloud of `DAV:lastmodified`
    /// (Unix seconds). Success needs a 2xx for the property *and* the new time in a PROPFIND
    /// afterwards (to the second: HTTP dates have no fractions), since some servers say yes and
    /// keep their own time. A refusal is remembered (`capabilities().set_mtime` false) and any
    /// later call fails at once with `Unsupported`.
    pub(super) async fn set_mtime_inner(&self, id: &str, mtime: SystemTime) -> RemoteResult<Entry> {
        let Some(secs) = unix_secs(mtime) else {
            return Err(RemoteError::Unsupported(
                "modification times before 1970 or after 9999 cannot be sent".into(),
            ));
        };
        let forms = {
            let caps = self.caps();
            match (caps.set_mtime, caps.mtime_prop) {
                (Some(false), _) => {
                    return Err(RemoteError::Unsupported(
                        "this server does not let clients set modification times".into(),
                    ))
                }
                (_, Some(prop)) => vec![prop],
                _ if caps.oc_mtime => vec![MtimeProp::OcLastModified, MtimeProp::GetLastModified],
                _ => vec![MtimeProp::GetLastModified],
            }
        };
        for prop in forms {
            if !self.proppatch_mtime(id, prop, secs).await? {
                continue;
            }
            let (entry, _) = self.stat_id(id, PROPFIND_ENTRY).await?;
            if unix_secs(entry.mtime) == Some(secs) {
                let mut caps = self.caps();
                caps.set_mtime = Some(true);
                caps.mtime_prop = Some(prop);
                return Ok(entry);
            }
            debug!(item = %id, ?prop, "the server accepted the modification time but kept its own");
        }
        let mut caps = self.caps();
        if caps.set_mtime != Some(true) {
            if caps.set_mtime.is_none() {
                info!(server = %self.base, "the server does not let clients set modification times");
            }
            caps.set_mtime = Some(false);
        }
        Err(RemoteError::Unsupported(
            "this server does not let clients set modification times".into(),
        ))
    }

    /// One PROPPATCH; whether the server says it set the property.
    async fn proppatch_mtime(&self, id: &str, prop: MtimeProp, secs: u64) -> RemoteResult<bool> {
        let url = href::item_url(&self.base, id, false)?;
        let mut req = HttpRequest::idempotent(method("PROPPATCH"), url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
            .body(proppatch_body(prop, secs));
        for refusal in [400, 403, 405, 409, 422, 501] {
            if let Ok(status) = StatusCode::from_u16(refusal) {
                req = req.accept_status(status);
            }
        }
        self.http
            .execute(&req, |resp| async move {
                let status = resp.status();
                if status == StatusCode::MULTI_STATUS {
                    let body = futures::TryStreamExt::map_err(resp.bytes_stream(), std::io::Error::other);
                    let reader = tokio_util::io::StreamReader::new(body);
                    let mut statuses = Vec::new();
                    propfind::parse_multistatus(reader, |r| {
                        if let Some(s) = r.status {
                            statuses.push(s);
                        }
                        statuses.extend(r.propstat_statuses);
                        Ok(())
                    })
                    .await?;
                    Ok(!statuses.is_empty() && statuses.iter().all(|s| (200..300).contains(s)))
                } else {
                    // lighttpd answers 204; the PROPFIND that follows tells the truth.
                    Ok(status.is_success())
                }
            })
            .await
    }
}

/// An ETag as an `If` header's entity-tag: as the server gave it when it is in the HTTP form
/// (`"x"`, `W/"x"`), quoted when the server sent it bare (the in-process dav-server's `getetag`
/// is unquoted, and a bare value makes the whole header unparsable there).
fn if_etag(raw: &str) -> String {
    let raw = raw.trim();
    if raw.starts_with('"') || raw.starts_with("W/\"") {
        raw.to_string()
    } else {
        format!("\"{raw}\"")
    }
}

fn conflict(op: &str, id: &str) -> RemoteError {
    RemoteError::Http {
        status: 409,
        message: format!("{op} {id}: 409 Conflict"),
    }
}

/// The error of the first failed member in the 207 answer to a DELETE.
async fn first_failure(resp: Response, base_segments: &[String]) -> RemoteError {
    let request_path = resp.url().path().to_string();
    let body = futures::TryStreamExt::map_err(resp.bytes_stream(), std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(body);
    let mut failure: Option<(u16, String)> = None;
    let parsed = propfind::parse_multistatus(reader, |r| {
        let status = r.status.or(r.propstat_statuses.first().copied());
        if let Some(s) = status.filter(|s| !(200..300).contains(s)) {
            if failure.is_none() {
                let member = href::href_to_id(&r.href, base_segments, &request_path).unwrap_or(r.href);
                failure = Some((s, member));
            }
        }
        Ok(())
    })
    .await;
    match (failure, parsed) {
        (Some((status, member)), _) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let e = crate::http::status_error(code, &format!("DELETE (member {member})"), None);
            // A member that is already gone is no reason for the whole delete to fail, but the
            // server still kept the rest: report it as the server's error, not as "not found".
            match e {
                RemoteError::NotFound => RemoteError::Http {
                    status,
                    message: format!("DELETE: member {member} not found"),
                },
                e => e,
            }
        }
        (None, Err(e)) => e,
        (None, Ok(())) => RemoteError::Protocol("DELETE answered 207 without naming a failure".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(matches!(check_name(bad), Err(RemoteError::Unsupported(_))), "{bad:?}");
        }
        for good in ["a", "a b#%+ü", "...", ".hidden"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn if_header_etags() {
        assert_eq!(if_etag("\"a-1\""), "\"a-1\"");
        assert_eq!(if_etag(" W/\"a-1\" "), "W/\"a-1\"");
        assert_eq!(if_etag("98c15a-4-661f"), "\"98c15a-4-661f\"");
    }

    #[test]
    fn times() {
        assert_eq!(unix_secs(UNIX_EPOCH), Some(0));
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1500)), Some(1));
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_secs(300_000_000_000)), None);
    }

    #[test]
    fn proppatch_bodies() {
        let b = proppatch_body(MtimeProp::GetLastModified, 784_111_777);
        assert!(
            b.contains("<D:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</D:getlastmodified>"),
            "{b}"
        );
        assert!(b.contains(r#"xmlns:D="DAV:""#));
        let b = proppatch_body(MtimeProp::OcLastModified, 784_111_777);
        assert!(b.contains("<D:lastmodified>784111777</D:lastmodified>"), "{b}");
    }

    #[test]
    fn oc_mtime_header() {
        let mut h = HeaderMap::new();
        assert!(!oc_mtime_accepted(&h));
        h.insert(X_OC_MTIME, HeaderValue::from_static(" Accepted "));
        assert!(oc_mtime_accepted(&h));
        h.insert(X_OC_MTIME, HeaderValue::from_static("nope"));
        assert!(!oc_mtime_accepted(&h));
    }
}
