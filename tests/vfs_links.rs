//! Symbolic links in the filesystem core, against the in-memory remote: a link `name` is the file
//! `name.rclonelink` on the drive (rclone `--links`), shown in the mount as the link `name`.

use cloudmount::fuse::ToErrno;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::error::RemoteError;
use cloudmount::remote::memory::MemoryRemote;
use cloudmount::vfs::writeback::queue::QueueConfig;
use cloudmount::vfs::writeback::WriteBackPaths;
use cloudmount::vfs::{DriveFs, FsConfig};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn paths(dir: &Path) -> WriteBackPaths {
    WriteBackPaths {
        journal: dir.join("journal"),
        staging: dir.join("staging"),
        min_free_bytes: 0,
    }
}

fn queue_cfg() -> QueueConfig {
    QueueConfig {
        parallel: 2,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    }
}

async fn writable(remote: Arc<MemoryRemote>, state: &Path) -> Arc<DriveFs> {
    writable_with_ttl(remote, state, FsConfig::DEFAULT_TTL).await
}

async fn writable_with_ttl(remote: Arc<MemoryRemote>, state: &Path, attr_ttl: Duration) -> Arc<DriveFs> {
    let cfg = FsConfig {
        read_only: false,
        attr_ttl,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote, cfg).await.unwrap();
    fs.enable_writes(&paths(state), queue_cfg()).unwrap();
    fs
}

async fn drained(fs: &DriveFs) {
    let left = fs.upload_queue().unwrap().drain(Duration::from_secs(20)).await;
    assert!(left.is_empty(), "uploads still queued: {left:?}");
}

/// `(name, is a link)` of each entry of folder `ino`, from readdir and from readdirplus (which
/// must agree), sorted, without `.` and `..`.
async fn listed(fs: &DriveFs, ino: u64) -> Vec<(String, bool)> {
    let fh = fs.opendir(ino).await.unwrap();
    let mut plain = Vec::new();
    fs.readdir(fh, 2, |item| {
        plain.push((item.name.to_string(), item.link));
        false
    })
    .unwrap();
    let mut plus = Vec::new();
    fs.readdirplus(fh, 2, |item, attr, _| {
        assert_eq!(item.link, attr.link, "{}", item.name);
        plus.push((item.name.to_string(), attr.link));
        fs.forget(attr.ino, 1);
        false
    })
    .unwrap();
    fs.releasedir(fh);
    plain.sort();
    plus.sort();
    assert_eq!(plain, plus);
    plain
}

async fn target(fs: &DriveFs, parent: u64, name: &str) -> String {
    let looked = fs.lookup(parent, os(name)).await.unwrap();
    assert!(looked.attr.link, "{name} is not shown as a link");
    let target = fs.readlink(looked.attr.ino).await.unwrap();
    assert_eq!(
        looked.attr.size,
        target.len() as u64,
        "a link's size is its target's length"
    );
    assert_eq!(looked.attr.perm, 0o777);
    fs.forget(looked.attr.ino, 1);
    target
}

fn errno_of<T: std::fmt::Debug>(r: Result<T, cloudmount::vfs::FsError>) -> i32 {
    r.unwrap_err().errno()
}

