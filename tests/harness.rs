//! Tests of the test harness itself (tests/common): the Apache launcher, the bounded runners, mountinfo parsing,
//! and the escape hatch that frees a wedged FUSE mount. If these break, the FUSE tests could hang CI or pass
//! without testing anything.

mod common;

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::apache::ApacheServer;
use common::files::{put_file, random_bytes};
use common::mount::{self, force_unmount, is_mounted, run, run_ok, within, MountPoint};

const LIMIT: Duration = Duration::from_secs(30);

/// `curl` with a bounded run; returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let f = run_ok(
        Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
            .args(args),
        LIMIT,
    );
    let split = f.stdout.iter().rposition(|&b| b == b'\n').expect("curl -w output");
    let code = String::from_utf8_lossy(&f.stdout[split + 1..])
        .trim()
        .parse()
        .expect("http code");
    (code, f.stdout[..split].to_vec())
}

#[test]
fn apache_serves_files_put_there_as_root_and_stops_on_drop() {
    let server = ApacheServer::start();
    let data = random_bytes(7, 100_000);
    put_file(server.root(), "some dir/a file #1.bin", &data);

    let url = format!("{}some%20dir/a%20file%20%231.bin", server.url());
    let (code, body) = curl(&[&url]);
    assert_eq!(code, 200, "GET {url}: {}", server.error_log());
    assert!(body == data, "GET {url} returned other bytes");
    let (code, body) = curl(&["-r", "10-19", &url]);
    assert_eq!((code, body.as_slice()), (206, &data[10..20]), "range GET");
    let (code, body) = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("{}some%20dir/", server.url()),
    ]);
    assert_eq!(code, 207);
    assert!(
        String::from_utf8_lossy(&body).contains("a%20file%20%231.bin"),
        "PROPFIND lists the file"
    );

    let (port, pid) = (server.port(), server.pid().expect("apache pid"));
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "Apache (pid {pid}) still runs after drop"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
}

#[test]
fn apache_with_auth_demands_the_password() {
    let server = ApacheServer::start_with_auth("alice", "secret");
    let url = server.url();
    assert_eq!(curl(&["-X", "PROPFIND", "-H", "Depth: 0", &url]).0, 401);
    assert_eq!(
        curl(&["-u", "alice:wrong", "-X", "PROPFIND", "-H", "Depth: 0", &url]).0,
        401
    );
    assert_eq!(
        curl(&["-u", "alice:secret", "-X", "PROPFIND", "-H", "Depth: 0", &url]).0,
        207
    );
}

#[test]
fn two_apache_servers_run_side_by_side() {
    let a = ApacheServer::start();
    let b = ApacheServer::start();
    assert_ne!(a.url(), b.url());
    put_file(a.root(), "only-in-a.txt", b"a");
    assert_eq!(curl(&[&format!("{}only-in-a.txt", a.url())]).0, 200);
    assert_eq!(curl(&[&format!("{}only-in-a.txt", b.url())]).0, 404);
}

#[test]
#[should_panic(expected = "did not finish within")]
fn run_kills_a_command_that_overstays() {
    run(Command::new("sleep").arg("60"), Duration::from_millis(300));
}

#[test]
fn run_returns_output_and_status() {
    let f = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), LIMIT);
    assert_eq!(f.status.code(), Some(3));
    assert_eq!(f.stdout_text(), "out\n");
    assert_eq!(f.stderr, "err\n");
    assert!(!f.pipes_left_open);
}

#[test]
fn run_notices_a_background_process_that_keeps_the_pipes_open() {
    let f = run(Command::new("sh").args(["-c", "sleep 20 & exit 0"]), LIMIT);
    assert!(f.status.success());
    assert!(
        f.pipes_left_open,
        "the background sleep holds stdout; a daemon doing that would hang `$(...)`"
    );
    let f = run(
        Command::new("sh").args(["-c", "sleep 20 >/dev/null 2>&1 & exit 0"]),
        LIMIT,
    );
    assert!(!f.pipes_left_open);
}

#[test]
#[should_panic(expected = "did not finish within")]
fn within_reports_a_call_that_never_returns() {
    within(Duration::from_millis(200), "a sleepy call", || {
        std::thread::sleep(Duration::from_secs(10))
    });
}

