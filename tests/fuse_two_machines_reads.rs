//! Issue 15 items 3, 4 and 6: reads and opens on one of two mounts of one drive ("two machines", each with its own
//! state and disk cache, `--poll-interval 2 --ttl 1`) while the other changes the files.
//!
//! - one descriptor never returns bytes of two versions (the in-process server, Apache and the fake Graph server);
//! - `>>` right after the other mount replaced the file opens the new version instead of failing with ESTALE;
//! - a reader in a folder the other mount renamed gets every byte and a clean end of file.
//!
//! Each scenario runs 20 rounds, every round a race on purpose: the second mount acts on what it knew less than a
//! TTL before the first one changed it.

#[macro_use]
mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::files::random_bytes;
use common::graph::{store_fake_tokens, GraphDrive, GRAPH_REMOTE};
use common::mount::{eventually, run, Mount};
use common::servers::TestServer;

const ROUNDS: usize = 20;
/// Small blocks keep the files small while a half of one still spans several blocks.
const ARGS: &[&str] = &["--poll-interval", "2", "--ttl", "1", "--block-size", "16"];
/// Bounded waits for what the other mount or the server must show.
const WITHIN: Duration = Duration::from_secs(30);
/// Longer than `--ttl`: what a mount knew is asked again after it.
const PAST_TTL: Duration = Duration::from_millis(1300);
/// Size of the files whose versions are compared (a multiple of the block size).
const SIZE: usize = 128 << 10;

/// Two mounts of one drive and a look at what the server holds.
trait TwoMachines {
    fn a(&self) -> &Mount;
    fn b(&self) -> &Mount;
    /// The bytes of `rel` on the server, if it is there.
    fn on_server(&self, rel: &str) -> Option<Vec<u8>>;
}

struct OnWebDav<S> {
    // Mounts first: they are unmounted before the server stops.
    a: Mount,
    b: Mount,
    server: S,
}

impl<S: TestServer> OnWebDav<S> {
    fn start(server: S) -> Self {
        let a = Mount::start(&server.url(), ARGS);
        let b = Mount::start(&server.url(), ARGS);
        OnWebDav { a, b, server }
    }
}

impl<S: TestServer> TwoMachines for OnWebDav<S> {
    fn a(&self) -> &Mount {
        &self.a
    }
    fn b(&self) -> &Mount {
        &self.b
    }
    fn on_server(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.server.root().join(rel)).ok()
    }
}

struct OnGraph {
    a: Mount,
    b: Mount,
    drive: GraphDrive,
    _b_state: tempfile::TempDir,
}

impl OnGraph {
    fn start() -> Self {
        let drive = GraphDrive::start();
        let a = drive.mount(ARGS);
        // The second machine: its own state (tokens, journal) and, from Mount::start, its own disk cache.
        let b_state = tempfile::tempdir().unwrap();
        store_fake_tokens(&drive.g, b_state.path(), GRAPH_REMOTE);
        let config = drive.config();
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            b_state.path().to_str().unwrap(),
        ];
        args.extend_from_slice(ARGS);
        let b = Mount::start(GRAPH_REMOTE, &args);
        OnGraph {
            a,
            b,
            drive,
            _b_state: b_state,
        }
    }
}

impl TwoMachines for OnGraph {
    fn a(&self) -> &Mount {
        &self.a
    }
    fn b(&self) -> &Mount {
        &self.b
    }
    fn on_server(&self, rel: &str) -> Option<Vec<u8>> {
        self.drive.drive().file_bytes(rel).map(|b| b.to_vec())
    }
}

/// Writes `data` to `rel` through mount A and waits until the server holds it.
fn write_through_a(two: &dyn TwoMachines, rel: &str, data: &[u8]) {
    fs::write(two.a().path().join(rel), data).unwrap_or_else(|e| panic!("write {rel} on A: {e}"));
    eventually(WITHIN, &format!("the server holds A's {rel}"), || {
        two.on_server(rel).as_deref() == Some(data)
    });
}

/// Waits until mount B shows `rel` with `data` (reading it through B).
fn b_sees(two: &dyn TwoMachines, rel: &str, data: &[u8]) {
    let p = two.b().path().join(rel);
    eventually(WITHIN, &format!("B shows {rel}"), || {
        fs::read(&p).ok().as_deref() == Some(data)
    });
}

