//! The in-memory remote against its contract: what a well-behaved server does.

use std::io::Write;

use super::*;
use crate::remote::{Meta, MetaFields, Precondition, UploadCtx, UploadSource, UploadTarget};

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
async fn set_meta_keeps_what_it_may_and_honours_preconditions() {
    let m = MemoryRemote::new();
    m.put_file("f", &b"abc"[..]);
    let before = m.stat(&id("f")).await.unwrap();
    let meta = Meta {
        mode: Some(0o755),
        uid: Some(7),
        gid: Some(8),
        mtime: Some(t(42) + Duration::from_nanos(5)),
        atime: Some(t(43)),
        ..Meta::default()
    };
    let e = m
        .set_meta(&id("f"), &meta, Precondition::Matches(before.version.clone().unwrap()))
        .await
        .unwrap();
    assert_eq!(e.meta, meta);
    assert_eq!(
        (e.mtime, e.version.clone()),
        (meta.mtime.unwrap(), before.version.clone())
    );
    // Later calls change only what they hold.
    let chmod = Meta {
        mode: Some(0o600),
        ..Meta::default()
    };
    let e = m.set_meta(&id("f"), &chmod, Precondition::Any).await.unwrap();
    assert_eq!(e.meta, meta.overlaid_with(&chmod));
    assert_eq!(m.list(&id("")).await.unwrap()[0].meta, e.meta);
    // A replaced file keeps mode and owner.
    let staged = staged(b"new");
    let e = m
        .upload(
            UploadTarget::new(&id(""), "f", Precondition::Any),
            UploadSource::file(staged.path(), t(99)),
            &UploadCtx::default(),
        )
        .await
        .unwrap();
    assert_eq!((e.meta.mode, e.meta.uid, e.meta.mtime), (Some(0o600), Some(7), None));
    assert!(matches!(
        m.set_meta(&id("f"), &chmod, Precondition::Matches(before.version.unwrap()))
            .await,
        Err(RemoteError::PreconditionFailed)
    ));
    assert!(m.set_meta(&id("f"), &chmod, Precondition::Absent).await.is_err());
    assert!(matches!(
        m.set_meta(&id("nope"), &chmod, Precondition::Any).await,
        Err(RemoteError::NotFound)
    ));
    let bad = Meta {
        mode: Some(0o100644),
        ..Meta::default()
    };
    assert!(m.set_meta(&id("f"), &bad, Precondition::Any).await.is_err());
    // A remote that keeps only times (like OneDrive) drops the rest.
    m.set_kept_meta(MetaFields {
        mtime: true,
        created: true,
        ..MetaFields::NONE
    });
    m.put_file("g", &b""[..]);
    let e = m.set_meta(&id("g"), &meta, Precondition::Any).await.unwrap();
    assert_eq!(
        e.meta,
        Meta {
            mtime: meta.mtime,
            ..Meta::default()
        }
    );
    assert!(!m.capabilities().kept_meta.mode);
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

#[tokio::test]
async fn progress_and_resume_go_through_the_one_upload() {
    let m = MemoryRemote::new();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let f = staged(&data);
    let (cx, root) = (UploadCtx::default(), id(""));
    let to = || UploadTarget::new(&root, "big", Precondition::Absent);

    // The connection breaks partway: what got through is counted, and kept for a resume.
    m.cut_next_upload_at(100_000);
    let cut = m.upload(to(), UploadSource::file(f.path(), t(7)), &cx).await;
    assert!(matches!(cut, Err(RemoteError::ConnectionLost(_))), "{cut:?}");
    assert_eq!(cx.progress.get(), 100_000, "progress reports what went out");
    assert!(
        cx.resume.get().is_some(),
        "the interrupted upload leaves a resume token"
    );
    assert!(m.file_content("big").is_none(), "nothing is applied before the end");

    // The next attempt carries on from there: progress starts at the offset, nothing goes twice.
    let e = m.upload(to(), UploadSource::file(f.path(), t(7)), &cx).await.unwrap();
    assert_eq!((e.size, e.mtime), (data.len() as u64, t(7)));
    assert_eq!(m.file_content("big").unwrap(), &data[..]);
    assert_eq!(cx.progress.get(), data.len() as u64);
    assert_eq!(m.resumed.load(Ordering::Relaxed), 1);
    assert_eq!(
        m.bytes_received.load(Ordering::Relaxed),
        data.len() as u64,
        "no byte sent twice"
    );
    assert!(cx.resume.get().is_none(), "the token goes once the upload is done");

    // A token for another upload (another name) is dropped, and that upload starts from zero.
    m.cut_next_upload_at(10);
    assert!(m.upload(to(), UploadSource::file(f.path(), t(7)), &cx).await.is_err());
    let other = UploadTarget::new(&root, "other", Precondition::Absent);
    m.upload(other, UploadSource::file(f.path(), t(7)), &cx).await.unwrap();
    assert_eq!(
        m.resumed.load(Ordering::Relaxed),
        1,
        "not resumed from another file's session"
    );
    assert_eq!(m.file_content("other").unwrap(), &data[..]);
}

#[tokio::test]
async fn growing_uploads_go_through_the_one_upload_only_when_offered() {
    let m = MemoryRemote::new();
    let f = staged(b"grown");
    let g = crate::remote::GrowingFile::new(f.path(), 5);
    let root = id("");
    let to = || UploadTarget::new(&root, "g", Precondition::Absent);
    let cx = UploadCtx::default();
    assert!(!m.capabilities().streams_growing_uploads);
    assert!(matches!(
        m.upload(to(), UploadSource::Growing(&g), &cx).await,
        Err(RemoteError::Unsupported(_))
    ));
    m.set_streams_growing_uploads(true);
    assert!(m.capabilities().streams_growing_uploads);
    assert!(g.seal(5, t(9)));
    let e = m.upload(to(), UploadSource::Growing(&g), &cx).await.unwrap();
    assert_eq!((e.size, e.mtime), (5, t(9)));
    assert_eq!(cx.progress.get(), 5);
    assert_eq!(m.growing_applied.load(Ordering::Relaxed), 1);
}
