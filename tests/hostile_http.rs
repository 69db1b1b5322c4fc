//! The HTTP client against a misbehaving server (issue 16): no https → http downgrade on a redirect, credentials
//! never sent to another origin, certificate failures reported at once and by name, `--ca-cert`, and a connection
//! closed without an answer reported as a lost connection, not an unreachable host.
//!
//! Client-level tests (no FUSE) against the scripted server of `tests/common/hostile.rs`, plus mounts for the
//! command line's `--ca-cert`.

mod common;

use cloudmount::fuse::ToErrno;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudmount::error::RemoteError;
use cloudmount::http::HttpConfig;
use cloudmount::remote::{ItemId, Remote};
use cloudmount::webdav::{DavConfig, DavRemote};
use common::hostile::{collection_response, file_response, multistatus_of, Answer, Hostile, Request, TestCert};
use common::mount::{cloudmount_bin, run, Mount, MountPoint};

fn config(url: &str, timeout: Duration) -> DavConfig {
    DavConfig {
        url: url::Url::parse(url).unwrap(),
        user: Some("alice".into()),
        password: Some("s3cret".into()),
        timeout,
        connect_timeout: Duration::from_secs(5),
    }
}

fn remote(url: &str, ca: Option<PathBuf>) -> DavRemote {
    DavRemote::new_with(
        config(url, Duration::from_secs(20)),
        HttpConfig {
            ca_cert: ca,
            ..HttpConfig::default()
        },
    )
    .unwrap()
}

/// A small but complete share: the root folder holding `file.txt` ("hello").
fn small_share(req: &Request) -> Answer {
    let dir = req.path.trim_end_matches("file.txt");
    match (req.method.as_str(), req.path.ends_with("file.txt")) {
        ("PROPFIND", false) => Answer::multistatus(multistatus_of(&[
            collection_response(dir),
            file_response(&format!("{dir}file.txt"), "5"),
        ])),
        ("PROPFIND", true) => Answer::multistatus(multistatus_of(&[file_response(&req.path, "5")])),
        ("GET", true) => Answer::reply(200, &[("content-length", "5")], "hello"),
        _ => Answer::reply(404, &[], ""),
    }
}

fn base_of(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// A 307 from an https share to an http URL is refused (EIO, a message and a log line say why); the http server
/// never hears from us.
#[tokio::test]
async fn https_to_http_redirects_are_refused() {
    let cert = TestCert::new();
    let cleartext = Hostile::start(small_share);
    let target = base_of(&cleartext.url);
    let share = Hostile::start_tls(&cert, move |req| {
        Answer::redirect(307, &format!("{target}{}", req.path))
    });
    let r = remote(&share.url, Some(cert.ca_pem()));
    for result in [
        r.root().await.map(|_| ()),
        r.read(&ItemId::new("file.txt"), None, 0, 5).await.map(|_| ()),
    ] {
        match result {
            Err(e @ RemoteError::Protocol(_)) => {
                let text = e.to_string();
                assert!(text.contains("redirect from https://localhost"), "{text}");
                assert!(text.contains("to http://127.0.0.1"), "{text}");
                assert_eq!(e.errno(), libc::EIO);
            }
            other => panic!("the downgrade was not refused: {other:?}"),
        }
    }
    assert!(
        cleartext.seen().is_empty(),
        "a request went out in cleartext: {:?}",
        cleartext.seen()
    );
    // Not retried either: one request per operation.
    assert_eq!(share.seen().len(), 2);
}

/// Redirects within https, and within http, are followed; Basic credentials go along to the same origin only.
#[tokio::test]
async fn redirects_keep_credentials_within_their_origin() {
    let cert = TestCert::new();
    // http → another http origin (another port): followed, without Authorization.
    let other = Hostile::start(small_share);
    let to = base_of(&other.url);
    let share = Hostile::start(move |req| Answer::redirect(307, &format!("{to}{}", req.path)));
    let r = remote(&share.url, None);
    assert_eq!(
        &r.read(&ItemId::new("file.txt"), None, 0, 5).await.unwrap()[..],
        b"hello"
    );
    assert!(
        share.seen()[0].header("authorization").is_some(),
        "no credentials to the share itself"
    );
    assert!(
        other.seen().iter().all(|s| s.header("authorization").is_none()),
        "credentials sent to another origin"
    );
    // https → another https origin: followed, without Authorization.
    let other = Hostile::start_tls(&cert, small_share);
    let to = base_of(&other.url);
    let share = Hostile::start_tls(&cert, move |req| Answer::redirect(302, &format!("{to}{}", req.path)));
    let r = remote(&share.url, Some(cert.ca_pem()));
    assert_eq!(
        &r.read(&ItemId::new("file.txt"), None, 0, 5).await.unwrap()[..],
        b"hello"
    );
    assert!(other.seen().iter().all(|s| s.header("authorization").is_none()));
    // Within one origin: followed, with Authorization.
    let share = Hostile::start_tls(&cert, |req| {
        if req.path.starts_with("/moved/") {
            small_share(req)
        } else {
            Answer::redirect(301, &format!("/moved{}", req.path))
        }
    });
    let r = remote(&share.url, Some(cert.ca_pem()));
    assert_eq!(
        &r.read(&ItemId::new("file.txt"), None, 0, 5).await.unwrap()[..],
        b"hello"
    );
    let seen = share.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.header("authorization").is_some()), "{seen:?}");
}

