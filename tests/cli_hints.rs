//! Every command the CLI prints as a hint works as printed (issue 21): the hints are taken from
//! the output and run through `sh -c` with the binary under test first on PATH, and must exit 0.
//! - `cloudmount login onedrive NAME --config C --state-dir S` ends with "Mount it with: …";
//! - a mount of a remote that is not signed in says which `cloudmount login …` to run;
//! - a second mount of a mounted remote says what to add (its own --state-dir).

#[macro_use]
mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dav::DavServer;
use common::mount::{cloudmount_bin, is_mounted, run, Mount, MountPoint};
use fake_graph::{FakeGraph, FakeGraphConfig};

const QUICK: Duration = Duration::from_secs(60);

/// PATH with the binary under test first, as an installed `cloudmount` would be.
fn path_with_binary() -> String {
    let dir = Path::new(cloudmount_bin()).parent().unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// Run `cmd` (a shell command line), approving any device code it prints on the fake `g`.
/// Returns (success, stdout, stderr).
fn sh_approving(g: &FakeGraph, cmd: &str) -> (bool, String, String) {
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .env("PATH", path_with_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut printed, mut line) = (String::new(), String::new());
    while out.read_line(&mut line).unwrap() > 0 {
        printed.push_str(&line);
        if let Some(rest) = line.split("enter the code ").nth(1) {
            let code = rest.split_whitespace().next().unwrap();
            assert!(g.approve_device_code(code), "{printed}");
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), printed, err)
}

fn quote(p: &Path) -> String {
    cloudmount::cli::shell_quote(&p.to_string_lossy())
}

/// Both hints of the OneDrive path, with a config and state folder of their own (paths with a
/// space, so quoting counts): the mount error's login command, then login's mount command.
#[test]
fn login_and_mount_hints_work_as_printed() {
    let g = FakeGraph::spawn(FakeGraphConfig {
        device_code_interval: 1,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("my config.toml");
    let state = dir.path().join("my state");
    std::fs::write(
        &config,
        format!(
            "[remotes.demo]\ntype = \"onedrive\"\ngraph_url = \"{}\"\nlogin_url = \"{}\"\nclient_id = \"{}\"\n",
            g.graph_url(),
            g.login_url(),
            g.client_id()
        ),
    )
    .unwrap();
    let mp = MountPoint::new();

    // Not signed in yet: the mount says which login to run.
    let f = run(
        Command::new(cloudmount_bin())
            .args(["mount", "demo"])
            .arg(mp.path())
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state),
        QUICK,
    );
    assert!(!f.status.success());
    let said = f.both();
    let login = said
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in backquotes: {said}"));
    assert!(login.starts_with("cloudmount login onedrive demo"), "{said}");
    let (ok, out, err) = sh_approving(&g, login);
    assert!(ok, "`{login}` failed:\n{out}{err}");

    // Login's own hint mounts the remote.
    let hint = out
        .lines()
        .find_map(|l| l.strip_prefix("Mount it with: "))
        .unwrap_or_else(|| panic!("no mount hint: {out}"));
    assert!(hint.contains("DIR"), "{hint}");
    let mount = hint.replace("DIR", &quote(mp.path()));
    let (ok, o, e) = sh_approving(&g, &mount);
    assert!(ok, "`{mount}` failed:\n{o}{e}");
    assert!(is_mounted(mp.path()), "`{mount}` exited 0 but nothing is mounted");
    let f = run(Command::new(cloudmount_bin()).arg("unmount").arg(mp.path()), QUICK);
    assert!(f.status.success(), "{}", f.both());
}

/// A second mount of a mounted remote fails saying what to add; with that added it mounts.
#[test]
fn a_second_mount_of_one_remote_says_what_to_add() {
    let server = DavServer::start();
    let shared = tempfile::tempdir().unwrap();
    let mp = MountPoint::new();
    let again = |extra: &[&str]| {
        run(
            Command::new(cloudmount_bin())
                .args(["mount", &server.url()])
                .arg(mp.path())
                .arg("--state-dir")
                .arg(shared.path())
                .args(extra),
            QUICK,
        )
    };
    // Two mounts sharing one state folder: the second is refused with the fix in words.
    let second = Mount::start(&server.url(), &["--state-dir", shared.path().to_str().unwrap()]);
    let f = again(&[]);
    assert!(!f.status.success(), "{}", f.both());
    let said = f.both();
    assert!(
        said.contains("--state-dir DIR") && said.contains("state_dir=DIR"),
        "{said}"
    );
    // What it says to add works.
    let own = tempfile::tempdir().unwrap();
    let f = run(
        Command::new(cloudmount_bin())
            .args(["mount", &server.url()])
            .arg(mp.path())
            .arg("--state-dir")
            .arg(own.path()),
        QUICK,
    );
    assert!(f.status.success(), "{}", f.both());
    assert!(is_mounted(mp.path()));
    let f = run(Command::new(cloudmount_bin()).arg("unmount").arg(mp.path()), QUICK);
    assert!(f.status.success(), "{}", f.both());
    second.unmount();
}
