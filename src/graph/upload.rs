//! Uploads (Microsoft Graph docs: "Upload or replace the contents of a driveItem", "Upload large files with an upload session"): a simple `PUT …:/{name}:/content` up to 4 MiB (always for
//! 0-byte files), an upload session above it.
//!
//! Sessions: fragments are a multiple of 320 KiB and under 60 MiB ([`fragment_size`]), each streamed
//! from the staged file, sent in order to the pre-authenticated `uploadUrl` without our token.
//! After a fragment fails (5xx, 416, timeout, lost connection, throttling) the session is asked for
//! `nextExpectedRanges` and the upload carries on from there; nothing goes again from zero. A
//! session that is gone (404 or 401 from its URL, or expired) is replaced by a new one. The session
//! URL is kept in the caller's [`ResumeSlot`] (the upload journal), so a restarted daemon carries
//! on mid-file; a session given up on is deleted.
//!
//! Preconditions:
//! - `Absent`: `conflictBehavior=fail`; a taken name is 409 `nameAlreadyExists` → `AlreadyExists`.
//! - `Any`: `conflictBehavior=replace`.
//! - `Matches(v)`: our version of a file is its cTag (content only), but Graph's `If-Match` is
//!   documented with the eTag (§6.1; §5 allows either, real services differ). So the item is read
//!   first: a cTag other than `v` (or no item) is `PreconditionFailed` at once; otherwise the upload
//!   carries `If-Match` with the eTag just read, which the server checks atomically (at session
//!   creation and again at commit). A metadata-only change (rename) between the read and the write
//!   makes it fail too: a harmless, rare extra conflict copy, never a silent overwrite. Before giving
//!   up, a mismatch whose server content is exactly ours (same size and quickXorHash: our earlier
//!   attempt landed but its answer was lost) counts as done.
//!
//! Modification time: sessions carry `fileSystemInfo.lastModifiedDateTime`; a simple PUT cannot, and
//! Graph sets the time to "now" on a content change (§2), so a PATCH of `fileSystemInfo` follows it.
//! That PATCH carries `If-Match` with the eTag the PUT answered: another device's change landing
//! between the two is a conflict (`PreconditionFailed`, so the queue keeps both versions), never
//! something we stamp with our time and then overwrite (see `keep_time`).
//!
//! Integrity: bytes are hashed (quickXorHash) as the connection takes them, once each whatever
//! retries happen, and the part a resumed upload did not send is read from the staged file. When
//! the server reports a `quickXorHash` for the item our upload produced, it must match; a mismatch
//! uploads once more, on the precondition that the server still holds exactly that item (a
//! foreign change in between is then a conflict too), then is an error.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, info, warn};
use url::Url;

use super::client::GraphResponse;
use super::error::{decode_error, DECODED_STATUSES};
use super::item::{DriveItem, ITEM_SELECT};
use super::names::check_name;
use super::path::with_query;
use super::quickxor::Watermark;
use super::GraphRemote;
use crate::error::{RemoteError, RemoteResult};
use crate::http::{BodyObserver, HttpRequest, Retry};
use crate::remote::{Entry, ItemId, Precondition, ResumeSlot, TransferProgress};

/// Largest file sent by a simple PUT (A1: 4 MiB is safe everywhere).
pub const SIMPLE_UPLOAD_MAX: u64 = 4 << 20;
/// Non-final fragments are multiples of this (320 KiB).
pub const FRAGMENT_ALIGN: u64 = 327_680;
/// The largest multiple of 320 KiB under 60 MiB (A7).
pub const MAX_FRAGMENT: u64 = 62_586_880;
/// Failed fragments in a row (without progress) before an attempt gives up and leaves the rest to
/// the upload queue's next attempt (which resumes the same session).
const FRAGMENT_RETRIES: u32 = 5;
/// New sessions one attempt may start after sessions went away under it.
const NEW_SESSIONS: u32 = 3;

