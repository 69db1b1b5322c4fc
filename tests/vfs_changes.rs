//! The change applier of the filesystem core, against the in-memory remote: records by item id in
//! any order and repeated, resync, revalidation of listed folders, the invalidations sent to the
//! kernel, and local edits that win over remote changes.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cloudmount::remote::memory::MemoryRemote;
use cloudmount::remote::{Change, ChangeBatch, Entry, EntryKind, ItemId, Remote, Version};
use cloudmount::vfs::writeback::queue::QueueConfig;
use cloudmount::vfs::writeback::WriteBackPaths;
use cloudmount::vfs::{DriveFs, FsConfig, Invalidation};
use tokio::sync::mpsc::UnboundedReceiver;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A core with a one-hour TTL (only the applier can explain what changes) over a remote holding
/// `a/x.txt`, `a/y.txt`, `a/w.txt`, `a/v.txt` and an empty `b/`, with the root, `a` and `b` listed.
async fn setup() -> (Arc<MemoryRemote>, Arc<DriveFs>, UnboundedReceiver<Invalidation>) {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("a/x.txt", &b"xxx"[..]);
    remote.put_file("a/y.txt", &b"yyyy"[..]);
    remote.put_file("a/w.txt", &b"w"[..]);
    remote.put_file("a/v.txt", &b"v"[..]);
    remote.put_dir("b");
    let fs = DriveFs::new(
        remote.clone(),
        FsConfig {
            attr_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
            read_only: false,
            block_size: 4096,
            cache_bytes: 1 << 20,
            ..FsConfig::default()
        },
    )
    .await
    .unwrap();
    let rx = fs.invalidations();
    for dir in ["", "a", "b"] {
        let ino = ino_of(&fs, dir).await;
        names(&fs, ino).await;
    }
    (remote, fs, rx)
}

async fn ino_of(fs: &DriveFs, path: &str) -> u64 {
    let mut ino = fs.root_ino();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        ino = fs.lookup(ino, os(seg)).await.unwrap().attr.ino;
    }
    ino
}

async fn names(fs: &DriveFs, ino: u64) -> BTreeSet<String> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut out = BTreeSet::new();
    fs.readdir(fh, 0, |i| {
        out.insert(i.name.to_string());
        false
    })
    .unwrap();
    fs.releasedir(fh);
    out.retain(|n| n != "." && n != "..");
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn entry(id: &str, name: &str, kind: EntryKind, size: u64, version: &str) -> Entry {
    Entry {
        id: ItemId::new(id),
        name: name.into(),
        kind,
        size,
        mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(size),
        version: Some(Version::from_etag(version)),
        meta: Default::default(),
    }
}

fn up(parent: &str, e: Entry) -> Change {
    Change::Upsert {
        parent: ItemId::new(parent),
        entry: e,
    }
}

fn drain(rx: &mut UnboundedReceiver<Invalidation>) -> Vec<Invalidation> {
    let mut v = Vec::new();
    while let Ok(i) = rx.try_recv() {
        v.push(i);
    }
    v
}

fn inval_entry(parent: u64, name: &str) -> Invalidation {
    Invalidation::Entry {
        parent,
        name: name.into(),
    }
}

