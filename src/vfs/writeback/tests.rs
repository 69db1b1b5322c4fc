//! Tests of the upload queue over a scripted remote.

use super::conflict::numbered;
use super::journal::{Journal, UploadRecord, UploadState};
use super::queue::*;
use crate::error::{RemoteError, RemoteResult};
use crate::remote::{
    Entry, EntryKind, ItemId, Precondition, Quota, Remote, UploadCtx, UploadSource, UploadTarget, Version,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

/// `impl Remote for $ty` for a test remote that only takes uploads: nothing to read, no quota,
/// and the upload methods given.
macro_rules! upload_only_remote {
    ($ty:ty, $name:literal, { $($uploads:tt)* }) => {
        #[async_trait]
        impl Remote for $ty {
            fn describe(&self) -> String {
                $name.into()
            }
            async fn root(&self) -> RemoteResult<Entry> {
                Err(RemoteError::Unsupported("test".into()))
            }
            async fn stat(&self, _: &ItemId) -> RemoteResult<Entry> {
                Err(RemoteError::Unsupported("test".into()))
            }
            async fn lookup(&self, _: &ItemId, _: &str) -> RemoteResult<Entry> {
                Err(RemoteError::Unsupported("test".into()))
            }
            async fn list(&self, _: &ItemId) -> RemoteResult<Vec<Entry>> {
                Err(RemoteError::Unsupported("test".into()))
            }
            async fn read(&self, _: &ItemId, _: Option<&Version>, _: u64, _: u64) -> RemoteResult<Bytes> {
                Err(RemoteError::Unsupported("test".into()))
            }
            async fn quota(&self) -> RemoteResult<Option<Quota>> {
                Ok(None)
            }
            $($uploads)*
        }
    };
}

/// A remote that only stores uploads: conditional semantics, scripted failures, and a gate
/// that holds uploads until a test lets them through.
struct UploadRemote {
    files: Mutex<HashMap<String, (Bytes, u64)>>,
    versions: AtomicU32,
    failures: Mutex<Vec<RemoteError>>,
    gate: Semaphore,
    uploads: AtomicU32,
}

impl UploadRemote {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(UploadRemote {
            files: Mutex::new(HashMap::new()),
            versions: AtomicU32::new(1),
            failures: Mutex::new(Vec::new()),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            uploads: AtomicU32::new(0),
        })
    }
    fn fail_next(&self, errors: Vec<RemoteError>) {
        *self.failures.lock().unwrap() = errors.into_iter().rev().collect();
    }
    fn put(&self, name: &str, data: &[u8]) -> String {
        let v = self.versions.fetch_add(1, Ordering::SeqCst) as u64;
        self.files
            .lock()
            .unwrap()
            .insert(name.into(), (Bytes::copy_from_slice(data), v));
        format!("v{v}")
    }
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.files.lock().unwrap().get(name).map(|(b, _)| b.to_vec())
    }
    fn entry(name: &str, size: u64, v: u64) -> Entry {
        Entry {
            id: ItemId::new(name),
            name: name.into(),
            kind: EntryKind::File,
            size,
            mtime: SystemTime::UNIX_EPOCH,
            version: Some(Version::from_etag(&format!("v{v}"))),
            meta: Default::default(),
        }
    }
}

upload_only_remote!(UploadRemote, "uploads", {
    async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, _cx: &UploadCtx) -> RemoteResult<Entry> {
        let (name, source, precondition) = (to.name, from.path(), to.precondition);
        self.gate.acquire().await.expect("gate").forget();
        if let Some(e) = self.failures.lock().unwrap().pop() {
            return Err(e);
        }
        let data = tokio::fs::read(source)
            .await
            .map_err(|e| RemoteError::Protocol(e.to_string()))?;
        let mut files = self.files.lock().unwrap();
        let current = files.get(name).map(|(_, v)| format!("v{v}"));
        match (&precondition, &current) {
            (Precondition::Absent, Some(_)) => return Err(RemoteError::AlreadyExists),
            (Precondition::Matches(want), Some(have)) if want.as_str() != have => {
                return Err(RemoteError::PreconditionFailed)
            }
            (Precondition::Matches(_), None) => return Err(RemoteError::PreconditionFailed),
            _ => {}
        }
        let v = self.versions.fetch_add(1, Ordering::SeqCst) as u64;
        files.insert(name.into(), (Bytes::from(data.clone()), v));
        self.uploads.fetch_add(1, Ordering::SeqCst);
        Ok(Self::entry(name, data.len() as u64, v))
    }
});

