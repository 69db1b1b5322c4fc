//! What each WebDAV server enforces of the conditions cloudmount relies on when two clients write at once
//! (docs/webdav-servers.md, "Two mounts at once"), and the remote's conditional operations on each:
//!
//! - the server facts, by raw requests: an `If` header with the server's (weak) ETag lets a PUT through and any
//!   other ETag gets 412; a folder under our LOCK refuses a file moved in; a DELETE carrying our token in a tagged
//!   `If` list goes through; `Overwrite: F` refuses a taken name. When a server changes any of these, this fails
//!   and the page (and the code that relies on it) must change with it;
//! - `Remote::delete_empty_folder`: never deletes a folder that holds something, deletes an empty one, and leaves
//!   no lock behind (a `mkdir` of the same name works at once);
//! - nginx: files carry a version (its PROPFIND has no `getetag`) that a replace can name, and a stale one fails.
//!
//! Run against the in-process dav-server (with real locks), Apache, nginx and lighttpd.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cloudmount::error::RemoteError;
use cloudmount::remote::{ItemId, Precondition, Remote, UploadCtx, UploadSource, UploadTarget};
use cloudmount::webdav::{DavConfig, DavRemote};
use common::apache::ApacheServer;
use common::dav::DavServer;
use common::lighttpd::LighttpdServer;
use common::nginx::NginxServer;
use reqwest::{Method, StatusCode};

enum Server {
    Dav(DavServer),
    Apache(ApacheServer),
    Nginx(NginxServer),
    Lighttpd(LighttpdServer),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Dav(s) => s.url(),
            Server::Apache(s) => s.url(),
            Server::Nginx(s) => s.url(),
            Server::Lighttpd(s) => s.url(),
        }
    }

    fn root(&self) -> &Path {
        match self {
            Server::Dav(s) => s.root(),
            Server::Apache(s) => s.root(),
            Server::Nginx(s) => s.root(),
            Server::Lighttpd(s) => s.root(),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn remote(url: &str) -> DavRemote {
    let cfg: DavConfig = common::remote::dav_config(url, Duration::from_secs(30), Duration::from_secs(2));
    DavRemote::new(cfg).unwrap()
}

const LOCK_BODY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>"#,
    r#"<D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>"#
);

fn m(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).unwrap()
}

