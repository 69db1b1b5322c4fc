//! Graph writes against the in-repo fake Graph server over real HTTP: uploads (simple PUT and
//! resumable sessions), preconditions, errors, names, folders, moves, deletes and times.

use cloudmount::fuse::ToErrno;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use cloudmount::auth::TokenSource;
use cloudmount::error::{RemoteError, RemoteResult};
use cloudmount::graph::quickxor::QuickXor;
use cloudmount::graph::{DriveSelector, GraphConfig, GraphRemote};
use cloudmount::http::{HttpConfig, RetryPolicy};
use cloudmount::remote::{
    EntryKind, ItemId, Precondition, Remote, ResumeSlot, TransferProgress, UploadCtx, UploadSource, UploadTarget,
};
use cloudmount::vfs::writeback::journal::{Journal, UploadRecord, UploadState};
use cloudmount::vfs::writeback::queue::{QueueConfig, UploadQueue};
use fake_graph::{FakeGraph, FakeGraphConfig, RouteClass};
use url::Url;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const ALIGN: u64 = 327_680;

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

/// A remote with fragments of `fragment` bytes and a `timeout` per operation (and stall limit).
async fn remote_with(g: &Arc<FakeGraph>, fragment: u64, timeout: Duration) -> GraphRemote {
    let mut c = GraphConfig::new(DriveSelector::Me).with_graph_url(Url::parse(&g.graph_url()).unwrap());
    c.timeout = timeout;
    c.connect_timeout = Duration::from_secs(2);
    c.upload_fragment_size = fragment;
    let tokens = Arc::new(Tokens {
        g: g.clone(),
        current: Mutex::new(g.issue_tokens().0),
    });
    GraphRemote::connect(c, http(), tokens).await.expect("connect")
}

async fn remote(g: &Arc<FakeGraph>) -> GraphRemote {
    remote_with(g, 10 * MIB, Duration::from_secs(15)).await
}

/// Byte `i` of the patterned content: cheap, position-dependent, not periodic in 160.
fn pattern_at(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        *b = ((i.wrapping_mul(0x9E37_79B9) >> 7) ^ (i >> 13)) as u8;
    }
}

fn pattern(len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    pattern_at(0, &mut v);
    v
}

