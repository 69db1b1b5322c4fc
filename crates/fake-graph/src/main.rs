//! `fake-graph`: run the fake Microsoft Graph server standalone (demos, manual testing, shell-level tests).

use clap::Parser;
use fake_graph::{FakeGraph, FakeGraphConfig, Flavour};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fake Microsoft Graph (OneDrive/SharePoint files + identity platform) server.
#[derive(Parser, Debug)]
#[command(name = "fake-graph", version)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Drive flavour: business (OneDrive for Business + SharePoint sites) or personal.
    #[arg(long, default_value = "business")]
    flavour: Flavour,
    /// Populate the user's drive from this local folder (recursively; symlinks are skipped).
    #[arg(long)]
    seed_dir: Option<PathBuf>,
    /// Access token lifetime in seconds (also `expires_in`).
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    /// Lifetime of download URLs in seconds.
    #[arg(long, default_value_t = 3600)]
    download_url_ttl: u64,
    /// Default page size of children listings and delta pages.
    #[arg(long, default_value_t = 200)]
    page_size: usize,
    /// Device code polling interval returned to clients, seconds.
    #[arg(long, default_value_t = 5)]
    device_code_interval: u64,
    /// Accept misaligned fragments and Authorization headers on upload URLs (A8/A9 lenient modes).
    #[arg(long)]
    lenient: bool,
    /// Approve device codes automatically after this many seconds (default: approve on /devicelogin).
    #[arg(long)]
    auto_approve_after: Option<u64>,
    /// Write the process id to this file once the server listens and is seeded (removed on exit),
    /// so scripts can run it in the background, wait for it and stop it.
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn seed(g: &FakeGraph, root: &Path, rel: &str) -> std::io::Result<usize> {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel.trim_start_matches('/')))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        let ft = e.file_type()?;
        if ft.is_dir() {
            g.drive().mkdir(&path).map_err(std::io::Error::other)?;
            n += seed(g, root, &path)?;
        } else if ft.is_file() {
            let data = std::fs::read(e.path())?;
            let mtime = e.metadata()?.modified().ok();
            g.drive()
                .put_file_with_mtime(&path, data, mtime)
                .map_err(std::io::Error::other)?;
            n += 1;
        }
    }
    Ok(n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut cfg = FakeGraphConfig::for_flavour(args.flavour);
    cfg.addr = args.addr;
    cfg.token_lifetime = Duration::from_secs(args.token_lifetime);
    cfg.download_url_ttl = Duration::from_secs(args.download_url_ttl);
    cfg.page_size = args.page_size;
    cfg.delta_page_size = args.page_size;
    cfg.device_code_interval = args.device_code_interval;
    if args.lenient {
        cfg.strict_fragment_alignment = false;
        cfg.strict_upload_auth = false;
    }
    let g = FakeGraph::try_start(cfg).await?;
    if let Some(dir) = &args.seed_dir {
        let n = seed(&g, dir, "")?;
        println!("seeded {n} files from {}", dir.display());
    }
    let (access, refresh) = g.issue_tokens();
    println!("fake-graph listening ({:?})", args.flavour);
    println!("graph_url     = {}", g.graph_url());
    println!("login_url     = {}", g.login_url());
    println!("token_url     = {}/{}/oauth2/v2.0/token", g.login_url(), g.tenant_id());
    println!("devicelogin   = {}/devicelogin", g.base_url());
    println!("tenant_id     = {}", g.tenant_id());
    println!("client_id     = {}", g.client_id());
    println!("client_secret = {}", g.client_secret());
    for d in g.drives() {
        let site = d
            .site_path
            .map(|p| format!(" site={}", if p.is_empty() { "/" } else { &p }))
            .unwrap_or_default();
        println!("drive         = {} ({}, {}){site}", d.id, d.name, d.drive_type);
    }
    println!("refresh_token = {refresh}");
    println!("access_token  = {access}");
    if let Some(p) = &args.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    let stop = stop_signal();
    tokio::pin!(stop);
    if let Some(secs) = args.auto_approve_after {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_secs(secs.max(1))) => {
                    let n = g.approve_all_device_codes();
                    if n > 0 {
                        println!("approved {n} device code(s)");
                    }
                }
            }
        }
    } else {
        stop.await;
    }
    g.shutdown().await;
    if let Some(p) = &args.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