#[tokio::test]
async fn creates_renames_moves_deletes_and_content_changes_by_id() {
    let (_remote, fs, mut rx) = setup().await;
    let (root, a, b) = (fs.root_ino(), ino_of(&fs, "a").await, ino_of(&fs, "b").await);
    let x = ino_of(&fs, "a/x.txt").await;
    let y = ino_of(&fs, "a/y.txt").await;
    drain(&mut rx);
    let batch = vec![
        // Out of order: w moves into a new folder, whose record comes after it.
        up("n", entry("a/w.txt", "w.txt", EntryKind::File, 1, "w1")),
        up("", entry("n", "n", EntryKind::Directory, 0, "n1")),
        // Duplicates: the last record of x wins (content change, same name).
        up("a", entry("a/x.txt", "x.txt", EntryKind::File, 50, "x2")),
        up("a", entry("a/x.txt", "x.txt", EntryKind::File, 7, "x3")),
        // Rename within a, then move to b, keeping the id.
        up("a", entry("a/y.txt", "y2.txt", EntryKind::File, 4, "y1")),
        Change::Deleted {
            id: ItemId::new("a/v.txt"),
        },
    ];
    fs.apply_changes(ChangeBatch::Changes(batch));
    assert_eq!(names(&fs, root).await, set(&["a", "b", "n"]));
    assert_eq!(names(&fs, a).await, set(&["x.txt", "y2.txt"]));
    assert_eq!(fs.getattr(x).await.unwrap().0.size, 7);
    let inv = drain(&mut rx);
    for want in [
        inval_entry(root, "n"),
        inval_entry(a, "y.txt"),
        inval_entry(a, "y2.txt"),
        inval_entry(a, "w.txt"),
        inval_entry(a, "v.txt"),
        Invalidation::Inode(x),
    ] {
        assert!(inv.contains(&want), "{want:?} missing from {inv:?}");
    }
    let n = ino_of(&fs, "n").await;
    assert!(inv.contains(&inval_entry(n, "w.txt")), "w moved into n: {inv:?}");

    fs.apply_changes(ChangeBatch::Changes(vec![up(
        "b",
        entry("a/y.txt", "y2.txt", EntryKind::File, 4, "y1"),
    )]));
    assert_eq!(names(&fs, a).await, set(&["x.txt"]));
    assert_eq!(names(&fs, b).await, set(&["y2.txt"]));
    assert_eq!(ino_of(&fs, "b/y2.txt").await, y, "a move keeps the inode");
    assert!(fs.lookup(a, os("y2.txt")).await.is_err());
    let inv = drain(&mut rx);
    assert!(inv.contains(&inval_entry(a, "y2.txt")) && inv.contains(&inval_entry(b, "y2.txt")));

    // Records that change nothing send nothing.
    fs.apply_changes(ChangeBatch::Changes(vec![up(
        "b",
        entry("a/y.txt", "y2.txt", EntryKind::File, 4, "y1"),
    )]));
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_missing_version_is_no_change_unless_size_or_mtime_moved() {
    let (_remote, fs, mut rx) = setup().await;
    let x = ino_of(&fs, "a/x.txt").await;
    fs.apply_changes(ChangeBatch::Changes(vec![up(
        "a",
        entry("a/x.txt", "x.txt", EntryKind::File, 9, "v1"),
    )]));
    drain(&mut rx);
    let mut same = entry("a/x.txt", "x.txt", EntryKind::File, 9, "v1");
    same.version = None;
    fs.apply_changes(ChangeBatch::Changes(vec![up("a", same.clone())]));
    assert!(
        drain(&mut rx).is_empty(),
        "no version and the same size and mtime: no change"
    );
    same.size = 10;
    fs.apply_changes(ChangeBatch::Changes(vec![up("a", same)]));
    assert_eq!(drain(&mut rx), vec![Invalidation::Inode(x)]);
}

#[tokio::test]
async fn resync_drops_what_the_enumeration_does_not_name() {
    let (_remote, fs, mut rx) = setup().await;
    let (root, a) = (fs.root_ino(), ino_of(&fs, "a").await);
    drain(&mut rx);
    let all = vec![
        up("", entry("a", "a", EntryKind::Directory, 0, "a1")),
        up("a", entry("a/x.txt", "x.txt", EntryKind::File, 3, "x1")),
    ];
    fs.apply_changes(ChangeBatch::Resync(all));
    assert_eq!(names(&fs, root).await, set(&["a"]));
    assert_eq!(names(&fs, a).await, set(&["x.txt"]));
    let inv = drain(&mut rx);
    assert!(inv.contains(&inval_entry(root, "b")) && inv.contains(&inval_entry(a, "w.txt")));
}

#[tokio::test]
async fn revalidation_finds_changes_in_listed_folders() {
    let (remote, fs, mut rx) = setup().await;
    let (root, a) = (fs.root_ino(), ino_of(&fs, "a").await);
    let x = ino_of(&fs, "a/x.txt").await;
    let fh = fs.open(x, libc::O_RDONLY).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], b"xxx");
    fs.release(fh).await.unwrap();
    drain(&mut rx);

    remote.put_file("a/x.txt", &b"XYZ"[..]);
    remote.remove("a/w.txt");
    remote.put_file("a/new.txt", &b"new"[..]);
    remote.put_file("c/deep/leaf.txt", &b"leaf"[..]);
    fs.revalidate_round().await.unwrap();

    assert_eq!(names(&fs, root).await, set(&["a", "b", "c"]));
    assert_eq!(names(&fs, a).await, set(&["new.txt", "v.txt", "x.txt", "y.txt"]));
    let fh = fs.open(x, libc::O_RDONLY).await.unwrap().fh;
    assert_eq!(&fs.read(fh, 0, 100).await.unwrap()[..], b"XYZ", "no stale block served");
    fs.release(fh).await.unwrap();
    let inv = drain(&mut rx);
    for want in [
        Invalidation::Inode(x),
        inval_entry(a, "w.txt"),
        inval_entry(a, "new.txt"),
        inval_entry(root, "c"),
    ] {
        assert!(inv.contains(&want), "{want:?} missing from {inv:?}");
    }
    // Nothing changed: nothing sent.
    fs.revalidate_round().await.unwrap();
    assert!(drain(&mut rx).is_empty());
}

