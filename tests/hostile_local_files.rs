//! Another local user must not read through our files on disk what the mount hides from them.
//!
//! A mount as root with `--allow-other --umask 077` shows a 0600 file that another user cannot open; the same
//! bytes also sit in the disk block cache, in the staged copy of a file being uploaded, and names in the upload
//! journal and registry socket. Everything cloudmount writes must be the mounting user's only: folders 0700, files
//! 0600, and folders that older versions left 0755 are fixed at startup.
//!
//! Needs root and /dev/fuse; creates the unprivileged user `cmtest-other` (useradd) to try reading as.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::dav::DavServer;
use common::mount::{cloudmount_bin, eventually, run, within, MountPoint};
use common::mount::{is_mounted, Mount};

const OTHER_USER: &str = "cmtest-other";
const QUICK: Duration = Duration::from_secs(30);

/// Creates the unprivileged user the test reads as (once per machine; once at a time in this process, since
/// useradd locks /etc/passwd).
fn other_user() -> &'static str {
    static MADE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    MADE.get_or_init(make_other_user);
    OTHER_USER
}

fn make_other_user() {
    let exists = run(Command::new("id").arg(OTHER_USER), QUICK).status.success();
    if !exists {
        let made = run(
            Command::new("useradd")
                .args(["--no-create-home", "--shell", "/usr/sbin/nologin"])
                .arg(OTHER_USER),
            QUICK,
        );
        // Another test process may have created it meanwhile.
        assert!(
            made.status.success() || run(Command::new("id").arg(OTHER_USER), QUICK).status.success(),
            "useradd {OTHER_USER}: {}",
            made.both()
        );
    }
}

/// Whether `user` can read the file at `path` (with `cat`, as that user).
fn can_read_as(user: &str, path: &Path) -> bool {
    run(Command::new("runuser").args(["-u", user, "--", "cat"]).arg(path), QUICK)
        .status
        .success()
}

/// Whether `user` can list folder `path`.
fn can_list_as(user: &str, path: &Path) -> bool {
    run(Command::new("runuser").args(["-u", user, "--", "ls"]).arg(path), QUICK)
        .status
        .success()
}

/// Every folder and file under `root` (included), with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        out.push((p.clone(), m.is_dir(), m.mode() & 0o7777));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Asserts that every folder under `root` is 0700 and every file 0600.
fn assert_private(root: &Path) {
    let wrong: Vec<String> = modes(root)
        .into_iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, _, mode)| format!("{} {mode:o}", p.display()))
        .collect();
    assert!(wrong.is_empty(), "not private to the mounting user: {wrong:#?}");
}

/// Files under `root` whose name satisfies `pick`.
fn files_named(root: &Path, pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    modes(root)
        .into_iter()
        .filter(|(p, dir, _)| !dir && p.file_name().and_then(|n| n.to_str()).is_some_and(&pick))
        .map(|(p, _, _)| p)
        .collect()
}

/// A folder other users may enter (0755), like /var/cache: the test's files below it are reachable unless our own
/// modes stop them.
fn open_base() -> tempfile::TempDir {
    let base = tempfile::Builder::new().prefix("cloudmount-modes-").tempdir().unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    base
}

