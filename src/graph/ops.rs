//! Folder and metadata writes (Microsoft Graph docs: "Create folder", "Delete a DriveItem", "Move a DriveItem"): create folder, delete, move/rename by PATCH
//! (including the asynchronous 202 + monitor variant), and the modification time.
//!
//! None of them is repeated once the server may have acted on it ([`Retry::IfNotApplied`]): a
//! second create, move or delete would report "exists" or "not found" for our own first attempt.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, ACCEPT, IF_MATCH, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tracing::debug;
use url::Url;

use super::client::read_json_body;
use super::error::{map_error, GraphErrorInfo};
use super::item::{DriveItem, ITEM_SELECT};
use super::names::check_name;
use super::path::with_query;
use super::upload::fmt_time;
use super::GraphRemote;
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Entry, EntryKind, ItemId, Meta, Precondition, Remote};

/// How many times a folder delete whose condition failed looks again before giving up: the
/// folder's tag also moves when the folder itself is renamed or its time set.
const EMPTY_DELETE_TRIES: usize = 3;

/// Longest time we poll the monitor of an asynchronous move.
const MONITOR_LIMIT: Duration = Duration::from_secs(300);

impl GraphRemote {
    fn entry(item: &DriveItem) -> RemoteResult<Entry> {
        item.to_entry()
            .ok_or_else(|| RemoteError::Protocol(format!("Graph answered with an item of no known kind: {}", item.id)))
    }

    /// `POST …/items/{parent}/children` with `conflictBehavior: fail`.
    pub(super) async fn create_folder(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        check_name(name)?;
        let url = self.urls.item(&self.drive.id, parent.as_str(), "/children")?;
        let body = json!({ "name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail" });
        let item: DriveItem = self
            .client
            .send_json(Method::POST, url, &body, Retry::IfNotApplied)
            .await?
            .json("create folder")?;
        Self::entry(&item)
    }

    /// `DELETE …/items/{id}` (a folder with everything in it; it goes to the recycle bin).
    pub(super) async fn delete_item(&self, id: &ItemId) -> RemoteResult<()> {
        if id.as_str() == self.root_id {
            return Err(RemoteError::Unsupported("cannot delete the drive's root".into()));
        }
        let url = self.urls.item(&self.drive.id, id.as_str(), "")?;
        let req = HttpRequest::new(Method::DELETE, url, Retry::IfNotApplied);
        self.client.authorized(&req).await?;
        self.downloads.remove(id);
        Ok(())
    }

