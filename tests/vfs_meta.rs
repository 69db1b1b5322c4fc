//! Modes, owners and times set through the core (chmod, chown, utimens), against the in-memory
//! remote: kept on the server where it keeps them, else in the mount's local store; shown as the
//! defaults overlaid by the store overlaid by the server; carried through uploads and renames.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudmount::fuse::ToErrno;
use cloudmount::metastore::MetaStore;
use cloudmount::remote::memory::MemoryRemote;
use cloudmount::remote::{ItemId, Meta, MetaFields, Remote};
use cloudmount::vfs::writeback::queue::QueueConfig;
use cloudmount::vfs::writeback::WriteBackPaths;
use cloudmount::vfs::{DriveFs, FsConfig};

/// 2020-02-02 02:02:02 UTC and some nanoseconds.
fn old() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_580_608_922, 123_456_789)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// One machine: its state folder (journal, staging, metadata store).
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A core over `remote` with this machine's state (`store`: whether it has a metadata store).
    async fn mount(&self, remote: &Arc<MemoryRemote>, store: bool, keep_metadata: bool) -> Arc<DriveFs> {
        let cfg = FsConfig {
            keep_metadata,
            ..FsConfig::default()
        };
        let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
        let paths = WriteBackPaths {
            journal: self.dir.path().join("journal"),
            staging: self.dir.path().join("staging"),
            min_free_bytes: 0,
        };
        fs.enable_writes(
            &paths,
            QueueConfig {
                parallel: 2,
                base_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
            },
        )
        .unwrap();
        let store = store.then(|| Arc::new(MetaStore::open(self.dir.path().join("meta")).unwrap()));
        fs.enable_metadata(store).await;
        fs
    }
}

async fn ino_of(fs: &DriveFs, name: &str) -> u64 {
    fs.lookup(1, os(name)).await.unwrap().attr.ino
}

fn chmod(mode: u32) -> Meta {
    Meta {
        mode: Some(mode),
        ..Meta::default()
    }
}

fn all_of_it() -> Meta {
    Meta {
        mode: Some(0o4750),
        uid: Some(1234),
        gid: Some(5678),
        mtime: Some(old()),
        ..Meta::default()
    }
}

#[tokio::test]
async fn kept_on_the_server_where_it_keeps_them_and_seen_by_another_machine() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", &b"abc"[..]);
    remote.put_dir("d");
    let this = Machine::new();
    let fs = this.mount(&remote, true, true).await;
    for name in ["f", "d"] {
        let ino = ino_of(&fs, name).await;
        let attr = fs.change_meta(ino, all_of_it()).await.unwrap();
        assert_eq!(
            (attr.perm, attr.uid, attr.gid, attr.mtime),
            (0o4750, 1234, 5678, old()),
            "{name}"
        );
        let held = remote.stat(&ItemId::new(name)).await.unwrap().meta;
        assert_eq!(held.mode, Some(0o4750), "{name} on the server");
        assert_eq!(held.mtime, Some(old()), "{name} on the server");
    }
    // Another machine (no store of its own) sees what the server holds.
    let other = Machine::new();
    let fs2 = other.mount(&remote, true, true).await;
    for name in ["f", "d"] {
        let (attr, _) = fs2.getattr(ino_of(&fs2, name).await).await.unwrap();
        assert_eq!(
            (attr.perm, attr.uid, attr.gid, attr.mtime),
            (0o4750, 1234, 5678, old()),
            "{name}, another machine"
        );
    }
}

#[tokio::test]
async fn a_server_that_keeps_nothing_leaves_it_to_this_machines_store() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_kept_meta(MetaFields::NONE);
    remote.put_file("f", &b"abc"[..]);
    let this = Machine::new();
    {
        let fs = this.mount(&remote, true, true).await;
        let ino = ino_of(&fs, "f").await;
        fs.change_meta(ino, all_of_it()).await.unwrap();
        let (attr, _) = fs.getattr(ino).await.unwrap();
        assert_eq!((attr.perm, attr.uid, attr.mtime), (0o4750, 1234, old()));
        assert!(remote.stat(&ItemId::new("f")).await.unwrap().meta.is_empty());
    }
    // The same machine after a remount.
    let fs = this.mount(&remote, true, true).await;
    let (attr, _) = fs.getattr(ino_of(&fs, "f").await).await.unwrap();
    assert_eq!((attr.perm, attr.uid, attr.gid, attr.mtime), (0o4750, 1234, 5678, old()));
    // Another machine shows the defaults.
    let other = Machine::new();
    let fs2 = other.mount(&remote, true, true).await;
    let (attr, _) = fs2.getattr(ino_of(&fs2, "f").await).await.unwrap();
    assert_eq!(attr.perm, 0o644);
    assert_ne!(attr.mtime, old());
    // Without a store, what nothing can keep is refused rather than pretended.
    let bare = Machine::new();
    let fs3 = bare.mount(&remote, false, true).await;
    let e = fs3
        .change_meta(ino_of(&fs3, "f").await, chmod(0o700))
        .await
        .unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
}

