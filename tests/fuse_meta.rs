//! Modes set through the mount are the ones the kernel enforces (`default_permissions`) for other
//! users of an `--allow-other` mount.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dav::DavServer;
use common::mount::{run, run_ok, Mount};

const QUICK: Duration = Duration::from_secs(60);
/// A user other than root that every Debian system has.
const OTHER: &str = "nobody";

fn can_read_as(user: &str, path: &Path) -> bool {
    run(Command::new("runuser").args(["-u", user, "--", "cat"]).arg(path), QUICK)
        .status
        .success()
}

#[test]
fn allow_other_enforces_the_modes_chmod_sets() {
    let server = DavServer::start();
    let m = Mount::start(&server.url(), &["--allow-other"]);
    let f = m.path().join("f.txt");
    fs::write(&f, "shared\n").unwrap();
    assert!(can_read_as(OTHER, &f), "a 0644 file is readable by others");
    run_ok(Command::new("chmod").arg("0600").arg(&f), QUICK);
    assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o7777, 0o600);
    assert!(!can_read_as(OTHER, &f), "chmod 0600 keeps others out");
    // chown to the other user lets them in again (root may chown).
    run_ok(Command::new("chown").arg(OTHER).arg(&f), QUICK);
    assert!(can_read_as(OTHER, &f), "the new owner reads a 0600 file");
    m.unmount();
}
