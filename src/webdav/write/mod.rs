//! Write operations: streamed PUT, MKCOL, DELETE, MOVE and PROPPATCH of the modification time, with
//! what real servers make of them (see `docs/webdav-servers.md`).
//!
//! Module map: `put` uploads, `create` makes new files safely where `If-None-Match: *` does not
//! hold, `conditions` makes replaces conditional (ETags, `If` headers, locks), `tree` does MKCOL,
//! DELETE and MOVE, `mtime` sets modification times. This file holds what they share: what has
//! been learnt about the server (`CapState`) and the conditional-write probe.
//!
//! Choices that apply to all of them:
//! - Nothing that changes the server is repeated once the server may have acted on it
//!   ([`Retry::IfNotApplied`]): a second PUT could clobber a newer version, a second MKCOL, MOVE or
//!   DELETE would report "exists" or "not found" for our own first attempt. Only a refused
//!   connection, 429 and 503 are retried; a timeout or a connection lost mid-request is returned
//!   as the transient error it is, for the caller to retry (an upload retried after it did land is
//!   recognised, see `put`).
//! - Statuses that mean different things per method and server (405, 409, 403, 500...) are read
//!   here, and the cases they hide are told apart by a PROPFIND (is the source there, is the
//!   parent there) rather than by guessing.
//! - Every operation returns the item as a Depth-0 PROPFIND describes it afterwards.

mod conditions;
mod create;
mod mtime;
mod put;
mod tree;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderValue, IF_MATCH};
use reqwest::{Method, StatusCode};
use tracing::{debug, info, warn};

use super::propfind::{DavResponse, PROPFIND_ENTRY};
use super::{href, DavRemote};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Capabilities, Entry};
use mtime::MtimeProp;

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

fn conflict(op: &str, id: &str) -> RemoteError {
    RemoteError::Http {
        status: 409,
        message: format!("{op} {id}: 409 Conflict"),
    }
}

impl DavRemote {
    /// What this mount knows about the server so far: both are `false` until learnt (the probe for
    /// conditional writes runs before the first upload, or through
    /// [`DavRemote::probe_capabilities`]; `set_mtime` is learnt from the first attempt).
    pub(super) fn known_capabilities(&self) -> Capabilities {
        let caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        let learnt = |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::Relaxed);
        Capabilities {
            writes: true,
            conditional_writes: caps.conditional == Some(true),
            set_mtime: caps.set_mtime == Some(true),
            case_insensitive_names: false,
            kept_meta: self.kept_meta(),
            propagates_versions: learnt(&self.propagating),
            streams_growing_uploads: learnt(&self.stages_puts),
        }
    }

    fn caps(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.caps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Find out now whether the server enforces conditional writes (see the `put` module),
    /// probing in the share's root folder, and return what is known.
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

    /// Log the errors a user must hear about with the item's name (a quota, a lock or a size limit
    /// is something to act on), and pass them on.
    fn note(&self, op: &str, id: &str, e: RemoteError) -> RemoteError {
        if matches!(
            e,
            RemoteError::Locked | RemoteError::InsufficientStorage | RemoteError::TooLarge
        ) {
            warn!(op, item = %id, error = %e, "the server refused a write");
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn times() {
        assert_eq!(unix_secs(UNIX_EPOCH), Some(0));
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1500)), Some(1));
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_secs(300_000_000_000)), None);
    }
}