#[tokio::test]
async fn the_server_wins_over_the_store_field_by_field() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("f", &b"abc"[..]);
    // The server keeps modes only: the owner stays on this machine.
    remote.set_kept_meta(MetaFields {
        mode: true,
        ..MetaFields::NONE
    });
    let this = Machine::new();
    let fs = this.mount(&remote, true, true).await;
    let ino = ino_of(&fs, "f").await;
    fs.change_meta(
        ino,
        Meta {
            mode: Some(0o600),
            uid: Some(42),
            ..Meta::default()
        },
    )
    .await
    .unwrap();
    // Another machine changes the mode on the server.
    remote
        .set_meta(&ItemId::new("f"), &chmod(0o711), cloudmount::remote::Precondition::Any)
        .await
        .unwrap();
    let fs = this.mount(&remote, true, true).await;
    let (attr, _) = fs.getattr(ino_of(&fs, "f").await).await.unwrap();
    assert_eq!(
        (attr.perm, attr.uid),
        (0o711, 42),
        "server's mode, this machine's owner"
    );
}

#[tokio::test]
async fn a_new_files_mode_and_time_reach_the_item_its_upload_makes() {
    for kept in [MetaFields::PROPERTIES, MetaFields::NONE] {
        let remote = Arc::new(MemoryRemote::new());
        remote.set_kept_meta(kept);
        let this = Machine::new();
        {
            let fs = this.mount(&remote, true, true).await;
            let (looked, opened) = fs.create(1, os("run.sh"), libc::O_WRONLY).await.unwrap();
            let ino = looked.attr.ino;
            fs.write(opened.fh, 0, b"#!/bin/sh\n").await.unwrap();
            // Set while open (pending upload), then again after close (content queued).
            fs.change_meta(ino, chmod(0o700)).await.unwrap();
            fs.release(opened.fh).await.unwrap();
            let attr = fs
                .change_meta(
                    ino,
                    Meta {
                        mode: Some(0o755),
                        mtime: Some(old()),
                        ..Meta::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!((attr.perm, attr.mtime), (0o755, old()));
            let fh = fs.open(ino, libc::O_WRONLY).await.unwrap().fh;
            fs.fsync(fh).await.unwrap();
            fs.release(fh).await.unwrap();
            fs.settle_metadata(Duration::from_secs(30)).await;
            assert_eq!(remote.file_content("run.sh").as_deref(), Some(&b"#!/bin/sh\n"[..]));
            let (attr, _) = fs.getattr(ino).await.unwrap();
            assert_eq!((attr.perm, attr.mtime), (0o755, old()), "kept={kept:?}");
        }
        let fs = this.mount(&remote, true, true).await;
        let (attr, _) = fs.getattr(ino_of(&fs, "run.sh").await).await.unwrap();
        assert_eq!((attr.perm, attr.mtime), (0o755, old()), "remounted, kept={kept:?}");
        if kept == MetaFields::PROPERTIES {
            let held = remote.stat(&ItemId::new("run.sh")).await.unwrap().meta;
            assert_eq!((held.mode, held.mtime), (Some(0o755), Some(old())), "on the server");
        }
    }
}

#[tokio::test]
async fn renames_carry_what_the_store_holds_and_deletes_forget_it() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_kept_meta(MetaFields::NONE);
    remote.put_dir("d");
    remote.put_file("d/f", &b"abc"[..]);
    remote.put_file("g", &b"abc"[..]);
    let this = Machine::new();
    {
        let fs = this.mount(&remote, true, true).await;
        let d = ino_of(&fs, "d").await;
        let f = fs.lookup(d, os("f")).await.unwrap().attr.ino;
        fs.change_meta(f, chmod(0o700)).await.unwrap();
        fs.change_meta(d, chmod(0o750)).await.unwrap();
        fs.rename(1, os("d"), 1, os("e"), false).await.unwrap();
        let g = ino_of(&fs, "g").await;
        fs.change_meta(g, chmod(0o777)).await.unwrap();
        fs.unlink(1, os("g")).await.unwrap();
    }
    remote.put_file("g", &b"new"[..]);
    let fs = this.mount(&remote, true, true).await;
    let e = ino_of(&fs, "e").await;
    assert_eq!(fs.getattr(e).await.unwrap().0.perm, 0o750);
    let f = fs.lookup(e, os("f")).await.unwrap().attr.ino;
    assert_eq!(fs.getattr(f).await.unwrap().0.perm, 0o700);
    let g = ino_of(&fs, "g").await;
    assert_eq!(
        fs.getattr(g).await.unwrap().0.perm,
        0o644,
        "a new g does not inherit the old one's mode"
    );
}

#[tokio::test]
async fn no_metadata_accepts_and_forgets() {
    let remote = Arc::new(MemoryRemote::new());
    remote.set_kept_meta(MetaFields::NONE);
    remote.put_file("f", &b"abc"[..]);
    let this = Machine::new();
    let fs = this.mount(&remote, true, false).await;
    let ino = ino_of(&fs, "f").await;
    let attr = fs
        .change_meta(
            ino,
            Meta {
                mode: Some(0o700),
                uid: Some(3),
                ..Meta::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(attr.perm, 0o644);
    assert_eq!(fs.getattr(ino).await.unwrap().0.perm, 0o644);
    assert!(fs.meta_store().is_none_or(|s| s.is_empty()));
}
