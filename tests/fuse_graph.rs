//! OneDrive through real FUSE mounts of the `cloudmount` binary, against the fake Graph and
//! identity server (`crates/fake-graph`) running in this process.
//!
//! Tokens come from the fake (`issue_tokens`) written through the token store API, or from a real
//! `cloudmount login onedrive` run where the sign-in itself is under test. Every wait polls a
//! condition with a generous bound (a loaded 2-core box, a debug build); nothing sleeps blindly
//! except where time itself is the subject (a download URL that must outlive its TTL).

#[macro_use]
mod common;

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use cloudmount::auth::{AuthState, Flow, OAuthConfig, Secret, StoredTokens, TokenStore};
use cloudmount::cli::state::MountStatus;
use common::files::{assert_same_bytes, random_bytes};
use common::mount::{cloudmount_bin, errno, eventually, run, run_ok, within, Mount, MountPoint};
use fake_graph::{FakeGraph, FakeGraphConfig, RouteClass, Scope};

const MIB: u64 = 1 << 20;
/// Bound for listing, stat'ing or reading small files.
const QUICK: Duration = Duration::from_secs(60);
/// Bound for reading 100 MiB through a debug build on a loaded 2-core box.
const BULK: Duration = Duration::from_secs(300);
const REMOTE: &str = "work";

/// A fake Graph server plus a config file and a state directory naming it.
struct Fixture {
    g: FakeGraph,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(cfg: FakeGraphConfig) -> Fixture {
        let g = FakeGraph::spawn(cfg).expect("start the fake Graph server");
        let dir = tempfile::tempdir().expect("temp dir");
        Fixture { g, dir }
    }

    fn default() -> Fixture {
        Fixture::new(FakeGraphConfig::default())
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Adds `[remotes.NAME]` of type onedrive pointing at the fake, with `extra` TOML lines.
    fn remote(&self, name: &str, extra: &str) {
        self.remote_at(name, &self.g.graph_url(), extra)
    }

    /// [`Fixture::remote`] with another Graph URL.
    fn remote_at(&self, name: &str, graph_url: &str, extra: &str) {
        let mut text = fs::read_to_string(self.config()).unwrap_or_default();
        text.push_str(&format!(
            "[remotes.{name}]\ntype = \"onedrive\"\ngraph_url = \"{graph_url}\"\nlogin_url = \"{}\"\nclient_id = \"{}\"\n{extra}\n",
            self.g.login_url(),
            self.g.client_id()
        ));
        fs::write(self.config(), text).unwrap();
    }

    fn oauth(&self, name: &str) -> OAuthConfig {
        let mut c = OAuthConfig::new(name);
        c.login_url = self.g.login_url().parse().unwrap();
        c.graph_url = self.g.graph_url().parse().unwrap();
        c.client_id = self.g.client_id();
        c
    }

    fn store(&self, name: &str) -> TokenStore {
        TokenStore::new(&self.state(), name).unwrap()
    }

    /// Stores a delegated token pair issued by the fake, as `cloudmount login` would; returns the
    /// refresh token.
    fn sign_in(&self, name: &str) -> String {
        let cfg = self.oauth(name);
        let (at, rt) = self.g.issue_tokens();
        let t = StoredTokens::new(
            Flow::Device,
            &cfg.client_id,
            &cfg.endpoint("token"),
            &cfg.scopes,
            Secret::new(at),
            SystemTime::now(),
            self.g.config().token_lifetime,
            Some(Secret::new(rt.clone())),
        );
        self.store(name).save(&t).unwrap();
        rt
    }

    fn stored_refresh_token(&self, name: &str) -> String {
        let (t, _) = self.store(name).load().unwrap().expect("tokens stored");
        t.refresh_token.expect("a refresh token").expose().to_string()
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.config().to_str().unwrap().into(),
            "--state-dir".into(),
            self.state().to_str().unwrap().into(),
        ]
    }

    fn mount(&self, name: &str, extra: &[&str]) -> Mount {
        let flags = self.flags();
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Mount::start(name, &args)
    }

    /// `cloudmount mount NAME DIR --foreground` that must fail before mounting; returns its output.
    fn mount_fails(&self, name: &str, extra: &[&str]) -> String {
        let mp = MountPoint::new();
        let f = run(
            Command::new(cloudmount_bin())
                .arg("mount")
                .arg(name)
                .arg(mp.path())
                .arg("--foreground")
                .args(self.flags())
                .args(extra),
            QUICK,
        );
        assert!(!f.status.success(), "the mount should have failed:\n{}", f.both());
        assert!(!common::mount::is_mounted(mp.path()));
        f.both()
    }

