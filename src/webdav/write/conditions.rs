//! What a replace (`Precondition::Matches`) sends so that the server checks the version it
//! replaces atomically with the PUT: `If-Match`, WebDAV's `If` header for weak ETags, or a
//! depth-0 LOCK held across the PUT (RFC 4918 §§9.10, 10.4) where the server has locks.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, StatusCode};
use tracing::{debug, info, warn};

use super::{header, method};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Entry, EntryKind, Version};
use crate::webdav::{href, DavRemote};

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

/// What to do after looking at the item an upload with `Matches` would replace.
pub(super) enum BeforeReplace {
    /// Send the PUT with this condition on the version replaced.
    Put(ReplaceCondition),
    /// The server already holds exactly our bytes: nothing to send.
    Done(Entry),
}

/// How a replace names the version it replaces.
pub(super) enum ReplaceCondition {
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
    pub(super) fn held(&self) -> Option<(url::Url, String)> {
        match self {
            ReplaceCondition::Locked { url, token, .. } => Some((url::Url::parse(url).ok()?, token.clone())),
            _ => None,
        }
    }

    pub(super) fn apply(self, req: HttpRequest, v: &Version) -> RemoteResult<HttpRequest> {
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

/// An ETag as an `If` header's entity-tag: as the server gave it when it is in the HTTP form
/// (`"x"`, `W/"x"`), quoted when the server sent it bare (the in-process dav-server's `getetag`
/// is unquoted, and a bare value makes the whole header unparsable there).
pub(super) fn if_etag(raw: &str) -> String {
    let raw = raw.trim();
    if raw.starts_with('"') || raw.starts_with("W/\"") {
        raw.to_string()
    } else {
        format!("\"{raw}\"")
    }
}

impl DavRemote {
    /// Look at the item a `Matches(v)` upload replaces: fail early on another version (sparing the
    /// upload), and cope with Apache's weak ETags, which never satisfy `If-Match`: Apache reports
    /// `W/"x"` for a second after each write. When the ETag is weak and equal to our base, the PUT
    /// carries `If: (["W/\"x\""])` instead, which Apache evaluates atomically with the PUT (two
    /// mounts replacing one weak version at once: one gets 412 and keeps a conflict copy).
    pub(super) async fn before_replace(&self, id: &str, v: &Version, source: &Path) -> RemoteResult<BeforeReplace> {
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
    pub(super) async fn replace_under_lock(
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
    pub(super) async fn release(&self, held: Option<(url::Url, String)>) {
        if let Some((url, token)) = held {
            self.unlock(&url, &token).await;
        }
    }

    /// Take an exclusive write lock on `url` at `depth`: the token, and whether the LOCK created
    /// the resource (RFC 4918 §9.10.4: a LOCK of a missing name makes an empty one). `None` when
    /// the server has no locks (remembered), `Err(Locked)` when someone else holds one.
    pub(super) async fn lock(&self, url: &url::Url, depth: &'static str) -> RemoteResult<Option<(String, bool)>> {
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
    pub(super) async fn lock_for_replace(&self, url: &url::Url) -> RemoteResult<Option<(String, bool)>> {
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
    pub(super) async fn unlock(&self, url: &url::Url, token: &str) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_header_etags() {
        assert_eq!(if_etag("\"a-1\""), "\"a-1\"");
        assert_eq!(if_etag(" W/\"a-1\" "), "W/\"a-1\"");
        assert_eq!(if_etag("98c15a-4-661f"), "\"98c15a-4-661f\"");
    }
}