fn paths(dir: &std::path::Path) -> WriteBackPaths {
    WriteBackPaths {
        journal: dir.join("journal"),
        staging: dir.join("staging"),
        min_free_bytes: 0,
    }
}

#[tokio::test]
async fn a_local_edit_in_flight_wins_over_a_remote_change() {
    let (remote, fs, _rx) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    fs.enable_writes(&paths(dir.path()), QueueConfig::default()).unwrap();
    let x = ino_of(&fs, "a/x.txt").await;
    let o = fs.open(x, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(o.fh, 0, b"local edit").await.unwrap();

    remote.put_file("a/x.txt", &b"remote change, longer"[..]);
    fs.revalidate_round().await.unwrap();
    fs.apply_changes(ChangeBatch::Changes(vec![up(
        "a",
        entry("a/x.txt", "x.txt", EntryKind::File, 21, "remote"),
    )]));
    assert_eq!(fs.getattr(x).await.unwrap().0.size, 10, "local size shown");
    let r = fs.open(x, libc::O_RDONLY).await.unwrap().fh;
    assert_eq!(&fs.read(r, 0, 100).await.unwrap()[..], b"local edit");
    fs.release(r).await.unwrap();
    fs.release(o.fh).await.unwrap();
    // The upload meets the new server version: both survive, ours as a conflict copy.
    assert!(fs
        .upload_queue()
        .unwrap()
        .drain(Duration::from_secs(10))
        .await
        .is_empty());
    assert_eq!(
        remote.file_content("a/x.txt").unwrap().as_ref(),
        b"remote change, longer"
    );
    let listing = remote.list(&ItemId::new("a")).await.unwrap();
    let copy = listing
        .iter()
        .find(|e| e.name.starts_with("x (conflict "))
        .expect("a conflict copy");
    assert_eq!(
        remote.file_content(&format!("a/{}", copy.name)).unwrap().as_ref(),
        b"local edit"
    );
}

/// The in-memory remote as a server whose folder versions change with anything below them
/// (Nextcloud, ownCloud), counting listings.
struct Propagating {
    inner: Arc<MemoryRemote>,
    lists: std::sync::atomic::AtomicUsize,
}

impl Propagating {
    fn tree_version<'a>(
        &'a self,
        dir: &'a ItemId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>> {
        Box::pin(async move {
            let mut parts = Vec::new();
            for c in self.inner.list(dir).await.unwrap_or_default() {
                let v = match c.kind {
                    EntryKind::Directory => self.tree_version(&c.id).await,
                    EntryKind::File => c.version.map(|v| v.as_str().to_string()).unwrap_or_default(),
                };
                parts.push(format!("{}={v}", c.id));
            }
            parts.sort();
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in parts.join(";").bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:x}")
        })
    }

    async fn fix(&self, mut e: Entry) -> Entry {
        if e.kind == EntryKind::Directory {
            e.version = Some(Version::from_etag(&self.tree_version(&e.id).await));
        }
        e
    }
}

#[async_trait::async_trait]
impl Remote for Propagating {
    fn describe(&self) -> String {
        "propagating memory".into()
    }
    async fn root(&self) -> cloudmount::error::RemoteResult<Entry> {
        let e = self.inner.root().await?;
        Ok(self.fix(e).await)
    }
    async fn stat(&self, id: &ItemId) -> cloudmount::error::RemoteResult<Entry> {
        let e = self.inner.stat(id).await?;
        Ok(self.fix(e).await)
    }
    async fn lookup(&self, parent: &ItemId, name: &str) -> cloudmount::error::RemoteResult<Entry> {
        let e = self.inner.lookup(parent, name).await?;
        Ok(self.fix(e).await)
    }
    async fn list(&self, dir: &ItemId) -> cloudmount::error::RemoteResult<Vec<Entry>> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut out = Vec::new();
        for e in self.inner.list(dir).await? {
            out.push(self.fix(e).await);
        }
        Ok(out)
    }
    async fn read(
        &self,
        id: &ItemId,
        version: Option<&Version>,
        offset: u64,
        len: u64,
    ) -> cloudmount::error::RemoteResult<bytes::Bytes> {
        self.inner.read(id, version, offset, len).await
    }
    async fn quota(&self) -> cloudmount::error::RemoteResult<Option<cloudmount::remote::Quota>> {
        self.inner.quota().await
    }
    fn capabilities(&self) -> cloudmount::remote::Capabilities {
        cloudmount::remote::Capabilities {
            propagates_versions: true,
            ..Default::default()
        }
    }
}

