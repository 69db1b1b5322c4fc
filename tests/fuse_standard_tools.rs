//! Issue 18: the tools people run first, on real FUSE mounts of the in-process dav-server, Apache
//! mod_dav and the fake Graph server. What a tree carries (modes, times, symlinks) survives a round
//! trip through the drive: across a remount with the same state everywhere, and on a mount with a
//! fresh state (another machine) for what the server itself holds.
//!
//! Every command runs under a deadline, so a hang fails the test instead of blocking it.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::graph::{store_fake_tokens, GraphDrive, GRAPH_REMOTE};
use common::mount::{errno, run, run_ok, Mount};

const QUICK: Duration = Duration::from_secs(120);

/// 2020-02-02 02:02:02 UTC, a time no test writes by accident.
const OLD: i64 = 1_580_608_922;

/// A drive the checks mount: a WebDAV server or the fake Graph server, with what its server can
/// hold of a tree's metadata.
trait Drive {
    /// A mount with the state directory `state` (the same folder again is the same machine).
    fn mount(&self, state: &Path, extra: &[&str]) -> Mount;
    /// The bytes of `rel` as the server holds them, `None` when it holds no such file.
    fn server_file(&self, rel: &str) -> Option<Vec<u8>>;
    /// Whether the server keeps mode bits (WebDAV dead properties), so another machine sees them.
    fn server_keeps_modes(&self) -> bool;
    /// Whether the server keeps modification times we set (dead properties, OneDrive's
    /// fileSystemInfo), so another machine sees them.
    fn server_keeps_times(&self) -> bool;
}

struct Dav<'a>(&'a dyn common::servers::TestServer, bool);

impl Drive for Dav<'_> {
    fn mount(&self, state: &Path, extra: &[&str]) -> Mount {
        let mut args = vec!["--state-dir", state.to_str().unwrap()];
        args.extend_from_slice(extra);
        Mount::start(&self.0.url(), &args)
    }
    fn server_file(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.0.root().join(rel)).ok()
    }
    fn server_keeps_modes(&self) -> bool {
        self.1
    }
    fn server_keeps_times(&self) -> bool {
        self.1
    }
}

impl Drive for GraphDrive {
    fn mount(&self, state: &Path, extra: &[&str]) -> Mount {
        if !state.join("tokens").exists() && state != self.state() {
            store_fake_tokens(&self.g, state, GRAPH_REMOTE);
        }
        let config = self.config();
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Mount::start(GRAPH_REMOTE, &args)
    }
    fn server_file(&self, rel: &str) -> Option<Vec<u8>> {
        self.drive().file_bytes(&format!("/{rel}")).map(|b| b.to_vec())
    }
    fn server_keeps_modes(&self) -> bool {
        false
    }
    fn server_keeps_times(&self) -> bool {
        true
    }
}

/// Two state folders: this machine's and another machine's.
struct Machines {
    _dir: tempfile::TempDir,
    this: PathBuf,
    other: PathBuf,
}

fn machines() -> Machines {
    let dir = tempfile::tempdir().unwrap();
    let (this, other) = (dir.path().join("this"), dir.path().join("other"));
    Machines { _dir: dir, this, other }
}

fn set_time(path: &Path, secs: i64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs as u64);
    let f = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap();
    f.set_modified(t).unwrap();
}