/// Polls `cond` every 100 ms for at most `limit`; `None` when it never held.
fn eventually_or(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<()> {
    let end = std::time::Instant::now() + limit;
    while !cond() {
        if std::time::Instant::now() > end {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
    Some(())
}

// ---------------------------------------------------------------------------------------------------------------
// Item 3: one descriptor, one version
// ---------------------------------------------------------------------------------------------------------------

/// `exec 3<B/m.bin; head -c HALF <&3; (A replaces m.bin, same size); cat <&3`, for 20 files. B read each file
/// whole before, so the first half comes from the kernel's page cache; B then learns of the new version (a `stat`
/// past the TTL), and the kernel's cached pages go (here by `posix_fadvise(DONTNEED)`, as after the poller's
/// invalidation or memory pressure), so the rest must come from the core. It must be the old version's rest, or
/// ESTALE: never the new version's.
fn one_descriptor_sees_one_version(two: &dyn TwoMachines) {
    let names: Vec<String> = (0..ROUNDS).map(|i| format!("m{i}.bin")).collect();
    let v1: Vec<Vec<u8>> = (0..ROUNDS).map(|i| random_bytes(100 + i as u64, SIZE)).collect();
    let v2: Vec<Vec<u8>> = (0..ROUNDS).map(|i| random_bytes(200 + i as u64, SIZE)).collect();
    for (n, d) in names.iter().zip(&v1) {
        write_through_a(two, n, d);
    }
    for (n, d) in names.iter().zip(&v1) {
        b_sees(two, n, d);
    }
    let half = SIZE / 2;
    let mut open: Vec<(File, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let mut f = File::open(two.b().path().join(n)).unwrap();
            let mut first = vec![0u8; half];
            f.read_exact(&mut first).unwrap();
            (f, first)
        })
        .collect();
    for (n, d) in names.iter().zip(&v2) {
        write_through_a(two, n, d);
    }
    thread::sleep(PAST_TTL);
    let mut stale = 0;
    for (i, (f, first)) in open.iter_mut().enumerate() {
        assert_eq!(
            first[..],
            v1[i][..half],
            "{}: the first half is the old version's",
            names[i]
        );
        // B asks the server again and learns of the new version (dropping the old one's cached blocks).
        fs::metadata(two.b().path().join(&names[i])).unwrap();
        // SAFETY: a valid open descriptor; the call only drops clean cached pages of this file.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
        let mut rest = Vec::new();
        match f.read_to_end(&mut rest) {
            Ok(_) => {
                assert!(
                    rest[..] == v1[i][half..],
                    "{}: one descriptor returned bytes of two versions (rest is {})",
                    names[i],
                    if rest[..] == v2[i][half..] {
                        "the new version's"
                    } else {
                        "neither version's"
                    }
                );
            }
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::ESTALE),
                    "{}: reading the rest: {e}",
                    names[i]
                );
                stale += 1;
            }
        }
    }
    // A new descriptor sees the new version whole.
    for (n, d) in names.iter().zip(&v2) {
        b_sees(two, n, d);
    }
    eprintln!("{stale} of {ROUNDS} descriptors ended with ESTALE, the others read the old version to its end");
}

// ---------------------------------------------------------------------------------------------------------------
// Item 4: `>>` right after the other machine's change
// ---------------------------------------------------------------------------------------------------------------

