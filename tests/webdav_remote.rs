//! The WebDAV remote against a real (in-process) WebDAV server, plus a few scripted servers for
//! behaviour dav-server does not show (throttling, servers that ignore Range, broken answers).

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cloudmount::error::RemoteError;
use cloudmount::http::{HttpClient, HttpConfig, HttpRequest, RetryPolicy};
use cloudmount::remote::{EntryKind, ItemId, Quota, Remote, Version};
use cloudmount::webdav::{DavConfig, DavRemote};
use common::dav::DavServer;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn config(url: &str, timeout: Duration) -> DavConfig {
    common::remote::dav_config(url, timeout, Duration::from_secs(1))
}

/// A remote with a generous deadline: these tests must pass on a loaded 2-core box.
fn remote(server: &DavServer) -> DavRemote {
    DavRemote::new(config(&server.url(), Duration::from_secs(30))).unwrap()
}

/// Compare bytes without dumping megabytes into the test output on failure.
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "length of {what}");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

fn id(s: &str) -> ItemId {
    ItemId::new(s)
}

/// Deterministic content: byte i is a function of i, so a wrong offset shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

/// Rewrite a file with other bytes of the same size and a distinct mtime (see the ETag note on
/// `DavServer`).
fn rewrite_same_size(path: &std::path::Path, data: &[u8], mtime_shift: Duration) {
    let old = fs::metadata(path).unwrap().modified().unwrap();
    fs::write(path, data).unwrap();
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(old + mtime_shift).unwrap();
}

const ODD_NAMES: &[&str] = &[
    "a b.txt",
    "hash#tag.txt",
    "100%.txt",
    "%41%42.txt",
    "a+b.txt",
    "what?.txt",
    "[brackets] {braces}.txt",
    "ünïcödé 日本語 🎉.txt",
    "quote'\"&amp;.txt",
    "semi;colon,comma=eq@at$.txt",
    " leading space.txt",
];

