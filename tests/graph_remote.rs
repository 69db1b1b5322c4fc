//! The Graph remote against the in-repo fake Graph server over real HTTP.

use cloudmount::fuse::ToErrno;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cloudmount::auth::TokenSource;
use cloudmount::error::{RemoteError, RemoteResult};
use cloudmount::graph::{ConnectError, DriveSelector, GraphConfig, GraphRemote};
use cloudmount::http::{HttpConfig, RetryPolicy};
use cloudmount::remote::{EntryKind, ItemId, Remote, Version};
use fake_graph::{FakeGraph, FakeGraphConfig, Flavour, RouteClass, Scope};
use url::Url;

/// A token source backed by the fake's token issuer; counts `token_rejected` calls. When `renew`
/// is false, a rejected token is "replaced" by a token the server does not know.
struct Tokens {
    g: Arc<FakeGraph>,
    app: bool,
    renew: bool,
    current: Mutex<String>,
    rejected: AtomicUsize,
}

impl Tokens {
    fn new(g: &Arc<FakeGraph>, app: bool, renew: bool) -> Arc<Tokens> {
        let t = if app { g.issue_app_token() } else { g.issue_tokens().0 };
        Arc::new(Tokens {
            g: g.clone(),
            app,
            renew,
            current: Mutex::new(t),
            rejected: AtomicUsize::new(0),
        })
    }

