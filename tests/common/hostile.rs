//! A misbehaving WebDAV server, scripted per request, for the hostile-server tests (issue 16): answers far larger
//! than any real one (streamed, never held in memory here), redirects to other origins or to plain http,
//! connections closed without an answer, listings with odd hrefs and sizes. Plain HTTP or TLS with a certificate
//! made for the test ([`TestCert`]).
//!
//! It speaks just enough HTTP/1.1 by hand (one request per connection, `Connection: close`), so that a script can
//! do what hyper would refuse to: close after reading a request, or stream a body of any length. It runs on its
//! own thread and runtime, so it serves the same from plain tests, FUSE tests and `#[tokio::test]`s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

/// One request as the script sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0-based arrival number.
    pub n: usize,
    pub method: String,
    /// The request target's path, still percent-encoded.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Answer {
    /// A complete answer with a `Content-Length`.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// An answer whose body is `prefix`, then `len` bytes of `filler`, then `suffix`, written as the client takes
    /// it (no `Content-Length`: the body ends when the connection closes). Stops when the client goes away.
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        prefix: Vec<u8>,
        filler: Vec<u8>,
        /// How many times `filler` is sent.
        times: u64,
        suffix: Vec<u8>,
    },
    /// Close the connection without answering.
    Close,
}

impl Answer {
    /// A complete answer.
    pub fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Answer {
        Answer::Reply {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
        }
    }

    /// A 207 with this XML.
    pub fn multistatus(xml: impl Into<Vec<u8>>) -> Answer {
        Answer::reply(207, &[("content-type", "application/xml; charset=utf-8")], xml)
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Answer {
        Answer::reply(status, &[("location", location)], Vec::new())
    }
}

/// `<d:response>` of a collection at `href`.
pub fn collection_response(href: &str) -> String {
    format!(
        r#"<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype><d:getlastmodified>Sat, 22 Nov 2025 10:00:00 GMT</d:getlastmodified><d:getetag>"dir"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
    )
}

/// `<d:response>` of a file at `href` whose `getcontentlength` is the text `size`.
pub fn file_response(href: &str, size: &str) -> String {
    format!(
        r#"<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype/><d:getcontentlength>{size}</d:getcontentlength><d:getlastmodified>Sat, 22 Nov 2025 10:00:00 GMT</d:getlastmodified><d:getetag>"f{size}"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"#
    )
}

/// A multistatus document of these `<d:response>` elements.
pub fn multistatus_of(responses: &[String]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:">{}</d:multistatus>"#,
        responses.concat()
    )
}

type Script = dyn Fn(&Request) -> Answer + Send + Sync;

/// A server answering each request with its script.
pub struct Hostile {
    /// `http://127.0.0.1:PORT/` or `https://localhost:PORT/`.
    pub url: String,
    pub port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl Hostile {
    /// Serve plain HTTP on 127.0.0.1.
    pub fn start(script: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Hostile {
        Self::serve(None, script)
    }

    /// Serve HTTPS on 127.0.0.1 (URL host `localhost`) with `cert`.
    pub fn start_tls(cert: &TestCert, script: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Hostile {
        Self::serve(Some(cert.acceptor()), script)
    }

    fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: impl Fn(&Request) -> Answer + Send + Sync + 'static,
    ) -> Hostile {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/"),
            None => format!("http://127.0.0.1:{port}/"),
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (log2, conns2) = (log.clone(), connections.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let count = Arc::new(AtomicUsize::new(0));
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    conns2.fetch_add(1, Ordering::SeqCst);
                    let (script, log, count, tls) = (script.clone(), log2.clone(), count.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                // A client that refuses our certificate ends the handshake here.
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    handle(stream, &*script, &log, &count).await;
                                }
                            }
                            None => handle(tcp, &*script, &log, &count).await,
                        }
                    });
                }
            });
        });
        Hostile {
            url,
            port,
            log,
            connections,
        }
    }

    /// Every request read so far.
    pub fn seen(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Connections accepted so far (TLS handshakes that failed included).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Largest request head or body read.
const MAX_REQUEST: usize = 1 << 20;

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    script: &Script,
    log: &Mutex<Vec<Request>>,
    count: &AtomicUsize,
) {
    let Some(req) = read_request(&mut stream, count).await else {
        return;
    };
    log.lock().unwrap().push(req.clone());
    let answer = script(&req);
    let _ = write_answer(&mut stream, answer).await;
    let _ = stream.shutdown().await;
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, count: &AtomicUsize) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len.min(MAX_REQUEST) {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    Some(Request {
        n: count.fetch_add(1, Ordering::SeqCst),
        method,
        path,
        headers,
        body,
    })
}

fn head(status: u16, headers: &[(String, String)], length: Option<usize>) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\nServer: hostile-test\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = length {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn write_answer<S: AsyncWrite + Unpin>(stream: &mut S, answer: Answer) -> std::io::Result<()> {
    match answer {
        Answer::Close => Ok(()),
        Answer::Reply { status, headers, body } => {
            stream.write_all(&head(status, &headers, Some(body.len()))).await?;
            stream.write_all(&body).await?;
            stream.flush().await
        }
        Answer::Stream {
            status,
            headers,
            prefix,
            filler,
            times,
            suffix,
        } => {
            stream.write_all(&head(status, &headers, None)).await?;
            stream.write_all(&prefix).await?;
            // Write the filler in batches of about 64 KiB.
            let per_batch = (64 * 1024 / filler.len().max(1)).max(1) as u64;
            let batch = filler.repeat(per_batch as usize);
            let mut left = times;
            while left > 0 {
                let n = left.min(per_batch);
                stream.write_all(&batch[..n as usize * filler.len()]).await?;
                left -= n;
            }
            stream.write_all(&suffix).await?;
            stream.flush().await
        }
    }
}

/// A certificate authority and a server certificate it signed for `localhost` and 127.0.0.1, made with the
/// `openssl` command line for this test; the client must be told to trust `ca_pem`.
pub struct TestCert {
    dir: tempfile::TempDir,
}

impl TestCert {
    /// Make the CA and the server certificate (EC P-256 keys, valid two days).
    pub fn new() -> TestCert {
        let dir = tempfile::Builder::new().prefix("cloudmount-tls-").tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (install it with scripts/install-test-deps.sh)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cloudmount test CA",
        ]);
        openssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        openssl(&csr);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TestCert { dir }
    }

    /// The CA certificate (PEM) that clients must trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |p: &Path| std::fs::read(p).unwrap();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&self.path("server.pem")))
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&read(&self.path("server.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Default for TestCert {
    fn default() -> Self {
        TestCert::new()
    }
}
