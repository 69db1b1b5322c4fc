//! A stateful fake of the Microsoft Graph files API (OneDrive personal / OneDrive for Business / SharePoint
//! document libraries) and of the Microsoft identity platform v2 endpoints, with fault injection — the test
//! peer of cloudmount's Graph remote. It follows `docs/onedrive.md` (the project's protocol reference),
//! including the decisions A1–A25 listed at its end; choices where that reference is silent are documented on the
//! module or item that makes them.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_graph::{FakeGraph, FakeGraphConfig, Flavour, RouteClass};
//! let g = FakeGraph::start(FakeGraphConfig { flavour: Flavour::Business, ..Default::default() }).await;
//! g.drive().put_file("/Documents/a.txt", &b"hello"[..]).unwrap();   // "another device" writes
//! let (access, _refresh) = g.issue_tokens();                        // skip the login flows
//! let url = format!("{}/me/drive/root:/Documents/a.txt", g.graph_url());
//! // … drive the client under test against g.graph_url() / g.login_url() …
//! g.faults().throttle_next(RouteClass::Metadata, 1, 429, Some(2));
//! assert!(g.stats().pause_violations.is_empty());
//! # let _ = (access, url);
//! # }
//! ```
//!
//! What is modelled and what is not is listed in the crate's README.

#![warn(missing_docs)]

mod config;
mod delta;
mod error;
mod faults;
mod graph;
mod handle;
mod identity;
mod model;
pub mod quickxorhash;
mod server;
mod state;
mod stats;
mod upload;
mod util;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

pub use config::{FakeGraphConfig, Flavour};
pub use error::GraphError;
pub use faults::Faults;
pub use handle::DriveHandle;
pub use stats::{PauseViolation, RequestRecord, RouteClass, Scope, Stats};
pub use upload::{FRAGMENT_ALIGN, MAX_FRAGMENT};

/// Largest body a simple `PUT …/content` accepts (A1: 250 MB).
pub const MAX_SIMPLE_UPLOAD: u64 = model::MAX_SIMPLE_PUT;

use state::{Shared, State};

/// One drive as listed by [`FakeGraph::drives`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveInfo {
    /// Drive id.
    pub id: String,
    /// Drive name (`OneDrive`, `Documents`, `Archive`).
    pub name: String,
    /// `personal`, `business` or `documentLibrary`.
    pub drive_type: String,
    /// Server-relative path of the SharePoint site owning the library (`""` root site, `/sites/eng`), or
    /// `None` for the user's OneDrive.
    pub site_path: Option<String>,
}

enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread,
}

/// A running fake Graph server. Dropping it stops the server.
pub struct FakeGraph {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runner: Runner,
}

impl std::fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGraph")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(server::dispatch).with_state(shared)
}

fn base_for(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    match addr {
        SocketAddr::V6(_) if !addr.ip().is_unspecified() => format!("http://[{ip}]:{}", addr.port()),
        _ => format!("http://{ip}:{}", addr.port()),
    }
}

impl FakeGraph {
    /// Starts the server on the current tokio runtime (bind errors panic; see [`try_start`](Self::try_start)).
    /// Use [`spawn`](Self::spawn) instead when the test thread will block (e.g. FUSE tests doing std I/O).
    pub async fn start(cfg: FakeGraphConfig) -> FakeGraph {
        Self::try_start(cfg).await.expect("fake-graph: cannot bind")
    }