#[test]
#[should_panic(expected = "inner failure")]
fn within_passes_panics_on() {
    within(LIMIT, "a failing call", || panic!("inner failure"));
}

#[test]
fn mountinfo_lines_are_parsed_and_unescaped() {
    let line = "97 29 0:52 / /tmp/a\\040b\\134c rw,nosuid,nodev,relatime shared:53 - fuse.cloudmount \
                http://h/x\\040y rw,user_id=0,group_id=0";
    let m = mount::parse_mountinfo_line(line).expect("parses");
    assert_eq!(m.mount_point, Path::new("/tmp/a b\\c"));
    assert_eq!((m.major, m.minor, m.fuse_connection()), (0, 52, 52));
    assert_eq!(m.fstype, "fuse.cloudmount");
    assert_eq!(m.source, "http://h/x y");
    assert_eq!(mount::parse_mountinfo_line("garbage"), None);
    assert!(
        mount::mounts().iter().any(|m| m.mount_point == Path::new("/")),
        "/ is listed"
    );
}

#[test]
#[should_panic(expected = "before the mount was live")]
fn mount_start_reports_a_daemon_that_gives_up() {
    // Nothing listens on port 1, so `cloudmount mount` must fail instead of mounting.
    common::mount::Mount::start("http://127.0.0.1:1/", &["--timeout", "3"]);
}

/// A FUSE filesystem that never answers lookups or getattr: the situation a buggy daemon leaves CI in.
struct Wedged {
    held_attr: Mutex<Vec<fuser::ReplyAttr>>,
    held_entry: Mutex<Vec<fuser::ReplyEntry>>,
}

impl fuser::Filesystem for Wedged {
    fn lookup(&self, _req: &fuser::Request, _parent: fuser::INodeNo, _name: &OsStr, reply: fuser::ReplyEntry) {
        self.held_entry.lock().unwrap().push(reply);
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        self.held_attr.lock().unwrap().push(reply);
    }
}

#[test]
fn force_unmount_frees_a_wedged_fuse_mount() {
    mount::require_fuse();
    let mp = MountPoint::new();
    let fs = Wedged {
        held_attr: Mutex::new(Vec::new()),
        held_entry: Mutex::new(Vec::new()),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("wedged".into()), fuser::MountOption::RO];
    let session = fuser::spawn_mount(fs, mp.path(), &config).expect("mount the wedged test filesystem");
    assert!(is_mounted(mp.path()));

    // A stat that will never be answered, on a thread we can give up on.
    let target = mp.path().join("anything");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::fs::metadata(target).map(|_| ())));
    assert!(
        rx.recv_timeout(Duration::from_secs(1)).is_err(),
        "the wedged filesystem answered"
    );

    let started = Instant::now();
    assert!(
        force_unmount(mp.path()),
        "force_unmount left {} mounted",
        mp.path().display()
    );
    let stuck = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the stuck stat was not released");
    assert!(stuck.is_err(), "the stuck stat cannot have succeeded");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The session's thread has seen its device close; dropping it must not block either.
    within(LIMIT, "dropping the fuser session", move || drop(session));
}

#[test]
fn relay_forwards_at_its_rate_and_can_be_cut() {
    use std::io::{Read, Write};
    // An echo-less sink server that counts bytes, behind a 256 KiB/s relay.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut n = 0usize;
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        s.write_all(b"done").unwrap();
        n
    });
    let relay = common::relay::Relay::start(addr, 256 * 1024);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
    let t0 = std::time::Instant::now();
    c.write_all(&vec![7u8; 256 * 1024]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(got.join().unwrap(), 256 * 1024, "every byte arrives");
    assert_eq!(reply, b"done");
    // 256 KiB at 256 KiB/s, with a burst allowance of 1/20 s: well over half a second (a floor, never a ceiling).
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(600),
        "throttled: {:?}",
        t0.elapsed()
    );
    relay.cut();
    let mut c2 = std::net::TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
    c2.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(c2.read(&mut b), Ok(0) | Err(_)), "a cut relay refuses");
}
