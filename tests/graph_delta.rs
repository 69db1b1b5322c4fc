//! The Graph delta poller against the in-repo fake Graph server: paging across rounds, no lost
//! changes when a round fails mid-paging, 410 resync, the persisted position, and the change
//! applier of the filesystem core fed by it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cloudmount::auth::TokenSource;
use cloudmount::error::RemoteResult;
use cloudmount::graph::{DriveSelector, GraphConfig, GraphRemote};
use cloudmount::http::{HttpConfig, RetryPolicy};
use cloudmount::remote::{Change, ChangeBatch, ChangeSource, Remote};
use cloudmount::vfs::{DriveFs, FsConfig};
use fake_graph::{FakeGraph, FakeGraphConfig, RouteClass};
use url::Url;

struct Tokens(Arc<FakeGraph>, std::sync::Mutex<String>);

#[async_trait]
impl TokenSource for Tokens {
    async fn access_token(&self) -> RemoteResult<String> {
        Ok(self.1.lock().unwrap().clone())
    }
    async fn token_rejected(&self, _rejected: &str) -> RemoteResult<String> {
        let t = self.0.issue_tokens().0;
        *self.1.lock().unwrap() = t.clone();
        Ok(t)
    }
}

async fn start() -> Arc<FakeGraph> {
    Arc::new(FakeGraph::start(FakeGraphConfig::default()).await)
}

/// A remote with pages of 2 records and a short deadline (a failing server fails the round fast).
async fn connect(g: &Arc<FakeGraph>) -> GraphRemote {
    let mut c = GraphConfig::new(DriveSelector::Me).with_graph_url(Url::parse(&g.graph_url()).unwrap());
    c.timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(2);
    c.page_size = 2;
    let http = HttpConfig {
        policy: RetryPolicy {
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    };
    let tokens = Arc::new(Tokens(g.clone(), std::sync::Mutex::new(g.issue_tokens().0)));
    GraphRemote::connect(c, http, tokens).await.expect("connect")
}

/// Names of upserted items and ids of deleted ones in a batch; whether it was a resync.
fn summary(b: &ChangeBatch) -> (BTreeSet<String>, BTreeSet<String>, bool) {
    let (records, resync) = match b {
        ChangeBatch::Changes(r) => (r, false),
        ChangeBatch::Resync(r) => (r, true),
    };
    let mut names = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for r in records {
        match r {
            Change::Upsert { entry, .. } => {
                names.insert(entry.name.clone());
            }
            Change::Deleted { id } => {
                gone.insert(id.to_string());
            }
        }
    }
    (names, gone, resync)
}

#[tokio::test]
async fn rounds_follow_every_page_and_continue_from_the_delta_link() {
    let g = start().await;
    let d = g.drive();
    for i in 0..5 {
        d.put_file(&format!("/f{i}.txt"), Bytes::from(format!("{i}"))).unwrap();
    }
    let r = connect(&g).await;
    let p = r.delta_poller(None);
    let (names, _, resync) = summary(&p.poll_round().await.unwrap());
    assert!(resync, "the first round is a full enumeration");
    for i in 0..5 {
        assert!(names.contains(&format!("f{i}.txt")), "{names:?}");
    }
    let (names, gone, resync) = summary(&p.poll_round().await.unwrap());
    assert!(!resync);
    assert!(
        names.iter().all(|n| n.is_empty()) && gone.is_empty(),
        "nothing changed: {names:?} {gone:?}"
    );

    d.mkdir("/docs").unwrap();
    for i in 0..4 {
        d.put_file(&format!("/docs/n{i}.txt"), Bytes::from("new")).unwrap();
    }
    let id = d.item_id("/f0.txt").unwrap();
    d.remove("/f0.txt").unwrap();
    d.rename("/f1.txt", "/docs/f1-moved.txt").unwrap();
    let (names, gone, resync) = summary(&p.poll_round().await.unwrap());
    assert!(!resync);
    for n in ["docs", "n0.txt", "n3.txt", "f1-moved.txt"] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    assert!(gone.contains(&id), "the delete of f0.txt is missing: {gone:?}");
}

#[tokio::test]
async fn a_round_failing_mid_paging_keeps_its_changes_for_the_next_round() {
    let g = start().await;
    let d = g.drive();
    let r = connect(&g).await;
    let p = r.delta_poller(None);
    p.poll_round().await.unwrap();
    let before = p.stored_link().await.unwrap();
    for i in 0..6 {
        d.put_file(&format!("/c{i}.txt"), Bytes::from("changed")).unwrap();
    }
    // After the first page, every delta request fails with 500 until the deadline runs out.
    let faults = g.faults();
    p.set_page_hook(Box::new(move |page| {
        if page == 1 {
            faults.fail_next(RouteClass::Delta, 10_000, 500);
        }
    }));
    assert!(p.poll_round().await.is_err(), "the round should fail");
    assert_eq!(
        p.stored_link().await.unwrap(),
        before,
        "the position moved on a failed round"
    );
    g.faults().clear();
    p.set_page_hook(Box::new(|_| {}));
    let (names, _, resync) = summary(&p.poll_round().await.unwrap());
    assert!(!resync);
    for i in 0..6 {
        assert!(names.contains(&format!("c{i}.txt")), "c{i}.txt lost: {names:?}");
    }
    assert_ne!(p.stored_link().await.unwrap(), before);
}

#[tokio::test]
async fn gone_410_enumerates_again_as_a_resync() {
    let g = start().await;
    let d = g.drive();
    d.put_file("/keep.txt", Bytes::from("k")).unwrap();
    let r = connect(&g).await;
    let p = r.delta_poller(None);
    p.poll_round().await.unwrap();
    d.put_file("/later.txt", Bytes::from("l")).unwrap();
    g.faults().delta_resync_next();
    let (names, _, resync) = summary(&p.poll_round().await.unwrap());
    assert!(resync, "a 410 must come back as a resync");
    assert!(names.contains("keep.txt") && names.contains("later.txt"), "{names:?}");
    g.faults().invalidate_delta_tokens();
    let (_, _, resync) = summary(&p.poll_round().await.unwrap());
    assert!(resync);
    let (_, _, resync) = summary(&p.poll_round().await.unwrap());
    assert!(!resync, "the fresh link works again");
}

#[tokio::test]
async fn the_position_is_persisted_and_reloaded() {
    let g = start().await;
    let d = g.drive();
    let dir = tempfile::tempdir().unwrap();
    let r = connect(&g).await;
    let changes = r.changes(Some(dir.path())).expect("Graph has a change feed");
    changes.poll_round().await.unwrap();
    drop(changes);
    let stored: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(stored.len(), 1, "one position file");

    d.put_file("/while-down.txt", Bytes::from("x")).unwrap();
    // A restart: a new remote and feed read the position back and continue from it.
    let r = connect(&g).await;
    let changes = r.changes(Some(dir.path())).unwrap();
    let (names, _, resync) = summary(&changes.poll_round().await.unwrap());
    assert!(!resync, "a restart continues from the stored position");
    assert!(names.contains("while-down.txt"), "{names:?}");
}

async fn names_in(fs: &DriveFs, ino: u64) -> BTreeSet<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut names = BTreeSet::new();
    fs.readdir(fh, 0, |item| {
        names.insert(item.name.to_string());
        false
    })
    .unwrap();
    fs.releasedir(fh);
    names.retain(|n| n != "." && n != "..");
    names
}