/// The fragment size used for `configured`: a multiple of 320 KiB within the limits.
pub fn fragment_size(configured: u64) -> u64 {
    (configured / FRAGMENT_ALIGN * FRAGMENT_ALIGN).clamp(FRAGMENT_ALIGN, MAX_FRAGMENT)
}

/// What the resume token holds: the session and what it uploads, so that a token for another
/// target (a conflict copy's new name) is never used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SessionToken {
    graph_upload_session: String,
    drive: String,
    parent: String,
    name: String,
    size: u64,
}

impl SessionToken {
    fn parse(v: &Value) -> Option<SessionToken> {
        serde_json::from_value(v.clone()).ok()
    }

    fn value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `2024-03-02T11:29:40.123Z` (times before 1970 become the epoch).
pub fn fmt_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The server's quickXorHash of a file item, when it gives one.
fn server_hash(item: &DriveItem) -> Option<&str> {
    item.file.as_ref()?.get("hashes")?.get("quickXorHash")?.as_str()
}

/// Whether two answers about one item describe the same content: the same size and quickXorHash
/// when both carry a hash, else the same content version (cTag; metadata changes leave it alone).
fn same_content(a: &DriveItem, b: &DriveItem) -> bool {
    match (server_hash(a), server_hash(b)) {
        (Some(x), Some(y)) => x == y && a.size == b.size,
        _ => a.version() == b.version(),
    }
}

/// First offset of `nextExpectedRanges` (`"123-"` or `"123-456"`); `None` when the list is empty.
fn next_expected(v: &Value) -> RemoteResult<Option<u64>> {
    let Some(list) = v.get("nextExpectedRanges").and_then(Value::as_array) else {
        return Err(RemoteError::Protocol(
            "upload session status without nextExpectedRanges".into(),
        ));
    };
    let Some(first) = list.iter().filter_map(Value::as_str).next() else {
        return Ok(None);
    };
    first
        .split('-')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| RemoteError::Protocol(format!("bad nextExpectedRanges entry {first:?}")))
}

/// The session URL no longer leads anywhere: start another.
fn session_gone(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::NotFound | RemoteError::Unauthorized(_) | RemoteError::Http { status: 410, .. }
    )
}

/// Worth asking the session where it stands and carrying on.
fn resumable(e: &RemoteError) -> bool {
    e.is_transient() || matches!(e, RemoteError::Http { status: 416, .. })
}

/// How a fragment loop ended without the item.
enum Broke {
    /// The session went away: start a new one.
    Gone(RemoteError),
    /// Try again later with the same session (it stays in the resume slot).
    Later(RemoteError),
    /// The server refused the upload itself (conflict, quota, lock...): the session is dropped.
    Refused(RemoteError),
}

/// What a precondition comes to on the wire.
enum Plan {
    Send {
        conflict: &'static str,
        if_match: Option<String>,
    },
    /// The server already holds exactly our content.
    Done(Box<DriveItem>),
}

type Hasher = Arc<Mutex<Watermark>>;

fn observer(hasher: &Hasher, sent: &TransferProgress) -> BodyObserver {
    let (hasher, sent) = (hasher.clone(), sent.clone());
    BodyObserver(Arc::new(move |offset, chunk| {
        hasher.lock().unwrap_or_else(|p| p.into_inner()).saw(offset, chunk);
        sent.set(offset + chunk.len() as u64);
    }))
}

/// The quickXorHash of the whole staged file, from what was hashed in flight plus the rest read
/// from disk.
async fn local_hash(hasher: &Hasher, source: &Path, size: u64) -> RemoteResult<String> {
    let (hasher, path) = (hasher.clone(), source.to_path_buf());
    tokio::task::spawn_blocking(move || {
        hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fill_from(&path, size)
            .map_err(|e| RemoteError::LocalFile(format!("{}: {e}", path.display())))
    })
    .await
    .map_err(|e| RemoteError::LocalFile(format!("hashing {}: {e}", source.display())))?
}

