//! fsx (crates.io `fsx`, asomers/fsx-rs) on a real mount: 10,000 random reads, writes, mmap reads
//! and writes, truncates, closes and reopens (each forcing an upload and a re-read) and fsyncs,
//! every read checked against fsx's own model of the file. Against both servers.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::apache::ApacheServer;
use common::dav::DavServer;
use common::mount::{run, Mount};
use common::servers::TestServer;

fn fsx_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/bin/fsx");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        p.display()
    );
    p
}

fn fsx_10000_operations(server: &dyn TestServer) {
    let m = Mount::start(&server.url(), &[]);
    std::fs::create_dir(m.path().join("fsx")).unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fsx-remote.toml");
    let f = run(
        Command::new(fsx_bin())
            .arg("-f")
            .arg(&config)
            .args(["-N", "10000", "-S", "42", "-P"])
            .arg(artifacts.path())
            .arg(m.path().join("fsx/testfile")),
        Duration::from_secs(600),
    );
    assert!(
        f.status.success() && f.both().contains("All operations completed A-OK!"),
        "fsx failed: {}\n{}",
        f.status,
        f.both()
    );
    m.unmount();
}

on_both_servers!(dav_server, apache, start(), [fsx_10000_operations]);
