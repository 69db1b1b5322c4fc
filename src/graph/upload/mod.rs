//! Uploads (Microsoft Graph docs: "Upload or replace the contents of a driveItem", "Upload large
//! files with an upload session"; the facts relied on are in `docs/onedrive.md`): a simple
//! `PUT …:/{name}:/content` up to 4 MiB (always for 0-byte files, see `simple`), an upload
//! session above it (see `session`).
//!
//! Sessions: fragments are a multiple of 320 KiB and under 60 MiB ([`fragment_size`]), each streamed
//! from the staged file, sent in order to the pre-authenticated `uploadUrl` without our token.
//! After a fragment fails (5xx, 416, timeout, lost connection, throttling) the session is asked for
//! `nextExpectedRanges` and the upload carries on from there; nothing goes again from zero. A
//! session that is gone (404 or 401 from its URL, or expired) is replaced by a new one. The session
//! URL is kept in the caller's [`crate::remote::ResumeSlot`] (the upload journal), so a restarted daemon carries
//! on mid-file; a session given up on is deleted.
//!
//! Preconditions:
//! - `Absent`: `conflictBehavior=fail`; a taken name is 409 `nameAlreadyExists` → `AlreadyExists`.
//! - `Any`: `conflictBehavior=replace`.
//! - `Matches(v)`: our version of a file is its cTag (content only), but Graph's `If-Match` is
//!   documented with the eTag (the driveItem resource and `If-Match` are documented with either,
//!   and real services differ: `docs/onedrive.md`, Versions). So the item is read
//!   first: a cTag other than `v` (or no item) is `PreconditionFailed` at once; otherwise the upload
//!   carries `If-Match` with the eTag just read, which the server checks atomically (at session
//!   creation and again at commit). A metadata-only change (rename) between the read and the write
//!   makes it fail too: a harmless, rare extra conflict copy, never a silent overwrite. Before giving
//!   up, a mismatch whose server content is exactly ours (same size and quickXorHash: our earlier
//!   attempt landed but its answer was lost) counts as done.
//!
//! Modification time: sessions carry `fileSystemInfo.lastModifiedDateTime`; a simple PUT cannot, and
//! Graph sets the time to "now" on a content change (`docs/onedrive.md`, Versions), so a PATCH of
//! `fileSystemInfo` follows it.
//! That PATCH carries `If-Match` with the eTag the PUT answered: another device's change landing
//! between the two is a conflict (`PreconditionFailed`, so the queue keeps both versions), never
//! something we stamp with our time and then overwrite (see `keep_time`).
//!
//! Integrity: bytes are hashed (quickXorHash) as the connection takes them, once each whatever
//! retries happen, and the part a resumed upload did not send is read from the staged file. When
//! the server reports a `quickXorHash` for the item our upload produced, it must match; a mismatch
//! uploads once more, on the precondition that the server still holds exactly that item (a
//! foreign change in between is then a conflict too), then is an error.

mod session;
mod simple;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use reqwest::header::{HeaderValue, CONTENT_TYPE, IF_MATCH};
use tracing::{debug, info, warn};

use super::item::{DriveItem, ITEM_SELECT};
use super::names::check_name;
use super::path::with_query;
use super::quickxor::Watermark;
use super::GraphRemote;
use crate::error::{RemoteError, RemoteResult};
use crate::http::{BodyObserver, HttpRequest, Retry};
use crate::remote::upload::local_size;
use crate::remote::{Entry, ItemId, Precondition, TransferProgress, UploadCtx, UploadSource, UploadTarget};

/// Largest file sent by a simple PUT (4 MiB is accepted by every service: `docs/onedrive.md`).
pub const SIMPLE_UPLOAD_MAX: u64 = 4 << 20;
/// Non-final fragments are multiples of this (320 KiB).
pub const FRAGMENT_ALIGN: u64 = 327_680;
/// The largest multiple of 320 KiB under 60 MiB (the documented fragment limit).
pub const MAX_FRAGMENT: u64 = 62_586_880;

/// The fragment size used for `configured`: a multiple of 320 KiB within the limits.
pub fn fragment_size(configured: u64) -> u64 {
    (configured / FRAGMENT_ALIGN * FRAGMENT_ALIGN).clamp(FRAGMENT_ALIGN, MAX_FRAGMENT)
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

/// One file upload: where it goes, what it sends, and what it reports into.
struct Job<'a> {
    parent: &'a ItemId,
    name: &'a str,
    source: &'a Path,
    size: u64,
    mtime: SystemTime,
    cx: &'a UploadCtx,
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
    pub(super) async fn upload_file(
        &self,
        to: UploadTarget<'_>,
        from: UploadSource<'_>,
        cx: &UploadCtx,
    ) -> RemoteResult<Entry> {
        let UploadSource::File { path: source, mtime } = from else {
            return Err(RemoteError::Unsupported(
                "OneDrive needs a file's final length before its upload starts".into(),
            ));
        };
        let name = to.name;
        check_name(name)?;
        let size = local_size(source).await?;
        let job = Job {
            parent: to.parent,
            name,
            source,
            size,
            mtime,
            cx,
        };
        let mut precondition = to.precondition;
        for round in 0..2 {
            let hasher: Hasher = Arc::new(Mutex::new(Watermark::new()));
            let item = if size <= SIMPLE_UPLOAD_MAX {
                if let Some(token) = cx.resume.get() {
                    self.discard_token(&token).await;
                    cx.resume.set(None);
                }
                match self.plan(&job, &precondition).await? {
                    Plan::Done(item) => *item,
                    Plan::Send { conflict, if_match } => self.simple_put(&job, conflict, if_match, &hasher).await?,
                }
            } else {
                self.session_upload(&job, &precondition, &hasher).await?
            };
            cx.progress.set(size);
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

    /// What `precondition` comes to on the wire for `job`, after a look at the item where needed.
    async fn plan(&self, job: &Job<'_>, precondition: &Precondition) -> RemoteResult<Plan> {
        let (name, size) = (job.name, job.size);
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
        let Some(item) = self.child_item(job.parent, name).await? else {
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
                if local_hash(&scratch, job.source, size).await? == remote {
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

    /// The driveItem with id `id`, or `None` when it is gone.
    async fn item_by_id(&self, id: &str) -> RemoteResult<Option<DriveItem>> {
        self.item_at(self.urls.item(&self.drive.id, id, "")?).await
    }
}

/// A request that may be repeated, carrying `body` as JSON and `If-Match: if_match` when given.
pub(super) fn json_request(
    method: reqwest::Method,
    url: url::Url,
    body: &serde_json::Value,
    if_match: Option<&str>,
) -> RemoteResult<HttpRequest> {
    let bytes = serde_json::to_vec(body).map_err(|e| RemoteError::Protocol(format!("cannot encode JSON: {e}")))?;
    let mut req = HttpRequest::new(method, url, Retry::Idempotent)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(bytes);
    if let Some(tag) = if_match {
        req = req.header(IF_MATCH, header_value(tag)?);
    }
    Ok(req)
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
    }
}
