//! `cloudmount status` and `cloudmount unmount` as a user meets them (issue 14 items 8, 10, 11):
//! they find every mount of the user whatever its `--state-dir`; `unmount DIR` waits for the
//! uploads the daemon owes (through a slow link) and shows their progress; an upload the server
//! refused is named and makes `unmount` fail; a save refused while the sign-in was revoked goes up
//! once the user signs in again, without remounting.
//!
//! Every mount here is started with a `--state-dir` of its own (tests/common/mount.rs does that),
//! and `status` / `unmount` are run without one, as the user would.

#[macro_use]
mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudmount::auth::AuthState;
use cloudmount::cli::state::MountStatus;
use common::dav::DavServer;
use common::files::random_bytes;
use common::graph::{store_fake_tokens, GraphDrive, GRAPH_REMOTE};
use common::mount::{cloudmount_bin, errno, eventually, is_mounted, run, within, Finished, Mount};
use common::relay::Relay;
use fake_graph::{FakeGraphConfig, RouteClass};

const QUICK: Duration = Duration::from_secs(60);
const SLOW: Duration = Duration::from_secs(180);

fn cli(args: &[&str], dir: Option<&Path>) -> Finished {
    let mut c = Command::new(cloudmount_bin());
    c.args(args);
    if let Some(d) = dir {
        c.arg(d);
    }
    run(&mut c, SLOW)
}

/// `cloudmount status --json [DIR]`, no --state-dir.
fn statuses(dir: Option<&Path>) -> Vec<MountStatus> {
    let f = cli(&["status", "--json"], dir);
    assert!(f.status.success(), "status failed: {}", f.both());
    serde_json::from_slice(&f.stdout).unwrap_or_else(|e| panic!("{e}: {}", f.both()))
}

fn dav_addr(server: &DavServer) -> SocketAddr {
    let url = url::Url::parse(&server.url()).unwrap();
    format!("127.0.0.1:{}", url.port().unwrap()).parse().unwrap()
}

#[test]
fn status_finds_every_mount_whatever_its_state_dir() {
    let (a, b) = (DavServer::start(), DavServer::start());
    let ma = Mount::start(&a.url(), &[]);
    let state_b = tempfile::tempdir().unwrap();
    let mb = Mount::start(&b.url(), &["--state-dir", state_b.path().to_str().unwrap()]);
    let all = statuses(None);
    for m in [&ma, &mb] {
        assert!(
            all.iter()
                .any(|s| s.mountpoint == m.path() && s.pid == m.pid() && s.mounted),
            "status does not list {}: {all:?}",
            m.path().display()
        );
    }
    let one = statuses(Some(ma.path()));
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].remote, a.url());
    // --state-dir picks the mounts using it.
    let f = cli(
        &["status", "--json", "--state-dir", state_b.path().to_str().unwrap()],
        None,
    );
    let picked: Vec<MountStatus> = serde_json::from_slice(&f.stdout).unwrap_or_else(|e| panic!("{e}: {}", f.both()));
    assert_eq!(picked.iter().map(|s| s.pid).collect::<Vec<_>>(), vec![mb.pid()]);
    let text = cli(&["status"], None).stdout_text();
    assert!(
        text.contains(&format!("on {} (pid {}, mounted)", mb.path().display(), mb.pid())),
        "{text}"
    );
    ma.unmount();
    mb.unmount();
}

/// A file is pending in `status` as soon as its close returned (not a second later).
#[test]
fn status_counts_a_file_as_pending_once_its_close_returns() {
    let server = DavServer::start();
    let m = Mount::start(&server.url(), &[]);
    // PUTs of more than 64 KiB hang; everything else (the lookups of open) is answered.
    server.set_hang_large_puts(true);
    let data = random_bytes(3, 100_000);
    for round in 0..5 {
        let name = format!("pending-{round}.bin");
        let (p, d) = (m.path().join(&name), data.clone());
        within(QUICK, "write and close", move || fs::write(p, d).unwrap());
        let st = statuses(Some(m.path()));
        assert!(
            st[0].uploads.iter().any(|u| u.name == name),
            "round {round}: {name} not pending right after its close: {st:?}"
        );
    }
    server.set_hang_large_puts(false);
    let f = cli(&["unmount"], Some(m.path()));
    assert!(f.status.success(), "{}", f.both());
    for round in 0..5 {
        assert_eq!(
            fs::read(server.root().join(format!("pending-{round}.bin"))).unwrap(),
            data
        );
    }
}