    /// [`Remote::delete_empty_folder`]: read the folder's tags, list it, and if it is empty send
    /// `DELETE` with `If-Match` on the tag that moves when its members do: the folder's cTag,
    /// which personal drives change whenever a descendant changes (moved in included), so a file
    /// moved in after the listing makes the delete fail (412) instead of going with the folder.
    /// Business drives give folders no cTag and their eTag does not follow the members: there the
    /// eTag still guards against a rename, and the window between listing and delete stays open
    /// (docs/semantics.md, "Two machines").
    pub(super) async fn delete_folder_if_empty(&self, id: &ItemId) -> RemoteResult<()> {
        if id.as_str() == self.root_id {
            return Err(RemoteError::Unsupported("cannot delete the drive's root".into()));
        }
        let url = self.urls.item(&self.drive.id, id.as_str(), "")?;
        for _ in 0..EMPTY_DELETE_TRIES {
            let folder: DriveItem = self
                .client
                .get_json(with_query(url.clone(), &[("$select", "id,eTag,cTag,folder")]))
                .await?;
            if !self.list(id).await?.is_empty() {
                return Err(RemoteError::NotEmpty);
            }
            let mut req = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied);
            if let Some(tag) = folder.c_tag.as_deref().or(folder.e_tag.as_deref()) {
                let value = HeaderValue::from_str(tag)
                    .map_err(|e| RemoteError::Protocol(format!("folder tag {tag:?} is no header value: {e}")))?;
                req = req.header(IF_MATCH, value);
            }
            match self.client.authorized(&req).await {
                Ok(_) => {
                    self.downloads.remove(id);
                    return Ok(());
                }
                Err(RemoteError::PreconditionFailed) => {
                    debug!(folder = %id, "the folder changed between its listing and the delete; looking again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::NotEmpty)
    }

    /// Move and/or rename by `PATCH` with `parentReference.id` and `name`.
    ///
    /// Replacing: Graph replaces a file by a file with `@microsoft.graph.conflictBehavior=replace`
    /// in the query (`docs/onedrive.md`, Folders, moves, deletes); it refuses to replace a folder
    /// (409). rename(2) replaces a folder only by a folder and only when it is empty, which the
    /// filesystem core checks first; so when a replacing move meets a folder in the way, that
    /// folder is deleted and the move made again.
    pub(super) async fn move_item(
        &self,
        id: &ItemId,
        new_parent: &ItemId,
        new_name: &str,
        replace: bool,
    ) -> RemoteResult<Entry> {
        check_name(new_name)?;
        if id.as_str() == self.root_id {
            return Err(RemoteError::Unsupported("cannot move the drive's root".into()));
        }
        match self.patch_move(id, new_parent, new_name, replace).await {
            Err(RemoteError::AlreadyExists) if replace => {
                let target = self.lookup(new_parent, new_name).await?;
                if target.kind != EntryKind::Directory || target.id == *id {
                    return Err(RemoteError::AlreadyExists);
                }
                debug!(target = %target.id, "replacing a folder: deleting it, then moving again");
                self.delete_item(&target.id).await?;
                self.patch_move(id, new_parent, new_name, false).await
            }
            other => other,
        }
    }

    async fn patch_move(&self, id: &ItemId, new_parent: &ItemId, new_name: &str, replace: bool) -> RemoteResult<Entry> {
        let url = with_query(
            self.urls.item(&self.drive.id, id.as_str(), "")?,
            &[(
                "@microsoft.graph.conflictBehavior",
                if replace { "replace" } else { "fail" },
            )],
        );
        let body = json!({ "name": new_name, "parentReference": { "id": new_parent.as_str() } });
        let resp = self
            .client
            .send_json(Method::PATCH, url, &body, Retry::IfNotApplied)
            .await?;
        self.downloads.remove(id);
        if resp.status == StatusCode::ACCEPTED {
            // Some moves run asynchronously (`202` and a monitor URL: `docs/onedrive.md`): follow the monitor, then read the item.
            let location = resp
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Url::parse(v).ok())
                .ok_or_else(|| RemoteError::Protocol("a 202 move without a monitor URL".into()))?;
            let done = self.wait_for_monitor(&location).await?;
            let moved = ItemId::new(done.unwrap_or_else(|| id.as_str().to_string()));
            return self.stat(&moved).await;
        }
        Self::entry(&resp.json::<DriveItem>("PATCH move")?)
    }

    /// Poll a long-running operation's monitor URL (no bearer token) until it completes; returns
    /// its `resourceId`.
    async fn wait_for_monitor(&self, url: &Url) -> RemoteResult<Option<String>> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let mut req = HttpRequest::idempotent(Method::GET, url.clone())
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            req = req.accept_status(StatusCode::SEE_OTHER);
            let body: Value = self
                .client
                .preauthenticated(&req, |resp| async move {
                    let bytes = read_json_body(resp, "GET monitor").await?;
                    serde_json::from_slice::<Value>(&bytes)
                        .map_err(|e| RemoteError::Protocol(format!("monitor: unexpected answer: {e}")))
                })
                .await?;
            let status = body.get("status").and_then(Value::as_str).unwrap_or("");
            match status {
                "completed" => return Ok(body.get("resourceId").and_then(Value::as_str).map(str::to_string)),
                "failed" | "cancelled" => {
                    let err = body.get("error");
                    let code = err.and_then(|e| e.get("code")).and_then(Value::as_str);
                    let info = GraphErrorInfo {
                        codes: code.map(|c| vec![c.to_string()]).unwrap_or_default(),
                        message: err
                            .and_then(|e| e.get("message"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or_else(|| Some(format!("the operation ended {status}"))),
                    };
                    return Err(map_error(500, &info, None, "asynchronous move"));
                }
                _ => {}
            }
            if started.elapsed() > MONITOR_LIMIT {
                return Err(RemoteError::Timeout(format!(
                    "asynchronous move still {status:?} after {MONITOR_LIMIT:?}"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// `PATCH` `fileSystemInfo.lastModifiedDateTime`.
    pub(super) async fn set_item_mtime(&self, id: &ItemId, mtime: SystemTime) -> RemoteResult<Entry> {
        let item = self.patch_fs_time(id.as_str(), mtime, None).await?;
        Self::entry(&item)
    }

    /// [`Remote::set_meta`] on OneDrive: the two times `fileSystemInfo` holds, in one `PATCH`
    /// (mode, owner and access time have no place there and are left to the caller). With
    /// [`Precondition::Matches`] the item is read first and its content version compared, then
    /// the `PATCH` carries `If-Match` on the eTag just read, so a change in between fails it
    /// (412) rather than being written over.
    pub(super) async fn set_item_meta(
        &self,
        id: &ItemId,
        meta: &Meta,
        precondition: Precondition,
    ) -> RemoteResult<Entry> {
        if let Some(why) = meta.invalid() {
            return Err(RemoteError::Unsupported(why));
        }
        let if_match = match precondition {
            Precondition::Absent => {
                return Err(RemoteError::Unsupported(
                    "metadata is set on an item that exists".into(),
                ))
            }
            Precondition::Any => None,
            Precondition::Matches(want) => {
                let url = self.urls.item(&self.drive.id, id.as_str(), "")?;
                let item: DriveItem = self
                    .client
                    .get_json(with_query(url, &[("$select", ITEM_SELECT)]))
                    .await?;
                if item.version().as_ref() != Some(&want) {
                    debug!(item = %id, ours = ?want, server = ?item.version(), "the server holds another version");
                    return Err(RemoteError::PreconditionFailed);
                }
                item.e_tag
            }
        };
        if meta.mtime.is_none() && meta.created.is_none() {
            return self.stat(id).await;
        }
        let item = self
            .patch_file_system_info(id.as_str(), meta.mtime, meta.created, if_match.as_deref())
            .await?;
        Self::entry(&item)
    }

    /// `PATCH` the times given of the item's `fileSystemInfo` (in the precision Graph writes:
    /// milliseconds; business drives keep whole seconds of it), on eTag `if_match` when given.
    pub(super) async fn patch_file_system_info(
        &self,
        id: &str,
        modified: Option<SystemTime>,
        created: Option<SystemTime>,
        if_match: Option<&str>,
    ) -> RemoteResult<DriveItem> {
        let url = self.urls.item(&self.drive.id, id, "")?;
        let mut info = serde_json::Map::new();
        if let Some(t) = modified {
            info.insert("lastModifiedDateTime".into(), json!(fmt_time(t)));
        }
        if let Some(t) = created {
            info.insert("createdDateTime".into(), json!(fmt_time(t)));
        }
        let body = json!({ "fileSystemInfo": info });
        // Repeating it is harmless: the same times again. A repeat whose first attempt landed
        // meets a new eTag (412), which the callers that send `If-Match` read as "changed".
        let req = super::upload::json_request(Method::PATCH, url, &body, if_match)?;
        self.client.authorized(&req).await?.json("PATCH fileSystemInfo")
    }
}
