//! Upload sessions (`docs/onedrive.md`, Upload sessions): `createUploadSession` and the pre-authenticated `uploadUrl`
//! (`PUT` fragments, `GET` status, `DELETE` cancel, `POST` deferred commit).
//!
//! Rules enforced on fragments, in this order: no `Authorization` header (A9, strict by default → 401
//! `unauthenticated`); session known and not expired (404 `itemNotFound`/`uploadSessionNotFound`);
//! `Content-Range: bytes a-b/N` present and well formed with `N > 0` (A11: so 0-byte sessions can never be
//! written) → 400; fragment shorter than 60 MiB (A7, ≥ 62,914,560 B → 413 `maxFragmentLengthExceeded`);
//! `Content-Length` equal to the range length → 400; `N` equal on every fragment and to the declared
//! `fileSize` → 400 `fragmentLengthMismatch`; starts exactly at the next expected byte (gap → 416
//! `fragmentOutOfOrder`, overlap → 416 `fragmentOverlap`); non-final fragments a multiple of 320 KiB (A8,
//! strict by default → 400). The resume offset itself need not be aligned. Accepted fragments extend the
//! session lifetime (A10). The last byte commits (201 new / 200 overwrite) unless `deferCommit`.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{GraphError, ReqIds};
use crate::graph::qget;
use crate::model::{Conflict, Hasher, PutTarget, MAX_FILE_SIZE};
use crate::server::{empty, graph_error, header_str, json_resp};
use crate::state::{Shared, State};
use crate::util;

/// 320 KiB: non-final fragments must be multiples of this.
pub const FRAGMENT_ALIGN: u64 = 327_680;
/// Fragments of this size or larger are rejected (A7).
pub const MAX_FRAGMENT: u64 = 62_914_560;

pub(crate) struct UploadSession {
    pub drive: usize,
    pub target: PutTarget,
    pub conflict: Conflict,
    pub if_match: Option<String>,
    pub declared: Option<u64>,
    pub total: Option<u64>,
    pub data: Vec<u8>,
    pub hasher: Hasher,
    pub expires: SystemTime,
    pub fs: (Option<SystemTime>, Option<SystemTime>),
    pub defer_commit: bool,
}

impl UploadSession {
    fn status_json(&self) -> Value {
        let next: Vec<String> = if self.total == Some(self.data.len() as u64) {
            vec![]
        } else {
            vec![format!("{}-", self.data.len())]
        };
        json!({ "expirationDateTime": util::fmt_time(self.expires, true), "nextExpectedRanges": next })
    }
}

fn session_gone() -> GraphError {
    GraphError::new(404, "itemNotFound", "The upload session was not found or has expired.")
        .inner("uploadSessionNotFound")
}

fn malformed_range() -> GraphError {
    GraphError::invalid("The Content-Range header is missing or malformed.")
}

/// `bytes a-b/N` → (a, b, N).
fn parse_content_range(h: Option<&str>) -> Result<(u64, u64, u64), GraphError> {
    let h = h.ok_or_else(malformed_range)?.trim();
    let rest = h
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes "))
        .map(|_| &h[6..])
        .ok_or_else(malformed_range)?;
    let (range, total) = rest.split_once('/').ok_or_else(malformed_range)?;
    let (a, b) = range.split_once('-').ok_or_else(malformed_range)?;
    let num = |s: &str| -> Result<u64, GraphError> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed_range());
        }
        s.parse().map_err(|_| malformed_range())
    };
    let (a, b, n) = (num(a)?, num(b)?, num(total)?);
    if n == 0 || b < a || b >= n {
        return Err(malformed_range());
    }
    Ok((a, b, n))
}

