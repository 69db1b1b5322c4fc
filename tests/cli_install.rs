//! `cloudmount install` then `cloudmount uninstall` leave the filesystem as it was (issue 21):
//! the tree under a temporary prefix is listed (type, mode, content, link target) before and
//! after, with folders and files of others already there; the man pages are installed in between.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mount::{cloudmount_bin, run_ok};

const QUICK: Duration = Duration::from_secs(60);

/// Everything under `root`: relative path → what it is.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", meta.permissions().mode() & 0o7777)
            } else {
                let bytes = fs::read(&p).unwrap();
                format!(
                    "file {:o} {} bytes {:?}",
                    meta.permissions().mode() & 0o7777,
                    bytes.len(),
                    &bytes[..bytes.len().min(16)]
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

fn cli(args: &[&str], prefix: &Path) -> String {
    run_ok(
        Command::new(cloudmount_bin()).args(args).arg("--prefix").arg(prefix),
        QUICK,
    )
    .stdout_text()
}

#[test]
fn install_then_uninstall_leaves_the_prefix_as_it_was() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    // Someone else's things where install puts its own.
    fs::create_dir_all(p.join("usr/local/bin")).unwrap();
    fs::write(p.join("usr/local/bin/other-tool"), b"#!/bin/sh\n").unwrap();
    fs::create_dir_all(p.join("usr/local/share/man/man1")).unwrap();
    fs::write(p.join("usr/local/share/man/man1/other.1"), b".TH OTHER 1\n").unwrap();
    let before = listing(p);

    for _ in 0..2 {
        let said = cli(&["install"], p);
        assert!(
            said.contains("mount.fuse.cloudmount") && said.contains("man pages"),
            "{said}"
        );
    }
    assert_eq!(
        fs::read(p.join("usr/local/bin/cloudmount")).unwrap(),
        fs::read(cloudmount_bin()).unwrap()
    );
    assert_eq!(
        fs::read_link(p.join("sbin/mount.fuse.cloudmount")).unwrap(),
        Path::new("/usr/local/bin/cloudmount")
    );
    let man = fs::read_to_string(p.join("usr/local/share/man/man1/cloudmount-mount.1")).unwrap();
    assert!(
        man.contains(".TH") && man.contains("state\\-dir"),
        "not a man page of mount:\n{man}"
    );
    for heading in ["Common", "Cache", "Uploads", "WebDAV", "OneDrive", "Daemon and logs"] {
        assert!(
            man.to_lowercase().contains(&heading.to_lowercase()),
            "no {heading} section:\n{man}"
        );
    }
    assert!(p.join("usr/local/share/man/man1/cloudmount.1").exists());

    let said = cli(&["uninstall"], p);
    assert!(said.contains("removed"), "{said}");
    assert_eq!(listing(p), before, "uninstall did not restore the prefix");
    // Nothing left to do the second time, and saying so is not an error.
    let said = cli(&["uninstall"], p);
    assert!(said.contains("nothing of cloudmount"), "{said}");
}

/// A helper link someone pointed elsewhere after the install is left alone.
#[test]
fn uninstall_leaves_a_foreign_helper_link_alone() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    cli(&["install"], p);
    let helper = p.join("sbin/mount.fuse.cloudmount");
    fs::remove_file(&helper).unwrap();
    std::os::unix::fs::symlink("/opt/other/cloudmount", &helper).unwrap();
    let said = cli(&["uninstall"], p);
    assert!(
        said.contains("left") && said.contains("/opt/other/cloudmount"),
        "{said}"
    );
    assert_eq!(fs::read_link(&helper).unwrap(), Path::new("/opt/other/cloudmount"));
    assert!(!p.join("usr/local/bin/cloudmount").exists());
}
