//! An in-process WebDAV server for tests: dav-server's `LocalFs` over a fresh temp dir, served by
//! hyper on 127.0.0.1, on its own thread and tokio runtime (so it works the same from sync tests,
//! FUSE tests and `#[tokio::test]`s, and keeps serving while a test thread blocks).
//!
//! Tests change the served directory directly, as "the server side", and can make the server
//! hang, stop (connection refused) and come back on the same port.
//!
//! ETags: `LocalFs` builds them like Apache, `{inode:x}-{len:x}-{mtime in µs:x}` for files (see
//! dav-server's `localfs.rs`, `LocalFsMetaData::etag`). So a rewrite of the same size changes the
//! ETag only through the mtime (or a new inode). The mtime comes from the kernel's coarse clock,
//! which ticks every few milliseconds, so two writes in quick succession can keep one mtime and
//! one ETag. Tests that rewrite a file and expect a new version should set a distinct mtime
//! explicitly (`std::fs::File::set_modified`), or replace the file by rename (new inode).
//! `LocalFs` reports no quota.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use dav_server::localfs::LocalFs;
use dav_server::memls::MemLs;
use dav_server::DavHandler;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc as tmpsc, watch};
use tokio::task::JoinSet;

type RespBody = UnsyncBoxBody<Bytes, io::Error>;

struct Shared {
    handler: DavHandler,
    /// The exact `Authorization` header value demanded, if any.
    auth: Option<String>,
    get_body_bytes: AtomicU64,
    get_requests: AtomicU64,
    requests: AtomicU64,
    hang: watch::Sender<bool>,
    hang_puts: watch::Sender<bool>,
}

enum Ctl {
    Stop(mpsc::Sender<()>),
    Restart(mpsc::Sender<()>),
    Shutdown,
}

/// A WebDAV server over a temp dir. Dropping it stops everything and removes the dir.
pub struct DavServer {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    shared: Arc<Shared>,
    ctl: tmpsc::UnboundedSender<Ctl>,
    thread: Option<JoinHandle<()>>,
}

impl DavServer {
    /// Serve a fresh temp dir (dav-server LocalFs) on 127.0.0.1 with a random port, on its own
    /// thread + tokio runtime.
    pub fn start() -> DavServer {
        Self::spawn(None)
    }

    /// Same, demanding HTTP Basic auth with these credentials (401 + WWW-Authenticate otherwise).
    pub fn start_with_auth(user: &str, pass: &str) -> DavServer {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Self::spawn(Some(format!("Basic {token}")))
    }

    fn spawn(auth: Option<String>) -> DavServer {
        let dir = tempfile::Builder::new()
            .prefix("cloudmount-dav-")
            .tempdir()
            .expect("create the served temp dir");
        let root = dir.path().to_path_buf();
        let handler = DavHandler::builder()
            .filesystem(LocalFs::new(&root, false, false, false))
            .locksystem(MemLs::new())
            .build_handler();
        let (hang, _) = watch::channel(false);
        let (hang_puts, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            handler,
            auth,
            get_body_bytes: AtomicU64::new(0),
            get_requests: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hang,
            hang_puts,
        });
        let (ctl, ctl_rx) = tmpsc::unbounded_channel();
        let (port_tx, port_rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dav-server".into())
            .spawn(move || server_thread(thread_shared, ctl_rx, port_tx))
            .expect("spawn the dav-server thread");
        let port = port_rx.recv().expect("dav-server thread failed to listen");
        DavServer {
            dir: Some(dir),
            root,
            port,
            shared,
            ctl,
            thread: Some(thread),
        }
    }

    /// Base URL, ending with '/': "http://127.0.0.1:PORT/".
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The served directory; tests create and modify files here directly, as "the server side".
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Total body bytes sent in answers to GET requests since start/reset (counted as hyper takes
    /// each chunk to write it to the socket).
    pub fn get_body_bytes(&self) -> u64 {
        self.shared.get_body_bytes.load(Ordering::SeqCst)
    }

    /// Number of GET requests (content downloads) received since start/reset.
    pub fn get_requests(&self) -> u64 {
        self.shared.get_requests.load(Ordering::SeqCst)
    }

    /// Number of requests received since start/reset.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.shared.get_body_bytes.store(0, Ordering::SeqCst);
        self.shared.get_requests.store(0, Ordering::SeqCst);
        self.shared.requests.store(0, Ordering::SeqCst);
    }