/// Write `len` patterned bytes to `dir/name` in chunks.
fn staged(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < len {
        let n = MIB.min(len - off) as usize;
        pattern_at(off, &mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    f.flush().unwrap();
    path
}

fn staged_bytes(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn whole_secs(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The server's copy equals the patterned content of `len` bytes.
fn assert_patterned(g: &FakeGraph, path: &str, len: u64) {
    let got = g.drive().file_bytes(path).expect("on the server");
    assert_eq!(got.len() as u64, len, "{path}: size");
    let mut want = vec![0u8; MIB as usize];
    for (i, chunk) in got.chunks(MIB as usize).enumerate() {
        let w = &mut want[..chunk.len()];
        pattern_at(i as u64 * MIB, w);
        assert!(chunk == &w[..], "{path}: content differs in MiB {i}");
    }
}

fn server_qxh(g: &FakeGraph, path: &str) -> String {
    g.drive().item_json(path).unwrap()["file"]["hashes"]["quickXorHash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The fake's own (independent) quickXorHash of a local file.
fn reference_qxh(path: &Path) -> String {
    let mut h = fake_graph::quickxorhash::QuickXorHash::new();
    h.update(&std::fs::read(path).unwrap());
    h.finalize()
}

#[tokio::test]
async fn a_300_mib_upload_goes_in_aligned_fragments_and_arrives_intact() {
    let g = start(FakeGraphConfig::default()).await;
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * MIB;
    let src = staged(dir.path(), "big.bin", size);
    let sent = TransferProgress::new();
    let mtime = whole_secs(1_700_000_000);
    let t0 = Instant::now();
    let e = r
        .upload(
            UploadTarget::new(&r.root_id(), "big.bin", Precondition::Absent),
            UploadSource::file(&src, mtime),
            &UploadCtx::new(sent.clone(), ResumeSlot::new()),
        )
        .await
        .unwrap();
    eprintln!("300 MiB uploaded in {:?}", t0.elapsed());
    assert_eq!((e.kind, e.size, e.mtime), (EntryKind::File, size, mtime));
    assert_eq!(sent.get(), size);
    let s = g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1);
    assert_eq!(s.count(RouteClass::SimpleUpload), 0);
    assert_eq!(
        s.upload_url_requests_with_authorization, 0,
        "no bearer token on the upload URL"
    );
    assert_eq!(s.upload_fragment_bytes, size, "every byte sent once");
    let frags = g.stats().upload_fragments();
    assert_eq!(frags.len(), 30);
    let mut next = 0;
    for (i, (a, len, total, _)) in frags.iter().enumerate() {
        assert_eq!((*a, *total), (next, size), "fragment {i} in order");
        if i + 1 < frags.len() {
            assert_eq!(*len, 10 * MIB, "fragment {i}");
            assert_eq!(len % ALIGN, 0);
        }
        next += len;
    }
    assert_eq!(next, size);
    assert_patterned(&g, "/big.bin", size);
    assert_eq!(server_qxh(&g, "/big.bin"), reference_qxh(&src));
}

#[tokio::test]
async fn failed_and_timed_out_fragments_resume_from_next_expected_ranges() {
    let g = start(FakeGraphConfig::default()).await;
    let frag = 6 * ALIGN;
    let r = remote_with(&g, frag, Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 12 * frag + 12_345;
    let src = staged(dir.path(), "f.bin", size);
    let f = g.faults();
    f.fail_next(RouteClass::UploadUrl, 1, 500); // answered at once, body not taken
    f.stall_next_upload_fragments(1, Duration::from_secs(5)); // read, never answered in time
    f.fail_next_upload_after_accept(1); // stored, but answered 500
    let e = r
        .upload(
            UploadTarget::new(&r.root_id(), "f.bin", Precondition::Any),
            UploadSource::file(&src, whole_secs(1_600_000_000)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.size, size);
    assert_patterned(&g, "/f.bin", size);
    let s = g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1, "one session throughout");
    assert!(s.injected_failures >= 2);
    // Only the fragment that timed out went twice (the server read it and dropped it).
    assert_eq!(s.upload_fragment_bytes, size + frag);
    let status_gets = s
        .recent_of(RouteClass::UploadUrl)
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert!(status_gets >= 3, "asked the session after each failure ({status_gets})");
    let starts: Vec<u64> = g.stats().upload_fragments().iter().map(|f| f.0).collect();
    assert!(starts.iter().all(|a| a % frag == 0));
    assert_eq!(server_qxh(&g, "/f.bin"), reference_qxh(&src));
}

/// Start an upload, stop it (drop the future) once `after` bytes went out, return the token.
async fn interrupted_upload(g: &Arc<FakeGraph>, src: &Path, name: &str, after: u64) -> serde_json::Value {
    let r = Arc::new(remote_with(g, 3 * ALIGN, Duration::from_secs(15)).await);
    let slot = ResumeSlot::new();
    let sent = TransferProgress::new();
    let (r2, slot2, sent2, src2, name2) = (
        r.clone(),
        slot.clone(),
        sent.clone(),
        src.to_path_buf(),
        name.to_string(),
    );
    let task = tokio::spawn(async move {
        let root = r2.root_id();
        r2.upload(
            UploadTarget::new(&root, &name2, Precondition::Absent),
            UploadSource::file(&src2, whole_secs(1_650_000_000)),
            &UploadCtx::new(sent2.clone(), slot2.clone()),
        )
        .await
    });
    while sent.get() < after {
        assert!(!task.is_finished(), "the upload ended before it could be interrupted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    // Let the server finish with the fragment cut off mid-body (it is logged when it ends).
    tokio::time::sleep(Duration::from_millis(300)).await;
    slot.get().expect("a resume token while the session runs")
}

#[tokio::test]
async fn a_new_process_resumes_the_same_session_from_the_token() {
    let g = start(FakeGraphConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB + 777;
    let src = staged(dir.path(), "r.bin", size);
    let token = interrupted_upload(&g, &src, "r.bin", 10 * MIB).await;
    let first_session = g.stats().count(RouteClass::CreateSession);
    assert_eq!(first_session, 1);
    // The journal keeps the token as JSON: round-trip it like a restart would.
    let token: serde_json::Value = serde_json::from_str(&token.to_string()).unwrap();
    g.reset_stats();
    let r = remote_with(&g, 3 * ALIGN, Duration::from_secs(15)).await;
    let slot = ResumeSlot::with_value(Some(token));
    let sent = TransferProgress::new();
    let e = r
        .upload(
            UploadTarget::new(&r.root_id(), "r.bin", Precondition::Absent),
            UploadSource::file(&src, whole_secs(1_650_000_000)),
            &UploadCtx::new(sent.clone(), slot.clone()),
        )
        .await
        .unwrap();
    assert_eq!(e.size, size);
    let s = g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 0, "the same session, not a new one");
    let frags = g.stats().upload_fragments();
    let resumed_at = frags[0].0;
    assert!(
        resumed_at >= 9 * MIB,
        "resumed mid-file, not from zero (at {resumed_at})"
    );
    assert_eq!(s.upload_fragment_bytes, size - resumed_at, "nothing sent twice");
    assert_eq!(
        sent.get(),
        size,
        "progress through the one upload method ends at the whole size"
    );
    assert!(slot.get().is_none(), "the token goes once the upload is done");
    assert_patterned(&g, "/r.bin", size);
    assert_eq!(server_qxh(&g, "/r.bin"), reference_qxh(&src));
}

#[tokio::test]
async fn an_expired_session_is_replaced_by_a_new_one() {
    let g = start(FakeGraphConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * MIB;
    let src = staged(dir.path(), "x.bin", size);
    let token = interrupted_upload(&g, &src, "x.bin", 5 * MIB).await;
    g.faults().expire_upload_sessions();
    g.reset_stats();
    let r = remote_with(&g, 3 * ALIGN, Duration::from_secs(15)).await;
    let slot = ResumeSlot::with_value(Some(token.clone()));
    r.upload(
        UploadTarget::new(&r.root_id(), "x.bin", Precondition::Absent),
        UploadSource::file(&src, SystemTime::now()),
        &UploadCtx::new(TransferProgress::new(), slot.clone()),
    )
    .await
    .unwrap();
    let s = g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 1, "a new session");
    assert_eq!(g.stats().upload_fragments()[0].0, 0, "the new session starts at zero");
    assert_eq!(s.upload_fragment_bytes, size);
    assert_patterned(&g, "/x.bin", size);

    // A session that expires in the middle of an upload (404 on a fragment) is replaced as well.
    g.reset_stats();
    let src2 = staged(dir.path(), "y.bin", 8 * MIB);
    let frag = 3 * ALIGN;
    g.faults().stall_next_upload_fragments(1, Duration::from_millis(700));
    let g2 = g.clone();
    let expire = tokio::spawn(async move {
        // While the first fragment is held, the session expires.
        tokio::time::sleep(Duration::from_millis(300)).await;
        g2.faults().expire_upload_sessions();
    });
    let r2 = remote_with(&g, frag, Duration::from_millis(1500)).await;
    r2.upload(
        UploadTarget::new(&r2.root_id(), "y.bin", Precondition::Absent),
        UploadSource::file(&src2, SystemTime::now()),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    expire.await.unwrap();
    assert_eq!(g.stats().count(RouteClass::CreateSession), 2);
    assert_patterned(&g, "/y.bin", 8 * MIB);
}

#[tokio::test]
async fn small_and_empty_files_use_a_simple_put_and_keep_their_time() {
    let g = start(FakeGraphConfig::default()).await;
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    let mtime = whole_secs(1_500_000_000);
    for (name, len) in [("empty", 0), ("small.txt", 5), ("four.bin", 4 * MIB)] {
        g.reset_stats();
        let src = staged(dir.path(), name, len);
        let e = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Absent),
                UploadSource::file(&src, mtime),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!((e.size, e.mtime), (len, mtime), "{name}");
        let s = g.stats();
        assert_eq!(
            (s.count(RouteClass::SimpleUpload), s.count(RouteClass::CreateSession)),
            (1, 0),
            "{name}"
        );
        assert_patterned(&g, &format!("/{name}"), len);
        let fsi = g.drive().item_json(&format!("/{name}")).unwrap()["fileSystemInfo"]["lastModifiedDateTime"].clone();
        assert_eq!(fsi.as_str().unwrap(), "2017-07-14T02:40:00Z", "{name}");
    }
    g.reset_stats();
    let src = staged(dir.path(), "over", 4 * MIB + 1);
    r.upload(
        UploadTarget::new(&r.root_id(), "over", Precondition::Absent),
        UploadSource::file(&src, mtime),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    assert_eq!(g.stats().count(RouteClass::CreateSession), 1, "over 4 MiB: a session");
    assert_patterned(&g, "/over", 4 * MIB + 1);
}

#[tokio::test]
async fn preconditions_map_to_conflicts() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("c.txt", 10 * KIB), ("c.bin", 6 * MIB)] {
        let path = format!("/{name}");
        d.put_file(&path, &b"first"[..]).unwrap();
        let seen = r.lookup(&r.root_id(), name).await.unwrap().version.unwrap();
        d.put_file(&path, &b"changed elsewhere"[..]).unwrap();
        let src = staged(dir.path(), name, len);
        g.reset_stats();
        let stale = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Matches(seen)),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await;
        assert!(
            matches!(stale, Err(RemoteError::PreconditionFailed)),
            "{name}: {stale:?}"
        );
        assert_eq!(&d.file_bytes(&path).unwrap()[..], b"changed elsewhere", "{name}: kept");
        let s = g.stats();
        assert_eq!(
            s.count(RouteClass::SimpleUpload) + s.count(RouteClass::CreateSession),
            0
        );
        let absent = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Absent),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await;
        assert!(matches!(absent, Err(RemoteError::AlreadyExists)), "{name}: {absent:?}");
        assert_eq!(absent.unwrap_err().errno(), libc::EEXIST);
        let current = r.lookup(&r.root_id(), name).await.unwrap().version.unwrap();
        let e = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Matches(current.clone())),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_ne!(e.version.as_ref(), Some(&current));
        assert_patterned(&g, &path, len);
        // The same upload again with the old base: the server already holds exactly these bytes
        // (an attempt whose answer was lost), so that is success, not a conflict.
        let again = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Matches(current)),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(again.id, e.id);
        let replaced = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Any),
                UploadSource::file(&staged(dir.path(), "tiny", 3), SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!(replaced.size, 3);
    }
}

/// Another device replaces the file between our simple PUT and the PATCH that puts our time back
/// (held by a 429 with Retry-After, as OneDrive does under load). The PATCH carries If-Match on the
/// eTag the PUT answered, so that is a conflict: theirs stays, nothing is uploaded again over it.
/// A metadata-only change in between (their `touch`) is not a conflict: the time is set on it.
#[tokio::test]
async fn a_change_between_the_put_and_its_time_patch_is_a_conflict() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    let mtime = whole_secs(1_600_000_000);
    d.put_file("/c.txt", &b"ORIGINAL"[..]).unwrap();
    let seen = r.lookup(&r.root_id(), "c.txt").await.unwrap().version.unwrap();
    g.reset_stats();
    g.faults().throttle_next(RouteClass::Write, 1, 429, Some(1));
    let other = d.clone();
    g.faults().before_next(RouteClass::Write, move || {
        other.put_file("/c.txt", &b"OTHER DEVICE"[..]).unwrap();
    });
    let src = staged_bytes(dir.path(), "s", b"LOCAL");
    let res = r
        .upload(
            UploadTarget::new(&r.root_id(), "c.txt", Precondition::Matches(seen)),
            UploadSource::file(&src, mtime),
            &UploadCtx::default(),
        )
        .await;
    assert!(matches!(res, Err(RemoteError::PreconditionFailed)), "{res:?}");
    assert_eq!(&d.file_bytes("/c.txt").unwrap()[..], b"OTHER DEVICE");
    let s = g.stats();
    assert_eq!(s.count(RouteClass::SimpleUpload), 1, "not uploaded again over theirs");
    let patches: Vec<u16> = s
        .recent
        .iter()
        .filter(|q| q.method == "PATCH")
        .map(|q| q.status)
        .collect();
    assert_eq!(patches, vec![429, 412], "the PATCH after the 429 meets their change");

    // Their touch between our PUT and our PATCH: the content is still ours, so the time is set.
    let seen = r.lookup(&r.root_id(), "c.txt").await.unwrap().version.unwrap();
    let other = d.clone();
    g.faults().before_next(RouteClass::Write, move || {
        other.set_mtime("/c.txt", whole_secs(1_700_000_000)).unwrap();
    });
    let e = r
        .upload(
            UploadTarget::new(&r.root_id(), "c.txt", Precondition::Matches(seen)),
            UploadSource::file(&src, mtime),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.mtime, mtime);
    assert_eq!(&d.file_bytes("/c.txt").unwrap()[..], b"LOCAL");
    assert_eq!(d.list("/"), vec!["c.txt"]);
}

/// The same race on the session path: another device replaces the file while our fragments are
/// going up (the hook runs when the last fragment arrives). The commit checks the session's
/// If-Match, so that is a conflict, and theirs stays.
#[tokio::test]
async fn a_change_while_session_fragments_go_up_is_a_conflict() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    let r = remote_with(&g, ALIGN, Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    d.put_file("/big.bin", &b"ORIGINAL"[..]).unwrap();
    let seen = r.lookup(&r.root_id(), "big.bin").await.unwrap().version.unwrap();
    let src = staged(dir.path(), "big", 4 * MIB + 100);
    let fragments = (4 * MIB + 100).div_ceil(ALIGN);
    for _ in 1..fragments {
        g.faults().before_next(RouteClass::UploadUrl, || {});
    }
    let other = d.clone();
    g.faults().before_next(RouteClass::UploadUrl, move || {
        other.put_file("/big.bin", &b"OTHER DEVICE"[..]).unwrap();
    });
    let res = r
        .upload(
            UploadTarget::new(&r.root_id(), "big.bin", Precondition::Matches(seen)),
            UploadSource::file(&src, SystemTime::now()),
            &UploadCtx::default(),
        )
        .await;
    assert!(matches!(res, Err(RemoteError::PreconditionFailed)), "{res:?}");
    assert_eq!(&d.file_bytes("/big.bin").unwrap()[..], b"OTHER DEVICE");
    assert_eq!(d.list("/"), vec!["big.bin"]);
}

fn record(key: &str, parent: &ItemId, name: &str, staged: PathBuf, size: u64, base: Option<String>) -> UploadRecord {
    UploadRecord {
        key: key.into(),
        parent: parent.as_str().into(),
        name: name.into(),
        staged,
        size,
        mtime_ns: UploadRecord::mtime_ns_of(whole_secs(1_600_000_000)),
        base_version: base,
        attempts: 0,
        last_error: None,
        resume: None,
        ours: Vec::new(),
        conflict_copy: None,
        state: UploadState::Pending,
    }
}

fn quick() -> QueueConfig {
    QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn the_queue_keeps_a_conflict_copy_when_the_server_changed() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    d.put_file("/doc.txt", &b"what we read"[..]).unwrap();
    let r: Arc<dyn Remote> = Arc::new(remote(&g).await);
    let root = r.root().await.unwrap().id;
    let seen = r.lookup(&root, "doc.txt").await.unwrap().version.unwrap();
    d.put_file("/doc.txt", &b"changed elsewhere"[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let q = UploadQueue::start(r.clone(), Journal::open(dir.path().join("j")).unwrap(), quick(), None).unwrap();
    let src = staged_bytes(dir.path(), "s1", b"ours");
    let gen = q
        .enqueue(record("k1", &root, "doc.txt", src, 4, Some(seen.as_str().to_string())))
        .unwrap();
    q.wait("k1", gen).await.unwrap();
    assert_eq!(&d.file_bytes("/doc.txt").unwrap()[..], b"changed elsewhere");
    let copy = d
        .list("/")
        .into_iter()
        .find(|n| n.starts_with("doc (conflict ") && n.ends_with(").txt"))
        .expect("a conflict copy");
    assert_eq!(&d.file_bytes(&format!("/{copy}")).unwrap()[..], b"ours");
}

#[tokio::test]
async fn locked_files_are_retried_later_without_holding_up_others() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    d.put_file("/locked.docx", &b"old"[..]).unwrap();
    g.faults().lock_item("/locked.docx").unwrap();
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    let src = staged_bytes(dir.path(), "l", b"new content");
    let e = r
        .upload(
            UploadTarget::new(&r.root_id(), "locked.docx", Precondition::Any),
            UploadSource::file(&src, SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RemoteError::Locked), "{e:?}");
    assert_eq!(e.errno(), libc::EBUSY);

    let r: Arc<dyn Remote> = Arc::new(r);
    let root = r.root().await.unwrap().id;
    let base = r.lookup(&root, "locked.docx").await.unwrap().version.unwrap();
    let q = UploadQueue::start(r.clone(), Journal::open(dir.path().join("j")).unwrap(), quick(), None).unwrap();
    let g1 = q
        .enqueue(record(
            "k1",
            &root,
            "locked.docx",
            src,
            11,
            Some(base.as_str().to_string()),
        ))
        .unwrap();
    let first = q.wait("k1", g1).await;
    assert!(
        matches!(first, Err(RemoteError::Locked)),
        "fsync hears EBUSY: {first:?}"
    );
    let other = staged_bytes(dir.path(), "o", b"other file");
    let g2 = q.enqueue(record("k2", &root, "other.txt", other, 10, None)).unwrap();
    q.wait("k2", g2).await.unwrap();
    assert_eq!(&d.file_bytes("/other.txt").unwrap()[..], b"other file", "not held up");
    assert!(q.contains("k1"), "the locked one stays queued");
    g.faults().unlock_item("/locked.docx").unwrap();
    let left = q.drain(Duration::from_secs(10)).await;
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(&d.file_bytes("/locked.docx").unwrap()[..], b"new content");
    assert!(d.list("/").iter().all(|n| !n.contains("conflict")), "no conflict copy");
}

#[tokio::test]
async fn quota_exhaustion_is_enospc() {
    let g = start(FakeGraphConfig::default()).await;
    let r = remote(&g).await;
    let dir = tempfile::tempdir().unwrap();
    g.faults().quota_exceeded(true);
    for (name, len) in [("q.txt", 100), ("q.bin", 5 * MIB)] {
        let src = staged(dir.path(), name, len);
        let e = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Absent),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RemoteError::InsufficientStorage), "{name}: {e:?}");
        assert_eq!(e.errno(), libc::ENOSPC);
    }
    let e = r.mkdir(&r.root_id(), "dir").await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC);
}

