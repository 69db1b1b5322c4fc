//! The WebDAV remote's write operations, each test run against the in-process dav-server, Apache
//! mod_dav and WsgiDAV (same body; WsgiDAV lets clients set modification times and does not
//! enforce `If-Match` on deleted items), plus scripted servers for what none of them shows:
//! Nextcloud's `X-OC-Mtime`, servers that ignore `If-Match` altogether (rclone, nginx), throttling
//! and failures in the middle of an upload, slow links, servers that lie about PROPPATCH.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloudmount::error::RemoteError;
use cloudmount::remote::{
    Entry, EntryKind, ItemId, Precondition, Remote, UploadCtx, UploadSource, UploadTarget, Version,
};
use cloudmount::webdav::{DavConfig, DavRemote};
use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::{self, assert_same_bytes};
use common::scripted::{multistatus_entry, proppatch_answer, reply, Scripted};
use common::wsgidav::WsgiDavServer;

// ---------------------------------------------------------------------------------------------
// One body, two servers.

enum Server {
    Dav(DavServer),
    Apache(ApacheServer),
    Wsgi(WsgiDavServer),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Dav(s) => s.url(),
            Server::Apache(s) => s.url(),
            Server::Wsgi(s) => s.url(),
        }
    }

    fn root(&self) -> &Path {
        match self {
            Server::Dav(s) => s.root(),
            Server::Apache(s) => s.root(),
            Server::Wsgi(s) => s.root(),
        }
    }

    /// Whether the server enforces `If-Match`/`If-None-Match` in every case (WsgiDAV lets an
    /// `If-Match` PUT recreate a deleted item, which the probe detects).
    fn enforces_preconditions(&self) -> bool {
        !matches!(self, Server::Wsgi(_))
    }

    /// Whether the server cuts a MOVE's destination at `?` or `;` (WsgiDAV decodes the header
    /// before parsing it as a URL).
    fn cuts_destinations(&self) -> bool {
        matches!(self, Server::Wsgi(_))
    }

    /// Whether the server lets clients set modification times.
    fn keeps_mtime(&self) -> bool {
        matches!(self, Server::Wsgi(_))
    }

    /// Put a file server-side, as another client would (owned like the served dir, so that the
    /// server can change it afterwards).
    fn put(&self, rel: &str, data: &[u8]) -> PathBuf {
        let path = files::put_file(self.root(), rel, data);
        self.own(&path);
        path
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let path = files::put_dir(self.root(), rel);
        self.own(&path);
        path
    }

    /// Hand `path` and the folders between it and the root to the user the server runs as.
    fn own(&self, path: &Path) {
        let meta = fs::metadata(self.root()).unwrap();
        let mut p = path;
        while p != self.root() {
            std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid())).unwrap();
            p = p.parent().unwrap();
        }
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.root().join(rel)).unwrap_or_else(|e| panic!("server-side {rel:?}: {e}"))
    }

    fn exists(&self, rel: &str) -> bool {
        self.root().join(rel).exists()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Run one test body against dav-server, Apache and WsgiDAV.
macro_rules! on_every_server {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn dav_server() {
                let server = super::Server::Dav(super::DavServer::start());
                super::runtime().block_on(super::$name(&server));
            }

            #[test]
            fn apache() {
                let server = super::Server::Apache(super::ApacheServer::start());
                super::runtime().block_on(super::$name(&server));
            }

            #[test]
            fn wsgidav() {
                let server = super::Server::Wsgi(super::WsgiDavServer::start());
                super::runtime().block_on(super::$name(&server));
            }
        }
    )*};
}

on_every_server!(
    create_replace_and_preconditions,
    uploads_into_missing_folders_are_not_found,
    large_upload_is_streamed_and_byte_exact,
    mkdir_new_existing_and_missing_parent,
    delete_files_and_trees,
    rename_within_across_and_over,
    set_mtime_as_the_server_allows,
    odd_names_on_every_operation,
);

// ---------------------------------------------------------------------------------------------
// Helpers.

fn config(url: &str, timeout: Duration) -> DavConfig {
    common::remote::dav_config(url, timeout, Duration::from_secs(2))
}

/// A remote with a generous deadline: these tests must pass on a loaded 2-core box.
fn remote(url: &str) -> DavRemote {
    DavRemote::new(config(url, Duration::from_secs(30))).unwrap()
}

fn id(s: &str) -> ItemId {
    ItemId::new(s)
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Local staging files for uploads.
struct Staging(tempfile::TempDir);

impl Staging {
    fn new() -> Staging {
        Staging(tempfile::tempdir().unwrap())
    }

    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.path().join(name);
        fs::write(&p, data).unwrap();
        p
    }
}

fn names(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.name.clone()).collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

