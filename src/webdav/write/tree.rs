//! Tree operations: MKCOL, DELETE (and deleting a folder only when empty, by moving it aside
//! first), MOVE; each reads the statuses servers give per method into what the core expects.

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use tracing::warn;

use super::{check_name, conflict, header, method};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Entry, EntryKind, ItemId};
use crate::webdav::propfind::{self, PROPFIND_ENTRY};
use crate::webdav::{href, DavRemote, Depth};

/// The error of the first failed member in the 207 answer to a DELETE.
pub(super) async fn first_failure(resp: Response, base_segments: &[String]) -> RemoteError {
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

impl DavRemote {
    /// [`crate::remote::Remote::mkdir`] on WebDAV: MKCOL (with the trailing slash nginx needs).
    /// A PROPFIND comes first, because rclone answers 201 to a MKCOL of an existing folder: that
    /// keeps `AlreadyExists` honest there; elsewhere the server's 405 covers a race.
    pub(in crate::webdav) async fn make_dir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
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
    pub(in crate::webdav) async fn delete_item(&self, id: &ItemId) -> RemoteResult<()> {
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
    pub(in crate::webdav) async fn delete_empty_dir(&self, id: &ItemId) -> RemoteResult<()> {
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
    pub(super) async fn has_members(&self, id: &str) -> RemoteResult<bool> {
        let url = href::item_url(&self.base, id, true)?;
        let listed = self.propfind(url, Depth::One, PROPFIND_ENTRY).await?;
        Ok(listed.iter().any(|(rid, _)| rid != id))
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
    pub(in crate::webdav) async fn move_item(
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
}