struct Fixture {
    dir: tempfile::TempDir,
    n: u32,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            n: 0,
        }
    }
    fn journal(&self) -> Journal {
        Journal::open(self.dir.path().join("journal")).unwrap()
    }
    /// The journal a running queue is writing, read without disturbing it.
    fn on_disk(&self) -> Journal {
        Journal::inspect(self.dir.path().join("journal"))
    }
    fn stage(&mut self, key: &str, name: &str, data: &[u8], base: Option<&str>) -> UploadRecord {
        self.n += 1;
        let staged = self.dir.path().join(format!("staged-{}", self.n));
        std::fs::write(&staged, data).unwrap();
        UploadRecord {
            key: key.into(),
            parent: String::new(),
            name: name.into(),
            staged,
            size: data.len() as u64,
            mtime_ns: 0,
            base_version: base.map(String::from),
            attempts: 0,
            last_error: None,
            resume: None,
            ours: Vec::new(),
            conflict_copy: None,
            state: UploadState::Pending,
        }
    }
}

fn quick() -> QueueConfig {
    QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

#[test]
fn later_conflict_copies_of_one_second_are_numbered() {
    assert_eq!(
        numbered("a (conflict 2026-11-23 101502).txt", 2),
        "a (conflict 2026-11-23 101502 2).txt"
    );
    assert_eq!(
        numbered("Makefile (conflict 2026-11-23 101502)", 3),
        "Makefile (conflict 2026-11-23 101502 3)"
    );
}

#[tokio::test]
async fn an_upload_reaches_the_server_and_leaves_nothing_behind() {
    let mut fx = Fixture::new();
    let remote = UploadRemote::new(true);
    let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    let rec = fx.stage("k1", "a.txt", b"hello", None);
    let staged = rec.staged.clone();
    let generation = q.enqueue(rec).unwrap();
    q.wait("k1", generation).await.unwrap();
    assert_eq!(remote.get("a.txt").unwrap(), b"hello");
    assert!(q.drain(Duration::from_secs(5)).await.is_empty());
    assert!(fx.on_disk().load().unwrap().records.is_empty());
    assert!(!staged.exists(), "the staged file goes once uploaded");
}

#[tokio::test]
async fn transient_failures_are_retried_and_fsync_hears_about_them() {
    let mut fx = Fixture::new();
    let remote = UploadRemote::new(true);
    remote.fail_next(vec![
        RemoteError::Connect("refused".into()),
        RemoteError::Http {
            status: 502,
            message: "bad gateway".into(),
        },
    ]);
    let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    let generation = q.enqueue(fx.stage("k", "b.txt", b"data", None)).unwrap();
    let first = q.wait("k", generation).await;
    assert!(
        matches!(first, Err(RemoteError::Connect(_))),
        "fsync reports the failed attempt: {first:?}"
    );
    assert!(
        q.drain(Duration::from_secs(10)).await.is_empty(),
        "retried until it went up"
    );
    assert_eq!(remote.get("b.txt").unwrap(), b"data");
}

#[tokio::test]
async fn a_restarted_queue_resumes_from_the_journal() {
    let mut fx = Fixture::new();
    let down = UploadRemote::new(true);
    down.fail_next(vec![RemoteError::Connect("down".into()); 1000]);
    let q = UploadQueue::start(down, fx.journal(), quick(), None).unwrap();
    q.enqueue(fx.stage("k", "c.txt", b"survives", None)).unwrap();
    let left = q.drain(Duration::from_millis(300)).await;
    assert_eq!(left.len(), 1);
    assert!(left[0].attempts >= 1 && left[0].last_error.is_some());
    q.stop();

    let up = UploadRemote::new(true);
    let q2 = UploadQueue::start(up.clone(), fx.journal(), quick(), None).unwrap();
    assert!(q2.drain(Duration::from_secs(10)).await.is_empty());
    assert_eq!(up.get("c.txt").unwrap(), b"survives");
}

#[tokio::test]
async fn newer_versions_upload_in_order_without_false_conflicts() {
    let mut fx = Fixture::new();
    let remote = UploadRemote::new(false);
    let base = remote.put("d.txt", b"server");
    let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    let g1 = q.enqueue(fx.stage("k", "d.txt", b"first", Some(&base))).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // gen 1 is now held in the gate
    let g2 = q.enqueue(fx.stage("k", "d.txt", b"second", Some(&base))).unwrap();
    assert_eq!((g1, g2), (1, 2));
    remote.gate.add_permits(10);
    q.wait("k", g2).await.unwrap();
    assert_eq!(remote.get("d.txt").unwrap(), b"second");
    assert!(remote.files.lock().unwrap().keys().all(|k| !k.contains("conflict")));
    assert!(q.drain(Duration::from_secs(5)).await.is_empty());
}

#[tokio::test]
async fn a_conflict_keeps_both_versions() {
    let mut fx = Fixture::new();
    let remote = UploadRemote::new(true);
    let seen = remote.put("e.txt", b"what we read");
    remote.put("e.txt", b"changed elsewhere");
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let q = UploadQueue::start(
        remote.clone(),
        fx.journal(),
        quick(),
        Some(Box::new(move |e| sink.lock().unwrap().push(e))),
    )
    .unwrap();
    let generation = q.enqueue(fx.stage("k", "e.txt", b"ours", Some(&seen))).unwrap();
    q.wait("k", generation).await.unwrap();
    assert_eq!(remote.get("e.txt").unwrap(), b"changed elsewhere");
    let files = remote.files.lock().unwrap();
    let copy = files
        .keys()
        .find(|k| k.starts_with("e (conflict ") && k.ends_with(").txt"))
        .expect("copy");
    assert_eq!(&files[copy].0[..], b"ours");
    assert!(matches!(
        events.lock().unwrap()[0],
        UploadEvent::Uploaded {
            conflict_copy: true,
            ..
        }
    ));
}

/// A remote that resumes: the first attempt saves a token and fails, later attempts must be
/// handed that token back.
struct ResumingRemote {
    fail_first: bool,
    seen: Mutex<Vec<Option<serde_json::Value>>>,
}

upload_only_remote!(ResumingRemote, "resuming", {
    async fn upload(&self, to: UploadTarget<'_>, _from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
        let (name, resume) = (to.name, &cx.resume);
        self.seen.lock().unwrap().push(resume.get());
        if self.fail_first {
            resume.set(Some(serde_json::json!({"session": "s-1", "offset": 5})));
            return Err(RemoteError::Forbidden("stop here".into()));
        }
        resume.set(None);
        Ok(UploadRemote::entry(name, 1, 1))
    }
});

#[tokio::test]
async fn resume_tokens_are_journaled_and_handed_to_the_next_attempt() {
    let mut fx = Fixture::new();
    let first = Arc::new(ResumingRemote {
        fail_first: true,
        seen: Mutex::new(Vec::new()),
    });
    let q = UploadQueue::start(first.clone(), fx.journal(), quick(), None).unwrap();
    let generation = q.enqueue(fx.stage("k", "r.bin", b"resume me", None)).unwrap();
    assert!(q.wait("k", generation).await.is_err());
    let token = serde_json::json!({"session": "s-1", "offset": 5});
    let on_disk = fx.on_disk().load().unwrap().records;
    assert_eq!(on_disk[0].resume.as_ref(), Some(&token), "in the journal at once");
    assert_eq!(*first.seen.lock().unwrap(), vec![None]);
    q.stop();

    // A restarted daemon hands the token to the remote.
    let second = Arc::new(ResumingRemote {
        fail_first: false,
        seen: Mutex::new(Vec::new()),
    });
    let q2 = UploadQueue::start(second.clone(), fx.journal(), quick(), None).unwrap();
    assert!(q2.drain(Duration::from_secs(5)).await.is_empty());
    assert_eq!(*second.seen.lock().unwrap(), vec![Some(token)]);
    assert!(fx.on_disk().load().unwrap().records.is_empty());
}

#[tokio::test]
async fn new_content_drops_the_resume_token() {
    let mut fx = Fixture::new();
    let remote = Arc::new(ResumingRemote {
        fail_first: true,
        seen: Mutex::new(Vec::new()),
    });
    let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    let g1 = q.enqueue(fx.stage("k", "r.bin", b"old", None)).unwrap();
    assert!(q.wait("k", g1).await.is_err());
    assert!(fx.on_disk().load().unwrap().records[0].resume.is_some());
    let mut newer = fx.stage("k", "r.bin", b"new content", None);
    newer.resume = Some(serde_json::json!("stale"));
    q.enqueue(newer).unwrap();
    assert_eq!(fx.on_disk().load().unwrap().records[0].resume, None);
}

#[tokio::test]
async fn errors_retrying_cannot_fix_keep_the_data_for_the_next_mount() {
    let mut fx = Fixture::new();
    let remote = UploadRemote::new(true);
    remote.fail_next(vec![RemoteError::Forbidden("no".into())]);
    let q = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    let rec = fx.stage("k", "f.txt", b"keep me", None);
    let staged = rec.staged.clone();
    let generation = q.enqueue(rec).unwrap();
    assert!(matches!(q.wait("k", generation).await, Err(RemoteError::Forbidden(_))));
    let left = q.drain(Duration::from_millis(200)).await;
    assert!(left[0].failed, "not retried by itself");
    assert!(q.wait("k", generation).await.is_err(), "fsync keeps telling the truth");
    assert!(staged.exists(), "the data stays on disk");
    q.stop();
    let q2 = UploadQueue::start(remote.clone(), fx.journal(), quick(), None).unwrap();
    assert!(
        q2.drain(Duration::from_secs(5)).await.is_empty(),
        "a restart tries again"
    );
    assert_eq!(remote.get("f.txt").unwrap(), b"keep me");
}
