//! A scripted HTTP server for behaviour that real test servers do not show (Nextcloud's mtime
//! handling, a server that lies about PROPPATCH, throttling in the middle of an upload...). Unlike
//! the one in `webdav_remote.rs`, the handler sees the request body, and a server can be made to
//! read bodies slowly.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the handler sees it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// 0-based arrival number.
    pub n: usize,
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    pub headers: HeaderMap,
    /// The body (kept only up to 1 MiB; `body_len` is always right).
    pub body: Bytes,
    pub body_len: u64,
}

impl Seen {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Handler = dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync;

/// A server on the test's runtime, answering with `handler`.
pub struct Scripted {
    pub url: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    /// Serve on 127.0.0.1 (random port).
    pub async fn start(handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static) -> Scripted {
        Self::start_slow(Duration::ZERO, 0, handler).await
    }

    /// Same, pausing `per_mib` after each of the first `slow_mib` MiB of a request body: a slow
    /// link. The receive buffer is kept small, so that the kernel cannot swallow a large body
    /// while the server is "slow" and the client sees the pace.
    pub async fn start_slow(
        per_mib: Duration,
        slow_mib: u64,
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Scripted {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if !per_mib.is_zero() {
            socket.set_recv_buffer_size(128 * 1024).unwrap();
        }
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(64).unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let server_log = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, count, log) = (handler.clone(), count.clone(), server_log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, count, log) = (handler.clone(), count.clone(), log.clone());
                        async move {
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let (parts, mut body) = req.into_parts();
                            let mut kept = Vec::new();
                            let mut len = 0u64;
                            let mut next_pause = 1u64 << 20;
                            while let Some(frame) = body.frame().await {
                                let Ok(frame) = frame else { break };
                                if let Some(data) = frame.data_ref() {
                                    len += data.len() as u64;
                                    if kept.len() < (1 << 20) {
                                        kept.extend_from_slice(data);
                                    }
                                    while !per_mib.is_zero() && len >= next_pause && next_pause <= slow_mib << 20 {
                                        tokio::time::sleep(per_mib).await;
                                        next_pause += 1 << 20;
                                    }
                                }
                            }
                            let seen = Seen {
                                n,
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body: Bytes::from(kept),
                                body_len: len,
                            };
                            let resp = handler(&seen);
                            log.lock().unwrap().push(seen);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Scripted { url, log }
    }

    /// Every request answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The requests with this method.
    pub fn seen_with(&self, method: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == method).collect()
    }
}

/// A response with a status, headers and a body.
pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

/// A 207 describing one file (`href`, size, mtime as an HTTP date, ETag) or, with `size` None, a
/// collection.
pub fn multistatus_entry(href: &str, size: Option<u64>, mtime: &str, etag: &str) -> Response<Full<Bytes>> {
    let kind = match size {
        Some(len) => format!("<d:resourcetype/><d:getcontentlength>{len}</d:getcontentlength>"),
        None => "<d:resourcetype><d:collection/></d:resourcetype>".to_string(),
    };
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>{href}</d:href><d:propstat><d:prop>{kind}<d:getlastmodified>{mtime}</d:getlastmodified><d:getetag>"{etag}"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#
    );
    reply(207, &[("content-type", "application/xml; charset=utf-8")], body)
}

/// A 207 answer to a PROPPATCH of one property with this status.
pub fn proppatch_answer(href: &str, prop: &str, status: &str) -> Response<Full<Bytes>> {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>{href}</d:href><d:propstat><d:prop><d:{prop}/></d:prop><d:status>HTTP/1.1 {status}</d:status></d:propstat></d:response></d:multistatus>"#
    );
    reply(207, &[("content-type", "application/xml; charset=utf-8")], body)
}