    /// Starts the server on the current tokio runtime.
    pub async fn try_start(cfg: FakeGraphConfig) -> std::io::Result<FakeGraph> {
        let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
        let addr = listener.local_addr()?;
        let base = base_for(addr);
        let shared = Shared::new(State::new(cfg, base.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeGraph {
            shared,
            addr,
            base,
            shutdown: Some(tx),
            runner: Runner::Task(task),
        })
    }

    /// Starts the server on its own thread with its own 2-worker tokio runtime; usable from synchronous code
    /// and from tests whose runtime is busy or blocked.
    pub fn spawn(cfg: FakeGraphConfig) -> std::io::Result<FakeGraph> {
        let std_listener = std::net::TcpListener::bind(cfg.addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let base = base_for(addr);
        let shared = Shared::new(State::new(cfg, base.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-graph")
            .enable_all()
            .build()?;
        std::thread::Builder::new().name("fake-graph".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("fake-graph: {e}");
                        return;
                    }
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
        })?;
        Ok(FakeGraph {
            shared,
            addr,
            base,
            shutdown: Some(tx),
            runner: Runner::Thread,
        })
    }

    /// Listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` — the server root (pre-authenticated URLs live under it).
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// `http://127.0.0.1:PORT/v1.0` — the Graph service root to configure in the client.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base)
    }

    /// `http://127.0.0.1:PORT` — the identity (login) base; endpoints are
    /// `{login_url}/{tenant}/oauth2/v2.0/{authorize,token,devicecode}`.
    pub fn login_url(&self) -> String {
        self.base.clone()
    }

    /// The application (client) id the identity endpoints accept.
    pub fn client_id(&self) -> String {
        self.shared.lock().cfg.client_id.clone()
    }

    /// The client secret (client credentials flow).
    pub fn client_secret(&self) -> String {
        self.shared.lock().cfg.client_secret.clone()
    }

    /// The tenant id (`common`, `organizations`, `consumers` and the tenant domain are accepted too).
    pub fn tenant_id(&self) -> String {
        self.shared.lock().cfg.tenant_id.clone()
    }

    /// The configuration the server started with (fault knobs may have changed some fields since).
    pub fn config(&self) -> FakeGraphConfig {
        self.shared.lock().cfg.clone()
    }

    /// Issues a delegated (access, refresh) token pair for the signed-in user with every scope
    /// (`Files.ReadWrite.All Sites.ReadWrite.All User.Read offline_access`), for tests that skip login.
    pub fn issue_tokens(&self) -> (String, String) {
        self.issue_tokens_with_scopes(&identity::ALL_SCOPES.join(" "))
    }

    /// Issues a delegated token pair with the given space-separated scopes (a refresh token is always
    /// issued).
    pub fn issue_tokens_with_scopes(&self, scopes: &str) -> (String, String) {
        let mut st = self.shared.lock();
        let (lifetime, flavour) = (st.cfg.token_lifetime, st.cfg.flavour);
        let mut scopes = identity::parse_scopes(scopes);
        if !scopes.iter().any(|s| s.eq_ignore_ascii_case("offline_access")) {
            scopes.push("offline_access".into());
        }
        let (at, rt) = st.auth.issue_delegated(scopes, flavour, lifetime, SystemTime::now());
        (at, rt.expect("offline_access was added"))
    }

    /// Issues an application-only access token (as the client credentials flow would).
    pub fn issue_app_token(&self) -> String {
        let mut st = self.shared.lock();
        let (lifetime, flavour) = (st.cfg.token_lifetime, st.cfg.flavour);
        st.auth.issue_app(flavour, lifetime, SystemTime::now())
    }

    /// The user "enters" `user_code` and signs in: the next poll of that device code succeeds. False if the
    /// code is unknown or no longer pending.
    pub fn approve_device_code(&self, user_code: &str) -> bool {
        self.shared.lock().auth.set_device_code(user_code, true)
    }

    /// The user refuses the device code sign-in (`authorization_declined`).
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.shared.lock().auth.set_device_code(user_code, false)
    }

    /// User codes of device-code sign-ins still waiting for approval.
    pub fn pending_device_codes(&self) -> Vec<String> {
        self.shared.lock().auth.pending_user_codes(SystemTime::now())
    }

    /// Approves every pending device code; returns how many.
    pub fn approve_all_device_codes(&self) -> usize {
        let mut st = self.shared.lock();
        let codes = st.auth.pending_user_codes(SystemTime::now());
        codes.iter().filter(|c| st.auth.set_device_code(c, true)).count()
    }

    /// The signed-in user's OneDrive.
    pub fn drive(&self) -> DriveHandle {
        DriveHandle {
            shared: self.shared.clone(),
            drive: 0,
        }
    }

    /// A SharePoint document library by site path (`""` or `/` for the root site, `/sites/eng`) and library
    /// name (`Documents`, `Archive`), case-insensitive. Business flavour only.
    pub fn library(&self, site_path: &str, name: &str) -> Option<DriveHandle> {
        let st = self.shared.lock();
        let p = site_path.trim_end_matches('/').to_lowercase();
        let site = st.sites.iter().find(|s| s.server_path == p)?;
        let di = site
            .drives
            .iter()
            .copied()
            .find(|&d| st.drives[d].name.eq_ignore_ascii_case(name))?;
        Some(DriveHandle {
            shared: self.shared.clone(),
            drive: di,
        })
    }

    /// Every drive the server hosts (index 0 is the user's OneDrive).
    pub fn drives(&self) -> Vec<DriveInfo> {
        let st = self.shared.lock();
        st.drives
            .iter()
            .enumerate()
            .map(|(i, d)| DriveInfo {
                id: d.id.clone(),
                name: d.name.clone(),
                drive_type: d.drive_type.as_str().into(),
                site_path: st
                    .sites
                    .iter()
                    .find(|s| s.drives.contains(&i))
                    .map(|s| s.server_path.clone()),
            })
            .collect()
    }

    /// Fault-injection knobs.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        st.stats.snapshot(self.shared.download_bytes.load(Ordering::Relaxed))
    }

    /// Resets every counter and the request log (also ends a running Retry-After pause).
    pub fn reset_stats(&self) {
        self.shared.lock().stats = Default::default();
        self.shared.download_bytes.store(0, Ordering::Relaxed);
    }

    /// Stops the server (also done on drop).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Runner::Task(t) = std::mem::replace(&mut self.runner, Runner::Thread) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Runner::Task(t) = &self.runner {
            t.abort();
        }
    }
}