/// B looks at `f`, A replaces it, and within B's TTL `echo … >> B/f`: the append must succeed on the new version.
fn append_after_the_other_machine_changed_the_file(two: &dyn TwoMachines) {
    for i in 0..ROUNDS {
        let rel = format!("ap{i}.txt");
        let base = format!("base {i}\n").into_bytes();
        write_through_a(two, &rel, &base);
        b_sees(two, &rel, &base);
        let changed = format!("changed by A, round {i}, a longer line\n").into_bytes();
        // B's attributes are fresh now; A's change lands within B's TTL.
        fs::metadata(two.b().path().join(&rel)).unwrap();
        write_through_a(two, &rel, &changed);
        let out = run(
            Command::new("sh").arg("-c").arg(format!(
                "echo 'appended by B' >> '{}'",
                two.b().path().join(&rel).display()
            )),
            WITHIN,
        );
        assert!(out.status.success(), "round {i}: >> on B failed: {}", out.stderr);
        let mut want = changed.clone();
        want.extend_from_slice(b"appended by B\n");
        let mut last = None;
        eventually_or(WITHIN, || {
            last = two.on_server(&rel);
            last.as_deref() == Some(&want[..])
        })
        .unwrap_or_else(|| {
            panic!(
                "round {i}: the server holds {:?}, not A's change and B's line\nB's log:\n{}",
                last.map(|l| String::from_utf8_lossy(&l).into_owned()),
                two.b().log()
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Item 6: end of file after the folder was renamed elsewhere
// ---------------------------------------------------------------------------------------------------------------

/// B reads every byte of `dir{i}/f.bin`; A renames `dir{i}`; past the TTL, B's read at end of file (where the
/// kernel asks for the file's attributes again) returns 0, as `cat` needs to exit 0.
fn end_of_file_after_the_folder_moved(two: &dyn TwoMachines) {
    let data: Vec<Vec<u8>> = (0..ROUNDS).map(|i| random_bytes(300 + i as u64, SIZE)).collect();
    for (i, d) in data.iter().enumerate() {
        fs::create_dir(two.a().path().join(format!("dir{i}"))).unwrap();
        write_through_a(two, &format!("dir{i}/f.bin"), d);
    }
    let mut readers: Vec<File> = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let rel = format!("dir{i}/f.bin");
        b_sees(two, &rel, d);
        let mut f = File::open(two.b().path().join(&rel)).unwrap();
        let mut all = vec![0u8; SIZE];
        f.read_exact(&mut all).unwrap();
        assert!(all == *d, "{rel}: the content");
        readers.push(f);
    }
    for i in 0..ROUNDS {
        let (from, to) = (
            two.a().path().join(format!("dir{i}")),
            two.a().path().join(format!("moved{i}")),
        );
        fs::rename(&from, &to).unwrap_or_else(|e| panic!("mv dir{i} on A: {e}"));
        eventually(WITHIN, "the server shows the rename", || {
            two.on_server(&format!("moved{i}/f.bin")).is_some()
        });
    }
    thread::sleep(PAST_TTL);
    for (i, f) in readers.iter_mut().enumerate() {
        let mut rest = Vec::new();
        match f.read_to_end(&mut rest) {
            Ok(0) => {}
            Ok(n) => panic!("dir{i}/f.bin: {n} bytes past the end"),
            Err(e) => panic!("dir{i}/f.bin: read at end of file after the folder moved: {e}"),
        }
    }
}

on_both_servers!(
    dav_server,
    apache,
    start(),
    [
        one_descriptor_sees_one_version_on,
        append_after_the_other_machine_changed_on,
        end_of_file_after_the_folder_moved_on,
    ]
);

fn one_descriptor_sees_one_version_on<S: TestServer + 'static>(server: &S) {
    let two = OnWebDav::start(server_ref(server));
    one_descriptor_sees_one_version(&two);
}

fn append_after_the_other_machine_changed_on<S: TestServer + 'static>(server: &S) {
    let two = OnWebDav::start(server_ref(server));
    append_after_the_other_machine_changed_the_file(&two);
}

fn end_of_file_after_the_folder_moved_on<S: TestServer + 'static>(server: &S) {
    let two = OnWebDav::start(server_ref(server));
    end_of_file_after_the_folder_moved(&two);
}

/// A borrowed server behind the trait (the macro hands the checks a reference).
struct ServerRef {
    url: String,
    root: PathBuf,
}

impl TestServer for ServerRef {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn root(&self) -> &Path {
        &self.root
    }
}

fn server_ref<S: TestServer>(s: &S) -> ServerRef {
    ServerRef {
        url: s.url(),
        root: s.root().to_path_buf(),
    }
}

#[test]
fn graph_one_descriptor_sees_one_version() {
    let two = OnGraph::start();
    one_descriptor_sees_one_version(&two);
}