    /// true: new requests are accepted but never answered (the server "hangs") until
    /// set_hang(false). Requests held back are answered once the hang ends (if their client is
    /// still waiting).
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.send_replace(hang);
    }

    /// Like [`DavServer::set_hang`], for PUTs of more than 64 KiB only: other requests (small
    /// probes included) are answered, while such a PUT's body stays unread (the client's bytes
    /// pile up in the socket buffers) until set_hang_large_puts(false).
    #[allow(dead_code)]
    pub fn set_hang_large_puts(&self, hang: bool) {
        self.shared.hang_puts.send_replace(hang);
    }

    /// Close the listener and drop open connections: clients then get "connection refused".
    /// Returns once both are done.
    pub fn stop(&self) {
        self.command(Ctl::Stop);
    }

    /// Listen again on the same port (use SO_REUSEADDR). Returns once listening.
    pub fn restart(&self) {
        self.command(Ctl::Restart);
    }

    fn command(&self, make: fn(mpsc::Sender<()>) -> Ctl) {
        let (tx, rx) = mpsc::channel();
        self.ctl.send(make(tx)).expect("dav-server thread is gone");
        rx.recv().expect("dav-server thread failed the command");
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The dir goes last, once nothing serves it any more.
        drop(self.dir.take());
    }
}

fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

fn server_thread(shared: Arc<Shared>, mut ctl: tmpsc::UnboundedReceiver<Ctl>, port_tx: mpsc::Sender<u16>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("dav-server-rt")
        .build()
        .expect("build the dav-server runtime");
    rt.block_on(async move {
        let first = bind(0).expect("bind 127.0.0.1:0");
        let port = first.local_addr().expect("local addr").port();
        let _ = port_tx.send(port);
        let mut listener = Some(first);
        let mut conns: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                cmd = ctl.recv() => match cmd {
                    Some(Ctl::Stop(reply)) => {
                        listener = None;
                        conns.shutdown().await;
                        let _ = reply.send(());
                    }
                    Some(Ctl::Restart(reply)) => {
                        if listener.is_none() {
                            listener = Some(rebind(port).await);
                        }
                        let _ = reply.send(());
                    }
                    Some(Ctl::Shutdown) | None => break,
                },
                accepted = accept(listener.as_ref()) => match accepted {
                    Ok(stream) => {
                        conns.spawn(serve_connection(stream, shared.clone()));
                    }
                    // Out of file descriptors and the like: try again shortly.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        conns.shutdown().await;
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Bind the old port again. Something else may hold it for a moment (a client socket that got it
/// as its ephemeral port), so keep trying for a while.
async fn rebind(port: u16) -> TcpListener {
    let start = Instant::now();
    loop {
        match bind(port) {
            Ok(l) => return l,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("cannot listen on port {port} again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(req, shared.clone()));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<RespBody>, Infallible> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut hang = shared.hang.subscribe();
    let _ = hang.wait_for(|h| !*h).await;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if req.method() == hyper::Method::PUT && length.unwrap_or(0) > 64 << 10 {
        let _ = shared.hang_puts.subscribe().wait_for(|h| !*h).await;
    }
    if let Some(expected) = &shared.auth {
        let given = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if given != Some(expected.as_bytes()) {
            let body = Full::new(Bytes::from_static(b"authentication required\n"))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut resp = Response::new(body);
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"cloudmount-test\""),
            );
            return Ok(resp);
        }
    }
    let is_get = req.method() == Method::GET;
    if is_get {
        shared.get_requests.fetch_add(1, Ordering::SeqCst);
    }
    let (parts, body) = shared.handler.handle(req).await.into_parts();
    let body = if is_get {
        let counter = shared.clone();
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.get_body_bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
            }
            frame
        })
        .boxed_unsync()
    } else {
        body.boxed_unsync()
    };
    Ok(Response::from_parts(parts, body))
}