fn long_name() -> String {
    format!("{}.txt", "L".repeat(196))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_with_odd_names() {
    let server = DavServer::start();
    let root = server.root();
    let mut names: Vec<String> = ODD_NAMES.iter().map(|s| s.to_string()).collect();
    names.push(long_name());
    assert_eq!(long_name().len(), 200);
    for (i, name) in names.iter().enumerate() {
        fs::write(root.join(name), format!("content of {i}")).unwrap();
    }
    fs::create_dir(root.join("dir #1 ü")).unwrap();
    fs::write(root.join("dir #1 ü").join("inner %20 file.txt"), b"inner").unwrap();
    fs::create_dir(root.join("dir #1 ü").join("sub dir")).unwrap();

    let r = remote(&server);
    let root_entry = r.root().await.unwrap();
    assert_eq!(root_entry.id, id(""));
    assert_eq!(root_entry.name, "");
    assert_eq!(root_entry.kind, EntryKind::Directory);

    let listed = r.list(&id("")).await.unwrap();
    let got: BTreeSet<String> = listed.iter().map(|e| e.name.clone()).collect();
    let mut want: BTreeSet<String> = names.iter().cloned().collect();
    want.insert("dir #1 ü".into());
    assert_eq!(got, want);
    for e in &listed {
        assert_eq!(e.id.as_str(), e.name, "top-level ids are the names");
        assert!(e.version.is_some(), "dav-server gives ETags");
        assert_ne!(e.mtime, SystemTime::UNIX_EPOCH, "dav-server gives getlastmodified");
    }

    for (i, name) in names.iter().enumerate() {
        let content = format!("content of {i}");
        let e = r.lookup(&id(""), name).await.unwrap();
        assert_eq!(e.id.as_str(), name);
        assert_eq!(e.name, *name);
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, content.len() as u64);
        let listed_e = listed.iter().find(|l| l.name == *name).unwrap();
        assert_eq!(listed_e, &e, "list and lookup agree on {name:?}");
        assert_eq!(r.stat(&e.id).await.unwrap(), e);
        let bytes = r.read(&e.id, e.version.as_ref(), 0, 1000).await.unwrap();
        assert_eq!(bytes, content.as_bytes(), "content of {name:?}");
    }

    let dir = r.lookup(&id(""), "dir #1 ü").await.unwrap();
    assert_eq!(dir.kind, EntryKind::Directory);
    let inner = r.list(&dir.id).await.unwrap();
    let mut inner_ids: Vec<String> = inner.iter().map(|e| e.id.as_str().to_string()).collect();
    inner_ids.sort();
    assert_eq!(inner_ids, vec!["dir #1 ü/inner %20 file.txt", "dir #1 ü/sub dir"]);
    let f = r.stat(&id("dir #1 ü/inner %20 file.txt")).await.unwrap();
    assert_eq!(f.name, "inner %20 file.txt");
    assert_eq!(f.size, 5);
    assert_eq!(r.read(&f.id, None, 1, 3).await.unwrap(), &b"nne"[..]);
    let sub = r.lookup(&dir.id, "sub dir").await.unwrap();
    assert_eq!(sub.kind, EntryKind::Directory);
    assert!(r.list(&sub.id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_1000_files_is_listed_completely() {
    let server = DavServer::start();
    let dir = server.root().join("many");
    fs::create_dir(&dir).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..1000 {
        let name = format!("file {i:04} #.bin");
        fs::write(dir.join(&name), vec![b'x'; i % 7]).unwrap();
        want.insert(name);
    }
    let r = remote(&server);
    let listed = r.list(&id("many")).await.unwrap();
    assert_eq!(listed.len(), 1000);
    let got: BTreeSet<String> = listed.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, want);
    for e in &listed {
        assert_eq!(e.id.as_str(), format!("many/{}", e.name));
        let i: usize = e.name[5..9].parse().unwrap();
        assert_eq!(e.size, (i % 7) as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_at_several_offsets() {
    let server = DavServer::start();
    let data = pattern(100_000);
    fs::write(server.root().join("big.bin"), &data).unwrap();
    let r = remote(&server);
    let e = r.stat(&id("big.bin")).await.unwrap();
    assert_eq!(e.size, 100_000);
    let v = e.version.clone();

    for (offset, len) in [
        (0u64, 1u64),
        (0, 4096),
        (1, 10),
        (4095, 2),
        (65_536, 4096),
        (99_999, 1),
        (12_345, 54_321),
    ] {
        server.reset_counters();
        let got = r.read(&e.id, v.as_ref(), offset, len).await.unwrap();
        let want = &data[offset as usize..(offset + len) as usize];
        assert_bytes(&got, want, &format!("read at {offset} of {len}"));
        // The server sent the range, not the file.
        assert_eq!(
            server.get_body_bytes(),
            len,
            "bytes on the wire for offset {offset} len {len}"
        );
    }
    // Across the end: the tail only.
    let tail = r.read(&e.id, v.as_ref(), 99_990, 100).await.unwrap();
    assert_bytes(&tail, &data[99_990..], "tail");
    // At and past the end: nothing.
    assert!(r.read(&e.id, v.as_ref(), 100_000, 10).await.unwrap().is_empty());
    assert!(r.read(&e.id, v.as_ref(), 1_000_000, 10).await.unwrap().is_empty());
    assert!(r.read(&e.id, v.as_ref(), 10, 0).await.unwrap().is_empty());
    // The whole file in one read.
    assert_bytes(&r.read(&e.id, None, 0, 1 << 20).await.unwrap(), &data, "whole file");
    // An empty file.
    fs::write(server.root().join("empty"), b"").unwrap();
    assert!(r.read(&id("empty"), None, 0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_a_file_changes_its_version() {
    let server = DavServer::start();
    let path = server.root().join("doc.txt");
    fs::write(&path, b"version one!").unwrap();
    let r = remote(&server);
    let e1 = r.stat(&id("doc.txt")).await.unwrap();
    let v1 = e1.version.clone().expect("an ETag");
    assert_eq!(r.read(&e1.id, Some(&v1), 0, 7).await.unwrap(), &b"version"[..]);

    rewrite_same_size(&path, b"VERSION TWO!", Duration::from_secs(2));
    assert!(matches!(
        r.read(&e1.id, Some(&v1), 0, 7).await,
        Err(RemoteError::VersionChanged)
    ));
    // Even past the end: dav-server sends the ETag with its 416.
    assert!(matches!(
        r.read(&e1.id, Some(&v1), 100, 7).await,
        Err(RemoteError::VersionChanged)
    ));
    let e2 = r.stat(&id("doc.txt")).await.unwrap();
    assert_eq!(e2.size, e1.size);
    let v2 = e2.version.clone().expect("an ETag");
    assert_ne!(v1, v2, "same-size rewrite with a new mtime changes the ETag");
    assert_eq!(r.read(&e2.id, Some(&v2), 0, 7).await.unwrap(), &b"VERSION"[..]);
    // Without a version, any version is read.
    assert_eq!(r.read(&e2.id, None, 8, 4).await.unwrap(), &b"TWO!"[..]);
    // A version that never existed.
    let bogus = Version::from_etag("\"nope\"");
    assert!(matches!(
        r.read(&e2.id, Some(&bogus), 0, 1).await,
        Err(RemoteError::VersionChanged)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_items_are_not_found() {
    let server = DavServer::start();
    fs::create_dir(server.root().join("d")).unwrap();
    let r = remote(&server);
    assert!(matches!(r.stat(&id("nope")).await, Err(RemoteError::NotFound)));
    assert!(matches!(r.stat(&id("d/nope.txt")).await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&id(""), "nope").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&id("d"), "x y#").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&id(""), "..").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&id(""), "a/b").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.list(&id("nope")).await, Err(RemoteError::NotFound)));
    assert!(matches!(
        r.read(&id("nope"), None, 0, 10).await,
        Err(RemoteError::NotFound)
    ));
    assert_eq!(r.quota().await.unwrap(), None, "LocalFs reports no quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_right_and_wrong() {
    let server = DavServer::start_with_auth("alice", "p@ss:w0rd#");
    fs::write(server.root().join("f"), b"secret data").unwrap();

    let mut cfg = config(&server.url(), Duration::from_secs(30));
    cfg.user = Some("alice".into());
    cfg.password = Some("p@ss:w0rd#".into());
    let good = DavRemote::new(cfg.clone()).unwrap();
    assert_eq!(good.root().await.unwrap().kind, EntryKind::Directory);
    assert_eq!(good.list(&id("")).await.unwrap().len(), 1);
    assert_eq!(good.read(&id("f"), None, 0, 6).await.unwrap(), &b"secret"[..]);

    cfg.password = Some("wrong-password".into());
    let bad = DavRemote::new(cfg.clone()).unwrap();
    server.reset_counters();
    match bad.root().await {
        Err(RemoteError::Unauthorized(msg)) => assert!(!msg.contains("wrong-password"), "{msg}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(server.requests(), 1, "401 is not retried");
    assert!(matches!(
        bad.read(&id("f"), None, 0, 6).await,
        Err(RemoteError::Unauthorized(_))
    ));

    let anonymous = remote(&server);
    assert!(matches!(anonymous.root().await, Err(RemoteError::Unauthorized(_))));

    // Credentials given in the URL work too, and never show in describe().
    let url = server.url().replacen("http://", "http://alice:p%40ss%3Aw0rd%23@", 1);
    let in_url = DavRemote::new(config(&url, Duration::from_secs(30))).unwrap();
    assert_eq!(in_url.root().await.unwrap().kind, EntryKind::Directory);
    assert_eq!(in_url.describe(), server.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_fails_with_connect_within_the_deadline_then_recovers() {
    let server = DavServer::start();
    fs::write(server.root().join("f"), b"hello").unwrap();
    let r = DavRemote::new(config(&server.url(), Duration::from_secs(2))).unwrap();
    assert_eq!(r.read(&id("f"), None, 0, 5).await.unwrap(), &b"hello"[..]);

    server.stop();
    let t = Instant::now();
    let res = r.stat(&id("f")).await;
    let took = t.elapsed();
    assert!(matches!(res, Err(RemoteError::Connect(_))), "got {res:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let t = Instant::now();
    let res = r.read(&id("f"), None, 0, 5).await;
    assert!(matches!(res, Err(RemoteError::Connect(_))), "got {res:?}");
    assert!(t.elapsed() < Duration::from_secs(15));

    server.restart();
    assert_eq!(r.read(&id("f"), None, 0, 5).await.unwrap(), &b"hello"[..]);
    assert_eq!(r.stat(&id("f")).await.unwrap().size, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_times_out_within_the_deadline_then_recovers() {
    let server = DavServer::start();
    fs::write(server.root().join("f"), b"hello").unwrap();
    let r = DavRemote::new(config(&server.url(), Duration::from_secs(2))).unwrap();
    assert_eq!(r.root().await.unwrap().kind, EntryKind::Directory);

    server.set_hang(true);
    for op in 0..2 {
        let t = Instant::now();
        let res = if op == 0 {
            r.stat(&id("f")).await.map(|_| ())
        } else {
            r.read(&id("f"), None, 0, 5).await.map(|_| ())
        };
        let took = t.elapsed();
        assert!(matches!(res, Err(RemoteError::Timeout(_))), "got {res:?}");
        assert!(took >= Duration::from_millis(1500), "gave up early: {took:?}");
        assert!(took < Duration::from_secs(15), "took {took:?}");
    }
    assert!(server.requests() >= 3);

    server.set_hang(false);
    assert_eq!(r.read(&id("f"), None, 0, 5).await.unwrap(), &b"hello"[..]);
}

// ---------------------------------------------------------------------------------------------
// Scripted servers.

type Handler = dyn Fn(usize, &Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync;

/// A one-off HTTP server on the test's runtime: `handler(n, request)` answers the n-th request
/// (0-based). Records when each request arrived.
struct Scripted {
    url: String,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    async fn start(
        handler: impl Fn(usize, &Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let log = arrivals.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, count, log) = (handler.clone(), count.clone(), log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        log.lock().unwrap().push(Instant::now());
                        let resp = handler(n, &req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Scripted { url, arrivals }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

const ROOT_MULTISTATUS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>/</d:href><d:propstat><d:prop>
<d:resourcetype><d:collection/></d:resourcetype><d:quota-used-bytes>1000</d:quota-used-bytes>
<d:quota-available-bytes>9000</d:quota-available-bytes></d:prop><d:status>HTTP/1.1 200 OK</d:status>
</d:propstat></d:response></d:multistatus>"#;

fn multistatus() -> Response<Full<Bytes>> {
    reply(
        207,
        &[("content-type", "application/xml; charset=utf-8")],
        ROOT_MULTISTATUS,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_503_is_honoured() {
    let s = Scripted::start(|n, _| {
        if n == 0 {
            reply(503, &[("retry-after", "1")], "busy")
        } else {
            multistatus()
        }
    })
    .await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let root = r.root().await.unwrap();
    let took = t.elapsed();
    assert_eq!(root.kind, EntryKind::Directory);
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(950),
        "{:?}",
        arrivals[1] - arrivals[0]
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(15),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_pauses_every_request_of_the_client() {
    let s = Scripted::start(|n, _| {
        if n == 0 {
            reply(429, &[("retry-after", "1")], "slow down")
        } else {
            multistatus()
        }
    })
    .await;
    let r = Arc::new(DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap());
    let first = {
        let r = r.clone();
        tokio::spawn(async move { r.root().await })
    };
    // Let the first request meet the 429, then start another one: it must wait out the pause too.
    while s.arrivals().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = r.quota().await.unwrap();
    assert_eq!(
        second,
        Some(Quota {
            used: Some(1000),
            available: Some(9000)
        })
    );
    first.await.unwrap().unwrap();
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 3);
    for later in &arrivals[1..] {
        assert!(
            *later - arrivals[0] >= Duration::from_millis(950),
            "{:?}",
            *later - arrivals[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_beyond_the_deadline_fails_fast_with_throttled() {
    let s = Scripted::start(|_, _| reply(503, &[("retry-after", "120")], "maintenance")).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    match r.root().await {
        Err(RemoteError::Throttled { retry_after }) => assert_eq!(retry_after, Some(Duration::from_secs(120))),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited for nothing: {:?}",
        t.elapsed()
    );
    assert_eq!(s.arrivals().len(), 1);
    // The pause holds back the next operation as well, without sending anything.
    assert!(matches!(r.stat(&id("x")).await, Err(RemoteError::Throttled { .. })));
    assert_eq!(s.arrivals().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_but_501_and_4xx_are_not() {
    let s = Scripted::start(|n, _| if n < 2 { reply(500, &[], "oops") } else { multistatus() }).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    r.root().await.unwrap();
    assert_eq!(s.arrivals().len(), 3);

    let s = Scripted::start(|_, _| reply(501, &[], "no")).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    assert!(matches!(r.root().await, Err(RemoteError::Http { status: 501, .. })));
    assert_eq!(s.arrivals().len(), 1);

    let s = Scripted::start(|_, _| reply(423, &[], "locked")).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    assert!(matches!(r.root().await, Err(RemoteError::Locked)));
    assert_eq!(s.arrivals().len(), 1);

    // A server that keeps failing: the last error comes back once the deadline is spent.
    let s = Scripted::start(|_, _| reply(502, &[], "bad gateway")).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(2))).unwrap();
    let t = Instant::now();
    assert!(matches!(r.root().await, Err(RemoteError::Http { status: 502, .. })));
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(s.arrivals().len() >= 2, "retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_once_are_never_repeated() {
    let s = Scripted::start(|_, _| reply(500, &[], "oops")).await;
    let http = HttpClient::new(HttpConfig {
        policy: RetryPolicy {
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    })
    .unwrap();
    let url = url::Url::parse(&s.url).unwrap();
    let res = http
        .send(&HttpRequest::once(hyper::Method::POST, url.clone()).body("x"))
        .await;
    assert!(matches!(res, Err(RemoteError::Http { status: 500, .. })));
    assert_eq!(s.arrivals().len(), 1);
    let res = http.send(&HttpRequest::idempotent(hyper::Method::GET, url)).await;
    assert!(matches!(res, Err(RemoteError::Http { status: 500, .. })));
    assert!(s.arrivals().len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_ignore_range_send_the_file_and_we_cut_it() {
    let data = Bytes::from(pattern(50_000));
    let d = data.clone();
    let s = Scripted::start(move |_, req| {
        assert!(req.headers().contains_key("range"));
        reply(200, &[("etag", "W/\"v1\"")], d.clone())
    })
    .await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    let f = id("f.bin");
    assert_bytes(&r.read(&f, None, 0, 10).await.unwrap(), &data[..10], "head");
    assert_bytes(
        &r.read(&f, None, 30_000, 5000).await.unwrap(),
        &data[30_000..35_000],
        "middle",
    );
    assert_bytes(&r.read(&f, None, 49_990, 100).await.unwrap(), &data[49_990..], "tail");
    assert!(r.read(&f, None, 50_000, 100).await.unwrap().is_empty());
    // Weak, quoted and unquoted forms of one ETag are one version.
    let v = Version::from_etag("v1");
    assert_bytes(
        &r.read(&f, Some(&v), 5, 5).await.unwrap(),
        &data[5..10],
        "versioned read",
    );
    let other = Version::from_etag("\"v2\"");
    assert!(matches!(
        r.read(&f, Some(&other), 5, 5).await,
        Err(RemoteError::VersionChanged)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_range_answers_are_protocol_errors() {
    // A 206 that promises 100 bytes and brings 50 (well-framed, so it is the promise that lies).
    let s = Scripted::start(|n, _| match n % 3 {
        0 => reply(206, &[("content-range", "bytes 0-99/1000")], vec![1u8; 50]),
        1 => reply(206, &[("content-range", "bytes 10-19/1000")], vec![1u8; 10]),
        _ => reply(206, &[("content-range", "bytes 0-9/1000")], vec![1u8; 10]),
    })
    .await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    let f = id("f");
    assert!(matches!(r.read(&f, None, 0, 100).await, Err(RemoteError::Protocol(_))));
    // Wrong start.
    assert!(matches!(r.read(&f, None, 0, 10).await, Err(RemoteError::Protocol(_))));
    // Fewer bytes than asked although not at the end of the file.
    assert!(matches!(r.read(&f, None, 0, 100).await, Err(RemoteError::Protocol(_))));
    assert_eq!(s.arrivals().len(), 3, "protocol errors are not retried");

    let s = Scripted::start(|_, _| reply(200, &[("content-type", "text/html")], "<html>not dav</html>")).await;
    let r = DavRemote::new(config(&s.url, Duration::from_secs(20))).unwrap();
    assert!(matches!(r.root().await, Err(RemoteError::Protocol(_))));
    assert!(matches!(r.list(&id("")).await, Err(RemoteError::Protocol(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirky_multistatus_forms_are_understood() {
    // WsgiDAV-style unquoted getetag, a base path with a space, absolute-URL hrefs with a host
    // that differs from ours, and a response for a missing member.
    let s = Scripted::start(|_, req| {
        let body = if req.headers().get("depth").map(|v| v.as_bytes()) == Some(b"1") {
            r#"<?xml version="1.0"?><multistatus xmlns="DAV:">
<response><href>http://elsewhere.example/my%20share/dir/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>http://elsewhere.example/my%20share/dir/a%23b.txt</href><propstat><prop><resourcetype/><getcontentlength>3</getcontentlength><getetag>abc</getetag><getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</getlastmodified></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/my share/dir/plain name/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/my%20share/dir/ghost</href><status>HTTP/1.1 404 Not Found</status></response>
<response><href>/elsewhere/outside</href><propstat><prop><resourcetype/></prop><status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#
        } else {
            r#"<?xml version="1.0"?><multistatus xmlns="DAV:"><response><href>/my%20share/dir/a%23b.txt</href><propstat><prop><resourcetype/><getcontentlength>3</getcontentlength><getetag>abc</getetag></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#
        };
        reply(207, &[], body)
    })
    .await;
    let r = DavRemote::new(config(&format!("{}my%20share", s.url), Duration::from_secs(20))).unwrap();
    let mut listed = r.list(&id("dir")).await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].id.as_str(), "dir/a#b.txt");
    assert_eq!(listed[0].name, "a#b.txt");
    assert_eq!(listed[0].size, 3);
    assert_eq!(listed[0].version, Some(Version::from_etag("\"abc\"")));
    assert_eq!(listed[0].mtime, SystemTime::UNIX_EPOCH + Duration::from_secs(784111777));
    assert_eq!(listed[1].id.as_str(), "dir/plain name");
    assert_eq!(listed[1].kind, EntryKind::Directory);
    assert_eq!(listed[1].mtime, SystemTime::UNIX_EPOCH, "missing getlastmodified");
    let e = r.lookup(&id("dir"), "a#b.txt").await.unwrap();
    assert_eq!(e.version, Some(Version::from_etag("W/\"abc\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_request_sent_once_still_pauses_the_client() {
    let s = Scripted::start(|n, _| {
        if n == 0 {
            reply(429, &[("retry-after", "1")], "slow down")
        } else {
            reply(200, &[], "ok")
        }
    })
    .await;
    let http = HttpClient::new(HttpConfig::default()).unwrap();
    let url = url::Url::parse(&s.url).unwrap();
    let res = http.send(&HttpRequest::once(hyper::Method::POST, url.clone())).await;
    assert!(matches!(res, Err(RemoteError::Throttled { retry_after: Some(d) }) if d == Duration::from_secs(1)));
    assert_eq!(s.arrivals().len(), 1, "a request sent once is not retried");
    assert!(http.paused_until().is_some());
    let resp = http
        .send(&HttpRequest::idempotent(hyper::Method::GET, url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(950));
}
