//! Issue 14 item 16: a listing that races uploads must never make the mount forget a name it created or an upload
//! that landed after the listing was asked for. Through a slow link (a throttling relay) to Apache, with `ls -lR`
//! loops running on the mount the whole time: `cp -r` of a folder, `mv` of half of it into a subfolder, `rm` of
//! files whose uploads are landing while the listings run; and eight writers at once with removers behind them.
//! Every `rm` and `mv` must succeed, and the server must end up holding exactly what the programs left.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::files::random_bytes;
use common::mount::{run, Mount};
use common::relay::Relay;

/// The link of the issue: 8 MiB/s each way.
const LINK: u64 = 8 << 20;
/// Limit of one command on the mount.
const QUICK: Duration = Duration::from_secs(30);

/// `ls -lR` loops on `root` until dropped; counts the listings made.
struct Listers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Listers {
    fn start(root: &Path, n: usize) -> Listers {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|_| {
                let (root, stop, done) = (root.to_path_buf(), stop.clone(), done.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        // Its verdict does not matter (files vanish under it); what it does to the mount does.
                        run(Command::new("ls").arg("-lR").arg(&root), QUICK);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Listers { stop, done, threads }
    }

    /// Stops the loops; returns how many listings they made.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("lister thread");
        }
        self.done.load(Ordering::SeqCst)
    }
}

/// Runs `what` (an `rm` or `mv` on the mount) and returns its failure, if any.
fn failure(cmd: &mut Command) -> Option<String> {
    let f = run(cmd, QUICK);
    (!f.status.success()).then(|| format!("{:?}: {}", cmd, f.stderr.trim()))
}

/// Names of the regular files directly in `dir` (on the server's disk).
fn files_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn mount_through(relay: &Relay, server: &ApacheServer) -> Mount {
    Mount::start(&relay.url_for(&server.url()), &["--ttl", "1", "--uploads", "4"])
}

/// The issue's steps, `rounds` times, each in a folder of its own: `cp -r` of 100 files, `mv` of the first half
/// into a subfolder, `rm` of every other file of the second half (whose uploads land while the `rm`s run).
#[test]
fn copy_move_remove_under_listing_loops() {
    let server = ApacheServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", server.port()).parse().unwrap(), LINK);
    let m = mount_through(&relay, &server);
    let src = tempfile::tempdir().expect("source dir");
    let names: Vec<String> = (0..100).map(|i| format!("f{i:03}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        fs::write(src.path().join(n), random_bytes(i as u64, 256 << 10)).unwrap();
    }
    let listers = Listers::start(m.path(), 2);
    let mut failures = Vec::new();
    let rounds = 3;
    for r in 0..rounds {
        let dst: PathBuf = m.path().join(format!("copy{r}"));
        let copied = run(Command::new("cp").arg("-r").arg(src.path()).arg(&dst), QUICK);
        assert!(copied.status.success(), "cp -r failed: {}", copied.both());
        failures.extend(failure(Command::new("mkdir").arg(dst.join("moved"))));
        for n in &names[..50] {
            failures.extend(failure(Command::new("mv").arg(dst.join(n)).arg(dst.join("moved"))));
        }
        for n in names[50..].iter().step_by(2) {
            failures.extend(failure(Command::new("rm").arg(dst.join(n))));
        }
    }
    let listings = listers.stop();
    assert!(listings > 0, "the listers never finished a listing");
    m.unmount();
    assert!(
        failures.is_empty(),
        "{} of the mv/rm calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for r in 0..rounds {
        let dir = server.root().join(format!("copy{r}"));
        let kept: BTreeSet<String> = names[50..].iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(files_in(&dir), kept, "round {r}: the folder on the server");
        let moved: BTreeSet<String> = names[..50].iter().cloned().collect();
        assert_eq!(
            files_in(&dir.join("moved")),
            moved,
            "round {r}: the subfolder on the server"
        );
    }
}

/// Eight writers at once in one folder, each removing every other file it wrote right after closing it, while
/// two `ls -lR` loops list the folder.
#[test]
fn eight_writers_and_removers_under_listing_loops() {
    let server = ApacheServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", server.port()).parse().unwrap(), LINK);
    let m = mount_through(&relay, &server);
    let dir = m.path().join("w");
    fs::create_dir(&dir).unwrap();
    let listers = Listers::start(m.path(), 2);
    let per_writer = 24;
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let dir = dir.clone();
            thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..per_writer {
                    let name = format!("w{w}-{i:02}.bin");
                    fs::write(dir.join(&name), random_bytes(w * 1000 + i, 64 << 10))
                        .unwrap_or_else(|e| panic!("write {name}: {e}"));
                    // The previous file's upload is landing now: remove it under the listings.
                    if i % 2 == 1 {
                        let prev = format!("w{w}-{:02}.bin", i - 1);
                        failures.extend(failure(Command::new("rm").arg(dir.join(prev))));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = writers
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .collect();
    listers.stop();
    m.unmount();
    assert!(
        failures.is_empty(),
        "{} rm calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let kept: BTreeSet<String> = (0..8)
        .flat_map(|w| {
            (0..per_writer)
                .filter(|i| i % 2 == 1)
                .map(move |i| format!("w{w}-{i:02}.bin"))
        })
        .collect();
    assert_eq!(files_in(&server.root().join("w")), kept, "the folder on the server");
}