/// A drive written by rclone: `a` and `a.rclonelink` side by side (the ordinary item keeps the
/// name and the link file is not shown), `b.rclonelink` shown as the link `b`, a folder called
/// `d.rclonelink` shown as the folder it is; names with the suffix are not found.
#[tokio::test]
async fn a_folder_of_rclone_links_shows_them_without_the_suffix() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_file("a", &b"ordinary"[..]);
    remote.put_file("a.rclonelink", &b"hidden"[..]);
    remote.put_file("b.rclonelink", &b"../up/there"[..]);
    remote.put_file("c.rclonelink", &b"/abs/with newline\n"[..]);
    remote.put_dir("d.rclonelink");
    let state = tempfile::tempdir().unwrap();
    // Nothing trusted for long: a change on the server shows at the next lookup.
    let fs = writable_with_ttl(remote.clone(), state.path(), Duration::ZERO).await;

    assert_eq!(
        listed(&fs, 1).await,
        [
            ("a".to_string(), false),
            ("b".to_string(), true),
            ("c".to_string(), true),
            ("d.rclonelink".to_string(), false),
        ]
    );
    let a = fs.lookup(1, os("a")).await.unwrap().attr;
    assert!(!a.link);
    assert_eq!(errno_of(fs.readlink(a.ino).await), libc::EINVAL);
    assert_eq!(target(&fs, 1, "b").await, "../up/there");
    assert_eq!(
        fs.readlink(fs.lookup(1, os("c")).await.unwrap().attr.ino)
            .await
            .unwrap(),
        "/abs/with newline"
    );
    for hidden in ["a.rclonelink", "b.rclonelink"] {
        assert_eq!(errno_of(fs.lookup(1, os(hidden)).await), libc::ENOENT, "{hidden}");
    }
    assert!(!fs.lookup(1, os("d.rclonelink")).await.unwrap().attr.link);
    assert_eq!(
        errno_of(fs.lookup(1, os("d")).await),
        libc::ENOENT,
        "a folder is no link"
    );

    // A link file changed on the server: the new target once the cached attributes expire.
    remote.put_file("b.rclonelink", &b"elsewhere"[..]);
    assert_eq!(target(&fs, 1, "b").await, "elsewhere");
}

/// symlink makes `name.rclonelink` holding the target (relative, absolute, dangling alike);
/// regular files and folders may not take a name with the suffix.
#[tokio::test]
async fn symlink_writes_the_rclone_file_and_the_suffix_is_reserved() {
    let remote = Arc::new(MemoryRemote::new());
    let state = tempfile::tempdir().unwrap();
    let fs = writable(remote.clone(), state.path()).await;
    let rel = fs.symlink(1, os("rel"), Path::new("some/where")).await.unwrap().attr;
    assert!(rel.link);
    assert_eq!(rel.size, 10);
    fs.symlink(1, os("abs"), Path::new("/nowhere/at/all")).await.unwrap();
    assert_eq!(
        target(&fs, 1, "rel").await,
        "some/where",
        "read from the staged copy or the server"
    );
    assert_eq!(errno_of(fs.symlink(1, os("rel"), Path::new("x")).await), libc::EEXIST);
    assert_eq!(errno_of(fs.symlink(1, os("e"), Path::new("")).await), libc::ENOENT);
    drained(&fs).await;
    assert_eq!(remote.file_content("rel.rclonelink").unwrap().as_ref(), b"some/where");
    assert_eq!(
        remote.file_content("abs.rclonelink").unwrap().as_ref(),
        b"/nowhere/at/all"
    );
    assert!(remote.file_content("rel").is_none());
    assert_eq!(target(&fs, 1, "abs").await, "/nowhere/at/all");

    assert_eq!(
        errno_of(fs.create(1, os("f.rclonelink"), libc::O_WRONLY).await),
        libc::EINVAL
    );
    assert_eq!(errno_of(fs.mkdir(1, os("d.rclonelink")).await), libc::EINVAL);
    fs.create(1, os("plain"), libc::O_WRONLY)
        .await
        .map(|(_, o)| o.fh)
        .unwrap();
    assert_eq!(
        errno_of(fs.rename(1, os("plain"), 1, os("plain.rclonelink"), false).await),
        libc::EINVAL
    );
}

