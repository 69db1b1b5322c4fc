//! A hostile or broken WebDAV server must not take the mount's memory, downgrade it to cleartext, invent entries
//! or hide its failures (issue 16): real mounts against the scripted server of `tests/common/hostile.rs`.
//!
//! Needs root and /dev/fuse.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::hostile::{collection_response, multistatus_of, Answer, Hostile, Request};
use common::mount::{errno, within, Mount};

const QUICK: Duration = Duration::from_secs(60);

/// A share with the folders `dirs` at its root (depth-0 PROPFINDs of them answer "a collection"), whose depth-1
/// listings of those folders come from `listing`.
fn share(dirs: &'static [&'static str], listing: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Hostile {
    Hostile::start(move |req| {
        let name = req.path.trim_matches('/');
        let known = name.is_empty() || dirs.contains(&name);
        match (req.method.as_str(), req.header("depth")) {
            ("PROPFIND", Some("0")) if known => Answer::multistatus(multistatus_of(&[collection_response(&req.path)])),
            ("PROPFIND", Some("1")) if name.is_empty() => {
                let mut all = vec![collection_response("/")];
                all.extend(dirs.iter().map(|d| collection_response(&format!("/{d}/"))));
                Answer::multistatus(multistatus_of(&all))
            }
            ("PROPFIND", Some("1")) if known => listing(req),
            _ => Answer::reply(404, &[], "not here"),
        }
    })
}

/// Lists `dir` through the mount: the names, or the errno.
fn list(dir: &Path) -> Result<Vec<String>, i32> {
    let dir = dir.to_path_buf();
    within(QUICK, "list a folder", move || {
        fs::read_dir(&dir)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .map_err(|e| errno::<()>(Err(e)).unwrap())
    })
}

const XML_OPEN: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:" xmlns:x="urn:x">"#;

/// One 400 MB text node, in a property we do not keep or in the href we do, and a listing of two million entries:
/// each is refused (EIO, with a log line saying why) while the daemon's peak memory stays where it was.
#[test]
fn huge_answers_are_refused_with_flat_memory() {
    const NODE: u64 = 400 << 20;
    let server = share(&["ignored", "kept", "many"], |req| {
        let open = format!("{XML_OPEN}{}", collection_response(&req.path));
        let close_prop = r#"</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        let (prefix, filler, times, suffix) = match req.path.as_str() {
            "/ignored/" => (
                format!(r#"{open}<d:response><d:href>/ignored/a</d:href><d:propstat><d:prop><x:junk>"#),
                b"a".to_vec(),
                NODE,
                format!("</x:junk>{close_prop}"),
            ),
            "/kept/" => (
                format!("{open}<d:response><d:href>/kept/"),
                b"a".to_vec(),
                NODE,
                format!("</d:href><d:propstat><d:prop><d:resourcetype/>{close_prop}"),
            ),
            "/many/" => (
                open,
                b"<d:response><d:href>/many/f</d:href></d:response>".to_vec(),
                2_000_000,
                "</d:multistatus>".to_string(),
            ),
            _ => (format!("{open}</d:multistatus>"), Vec::new(), 0, String::new()),
        };
        Answer::Stream {
            status: 207,
            headers: vec![("content-type".into(), "application/xml".into())],
            prefix: prefix.into_bytes(),
            filler,
            times,
            suffix: suffix.into_bytes(),
        }
    });
    let m = Mount::start(&server.url, &["--read-only"]);
    let before = m.peak_rss_kib();
    // A text node is refused after 80 KiB. A listing is refused after 250,000 entries, which a real folder that
    // large costs too (about 300 bytes each); two million would take over 600 MiB.
    for (dir, limit_mib) in [("ignored", 32), ("kept", 32), ("many", 128)] {
        let got = list(&m.path().join(dir));
        assert_eq!(got, Err(libc::EIO), "listing {dir}");
        let peak = m.peak_rss_kib();
        assert!(
            peak < before + limit_mib * 1024,
            "listing {dir} raised the daemon's peak RSS from {before} KiB to {peak} KiB"
        );
    }
    let log = m.log();
    assert!(
        log.contains("refusing a multistatus answer"),
        "no log line says why:\n{log}"
    );
    m.unmount();
}