    fn rejected(&self) -> usize {
        self.rejected.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenSource for Tokens {
    async fn access_token(&self) -> RemoteResult<String> {
        Ok(self.current.lock().unwrap().clone())
    }

    async fn token_rejected(&self, _rejected: &str) -> RemoteResult<String> {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        let fresh = if !self.renew {
            "not-a-token-the-server-issued".to_string()
        } else if self.app {
            self.g.issue_app_token()
        } else {
            self.g.issue_tokens().0
        };
        *self.current.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }
}

fn config(g: &FakeGraph, drive: DriveSelector) -> GraphConfig {
    let mut c = GraphConfig::new(drive).with_graph_url(Url::parse(&g.graph_url()).unwrap());
    c.timeout = Duration::from_secs(15);
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn http() -> HttpConfig {
    HttpConfig {
        policy: RetryPolicy {
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    }
}

async fn start(cfg: FakeGraphConfig) -> Arc<FakeGraph> {
    Arc::new(FakeGraph::start(cfg).await)
}

async fn connect(g: &Arc<FakeGraph>) -> (GraphRemote, Arc<Tokens>) {
    let tokens = Tokens::new(g, false, true);
    let r = GraphRemote::connect(config(g, DriveSelector::Me), http(), tokens.clone())
        .await
        .expect("connect");
    (r, tokens)
}

/// Deterministic, position-dependent content.
fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in v.chunks_mut(8) {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}

#[tokio::test]
async fn listing_follows_every_page() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    d.mkdir("/big").unwrap();
    for i in 0..2500 {
        d.put_file(&format!("/big/f{i:04}.txt"), Bytes::from(format!("{i}")))
            .unwrap();
    }
    let (r, _) = connect(&g).await;
    let big = r.lookup(&r.root_id(), "big").await.unwrap();
    assert_eq!(big.kind, EntryKind::Directory);
    g.reset_stats();
    let entries = r.list(&big.id).await.unwrap();
    assert_eq!(entries.len(), 2500);
    let ids: HashSet<_> = entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 2500, "every item exactly once");
    let names: HashSet<_> = entries.iter().map(|e| e.name.clone()).collect();
    assert!((0..2500).all(|i| names.contains(&format!("f{i:04}.txt"))));
    let e = entries.iter().find(|e| e.name == "f0042.txt").unwrap();
    assert_eq!((e.kind, e.size), (EntryKind::File, 2));
    assert_eq!(e.id.as_str(), d.item_id("/big/f0042.txt").unwrap());
    let s = g.stats();
    assert_eq!(s.count(RouteClass::Children), 13, "2500 items in pages of 200");
    let first = &s.recent_of(RouteClass::Children)[0].path;
    assert!(first.contains("$top=200"), "{first}");
    assert!(first.contains("$select="), "{first}");
}

#[tokio::test]
async fn page_size_is_configurable() {
    let g = start(FakeGraphConfig::default()).await;
    for i in 0..25 {
        g.drive().put_file(&format!("/d/{i}"), &b"x"[..]).unwrap();
    }
    let mut c = config(&g, DriveSelector::Me);
    c.page_size = 10;
    let r = GraphRemote::connect(c, http(), Tokens::new(&g, false, true))
        .await
        .unwrap();
    let dir = r.lookup(&r.root_id(), "d").await.unwrap();
    g.reset_stats();
    assert_eq!(r.list(&dir.id).await.unwrap().len(), 25);
    assert_eq!(g.stats().count(RouteClass::Children), 3);
}

const ODD_NAMES: &[&str] = &[
    "a b.txt",
    "Break#Out",
    "100% sure",
    "1+1",
    "Ünïcødé €uro",
    "saved_game[1].bin",
    "R&D",
    "Ryan's Files",
    "semi;colon=eq",
    "at@comma,paren(1)",
    "日本語のファイル",
];

#[tokio::test]
async fn lookups_of_odd_names_by_path_and_case_insensitively() {
    for flavour in [Flavour::Business, Flavour::Personal] {
        odd_names(flavour).await;
    }
}

async fn odd_names(flavour: Flavour) {
    let g = start(FakeGraphConfig::for_flavour(flavour)).await;
    let d = g.drive();
    for name in ODD_NAMES {
        d.put_file(&format!("/Sub Dir/{name}"), Bytes::from(name.to_string()))
            .unwrap();
    }
    let (r, _) = connect(&g).await;
    let sub = r.lookup(&r.root_id(), "sub dir").await.unwrap();
    assert_eq!(sub.name, "Sub Dir", "the server's spelling");
    for name in ODD_NAMES {
        let want = d.item_id(&format!("/Sub Dir/{name}")).unwrap();
        let e = r
            .lookup(&sub.id, name)
            .await
            .unwrap_or_else(|e| panic!("{flavour:?} {name}: {e}"));
        assert_eq!((e.id.as_str(), e.name.as_str()), (want.as_str(), *name));
        assert_eq!(e.size, name.len() as u64);
        let upper = name.to_uppercase();
        let e = r
            .lookup(&sub.id, &upper)
            .await
            .unwrap_or_else(|e| panic!("{upper}: {e}"));
        assert_eq!(e.id.as_str(), want, "{upper}");
        assert_eq!(e.name, *name, "entry carries the server's spelling");
        let bytes = r.read(&e.id, e.version.as_ref(), 0, 1000).await.unwrap();
        assert_eq!(&bytes[..], name.as_bytes());
    }
    assert!(matches!(r.lookup(&sub.id, "missing").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&sub.id, "a b").await, Err(RemoteError::NotFound)));
    assert!(matches!(r.lookup(&sub.id, "..").await, Err(RemoteError::NotFound)));
    assert!(matches!(
        r.stat(&ItemId::new("01NOPE")).await,
        Err(RemoteError::NotFound)
    ));
}

#[tokio::test]
async fn ranged_reads_of_a_large_file_fetch_only_what_is_asked() {
    const SIZE: usize = 100 << 20;
    let g = start(FakeGraphConfig::default()).await;
    let content = Bytes::from(pattern(SIZE));
    g.drive().put_file("/big.bin", content.clone()).unwrap();
    let (r, _) = connect(&g).await;
    let e = r.lookup(&r.root_id(), "big.bin").await.unwrap();
    assert_eq!(e.size, SIZE as u64);
    let v = e.version.as_ref();
    let cases: &[(usize, usize)] = &[
        (0, 4096),
        (1, 1),
        (4095, 2),
        ((8 << 20) + 3, 1 << 20),
        (50 << 20, 65_536),
        (SIZE - 4096, 4096),
    ];
    for &(off, len) in cases {
        let got = r.read(&e.id, v, off as u64, len as u64).await.unwrap();
        assert_eq!(got.len(), len, "at {off}");
        assert!(got[..] == content[off..off + len], "bytes differ at {off}+{len}");
    }
    // Past the end: only what is there, then nothing.
    let tail = r.read(&e.id, v, (SIZE - 10) as u64, 100).await.unwrap();
    assert_eq!(&tail[..], &content[SIZE - 10..]);
    assert!(r.read(&e.id, v, SIZE as u64, 100).await.unwrap().is_empty());

    // 4 KiB at 90 MiB moves about 4 KiB, and takes no metadata request (the URL is cached).
    g.reset_stats();
    let off = 90 << 20;
    let got = r.read(&e.id, v, off as u64, 4096).await.unwrap();
    assert!(got[..] == content[off..off + 4096]);
    let s = g.stats();
    assert!(
        (4096..=8192).contains(&s.download_bytes),
        "served {} bytes for a 4 KiB read",
        s.download_bytes
    );
    assert_eq!(s.count(RouteClass::Download), 1);
    assert_eq!(s.count(RouteClass::Metadata), 0);
    let rec = &s.recent_of(RouteClass::Download)[0];
    assert_eq!(rec.range.as_deref(), Some("bytes=94371840-94375935"));
    assert!(!rec.authorization, "no Authorization header on the download URL");
}

#[tokio::test]
async fn an_expired_download_url_is_replaced_by_reading_the_item_again() {
    let g = start(FakeGraphConfig {
        download_url_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let content = pattern(100_000);
    g.drive().put_file("/a.bin", content.clone()).unwrap();
    let (r, tokens) = connect(&g).await;
    let e = r.lookup(&r.root_id(), "a.bin").await.unwrap();
    let v = e.version.as_ref();
    assert_eq!(&r.read(&e.id, v, 0, 10).await.unwrap()[..], &content[..10]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    g.reset_stats();
    assert_eq!(&r.read(&e.id, v, 500, 1000).await.unwrap()[..], &content[500..1500]);
    let s = g.stats();
    assert_eq!(s.count(RouteClass::Metadata), 1, "metadata read again once");
    let dl: Vec<u16> = s.recent_of(RouteClass::Download).iter().map(|r| r.status).collect();
    assert_eq!(dl, vec![401, 206]);
    assert_eq!(tokens.rejected(), 0, "never refresh the OAuth token for a download URL");
    // Parallel reads that all find the URL expired read the item once between them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    g.reset_stats();
    let r = Arc::new(r);
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            let (r, e) = (r.clone(), e.clone());
            tokio::spawn(async move { r.read(&e.id, e.version.as_ref(), i * 1000, 1000).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(&t.await.unwrap().unwrap()[..], &content[i * 1000..(i + 1) * 1000]);
    }
    assert_eq!(
        g.stats().count(RouteClass::Metadata),
        1,
        "one metadata read for four readers"
    );
    // The fresh URL is cached: the next read goes straight to the download host.
    g.reset_stats();
    r.read(&e.id, v, 0, 10).await.unwrap();
    assert_eq!(g.stats().count(RouteClass::Metadata), 0);
}

#[tokio::test]
async fn download_urls_older_than_the_max_age_are_not_used() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/a.txt", &b"abc"[..]).unwrap();
    let mut c = config(&g, DriveSelector::Me);
    c.download_url_max_age = Duration::ZERO;
    let r = GraphRemote::connect(c, http(), Tokens::new(&g, false, true))
        .await
        .unwrap();
    let e = r.lookup(&r.root_id(), "a.txt").await.unwrap();
    g.reset_stats();
    assert_eq!(&r.read(&e.id, e.version.as_ref(), 0, 3).await.unwrap()[..], b"abc");
    let s = g.stats();
    assert_eq!((s.count(RouteClass::Metadata), s.count(RouteClass::Download)), (1, 1));
}

#[tokio::test]
async fn a_missing_download_url_is_fetched_without_select() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/a.txt", &b"abc"[..]).unwrap();
    g.faults().omit_selected_download_urls(true);
    let (r, _) = connect(&g).await;
    let e = r.lookup(&r.root_id(), "a.txt").await.unwrap();
    g.reset_stats();
    assert_eq!(&r.read(&e.id, e.version.as_ref(), 0, 3).await.unwrap()[..], b"abc");
    let s = g.stats();
    let paths: Vec<&str> = s
        .recent_of(RouteClass::Metadata)
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths[0].contains("$select=") && !paths[1].contains("$select="),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_fresh_download_url_refused_again_fails_without_touching_the_token() {
    let g = start(FakeGraphConfig {
        download_url_ttl: Duration::ZERO,
        ..Default::default()
    })
    .await;
    g.drive().put_file("/a.txt", &b"abc"[..]).unwrap();
    let (r, tokens) = connect(&g).await;
    let e = r.lookup(&r.root_id(), "a.txt").await.unwrap();
    g.reset_stats();
    let err = r.read(&e.id, e.version.as_ref(), 0, 3).await.unwrap_err();
    assert!(matches!(err, RemoteError::Forbidden(_)), "{err:?}");
    let s = g.stats();
    assert_eq!(s.count(RouteClass::Metadata), 1, "the item is read again once");
    assert_eq!(s.count(RouteClass::Download), 2);
    assert!(s.recent_of(RouteClass::Download).iter().all(|r| !r.authorization));
    assert_eq!(tokens.rejected(), 0);
}

#[tokio::test]
async fn a_content_change_between_reads_is_version_changed() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    d.put_file("/doc.txt", &b"first version"[..]).unwrap();
    let (r, _) = connect(&g).await;
    let v1 = r.lookup(&r.root_id(), "doc.txt").await.unwrap();
    assert_eq!(&r.read(&v1.id, v1.version.as_ref(), 0, 5).await.unwrap()[..], b"first");

    // A rename changes the eTag, not the content: reads of v1 go on.
    d.rename("/doc.txt", "/Doc2.txt").unwrap();
    g.faults().expire_download_urls();
    assert_eq!(
        &r.read(&v1.id, v1.version.as_ref(), 6, 7).await.unwrap()[..],
        b"version"
    );

    d.put_file("/Doc2.txt", &b"second version!"[..]).unwrap();
    g.faults().expire_download_urls();
    let err = r.read(&v1.id, v1.version.as_ref(), 0, 5).await.unwrap_err();
    assert!(matches!(err, RemoteError::VersionChanged), "{err:?}");
    assert_eq!(err.errno(), libc::ESTALE);

    // A client that never saw v1's URL finds out from the metadata at once.
    let (fresh, _) = connect(&g).await;
    assert!(matches!(
        fresh.read(&v1.id, v1.version.as_ref(), 0, 5).await,
        Err(RemoteError::VersionChanged)
    ));
    // The new version reads fine.
    let v2 = r.stat(&v1.id).await.unwrap();
    assert_ne!(v2.version, v1.version);
    assert_eq!(v2.name, "Doc2.txt");
    assert_eq!(
        &r.read(&v2.id, v2.version.as_ref(), 0, 100).await.unwrap()[..],
        b"second version!"
    );
}

#[tokio::test]
async fn throttling_pauses_every_request_until_retry_after() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/t.txt", &b"throttled"[..]).unwrap();
    let (r, _) = connect(&g).await;
    let r = Arc::new(r);
    let e = r.lookup(&r.root_id(), "t.txt").await.unwrap();

    // One request is throttled; requests started while the pause runs wait for its end instead
    // of reaching the server (requests already in flight cannot know, so they start later).
    g.reset_stats();
    g.faults().throttle_next(Scope::Graph, 1, 429, Some(1));
    let started = Instant::now();
    let first = {
        let (r, id) = (r.clone(), e.id.clone());
        tokio::spawn(async move { r.stat(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tasks = vec![first];
    for _ in 0..3 {
        let (r, id) = (r.clone(), e.id.clone());
        tasks.push(tokio::spawn(async move { r.stat(&id).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().name, "t.txt");
    }
    let s = g.stats();
    assert_eq!(s.throttled_responses, 1);
    assert!(s.pause_violations.is_empty(), "{:?}", s.pause_violations);
    assert_eq!(s.count(RouteClass::Metadata), 5, "one throttled, then four");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // Download hosts throttle too; the read waits and then succeeds.
    g.reset_stats();
    g.faults().throttle_next(RouteClass::Download, 1, 503, Some(1));
    let started = Instant::now();
    assert_eq!(
        &r.read(&e.id, e.version.as_ref(), 0, 9).await.unwrap()[..],
        b"throttled"
    );
    let s = g.stats();
    assert_eq!(s.throttled_responses, 1);
    assert!(s.pause_violations.is_empty(), "{:?}", s.pause_violations);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn server_errors_and_broken_bodies_are_retried() {
    let g = start(FakeGraphConfig::default()).await;
    let content = pattern(300_000);
    g.drive().put_file("/x.bin", content.clone()).unwrap();
    let (r, _) = connect(&g).await;
    g.faults().fail_next(Scope::Graph, 2, 500);
    let e = r.lookup(&r.root_id(), "x.bin").await.unwrap();
    g.faults().fail_next(RouteClass::Download, 1, 502);
    g.faults().truncate_next_downloads(1, 1000);
    let got = r.read(&e.id, e.version.as_ref(), 100, 200_000).await.unwrap();
    assert!(got[..] == content[100..200_100]);
    assert_eq!(g.stats().injected_failures, 3);
}

#[tokio::test]
async fn an_expired_token_is_replaced_once() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/a.txt", &b"a"[..]).unwrap();
    let (r, tokens) = connect(&g).await;
    g.faults().expire_access_tokens();
    let e = r.lookup(&r.root_id(), "a.txt").await.unwrap();
    assert_eq!(e.name, "a.txt");
    assert_eq!(tokens.rejected(), 1);
    let statuses: Vec<u16> = g
        .stats()
        .recent_of(RouteClass::Metadata)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(&statuses[statuses.len() - 2..], &[401, 200]);
    r.list(&r.root_id()).await.unwrap();
    assert_eq!(tokens.rejected(), 1, "the new token is used from then on");
}

#[tokio::test]
async fn a_second_401_is_unauthorized() {
    let g = start(FakeGraphConfig::default()).await;
    let tokens = Tokens::new(&g, false, false);
    let r = GraphRemote::connect(config(&g, DriveSelector::Me), http(), tokens.clone())
        .await
        .unwrap();
    g.faults().expire_access_tokens();
    let err = r.stat(&r.root_id()).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(tokens.rejected(), 1, "refreshed once, not in a loop");
}

#[tokio::test]
async fn app_only_tokens_need_a_user_not_me() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/app.txt", &b"app"[..]).unwrap();
    let tokens = Tokens::new(&g, true, true);
    let err = GraphRemote::connect(config(&g, DriveSelector::Me), http(), tokens.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::MeNeedsUser(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("app-only") && text.contains("/me"), "{text}");
    assert!(!text.contains(tokens.current.lock().unwrap().as_str()));

    let upn = g.config().user_principal_name;
    let r = GraphRemote::connect(config(&g, DriveSelector::User(upn)), http(), tokens.clone())
        .await
        .unwrap();
    assert_eq!(r.drive_id(), g.drive().id());
    let e = r.lookup(&r.root_id(), "APP.TXT").await.unwrap();
    assert_eq!(&r.read(&e.id, e.version.as_ref(), 0, 3).await.unwrap()[..], b"app");
    let err = GraphRemote::connect(
        config(&g, DriveSelector::User("nobody@contoso.com".into())),
        http(),
        tokens,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::UserNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn sharepoint_sites_and_libraries_resolve() {
    let g = start(FakeGraphConfig::default()).await;
    let archive = g.library("/sites/eng", "Archive").unwrap();
    archive.put_file("/old/report.txt", &b"archived"[..]).unwrap();
    let tokens = Tokens::new(&g, false, true);
    let sp = |site: &str, lib: &str| {
        config(
            &g,
            DriveSelector::SharePoint {
                site_url: Url::parse(site).unwrap(),
                library: (!lib.is_empty()).then(|| lib.into()),
            },
        )
    };
    let r = GraphRemote::connect(
        sp("https://contoso.sharepoint.com/sites/eng/", "archive"),
        http(),
        tokens.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.drive_id(), archive.id());
    assert_eq!(r.drive_type(), Some("documentLibrary"));
    let old = r.lookup(&r.root_id(), "old").await.unwrap();
    let f = r.lookup(&old.id, "report.txt").await.unwrap();
    assert_eq!(
        &r.read(&f.id, f.version.as_ref(), 0, 100).await.unwrap()[..],
        b"archived"
    );
    assert!(r.describe().contains("Archive"), "{}", r.describe());

    let root_docs = GraphRemote::connect(
        sp("https://contoso.sharepoint.com", "Documents"),
        http(),
        tokens.clone(),
    )
    .await
    .unwrap();
    assert_eq!(root_docs.drive_id(), g.library("", "Documents").unwrap().id());
    // No library named: the site's default one.
    let default = GraphRemote::connect(
        sp("https://contoso.sharepoint.com/sites/eng", ""),
        http(),
        tokens.clone(),
    )
    .await
    .unwrap();
    assert_eq!(default.drive_id(), g.library("/sites/eng", "Documents").unwrap().id());
    assert!(default.describe().contains("(default)"), "{}", default.describe());

    let err = GraphRemote::connect(
        sp("https://contoso.sharepoint.com/sites/nope", "Documents"),
        http(),
        tokens.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::SiteNotFound(_)), "{err:?}");
    assert!(err.to_string().contains("contoso.sharepoint.com/sites/nope"), "{err}");
    let err = GraphRemote::connect(
        sp("https://contoso.sharepoint.com/sites/eng", "Missing"),
        http(),
        tokens,
    )
    .await
    .unwrap_err();
    match &err {
        ConnectError::LibraryNotFound { available, .. } => {
            assert!(
                available.contains("Documents") && available.contains("Archive"),
                "{available}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// What differs between personal and business and matters to us: folder versions (personal
/// folders carry a cTag that changes with their descendants; we use the eTag on both), file
/// versions surviving renames (cTag), mtime precision, drive types, and SharePoint being absent.
#[tokio::test]
async fn personal_and_business_flavours() {
    for flavour in [Flavour::Business, Flavour::Personal] {
        let g = start(FakeGraphConfig::for_flavour(flavour)).await;
        let d = g.drive();
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        d.put_file_with_mtime("/dir/f.txt", &b"hello"[..], Some(mtime)).unwrap();
        let (r, tokens) = connect(&g).await;
        let want_type = if flavour == Flavour::Personal {
            "personal"
        } else {
            "business"
        };
        assert_eq!(r.drive_type(), Some(want_type));
        let dir = r.lookup(&r.root_id(), "dir").await.unwrap();
        let f = r.lookup(&dir.id, "f.txt").await.unwrap();
        let json = d.item_json("/dir/f.txt").unwrap();
        assert_eq!(
            f.version,
            Some(Version::from_etag(json["cTag"].as_str().unwrap())),
            "{flavour:?}: files are versioned by cTag"
        );
        let expect_mtime = if flavour == Flavour::Personal {
            mtime
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        };
        assert_eq!(f.mtime, expect_mtime, "{flavour:?}: fileSystemInfo time");

        // A change below the folder leaves the folder's version alone on both flavours.
        d.put_file("/dir/f.txt", &b"changed"[..]).unwrap();
        let dir2 = r.stat(&dir.id).await.unwrap();
        assert_eq!(dir2.version, dir.version, "{flavour:?}");
        let f2 = r.stat(&f.id).await.unwrap();
        assert_ne!(f2.version, f.version, "{flavour:?}");
        // A rename keeps the file's version.
        d.rename("/dir/f.txt", "/dir/g.txt").unwrap();
        assert_eq!(r.stat(&f.id).await.unwrap().version, f2.version, "{flavour:?}");

        let root = r.root().await.unwrap();
        assert_eq!((root.name.as_str(), root.kind), ("", EntryKind::Directory));
        assert_eq!(root.id, r.root_id());
        let q = r.quota().await.unwrap().expect("quota");
        assert!(q.used.is_some() && q.available.is_some(), "{q:?}");

        // Drives by id work on both; sites only exist on business.
        let by_id = GraphRemote::connect(config(&g, DriveSelector::DriveId(d.id())), http(), tokens.clone())
            .await
            .unwrap();
        assert_eq!(by_id.root_id(), r.root_id());
        let sp = GraphRemote::connect(
            config(
                &g,
                DriveSelector::SharePoint {
                    site_url: Url::parse("https://contoso.sharepoint.com/sites/eng").unwrap(),
                    library: Some("Documents".into()),
                },
            ),
            http(),
            tokens.clone(),
        )
        .await;
        assert_eq!(sp.is_ok(), flavour == Flavour::Business, "{flavour:?}");
        let err = GraphRemote::connect(
            config(&g, DriveSelector::DriveId("nope".into())),
            http(),
            tokens.clone(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ConnectError::DriveNotFound(_)), "{err:?}");
        let described = r.describe();
        assert!(described.contains(&d.id()), "{described}");
        assert!(!described.contains(tokens.current.lock().unwrap().as_str()));
    }
}
