//! Creating a new file so that two clients creating one name at once cannot overwrite each other
//! where the server's `If-None-Match: *` does not hold (Apache checks it before the body and
//! renames after; nginx ignores it): the body goes to a temporary name, and a MOVE with
//! `Overwrite: F` puts it in place under a create gate (a MKCOL-made folder).

use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderName, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use tracing::{debug, warn};

use super::{header, method};
use crate::error::{RemoteError, RemoteResult};
use crate::http::{HttpRequest, Retry};
use crate::remote::{Entry, ItemId, TransferProgress};
use crate::webdav::{href, DavRemote};

/// How long a create waits for another client's create gate (see `DavRemote::create_gate`).
const GATE_WAIT: Duration = Duration::from_secs(10);

/// A create gate older than this was left by a client that stopped: taken over.
const GATE_STALE: Duration = Duration::from_secs(60);

impl DavRemote {
    /// Whether new files are made by a PUT to a temporary name and a MOVE with `Overwrite: F`
    /// (see [`Self::create_by_move`]): on Apache and nginx, recognised by their `Server` header.
    pub(super) fn creates_by_move(&self) -> bool {
        self.creates_by_move.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Create `id` so that a file another client creates under the same name at the same moment
    /// is never overwritten. Apache checks `If-None-Match: *` when the PUT starts and puts the
    /// body in place when it ends, so two creates at once both pass and the later one wins;
    /// nginx ignores the header altogether. Both check `Overwrite: F` on a MOVE and rename at
    /// once, so the body goes to a temporary name in the same folder first and is then moved
    /// to its name, failing with `AlreadyExists` (412) when the name was taken meanwhile. The
    /// temporary file is removed whatever happens.
    pub(super) async fn create_by_move(
        &self,
        parent: &ItemId,
        id: &str,
        source: &Path,
        mtime: SystemTime,
        sent: &TransferProgress,
    ) -> RemoteResult<Entry> {
        let (tmp, tmp_url) = self.temp_name(parent)?;
        let put = HttpRequest::new(Method::PUT, tmp_url.clone(), Retry::IfNotApplied)
            .body_file(source)
            .count_sent(sent.clone())
            .header(IF_NONE_MATCH, HeaderValue::from_static("*"));
        if let Err(e) = self.http.send(&put).await {
            return Err(match e {
                RemoteError::Http { status: 409 | 500, .. } if self.parent_missing(id).await? => RemoteError::NotFound,
                e => self.note("upload", id, e),
            });
        }
        self.move_new_into_place(parent, id, &tmp, tmp_url, source, mtime).await
    }

    /// A temporary name for a new file's body in folder `parent`, and its URL.
    pub(super) fn temp_name(&self, parent: &ItemId) -> RemoteResult<(String, url::Url)> {
        let tag: u64 = rand::random();
        let tmp = href::join(parent.as_str(), &format!(".cloudmount-new-{tag:016x}"));
        let url = href::item_url(&self.base, &tmp, false)?;
        Ok((tmp, url))
    }

    /// Move the new file uploaded to `tmp` to `id` without replacing anything (see
    /// [`Self::create_by_move`]); `source` holds the same bytes locally.
    pub(super) async fn move_new_into_place(
        &self,
        parent: &ItemId,
        id: &str,
        tmp: &str,
        tmp_url: url::Url,
        source: &Path,
        mtime: SystemTime,
    ) -> RemoteResult<Entry> {
        let gate = self.create_gate(parent, id).await;
        let to = href::item_url(&self.base, id, false)?;
        let mv = HttpRequest::new(method("MOVE"), tmp_url.clone(), Retry::IfNotApplied)
            .header(HeaderName::from_static("destination"), header(to.as_str())?)
            .header(HeaderName::from_static("overwrite"), HeaderValue::from_static("F"))
            .accept_status(StatusCode::PRECONDITION_FAILED);
        // Under the gate, a name taken by anyone is seen here, and no other cloudmount create of it
        // runs at once.
        let taken_already = match &gate {
            Ok(_) => self.stat_opt(id).await.map(|found| found.is_some()),
            Err(()) => Ok(false),
        };
        let moved = match taken_already {
            Ok(true) => Ok(StatusCode::PRECONDITION_FAILED),
            Ok(false) => self.http.execute(&mv, |resp| async move { Ok(resp.status()) }).await,
            Err(e) => Err(e),
        };
        if let Ok(gate) = gate {
            self.open_gate(gate).await;
        }
        let taken = matches!(moved, Ok(StatusCode::PRECONDITION_FAILED));
        if taken || moved.is_err() {
            let del = HttpRequest::new(Method::DELETE, tmp_url, Retry::IfNotApplied);
            if let Err(e) = self.http.send(&del).await {
                warn!(item = %tmp, error = %e, "could not remove a temporary upload; please remove it");
            }
        }
        if taken {
            debug!(item = %id, "the name was taken while the new file went up");
            return match self.stat_opt(id).await? {
                Some((existing, _)) => {
                    let entry = self.unless_same(existing, source, RemoteError::AlreadyExists).await?;
                    self.finish_upload(id, mtime, false, Some(entry)).await
                }
                None => Err(RemoteError::AlreadyExists),
            };
        }
        moved.map_err(|e| self.note("upload", id, e))?;
        self.finish_upload(id, mtime, false, None).await
    }

    /// Serialise cloudmount's creates of one name across clients: a folder
    /// `.cloudmount-create-{hash of the name}` made by MKCOL, which is atomic on every server (a
    /// mkdir), where `Overwrite: F` is not (Apache checks for the destination and renames
    /// afterwards, and a loaded server lets another MOVE in between). Held only for a look and a
    /// MOVE; waits up to [`GATE_WAIT`] for another client's, and takes over one older than
    /// [`GATE_STALE`] (a client that died holding it). `Err` when it could not be had: the
    /// create then relies on `Overwrite: F` alone.
    pub(super) async fn create_gate(&self, parent: &ItemId, id: &str) -> Result<url::Url, ()> {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.as_bytes() {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        let gate = href::join(parent.as_str(), &format!(".cloudmount-create-{hash:016x}"));
        let Ok(url) = href::item_url(&self.base, &gate, true) else {
            return Err(());
        };
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(20);
        let mut refused_without_gate = 0;
        loop {
            // Apache answers 403 to the second of two MKCOLs at once (its mkdir failed), 405 to
            // one of an existing folder: either way, someone may hold the gate.
            let mut req = HttpRequest::new(method("MKCOL"), url.clone(), Retry::IfNotApplied);
            for held in [403, 405, 409, 423] {
                if let Ok(status) = StatusCode::from_u16(held) {
                    req = req.accept_status(status);
                }
            }
            match self.http.execute(&req, |resp| async move { Ok(resp.status()) }).await {
                Ok(status) if status.is_success() => return Ok(url),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "could not make the create gate; relying on Overwrite: F");
                    return Err(());
                }
            }
            match self.stat_opt(&gate).await {
                Ok(Some((held, _))) => {
                    let age = SystemTime::now().duration_since(held.mtime).unwrap_or_default();
                    if age > GATE_STALE {
                        warn!(gate = %gate, "removing a create gate left by a client that stopped");
                        let del = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied);
                        let _ = self.http.send(&del).await;
                        continue;
                    }
                }
                Ok(None) => {
                    // Released meanwhile, or the server refuses such folders: try again, a few
                    // times.
                    refused_without_gate += 1;
                    if refused_without_gate >= 3 {
                        debug!(gate = %gate, "the server refuses the create gate; relying on Overwrite: F");
                        return Err(());
                    }
                    continue;
                }
                Err(_) => return Err(()),
            }
            if started.elapsed() > GATE_WAIT {
                return Err(());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Remove a create gate of ours.
    pub(super) async fn open_gate(&self, url: url::Url) {
        let del = HttpRequest::new(Method::DELETE, url.clone(), Retry::IfNotApplied);
        if let Err(e) = self.http.send(&del).await {
            warn!(gate = %url, error = %e, "could not remove a create gate; it is taken over after a minute");
        }
    }
}
