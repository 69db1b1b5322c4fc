//! Uploads: one streamed PUT of a finished file (with `X-OC-Mtime`, and its precondition as
//! `If-None-Match: *`, `If-Match` or an `If` header), or of a growing one without a length; then
//! the modification time, and the item as a PROPFIND describes it. An upload retried after it did
//! land is recognised by comparing the server's copy with the local file.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};

use super::conditions::BeforeReplace;
use super::{check_name, unix_secs};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{
    Entry, EntryKind, GrowingFile, ItemId, Precondition, TransferProgress, UploadCtx, UploadSource, UploadTarget,
};
use crate::webdav::propfind::PROPFIND_ENTRY;
use crate::webdav::{href, read, DavRemote};

/// Nextcloud and ownCloud keep the modification time given in this header with a PUT, and answer
/// `X-OC-MTime: accepted`; other servers ignore it.
const X_OC_MTIME: &str = "x-oc-mtime";

/// Chunk size when comparing a local file with the server's copy.
const COMPARE_CHUNK: u64 = 1 << 20;

pub(super) fn oc_mtime_accepted(headers: &HeaderMap) -> bool {
    headers
        .get(X_OC_MTIME)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("accepted"))
}

impl DavRemote {
    /// [`crate::remote::Remote::upload`] on WebDAV: a finished file by [`Self::upload_file`], a
    /// growing one by [`Self::upload_growing_file`]; a file's progress ends at its whole size.
    pub(in crate::webdav) async fn upload(
        &self,
        to: UploadTarget<'_>,
        from: UploadSource<'_>,
        cx: &UploadCtx,
    ) -> RemoteResult<Entry> {
        let (parent, name, sent) = (to.parent, to.name, &cx.progress);
        match from {
            UploadSource::File { path, mtime } => {
                let entry = self
                    .upload_file(parent, name, path, mtime, to.precondition, sent)
                    .await?;
                sent.set(entry.size);
                Ok(entry)
            }
            UploadSource::Growing(file) => {
                self.upload_growing_file(parent, name, file, to.precondition, sent)
                    .await
            }
        }
    }

    /// Whether the server's file `entry` holds exactly the bytes of local file `source`. Reads it
    /// back in chunks (pinned to its version), stopping at the first difference.
    pub(super) async fn same_content(&self, entry: &Entry, source: &Path) -> RemoteResult<bool> {
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
    pub(super) async fn unless_same(&self, entry: Entry, source: &Path, conflict: RemoteError) -> RemoteResult<Entry> {
        if self.same_content(&entry, source).await? {
            debug!(item = %entry.id, "the server already holds exactly these bytes");
            Ok(entry)
        } else {
            Err(conflict)
        }
    }

    /// A finished file's upload: one PUT streaming the file from disk, with a `Content-Length` and
    /// `X-OC-Mtime`.
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

    /// A growing file's upload ([`UploadSource::Growing`]): one PUT without a length (chunked
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
    pub(super) async fn finish_upload(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
