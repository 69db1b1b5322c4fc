//! Metadata kept as WebDAV dead properties (`Remote::set_meta`, `DavRemote::probe_meta`), at the
//! remote level (no FUSE), against real servers: Apache mod_dav, WsgiDAV and lighttpd keep dead
//! properties; nginx (no PROPPATCH) and the in-process dav-server (`LocalFs` has none) do not,
//! and the probe must say so. Each check: set, list the folder, read back; a second client (another
//! machine) sees the same; values not in our format are ignored.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudmount::error::RemoteError;
use cloudmount::remote::{
    Entry, ItemId, Meta, MetaFields, Precondition, Remote, UploadCtx, UploadSource, UploadTarget,
};
use cloudmount::webdav::props::META_NS;
use cloudmount::webdav::DavRemote;
use common::apache::ApacheServer;
use common::dav::DavServer;
use common::lighttpd::LighttpdServer;
use common::nginx::NginxServer;
use common::wsgidav::WsgiDavServer;

/// One running server of any kind, kept alive for the test.
enum Server {
    Dav(DavServer),
    Apache(ApacheServer),
    Wsgi(WsgiDavServer),
    Nginx(NginxServer),
    Lighttpd(LighttpdServer),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Dav(s) => s.url(),
            Server::Apache(s) => s.url(),
            Server::Wsgi(s) => s.url(),
            Server::Nginx(s) => s.url(),
            Server::Lighttpd(s) => s.url(),
        }
    }
}

fn remote(url: &str) -> DavRemote {
    DavRemote::new(common::remote::dav_config(
        url,
        Duration::from_secs(30),
        Duration::from_secs(2),
    ))
    .unwrap()
}

fn id(s: &str) -> ItemId {
    ItemId::new(s)
}

fn staged(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Everything a remote can keep, with nanoseconds and a time before 1970.
fn full_meta() -> Meta {
    Meta {
        mode: Some(0o4751),
        uid: Some(1234),
        gid: Some(5678),
        mtime: Some(UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789)),
        atime: Some(UNIX_EPOCH + Duration::new(1_650_000_000, 1)),
        created: Some(UNIX_EPOCH - Duration::new(86_400, 5)),
        link_target: None,
    }
}

fn listed(entries: &[Entry], name: &str) -> Entry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not listed in {entries:?}"))
        .clone()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The probe.

fn probe_says(server: Server, keeps: bool) {
    rt().block_on(async {
        let r = remote(&server.url());
        assert_eq!(
            r.capabilities().kept_meta,
            MetaFields::NONE,
            "nothing is known before the probe"
        );
        let kept = r.probe_meta().await.unwrap();
        let want = if keeps {
            MetaFields::PROPERTIES
        } else {
            MetaFields::NONE
        };
        assert_eq!(kept, want);
        assert_eq!(r.capabilities().kept_meta, want);
        // The probe leaves nothing behind: a fresh client finds no probe property on the root.
        let again = remote(&server.url());
        assert_eq!(again.probe_meta().await.unwrap(), want, "a second probe agrees");
        assert!(
            again.list(&id("")).await.unwrap().is_empty(),
            "the probe left an item behind"
        );
    });
}

#[test]
fn probe_apache_keeps_dead_properties() {
    probe_says(Server::Apache(ApacheServer::start()), true);
}

#[test]
fn probe_wsgidav_keeps_dead_properties() {
    probe_says(Server::Wsgi(WsgiDavServer::start()), true);
}

#[test]
fn probe_lighttpd_keeps_dead_properties() {
    probe_says(Server::Lighttpd(LighttpdServer::start()), true);
}

#[test]
fn probe_nginx_keeps_none() {
    probe_says(Server::Nginx(NginxServer::start()), false);
}

#[test]
fn probe_dav_server_crate_keeps_none() {
    probe_says(Server::Dav(DavServer::start()), false);
}

// ---------------------------------------------------------------------------------------------
// Set, list, read back, from another client too.

