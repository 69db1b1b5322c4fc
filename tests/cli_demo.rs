//! The first ten minutes (issue 21), as CI runs them: `scripts/demo.sh` (the README's demo command)
//! mounts the WebDAV demo; `scripts/demo.sh onedrive` mounts the OneDrive demo beside it on another
//! mountpoint; both are edited through the mount; each demo's printed "Unmount" and "Mount again"
//! commands work as printed; a taken mountpoint is refused with a non-zero exit; both demos stop;
//! and the WebDAV demo's data is as the user left it.
//!
//! The demo runs with the debug binaries (CLOUDMOUNT_BIN, FAKE_GRAPH_BIN: no release build in the
//! test), on free ports and in folders of this test. It needs root (Apache drops to www-data) and
//! Apache; without them it says why and skips.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{cloudmount_bin, is_mounted, run, Finished};

const DEMO: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The debug fake Graph server, built if needed (a debug build: quick once the tests are built).
fn fake_graph_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let f = run(
        Command::new(cargo)
            .current_dir(repo())
            .args(["build", "--quiet", "-p", "fake-graph", "--bin", "fake-graph"]),
        Duration::from_secs(600),
    );
    assert!(f.status.success(), "cannot build fake-graph: {}", f.both());
    Path::new(cloudmount_bin()).parent().unwrap().join("fake-graph")
}

struct Demo {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Demo {
    fn new() -> Demo {
        let root = tempfile::Builder::new()
            .prefix("cloudmount-demo-test-")
            .tempdir()
            .unwrap();
        // Apache (www-data) must be able to reach the served folder.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let p = |n: &str| root.path().join(n).display().to_string();
        let env = vec![
            ("CLOUDMOUNT_BIN".into(), cloudmount_bin().to_string()),
            ("FAKE_GRAPH_BIN".into(), fake_graph_bin().display().to_string()),
            ("DEMO_PORT".into(), free_port().to_string()),
            ("DEMO_GRAPH_PORT".into(), free_port().to_string()),
            ("DEMO_DATA".into(), p("data")),
            ("DEMO_ONEDRIVE_DATA".into(), p("onedrive-data")),
            ("DEMO_STATE".into(), p("state")),
            ("DEMO_BIG_MIB".into(), "2".into()),
        ];
        Demo { root, env }
    }

    fn path(&self, n: &str) -> PathBuf {
        self.root.path().join(n)
    }

    fn demo(&self, args: &[&str]) -> Finished {
        run(
            Command::new("scripts/demo.sh")
                .current_dir(repo())
                .args(args)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            DEMO,
        )
    }

    fn demo_ok(&self, args: &[&str]) -> String {
        let f = self.demo(args);
        assert!(f.status.success(), "scripts/demo.sh {args:?} failed: {}", f.both());
        f.stdout_text()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Whatever happened, no server or mount outlives the test.
        let _ = self.demo(&["stop"]);
    }
}

/// The command after `label` in the demo's output, run through the shell; must exit 0.
fn run_hint(out: &str, label: &str) -> Finished {
    let cmd = out
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
        .trim();
    let f = run(Command::new("sh").args(["-c", cmd]), DEMO);
    assert!(f.status.success(), "`{cmd}` failed: {}", f.both());
    f
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Every file under `root` and its content.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn both_demos_side_by_side_with_their_hints() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/apache2").exists() {
        eprintln!("SKIPPED: the demo test needs root and Apache (scripts/install-test-deps.sh)");
        return;
    }
    common::mount::require_fuse();
    let d = Demo::new();
    let (dav_mnt, od_mnt) = (d.path("mnt-webdav"), d.path("mnt-onedrive"));

    // The README's command (on a mountpoint of the test's own).
    let dav = d.demo_ok(&[dav_mnt.to_str().unwrap()]);
    assert!(is_mounted(&dav_mnt), "{dav}");
    assert!(fs::read_to_string(dav_mnt.join("hello.txt"))
        .unwrap()
        .contains("WebDAV"));
    // The user's edits, on the server once fsync returns.
    write_synced(&dav_mnt.join("notes/mine.txt"), b"my note\n");
    fs::remove_file(dav_mnt.join("notes/note 2.txt")).unwrap();
    assert_eq!(fs::read(d.path("data/notes/mine.txt")).unwrap(), b"my note\n");
    let left_as = tree(&d.path("data"));

    // The same WebDAV demo again is refused, and says how to stop it.
    let again = d.demo(&[dav_mnt.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "a taken mountpoint was accepted: {}",
        again.both()
    );
    assert!(again.both().contains("scripts/demo.sh stop"), "{}", again.both());

    // The OneDrive demo beside it.
    let od = d.demo_ok(&["onedrive", od_mnt.to_str().unwrap()]);
    assert!(is_mounted(&od_mnt), "{od}");
    assert!(od.contains("read-write") && !od.contains("Read-only"), "{od}");
    assert!(fs::read_to_string(od_mnt.join("hello.txt"))
        .unwrap()
        .contains("fake OneDrive"));
    write_synced(&od_mnt.join("new.txt"), b"hello OneDrive\n");
    assert!(is_mounted(&dav_mnt), "the OneDrive demo took the WebDAV demo down");
    assert_eq!(
        tree(&d.path("data")),
        left_as,
        "the OneDrive demo touched the WebDAV demo's data"
    );

    // Each demo's hints: unmount, then mount again, as printed.
    for (out, mnt) in [(&dav, &dav_mnt), (&od, &od_mnt)] {
        run_hint(out, "Unmount (waits for uploads):");
        assert!(!is_mounted(mnt), "still mounted after the printed unmount");
        run_hint(out, "Mount again:");
        assert!(is_mounted(mnt), "not mounted after the printed mount command:\n{out}");
    }
    assert_eq!(fs::read(od_mnt.join("new.txt")).unwrap(), b"hello OneDrive\n");
    assert_eq!(fs::read(dav_mnt.join("notes/mine.txt")).unwrap(), b"my note\n");

    // Stop both; the WebDAV demo's data is as the user left it.
    d.demo_ok(&["stop", dav_mnt.to_str().unwrap()]);
    assert!(!is_mounted(&dav_mnt));
    assert!(
        is_mounted(&od_mnt),
        "stopping the WebDAV demo took the OneDrive one down"
    );
    d.demo_ok(&["stop", od_mnt.to_str().unwrap()]);
    assert!(!is_mounted(&od_mnt));
    assert_eq!(tree(&d.path("data")), left_as, "the WebDAV demo's data changed");
}