/// Rename and unlink of a link act on its file: the suffix stays on the new name, a link moved
/// onto a file replaces it (and the other way round), and unlink deletes the file on the server.
#[tokio::test]
async fn rename_and_unlink_of_a_link_move_and_delete_its_file() {
    let remote = Arc::new(MemoryRemote::new());
    remote.put_dir("sub");
    remote.put_file("l.rclonelink", &b"target"[..]);
    remote.put_file("f", &b"a file"[..]);
    remote.put_file("g.rclonelink", &b"g's target"[..]);
    let state = tempfile::tempdir().unwrap();
    let fs = writable(remote.clone(), state.path()).await;
    let sub = fs.lookup(1, os("sub")).await.unwrap().attr.ino;

    fs.rename(1, os("l"), sub, os("m"), false).await.unwrap();
    assert!(remote.file_content("l.rclonelink").is_none());
    assert_eq!(remote.file_content("sub/m.rclonelink").unwrap().as_ref(), b"target");
    assert_eq!(target(&fs, sub, "m").await, "target");
    assert_eq!(errno_of(fs.lookup(1, os("l")).await), libc::ENOENT);
    assert_eq!(listed(&fs, sub).await, [("m".to_string(), true)]);

    // A link onto a file: the file goes, the link takes its name.
    fs.rename(sub, os("m"), 1, os("f"), false).await.unwrap();
    assert!(
        remote.file_content("f").is_none(),
        "the replaced file stays beside the link"
    );
    assert_eq!(remote.file_content("f.rclonelink").unwrap().as_ref(), b"target");
    assert_eq!(target(&fs, 1, "f").await, "target");

    // A file onto a link: the link's file goes.
    let (_, o) = fs.create(1, os("new"), libc::O_WRONLY).await.unwrap();
    fs.write(o.fh, 0, b"data").await.unwrap();
    fs.release(o.fh).await.unwrap();
    drained(&fs).await;
    fs.rename(1, os("new"), 1, os("g"), false).await.unwrap();
    assert!(remote.file_content("g.rclonelink").is_none());
    assert_eq!(remote.file_content("g").unwrap().as_ref(), b"data");
    assert!(!fs.lookup(1, os("g")).await.unwrap().attr.link);

    // A link onto a link replaces it.
    fs.symlink(1, os("h"), Path::new("h's")).await.unwrap();
    drained(&fs).await;
    fs.rename(1, os("f"), 1, os("h"), false).await.unwrap();
    assert_eq!(remote.file_content("h.rclonelink").unwrap().as_ref(), b"target");
    assert!(remote.file_content("f.rclonelink").is_none());

    fs.unlink(1, os("h")).await.unwrap();
    assert!(remote.file_content("h.rclonelink").is_none());
    assert_eq!(errno_of(fs.lookup(1, os("h")).await), libc::ENOENT);
    assert_eq!(
        listed(&fs, 1).await,
        [("g".to_string(), false), ("sub".to_string(), false)]
    );
}

/// A link made while the server takes no uploads is journaled like any file: after a restart
/// it shows as the link (read from the staged copy), and lands as `name.rclonelink` once the
/// server is back.
#[tokio::test]
async fn a_link_queued_offline_survives_a_restart() {
    let remote = Arc::new(MemoryRemote::new());
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().to_path_buf();
    {
        let fs = writable(remote.clone(), &keep).await;
        remote.fail_next_uploads(1000, RemoteError::Connect("down".into()));
        fs.symlink(1, os("offline"), Path::new("../kept/target")).await.unwrap();
        let q = fs.upload_queue().unwrap();
        assert_eq!(
            q.drain(Duration::from_millis(200)).await.len(),
            1,
            "queued while the server fails"
        );
        q.stop();
        while q.status().iter().any(|u| u.running) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::forget(dir); // the daemon "crashes": its state directory stays
    }
    let fs = writable(remote.clone(), &keep).await;
    assert_eq!(listed(&fs, 1).await, [("offline".to_string(), true)]);
    assert_eq!(target(&fs, 1, "offline").await, "../kept/target");
    assert!(remote.file_content("offline.rclonelink").is_none());
    remote.clear_upload_failures();
    drained(&fs).await;
    assert_eq!(
        remote.file_content("offline.rclonelink").unwrap().as_ref(),
        b"../kept/target"
    );
    std::fs::remove_dir_all(&keep).unwrap();
}