fn mtime_secs(path: &Path) -> i64 {
    fs::symlink_metadata(path).unwrap().mtime()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A tree with what tools carry: an executable script, a private file, a private folder, old
/// times, a relative and an absolute symlink.
fn make_source(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("private")).unwrap();
    fs::write(root.join("bin/run.sh"), "#!/bin/sh\necho ran from the drive\n").unwrap();
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("private/notes.txt"), "mine alone\n").unwrap();
    fs::set_permissions(root.join("private/notes.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(root.join("readme.txt"), "hello\n").unwrap();
    std::os::unix::fs::symlink("bin/run.sh", root.join("run")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs")).unwrap();
    for f in ["bin/run.sh", "private/notes.txt", "readme.txt"] {
        set_time(&root.join(f), OLD);
    }
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// What `make_source` made, as seen at `root` (a copy or the mount): modes, times, links.
fn assert_source_kept(root: &Path, what: &str, modes: bool) {
    assert_eq!(fs::read(root.join("readme.txt")).unwrap(), b"hello\n", "{what}: readme");
    for f in ["bin/run.sh", "private/notes.txt", "readme.txt"] {
        assert_eq!(mtime_secs(&root.join(f)), OLD, "{what}: mtime of {f}");
    }
    if modes {
        assert_eq!(mode_of(&root.join("bin/run.sh")), 0o755, "{what}: mode of run.sh");
        assert_eq!(
            mode_of(&root.join("private/notes.txt")),
            0o640,
            "{what}: mode of notes.txt"
        );
        assert_eq!(mode_of(&root.join("private")), 0o700, "{what}: mode of private/");
    }
    assert_eq!(
        fs::read_link(root.join("run")).unwrap(),
        Path::new("bin/run.sh"),
        "{what}: relative link"
    );
    assert_eq!(
        fs::read_link(root.join("abs")).unwrap(),
        Path::new("/etc/hostname"),
        "{what}: absolute link"
    );
    assert!(
        fs::symlink_metadata(root.join("run")).unwrap().file_type().is_symlink(),
        "{what}: lstat of a link"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------------------------

/// `rsync -a` into the mount exits 0, keeps the tree, and a second run transfers nothing.
fn rsync_a_twice_transfers_nothing_the_second_time(d: &dyn Drive) {
    let src = tempfile::tempdir().unwrap();
    make_source(src.path());
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    let dest = format!("{}/", m.path().join("dst").display());
    let source = format!("{}/", src.path().display());
    run_ok(Command::new("rsync").args(["-a", &source, &dest]), QUICK);
    assert_source_kept(&m.path().join("dst"), "after rsync -a", true);
    let again = run_ok(Command::new("rsync").args(["-a", "--stats", &source, &dest]), QUICK);
    assert!(
        again.stdout_text().contains("Number of regular files transferred: 0"),
        "the second rsync -a sent files again:\n{}",
        again.both()
    );
    m.unmount();
    let m = d.mount(&ms.this, &[]);
    assert_source_kept(&m.path().join("dst"), "remounted with the same state", true);
    // Each mount has its own mountpoint.
    let dest = format!("{}/", m.path().join("dst").display());
    let again = run_ok(Command::new("rsync").args(["-a", "--stats", &source, &dest]), QUICK);
    assert!(
        again.stdout_text().contains("Number of regular files transferred: 0"),
        "rsync -a after a remount sent files again:\n{}",
        again.both()
    );
    m.unmount();
    if d.server_keeps_times() {
        let m = d.mount(&ms.other, &[]);
        assert_source_kept(&m.path().join("dst"), "another machine", d.server_keeps_modes());
        m.unmount();
    }
}

/// `tar x` and `cp -a` into the mount exit 0 with the tree as it was.
fn tar_x_and_cp_a_keep_the_tree(d: &dyn Drive) {
    let src = tempfile::tempdir().unwrap();
    make_source(&src.path().join("t"));
    let tarball = src.path().join("t.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(src.path().join("t"))
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        QUICK,
    );
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    fs::create_dir(m.path().join("x")).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(m.path().join("x"))
            .arg("-xf")
            .arg(&tarball),
        QUICK,
    );
    assert_source_kept(&m.path().join("x"), "after tar x", true);
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(src.path().join("t"))
            .arg(m.path().join("cpa")),
        QUICK,
    );
    assert_source_kept(&m.path().join("cpa"), "after cp -a", true);
    m.unmount();
}

/// `chmod +x` then running the file works, on this machine after a remount, and on another
/// machine where the server keeps modes.
fn chmod_x_then_run(d: &dyn Drive) {
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    let script = m.path().join("run.sh");
    fs::write(&script, "#!/bin/sh\necho ran from the drive\n").unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(&script), QUICK);
    let out = run_ok(&mut Command::new(&script), QUICK);
    assert_eq!(out.stdout_text(), "ran from the drive\n");
    run_ok(Command::new("chmod").arg("go-rwx").arg(&script), QUICK);
    assert_eq!(mode_of(&script), 0o700);
    m.unmount();
    let m = d.mount(&ms.this, &[]);
    assert_eq!(mode_of(&m.path().join("run.sh")), 0o700, "the mode after a remount");
    m.unmount();
    if d.server_keeps_modes() {
        let m = d.mount(&ms.other, &[]);
        assert_eq!(mode_of(&m.path().join("run.sh")), 0o700, "the mode on another machine");
        let out = run_ok(&mut Command::new(m.path().join("run.sh")), QUICK);
        assert_eq!(out.stdout_text(), "ran from the drive\n");
        m.unmount();
    }
}

/// `ln -s` makes a link (a `.rclonelink` file on the server holding the target, the suffix hidden
/// in the mount) that `readlink` and `lstat` see, on this machine and another.
fn ln_s_makes_links_rclone_reads(d: &dyn Drive) {
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    fs::write(m.path().join("f"), "target content\n").unwrap();
    run_ok(Command::new("ln").arg("-s").arg("f").arg(m.path().join("link")), QUICK);
    run_ok(
        Command::new("ln")
            .arg("-s")
            .arg("/nowhere/at/all")
            .arg(m.path().join("dangling")),
        QUICK,
    );
    assert_eq!(fs::read_link(m.path().join("link")).unwrap(), Path::new("f"));
    assert_eq!(fs::read_to_string(m.path().join("link")).unwrap(), "target content\n");
    assert_eq!(errno(fs::metadata(m.path().join("dangling"))), Some(libc::ENOENT));
    let names: Vec<String> = fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".rclonelink")),
        "the suffix shows in the mount: {names:?}"
    );
    m.unmount();
    assert_eq!(
        d.server_file("link.rclonelink").as_deref(),
        Some(&b"f"[..]),
        "the link as rclone --links stores it"
    );
    let m = d.mount(&ms.other, &[]);
    assert_eq!(
        fs::read_link(m.path().join("link")).unwrap(),
        Path::new("f"),
        "another machine"
    );
    assert_eq!(
        fs::read_link(m.path().join("dangling")).unwrap(),
        Path::new("/nowhere/at/all")
    );
    m.unmount();
}