    /// The status record of the mount at `dir` (`cloudmount status --json`).
    fn status(&self, dir: &Path) -> MountStatus {
        let f = run_ok(
            Command::new(cloudmount_bin())
                .args(["status", "--json", "--state-dir"])
                .arg(self.state())
                .arg(dir),
            QUICK,
        );
        let mut all: Vec<MountStatus> = serde_json::from_slice(&f.stdout).expect("status JSON");
        assert_eq!(all.len(), 1, "{}", f.both());
        all.remove(0)
    }

    fn status_text(&self, dir: &Path) -> String {
        run_ok(
            Command::new(cloudmount_bin())
                .args(["status", "--state-dir"])
                .arg(self.state())
                .arg(dir),
            QUICK,
        )
        .stdout_text()
    }
}

fn read_mounted(path: &Path) -> io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    within(QUICK, &format!("reading {}", p.display()), move || fs::read(&p))
}

fn list_mounted(path: &Path) -> io::Result<Vec<String>> {
    let p = path.to_path_buf();
    within(QUICK, &format!("listing {}", p.display()), move || {
        let mut names = fs::read_dir(&p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    })
}

/// Graph requests (bearer-authenticated) the server refused with 401.
fn graph_401s(g: &FakeGraph) -> usize {
    g.stats()
        .recent
        .iter()
        .filter(|r| r.class.is_graph() && r.status == 401)
        .count()
}

// ---------------------------------------------------------------------------------------------------------------
// Listing and reading
// ---------------------------------------------------------------------------------------------------------------

/// `ls -l` of 2,500 items: 13 pages of 200, every name and size shown; the mount is writable.
#[test]
fn ls_of_2500_items_follows_13_pages() {
    let fx = Fixture::default();
    for i in 0..2500u64 {
        fx.g.drive()
            .put_file(&format!("/many/f{i:04}.dat"), vec![b'x'; (i % 50) as usize])
            .unwrap();
    }
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &["--ttl", "120"]);
    fx.g.reset_stats();
    let f = run_ok(
        Command::new("ls")
            .args(["-ln"])
            .arg(m.path().join("many"))
            .env("LC_ALL", "C"),
        QUICK,
    );
    let text = f.stdout_text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("total ")).collect();
    assert_eq!(lines.len(), 2500, "`ls -l` shows {} entries", lines.len());
    for (i, l) in lines.iter().enumerate() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(cols[8], format!("f{i:04}.dat"), "{l}");
        assert_eq!(cols[4], (i % 50).to_string(), "{l}");
    }
    assert_eq!(fx.g.stats().count(RouteClass::Children), 13, "pages fetched");

    // Writable: a new file in the 2,500-item folder reaches the server (the writes themselves are
    // tested in fuse_graph_write.rs).
    let p = m.path().join("many/new.txt");
    within(QUICK, "create", move || fs::write(&p, b"written")).unwrap();
    assert!(!m.log().contains("mounting read-only"), "{}", m.log());
    eventually(QUICK, "the new file on the server", || {
        fx.g.drive()
            .file_bytes("/many/new.txt")
            .is_some_and(|b| &b[..] == b"written")
    });
    let st = fx.status(m.path());
    assert_eq!(st.auth, Some(AuthState::Ok));
    assert!(st.remote.contains("/drives/"), "{}", st.remote);
    let source = common::mount::mount_at(m.path()).expect("in mountinfo").source;
    assert_eq!(source, st.remote, "the mount's source is the drive's URL");
    assert!(fx.status_text(m.path()).contains("auth: signed in"));
    m.unmount();
}

/// A 100 MiB file reads back identical (`cmp` against a local copy).
#[test]
fn cmp_of_a_100_mib_file() {
    let fx = Fixture::default();
    let data = random_bytes(7, (100 * MIB) as usize);
    fx.g.drive().put_file("/big.bin", data.clone()).unwrap();
    let local = fx.dir.path().join("big.local");
    fs::write(&local, &data).unwrap();
    drop(data);
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &[]);
    run_ok(Command::new("cmp").arg(&local).arg(m.path().join("big.bin")), BULK);
    m.unmount();
}

