//! The simple upload: one `PUT …/items/{parent}:/{name}:/content` for files up to
//! [`super::SIMPLE_UPLOAD_MAX`], then a `PATCH` of `fileSystemInfo`, since a PUT cannot carry the
//! modification time and Graph sets it to "now" on a content change.

use std::time::SystemTime;

use reqwest::header::{HeaderValue, CONTENT_TYPE, IF_MATCH};
use reqwest::Method;
use tracing::{debug, warn};

use super::{header_value, observer, same_content, Hasher, Job};
use crate::error::{RemoteError, RemoteResult};
use crate::graph::item::DriveItem;
use crate::graph::path::with_query;
use crate::graph::GraphRemote;
use crate::http::{HttpRequest, Retry};

impl GraphRemote {
    /// `PUT …/items/{parent}:/{name}:/content`, then the modification time.
    pub(super) async fn simple_put(
        &self,
        job: &Job<'_>,
        conflict: &str,
        if_match: Option<String>,
        hasher: &Hasher,
    ) -> RemoteResult<DriveItem> {
        let (name, sent) = (job.name, &job.cx.progress);
        let url = with_query(
            self.urls.child(&self.drive.id, job.parent.as_str(), name, "/content")?,
            &[("@microsoft.graph.conflictBehavior", conflict)],
        );
        sent.set(0);
        // A repeated PUT could replace a version written in between: only sent again when the
        // first provably never reached the server (and the If-Match guards replaces anyway).
        let mut req = HttpRequest::new(Method::PUT, url, Retry::IfNotApplied)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            .body_file(job.source)
            .observe_body(observer(hasher, sent));
        if let Some(tag) = &if_match {
            req = req.header(IF_MATCH, header_value(tag)?);
        }
        let put: DriveItem = self.client.authorized(&req).await?.json("PUT content")?;
        self.keep_time(name, put, job.mtime).await
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

    /// `PATCH` the item's `fileSystemInfo.lastModifiedDateTime`, on eTag `if_match` when given.
    pub(in crate::graph) async fn patch_fs_time(
        &self,
        id: &str,
        mtime: SystemTime,
        if_match: Option<&str>,
    ) -> RemoteResult<DriveItem> {
        // Repeating it is harmless: a repeat whose first attempt landed meets a new eTag (412),
        // which `keep_time` reads as "still ours".
        self.patch_file_system_info(id, Some(mtime), None, if_match).await
    }
}
