//! The in-memory remote against its contract: what a well-behaved server does.

use std::io::Write;

use super::*;
use crate::remote::{Precondition, UploadCtx, UploadSource, UploadTarget};

fn id(s: &str) -> ItemId {
    ItemId::new(s)
}

fn staged(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    f
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[tokio::test]
async fn uploads_honour_preconditions_and_keep_mtime() {
    let m = MemoryRemote::new();
    let one = staged(b"one");
    let e1 = m
        .upload(
            UploadTarget::new(&id(""), "f", Precondition::Absent),
            UploadSource::file(one.path(), t(1000)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!((e1.size, e1.mtime, e1.kind), (3, t(1000), EntryKind::File));
    assert!(matches!(
        m.upload(
            UploadTarget::new(&id(""), "f", Precondition::Absent),
            UploadSource::file(one.path(), t(1)),
            &UploadCtx::default()
        )
        .await,
        Err(RemoteError::AlreadyExists)
    ));
    let two = staged(b"second");
    let v1 = e1.version.clone().unwrap();
    let e2 = m
        .upload(
            UploadTarget::new(&id(""), "f", Precondition::Matches(v1.clone())),
            UploadSource::file(two.path(), t(2000)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_ne!(e2.version, e1.version);
    assert_eq!(m.file_content("f").unwrap(), &b"second"[..]);
    assert!(matches!(
        m.upload(
            UploadTarget::new(&id(""), "f", Precondition::Matches(v1)),
            UploadSource::file(one.path(), t(1)),
            &UploadCtx::default()
        )
        .await,
        Err(RemoteError::PreconditionFailed)
    ));
    assert!(matches!(
        m.upload(
            UploadTarget::new(&id(""), "gone", Precondition::Matches(Version::from_etag("1"))),
            UploadSource::file(one.path(), t(1)),
            &UploadCtx::default()
        )
        .await,
        Err(RemoteError::PreconditionFailed)
    ));
    m.upload(
        UploadTarget::new(&id(""), "f", Precondition::Any),
        UploadSource::file(one.path(), t(3000)),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    assert_eq!(m.file_content("f").unwrap(), &b"one"[..]);
    assert!(matches!(
        m.upload(
            UploadTarget::new(&id("nodir"), "f", Precondition::Any),
            UploadSource::file(one.path(), t(1)),
            &UploadCtx::default()
        )
        .await,
        Err(RemoteError::NotFound)
    ));
    assert!(matches!(
        m.upload(
            UploadTarget::new(&id(""), "a/b", Precondition::Any),
            UploadSource::file(one.path(), t(1)),
            &UploadCtx::default()
        )
        .await,
        Err(RemoteError::Unsupported(_))
    ));
    assert_eq!(m.uploads.load(Ordering::Relaxed), 3);
    assert!(m.capabilities().conditional_writes && m.capabilities().set_mtime);
}

#[tokio::test]
async fn fault_switches() {
    let m = MemoryRemote::new();
    let f = staged(b"x");
    m.fail_next_uploads(2, RemoteError::Timeout("injected".into()));
    for _ in 0..2 {
        assert!(matches!(
            m.upload(
                UploadTarget::new(&id(""), "f", Precondition::Any),
                UploadSource::file(f.path(), t(1)),
                &UploadCtx::default()
            )
            .await,
            Err(RemoteError::Timeout(_))
        ));
    }
    assert!(m.file_content("f").is_none(), "a failed upload changes nothing");
    m.upload(
        UploadTarget::new(&id(""), "f", Precondition::Any),
        UploadSource::file(f.path(), t(1)),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    m.set_upload_delay(Duration::from_millis(50));
    let started = std::time::Instant::now();
    m.upload(
        UploadTarget::new(&id(""), "g", Precondition::Any),
        UploadSource::file(f.path(), t(1)),
        &UploadCtx::default(),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn mkdir_delete_rename_set_mtime() {
    let m = MemoryRemote::new();
    let d = m.mkdir(&id(""), "d").await.unwrap();
    assert_eq!(d.kind, EntryKind::Directory);
    assert!(matches!(m.mkdir(&id(""), "d").await, Err(RemoteError::AlreadyExists)));
    assert!(matches!(m.mkdir(&id("nope"), "x").await, Err(RemoteError::NotFound)));
    m.put_file("d/a.txt", &b"a"[..]);
    m.put_file("d/sub/b.txt", &b"b"[..]);
    m.put_file("top.txt", &b"top"[..]);

    // A folder moves with everything in it.
    let moved = m.rename(&id("d"), &id(""), "e", false).await.unwrap();
    assert_eq!(moved.id, id("e"));
    assert_eq!(m.file_content("e/sub/b.txt").unwrap(), &b"b"[..]);
    assert!(m.file_content("d/a.txt").is_none());
    // No replace without asking; never a non-empty folder; a file over a file with replace.
    assert!(matches!(
        m.rename(&id("top.txt"), &id("e"), "a.txt", false).await,
        Err(RemoteError::AlreadyExists)
    ));
    m.mkdir(&id(""), "f").await.unwrap();
    m.put_file("f/keep", &b"k"[..]);
    assert!(matches!(
        m.rename(&id("e"), &id(""), "f", true).await,
        Err(RemoteError::AlreadyExists)
    ));
    m.rename(&id("top.txt"), &id("e"), "a.txt", true).await.unwrap();
    assert_eq!(m.file_content("e/a.txt").unwrap(), &b"top"[..]);
    assert!(matches!(
        m.rename(&id("e"), &id("e/sub"), "x", false).await,
        Err(RemoteError::Forbidden(_))
    ));
    assert!(matches!(
        m.rename(&id("missing"), &id(""), "x", false).await,
        Err(RemoteError::NotFound)
    ));

    let e = m.set_mtime(&id("e/a.txt"), t(42)).await.unwrap();
    assert_eq!(e.mtime, t(42));
    assert_eq!(m.stat(&id("e/a.txt")).await.unwrap().mtime, t(42));

    m.delete(&id("e")).await.unwrap();
    assert!(m.file_content("e/sub/b.txt").is_none());
    assert!(matches!(m.stat(&id("e/sub")).await, Err(RemoteError::NotFound)));
    assert!(matches!(m.delete(&id("e")).await, Err(RemoteError::NotFound)));
    assert!(m.delete(&id("")).await.is_err());
}