#[tokio::test]
async fn the_core_follows_delta_and_recovers_from_410() {
    let g = start().await;
    let d = g.drive();
    d.mkdir("/a").unwrap();
    d.put_file("/a/one.txt", Bytes::from("one")).unwrap();
    d.put_file("/two.txt", Bytes::from("two")).unwrap();
    let r: Arc<GraphRemote> = Arc::new(connect(&g).await);
    let feed = r.delta_poller(None);
    let fs = DriveFs::new(
        r.clone(),
        FsConfig {
            attr_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
            ..FsConfig::default()
        },
    )
    .await
    .unwrap();
    let mut inval = fs.invalidations();
    fs.apply_changes(feed.poll_round().await.unwrap());
    let root = fs.root_ino();
    assert_eq!(
        names_in(&fs, root).await,
        BTreeSet::from(["a".into(), "two.txt".into()])
    );
    let a = fs.lookup(root, "a".as_ref()).await.unwrap().attr.ino;
    assert_eq!(names_in(&fs, a).await, BTreeSet::from(["one.txt".into()]));

    // Changes while the feed's token goes stale: a rename, a delete, a content change, a new tree.
    d.rename("/a/one.txt", "/uno.txt").unwrap();
    d.remove("/two.txt").unwrap();
    d.mkdir("/b").unwrap();
    d.mkdir("/b/c").unwrap();
    d.put_file("/b/c/deep.txt", Bytes::from("deep")).unwrap();
    d.put_file("/a/grown.txt", Bytes::from("grown bigger")).unwrap();
    g.faults().invalidate_delta_tokens();
    fs.apply_changes(feed.poll_round().await.unwrap());
    assert_eq!(
        names_in(&fs, root).await,
        BTreeSet::from(["a".into(), "b".into(), "uno.txt".into()])
    );
    assert_eq!(names_in(&fs, a).await, BTreeSet::from(["grown.txt".into()]));
    let b = fs.lookup(root, "b".as_ref()).await.unwrap().attr.ino;
    let c = fs.lookup(b, "c".as_ref()).await.unwrap().attr.ino;
    let deep = fs.lookup(c, "deep.txt".as_ref()).await.unwrap().attr;
    assert_eq!(deep.size, 4);
    let mut seen = Vec::new();
    while let Ok(i) = inval.try_recv() {
        seen.push(i);
    }
    assert!(
        seen.contains(&cloudmount::vfs::Invalidation::Entry {
            parent: root,
            name: "two.txt".into()
        }),
        "{seen:?}"
    );
}