macro_rules! assert_err {
    ($res:expr, $pat:pat) => {
        match $res {
            Err($pat) => {}
            other => panic!("expected {}, got {other:?}", stringify!($pat)),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Tests against both servers.

async fn create_replace_and_preconditions(server: &Server) {
    let r = remote(&server.url());
    let stage = Staging::new();
    let one = stage.file("one", b"first version");
    let two = stage.file("two", b"second version, longer");
    let three = stage.file("three", b"third");

    // Create.
    let e1 = r
        .upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Absent),
            UploadSource::file(&one, t(1_000_000_000)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e1.id, id("doc.txt"));
    assert_eq!(e1.name, "doc.txt");
    assert_eq!(e1.kind, EntryKind::File);
    assert_eq!(e1.size, 13);
    assert_eq!(server.read("doc.txt"), b"first version");
    let v1 = e1.version.clone().expect("every server here gives ETags");
    // The first upload probed the server and learnt about mtimes.
    assert_eq!(r.capabilities().conditional_writes, server.enforces_preconditions());
    assert_eq!(r.capabilities().set_mtime, server.keeps_mtime());
    assert_eq!(e1.mtime == t(1_000_000_000), server.keeps_mtime(), "{:?}", e1.mtime);

    // Create-only on an existing name, with other bytes.
    assert_err!(
        r.upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Absent),
            UploadSource::file(&two, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::AlreadyExists
    );
    assert_eq!(server.read("doc.txt"), b"first version");
    // A create that already landed (a retry after a lost answer) is recognised by its bytes.
    let again = r
        .upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Absent),
            UploadSource::file(&one, t(1_000_000_000)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(again.version, e1.version);

    // Replace what we saw, right after writing it: on Apache the ETag is still weak, which never
    // satisfies If-Match, so this also covers that trap.
    let e2 = r
        .upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Matches(v1.clone())),
            UploadSource::file(&two, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e2.size, 22);
    assert_eq!(server.read("doc.txt"), b"second version, longer");
    let v2 = e2.version.clone().unwrap();
    assert_ne!(v2, v1);

    // A stale version: refused, nothing written.
    assert_err!(
        r.upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Matches(v1.clone())),
            UploadSource::file(&three, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::PreconditionFailed
    );
    assert_eq!(server.read("doc.txt"), b"second version, longer");
    // A made-up version likewise.
    assert_err!(
        r.upload(
            UploadTarget::new(
                &id(""),
                "doc.txt",
                Precondition::Matches(Version::from_etag("\"made-up\""))
            ),
            UploadSource::file(&three, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::PreconditionFailed
    );
    // A replace whose bytes are already there (it landed before) succeeds.
    let same = r
        .upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Matches(v1.clone())),
            UploadSource::file(&two, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(same.size, 22);

    // Someone else changes the file: our version is stale.
    let e3 = r.stat(&id("doc.txt")).await.unwrap();
    let path = server.put("doc.txt", b"changed elsewhere!");
    files::set_mtime_ago(&path, 3600);
    assert_err!(
        r.upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Matches(e3.version.clone().unwrap())),
            UploadSource::file(&three, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::PreconditionFailed
    );
    assert_eq!(server.read("doc.txt"), b"changed elsewhere!");
    // The version now on the server works, even for a file untouched for an hour (strong ETag).
    let fresh = r.stat(&id("doc.txt")).await.unwrap();
    let e4 = r
        .upload(
            UploadTarget::new(&id(""), "doc.txt", Precondition::Matches(fresh.version.unwrap())),
            UploadSource::file(&three, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e4.size, 5);
    assert_eq!(server.read("doc.txt"), b"third");

    // Any: replace whatever is there, or create.
    r.upload(
        UploadTarget::new(&id(""), "doc.txt", Precondition::Any),
        UploadSource::file(&one, t(1)),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    assert_eq!(server.read("doc.txt"), b"first version");
    r.upload(
        UploadTarget::new(&id(""), "other.txt", Precondition::Any),
        UploadSource::file(&two, t(1)),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    assert_eq!(server.read("other.txt"), b"second version, longer");

    // A deleted file cannot be replaced by version.
    fs::remove_file(server.root().join("other.txt")).unwrap();
    assert_err!(
        r.upload(
            UploadTarget::new(&id(""), "other.txt", Precondition::Matches(v2)),
            UploadSource::file(&one, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::PreconditionFailed
    );
    assert!(!server.exists("other.txt"));

    // An empty file.
    let empty = stage.file("empty", b"");
    let e = r
        .upload(
            UploadTarget::new(&id(""), "empty.txt", Precondition::Absent),
            UploadSource::file(&empty, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.size, 0);
    assert_eq!(server.read("empty.txt"), b"");

    // A local file that cannot be read is the local side's error, and nothing is created.
    assert_err!(
        r.upload(
            UploadTarget::new(&id(""), "ghost.txt", Precondition::Any),
            UploadSource::file(&stage.0.path().join("no such file"), t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::LocalFile(_)
    );
    assert!(!server.exists("ghost.txt"));

    // No probe file was left behind.
    let listed = r.list(&id("")).await.unwrap();
    assert_eq!(names(&listed), set(["doc.txt", "empty.txt"]));
}

async fn uploads_into_missing_folders_are_not_found(server: &Server) {
    // Apache and WsgiDAV answer 409, dav-server 409 (or 412 for a create-only PUT): all are
    // NotFound.
    let r = remote(&server.url());
    let stage = Staging::new();
    let f = stage.file("f", b"data");
    for pre in [Precondition::Absent, Precondition::Any] {
        assert_err!(
            r.upload(
                UploadTarget::new(&id("no such dir"), "f.txt", pre.clone()),
                UploadSource::file(&f, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::NotFound
        );
    }
    assert_err!(
        r.upload(
            UploadTarget::new(
                &id("no such dir"),
                "f.txt",
                Precondition::Matches(Version::from_etag("x"))
            ),
            UploadSource::file(&f, t(1)),
            &UploadCtx::default()
        )
        .await,
        RemoteError::PreconditionFailed
    );
    assert!(!server.exists("no such dir"));
    // Names that are not names.
    for bad in ["", ".", "..", "a/b"] {
        assert_err!(
            r.upload(
                UploadTarget::new(&id(""), bad, Precondition::Any),
                UploadSource::file(&f, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::Unsupported(_)
        );
    }
}

async fn large_upload_is_streamed_and_byte_exact(server: &Server) {
    const LEN: u64 = 64 << 20;
    let stage = Staging::new();
    let src = files::put_random_file(stage.0.path(), "big.bin", 7, LEN);
    let r = remote(&server.url());
    let e = r
        .upload(
            UploadTarget::new(&id(""), "big.bin", Precondition::Absent),
            UploadSource::file(&src, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.size, LEN);
    // Compare the server's file with the local one chunk by chunk.
    files::assert_same_files(&server.root().join("big.bin"), &src, "the uploaded file on the server");
    // And it reads back through the remote too.
    let tail = r.read(&e.id, e.version.as_ref(), LEN - 10, 100).await.unwrap();
    let local = fs::read(&src).unwrap();
    assert_same_bytes(&tail, &local[local.len() - 10..], "tail");
}

async fn mkdir_new_existing_and_missing_parent(server: &Server) {
    let r = remote(&server.url());
    let d = r.mkdir(&id(""), "new dir").await.unwrap();
    assert_eq!(d.id, id("new dir"));
    assert_eq!(d.name, "new dir");
    assert_eq!(d.kind, EntryKind::Directory);
    assert!(server.root().join("new dir").is_dir());
    let sub = r.mkdir(&d.id, "sub").await.unwrap();
    assert_eq!(sub.id, id("new dir/sub"));
    assert!(server.root().join("new dir/sub").is_dir());

    assert_err!(r.mkdir(&id(""), "new dir").await, RemoteError::AlreadyExists);
    server.put("file.txt", b"x");
    assert_err!(r.mkdir(&id(""), "file.txt").await, RemoteError::AlreadyExists);
    assert_err!(r.mkdir(&id("missing"), "x").await, RemoteError::NotFound);
    assert!(!server.exists("missing"));
    assert_err!(r.mkdir(&id(""), "..").await, RemoteError::Unsupported(_));
    assert!(r.list(&d.id).await.unwrap().iter().all(|e| e.name == "sub"));
}

async fn delete_files_and_trees(server: &Server) {
    let r = remote(&server.url());
    server.put("a.txt", b"a");
    server.mkdir("tree/deeper/deepest");
    server.put("tree/one.txt", b"1");
    server.put("tree/deeper/two.txt", b"2");
    server.put("tree/deeper/deepest/three.txt", b"3");
    server.put("keep/k.txt", b"k");

    r.delete(&id("a.txt")).await.unwrap();
    assert!(!server.exists("a.txt"));
    r.delete(&id("tree")).await.unwrap();
    assert!(!server.exists("tree"));
    assert_eq!(names(&r.list(&id("")).await.unwrap()), set(["keep"]));
    assert_err!(r.delete(&id("a.txt")).await, RemoteError::NotFound);
    assert_err!(r.delete(&id("tree/one.txt")).await, RemoteError::NotFound);
    assert!(r.delete(&id("")).await.is_err(), "the root is never deleted");
    assert_eq!(server.read("keep/k.txt"), b"k");
    // An empty folder, found by stat afterwards as gone.
    server.mkdir("empty");
    r.delete(&id("empty")).await.unwrap();
    assert_err!(r.stat(&id("empty")).await, RemoteError::NotFound);
}

async fn rename_within_across_and_over(server: &Server) {
    let r = remote(&server.url());
    server.put("a.txt", b"A");
    server.put("b.txt", b"B");
    server.put("dir1/inner.txt", b"inner");
    server.mkdir("dir2");

    // Within a folder.
    let e = r.rename(&id("a.txt"), &id(""), "a2.txt", false).await.unwrap();
    assert_eq!(e.id, id("a2.txt"));
    assert_eq!(e.size, 1);
    assert!(!server.exists("a.txt"));
    assert_eq!(server.read("a2.txt"), b"A");
    // Across folders.
    let e = r.rename(&id("a2.txt"), &id("dir2"), "a3.txt", false).await.unwrap();
    assert_eq!(e.id, id("dir2/a3.txt"));
    assert_eq!(server.read("dir2/a3.txt"), b"A");
    // Over an existing file: refused without replace, both intact.
    server.put("dir2/b.txt", b"other B");
    assert_err!(
        r.rename(&id("b.txt"), &id("dir2"), "b.txt", false).await,
        RemoteError::AlreadyExists
    );
    assert_eq!(server.read("b.txt"), b"B");
    assert_eq!(server.read("dir2/b.txt"), b"other B");
    // With replace.
    let e = r.rename(&id("b.txt"), &id("dir2"), "b.txt", true).await.unwrap();
    assert_eq!(e.size, 1);
    assert_eq!(server.read("dir2/b.txt"), b"B");
    assert!(!server.exists("b.txt"));

    // A folder with its content.
    let e = r.rename(&id("dir1"), &id("dir2"), "moved dir", false).await.unwrap();
    assert_eq!(e.id, id("dir2/moved dir"));
    assert_eq!(e.kind, EntryKind::Directory);
    assert_eq!(server.read("dir2/moved dir/inner.txt"), b"inner");
    assert!(!server.exists("dir1"));
    let inner = r.list(&e.id).await.unwrap();
    assert_eq!(names(&inner), set(["inner.txt"]));
    assert_eq!(inner[0].id, id("dir2/moved dir/inner.txt"));

    // A folder over a non-empty folder: never, even with replace (POSIX: ENOTEMPTY/EEXIST).
    server.put("full/precious.txt", b"precious");
    assert_err!(
        r.rename(&id("dir2/moved dir"), &id(""), "full", true).await,
        RemoteError::AlreadyExists
    );
    assert_eq!(server.read("full/precious.txt"), b"precious");
    assert_eq!(server.read("dir2/moved dir/inner.txt"), b"inner");
    // Over an empty one with replace: yes.
    server.mkdir("hollow");
    let e = r.rename(&id("dir2/moved dir"), &id(""), "hollow", true).await.unwrap();
    assert_eq!(e.kind, EntryKind::Directory);
    assert_eq!(server.read("hollow/inner.txt"), b"inner");
    assert!(!server.exists("dir2/moved dir"));

    // To itself: nothing happens.
    let same = r.rename(&id("hollow"), &id(""), "hollow", false).await.unwrap();
    assert_eq!(same.id, id("hollow"));
    // Missing source, missing destination folder.
    assert_err!(r.rename(&id("nope"), &id(""), "x", false).await, RemoteError::NotFound);
    assert_err!(
        r.rename(&id("hollow/inner.txt"), &id("no dir"), "x", false).await,
        RemoteError::NotFound
    );
    assert_eq!(server.read("hollow/inner.txt"), b"inner");
}

async fn set_mtime_as_the_server_allows(server: &Server) {
    // WsgiDAV lets a client set getlastmodified; dav-server and Apache refuse, and say so.
    let r = remote(&server.url());
    let path = server.put("f.txt", b"x");
    server.mkdir("d");
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(!r.capabilities().set_mtime, "not known before trying");
    if server.keeps_mtime() {
        let e = r.set_mtime(&id("f.txt"), t(1_000_000_000)).await.unwrap();
        assert_eq!(e.mtime, t(1_000_000_000));
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), t(1_000_000_000));
        assert!(r.capabilities().set_mtime);
        let e = r.set_mtime(&id("d"), t(1_100_000_000)).await.unwrap();
        assert_eq!(e.mtime, t(1_100_000_000), "folders too");
        assert_eq!(e.kind, EntryKind::Directory);
        assert_err!(r.set_mtime(&id("missing"), t(1)).await, RemoteError::NotFound);
        // Uploads keep the local time.
        let stage = Staging::new();
        let src = stage.file("s", b"with a time");
        let e = r
            .upload(
                UploadTarget::new(&id("d"), "kept.txt", Precondition::Absent),
                UploadSource::file(&src, t(1_200_000_000)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.mtime, t(1_200_000_000));
        assert_eq!(
            fs::metadata(server.root().join("d/kept.txt"))
                .unwrap()
                .modified()
                .unwrap(),
            t(1_200_000_000)
        );
    } else {
        assert_err!(
            r.set_mtime(&id("f.txt"), t(1_000_000_000)).await,
            RemoteError::Unsupported(_)
        );
        assert!(!r.capabilities().set_mtime);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        // Learnt: the next call fails at once.
        assert_err!(
            r.set_mtime(&id("f.txt"), t(1_000_000_000)).await,
            RemoteError::Unsupported(_)
        );
    }
}

async fn odd_names_on_every_operation(server: &Server) {
    const ODD: &[&str] = &[
        "a b.txt",
        "hash#tag.txt",
        "100%.txt",
        "%41%42.txt",
        "a+b.txt",
        "what?.txt",
        "ünïcödé 日本語 🎉.txt",
        "[x] {y} & ;=,'.txt",
    ];
    let r = remote(&server.url());
    let stage = Staging::new();
    for (i, name) in ODD.iter().enumerate() {
        let data = format!("content {i} of {name}");
        let src = stage.file(&format!("s{i}"), data.as_bytes());
        let dir_name = format!("dir {name}");
        let dir = r.mkdir(&id(""), &dir_name).await.unwrap();
        assert_eq!(dir.name, dir_name);
        assert!(server.root().join(&dir_name).is_dir(), "{dir_name:?}");

        let e = r
            .upload(
                UploadTarget::new(&dir.id, name, Precondition::Absent),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.name, *name);
        assert_eq!(e.id.as_str(), format!("{dir_name}/{name}"));
        assert_eq!(server.read(&format!("{dir_name}/{name}")), data.as_bytes());
        let e = r
            .upload(
                UploadTarget::new(&dir.id, name, Precondition::Matches(e.version.clone().unwrap())),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.read(&e.id, None, 0, 1000).await.unwrap(), data.as_bytes());

        let moved_name = format!("{name} moved");
        if server.cuts_destinations() && (name.contains('?') || name.contains(';')) {
            // WsgiDAV moves it somewhere else: reported as the protocol error it is, never as
            // success or as "not found". Clean up where it went.
            assert_err!(
                r.rename(&e.id, &id(""), &moved_name, false).await,
                RemoteError::Protocol(_)
            );
            for stray in r.list(&id("")).await.unwrap() {
                r.delete(&stray.id).await.unwrap();
            }
            continue;
        }
        let moved = r.rename(&e.id, &id(""), &moved_name, false).await.unwrap();
        assert_eq!(moved.name, moved_name);
        assert_eq!(server.read(&moved_name), data.as_bytes());
        let dir_moved = r
            .rename(&dir.id, &id(""), &format!("{dir_name} moved"), false)
            .await
            .unwrap();
        assert_eq!(dir_moved.kind, EntryKind::Directory);

        let _ = r.set_mtime(&moved.id, t(1_000_000_000)).await;
        r.delete(&moved.id).await.unwrap();
        assert!(!server.exists(&moved_name), "{moved_name:?}");
        r.delete(&dir_moved.id).await.unwrap();
        assert!(!server.exists(&format!("{dir_name} moved")));
    }
    assert!(r.list(&id("")).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Scripted servers.

fn run<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// A tiny in-memory WebDAV file for scripted servers: one file at `/f.txt` with a modification
/// time, plus knobs for how the server treats mtimes.
#[derive(Default)]
struct OneFile {
    exists: bool,
    size: u64,
    mtime: u64,
    etag: u64,
}

impl OneFile {
    fn propfind(&self) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        if !self.exists {
            return reply(404, &[], "");
        }
        multistatus_entry(
            "/f.txt",
            Some(self.size),
            &httpdate::fmt_http_date(t(self.mtime)),
            &format!("e{}", self.etag),
        )
    }
}

#[test]
fn set_mtime_where_the_server_allows_it() {
    // WsgiDAV-like: PROPPATCH of getlastmodified sets it.
    run(async {
        let state = Arc::new(Mutex::new(OneFile {
            exists: true,
            size: 3,
            mtime: 1_700_000_000,
            etag: 1,
        }));
        let s = state.clone();
        let server = Scripted::start(move |req| {
            let mut f = s.lock().unwrap();
            match req.method.as_str() {
                "PROPFIND" => f.propfind(),
                "PROPPATCH" => {
                    let text = req.text();
                    assert!(text.contains("getlastmodified"), "{text}");
                    let date = text.split("getlastmodified>").nth(1).unwrap().trim_end_matches("</D:");
                    let when = httpdate::parse_http_date(date).unwrap();
                    f.mtime = when.duration_since(UNIX_EPOCH).unwrap().as_secs();
                    f.etag += 1;
                    proppatch_answer("/f.txt", "getlastmodified", "200 OK")
                }
                other => panic!("unexpected {other}"),
            }
        })
        .await;
        let r = remote(&server.url);
        assert!(!r.capabilities().set_mtime, "not known before trying");
        let e = r.set_mtime(&id("f.txt"), t(1_000_000_000)).await.unwrap();
        assert_eq!(e.mtime, t(1_000_000_000));
        assert_eq!(e.version, Some(Version::from_etag("e2")));
        assert!(r.capabilities().set_mtime);
        // Sub-second parts are cut, as HTTP dates have none.
        let e = r
            .set_mtime(&id("f.txt"), t(1_200_000_000) + Duration::from_millis(700))
            .await
            .unwrap();
        assert_eq!(e.mtime, t(1_200_000_000));
        assert_eq!(state.lock().unwrap().mtime, 1_200_000_000);
        // Times HTTP dates cannot carry.
        assert_err!(
            r.set_mtime(&id("f.txt"), UNIX_EPOCH - Duration::from_secs(10)).await,
            RemoteError::Unsupported(_)
        );
    });
}

#[test]
fn a_server_that_says_yes_and_keeps_its_mtime_is_unsupported() {
    run(async {
        let state = Arc::new(Mutex::new(OneFile {
            exists: true,
            size: 3,
            mtime: 1_700_000_000,
            etag: 1,
        }));
        let s = state.clone();
        let server = Scripted::start(move |req| match req.method.as_str() {
            "PROPFIND" => s.lock().unwrap().propfind(),
            "PROPPATCH" => proppatch_answer("/f.txt", "getlastmodified", "200 OK"),
            other => panic!("unexpected {other}"),
        })
        .await;
        let r = remote(&server.url);
        assert_err!(
            r.set_mtime(&id("f.txt"), t(1_000_000_000)).await,
            RemoteError::Unsupported(_)
        );
        assert!(!r.capabilities().set_mtime);
        let patches = server.seen_with("PROPPATCH").len();
        assert_err!(
            r.set_mtime(&id("f.txt"), t(1_000_000_000)).await,
            RemoteError::Unsupported(_)
        );
        assert_eq!(server.seen_with("PROPPATCH").len(), patches, "not asked again");
    });
}

#[test]
fn nextcloud_keeps_x_oc_mtime_and_takes_lastmodified() {
    // Nextcloud/ownCloud: PUT keeps X-OC-Mtime and says so; PROPPATCH of getlastmodified is
    // refused (403), of DAV:lastmodified (Unix seconds) accepted.
    run(async {
        let state = Arc::new(Mutex::new(OneFile::default()));
        let s = state.clone();
        let server = Scripted::start(move |req| {
            let mut f = s.lock().unwrap();
            match req.method.as_str() {
                "PUT" if req.path.contains("cloudmount-probe") => reply(412, &[], ""),
                "PUT" => {
                    let mtime: u64 = req.header("x-oc-mtime").unwrap().parse().unwrap();
                    let created = !f.exists;
                    *f = OneFile {
                        exists: true,
                        size: req.body_len,
                        mtime,
                        etag: f.etag + 1,
                    };
                    reply(if created { 201 } else { 204 }, &[("x-oc-mtime", "accepted")], "")
                }
                "PROPFIND" => f.propfind(),
                "PROPPATCH" => {
                    let text = req.text();
                    if text.contains("getlastmodified") {
                        return proppatch_answer("/f.txt", "getlastmodified", "403 Forbidden");
                    }
                    let secs = text.split("lastmodified>").nth(1).unwrap().trim_end_matches("</D:");
                    f.mtime = secs.parse().unwrap();
                    f.etag += 1;
                    proppatch_answer("/f.txt", "lastmodified", "200 OK")
                }
                other => panic!("unexpected {other}"),
            }
        })
        .await;
        let r = remote(&server.url);
        let stage = Staging::new();
        let src = stage.file("f", b"hello");
        let e = r
            .upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Absent),
                UploadSource::file(&src, t(1_000_000_000)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.mtime, t(1_000_000_000));
        assert_eq!(e.size, 5);
        assert!(server.seen_with("PROPPATCH").is_empty(), "X-OC-Mtime was enough");
        let put = server
            .seen_with("PUT")
            .into_iter()
            .find(|p| p.path == "/f.txt")
            .unwrap();
        assert_eq!(put.header("if-none-match").as_deref(), Some("*"));
        assert_eq!(put.header("content-length").as_deref(), Some("5"));
        assert!(r.capabilities().conditional_writes);

        let e = r.set_mtime(&id("f.txt"), t(1_100_000_000)).await.unwrap();
        assert_eq!(e.mtime, t(1_100_000_000));
        assert!(r.capabilities().set_mtime);
        let patches = server.seen_with("PROPPATCH");
        assert!(patches[0]
            .text()
            .contains("<D:lastmodified>1100000000</D:lastmodified>"));
    });
}

#[test]
fn servers_that_ignore_if_match_are_probed_and_checked_by_hand() {
    // rclone and nginx create the probe file instead of answering 412: conditional writes are
    // reported false, the probe file is deleted, and preconditions are checked by PROPFIND.
    run(async {
        let state = Arc::new(Mutex::new(OneFile {
            exists: true,
            size: 5,
            mtime: 1_700_000_000,
            etag: 1,
        }));
        let s = state.clone();
        let server = Scripted::start(move |req| {
            let mut f = s.lock().unwrap();
            match (req.method.as_str(), req.path.as_str()) {
                ("PUT", p) if p.contains("cloudmount-probe") => reply(201, &[], ""),
                ("DELETE", p) if p.contains("cloudmount-probe") => reply(204, &[], ""),
                ("PROPFIND", "/f.txt") => f.propfind(),
                ("PROPFIND", _) => reply(404, &[], ""),
                ("PUT", "/f.txt") => {
                    f.size = req.body_len;
                    f.etag += 1;
                    reply(204, &[], "")
                }
                ("PROPPATCH", _) => reply(405, &[], ""),
                // A server without locks: replaces go without one.
                ("LOCK", _) => reply(405, &[], ""),
                (m, p) => panic!("unexpected {m} {p}"),
            }
        })
        .await;
        let r = remote(&server.url);
        let stage = Staging::new();
        let src = stage.file("f", b"other bytes");
        // The name is taken: refused before sending anything.
        assert_err!(
            r.upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Absent),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::AlreadyExists
        );
        assert!(!r.capabilities().conditional_writes);
        assert_eq!(server.seen_with("DELETE").len(), 1, "the probe file is removed");
        assert!(
            server
                .seen_with("PUT")
                .iter()
                .all(|p| p.path.contains("cloudmount-probe")),
            "no PUT of f.txt"
        );
        // A stale version: refused before sending anything.
        assert_err!(
            r.upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Matches(Version::from_etag("e0"))),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::PreconditionFailed
        );
        assert_eq!(server.seen_with("PUT").len(), 1);
        // The right version goes through (with If-Match, which this server ignores anyway).
        let e = r
            .upload(
                UploadTarget::new(&id(""), "f.txt", Precondition::Matches(Version::from_etag("e1"))),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.size, 11);
        let put = server.seen_with("PUT").pop().unwrap();
        assert_eq!(put.header("if-match").as_deref(), Some("\"e1\""));
        assert_eq!(put.body_len, 11);
        // The probe ran once.
        assert_eq!(
            server
                .seen_with("PUT")
                .iter()
                .filter(|p| p.path.contains("cloudmount-probe"))
                .count(),
            1
        );
    });
}

#[test]
fn folder_quirks_of_rclone_and_nginx() {
    // rclone answers 201 to a MKCOL of an existing folder; nginx wants a trailing slash to DELETE
    // a folder (409 without) and a slash on MKCOL; rclone answers 403 to a MOVE of a missing item.
    run(async {
        let created = Arc::new(Mutex::new(false));
        let server = Scripted::start(move |req| match (req.method.as_str(), req.path.as_str()) {
            ("PROPFIND", "/d" | "/d/") => multistatus_entry("/d/", None, "Sun, 06 Nov 1994 08:49:37 GMT", "d"),
            ("PROPFIND", "/new" | "/new/") if *created.lock().unwrap() => {
                multistatus_entry("/new/", None, "Sun, 06 Nov 1994 08:49:37 GMT", "n")
            }
            ("PROPFIND", _) => reply(404, &[], ""),
            ("MKCOL", "/new/") => {
                *created.lock().unwrap() = true;
                reply(201, &[], "")
            }
            ("DELETE", "/d") => reply(409, &[], ""),
            ("DELETE", "/d/") => reply(204, &[], ""),
            ("MOVE", _) => reply(403, &[], ""),
            (m, p) => panic!("unexpected {m} {p}"),
        })
        .await;
        let r = remote(&server.url);
        assert_err!(r.mkdir(&id(""), "d").await, RemoteError::AlreadyExists);
        assert!(server.seen_with("MKCOL").is_empty(), "checked before, not after");
        let e = r.mkdir(&id(""), "new").await.unwrap();
        assert_eq!(e.kind, EntryKind::Directory);
        assert_eq!(server.seen_with("MKCOL")[0].path, "/new/");
        r.delete(&id("d")).await.unwrap();
        let deletes: Vec<String> = server.seen_with("DELETE").into_iter().map(|d| d.path).collect();
        assert_eq!(deletes, vec!["/d", "/d/"]);
        assert_err!(
            r.rename(&id("d"), &id("nowhere"), "x", false).await,
            RemoteError::NotFound
        );
        // The folder is moved with trailing slashes on both ends.
        let mv = server.seen_with("MOVE");
        assert_eq!(mv.len(), 1);
        assert_eq!(mv[0].path, "/d/");
        assert_eq!(
            mv[0].header("destination").unwrap(),
            format!("{}nowhere/x/", server.url)
        );
        assert_eq!(mv[0].header("overwrite").as_deref(), Some("F"));
    });
}

#[test]
fn uploads_are_retried_only_when_they_cannot_have_landed() {
    run(async {
        let stage = Staging::new();
        let src = stage.file("f", &files::random_bytes(3, 300_000));
        let handler = |first: u16| {
            move |req: &common::scripted::Seen| match req.method.as_str() {
                "PUT" if req.path.contains("cloudmount-probe") => reply(412, &[], ""),
                "PUT" if req.n <= 1 => reply(first, &[], "no"),
                "PUT" => reply(201, &[], ""),
                "PROPFIND" => multistatus_entry("/f.bin", Some(300_000), "Sun, 06 Nov 1994 08:49:37 GMT", "v"),
                "PROPPATCH" => reply(405, &[], ""),
                m => panic!("unexpected {m}"),
            }
        };
        // 503: the server did not handle it; sent again, whole.
        let server = Scripted::start(handler(503)).await;
        let r = remote(&server.url);
        let e = r
            .upload(
                UploadTarget::new(&id(""), "f.bin", Precondition::Any),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.size, 300_000);
        let puts: Vec<_> = server
            .seen_with("PUT")
            .into_iter()
            .filter(|p| p.path == "/f.bin")
            .collect();
        assert_eq!(puts.len(), 2);
        for p in &puts {
            assert_eq!(p.body_len, 300_000);
            assert_eq!(p.header("content-length").as_deref(), Some("300000"));
            assert_eq!(p.header("transfer-encoding"), None);
        }
        // 500: it may have been applied; not repeated.
        let server = Scripted::start(handler(500)).await;
        let r = remote(&server.url);
        assert_err!(
            r.upload(
                UploadTarget::new(&id(""), "f.bin", Precondition::Any),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::Http { status: 500, .. }
        );
        let puts = server
            .seen_with("PUT")
            .into_iter()
            .filter(|p| p.path == "/f.bin")
            .count();
        assert_eq!(puts, 1);
    });
}

#[test]
fn a_hung_server_stops_an_upload_after_the_stall_limit_without_a_retry() {
    let server = DavServer::start();
    run(async {
        let r = DavRemote::new(config(&server.url(), Duration::from_secs(2))).unwrap();
        assert!(r.probe_capabilities().await.unwrap().conditional_writes);
        let stage = Staging::new();
        let src = stage.file("f", &files::random_bytes(1, 100_000));
        server.set_hang(true);
        server.reset_counters();
        let started = Instant::now();
        let res = r
            .upload(
                UploadTarget::new(&id(""), "f.bin", Precondition::Any),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await;
        let took = started.elapsed();
        assert_err!(res, RemoteError::Timeout(_));
        assert!(took >= Duration::from_millis(1500), "gave up early: {took:?}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
        assert_eq!(server.requests(), 1, "a PUT that may have landed is not repeated");
        server.set_hang(false);
    });
}

#[test]
fn a_slow_upload_that_keeps_moving_outlasts_the_deadline() {
    // 24 MiB through a server that reads the first 12 MiB at 4 MiB/s: over 3 s, with a 1.5 s
    // deadline. What bounds an upload is a stall, not its length.
    run(async {
        const LEN: usize = 24 << 20;
        let stage = Staging::new();
        let src = files::put_random_file(stage.0.path(), "big", 9, LEN as u64);
        let server = Scripted::start_slow(Duration::from_millis(250), 12, |req| match req.method.as_str() {
            "PUT" if req.path.contains("cloudmount-probe") => reply(412, &[], ""),
            "PUT" => reply(201, &[], ""),
            "PROPFIND" => multistatus_entry("/big", Some((24 << 20) as u64), "Sun, 06 Nov 1994 08:49:37 GMT", "v"),
            "PROPPATCH" => reply(405, &[], ""),
            m => panic!("unexpected {m}"),
        })
        .await;
        let r = DavRemote::new(config(&server.url, Duration::from_millis(1500))).unwrap();
        let started = Instant::now();
        let e = r
            .upload(
                UploadTarget::new(&id(""), "big", Precondition::Any),
                UploadSource::file(&src, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e.size, LEN as u64);
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "the test is too fast to prove anything"
        );
        let put = server.seen_with("PUT").into_iter().find(|p| p.path == "/big").unwrap();
        assert_eq!(put.body_len, LEN as u64);
    });
}

#[test]
fn a_delete_that_leaves_members_behind_is_an_error() {
    run(async {
        let server = Scripted::start(|req| match req.method.as_str() {
            "DELETE" => reply(
                207,
                &[("content-type", "application/xml")],
                r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"><d:response><d:href>/dir/locked.txt</d:href><d:status>HTTP/1.1 423 Locked</d:status></d:response></d:multistatus>"#,
            ),
            m => panic!("unexpected {m}"),
        })
        .await;
        let r = remote(&server.url);
        assert_err!(r.delete(&id("dir")).await, RemoteError::Locked);
    });
}

#[test]
fn write_errors_map_to_clear_variants() {
    run(async {
        let status = Arc::new(Mutex::new(507u16));
        let st = status.clone();
        let server = Scripted::start(move |req| match req.method.as_str() {
            "PUT" if req.path.contains("cloudmount-probe") => reply(412, &[], ""),
            "PROPFIND" => reply(404, &[], ""),
            _ => reply(*st.lock().unwrap(), &[], ""),
        })
        .await;
        let r = remote(&server.url);
        let stage = Staging::new();
        let src = stage.file("f", b"x");
        let (root, cx) = (id(""), UploadCtx::default());
        let up = || {
            r.upload(
                UploadTarget::new(&root, "f", Precondition::Any),
                UploadSource::file(&src, t(1)),
                &cx,
            )
        };
        assert_err!(up().await, RemoteError::InsufficientStorage);
        *status.lock().unwrap() = 413;
        assert_err!(up().await, RemoteError::TooLarge);
        *status.lock().unwrap() = 423;
        assert_err!(up().await, RemoteError::Locked);
        assert_err!(r.mkdir(&id(""), "d").await, RemoteError::Locked);
        *status.lock().unwrap() = 403;
        assert_err!(up().await, RemoteError::Forbidden(_));
        assert_err!(r.delete(&id("x")).await, RemoteError::Forbidden(_));
    });
}

/// The write path against an external server (rclone, WsgiDAV, nginx, ... see
/// `scripts/webdav-servers.sh`), accepting what each may legitimately differ in (whether
/// preconditions are enforced atomically, whether mtimes can be set) and nothing else. Run with
/// `CLOUDMOUNT_LIVE_DAV_URL=http://127.0.0.1:8082/ cargo test --test webdav_write -- --ignored`
/// (plus `CLOUDMOUNT_LIVE_DAV_USER`/`_PASSWORD` if needed); it works in a fresh folder it removes.
#[test]
#[ignore = "needs an external WebDAV server: set CLOUDMOUNT_LIVE_DAV_URL"]
fn external_server_writes() {
    let url = std::env::var("CLOUDMOUNT_LIVE_DAV_URL").expect("set CLOUDMOUNT_LIVE_DAV_URL");
    run(async {
        let mut cfg = config(&url, Duration::from_secs(30));
        cfg.user = std::env::var("CLOUDMOUNT_LIVE_DAV_USER").ok();
        cfg.password = std::env::var("CLOUDMOUNT_LIVE_DAV_PASSWORD").ok();
        let r = DavRemote::new(cfg).unwrap();
        let caps = r.probe_capabilities().await.unwrap();
        eprintln!("capabilities after the probe: {caps:?}");
        let dir = r
            .mkdir(&id(""), &format!("cm write {} #ü", std::process::id()))
            .await
            .unwrap();
        assert_err!(r.mkdir(&id(""), &dir.name).await, RemoteError::AlreadyExists);
        assert_err!(r.mkdir(&id("no such dir"), "x").await, RemoteError::NotFound);
        let stage = Staging::new();
        let a = stage.file("a", b"alpha");
        let b = stage.file("b", b"bravo bytes");
        let name = "file 100% #1+.txt";
        let e1 = r
            .upload(
                UploadTarget::new(&dir.id, name, Precondition::Absent),
                UploadSource::file(&a, t(1_000_000_000)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        eprintln!(
            "after the first upload: {:?}, mtime kept: {}",
            r.capabilities(),
            e1.mtime == t(1_000_000_000)
        );
        assert_eq!(e1.mtime == t(1_000_000_000), r.capabilities().set_mtime);
        assert_err!(
            r.upload(
                UploadTarget::new(&dir.id, name, Precondition::Absent),
                UploadSource::file(&b, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::AlreadyExists
        );
        let v1 = e1.version.clone().expect("an ETag");
        let e2 = r
            .upload(
                UploadTarget::new(&dir.id, name, Precondition::Matches(v1.clone())),
                UploadSource::file(&b, t(1)),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(e2.size, 11);
        assert_err!(
            r.upload(
                UploadTarget::new(&dir.id, name, Precondition::Matches(Version::from_etag("\"stale\""))),
                UploadSource::file(&a, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::PreconditionFailed
        );
        assert_eq!(r.read(&e2.id, None, 0, 100).await.unwrap(), &b"bravo bytes"[..]);
        assert_err!(
            r.upload(
                UploadTarget::new(&id("no such dir"), "x", Precondition::Any),
                UploadSource::file(&a, t(1)),
                &UploadCtx::default()
            )
            .await,
            RemoteError::NotFound
        );
        let sub = r.mkdir(&dir.id, "sub").await.unwrap();
        r.upload(
            UploadTarget::new(&sub.id, "other.txt", Precondition::Absent),
            UploadSource::file(&a, t(1)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
        assert_err!(
            r.rename(&e2.id, &sub.id, "other.txt", false).await,
            RemoteError::AlreadyExists
        );
        let moved = r.rename(&e2.id, &sub.id, "other.txt", true).await.unwrap();
        assert_eq!(moved.size, 11);
        let sub2 = r.rename(&sub.id, &dir.id, "sub renamed", false).await.unwrap();
        let listed = r.list(&sub2.id).await.unwrap();
        assert_eq!(names(&listed), set(["other.txt"]));
        match r.set_mtime(&listed[0].id, t(1_100_000_000)).await {
            Ok(e) => assert_eq!(e.mtime, t(1_100_000_000)),
            Err(RemoteError::Unsupported(_)) => assert!(!r.capabilities().set_mtime),
            Err(e) => panic!("set_mtime: {e:?}"),
        }
        assert_err!(
            r.rename(&id("no such"), &dir.id, "x", false).await,
            RemoteError::NotFound
        );
        assert_err!(
            r.rename(&listed[0].id, &id("no such dir"), "x", false).await,
            RemoteError::NotFound
        );
        r.delete(&dir.id).await.unwrap();
        assert_err!(r.stat(&dir.id).await, RemoteError::NotFound);
        assert_err!(r.delete(&dir.id).await, RemoteError::NotFound);
        eprintln!("final capabilities: {:?}", r.capabilities());
    });
}

#[test]
fn an_upload_waits_out_a_refused_connection() {
    // Nothing reached the server, so sending again is safe: the PUT is retried until the server
    // is back (within the deadline).
    let server = DavServer::start();
    run(async {
        let r = remote(&server.url());
        r.probe_capabilities().await.unwrap();
        let stage = Staging::new();
        let src = stage.file("f", b"eventually");
        server.stop();
        let (root, cx) = (id(""), UploadCtx::default());
        let upload = r.upload(
            UploadTarget::new(&root, "f.txt", Precondition::Absent),
            UploadSource::file(&src, t(1)),
            &cx,
        );
        tokio::pin!(upload);
        // Not done while the server is away.
        assert!(tokio::time::timeout(Duration::from_millis(800), &mut upload)
            .await
            .is_err());
        server.restart();
        let e = upload.await.unwrap();
        assert_eq!(e.size, 10);
        assert_eq!(fs::read(server.root().join("f.txt")).unwrap(), b"eventually");
    });
}