impl GraphRemote {
    /// Upload `source` as child `name` of `parent`; see the module doc.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upload_file(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        mtime: SystemTime,
        precondition: Precondition,
        sent: &TransferProgress,
        resume: &ResumeSlot,
    ) -> RemoteResult<Entry> {
        check_name(name)?;
        let size = tokio::fs::metadata(source)
            .await
            .map_err(|e| RemoteError::LocalFile(format!("{}: {e}", source.display())))?
            .len();
        let mut precondition = precondition;
        for round in 0..2 {
            let hasher: Hasher = Arc::new(Mutex::new(Watermark::new()));
            let item = if size <= SIMPLE_UPLOAD_MAX {
                if let Some(token) = resume.get() {
                    self.discard_token(&token).await;
                    resume.set(None);
                }
                match self.plan(parent, name, source, size, &precondition).await? {
                    Plan::Done(item) => *item,
                    Plan::Send { conflict, if_match } => {
                        self.simple_put(parent, name, source, mtime, conflict, if_match, sent, &hasher)
                            .await?
                    }
                }
            } else {
                self.session_upload(parent, name, source, size, mtime, &precondition, sent, resume, &hasher)
                    .await?
            };
            sent.set(size);
            let local = local_hash(&hasher, source, size).await?;
            match server_hash(&item) {
                Some(remote) if remote != local => {
                    warn!(file = name, local = %local, server = %remote, round,
                        "the server's quickXorHash differs from the local file's");
                    if round == 0 {
                        // Replace exactly what we just wrote.
                        precondition = match item.version() {
                            Some(v) => Precondition::Matches(v),
                            None => Precondition::Any,
                        };
                        continue;
                    }
                    return Err(RemoteError::Protocol(format!(
                        "{name}: the server's copy has quickXorHash {remote}, the local file {local}"
                    )));
                }
                Some(_) => debug!(file = name, "quickXorHash matches"),
                None => debug!(file = name, "no quickXorHash from the server; not checked"),
            }
            return self.entry_of(&item);
        }
        unreachable!("the loop returns")
    }

    fn entry_of(&self, item: &DriveItem) -> RemoteResult<Entry> {
        item.to_entry()
            .ok_or_else(|| RemoteError::Protocol(format!("Graph answered an upload with a non-file item {}", item.id)))
    }

    /// The driveItem at child `name` of `parent`, or `None`.
    async fn child_item(&self, parent: &ItemId, name: &str) -> RemoteResult<Option<DriveItem>> {
        self.item_at(self.urls.child(&self.drive.id, parent.as_str(), name, "")?)
            .await
    }

    /// The driveItem at item URL `url` (its upload-relevant fields), or `None` when there is none.
    async fn item_at(&self, url: url::Url) -> RemoteResult<Option<DriveItem>> {
        match self
            .client
            .get_json::<DriveItem>(with_query(url, &[("$select", ITEM_SELECT)]))
            .await
        {
            Ok(item) => Ok(Some(item)),
            Err(RemoteError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn plan(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        size: u64,
        precondition: &Precondition,
    ) -> RemoteResult<Plan> {
        let want = match precondition {
            Precondition::Absent => {
                return Ok(Plan::Send {
                    conflict: "fail",
                    if_match: None,
                })
            }
            Precondition::Any => {
                return Ok(Plan::Send {
                    conflict: "replace",
                    if_match: None,
                })
            }
            Precondition::Matches(v) => v,
        };
        let Some(item) = self.child_item(parent, name).await? else {
            debug!(file = name, "the item we based our change on is gone from the server");
            return Err(RemoteError::PreconditionFailed);
        };
        if item.version().as_ref() == Some(want) {
            return Ok(Plan::Send {
                conflict: "replace",
                if_match: item.e_tag.clone(),
            });
        }
        if item.size == Some(size as i64) {
            if let Some(remote) = server_hash(&item) {
                // Hash into a scratch state: this one must stay empty for the upload.
                let scratch: Hasher = Arc::new(Mutex::new(Watermark::new()));
                if local_hash(&scratch, source, size).await? == remote {
                    info!(
                        file = name,
                        "the server already holds this content (an earlier attempt landed)"
                    );
                    return Ok(Plan::Done(Box::new(item)));
                }
            }
        }
        debug!(file = name, ours = ?want, server = ?item.version(), "the server holds another version");
        Err(RemoteError::PreconditionFailed)
    }

    /// `PUT …/items/{parent}:/{name}:/content`, then the modification time.
    #[allow(clippy::too_many_arguments)]
    async fn simple_put(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        mtime: SystemTime,
        conflict: &str,
        if_match: Option<String>,
        sent: &TransferProgress,
        hasher: &Hasher,
    ) -> RemoteResult<DriveItem> {
        let url = with_query(
            self.urls.child(&self.drive.id, parent.as_str(), name, "/content")?,
            &[("@microsoft.graph.conflictBehavior", conflict)],
        );
        sent.set(0);
        // A repeated PUT could replace a version written in between: only sent again when the
        // first provably never reached the server (and the If-Match guards replaces anyway).
        let mut req = HttpRequest::new(Method::PUT, url, Retry::IfNotApplied)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            .body_file(source)
            .observe_body(observer(hasher, sent));
        if let Some(tag) = &if_match {
            req = req.header(IF_MATCH, header_value(tag)?);
        }
        let put: DriveItem = self.client.authorized(&req).await?.json("PUT content")?;
        self.keep_time(name, put, mtime).await
    }

    /// Graph sets the time to "now" on a content change: put ours back on the item a simple PUT
    /// just wrote (`put`, its answer). The PATCH carries `If-Match` with the eTag of that answer,
    /// so another device's change that lands in between is not stamped with our time and then
    /// taken for a corrupt upload of ours (which the next round would overwrite): it is
    /// `PreconditionFailed`, and the upload queue keeps ours as a conflict copy, theirs at the
    /// name. A 412 is not retried blindly: the item is read, and only when it still holds the
    /// content we wrote (a metadata change, or our own PATCH whose answer was lost) is the time
    /// set once more, on the eTag just read. Any other failure only costs the time.
    async fn keep_time(&self, name: &str, put: DriveItem, mtime: SystemTime) -> RemoteResult<DriveItem> {
        let foreign = || {
            warn!(
                file = name,
                "another change replaced the file right after our upload; keeping both versions"
            );
            Err(RemoteError::PreconditionFailed)
        };
        let mut current = put.clone();
        for attempt in 0..2 {
            match self.patch_fs_time(&put.id, mtime, current.e_tag.as_deref()).await {
                Ok(mut patched) => {
                    // Only the metadata may have changed since the PUT (a server that ignores
                    // If-Match would show someone else's content here).
                    if !same_content(&patched, &put) {
                        return foreign();
                    }
                    if patched.file.is_none() {
                        patched.file = put.file.clone();
                    }
                    return Ok(patched);
                }
                Err(RemoteError::PreconditionFailed) | Err(RemoteError::NotFound) => {
                    match self.item_by_id(&put.id).await {
                        Ok(Some(now)) if same_content(&now, &put) && attempt == 0 => {
                            debug!(
                                file = name,
                                "only the metadata changed since our upload; setting the time again"
                            );
                            current = now;
                        }
                        Ok(Some(now)) if same_content(&now, &put) => return Ok(now),
                        Ok(_) => return foreign(),
                        Err(e) => {
                            warn!(file = name, error = %e, "uploaded, but cannot tell whether it is still ours");
                            return Ok(put);
                        }
                    }
                }
                Err(e) => {
                    warn!(file = name, error = %e, "uploaded, but the modification time could not be kept");
                    return Ok(put);
                }
            }
        }
        Ok(current)
    }

    /// The driveItem with id `id`, or `None` when it is gone.
    async fn item_by_id(&self, id: &str) -> RemoteResult<Option<DriveItem>> {
        self.item_at(self.urls.item(&self.drive.id, id, "")?).await
    }

    /// `PATCH` the item's `fileSystemInfo.lastModifiedDateTime`, on eTag `if_match` when given.
    /// Repeating it is harmless: a repeat whose first attempt landed meets a new eTag (412),
    /// which `keep_time` reads as "still ours".
    pub(super) async fn patch_fs_time(
        &self,
        id: &str,
        mtime: SystemTime,
        if_match: Option<&str>,
    ) -> RemoteResult<DriveItem> {
        self.patch_file_system_info(id, Some(mtime), None, if_match).await
    }

    /// A request to a pre-authenticated URL (never our token), answered with Graph's JSON: the
    /// body of a success, or the decoded error.
    async fn preauth(&self, req: HttpRequest) -> RemoteResult<GraphResponse> {
        let mut req = req.header(ACCEPT, HeaderValue::from_static("application/json"));
        for s in DECODED_STATUSES {
            if let Ok(status) = StatusCode::from_u16(*s) {
                req = req.accept_status(status);
            }
        }
        let context = format!("{} upload session", req.method());
        self.client
            .preauthenticated(&req, |resp| {
                let context = context.clone();
                async move {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = super::client::read_json_body(resp, &context).await?;
                    if status.is_success() {
                        Ok(GraphResponse { status, headers, body })
                    } else {
                        Err(decode_error(status, &headers, &body, &context))
                    }
                }
            })
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn session_upload(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        size: u64,
        mtime: SystemTime,
        precondition: &Precondition,
        sent: &TransferProgress,
        resume: &ResumeSlot,
        hasher: &Hasher,
    ) -> RemoteResult<DriveItem> {
        let mut new_sessions = 0;
        loop {
            let (url, offset) = match self.resume_session(resume, parent, name, size).await? {
                Some(found) => found,
                None => {
                    new_sessions += 1;
                    if new_sessions > NEW_SESSIONS {
                        return Err(RemoteError::Protocol(format!(
                            "{name}: upload sessions kept disappearing; will try again later"
                        )));
                    }
                    let (conflict, if_match) = match self.plan(parent, name, source, size, precondition).await? {
                        Plan::Done(item) => return Ok(*item),
                        Plan::Send { conflict, if_match } => (conflict, if_match),
                    };
                    let url = self
                        .create_session(parent, name, size, mtime, conflict, if_match.as_deref())
                        .await?;
                    resume.set(Some(
                        SessionToken {
                            graph_upload_session: url.to_string(),
                            drive: self.drive.id.clone(),
                            parent: parent.as_str().to_string(),
                            name: name.to_string(),
                            size,
                        }
                        .value(),
                    ));
                    (url, 0)
                }
            };
            match self.send_fragments(&url, source, size, offset, sent, hasher).await {
                Ok(item) => {
                    resume.set(None);
                    return Ok(item);
                }
                Err(Broke::Gone(e)) => {
                    resume.set(None);
                    // The last fragment may have been committed with only its answer lost.
                    if hasher.lock().unwrap_or_else(|p| p.into_inner()).upto() == size {
                        if let Some(item) = self.landed(parent, name, source, size, hasher).await? {
                            return Ok(item);
                        }
                    }
                    info!(file = name, error = %e, "the upload session is gone; starting a new one");
                }
                Err(Broke::Later(e)) => return Err(e),
                Err(Broke::Refused(e)) => {
                    self.cancel_session(&url).await;
                    resume.set(None);
                    return Err(e);
                }
            }
        }
    }

    /// The item at `name` when it holds exactly our content.
    async fn landed(
        &self,
        parent: &ItemId,
        name: &str,
        source: &Path,
        size: u64,
        hasher: &Hasher,
    ) -> RemoteResult<Option<DriveItem>> {
        let Some(item) = self.child_item(parent, name).await? else {
            return Ok(None);
        };
        if item.size != Some(size as i64) {
            return Ok(None);
        }
        let Some(remote) = server_hash(&item) else {
            return Ok(None);
        };
        Ok((local_hash(hasher, source, size).await? == remote).then_some(item))
    }

    /// The session in the slot, if it is for this upload and still alive, with the offset to go on
    /// from. A token for something else is dropped (and its session deleted).
    async fn resume_session(
        &self,
        resume: &ResumeSlot,
        parent: &ItemId,
        name: &str,
        size: u64,
    ) -> RemoteResult<Option<(Url, u64)>> {
        let Some(value) = resume.get() else { return Ok(None) };
        let token = SessionToken::parse(&value);
        let url = token.as_ref().and_then(|t| Url::parse(&t.graph_upload_session).ok());
        let (Some(token), Some(url)) = (token, url) else {
            resume.set(None);
            return Ok(None);
        };
        if token.drive != self.drive.id || token.parent != parent.as_str() || token.name != name || token.size != size {
            debug!(file = name, "the resume token is for another upload; dropping it");
            self.cancel_session(&url).await;
            resume.set(None);
            return Ok(None);
        }
        match self.session_status(&url).await {
            Ok(Some(offset)) if offset < size => {
                info!(file = name, offset, size, "resuming the upload session");
                Ok(Some((url, offset)))
            }
            Ok(_) => {
                // Every byte arrived but nothing was committed (a commit that failed): start over.
                self.cancel_session(&url).await;
                resume.set(None);
                Ok(None)
            }
            Err(e) if session_gone(&e) => {
                debug!(file = name, error = %e, "the saved upload session is gone");
                resume.set(None);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn create_session(
        &self,
        parent: &ItemId,
        name: &str,
        size: u64,
        mtime: SystemTime,
        conflict: &str,
        if_match: Option<&str>,
    ) -> RemoteResult<Url> {
        let url = self
            .urls
            .child(&self.drive.id, parent.as_str(), name, "/createUploadSession")?;
        let body = json!({ "item": {
            "@microsoft.graph.conflictBehavior": conflict,
            "name": name,
            "fileSize": size,
            "fileSystemInfo": { "lastModifiedDateTime": fmt_time(mtime) },
        }});
        let bytes = serde_json::to_vec(&body).map_err(|e| RemoteError::Protocol(format!("cannot encode JSON: {e}")))?;
        // A second session is harmless (the first expires unused).
        let mut req = HttpRequest::new(Method::POST, url, Retry::Idempotent)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(bytes);
        if let Some(tag) = if_match {
            req = req.header(IF_MATCH, header_value(tag)?);
        }
        let v: Value = self.client.authorized(&req).await?.json("createUploadSession")?;
        let raw = v
            .get("uploadUrl")
            .and_then(Value::as_str)
            .ok_or_else(|| RemoteError::Protocol("createUploadSession gave no uploadUrl".into()))?;
        Url::parse(raw).map_err(|e| RemoteError::Protocol(format!("bad uploadUrl: {e}")))
    }

    /// `GET uploadUrl`: where the session wants the next byte (`None`: it has them all).
    async fn session_status(&self, url: &Url) -> RemoteResult<Option<u64>> {
        let resp = self.preauth(HttpRequest::idempotent(Method::GET, url.clone())).await?;
        next_expected(&resp.json("upload session status")?)
    }

    /// `DELETE uploadUrl`, best effort.
    async fn cancel_session(&self, url: &Url) {
        match self.preauth(HttpRequest::idempotent(Method::DELETE, url.clone())).await {
            Ok(_) | Err(RemoteError::NotFound) => debug!("upload session deleted"),
            Err(e) => debug!(error = %e, "cannot delete an upload session; it expires by itself"),
        }
    }

    /// Delete the session a resume token names, best effort.
    pub(super) async fn discard_token(&self, token: &Value) {
        if let Some(url) = SessionToken::parse(token).and_then(|t| Url::parse(&t.graph_upload_session).ok()) {
            self.cancel_session(&url).await;
        }
    }

    /// Send the fragments from `offset` to the end.
    async fn send_fragments(
        &self,
        url: &Url,
        source: &Path,
        size: u64,
        mut offset: u64,
        sent: &TransferProgress,
        hasher: &Hasher,
    ) -> Result<DriveItem, Broke> {
        let mut failures = 0u32;
        loop {
            let len = self.fragment.min(size - offset);
            sent.set(offset);
            let req = HttpRequest::new(Method::PUT, url.clone(), Retry::Once)
                .header(
                    CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {offset}-{}/{size}", offset + len - 1))
                        .map_err(|e| Broke::Refused(RemoteError::Protocol(e.to_string())))?,
                )
                .body_file_range(source, offset, len)
                .observe_body(observer(hasher, sent));
            let error = match self.preauth(req).await {
                Ok(resp) if resp.status == StatusCode::ACCEPTED => {
                    match resp.json::<Value>("upload fragment").and_then(|v| next_expected(&v)) {
                        Ok(Some(next)) if next > offset && next < size => {
                            offset = next;
                            failures = 0;
                            continue;
                        }
                        Ok(_) | Err(_) => {
                            RemoteError::Protocol("unexpected nextExpectedRanges after a fragment".into())
                        }
                    }
                }
                Ok(resp) => return resp.json::<DriveItem>("upload commit").map_err(Broke::Refused),
                Err(e) => e,
            };
            if session_gone(&error) {
                return Err(Broke::Gone(error));
            }
            if !(resumable(&error) || matches!(error, RemoteError::Protocol(_) | RemoteError::LocalFile(_))) {
                return Err(Broke::Refused(error));
            }
            if matches!(error, RemoteError::LocalFile(_)) {
                return Err(Broke::Later(error));
            }
            failures += 1;
            warn!(offset, len, failures, error = %error, "upload fragment failed; asking the session where to go on");
            if failures > FRAGMENT_RETRIES {
                return Err(Broke::Later(error));
            }
            if !matches!(error, RemoteError::Throttled { .. }) {
                tokio::time::sleep(self.client.http().policy().backoff(failures)).await;
            }
            match self.session_status(url).await {
                Ok(Some(next)) if next < size => offset = next,
                Ok(_) => return Err(Broke::Gone(error)),
                Err(e) if session_gone(&e) => return Err(Broke::Gone(e)),
                Err(e) => return Err(Broke::Later(e)),
            }
        }
    }
}

fn header_value(v: &str) -> RemoteResult<HeaderValue> {
    HeaderValue::from_str(v).map_err(|e| RemoteError::Protocol(format!("bad header value {v:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fragment_sizes_are_aligned_and_bounded() {
        assert_eq!(fragment_size(10 << 20), 10 << 20);
        assert_eq!(fragment_size(1), FRAGMENT_ALIGN);
        assert_eq!(fragment_size(FRAGMENT_ALIGN * 3 + 5), FRAGMENT_ALIGN * 3);
        assert_eq!(fragment_size(u64::MAX), MAX_FRAGMENT);
        const { assert!(MAX_FRAGMENT < 60 << 20 && MAX_FRAGMENT % FRAGMENT_ALIGN == 0) };
    }

    #[test]
    fn times_and_ranges() {
        assert_eq!(fmt_time(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_164_800_123);
        assert_eq!(fmt_time(t), "2024-02-29T00:00:00.123Z");
        assert_eq!(super::super::item::parse_time(&fmt_time(t)), Some(t));
        assert_eq!(
            next_expected(&json!({"nextExpectedRanges": ["26-"]})).unwrap(),
            Some(26)
        );
        assert_eq!(
            next_expected(&json!({"nextExpectedRanges": ["5-9", "20-"]})).unwrap(),
            Some(5)
        );
        assert_eq!(next_expected(&json!({"nextExpectedRanges": []})).unwrap(), None);
        assert!(next_expected(&json!({})).is_err());
    }
}