/// `touch -d` on files and folders holds across a remount, and on another machine (both servers
/// keep modification times).
fn touch_d_is_kept(d: &dyn Drive) {
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    fs::create_dir(m.path().join("dir")).unwrap();
    fs::write(m.path().join("dir/f"), "x").unwrap();
    run_ok(
        Command::new("touch")
            .args(["-d", "2020-02-02 02:02:02 UTC"])
            .arg(m.path().join("dir/f")),
        QUICK,
    );
    run_ok(
        Command::new("touch")
            .args(["-d", "2020-02-02 02:02:02 UTC"])
            .arg(m.path().join("dir")),
        QUICK,
    );
    assert_eq!(mtime_secs(&m.path().join("dir/f")), OLD);
    assert_eq!(mtime_secs(&m.path().join("dir")), OLD);
    m.unmount();
    let mut machines = vec![(&ms.this, "remounted")];
    if d.server_keeps_times() {
        machines.push((&ms.other, "another machine"));
    }
    for (state, what) in machines {
        let m = d.mount(state, &[]);
        assert_eq!(mtime_secs(&m.path().join("dir/f")), OLD, "{what}: the file's time");
        assert_eq!(mtime_secs(&m.path().join("dir")), OLD, "{what}: the folder's time");
        m.unmount();
    }
}

/// `git clone` into the mount keeps executables, and `git status` in the clone is clean.
fn git_clone_keeps_executables(d: &dyn Drive) {
    let src = tempfile::tempdir().unwrap();
    let repo = src.path().join("repo");
    fs::create_dir(&repo).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.com",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args),
            QUICK,
        )
    };
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("build.sh"), "#!/bin/sh\necho built\n").unwrap();
    fs::set_permissions(repo.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(repo.join("README"), "a repo\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    run_ok(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(&repo)
            .arg(m.path().join("clone")),
        QUICK,
    );
    assert_eq!(
        mode_of(&m.path().join("clone/build.sh")) & 0o111,
        0o111,
        "the executable bit"
    );
    let status = git(&m.path().join("clone"), &["status", "--porcelain"]);
    assert_eq!(status.stdout_text(), "", "git status in the clone");
    m.unmount();
}

/// Hard links, fifos and device nodes are refused with EPERM (no remote holds them), as
/// docs/semantics.md says.
fn hard_links_and_special_files_are_eperm(d: &dyn Drive) {
    let ms = machines();
    let m = d.mount(&ms.this, &[]);
    fs::write(m.path().join("f"), "x").unwrap();
    assert_eq!(
        errno(fs::hard_link(m.path().join("f"), m.path().join("g"))),
        Some(libc::EPERM)
    );
    let out = run(Command::new("mkfifo").arg(m.path().join("fifo")), QUICK);
    assert!(!out.status.success(), "mkfifo succeeded");
    assert!(out.stderr.contains("not permitted"), "mkfifo: {}", out.stderr);
    m.unmount();
}

/// With `--no-metadata`, chmod, chown and utimens succeed without effect, so tools still run.
fn no_metadata_accepts_and_forgets(d: &dyn Drive) {
    let src = tempfile::tempdir().unwrap();
    make_source(src.path());
    let ms = machines();
    let m = d.mount(&ms.this, &["--no-metadata"]);
    let f = m.path().join("f");
    fs::write(&f, "x").unwrap();
    let before = mode_of(&f);
    run_ok(Command::new("chmod").arg("0600").arg(&f), QUICK);
    assert_eq!(mode_of(&f), before, "--no-metadata: the mode is not kept");
    run_ok(
        Command::new("touch").args(["-d", "2020-02-02 02:02:02 UTC"]).arg(&f),
        QUICK,
    );
    let dest = format!("{}/", m.path().join("dst").display());
    let source = format!("{}/", src.path().join("bin").display());
    run_ok(Command::new("rsync").args(["-rt", "--perms", &source, &dest]), QUICK);
    m.unmount();
}

macro_rules! per_drive {
    ($($check:ident),+ $(,)?) => {
        mod dav_server {
            use super::*;
            $( #[test] fn $check() { let s = DavServer::start(); super::$check(&Dav(&s, false)); } )+
        }
        mod apache {
            use super::*;
            $( #[test] fn $check() { let s = ApacheServer::start(); super::$check(&Dav(&s, true)); } )+
        }
        mod graph {
            use super::*;
            $( #[test] fn $check() { super::$check(&GraphDrive::start()); } )+
        }
    };
}

per_drive!(
    rsync_a_twice_transfers_nothing_the_second_time,
    tar_x_and_cp_a_keep_the_tree,
    chmod_x_then_run,
    ln_s_makes_links_rclone_reads,
    touch_d_is_kept,
    git_clone_keeps_executables,
    hard_links_and_special_files_are_eperm,
    no_metadata_accepts_and_forgets,
);