/// Cached blocks, the staged copy and journal record of a pending upload, and the registry socket are all 0600 in
/// 0700 folders; the other user cannot read a cached block or the staged file. Folders an older version left
/// 0755 are fixed when the mount starts.
#[test]
fn cache_staging_journal_and_status_are_private_to_the_mounting_user() {
    let user = other_user();
    let server = DavServer::start();
    let secret = b"top secret content, readable only by root\n".repeat(1000);
    fs::write(server.root().join("secret.txt"), &secret).unwrap();
    let base = open_base();
    let state = base.path().join("state");
    let cache = base.path().join("cache");
    // What an older version left behind: the umask's modes.
    for old in [state.join("uploads"), cache.join("blocks")] {
        fs::create_dir_all(&old).unwrap();
    }
    for old in [&state, &state.join("uploads"), &cache, &cache.join("blocks")] {
        fs::set_permissions(old, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = Mount::start(
        &server.url(),
        &[
            "--allow-other",
            "--umask",
            "077",
            "--state-dir",
            state.to_str().unwrap(),
            "--disk-cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    // Through the mount, the other user is refused, as the options say...
    let file = m.path().join("secret.txt");
    assert_eq!(fs::read(&file).unwrap(), secret);
    assert!(!can_read_as(user, &file), "the mount let {user} read a 0600 file");
    // ...and an upload stays pending (staged file and journal record on disk) while the server holds PUTs.
    server.set_hang_large_puts(true);
    let upload = m.path().join("draft.bin");
    let draft = vec![7u8; 1 << 20];
    let d = draft.clone();
    let u = upload.clone();
    within(QUICK, "write a file", move || fs::write(&u, &d).unwrap());
    eventually(QUICK, "cached blocks on disk", || {
        !files_named(&cache, |n| n.ends_with(".blk")).is_empty()
    });
    // The mount's registry entry (the socket `status` and `unmount` reach it through) is the third kind of file.
    let registry = cloudmount::cli::registry::registry_dir();
    eventually(QUICK, "a staged file, a journal record and a registry socket", || {
        !files_named(&state, |n| n.starts_with("staged-")).is_empty()
            && !files_named(&state.join("uploads"), |n| n.ends_with(".json")).is_empty()
            && !files_named(&registry, |_| true).is_empty()
    });
    let blocks = files_named(&cache, |n| n.ends_with(".blk"));
    let staged = files_named(&state, |n| n.starts_with("staged-"));
    // The test could read them if the modes allowed it: the base folder is open to everyone.
    assert!(
        can_list_as(user, base.path()),
        "{user} cannot even enter the test folder"
    );
    assert_private(&state);
    assert_private(&cache);
    assert_private(&registry);
    for f in blocks.iter().chain(&staged) {
        assert!(!can_read_as(user, f), "{user} read {}", f.display());
    }
    server.set_hang_large_puts(false);
    eventually(Duration::from_secs(60), "the upload completes", || {
        fs::read(server.root().join("draft.bin")).is_ok_and(|b| b == draft)
    });
    m.unmount();
    assert_private(&state);
    assert_private(&cache);
}

/// A daemon's log file and the folder made for it are private too (a log names files and folders).
#[test]
fn daemon_log_is_private_to_the_mounting_user() {
    let user = other_user();
    let server = DavServer::start();
    let base = open_base();
    let logs = base.path().join("logs");
    let log = logs.join("mount.log");
    let mp = MountPoint::new();
    let out = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .arg("--log-file")
            .arg(&log)
            .arg("--state-dir")
            .arg(base.path().join("state"))
            .arg("--disk-cache-dir")
            .arg(base.path().join("cache")),
        QUICK,
    );
    assert!(out.status.success(), "mount failed: {}", out.both());
    assert!(is_mounted(mp.path()));
    eventually(QUICK, "the daemon logs", || {
        fs::metadata(&log).is_ok_and(|m| m.len() > 0)
    });
    assert!(can_list_as(user, base.path()));
    assert_private(&logs);
    assert_private(&base.path().join("state"));
    assert!(!can_read_as(user, &log), "{user} read the daemon's log");
    let f = run(Command::new("fusermount3").arg("-u").arg(mp.path()), QUICK);
    assert!(f.status.success(), "{}", f.both());
    eventually(QUICK, "the daemon exits", || {
        common::mount::processes_mentioning(mp.path()).is_empty()
    });
}

/// Root's default disk cache lives under /var/cache/cloudmount/blocks/<remote>; older versions left
/// /var/cache/cloudmount, its `blocks` (whose listing names every remote) and `logs` 0755. A mount with the default
/// cache folder makes them 0700, and its own folder below is private too.
#[test]
fn default_cache_folders_left_open_by_older_versions_are_made_private() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts as root (root's default cache folder)"
    );
    let base = Path::new("/var/cache/cloudmount");
    for dir in [base.to_path_buf(), base.join("blocks"), base.join("logs")] {
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before: Vec<PathBuf> = fs::read_dir(base.join("blocks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let server = DavServer::start();
    fs::write(server.root().join("f.txt"), b"cached").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mp = MountPoint::new();
    let out = run(
        Command::new(cloudmount_bin())
            .arg("mount")
            .arg(server.url())
            .arg(mp.path())
            .arg("--state-dir")
            .arg(state.path())
            .arg("--log-file")
            .arg(state.path().join("mount.log")),
        QUICK,
    );
    assert!(out.status.success(), "mount failed: {}", out.both());
    let f = mp.path().join("f.txt");
    assert_eq!(within(QUICK, "read a file", move || fs::read(f).unwrap()), b"cached");
    // Ours is named after the server's address (other tests may add folders meanwhile).
    let port = server
        .url()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let mine: Vec<PathBuf> = fs::read_dir(base.join("blocks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !before.contains(p))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("127.0.0.1_{port}"))
        })
        .collect();
    let modes_now: Vec<(String, u32)> = [base.to_path_buf(), base.join("blocks"), base.join("logs")]
        .iter()
        .map(|p| (p.display().to_string(), fs::metadata(p).unwrap().mode() & 0o7777))
        .collect();
    let u = run(Command::new("fusermount3").arg("-u").arg(mp.path()), QUICK);
    assert!(u.status.success(), "{}", u.both());
    eventually(QUICK, "the daemon exits", || {
        common::mount::processes_mentioning(mp.path()).is_empty()
    });
    assert_eq!(mine.len(), 1, "the mount's own cache folder: {mine:?}");
    assert_private(&mine[0]);
    for dir in &mine {
        let _ = fs::remove_dir_all(dir);
    }
    for (dir, mode) in modes_now {
        assert_eq!(mode, 0o700, "{dir} is still {mode:o}");
    }
}