/// A 4 KiB read at 90 MiB of a 100 MiB file fetches a block or two, not the file.
#[test]
fn a_4k_read_at_90_mib_fetches_only_a_few_blocks() {
    let fx = Fixture::default();
    let data = random_bytes(9, (100 * MIB) as usize);
    fx.g.drive().put_file("/big.bin", data.clone()).unwrap();
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &[]);
    fx.g.reset_stats();
    let p = m.path().join("big.bin");
    let got = within(QUICK, "pread at 90 MiB", move || {
        let f = fs::File::open(&p)?;
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, 90 * MIB)?;
        io::Result::Ok(buf)
    })
    .unwrap();
    assert_same_bytes(
        &got,
        &data[(90 * MIB) as usize..(90 * MIB) as usize + 4096],
        "4 KiB at 90 MiB",
    );
    let served = fx.g.stats().download_bytes;
    assert!(served <= 4 * MIB, "the fake served {served} bytes for a 4 KiB read");
    // Not `unmount()`: the kernel's readahead of the pages after the read may still hold the file
    // for a moment, which makes a polite unmount EBUSY; the drop escalates.
    drop(m);
}

/// Download URLs that expire in the middle of a long sequential read are replaced without the
/// reader noticing.
#[test]
fn download_url_expiring_mid_read_is_invisible() {
    let fx = Fixture::new(FakeGraphConfig {
        download_url_ttl: Duration::from_secs(2),
        ..Default::default()
    });
    let data = random_bytes(11, (24 * MIB) as usize);
    fx.g.drive().put_file("/long.bin", data.clone()).unwrap();
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    // Small prefetch, so each part needs downloads of its own.
    let m = fx.mount(REMOTE, &["--prefetch", "1", "--ttl", "120"]);
    let p = m.path().join("long.bin");
    let file = fs::File::open(&p).unwrap();
    let part = 6 * MIB;
    let mut got = Vec::new();
    for i in 0..4u64 {
        if i > 0 {
            // The URL the last part used must be past its 2 s life.
            thread::sleep(Duration::from_millis(2500));
        }
        let f = file.try_clone().unwrap();
        let chunk = within(QUICK, "reading a part", move || {
            let mut buf = vec![0u8; part as usize];
            f.read_exact_at(&mut buf, i * part).map(|_| buf)
        })
        .expect("every part reads without an error");
        got.extend_from_slice(&chunk);
    }
    assert_same_bytes(&got, &data, "the file read in four slow parts");
    let expired =
        fx.g.stats()
            .recent_of(RouteClass::Download)
            .iter()
            .filter(|r| r.status == 401)
            .count();
    assert!(expired >= 1, "no download URL expired during the read");
    drop(file);
    m.unmount();
}

/// A 429 with Retry-After: no Graph request before the pause ends, and the reader never sees it.
#[test]
fn throttling_is_honoured_and_hidden() {
    let fx = Fixture::default();
    fx.g.drive().put_file("/d/a.txt", &b"alpha"[..]).unwrap();
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &[]);
    fx.g.reset_stats();
    fx.g.faults().throttle_next(Scope::Graph, 1, 429, Some(2));
    let started = Instant::now();
    assert_eq!(list_mounted(&m.path().join("d")).unwrap(), vec!["a.txt"]);
    assert_eq!(read_mounted(&m.path().join("d/a.txt")).unwrap(), b"alpha");
    let s = fx.g.stats();
    assert_eq!(s.throttled_responses, 1);
    assert!(s.pause_violations.is_empty(), "{:?}", s.pause_violations);
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    m.unmount();
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------------------------

/// 5 s access tokens: a mount that keeps working for 13 s renews them before they expire (no
/// Graph request is refused for an expired token) and never fails a read.
#[test]
fn tokens_are_renewed_before_they_expire() {
    let fx = Fixture::new(FakeGraphConfig {
        token_lifetime: Duration::from_secs(5),
        ..Default::default()
    });
    for i in 0..5 {
        fx.g.drive()
            .put_file(&format!("/d/f{i}.txt"), format!("file {i}"))
            .unwrap();
    }
    let first = fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &["--ttl", "0.5"]);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(13) {
        let i = rounds % 5;
        assert_eq!(list_mounted(&m.path().join("d")).unwrap().len(), 5);
        assert_eq!(
            read_mounted(&m.path().join(format!("d/f{i}.txt"))).unwrap(),
            format!("file {i}").as_bytes()
        );
        rounds += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let renewals = fx.g.stats().count(RouteClass::Token);
    assert!(renewals >= 2, "{renewals} token requests in 13 s of 5 s tokens");
    assert_eq!(graph_401s(&fx.g), 0, "a Graph request went out with an expired token");
    assert_ne!(
        fx.stored_refresh_token(REMOTE),
        first,
        "the rotated refresh token is on disk"
    );
    m.unmount();
}