#[tokio::test]
async fn names_onedrive_refuses_fail_before_any_request() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/ok.txt", &b"x"[..]).unwrap();
    let r = remote(&g).await;
    let ok = r.lookup(&r.root_id(), "ok.txt").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = staged_bytes(dir.path(), "s", b"data");
    g.reset_stats();
    let long = "n".repeat(256);
    for bad in [
        "a:b",
        "q?",
        "star*",
        "pipe|",
        "back\\slash",
        "\"quoted\"",
        "<x>",
        " lead",
        "trail ",
        "dot.",
        "CON",
        "aux.txt",
        "COM1",
        "lpt9.log",
        ".lock",
        "desktop.ini",
        "a_vti_b",
        "~$lock.docx",
        long.as_str(),
    ] {
        let want = if bad.len() > 255 {
            libc::ENAMETOOLONG
        } else {
            libc::EINVAL
        };
        let up = r
            .upload(
                UploadTarget::new(&r.root_id(), bad, Precondition::Absent),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(up.errno(), want, "upload {bad:?}: {up:?}");
        assert_eq!(
            r.mkdir(&r.root_id(), bad).await.unwrap_err().errno(),
            want,
            "mkdir {bad:?}"
        );
        assert_eq!(
            r.rename(&ok.id, &r.root_id(), bad, false).await.unwrap_err().errno(),
            want,
            "rename {bad:?}"
        );
        assert_eq!(r.check_name(bad).unwrap_err().errno(), want);
    }
    let s = g.stats();
    assert_eq!(s.requests.values().sum::<u64>(), 0, "not one request: {:?}", s.requests);
}

