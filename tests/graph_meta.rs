//! Metadata on OneDrive (`Remote::set_meta`) against the in-repo fake Graph server over real HTTP:
//! `fileSystemInfo.lastModifiedDateTime` and `createdDateTime` set by PATCH, kept at the drive's
//! precision (milliseconds on personal drives, seconds on business ones), seen by another client;
//! mode and owner have no place there and are not sent; preconditions hold.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cloudmount::auth::TokenSource;
use cloudmount::error::{RemoteError, RemoteResult};
use cloudmount::graph::{DriveSelector, GraphConfig, GraphRemote};
use cloudmount::http::{HttpConfig, RetryPolicy};
use cloudmount::remote::{Entry, ItemId, Meta, MetaFields, Precondition, Remote};
use fake_graph::{FakeGraph, FakeGraphConfig, Flavour};
use url::Url;

struct Tokens {
    g: Arc<FakeGraph>,
    current: Mutex<String>,
}

#[async_trait]
impl TokenSource for Tokens {
    async fn access_token(&self) -> RemoteResult<String> {
        Ok(self.current.lock().unwrap().clone())
    }

    async fn token_rejected(&self, _rejected: &str) -> RemoteResult<String> {
        let fresh = self.g.issue_tokens().0;
        *self.current.lock().unwrap() = fresh.clone();
        Ok(fresh)
    }
}

async fn start(flavour: Flavour) -> Arc<FakeGraph> {
    Arc::new(
        FakeGraph::start(FakeGraphConfig {
            flavour,
            ..FakeGraphConfig::default()
        })
        .await,
    )
}

async fn remote(g: &Arc<FakeGraph>) -> GraphRemote {
    let mut c = GraphConfig::new(DriveSelector::Me).with_graph_url(Url::parse(&g.graph_url()).unwrap());
    c.timeout = Duration::from_secs(15);
    c.connect_timeout = Duration::from_secs(2);
    let http = HttpConfig {
        policy: RetryPolicy {
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..HttpConfig::default()
    };
    let tokens = Arc::new(Tokens {
        g: g.clone(),
        current: Mutex::new(g.issue_tokens().0),
    });
    GraphRemote::connect(c, http, tokens).await.expect("connect")
}

fn full_meta() -> Meta {
    Meta {
        mode: Some(0o755),
        uid: Some(1234),
        gid: Some(5678),
        mtime: Some(UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789)),
        atime: Some(UNIX_EPOCH + Duration::new(1_650_000_000, 1)),
        created: Some(UNIX_EPOCH + Duration::new(1_500_000_000, 987_654_321)),
        link_target: None,
    }
}

/// `t` as the drive keeps it: milliseconds on personal drives, whole seconds on business ones.
fn kept(flavour: Flavour, t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    match flavour {
        Flavour::Personal => UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64),
        Flavour::Business => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
    }
}

fn listed(entries: &[Entry], name: &str) -> Entry {
    entries.iter().find(|e| e.name == name).unwrap().clone()
}