/// One raw request; the status.
async fn send(http: &reqwest::Client, method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> StatusCode {
    let mut req = http.request(method, url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request").status()
}

/// The ETag a Depth-0 PROPFIND gives for `url`, as sent.
async fn propfind_etag(http: &reqwest::Client, url: &str) -> Option<String> {
    let body = http
        .request(m("PROPFIND"), url)
        .header("Depth", "0")
        .header("Content-Type", "application/xml")
        .body(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#)
        .send()
        .await
        .expect("PROPFIND")
        .text()
        .await
        .unwrap();
    let start = body.find("getetag>")? + "getetag>".len();
    let rest = &body[start..];
    let etag = rest[..rest.find('<')?].trim().to_string();
    (!etag.is_empty()).then_some(etag)
}

/// A quoted entity-tag for an `If` header (dav-server's `getetag` is bare).
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

/// The server facts cloudmount relies on, per server.
fn server_enforces_what_cloudmount_relies_on(server: Server) {
    let base = server.url();
    let is = |kind: &str| {
        matches!(
            (&server, kind),
            (Server::Nginx(_), "nginx") | (Server::Apache(_), "apache")
        )
    };
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let f = format!("{base}f.txt");
        assert!(send(&http, Method::PUT, &f, &[], "base").await.is_success());

        // A replace naming the current version in an `If` header goes through, another version gets 412. nginx
        // ignores `If` and even `If-Match` on PUT: there only the lock and the look under it protect a replace.
        if !is("nginx") {
            let etag = propfind_etag(&http, &f).await.expect("a getetag");
            if is("apache") {
                assert!(
                    etag.starts_with("W/"),
                    "Apache's ETag right after a write is weak: {etag}"
                );
            }
            let cond = format!("([{}])", quoted(&etag));
            assert!(send(&http, Method::PUT, &f, &[("If", &cond)], "v2").await.is_success());
            let status = send(&http, Method::PUT, &f, &[("If", &cond)], "v3").await;
            assert_eq!(
                status,
                StatusCode::PRECONDITION_FAILED,
                "an If with the replaced version"
            );
            assert_eq!(fs::read(server.root().join("f.txt")).unwrap(), b"v2");
        } else {
            let status = send(&http, Method::PUT, &f, &[("If-Match", "\"0-0\"")], "v2").await;
            assert!(
                status.is_success(),
                "nginx now checks If-Match ({status}): docs/webdav-servers.md must say so"
            );
        }

        // A folder under our depth-infinity LOCK refuses a file moved in by someone else, and our DELETE with the
        // token in a tagged list removes it.
        let dir = format!("{base}d/");
        assert!(send(&http, m("MKCOL"), &dir, &[], "").await.is_success());
        let resp = http
            .request(m("LOCK"), &dir)
            .header("Depth", "infinity")
            .header("Timeout", "Second-30")
            .header("Content-Type", "application/xml")
            .body(LOCK_BODY)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "LOCK: {}", resp.status());
        let token = resp.headers()["lock-token"].to_str().unwrap().to_string();
        let moved = send(&http, m("MOVE"), &f, &[("Destination", &format!("{dir}f.txt"))], "").await;
        assert!(!moved.is_success(), "a MOVE into the locked folder answered {moved}");
        assert!(server.root().join("f.txt").exists());
        let cond = format!("<{dir}> ({token})");
        let deleted = send(&http, Method::DELETE, &dir, &[("If", &cond)], "").await;
        assert!(deleted.is_success(), "DELETE with the token: {deleted}");
        send(&http, m("UNLOCK"), &dir, &[("Lock-Token", &token)], "").await;

        // `Overwrite: F` refuses a taken name.
        let g = format!("{base}g.txt");
        assert!(send(&http, Method::PUT, &g, &[], "g").await.is_success());
        let status = send(&http, m("MOVE"), &g, &[("Destination", &f), ("Overwrite", "F")], "").await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(fs::read(server.root().join("g.txt")).unwrap(), b"g");
    });
}

