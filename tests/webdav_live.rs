//! The WebDAV remote against an external server (Apache, rclone, nginx, ... see
//! `shared/scripts/webdav-servers.sh`). Ignored by default; run with
//! `CLOUDMOUNT_LIVE_DAV_URL=http://127.0.0.1:8081/dav/ CLOUDMOUNT_LIVE_DAV_DIR=/srv/a \
//!  cargo test --test webdav_live -- --ignored`
//! where the directory is the one the server serves (the test writes a few files into it, under
//! a fresh sub-folder).

use std::fs;
use std::time::Duration;

use cloudmount::error::RemoteError;
use cloudmount::remote::{EntryKind, ItemId, Remote};
use cloudmount::webdav::{DavConfig, DavRemote};

#[tokio::test]
#[ignore = "needs an external WebDAV server: set CLOUDMOUNT_LIVE_DAV_URL and CLOUDMOUNT_LIVE_DAV_DIR"]
async fn external_server_smoke() {
    let (Ok(url), Ok(dir)) = (
        std::env::var("CLOUDMOUNT_LIVE_DAV_URL"),
        std::env::var("CLOUDMOUNT_LIVE_DAV_DIR"),
    ) else {
        panic!("set CLOUDMOUNT_LIVE_DAV_URL and CLOUDMOUNT_LIVE_DAV_DIR");
    };
    let folder = format!("cm live {}", std::process::id());
    let base = std::path::Path::new(&dir).join(&folder);
    fs::create_dir_all(base.join("sub #1")).unwrap();
    let names = [
        "a b.txt",
        "hash#.txt",
        "100%.txt",
        "a+b.txt",
        "q?.txt",
        "ünï 日本.txt",
        "[x].txt",
    ];
    for n in names {
        fs::write(base.join(n), n.as_bytes()).unwrap();
    }
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(base.join("big.bin"), &data).unwrap();

    let r = DavRemote::new(DavConfig {
        url: url::Url::parse(&url).unwrap(),
        user: std::env::var("CLOUDMOUNT_LIVE_DAV_USER").ok(),
        password: std::env::var("CLOUDMOUNT_LIVE_DAV_PASSWORD").ok(),
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert_eq!(r.root().await.unwrap().kind, EntryKind::Directory);
    let dir_id = ItemId::new(folder.as_str());
    let listed = r.list(&dir_id).await.unwrap();
    eprintln!("{listed:#?}");
    assert_eq!(listed.len(), names.len() + 2);
    for n in names {
        let e = r.lookup(&dir_id, n).await.unwrap();
        assert_eq!(e.size, n.len() as u64);
        assert_eq!(listed.iter().find(|l| l.name == n), Some(&e), "{n}");
        assert_eq!(r.read(&e.id, e.version.as_ref(), 0, 100).await.unwrap(), n.as_bytes());
    }
    let sub = r.lookup(&dir_id, "sub #1").await.unwrap();
    assert_eq!(sub.kind, EntryKind::Directory);
    let big = r.lookup(&dir_id, "big.bin").await.unwrap();
    let got = r.read(&big.id, big.version.as_ref(), 65_536, 4096).await.unwrap();
    assert!(got[..] == data[65_536..65_536 + 4096]);
    assert!(r
        .read(&big.id, big.version.as_ref(), 100_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(r.lookup(&dir_id, "missing").await, Err(RemoteError::NotFound)));
    eprintln!("quota: {:?}", r.quota().await);
    fs::remove_dir_all(&base).unwrap();
}
