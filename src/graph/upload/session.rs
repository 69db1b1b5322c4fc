//! Upload sessions for files above [`super::SIMPLE_UPLOAD_MAX`]: `createUploadSession`, then
//! fragments of [`super::fragment_size`] sent in order to the pre-authenticated `uploadUrl`
//! (`docs/onedrive.md`, Upload sessions). A failed fragment asks the session for
//! `nextExpectedRanges` and carries on from there; the session URL lives in the caller's resume
//! slot, so a restarted daemon carries on mid-file.

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_RANGE};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, info, warn};
use url::Url;

use super::{fmt_time, json_request, local_hash, observer, server_hash, Hasher, Job, Plan};
use crate::error::{RemoteError, RemoteResult};
use crate::graph::client::{read_answer, GraphResponse};
use crate::graph::error::DECODED_STATUSES;
use crate::graph::item::DriveItem;
use crate::graph::GraphRemote;
use crate::http::{HttpRequest, Retry};
use crate::remote::Precondition;

/// Failed fragments in a row (without progress) before an attempt gives up and leaves the rest to
/// the upload queue's next attempt (which resumes the same session).
const FRAGMENT_RETRIES: u32 = 5;
/// New sessions one attempt may start after sessions went away under it.
const NEW_SESSIONS: u32 = 3;

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

impl GraphRemote {
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
            .preauthenticated(&req, |resp| read_answer(resp, context.clone()))
            .await
    }

    /// Upload `job` through a session: the one in the resume slot when it is still good, else a
    /// new one; see the module doc.
    pub(super) async fn session_upload(
        &self,
        job: &Job<'_>,
        precondition: &Precondition,
        hasher: &Hasher,
    ) -> RemoteResult<DriveItem> {
        let (name, size, resume) = (job.name, job.size, &job.cx.resume);
        let mut new_sessions = 0;
        loop {
            let (url, offset) = match self.resume_session(job).await? {
                Some(found) => found,
                None => {
                    new_sessions += 1;
                    if new_sessions > NEW_SESSIONS {
                        return Err(RemoteError::Protocol(format!(
                            "{name}: upload sessions kept disappearing; will try again later"
                        )));
                    }
                    let (conflict, if_match) = match self.plan(job, precondition).await? {
                        Plan::Done(item) => return Ok(*item),
                        Plan::Send { conflict, if_match } => (conflict, if_match),
                    };
                    let url = self.create_session(job, conflict, if_match.as_deref()).await?;
                    resume.set(Some(
                        SessionToken {
                            graph_upload_session: url.to_string(),
                            drive: self.drive.id.clone(),
                            parent: job.parent.as_str().to_string(),
                            name: name.to_string(),
                            size,
                        }
                        .value(),
                    ));
                    (url, 0)
                }
            };
            match self.send_fragments(job, &url, offset, hasher).await {
                Ok(item) => {
                    resume.set(None);
                    return Ok(item);
                }
                Err(Broke::Gone(e)) => {
                    resume.set(None);
                    // The last fragment may have been committed with only its answer lost.
                    if hasher.lock().unwrap_or_else(|p| p.into_inner()).upto() == size {
                        if let Some(item) = self.landed(job, hasher).await? {
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
    async fn landed(&self, job: &Job<'_>, hasher: &Hasher) -> RemoteResult<Option<DriveItem>> {
        let size = job.size;
        let Some(item) = self.child_item(job.parent, job.name).await? else {
            return Ok(None);
        };
        if item.size != Some(size as i64) {
            return Ok(None);
        }
        let Some(remote) = server_hash(&item) else {
            return Ok(None);
        };
        Ok((local_hash(hasher, job.source, size).await? == remote).then_some(item))
    }

    /// The session in the slot, if it is for this upload and still alive, with the offset to go on
    /// from. A token for something else is dropped (and its session deleted).
    async fn resume_session(&self, job: &Job<'_>) -> RemoteResult<Option<(Url, u64)>> {
        let (parent, name, size, resume) = (job.parent, job.name, job.size, &job.cx.resume);
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

    /// `POST …:/{name}:/createUploadSession`, carrying the modification time; the `uploadUrl`.
    async fn create_session(&self, job: &Job<'_>, conflict: &str, if_match: Option<&str>) -> RemoteResult<Url> {
        let (name, size) = (job.name, job.size);
        let url = self
            .urls
            .child(&self.drive.id, job.parent.as_str(), name, "/createUploadSession")?;
        let body = json!({ "item": {
            "@microsoft.graph.conflictBehavior": conflict,
            "name": name,
            "fileSize": size,
            "fileSystemInfo": { "lastModifiedDateTime": fmt_time(job.mtime) },
        }});
        // A second session is harmless (the first expires unused).
        let req = json_request(Method::POST, url, &body, if_match)?;
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
    pub(in crate::graph) async fn discard_token(&self, token: &Value) {
        if let Some(url) = SessionToken::parse(token).and_then(|t| Url::parse(&t.graph_upload_session).ok()) {
            self.cancel_session(&url).await;
        }
    }

    /// Send the fragments from `offset` to the end.
    async fn send_fragments(
        &self,
        job: &Job<'_>,
        url: &Url,
        mut offset: u64,
        hasher: &Hasher,
    ) -> Result<DriveItem, Broke> {
        let (source, size, sent) = (job.source, job.size, &job.cx.progress);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_expected_ranges() {
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