/// `delete_empty_folder` refuses a folder with a member, deletes an empty one, and leaves no lock behind.
fn delete_empty_folder_never_takes_a_member(server: Server) {
    let r = remote(&server.url());
    runtime().block_on(async {
        let root = ItemId::new("");
        let full = r.mkdir(&root, "full").await.unwrap();
        let src = tempfile::NamedTempFile::new().unwrap();
        fs::write(src.path(), b"keep me").unwrap();
        r.upload(
            UploadTarget::new(&full.id, "kept.txt", Precondition::Absent),
            UploadSource::file(src.path(), SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
        let e = r.delete_empty_folder(&full.id).await.unwrap_err();
        assert!(matches!(e, RemoteError::NotEmpty), "{e:?}");
        assert_eq!(fs::read(server.root().join("full/kept.txt")).unwrap(), b"keep me");

        let empty = r.mkdir(&root, "empty").await.unwrap();
        r.delete_empty_folder(&empty.id).await.unwrap();
        assert!(!server.root().join("empty").exists());
        // No lock of ours outlives the rmdir (nginx keeps locks on deleted paths until they time out).
        r.mkdir(&root, "empty").await.unwrap();
        r.upload(
            UploadTarget::new(&ItemId::new("empty"), "x", Precondition::Absent),
            UploadSource::file(src.path(), SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    });
}

/// A replace names the version it read and fails on another; creates never overwrite.
fn replace_and_create_are_conditional(server: Server) {
    let r = remote(&server.url());
    runtime().block_on(async {
        let root = ItemId::new("");
        let src = tempfile::NamedTempFile::new().unwrap();
        fs::write(src.path(), b"one").unwrap();
        let first = r
            .upload(
                UploadTarget::new(&root, "c.txt", Precondition::Absent),
                UploadSource::file(src.path(), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        let v1 = first
            .version
            .clone()
            .expect("a version for a file (nginx: built from its listing)");
        // A create of a taken name fails.
        fs::write(src.path(), b"other create").unwrap();
        let e = r
            .upload(
                UploadTarget::new(&root, "c.txt", Precondition::Absent),
                UploadSource::file(src.path(), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::AlreadyExists), "{e:?}");
        // A replace of what we read lands (at once: Apache's ETag is still weak).
        fs::write(src.path(), b"two!").unwrap();
        let second = r
            .upload(
                UploadTarget::new(&root, "c.txt", Precondition::Matches(v1.clone())),
                UploadSource::file(src.path(), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(fs::read(server.root().join("c.txt")).unwrap(), b"two!");
        // A replace of the old version fails and keeps the server's copy (the sizes differ, so even nginx's
        // whole-second ETag tells the versions apart).
        assert_ne!(second.version, Some(v1.clone()), "a new version after a replace");
        fs::write(src.path(), b"stale").unwrap();
        let e = r
            .upload(
                UploadTarget::new(&root, "c.txt", Precondition::Matches(v1)),
                UploadSource::file(src.path(), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::PreconditionFailed), "{e:?}");
        assert_eq!(fs::read(server.root().join("c.txt")).unwrap(), b"two!");
        // No temporary upload is left behind.
        let left: Vec<_> = fs::read_dir(server.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cloudmount"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

macro_rules! on_each_server {
    ($($check:ident),+ $(,)?) => {
        mod dav_server {
            use super::*;
            $( #[test] fn $check() { super::$check(Server::Dav(DavServer::start())); } )+
        }
        mod apache {
            use super::*;
            $( #[test] fn $check() { super::$check(Server::Apache(ApacheServer::start())); } )+
        }
        mod nginx {
            use super::*;
            $( #[test] fn $check() { super::$check(Server::Nginx(NginxServer::start())); } )+
        }
        mod lighttpd {
            use super::*;
            $( #[test] fn $check() { super::$check(Server::Lighttpd(LighttpdServer::start())); } )+
        }
    };
}

on_each_server!(
    server_enforces_what_cloudmount_relies_on,
    delete_empty_folder_never_takes_a_member,
    replace_and_create_are_conditional,
);

/// The gate folder cloudmount takes around a create on Apache (see `DavRemote::create_gate`): the FNV-1a hash of
/// the new item's id.
fn gate_name(id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(".cloudmount-create-{hash:016x}")
}

/// A create gate left behind by a client that stopped (older than a minute) is taken over, and one that is held
/// only delays a create (bounded), never blocks it: both creates land.
#[test]
fn apache_create_gates_left_behind_never_block_a_create() {
    let server = ApacheServer::start();
    let r = remote(&server.url());
    let stale = server.root().join(gate_name("stale.txt"));
    fs::create_dir(&stale).unwrap();
    let old = SystemTime::now() - Duration::from_secs(600);
    fs::File::open(&stale).unwrap().set_modified(old).unwrap();
    let fresh = server.root().join(gate_name("held.txt"));
    fs::create_dir(&fresh).unwrap();
    runtime().block_on(async {
        let root = ItemId::new("");
        let src = tempfile::NamedTempFile::new().unwrap();
        fs::write(src.path(), b"new").unwrap();
        let started = std::time::Instant::now();
        r.upload(
            UploadTarget::new(&root, "stale.txt", Precondition::Absent),
            UploadSource::file(src.path(), SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a stale gate was waited for"
        );
        r.upload(
            UploadTarget::new(&root, "held.txt", Precondition::Absent),
            UploadSource::file(src.path(), SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    });
    assert_eq!(fs::read(server.root().join("stale.txt")).unwrap(), b"new");
    assert_eq!(fs::read(server.root().join("held.txt")).unwrap(), b"new");
    assert!(!stale.exists(), "the stale gate is gone");
}