fn kept_and_seen_by_another_client(server: Server) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = remote(&server.url());
        r.mkdir(&id(""), "d").await.unwrap();
        let file = r
            .upload(
                UploadTarget::new(&id("d"), "a b#.txt", Precondition::Absent),
                UploadSource::file(&staged(dir.path(), "f", b"hello"), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert!(file.meta.is_empty(), "a new file carries nothing: {:?}", file.meta);

        let meta = full_meta();
        let set = r
            .set_meta(&file.id, &meta, Precondition::Matches(file.version.clone().unwrap()))
            .await
            .unwrap();
        assert_eq!(set.meta, meta);
        assert_eq!(set.version, file.version, "metadata is not content");
        let folder_meta = Meta {
            mode: Some(0o700),
            mtime: Some(UNIX_EPOCH + Duration::new(1_000_000_000, 999_999_999)),
            ..Meta::default()
        };
        let d = r.set_meta(&id("d"), &folder_meta, Precondition::Any).await.unwrap();
        assert_eq!(d.meta, folder_meta);

        // The same PROPFIND that lists a folder brings it, to this client and to a fresh one.
        for (who, client) in [("this client", &r), ("a fresh client", &remote(&server.url()))] {
            let listed_file = listed(&client.list(&id("d")).await.unwrap(), "a b#.txt");
            assert_eq!(listed_file.meta, meta, "{who}: listing");
            assert_eq!(client.stat(&file.id).await.unwrap().meta, meta, "{who}: stat");
            assert_eq!(
                listed(&client.list(&id("")).await.unwrap(), "d").meta,
                folder_meta,
                "{who}"
            );
        }

        // A later change sets only what it holds.
        let chmod = Meta {
            mode: Some(0o600),
            ..Meta::default()
        };
        let after = r.set_meta(&file.id, &chmod, Precondition::Any).await.unwrap();
        assert_eq!(after.meta, meta.overlaid_with(&chmod));
        // chown of the user alone (the group given as -1, "unchanged").
        let chown = Meta {
            uid: Some(4321),
            ..Meta::default()
        };
        let after = r.set_meta(&file.id, &chown, Precondition::Any).await.unwrap();
        assert_eq!(after.meta, meta.overlaid_with(&chmod).overlaid_with(&chown));

        // Moved, the item keeps its metadata (WebDAV ids are paths: the new path carries it).
        let moved = r.rename(&file.id, &id(""), "moved.txt", false).await.unwrap();
        assert_eq!(moved.meta, after.meta, "MOVE keeps dead properties");
        assert_eq!(
            listed(&remote(&server.url()).list(&id("")).await.unwrap(), "moved.txt").meta,
            after.meta
        );
    });
}

#[test]
fn kept_and_seen_apache() {
    kept_and_seen_by_another_client(Server::Apache(ApacheServer::start()));
}

#[test]
fn kept_and_seen_wsgidav() {
    kept_and_seen_by_another_client(Server::Wsgi(WsgiDavServer::start()));
}

#[test]
fn kept_and_seen_lighttpd() {
    kept_and_seen_by_another_client(Server::Lighttpd(LighttpdServer::start()));
}

// ---------------------------------------------------------------------------------------------
// The modification time belongs to the content it was set for.

fn mtime_goes_when_another_client_rewrites(server: Server) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = remote(&server.url());
        let file = r
            .upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Absent),
                UploadSource::file(&staged(dir.path(), "f", b"one"), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        let meta = full_meta();
        r.set_meta(&file.id, &meta, Precondition::Any).await.unwrap();
        // Another machine (a client that knows nothing of our properties) rewrites the file.
        let other = remote(&server.url());
        let rewritten = other
            .upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Any),
                UploadSource::file(&staged(dir.path(), "g", b"two, longer"), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        let seen = listed(&r.list(&id("")).await.unwrap(), "f.txt");
        assert_eq!(
            seen.meta.mtime, None,
            "a stale mtime of ours must not hide the new content's time"
        );
        assert_eq!(
            (seen.meta.mode, seen.meta.uid, seen.meta.atime),
            (meta.mode, meta.uid, meta.atime),
            "a rewrite keeps mode, owner and the other times"
        );
        assert_eq!(rewritten.meta.mtime, None);
        // A set based on the version before the rewrite fails and changes nothing.
        let chmod = Meta {
            mode: Some(0o777),
            ..Meta::default()
        };
        let stale = r
            .set_meta(&file.id, &chmod, Precondition::Matches(file.version.clone().unwrap()))
            .await;
        assert!(matches!(stale, Err(RemoteError::PreconditionFailed)), "{stale:?}");
        assert_ne!(r.stat(&file.id).await.unwrap().meta.mode, Some(0o777));
        // Set again for the new content, it holds.
        let again = r
            .set_meta(&file.id, &meta, Precondition::Matches(rewritten.version.unwrap()))
            .await
            .unwrap();
        assert_eq!(again.meta.mtime, meta.mtime);
    });
}

#[test]
fn mtime_goes_with_foreign_rewrite_apache() {
    mtime_goes_when_another_client_rewrites(Server::Apache(ApacheServer::start()));
}

#[test]
fn mtime_goes_with_foreign_rewrite_wsgidav() {
    mtime_goes_when_another_client_rewrites(Server::Wsgi(WsgiDavServer::start()));
}

#[test]
fn mtime_goes_with_foreign_rewrite_lighttpd() {
    mtime_goes_when_another_client_rewrites(Server::Lighttpd(LighttpdServer::start()));
}

// ---------------------------------------------------------------------------------------------
// Values that are not ours.

/// PROPPATCH `props` (each in a `<D:set>` of its own, with `m:` bound to our namespace and `o:`
/// to another) on `url`, as another client would.
async fn foreign_proppatch(url: &str, props: &[&str]) {
    let sets: String = props
        .iter()
        .map(|p| format!("<D:set><D:prop>{p}</D:prop></D:set>"))
        .collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:m="{META_NS}" xmlns:o="urn:example:other">{sets}</D:propertyupdate>"#
    );
    let resp = reqwest::Client::new()
        .request(reqwest::Method::from_bytes(b"PROPPATCH").unwrap(), url)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "PROPPATCH {url}: {}", resp.status());
}

