//! Fault injection ([`Faults`], obtained from [`FakeGraph::faults`](crate::FakeGraph::faults)).
//!
//! Faults are queued and consumed by the next matching requests; every knob is safe to call from any thread
//! while the server runs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::GraphError;
use crate::state::{Shared, State};
use crate::stats::{Pause, RouteClass, Scope};

#[derive(Clone, Debug)]
struct Rule {
    scope: Scope,
    remaining: u32,
    status: u16,
    retry_after: Option<u64>,
}

#[derive(Clone, Debug)]
struct EveryRule {
    scope: Scope,
    nth: u64,
    seen: u64,
    status: u16,
    retry_after: Option<u64>,
}

/// What the dispatcher must answer instead of handling the request.
#[derive(Clone, Debug)]
pub(crate) struct Injected {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub throttle: bool,
}

#[derive(Default)]
pub(crate) struct FaultState {
    throttle: Vec<Rule>,
    every: Option<EveryRule>,
    fail: Vec<Rule>,
    pub delta_resync_next: u32,
    /// (remaining count, status): delta requests for a later page of a round (a nextLink) that fail.
    pub fail_delta_pages: Option<(u32, u16)>,
    pub fail_after_accept: u32,
    /// (remaining count, bytes to send before cutting the connection)
    pub truncate_downloads: Vec<(u32, u64)>,
    pub deny_authorize: u32,
    pub slow_down: u32,
    pub pending: u32,
    pub async_moves: bool,
    pub fail_async_ops: u32,
    /// `$select` never yields `@microsoft.graph.downloadUrl`, even when named.
    pub omit_selected_download_urls: bool,
    /// (remaining count, delay): upload fragments read in full, then held this long and dropped (a
    /// fragment whose answer never comes in time).
    pub stall_fragments: Vec<(u32, Duration)>,
    /// Mode: every upload fragment is read in full, then held this long before it is stored and
    /// answered as usual (a slow service; nothing is lost).
    pub slow_fragments: Option<Duration>,
    /// Uploaded files (simple PUT, or a session at commit) that get their first byte flipped.
    pub corrupt_uploads: u32,
    /// Hooks run by the next request of their scope (see [`Faults::before_next`]).
    hooks: Vec<(Scope, Hook)>,
}

/// Something "another device" does at the moment a request arrives.
type Hook = Box<dyn FnOnce() + Send>;

/// The upload body `b` as stored: with its first byte flipped while [`Faults::corrupt_next_uploads`] asks for it.
pub(crate) fn maybe_corrupt(shared: &Shared, b: bytes::Bytes) -> bytes::Bytes {
    {
        let mut st = shared.lock();
        if st.faults.corrupt_uploads == 0 || b.is_empty() {
            return b;
        }
        st.faults.corrupt_uploads -= 1;
    }
    corrupt(b)
}

/// `b` with its first byte flipped.
pub(crate) fn corrupt(b: bytes::Bytes) -> bytes::Bytes {
    if b.is_empty() {
        return b;
    }
    let mut v = b.to_vec();
    v[0] ^= 0xFF;
    bytes::Bytes::from(v)
}

impl FaultState {
    /// Takes the first hook queued for `class`, if any (run it without holding the server's lock).
    pub fn take_hook(&mut self, class: RouteClass) -> Option<Box<dyn FnOnce() + Send>> {
        let i = self.hooks.iter().position(|(scope, _)| scope.matches(class))?;
        Some(self.hooks.remove(i).1)
    }

    /// Consumes the first injected fault matching `class`, if any, and starts the Retry-After pause.
    pub fn take(&mut self, class: RouteClass, stats_pause: &mut Option<Pause>, now: Instant) -> Option<Injected> {
        let mut hit = None;
        if let Some(r) = self
            .throttle
            .iter_mut()
            .find(|r| r.remaining > 0 && r.scope.matches(class))
        {
            r.remaining -= 1;
            hit = Some((
                r.scope,
                Injected {
                    status: r.status,
                    retry_after: r.retry_after,
                    throttle: true,
                },
            ));
        } else if let Some(e) = self.every.as_mut().filter(|e| e.scope.matches(class)) {
            e.seen += 1;
            if e.seen % e.nth == 0 {
                hit = Some((
                    e.scope,
                    Injected {
                        status: e.status,
                        retry_after: e.retry_after,
                        throttle: true,
                    },
                ));
            }
        }
        if hit.is_none() {
            if let Some(r) = self.fail.iter_mut().find(|r| r.remaining > 0 && r.scope.matches(class)) {
                r.remaining -= 1;
                hit = Some((
                    r.scope,
                    Injected {
                        status: r.status,
                        retry_after: None,
                        throttle: false,
                    },
                ));
            }
        }
        self.throttle.retain(|r| r.remaining > 0);
        self.fail.retain(|r| r.remaining > 0);
        let (scope, inj) = hit?;
        if let Some(secs) = inj.retry_after {
            *stats_pause = Some(Pause {
                scope,
                start: now,
                until: now + Duration::from_secs(secs),
            });
        }
        Some(inj)
    }
}