/// The refresh token rotated during one mount is the one the next mount uses: the old one is
/// not on disk (and the fake refuses it: strict rotation).
#[test]
fn rotated_refresh_token_survives_a_restart() {
    let fx = Fixture::new(FakeGraphConfig {
        token_lifetime: Duration::from_secs(5),
        ..Default::default()
    });
    fx.g.drive().put_file("/a.txt", &b"one"[..]).unwrap();
    let first = fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &[]);
    assert_eq!(read_mounted(&m.path().join("a.txt")).unwrap(), b"one");
    eventually(QUICK, "a renewal to rotate the refresh token on disk", || {
        fx.stored_refresh_token(REMOTE) != first
    });
    m.unmount();
    let rotated = fx.stored_refresh_token(REMOTE);
    assert_ne!(rotated, first);

    // The next mount cannot live on the stored access token: it must redeem the rotated one.
    fx.g.faults().expire_access_tokens();
    fx.g.reset_stats();
    fx.g.drive().put_file("/b.txt", &b"two"[..]).unwrap();
    let m = fx.mount(REMOTE, &[]);
    assert_eq!(read_mounted(&m.path().join("b.txt")).unwrap(), b"two");
    assert!(fx.g.stats().count(RouteClass::Token) >= 1);
    eventually(QUICK, "the next rotation on disk", || {
        let now = fx.stored_refresh_token(REMOTE);
        now != rotated && now != first
    });
    m.unmount();
}

/// App-only sign-in (client credentials) with `drive_user`: no stored tokens needed.
#[test]
fn app_only_mount_of_a_users_drive() {
    let fx = Fixture::default();
    fx.g.drive().put_file("/app.txt", &b"for the app"[..]).unwrap();
    let secret = fx.dir.path().join("secret");
    fs::write(&secret, fx.g.client_secret()).unwrap();
    let upn = fx.g.config().user_principal_name;
    fx.remote(
        "app",
        &format!(
            "auth = \"client_credentials\"\ntenant = \"{}\"\nclient_secret_file = \"{}\"\ndrive_user = \"{upn}\"",
            fx.g.tenant_id(),
            secret.display()
        ),
    );
    let m = fx.mount("app", &[]);
    assert_eq!(read_mounted(&m.path().join("app.txt")).unwrap(), b"for the app");
    assert!(fx.g.stats().count(RouteClass::Token) >= 1);
    m.unmount();
}