/// An untrusted certificate fails the first attempt, with a message naming the problem and the way out, and is
/// not retried until the deadline; with the CA given (`ca_cert`), the same server works.
#[tokio::test]
async fn untrusted_certificates_fail_at_once_and_ca_cert_trusts_them() {
    let cert = TestCert::new();
    let share = Hostile::start_tls(&cert, small_share);
    let r = DavRemote::new(config(&share.url, Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    match r.root().await {
        Err(e @ RemoteError::Tls(_)) => {
            let text = e.to_string();
            assert!(text.contains("UnknownIssuer"), "{text}");
            assert!(text.contains("--ca-cert"), "{text}");
            assert_eq!(e.errno(), libc::EIO);
        }
        other => panic!("an untrusted certificate was not a TLS error: {other:?}"),
    }
    assert_eq!(share.connections(), 1, "the handshake was tried again");
    // Far below the 60 s deadline that retries would have used up (a loose bound: it is one handshake).
    assert!(started.elapsed() < Duration::from_secs(30));
    let trusted = remote(&share.url, Some(cert.ca_pem()));
    assert!(trusted.root().await.is_ok());
    // A CA file that is not one is said so.
    let bogus = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bogus.path(), "not a certificate").unwrap();
    let e = DavRemote::new_with(
        config(&share.url, Duration::from_secs(5)),
        HttpConfig {
            ca_cert: Some(bogus.path().to_path_buf()),
            ..HttpConfig::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("CA certificate file"), "{e}");
}

/// The command line: without `--ca-cert` the mount fails at once saying why; with it (or with `ca_cert` in the
/// remote's config, or `SSL_CERT_FILE`) the share mounts and reads.
#[test]
fn mount_with_ca_cert() {
    let cert = TestCert::new();
    let share = Hostile::start_tls(&cert, small_share);
    let mp = MountPoint::new();
    let state = tempfile::tempdir().unwrap();
    let out = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(&share.url)
            .arg(mp.path())
            .args(["--foreground", "--read-only", "--timeout", "60", "--state-dir"])
            .arg(state.path()),
        Duration::from_secs(40),
    );
    assert!(!out.status.success());
    let text = out.both();
    assert!(
        text.contains("UnknownIssuer") && text.contains("--ca-cert"),
        "no reason given:\n{text}"
    );
    let ca = cert.ca_pem();
    let m = Mount::start(&share.url, &["--read-only", "--ca-cert", ca.to_str().unwrap()]);
    assert_eq!(std::fs::read(m.path().join("file.txt")).unwrap(), b"hello");
    m.unmount();
    // The same from the config file.
    let cfg = state.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[remotes.private]\ntype = \"webdav\"\nurl = \"{}\"\nca_cert = \"{}\"\n",
            share.url,
            ca.display()
        ),
    )
    .unwrap();
    let m = Mount::start("private", &["--read-only", "--config", cfg.to_str().unwrap()]);
    assert_eq!(std::fs::read(m.path().join("file.txt")).unwrap(), b"hello");
    m.unmount();
    // And SSL_CERT_FILE, which docs/security.md names beside it, replaces the system's roots.
    let m = Mount::start_with_env(&share.url, &["--read-only"], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_eq!(std::fs::read(m.path().join("file.txt")).unwrap(), b"hello");
    m.unmount();
}

/// A server that accepts the connection and closes it without answering is a lost connection (EIO), retried
/// like one, not an unreachable host (EHOSTUNREACH).
#[tokio::test]
async fn connections_closed_without_an_answer_are_lost_connections() {
    let share = Hostile::start(|_| Answer::Close);
    let r = DavRemote::new(config(&share.url, Duration::from_secs(3))).unwrap();
    match r.root().await {
        Err(e @ RemoteError::ConnectionLost(_)) => assert_eq!(e.errno(), libc::EIO),
        other => panic!("{other:?}"),
    }
    assert!(share.seen().len() > 1, "a lost connection is worth another attempt");
}

/// A size that is negative, not a number or past `i64::MAX` makes its item an error (EIO), not a file of size 0.
#[tokio::test]
async fn sizes_that_are_not_sizes_are_errors() {
    let share = Hostile::start(|req| {
        let size = match req.path.as_str() {
            "/neg.txt" => "-1",
            "/nan.txt" => "twelve",
            "/huge.txt" => "9223372036854775808",
            _ => "5",
        };
        Answer::multistatus(multistatus_of(&[file_response(&req.path, size)]))
    });
    let r = remote(&share.url, None);
    assert_eq!(r.stat(&ItemId::new("ok.txt")).await.unwrap().size, 5);
    for name in ["neg.txt", "nan.txt", "huge.txt"] {
        match r.stat(&ItemId::new(name)).await {
            Err(e @ RemoteError::Protocol(_)) => {
                assert!(e.to_string().contains("getcontentlength"), "{e}");
                assert_eq!(e.errno(), libc::EIO);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A Graph server whose JSON answer never ends: the client stops reading at its cap
/// (`MAX_JSON_ANSWER`) with a protocol error, instead of taking memory for all of it.
#[tokio::test]
async fn graph_answers_that_never_end_are_cut_at_the_cap() {
    use cloudmount::auth::StaticToken;
    use cloudmount::graph::{DriveSelector, GraphConfig, GraphRemote};
    let server = Hostile::start(|_| Answer::Stream {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        prefix: br#"{"id":"drive","value":["#.to_vec(),
        filler: br#"{"name":"x","size":1},"#.to_vec(),
        times: u64::MAX,
        suffix: Vec::new(),
    });
    let mut cfg =
        GraphConfig::new(DriveSelector::Me).with_graph_url(url::Url::parse(&format!("{}/v1.0", server.url)).unwrap());
    cfg.timeout = Duration::from_secs(60);
    let started = Instant::now();
    let err = match GraphRemote::connect(cfg, HttpConfig::default(), std::sync::Arc::new(StaticToken("t".into()))).await
    {
        Ok(_) => panic!("connected to a server whose answers never end"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("may hold"), "not cut at the cap: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the whole answer was waited for"
    );
}