/// Fault-injection knobs of a running [`FakeGraph`](crate::FakeGraph).
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl Faults {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.shared.lock())
    }

    /// The next `n` requests in `scope` get `status` (429, 503 or 509) with the throttling body
    /// (`activityLimitReached` / `throttledRequest`; identity routes get `temporarily_unavailable`) and, if
    /// `retry_after` is given, `Retry-After: <secs>`. A Retry-After starts a pause: requests in the same scope
    /// arriving before it ends are recorded in [`Stats::pause_violations`](crate::Stats::pause_violations).
    pub fn throttle_next(&self, scope: impl Into<Scope>, n: u32, status: u16, retry_after: Option<u64>) {
        let scope = scope.into();
        self.with(|s| {
            s.faults.throttle.push(Rule {
                scope,
                remaining: n,
                status,
                retry_after,
            })
        });
    }

    /// Throttles every `nth` request in `scope` until [`clear`](Self::clear) (the spec's "every Nth request"
    /// mode).
    pub fn throttle_every(&self, scope: impl Into<Scope>, nth: u64, status: u16, retry_after: Option<u64>) {
        let scope = scope.into();
        let nth = nth.max(1);
        self.with(|s| {
            s.faults.every = Some(EveryRule {
                scope,
                nth,
                seen: 0,
                status,
                retry_after,
            })
        });
    }

    /// The next `n` requests in `scope` fail with `status` (500, 502, 503, 504…) without Retry-After
    /// (`generalException` / `serviceNotAvailable`; identity routes `temporarily_unavailable`).
    pub fn fail_next(&self, scope: impl Into<Scope>, n: u32, status: u16) {
        let scope = scope.into();
        self.with(|s| {
            s.faults.fail.push(Rule {
                scope,
                remaining: n,
                status,
                retry_after: None,
            })
        });
    }

    /// Removes every queued fault and mode set through this handle (not locks or quota).
    pub fn clear(&self) {
        self.with(|s| {
            let async_moves = s.faults.async_moves;
            s.faults = Default::default();
            s.faults.async_moves = async_moves;
            s.stats.pause = None;
        });
    }

    /// The next request in `scope` first runs `hook`, once, before any injected fault and before the
    /// request is handled (outside the server's lock, so the hook may change the drive through a
    /// [`DriveHandle`](crate::DriveHandle)): another device's change landing at an exact moment, for
    /// example between an upload and the metadata `PATCH` that follows it. Hooks of one scope run in
    /// the order they were queued; [`clear`](Self::clear) drops those not run yet.
    pub fn before_next(&self, scope: impl Into<Scope>, hook: impl FnOnce() + Send + 'static) {
        let scope = scope.into();
        self.with(|s| s.faults.hooks.push((scope, Box::new(hook))));
    }

    /// Mode: item and children responses with `$select` leave out `@microsoft.graph.downloadUrl` even when
    /// it is named (`docs/onedrive.md`, Items and versions: real behaviour varies by endpoint, so clients
    /// need a fallback); responses without `$select` still carry it. Cleared by [`clear`](Self::clear).
    pub fn omit_selected_download_urls(&self, on: bool) {
        self.with(|s| s.faults.omit_selected_download_urls = on);
    }

    /// Every download URL issued so far is expired (401 `unauthenticated`/`expiredToken`); item responses
    /// issue fresh ones.
    pub fn expire_download_urls(&self) {
        self.with(|s| s.downloads.expire_all(SystemTime::now()));
    }

    /// The next `n` download-URL responses send `after_bytes` body bytes and then abort the connection.
    pub fn truncate_next_downloads(&self, n: u32, after_bytes: u64) {
        self.with(|s| s.faults.truncate_downloads.push((n, after_bytes)));
    }

    /// Every access token issued so far is expired (Graph answers 401 `InvalidAuthenticationToken`).
    pub fn expire_access_tokens(&self) {
        self.with(|s| s.auth.expire_access_tokens());
    }

    /// Every refresh token issued so far is revoked: redeeming it gives `400 invalid_grant` with
    /// `AADSTS<code>` (e.g. 70008 expired/revoked, 700082 inactivity, 50173 password change).
    pub fn revoke_refresh_tokens(&self, aadsts: u32) {
        self.with(|s| s.auth.revoke_refresh_tokens(aadsts));
    }

    /// The next delta request that carries a token (nextLink or deltaLink) answers `410 Gone`.
    pub fn delta_resync_next(&self) {
        self.with(|s| s.faults.delta_resync_next += 1);
    }

    /// The next `n` delta requests for a page after the first of a round (an `@odata.nextLink`) answer
    /// `status` (500, 503…) without Retry-After: rounds of several pages fail mid-paging, rounds of one page
    /// still succeed. Cleared by [`clear`](Self::clear).
    pub fn fail_next_delta_pages(&self, n: u32, status: u16) {
        self.with(|s| s.faults.fail_delta_pages = Some((n, status)));
    }

    /// Invalidates every delta token issued so far (all of them answer 410 from now on).
    pub fn invalidate_delta_tokens(&self) {
        self.with(|s| s.delta.epoch += 1);
    }

    /// Inner code of subsequent 410 bodies (`resyncChangesApplyDifferences` or
    /// `resyncChangesUploadDifferences`).
    pub fn set_resync_inner_code(&self, code: &str) {
        self.with(|s| s.cfg.resync_inner_code = code.into());
    }

    /// Locks the item at `path` of the user's drive: writes to it (and deletes/moves of folders containing it)
    /// answer `423 Locked`.
    pub fn lock_item(&self, path: &str) -> Result<(), GraphError> {
        self.set_lock(path, true)
    }

    /// Undoes [`lock_item`](Self::lock_item).
    pub fn unlock_item(&self, path: &str) -> Result<(), GraphError> {
        self.set_lock(path, false)
    }

    fn set_lock(&self, path: &str, locked: bool) -> Result<(), GraphError> {
        self.with(|s| {
            let d = &mut s.drives[0];
            let id = crate::handle::resolve_path(d, path)?;
            d.set_locked(&id, locked)
        })
    }

    /// While true, every drive is over quota: content writes and new items answer `507 quotaLimitReached`
    /// and `quota.state` is `exceeded`.
    pub fn quota_exceeded(&self, on: bool) {
        self.with(|s| s.drives.iter_mut().for_each(|d| d.quota_forced = on));
    }

    /// While true, PATCH requests that move an item answer `202 Accepted` + `Location` (monitor URL) and
    /// apply after [`FakeGraphConfig::async_op_delay`](crate::FakeGraphConfig::async_op_delay) (A17).
    pub fn async_moves(&self, on: bool) {
        self.with(|s| s.faults.async_moves = on);
    }

    /// The next `n` copies / asynchronous moves end with monitor status `failed`.
    pub fn fail_next_async_ops(&self, n: u32) {
        self.with(|s| s.faults.fail_async_ops += n);
    }

    /// The next `n` upload fragments are stored but answered with `500` (the "retry after a 5xx that actually
    /// succeeded" case: the retry then gets `416 fragmentOverlap`).
    pub fn fail_next_upload_after_accept(&self, n: u32) {
        self.with(|s| s.faults.fail_after_accept += n);
    }

    /// The next `n` upload fragments are read in full, then held for `delay` and dropped unstored (their
    /// answer, a 504, comes too late for a client with a shorter timeout).
    pub fn stall_next_upload_fragments(&self, n: u32, delay: Duration) {
        self.with(|s| s.faults.stall_fragments.push((n, delay)));
    }

    /// Mode: every upload fragment is held for `delay` after it was read, then stored and answered as
    /// usual: a slow service, so that tests can catch an upload halfway. `None` ends it, as does
    /// [`clear`](Self::clear).
    pub fn slow_upload_fragments(&self, delay: Option<Duration>) {
        self.with(|s| s.faults.slow_fragments = delay);
    }

    /// The next `n` uploaded files (a simple PUT, or an upload session at commit) are stored with their first
    /// byte flipped (corruption in transit): the stored content and its hashes differ from what the client sent.
    pub fn corrupt_next_uploads(&self, n: u32) {
        self.with(|s| s.faults.corrupt_uploads += n);
    }

    /// Every open upload session expires now (404 `uploadSessionNotFound` afterwards).
    pub fn expire_upload_sessions(&self) {
        self.with(|s| s.sessions.clear());
    }

    /// The next `n` device-code polls answer `slow_down` (A23).
    pub fn slow_down_next(&self, n: u32) {
        self.with(|s| s.faults.slow_down += n);
    }

    /// The next `n` device-code polls answer `authorization_pending` even if the code was approved.
    pub fn authorization_pending_next(&self, n: u32) {
        self.with(|s| s.faults.pending += n);
    }

    /// The next `n` `/authorize` requests redirect with `error=access_denied` (the user refused).
    pub fn deny_next_authorize(&self, n: u32) {
        self.with(|s| s.faults.deny_authorize += n);
    }

    /// Every outstanding device code expires (polls answer `expired_token`, AADSTS70019).
    pub fn expire_device_codes(&self) {
        self.with(|s| s.auth.expire_device_codes());
    }
}