impl State {
    /// `POST …/createUploadSession`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_upload_session(
        &mut self,
        di: usize,
        target: PutTarget,
        body: Option<&Value>,
        q: &[(String, String)],
        if_match: Option<&str>,
        if_none_match: Option<&str>,
        now: SystemTime,
    ) -> Result<Value, GraphError> {
        let item = body.and_then(|b| b.get("item"));
        let conflict = match qget(q, "@microsoft.graph.conflictBehavior") {
            Some(c) => Conflict::parse(c)?,
            None => match item
                .and_then(|i| i.get("@microsoft.graph.conflictBehavior"))
                .and_then(Value::as_str)
            {
                Some(c) => Conflict::parse(c)?,
                None => Conflict::Fail, // A4: createUploadSession defaults to fail
            },
        };
        let declared = match item.and_then(|i| i.get("fileSize")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| GraphError::invalid("'fileSize' must be a non-negative integer"))?,
            ),
        };
        let fs_info = item.and_then(|i| i.get("fileSystemInfo"));
        let fs_time = |k: &str| -> Result<Option<SystemTime>, GraphError> {
            match fs_info.and_then(|f| f.get(k)) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_str()
                    .and_then(util::parse_time)
                    .map(Some)
                    .ok_or_else(|| GraphError::invalid(format!("Invalid fileSystemInfo.{k}"))),
            }
        };
        let fs = (fs_time("createdDateTime")?, fs_time("lastModifiedDateTime")?);
        let defer_commit = body
            .and_then(|b| b.get("deferCommit"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let d = &self.drives[di];
        // Pre-checks (they are repeated at commit).
        let existing = match &target {
            PutTarget::Existing(id) => {
                let it = d.get(id)?;
                if it.is_folder() {
                    return Err(GraphError::invalid("Cannot upload content to a folder"));
                }
                Some(id.clone())
            }
            PutTarget::Child { parent, name } => {
                let p = d.get(parent)?;
                if !p.is_folder() {
                    return Err(GraphError::invalid("The parent item is not a folder"));
                }
                if let Some(n) = item.and_then(|i| i.get("name")).and_then(Value::as_str) {
                    if n != name {
                        return Err(GraphError::invalid(
                            "The name in the request body must match the name in the URL",
                        ));
                    }
                }
                match d.child(parent, name) {
                    Some(e) if d.items[e].is_folder() => return Err(GraphError::name_exists(name)),
                    Some(_) if conflict == Conflict::Fail => return Err(GraphError::name_exists(name)),
                    Some(e) => Some(e.to_string()),
                    None => {
                        d.validate_name(parent, name, false)?;
                        None
                    }
                }
            }
        };
        match &existing {
            Some(id) => {
                if let Some(m) = if_match {
                    if !crate::model::tag_matches(&d.etag(id), &d.ctag(id), m) {
                        return Err(GraphError::precondition());
                    }
                }
                if let Some(m) = if_none_match {
                    if crate::model::tag_matches(&d.etag(id), &d.ctag(id), m) {
                        return Err(GraphError::precondition());
                    }
                }
                if d.items[id].locked {
                    return Err(GraphError::locked());
                }
            }
            None if if_match.is_some() => return Err(GraphError::precondition()),
            None => {}
        }
        if let Some(size) = declared {
            if size > MAX_FILE_SIZE {
                return Err(GraphError::invalid("Maximum file size exceeded").inner("maxFileSizeExceeded"));
            }
            let old = existing.as_ref().map(|id| d.items[id].size_if_file()).unwrap_or(0);
            let remaining = if d.quota_forced {
                0
            } else {
                d.quota_total.saturating_sub(d.used)
            };
            if d.quota_forced || size.saturating_sub(old) > remaining {
                return Err(GraphError::quota());
            }
        } else if d.quota_forced {
            return Err(GraphError::quota());
        }
        let personal = d.personal;
        self.purge_sessions(now);
        let id = util::random_token(32);
        let session = UploadSession {
            drive: di,
            target,
            conflict,
            if_match: if_match.map(str::to_string),
            declared,
            total: None,
            data: Vec::new(),
            hasher: Hasher::new(personal),
            expires: now + self.cfg.upload_session_ttl,
            fs,
            defer_commit,
        };
        let expires = session.expires;
        self.sessions.insert(id.clone(), session);
        Ok(json!({
            "uploadUrl": format!("{}/_up/{id}", self.base),
            "expirationDateTime": util::fmt_time(expires, true),
            "nextExpectedRanges": ["0-"],
        }))
    }

    /// Commits a complete session: (status, item JSON). On error the session stays usable.
    fn commit_session(&mut self, sid: &str, now: SystemTime) -> Result<(u16, Value), GraphError> {
        let s = self.sessions.get_mut(sid).ok_or_else(session_gone)?;
        let data = std::mem::take(&mut s.data);
        let mut content = Bytes::from(data);
        let mut hashes = s.hasher.clone().finish();
        if self.faults.corrupt_uploads > 0 {
            self.faults.corrupt_uploads -= 1;
            content = crate::faults::corrupt(content);
            let personal = self.drives[self.sessions[sid].drive].personal;
            hashes = Hasher::of(&content, personal);
        }
        let s = self.sessions.get_mut(sid).ok_or_else(session_gone)?;
        let (di, target, fs, conflict, if_match) = (s.drive, s.target.clone(), s.fs, s.conflict, s.if_match.clone());
        let res = self.drives[di].put_content(&target, content.clone(), hashes, fs, conflict, if_match.as_deref(), now);
        match res {
            Ok((id, created)) => {
                self.sessions.remove(sid);
                let v = self.render_item(di, &id, false, now);
                Ok((if created { 201 } else { 200 }, v))
            }
            Err(e) => {
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.data = Vec::from(content);
                }
                Err(e)
            }
        }
    }
}

