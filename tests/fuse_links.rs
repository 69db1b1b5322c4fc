//! Symbolic links on a real mount of the in-process WebDAV server: kept as rclone's
//! `NAME.rclonelink` files, the suffix hidden in the mount (see docs/semantics.md).

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::dav::DavServer;
use common::files::put_file;
use common::mount::{errno, Mount};

/// What rclone wrote shows as links (an ordinary item wins a clash of names); mv and rm of a
/// link act on its file on the server; names with the suffix are refused for files and folders.
#[test]
fn links_move_and_go_as_their_rclonelink_files() {
    let server = DavServer::start();
    put_file(server.root(), "a", b"ordinary");
    put_file(server.root(), "a.rclonelink", b"hidden by a");
    put_file(server.root(), "sub/b.rclonelink", b"../a");
    let m = Mount::start(&server.url(), &[]);
    let root = m.path();

    let mut names: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "sub"]);
    assert!(fs::symlink_metadata(root.join("a")).unwrap().is_file());
    let b = root.join("sub/b");
    let meta = fs::symlink_metadata(&b).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(meta.len(), 4, "a link's size is its target's length");
    assert_eq!(fs::read_to_string(&b).unwrap(), "ordinary", "followed to ../a");

    fs::rename(&b, root.join("moved")).unwrap();
    assert!(!server.root().join("sub/b.rclonelink").exists());
    assert_eq!(fs::read(server.root().join("moved.rclonelink")).unwrap(), b"../a");
    assert_eq!(fs::read_link(root.join("moved")).unwrap(), Path::new("../a"));

    symlink("sub", root.join("to_sub")).unwrap();
    assert_eq!(
        fs::read_dir(root.join("to_sub")).unwrap().count(),
        0,
        "a link to a folder is followed"
    );
    fs::remove_file(root.join("moved")).unwrap();
    assert!(!server.root().join("moved.rclonelink").exists());
    assert_eq!(errno(fs::symlink_metadata(root.join("moved"))), Some(libc::ENOENT));

    assert_eq!(errno(fs::write(root.join("f.rclonelink"), "x")), Some(libc::EINVAL));
    assert_eq!(errno(fs::create_dir(root.join("d.rclonelink"))), Some(libc::EINVAL));
    m.unmount();
    assert_eq!(fs::read(server.root().join("to_sub.rclonelink")).unwrap(), b"sub");
}