#[tokio::test]
async fn mkdir_and_its_conflict() {
    let g = start(FakeGraphConfig::default()).await;
    let r = remote(&g).await;
    let e = r.mkdir(&r.root_id(), "New Folder").await.unwrap();
    assert_eq!((e.kind, e.name.as_str()), (EntryKind::Directory, "New Folder"));
    assert_eq!(g.drive().item_id("/New Folder").unwrap(), e.id.as_str());
    let again = r.mkdir(&r.root_id(), "new folder").await.unwrap_err();
    assert!(matches!(again, RemoteError::AlreadyExists), "{again:?}");
    let inner = r.mkdir(&e.id, "inner").await.unwrap();
    assert!(g.drive().exists("/New Folder/inner"));
    assert_eq!(r.list(&e.id).await.unwrap()[0].id, inner.id);
}

#[tokio::test]
async fn rename_moves_replaces_and_follows_async_moves() {
    let g = start(FakeGraphConfig {
        async_op_delay: Duration::from_millis(300),
        ..FakeGraphConfig::default()
    })
    .await;
    let d = g.drive();
    d.put_file("/a/one.txt", &b"one"[..]).unwrap();
    d.put_file("/b/two.txt", &b"two"[..]).unwrap();
    d.mkdir("/b/empty").unwrap();
    d.put_file("/a/three.txt", &b"three"[..]).unwrap();
    let r = remote(&g).await;
    let a = r.lookup(&r.root_id(), "a").await.unwrap();
    let b = r.lookup(&r.root_id(), "b").await.unwrap();
    let one = r.lookup(&a.id, "one.txt").await.unwrap();
    // Across folders with a new name: same id.
    let moved = r.rename(&one.id, &b.id, "uno.txt", false).await.unwrap();
    assert_eq!((moved.id.clone(), moved.name.as_str()), (one.id.clone(), "uno.txt"));
    assert!(!d.exists("/a/one.txt"));
    assert_eq!(&d.file_bytes("/b/uno.txt").unwrap()[..], b"one");
    // Onto an existing file: refused without replace, replaced with it.
    let e = r.rename(&moved.id, &b.id, "two.txt", false).await.unwrap_err();
    assert!(matches!(e, RemoteError::AlreadyExists), "{e:?}");
    let replaced = r.rename(&moved.id, &b.id, "two.txt", true).await.unwrap();
    assert_eq!(replaced.id, one.id);
    assert_eq!(&d.file_bytes("/b/two.txt").unwrap()[..], b"one");
    // A folder over an empty folder.
    let sub = r.mkdir(&a.id, "sub").await.unwrap();
    let over = r.rename(&sub.id, &b.id, "empty", true).await.unwrap();
    assert_eq!((over.id, over.kind), (sub.id, EntryKind::Directory));
    // The asynchronous variant: 202 + monitor, polled without the bearer token.
    g.faults().async_moves(true);
    g.reset_stats();
    let three = r.lookup(&a.id, "three.txt").await.unwrap();
    let m = r.rename(&three.id, &b.id, "three.txt", false).await.unwrap();
    assert_eq!(m.id, three.id);
    assert_eq!(&d.file_bytes("/b/three.txt").unwrap()[..], b"three");
    let s = g.stats();
    let monitors = s.recent_of(RouteClass::Monitor);
    assert!(!monitors.is_empty(), "the monitor was polled");
    assert!(monitors.iter().all(|m| !m.authorization), "no token on the monitor URL");
    // A failed asynchronous move is an error.
    g.faults().fail_next_async_ops(1);
    let two = r.lookup(&b.id, "two.txt").await.unwrap();
    assert!(r.rename(&two.id, &a.id, "two.txt", false).await.is_err());
}