#[tokio::test]
async fn with_propagating_versions_only_changed_subtrees_are_listed() {
    let inner = Arc::new(MemoryRemote::new());
    inner.put_file("a/x.txt", &b"xxx"[..]);
    inner.put_file("b/y.txt", &b"yyy"[..]);
    let remote = Arc::new(Propagating {
        inner: inner.clone(),
        lists: Default::default(),
    });
    let fs = DriveFs::new(
        remote.clone(),
        FsConfig {
            attr_ttl: Duration::from_secs(3600),
            ..FsConfig::default()
        },
    )
    .await
    .unwrap();
    let mut rx = fs.invalidations();
    for dir in ["", "a", "b"] {
        let ino = ino_of(&fs, dir).await;
        names(&fs, ino).await;
    }
    let lists = || remote.lists.swap(0, std::sync::atomic::Ordering::SeqCst);
    lists();
    fs.revalidate_round().await.unwrap();
    assert_eq!(lists(), 0, "an unchanged root version means nothing to list");

    inner.put_file("a/x.txt", &b"x-changed"[..]);
    let x = ino_of(&fs, "a/x.txt").await;
    drain(&mut rx);
    fs.revalidate_round().await.unwrap();
    assert_eq!(lists(), 2, "the root and a are listed again, b is not");
    assert_eq!(fs.getattr(x).await.unwrap().0.size, 9);
    assert!(drain(&mut rx).contains(&Invalidation::Inode(x)));
    fs.revalidate_round().await.unwrap();
    assert_eq!(lists(), 0);
}

#[tokio::test]
async fn folders_only_looked_up_in_are_revalidated_too() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("d/k.txt", &b"k"[..]);
    remote.put_file("d/gone.txt", &b"g"[..]);
    let fs = DriveFs::new(
        remote.clone(),
        FsConfig {
            attr_ttl: Duration::from_secs(3600),
            ..FsConfig::default()
        },
    )
    .await
    .unwrap();
    let mut rx = fs.invalidations();
    // Looked up by path, never listed.
    let d = ino_of(&fs, "d").await;
    let k = ino_of(&fs, "d/k.txt").await;
    ino_of(&fs, "d/gone.txt").await;
    remote.remove("d/gone.txt");
    remote.put_file("d/k.txt", &b"k2"[..]);
    fs.revalidate_round().await.unwrap();
    let inv = drain(&mut rx);
    assert!(inv.contains(&inval_entry(d, "gone.txt")), "{inv:?}");
    assert!(inv.contains(&Invalidation::Inode(k)), "{inv:?}");
    // Its listing is kept now, so names that appear later are seen too.
    remote.put_file("d/new.txt", &b"n"[..]);
    fs.revalidate_round().await.unwrap();
    assert!(drain(&mut rx).contains(&inval_entry(d, "new.txt")));
    fs.revalidate_round().await.unwrap();
    assert!(drain(&mut rx).is_empty(), "an unchanged folder sends nothing");
}

/// A feed that makes a local change (mkdir through the core) during its first round and answers
/// that round with the tree as it was before; the next round reports the new folder.
struct RacingFeed {
    fs: std::sync::OnceLock<Arc<DriveFs>>,
    rounds: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl cloudmount::remote::ChangeSource for RacingFeed {
    async fn poll_round(&self) -> cloudmount::error::RemoteResult<ChangeBatch> {
        let fs = self.fs.get().unwrap();
        match self.rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => {
                fs.mkdir(fs.root_ino(), os("made-here")).await.unwrap();
                Ok(ChangeBatch::Resync(vec![up(
                    "",
                    entry("a", "a", EntryKind::Directory, 0, "a1"),
                )]))
            }
            _ => Ok(ChangeBatch::Changes(vec![up(
                "",
                entry("made-here", "made-here", EntryKind::Directory, 0, "m1"),
            )])),
        }
    }
}

#[tokio::test]
async fn a_feed_round_that_raced_a_local_change_is_chased_by_another() {
    let (_remote, fs, _rx) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    fs.enable_writes(&paths(dir.path()), QueueConfig::default()).unwrap();
    let feed = RacingFeed {
        fs: std::sync::OnceLock::new(),
        rounds: Default::default(),
    };
    let _ = feed.fs.set(fs.clone());
    fs.poll_feed(&feed).await.unwrap();
    assert_eq!(feed.rounds.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(names(&fs, fs.root_ino()).await, set(&["a", "made-here"]));
}