/// `cloudmount unmount DIR` (no --state-dir) of a mount with an upload under way through a slow
/// link waits until the server holds the file, saying what it waits for.
#[test]
fn unmount_waits_for_a_running_upload_through_a_slow_link() {
    let server = DavServer::start();
    let relay = Relay::start(dav_addr(&server), 1 << 20);
    let m = Mount::start(&relay.url_for(&server.url()), &[]);
    let data = random_bytes(7, 4 << 20);
    let p = m.path().join("big.bin");
    let d2 = data.clone();
    within(QUICK, "write and close", move || fs::write(p, d2).unwrap());
    eventually(QUICK, "the upload to start", || {
        statuses(Some(m.path()))[0].uploads.iter().any(|u| u.running)
    });
    let f = cli(&["unmount"], Some(m.path()));
    assert!(f.status.success(), "unmount failed: {}", f.both());
    assert!(!is_mounted(m.path()));
    assert_eq!(
        fs::read(server.root().join("big.bin")).ok().map(|b| b.len()),
        Some(data.len()),
        "unmount returned before the upload landed: {}",
        f.both()
    );
    assert_eq!(fs::read(server.root().join("big.bin")).unwrap(), data);
    let said = f.both();
    assert!(
        said.contains("waiting for 1 upload") && said.contains("big.bin"),
        "{said}"
    );
    assert!(said.contains("every upload reached the server"), "{said}");
}

/// A folder mounted by nobody, and a mount whose daemon is not in the registry: `unmount` says why
/// it cannot, and the command it suggests works as printed.
#[test]
fn unmount_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let f = cli(&["unmount"], Some(dir.path()));
    assert!(!f.status.success());
    assert!(f.both().contains("is not mounted"), "{}", f.both());

    let server = DavServer::start();
    let m = Mount::start(&server.url(), &[]);
    let entry = cloudmount::cli::registry::live_mounts()
        .into_iter()
        .find(|l| l.status.mountpoint == m.path())
        .expect("the mount is registered");
    fs::remove_file(&entry.socket).unwrap();
    let f = cli(&["unmount"], Some(m.path()));
    assert!(!f.status.success(), "{}", f.both());
    assert!(
        is_mounted(m.path()),
        "unmounted although its uploads could not be waited for"
    );
    let said = f.both();
    let hint = said.split('`').nth(1).unwrap_or_else(|| panic!("no command: {said}"));
    let h = run(Command::new("sh").args(["-c", hint]), QUICK);
    assert!(h.status.success(), "`{hint}` failed: {}", h.both());
    assert!(!is_mounted(m.path()));
}

/// An upload the server refuses (403): fsync gives EACCES, `unmount` names the file, says where
/// it stays and exits non-zero.
#[test]
fn unmount_names_a_refused_upload_and_fails() {
    let d = GraphDrive::start();
    let m = d.mount(&[]);
    d.g.faults().fail_next(RouteClass::SimpleUpload, 1000, 403);
    let p = m.path().join("refused.txt");
    let fsynced = within(QUICK, "write and fsync", move || {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(b"the server says no").unwrap();
        let first = errno(f.sync_all());
        let again = errno(f.sync_all());
        (first, again)
    });
    assert_eq!(
        fsynced,
        (Some(libc::EACCES), Some(libc::EACCES)),
        "fsync of a refused upload"
    );
    eventually(QUICK, "status to show the refused upload", || {
        d.upload(m.path(), "refused.txt").is_some_and(|u| u.failed)
    });
    let f = cli(&["unmount"], Some(m.path()));
    assert!(
        !f.status.success(),
        "unmount exited 0 with a refused upload: {}",
        f.both()
    );
    let said = f.both();
    assert!(
        said.contains("refused.txt") && said.contains("stay queued"),
        "unmount does not name the refused file: {said}"
    );
    assert!(!is_mounted(m.path()));
}