#[tokio::test]
async fn delete_files_and_folders() {
    let g = start(FakeGraphConfig::default()).await;
    let d = g.drive();
    d.put_file("/gone.txt", &b"x"[..]).unwrap();
    d.put_file("/tree/deep/f.txt", &b"y"[..]).unwrap();
    let r = remote(&g).await;
    let f = r.lookup(&r.root_id(), "gone.txt").await.unwrap();
    r.delete(&f.id).await.unwrap();
    assert!(!d.exists("/gone.txt"));
    assert!(matches!(r.delete(&f.id).await, Err(RemoteError::NotFound)));
    let t = r.lookup(&r.root_id(), "tree").await.unwrap();
    r.delete(&t.id).await.unwrap();
    assert!(!d.exists("/tree/deep/f.txt"));
    assert!(r.delete(&r.root_id()).await.is_err(), "never the root");
}

#[tokio::test]
async fn set_mtime_keeps_the_time_and_capabilities_say_so() {
    let g = start(FakeGraphConfig::default()).await;
    g.drive().put_file("/t.txt", &b"x"[..]).unwrap();
    let r = remote(&g).await;
    let caps = r.capabilities();
    assert!(caps.conditional_writes && caps.set_mtime);
    let f = r.lookup(&r.root_id(), "t.txt").await.unwrap();
    let t = whole_secs(1_234_567_890);
    let e = r.set_mtime(&f.id, t).await.unwrap();
    assert_eq!(e.mtime, t);
    assert_eq!(r.stat(&f.id).await.unwrap().mtime, t);
    assert_eq!(e.version, f.version, "content version unchanged");
}

