//! A real FUSE mount of the fake Graph drive (`crates/fake-graph`, running in the test process):
//! [`GraphDrive`] starts the fake, signs the remote in (tokens issued by the fake, stored as
//! `cloudmount login` would), writes a config naming it and mounts it with a state directory of
//! its own, so that a second mount (or a restarted daemon) finds the same upload journal.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cloudmount::auth::{Flow, OAuthConfig, Secret, StoredTokens, TokenStore};
use cloudmount::cli::state::{MountStatus, UploadLine};
use fake_graph::{DriveHandle, FakeGraph, FakeGraphConfig};

use super::mount::{cloudmount_bin, run_ok, Mount};

/// The remote name used in the config.
pub const GRAPH_REMOTE: &str = "work";

/// A fake Graph server with a signed-in `onedrive` remote named [`GRAPH_REMOTE`] pointing at it.
pub struct GraphDrive {
    pub g: FakeGraph,
    pub dir: tempfile::TempDir,
}

impl GraphDrive {
    pub fn start() -> GraphDrive {
        GraphDrive::with(FakeGraphConfig::default())
    }

    pub fn with(cfg: FakeGraphConfig) -> GraphDrive {
        let g = FakeGraph::spawn(cfg).expect("start the fake Graph server");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = GraphDrive { g, dir };
        fs::write(
            d.config(),
            format!(
                "[remotes.{GRAPH_REMOTE}]\ntype = \"onedrive\"\ngraph_url = \"{}\"\nlogin_url = \"{}\"\nclient_id = \"{}\"\n",
                d.g.graph_url(),
                d.g.login_url(),
                d.g.client_id()
            ),
        )
        .unwrap();
        d.sign_in();
        d
    }

    /// The user's drive on the server side.
    pub fn drive(&self) -> DriveHandle {
        self.g.drive()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn sign_in(&self) {
        store_fake_tokens(&self.g, &self.state(), GRAPH_REMOTE);
    }

    /// `cloudmount mount work DIR --config … --state-dir … EXTRA…`, live when it returns.
    pub fn mount(&self, extra: &[&str]) -> Mount {
        let (config, state) = (self.config(), self.state());
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Mount::start(GRAPH_REMOTE, &args)
    }

    /// The status record of the mount at `dir` (`cloudmount status --json`).
    pub fn status(&self, dir: &Path) -> MountStatus {
        let f = run_ok(
            Command::new(cloudmount_bin())
                .args(["status", "--json", "--state-dir"])
                .arg(self.state())
                .arg(dir),
            Duration::from_secs(60),
        );
        let mut all: Vec<MountStatus> = serde_json::from_slice(&f.stdout).expect("status JSON");
        assert_eq!(all.len(), 1, "{}", f.both());
        all.remove(0)
    }

    /// The upload of `name` the mount at `dir` shows, if any.
    pub fn upload(&self, dir: &Path, name: &str) -> Option<UploadLine> {
        self.status(dir).uploads.into_iter().find(|u| u.name == name)
    }
}

/// Stores a delegated token pair issued by `g` for `remote` in the token store under `state`, as
/// `cloudmount login onedrive` would.
pub fn store_fake_tokens(g: &FakeGraph, state: &Path, remote: &str) {
    let mut cfg = OAuthConfig::new(remote);
    cfg.login_url = g.login_url().parse().unwrap();
    cfg.graph_url = g.graph_url().parse().unwrap();
    cfg.client_id = g.client_id();
    let (at, rt) = g.issue_tokens();
    let t = StoredTokens::new(
        Flow::Device,
        &cfg.client_id,
        &cfg.endpoint("token"),
        &cfg.scopes,
        Secret::new(at),
        SystemTime::now(),
        g.config().token_lifetime,
        Some(Secret::new(rt)),
    );
    TokenStore::new(state, remote).unwrap().save(&t).unwrap();
}