async fn times_kept_and_seen(flavour: Flavour) {
    let g = start(flavour).await;
    let r = remote(&g).await;
    let caps = r.capabilities().kept_meta;
    assert_eq!(
        caps,
        MetaFields {
            mtime: true,
            created: true,
            ..MetaFields::NONE
        }
    );
    let drive = g.drive();
    let file_id = ItemId::new(drive.put_file("d/f.txt", &b"hello"[..]).unwrap());
    let folder_id = ItemId::new(drive.item_id("d").unwrap());
    let before = r.stat(&file_id).await.unwrap();

    let meta = full_meta();
    let e = r
        .set_meta(&file_id, &meta, Precondition::Matches(before.version.clone().unwrap()))
        .await
        .unwrap();
    let want = Meta {
        mtime: Some(kept(flavour, meta.mtime.unwrap())),
        created: Some(kept(flavour, meta.created.unwrap())),
        ..Meta::default()
    };
    assert_eq!(e.meta, want, "mode, owner and atime have no place on OneDrive");
    assert_eq!(e.mtime, want.mtime.unwrap(), "the item's mtime is fileSystemInfo's");
    assert_eq!(
        e.version, before.version,
        "a metadata change keeps the content version (cTag)"
    );
    // What went over the wire: only the two times.
    let json = drive.item_json("d/f.txt").unwrap();
    assert!(json["fileSystemInfo"]["createdDateTime"]
        .as_str()
        .unwrap()
        .starts_with("2017-07-14T02:40:00"));

    // Folders too.
    let folder_meta = Meta {
        mtime: Some(UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
        ..Meta::default()
    };
    assert_eq!(
        r.set_meta(&folder_id, &folder_meta, Precondition::Any)
            .await
            .unwrap()
            .meta
            .mtime,
        folder_meta.mtime
    );

    // Another machine sees it in listings and stats.
    let other = remote(&g).await;
    assert_eq!(listed(&other.list(&folder_id).await.unwrap(), "f.txt").meta, want);
    assert_eq!(other.stat(&file_id).await.unwrap().meta, want);
    let root = other.root().await.unwrap();
    assert_eq!(
        listed(&other.list(&root.id).await.unwrap(), "d").meta.mtime,
        folder_meta.mtime
    );

    // Only what the call holds changes.
    let touch = Meta {
        mtime: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        ..Meta::default()
    };
    let e = r.set_meta(&file_id, &touch, Precondition::Any).await.unwrap();
    assert_eq!((e.meta.mtime, e.meta.created), (touch.mtime, want.created));
    // Nothing the drive keeps: nothing sent, the item as it is.
    let chmod = Meta {
        mode: Some(0o600),
        ..Meta::default()
    };
    assert_eq!(
        r.set_meta(&file_id, &chmod, Precondition::Any).await.unwrap().meta,
        e.meta
    );
}

#[tokio::test]
async fn times_kept_and_seen_business() {
    times_kept_and_seen(Flavour::Business).await;
}

#[tokio::test]
async fn times_kept_and_seen_personal() {
    times_kept_and_seen(Flavour::Personal).await;
}

#[tokio::test]
async fn preconditions_and_new_content() {
    let g = start(Flavour::Business).await;
    let r = remote(&g).await;
    let drive = g.drive();
    let id = ItemId::new(drive.put_file("f", &b"one"[..]).unwrap());
    let old = r.stat(&id).await.unwrap();
    let meta = full_meta();
    r.set_meta(&id, &meta, Precondition::Any).await.unwrap();
    // Another client writes new content without a time: the drive sets it to "now".
    drive.put_file("f", &b"two!"[..]).unwrap();
    let now = r.stat(&id).await.unwrap();
    assert_ne!(now.meta.mtime, Some(kept(Flavour::Business, meta.mtime.unwrap())));
    // A change based on the old version fails and changes nothing.
    let stale = r
        .set_meta(&id, &meta, Precondition::Matches(old.version.unwrap()))
        .await;
    assert!(matches!(stale, Err(RemoteError::PreconditionFailed)), "{stale:?}");
    assert_eq!(r.stat(&id).await.unwrap().meta.mtime, now.meta.mtime);
    // Based on the current one it lands.
    let e = r
        .set_meta(&id, &meta, Precondition::Matches(now.version.unwrap()))
        .await
        .unwrap();
    assert_eq!(e.meta.mtime, Some(kept(Flavour::Business, meta.mtime.unwrap())));
    // A create precondition makes no sense for metadata; a bad value is refused before sending.
    assert!(r.set_meta(&id, &meta, Precondition::Absent).await.is_err());
    let bad = Meta {
        uid: Some(u32::MAX),
        ..Meta::default()
    };
    assert!(r.set_meta(&id, &bad, Precondition::Any).await.is_err());
    assert!(matches!(
        r.set_meta(&ItemId::new("no-such-item"), &meta, Precondition::Any).await,
        Err(RemoteError::NotFound)
    ));
}