#[tokio::test]
async fn a_hash_mismatch_uploads_again_then_fails() {
    let g = start(FakeGraphConfig::default()).await;
    let r = remote_with(&g, 3 * ALIGN, Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, len, class) in [
        ("h.txt", 1000, RouteClass::SimpleUpload),
        ("h.bin", 5 * MIB, RouteClass::CreateSession),
    ] {
        let src = staged(dir.path(), name, len);
        g.reset_stats();
        g.faults().corrupt_next_uploads(1);
        r.upload(
            UploadTarget::new(&r.root_id(), name, Precondition::Absent),
            UploadSource::file(&src, SystemTime::now()),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
        assert_eq!(g.stats().count(class), 2, "{name}: uploaded again");
        assert_patterned(&g, &format!("/{name}"), len);
        assert_eq!(server_qxh(&g, &format!("/{name}")), QuickXor::of(&pattern(len)));
        g.faults().corrupt_next_uploads(2);
        let e = r
            .upload(
                UploadTarget::new(&r.root_id(), name, Precondition::Any),
                UploadSource::file(&src, SystemTime::now()),
                &UploadCtx::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, RemoteError::Protocol(ref m) if m.contains("quickXorHash")),
            "{e:?}"
        );
    }
}

/// The filesystem core over the Graph remote (no FUSE): names refused at the call, conflicts kept
/// as copies, quota errors reaching fsync.
mod core {
    use super::*;
    use cloudmount::vfs::writeback::WriteBackPaths;
    use cloudmount::vfs::{DriveFs, FsConfig};
    use std::ffi::OsStr;