/// Any request to `{base}/_up/{session}`.
pub(crate) async fn handle_upload_url(
    shared: Arc<Shared>,
    sid: &str,
    req: Request,
    ids: &ReqIds,
    now: SystemTime,
) -> Response {
    match upload_url(&shared, sid, req, now).await {
        Ok(r) => r,
        Err(e) => graph_error(&e, ids),
    }
}

async fn upload_url(shared: &Arc<Shared>, sid: &str, req: Request, now: SystemTime) -> Result<Response, GraphError> {
    let (parts, body) = req.into_parts();
    let has_auth = parts.headers.contains_key("authorization");
    {
        let mut st = shared.lock();
        st.stats.last_upload_headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if has_auth {
            st.stats.upload_auth += 1;
            if st.cfg.strict_upload_auth {
                return Err(GraphError::new(
                    401,
                    "unauthenticated",
                    "Authorization header must not be sent to a pre-authenticated upload URL.",
                )
                .inner("invalidAuthenticationHeader"));
            }
        }
        st.purge_sessions(now);
        if !st.sessions.contains_key(sid) {
            return Err(session_gone());
        }
    }
    match parts.method.as_str() {
        "GET" | "HEAD" => {
            let st = shared.lock();
            let s = st.sessions.get(sid).ok_or_else(session_gone)?;
            Ok(json_resp(200, &s.status_json()))
        }
        "DELETE" => {
            shared.lock().sessions.remove(sid);
            Ok(empty(204))
        }
        "POST" => {
            let mut st = shared.lock();
            let s = st.sessions.get(sid).ok_or_else(session_gone)?;
            if s.total != Some(s.data.len() as u64) {
                return Err(GraphError::invalid("The upload session is not complete").inner("uploadSessionIncomplete"));
            }
            let (status, v) = st.commit_session(sid, now)?;
            Ok(json_resp(status, &v))
        }
        "PUT" => {
            let (a, b, n) = parse_content_range(header_str(&parts.headers, "content-range"))?;
            let len = b - a + 1;
            if len >= MAX_FRAGMENT {
                return Err(GraphError::new(
                    413,
                    "invalidRequest",
                    "The fragment exceeds the maximum fragment size (60 MiB).",
                )
                .inner("maxFragmentLengthExceeded"));
            }
            let mismatch =
                || GraphError::invalid("The Content-Range header length does not match the provided number of bytes.");
            if let Some(cl) = header_str(&parts.headers, "content-length") {
                if cl.trim().parse::<u64>().ok() != Some(len) {
                    return Err(mismatch());
                }
            }
            // All bytes of a request that breaks off are discarded (`docs/onedrive.md`, Upload sessions).
            let data = axum::body::to_bytes(Body::new(body), len as usize + 1)
                .await
                .map_err(|_| mismatch())?;
            if data.len() as u64 != len {
                return Err(mismatch());
            }
            let (stall, slow) = {
                let mut st = shared.lock();
                st.stats.upload_fragment_bytes += len;
                let f = st.faults.stall_fragments.iter_mut().find(|f| f.0 > 0);
                let d = f.map(|f| {
                    f.0 -= 1;
                    f.1
                });
                st.faults.stall_fragments.retain(|f| f.0 > 0);
                (d, st.faults.slow_fragments)
            };
            if let Some(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            if let Some(delay) = stall {
                tokio::time::sleep(delay).await;
                return Err(GraphError::new(
                    504,
                    "generalException",
                    "The fragment timed out (injected); it was not stored.",
                ));
            }
            let mut st = shared.lock();
            let st = &mut *st;
            let strict = st.cfg.strict_fragment_alignment;
            let ttl = st.cfg.upload_session_ttl;
            let s = st.sessions.get_mut(sid).ok_or_else(session_gone)?;
            let expected = s.total.or(s.declared);
            if expected.is_some_and(|t| t != n) {
                return Err(GraphError::invalid(
                    "The declared total size differs from the size of the upload session.",
                )
                .inner("fragmentLengthMismatch"));
            }
            let received = s.data.len() as u64;
            if a > received {
                return Err(
                    GraphError::new(416, "invalidRange", "Uploaded fragment is out of order.")
                        .inner("fragmentOutOfOrder"),
                );
            }
            if a < received {
                return Err(
                    GraphError::new(416, "invalidRange", "Uploaded fragment overlaps with existing data.")
                        .inner("fragmentOverlap"),
                );
            }
            let last = b + 1 == n;
            if strict && !last && len % FRAGMENT_ALIGN != 0 {
                return Err(GraphError::invalid(format!("The fragment size must be a multiple of {FRAGMENT_ALIGN} bytes (320 KiB) except for the last fragment.")));
            }
            if s.total.is_none() && n <= (2u64 << 30) {
                s.data.reserve_exact(n as usize);
            }
            s.total = Some(n);
            s.data.extend_from_slice(&data);
            s.hasher.update(&data);
            s.expires = now + ttl;
            let defer = s.defer_commit;
            let status = s.status_json();
            if st.faults.fail_after_accept > 0 {
                st.faults.fail_after_accept -= 1;
                st.stats.injected_failures += 1;
                if last && !defer {
                    // The work was done, only the response is lost: a final fragment is committed.
                    let _ = st.commit_session(sid, now);
                }
                return Err(GraphError::new(
                    500,
                    "generalException",
                    "An unspecified error has occurred (injected after the fragment was stored).",
                ));
            }
            if last && !defer {
                let (status, v) = st.commit_session(sid, now)?;
                return Ok(json_resp(status, &v));
            }
            Ok(json_resp(202, &status))
        }
        _ => Err(GraphError::new(
            405,
            "BadRequest",
            "The HTTP method is not allowed on an upload URL.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range(Some("bytes 0-25/128")).unwrap(), (0, 25, 128));
        assert_eq!(parse_content_range(Some("Bytes 127-127/128")).unwrap(), (127, 127, 128));
        for bad in [
            "bytes 0--1/0",
            "bytes 0-0/0",
            "bytes 0-25/*",
            "bytes=0-25/128",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "",
            "bytes 0-1",
        ] {
            assert!(parse_content_range(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_content_range(None).is_err());
    }
}