/// A SharePoint library named in the config, and the site's default library from the command line.
#[test]
fn sharepoint_library_mounts() {
    let fx = Fixture::default();
    let archive = fx.g.library("/sites/eng", "Archive").unwrap();
    archive.put_file("/old/report.txt", &b"archived"[..]).unwrap();
    let docs = fx.g.library("/sites/eng", "Documents").unwrap();
    docs.put_file("/spec.txt", &b"documents"[..]).unwrap();
    fx.sign_in("eng");
    fx.remote(
        "eng",
        "sharepoint = \"https://contoso.sharepoint.com/sites/eng\"\nlibrary = \"Archive\"",
    );
    let m = fx.mount("eng", &[]);
    assert_eq!(read_mounted(&m.path().join("old/report.txt")).unwrap(), b"archived");
    m.unmount();

    let m = fx.mount("eng", &["--sharepoint", "https://contoso.sharepoint.com/sites/eng"]);
    assert_eq!(list_mounted(m.path()).unwrap(), vec!["spec.txt"]);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------------------------
// Sign-in problems
// ---------------------------------------------------------------------------------------------------------------

/// Mount-time failures exit non-zero and say what to do.
#[test]
fn mount_time_errors_are_clear() {
    let fx = Fixture::default();
    fx.remote(REMOTE, "");
    let out = fx.mount_fails(REMOTE, &[]);
    assert!(out.contains("not signed in"), "{out}");
    assert!(
        out.contains(&format!("run `cloudmount login onedrive {REMOTE} --config")),
        "{out}"
    );

    fx.sign_in(REMOTE);
    let out = fx.mount_fails(REMOTE, &["--drive-id", "b!nosuchdrive"]);
    assert!(out.contains("drive b!nosuchdrive was not found"), "{out}");

    let out = fx.mount_fails(REMOTE, &["--user", "alice"]);
    assert!(out.contains("--drive-user"), "{out}");

    // Revoked grant, expired access token: a sign-in is needed.
    fx.g.faults().revoke_refresh_tokens(700082);
    fx.g.faults().expire_access_tokens();
    let out = fx.mount_fails(REMOTE, &[]);
    assert!(out.contains("needs a new sign-in"), "{out}");
    assert!(out.contains(&format!("cloudmount login onedrive {REMOTE}")), "{out}");

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fx.remote_at("down", &format!("http://127.0.0.1:{port}/v1.0"), "");
    fx.sign_in("down");
    let out = fx.mount_fails("down", &["--timeout", "3"]);
    assert!(out.contains("cannot reach"), "{out}");
}

/// The grant is revoked while mounted: status says a sign-in is needed with the exact command,
/// uncached folders give EACCES while what was read stays readable, and a `cloudmount login`
/// brings the same mount back.
#[test]
fn login_needed_then_login_again_without_remounting() {
    let fx = Fixture::new(FakeGraphConfig {
        token_lifetime: Duration::from_secs(5),
        device_code_interval: 1,
        ..Default::default()
    });
    fx.g.drive().put_file("/seen.txt", &b"read before"[..]).unwrap();
    fx.g.drive().put_file("/unseen/b.txt", &b"not yet"[..]).unwrap();
    fx.sign_in(REMOTE);
    fx.remote(REMOTE, "");
    let m = fx.mount(REMOTE, &["--ttl", "1"]);
    // The root listed and a file read: what the mount then knows does not depend on what the
    // kernel keeps (it may forget inodes under memory pressure).
    assert_eq!(list_mounted(m.path()).unwrap(), vec!["seen.txt", "unseen"]);
    assert_eq!(read_mounted(&m.path().join("seen.txt")).unwrap(), b"read before");

    fx.g.faults().revoke_refresh_tokens(700082);
    let login = format!(
        "cloudmount login onedrive {REMOTE} --config {} --state-dir {}",
        fx.config().display(),
        fx.state().display()
    );
    eventually(QUICK, "status to say a sign-in is needed", || {
        matches!(fx.status(m.path()).auth, Some(AuthState::LoginNeeded { .. }))
    });
    match fx.status(m.path()).auth {
        Some(AuthState::LoginNeeded { command, .. }) => assert_eq!(command, login),
        other => panic!("{other:?}"),
    }
    let text = fx.status_text(m.path());
    assert!(text.contains("sign-in needed") && text.contains(&login), "{text}");

    assert_eq!(errno(list_mounted(&m.path().join("unseen"))), Some(libc::EACCES));
    assert_eq!(read_mounted(&m.path().join("seen.txt")).unwrap(), b"read before");
    assert_eq!(list_mounted(m.path()).unwrap(), vec!["seen.txt", "unseen"]);

    // Sign in again with the real command, approving the device code as the user would.
    let out = fx.dir.path().join("login.out");
    let mut child = Command::new(cloudmount_bin())
        .args(["login", "onedrive", REMOTE])
        .args(fx.flags())
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(fx.dir.path().join("login.err")).unwrap())
        .spawn()
        .unwrap();
    let said = || {
        format!(
            "{}{}",
            fs::read_to_string(&out).unwrap_or_default(),
            fs::read_to_string(fx.dir.path().join("login.err")).unwrap_or_default()
        )
    };
    eventually(QUICK, "the login to show a device code", || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("login exited early with {st}: {}", said());
        }
        !fx.g.pending_device_codes().is_empty()
    });
    assert_eq!(fx.g.approve_all_device_codes(), 1);
    let status = common::mount::wait_deadline(&mut child, QUICK).expect("login finishes");
    assert!(status.success(), "login failed: {status}: {}", said());

    eventually(QUICK, "the mount to pick up the new sign-in", || {
        fx.status(m.path()).auth == Some(AuthState::Ok)
    });
    assert_eq!(list_mounted(&m.path().join("unseen")).unwrap(), vec!["b.txt"]);
    assert_eq!(read_mounted(&m.path().join("unseen/b.txt")).unwrap(), b"not yet");
    m.unmount();
}