fn foreign_and_malformed_values_are_ignored(server: Server) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = remote(&server.url());
        for name in ["a", "b"] {
            r.upload(
                UploadTarget::new(&id(""), name, Precondition::Absent),
                UploadSource::file(&staged(dir.path(), name, b"x"), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        }
        foreign_proppatch(
            &format!("{}a", server.url()),
            &[
                "<m:mode>rwxr-xr-x</m:mode>",
                "<m:uid>-1</m:uid>",
                "<m:gid>12<m:x/>ab</m:gid>", // lighttpd keeps the text alone: 12ab
                "<m:mtime>Sat, 22 Nov 2025 10:00:00 GMT</m:mtime>",
                "<m:atime>1e9</m:atime>",
                "<m:created>0x10</m:created>",
                "<o:mode>0755</o:mode>",
                "<m:stamp>now</m:stamp>",
            ],
        )
        .await;
        // Another namespace's properties with our names, and a value of ours beside them.
        foreign_proppatch(
            &format!("{}b", server.url()),
            &[
                "<o:uid>7</o:uid>",
                "<o:mode>0700</o:mode>",
                "<m:mode>100644</m:mode>",
                "<m:gid>42</m:gid>",
            ],
        )
        .await;
        let entries = r.list(&id("")).await.unwrap();
        assert_eq!(listed(&entries, "a").meta, Meta::default());
        assert_eq!(
            listed(&entries, "b").meta,
            Meta {
                gid: Some(42),
                ..Meta::default()
            }
        );
        assert_eq!(r.stat(&id("a")).await.unwrap().meta, Meta::default());
        // Ours, set over the foreign values, wins.
        let meta = full_meta();
        assert_eq!(r.set_meta(&id("a"), &meta, Precondition::Any).await.unwrap().meta, meta);
    });
}

#[test]
fn foreign_values_ignored_apache() {
    foreign_and_malformed_values_are_ignored(Server::Apache(ApacheServer::start()));
}

#[test]
fn foreign_values_ignored_wsgidav() {
    foreign_and_malformed_values_are_ignored(Server::Wsgi(WsgiDavServer::start()));
}

#[test]
fn foreign_values_ignored_lighttpd() {
    foreign_and_malformed_values_are_ignored(Server::Lighttpd(LighttpdServer::start()));
}

// ---------------------------------------------------------------------------------------------
// Servers that keep nothing: set_meta keeps nothing and says so through the capabilities, and
// listings (which now ask for our properties) work as before.

fn nothing_kept_nothing_broken(server: Server) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let r = remote(&server.url());
        let file = r
            .upload(
                UploadTarget::new(&id(""), "f", Precondition::Absent),
                UploadSource::file(&staged(dir.path(), "f", b"abc"), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        let e = r.set_meta(&file.id, &full_meta(), Precondition::Any).await.unwrap();
        assert_eq!(e.meta, Meta::default());
        assert_eq!(r.capabilities().kept_meta, MetaFields::NONE);
        let listed_file = listed(&r.list(&id("")).await.unwrap(), "f");
        assert_eq!((listed_file.size, listed_file.meta), (3, Meta::default()));
        let bad = Meta {
            mode: Some(0o170000),
            ..Meta::default()
        };
        assert!(r.set_meta(&file.id, &bad, Precondition::Any).await.is_err());
    });
}

#[test]
fn nothing_kept_nginx() {
    nothing_kept_nothing_broken(Server::Nginx(NginxServer::start()));
}

#[test]
fn nothing_kept_dav_server_crate() {
    nothing_kept_nothing_broken(Server::Dav(DavServer::start()));
}

// ---------------------------------------------------------------------------------------------
// A server that says yes and keeps nothing (rclone serve webdav answers 207 to any PROPPATCH):
// only the read-back counts.

#[tokio::test]
async fn a_proppatch_that_says_yes_and_keeps_nothing_is_no() {
    use common::scripted::{multistatus_entry, proppatch_answer, Scripted};
    let server = Scripted::start(|req| match req.method.as_str() {
        "PROPPATCH" => proppatch_answer("/", "probe", "200 OK"),
        "PROPFIND" => multistatus_entry("/", None, "Sat, 22 Nov 2025 10:00:00 GMT", "e1"),
        other => panic!("unexpected {other}"),
    })
    .await;
    let r = remote(&server.url);
    assert_eq!(r.probe_meta().await.unwrap(), MetaFields::NONE);
    assert_eq!(r.capabilities().kept_meta, MetaFields::NONE);
    // Asked for by name, never allprop.
    let propfinds = server.seen_with("PROPFIND");
    assert!(propfinds.iter().all(|s| !s.text().contains("allprop")));
    // Known once: a second call asks nothing.
    let before = server.seen().len();
    r.probe_meta().await.unwrap();
    assert_eq!(server.seen().len(), before);
}