    async fn mount(g: &Arc<FakeGraph>, dir: &Path) -> Arc<DriveFs> {
        let r: Arc<dyn Remote> = Arc::new(remote(g).await);
        let cfg = FsConfig {
            read_only: false,
            block_size: 64 * 1024,
            cache_bytes: 8 << 20,
            ..FsConfig::default()
        };
        let fs = DriveFs::new(r, cfg).await.unwrap();
        let paths = WriteBackPaths {
            journal: dir.join("journal"),
            staging: dir.join("staging"),
            min_free_bytes: 0,
        };
        fs.enable_writes(&paths, quick()).unwrap();
        fs
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[tokio::test]
    async fn refused_names_are_einval_at_the_call_with_no_request() {
        let g = start(FakeGraphConfig::default()).await;
        g.drive().put_file("/ok.txt", &b"x"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fs = mount(&g, dir.path()).await;
        fs.lookup(1, os("ok.txt")).await.unwrap();
        g.reset_stats();
        for bad in ["a:b", "CON", "trail.", "desktop.ini", "x|y"] {
            let Err(c) = fs.create(1, os(bad), libc::O_WRONLY).await else {
                panic!("create {bad} accepted")
            };
            assert_eq!(c.errno(), libc::EINVAL, "create {bad}");
            assert_eq!(
                fs.mkdir(1, os(bad)).await.unwrap_err().errno(),
                libc::EINVAL,
                "mkdir {bad}"
            );
            let m = fs.rename(1, os("ok.txt"), 1, os(bad), false).await.unwrap_err();
            assert_eq!(m.errno(), libc::EINVAL, "rename {bad}");
        }
        assert_eq!(g.stats().requests.values().sum::<u64>(), 0);
        assert!(g.drive().exists("/ok.txt"));
        // A path over 400 characters: "/" + 200 + "/" + 200.
        let long_dir = "d".repeat(200);
        g.drive().mkdir(&format!("/{long_dir}")).unwrap();
        let deep = fs.lookup(1, os(&long_dir)).await.unwrap().attr.ino;
        g.reset_stats();
        let long = "f".repeat(200);
        let Err(c) = fs.create(deep, os(&long), libc::O_WRONLY).await else {
            panic!("a 402-character path accepted")
        };
        assert_eq!(c.errno(), libc::ENAMETOOLONG);
        assert_eq!(fs.mkdir(deep, os(&long)).await.unwrap_err().errno(), libc::ENAMETOOLONG);
        assert_eq!(g.stats().requests.values().sum::<u64>(), 0);
        fs.mkdir(deep, os(&"f".repeat(198))).await.unwrap();
        assert!(g.drive().exists(&format!("/{long_dir}/{}", "f".repeat(198))));
    }

    #[tokio::test]
    async fn a_file_changed_on_the_server_meanwhile_becomes_a_conflict_copy() {
        let g = start(FakeGraphConfig::default()).await;
        let d = g.drive();
        d.put_file("/notes.txt", &b"version one"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fs = mount(&g, dir.path()).await;
        let ino = fs.lookup(1, os("notes.txt")).await.unwrap().attr.ino;
        let fh = fs.open(ino, libc::O_WRONLY).await.unwrap().fh;
        fs.write(fh, 0, b"OURS").await.unwrap();
        d.put_file("/notes.txt", &b"another device"[..]).unwrap();
        fs.fsync(fh).await.unwrap();
        fs.release(fh).await.unwrap();
        assert_eq!(&d.file_bytes("/notes.txt").unwrap()[..], b"another device");
        let copy = d
            .list("/")
            .into_iter()
            .find(|n| n.starts_with("notes (conflict "))
            .expect("a conflict copy");
        assert_eq!(&d.file_bytes(&format!("/{copy}")).unwrap()[..], b"OURSion one");
    }

    #[tokio::test]
    async fn a_full_drive_is_enospc_at_fsync_and_the_data_stays_queued() {
        let g = start(FakeGraphConfig::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let fs = mount(&g, dir.path()).await;
        g.faults().quota_exceeded(true);
        let (_, o) = fs.create(1, os("full.bin"), libc::O_WRONLY).await.unwrap();
        fs.write(o.fh, 0, &pattern(100_000)).await.unwrap();
        let e = fs.fsync(o.fh).await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC);
        fs.release(o.fh).await.unwrap();
        g.faults().quota_exceeded(false);
        let q = fs.upload_queue().unwrap();
        assert!(
            q.drain(Duration::from_secs(10)).await.is_empty(),
            "uploaded once there is room"
        );
        assert_eq!(&g.drive().file_bytes("/full.bin").unwrap()[..], &pattern(100_000)[..]);
    }
}

/// A daemon killed mid-upload: the journal kept the session URL, and the next daemon's queue
/// carries on in that session instead of starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_queue_resumes_the_session_from_the_journal() {
    let g = start(FakeGraphConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let size = 48 * MIB + 3;
    let src = staged(dir.path(), "q.bin", size);
    let journal = dir.path().join("journal");
    let (g1, src1, journal1) = (g.clone(), src.clone(), journal.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r: Arc<dyn Remote> = Arc::new(remote_with(&g1, 3 * ALIGN, Duration::from_secs(15)).await);
            let root = r.root().await.unwrap().id;
            let q = UploadQueue::start(r, Journal::open(&journal1).unwrap(), quick(), None).unwrap();
            q.enqueue(record("k", &root, "q.bin", src1, size, None)).unwrap();
            while g1.stats().upload_fragment_bytes < 8 * MIB {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        // The daemon dies: every task stops where it is.
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    let kept = Journal::open(&journal).unwrap().load().unwrap().records;
    assert_eq!(kept.len(), 1);
    assert!(kept[0].resume.is_some(), "the session URL is in the journal");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!g.drive().exists("/q.bin"));
    g.reset_stats();

    let r: Arc<dyn Remote> = Arc::new(remote_with(&g, 3 * ALIGN, Duration::from_secs(15)).await);
    let q = UploadQueue::start(r, Journal::open(&journal).unwrap(), quick(), None).unwrap();
    let left = q.drain(Duration::from_secs(60)).await;
    assert!(left.is_empty(), "{left:?}");
    let s = g.stats();
    assert_eq!(s.count(RouteClass::CreateSession), 0, "the same session");
    assert!(
        s.upload_fragment_bytes <= size - 7 * MIB,
        "resumed mid-file: {}",
        s.upload_fragment_bytes
    );
    assert_patterned(&g, "/q.bin", size);
}

#[tokio::test]
async fn personal_drives_take_the_same_writes() {
    let g = start(FakeGraphConfig::for_flavour(fake_graph::Flavour::Personal)).await;
    let r = remote_with(&g, 3 * ALIGN, Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    let folder = r.mkdir(&r.root_id(), "Docs").await.unwrap();
    for (name, len) in [("p.txt", 1234), ("p.bin", 5 * MIB + 1)] {
        let src = staged(dir.path(), name, len);
        let e = r
            .upload(
                UploadTarget::new(&folder.id, name, Precondition::Absent),
                UploadSource::file(&src, mtime),
                &UploadCtx::default(),
            )
            .await
            .unwrap();
        assert_eq!((e.size, e.mtime), (len, mtime), "{name}: personal keeps milliseconds");
        assert_patterned(&g, &format!("/Docs/{name}"), len);
        let moved = r.rename(&e.id, &r.root_id(), name, false).await.unwrap();
        assert_eq!(moved.id, e.id);
        r.delete(&moved.id).await.unwrap();
        assert!(!g.drive().exists(&format!("/{name}")));
    }
}