/// A save made while the sign-in was revoked fails (EACCES) and stays queued; `cloudmount login`
/// (here: new tokens in the store, as login writes them) sends it up without remounting.
#[test]
fn a_save_refused_while_signed_out_goes_up_after_login() {
    let d = GraphDrive::with(FakeGraphConfig {
        token_lifetime: Duration::from_secs(5),
        ..Default::default()
    });
    let m = d.mount(&["--ttl", "600"]);
    let p = m.path().join("saved.txt");
    fs::write(&p, b"first version").unwrap();
    eventually(QUICK, "the first version on the server", || {
        d.drive().file_bytes("/saved.txt").as_deref() == Some(&b"first version"[..])
    });
    // The editor has the file open when the sign-in is revoked, and saves.
    let mut f = OpenOptions::new().write(true).truncate(true).open(&p).unwrap();
    d.g.faults().revoke_refresh_tokens(700082);
    eventually(QUICK, "status to say a sign-in is needed", || {
        matches!(d.status(m.path()).auth, Some(AuthState::LoginNeeded { .. }))
    });
    let fsynced = within(QUICK, "write and fsync", move || {
        f.write_all(b"written while signed out").unwrap();
        errno(f.sync_all())
    });
    assert_eq!(fsynced, Some(libc::EACCES), "fsync while signed out");
    eventually(QUICK, "status to show the refused save", || {
        d.upload(m.path(), "saved.txt").is_some_and(|u| u.failed)
    });
    store_fake_tokens(&d.g, &d.state(), GRAPH_REMOTE);
    eventually(QUICK, "the save to reach the server after the login", || {
        d.drive().file_bytes("/saved.txt").as_deref() == Some(&b"written while signed out"[..])
    });
    let f = cli(&["unmount"], Some(m.path()));
    assert!(f.status.success(), "{}", f.both());
}

/// Several files through a slow link: unmount waits for all of them, and (not on a terminal) says
/// in plain lines how far each one is.
#[test]
fn unmount_waits_for_several_files_and_shows_their_progress() {
    let server = DavServer::start();
    let relay = Relay::start(dav_addr(&server), 2 << 20);
    let m = Mount::start(&relay.url_for(&server.url()), &["--uploads", "2"]);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}.bin"), random_bytes(i, 2 << 20)))
        .collect();
    for (name, data) in &files {
        let (p, d) = (m.path().join(name), data.clone());
        within(QUICK, "write", move || fs::write(p, d).unwrap());
    }
    let f = cli(&["unmount"], Some(m.path()));
    assert!(f.status.success(), "{}", f.both());
    for (name, data) in &files {
        let got = fs::read(server.root().join(name)).unwrap_or_default();
        assert!(
            &got == data,
            "{name}: {} bytes on the server, {} written",
            got.len(),
            data.len()
        );
    }
    // Not a terminal: plain lines with bytes sent.
    let said = f.both();
    assert!(said.contains("sending f") && said.contains(" of 2.0 MiB"), "{said}");
}

/// `cloudmount status --watch DIR` (not on a terminal) prints, per file, the bytes sent, the rate
/// and the time left while an upload runs through a slow link.
#[test]
fn status_watch_shows_rate_and_time_left() {
    use std::io::BufRead;
    let server = DavServer::start();
    let relay = Relay::start(dav_addr(&server), 512 << 10);
    let m = Mount::start(&relay.url_for(&server.url()), &[]);
    let data = random_bytes(9, 6 << 20);
    let p = m.path().join("slow.bin");
    within(QUICK, "write and close", move || fs::write(p, data).unwrap());
    let mut child = Command::new(cloudmount_bin())
        .args(["status", "--watch"])
        .arg(m.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let end = std::time::Instant::now() + QUICK;
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.contains("slow.bin") && line.contains("/s, ") && line.contains(" left") => {
                break Some(line)
            }
            Ok(line) => seen.push(line),
            Err(_) if std::time::Instant::now() > end => break None,
            Err(_) => {}
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no line with a rate and time left: {seen:?}"));
    assert!(line.contains(" of 6.0 MiB"), "{line}");
    let f = cli(&["unmount"], Some(m.path()));
    assert!(f.status.success(), "{}", f.both());
}
