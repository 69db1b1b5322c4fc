//! A hostile or broken WebDAV server must not take the mount's memory, downgrade it to cleartext, invent entries
//! or hide its failures (issue 16): real mounts against the scripted server of `tests/common/hostile.rs`.
//!
//! Needs root and /dev/fuse.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::hostile::{collection_response, file_response, multistatus_of, Answer, Hostile, Request};
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

/// The root listing of a server with odd hrefs and sizes.
fn odd_listing() -> String {
    let long = "x".repeat(256);
    let max = i64::MAX.to_string();
    multistatus_of(&[
        collection_response("/"),
        collection_response("/sub/"),
        file_response("/good.txt", "5"),
        // Dot segments spelt encoded, NUL, a name over 255 bytes: no such names can exist.
        file_response("/%2E", "1"),
        collection_response("/%2e%2E/"),
        file_response("/sub/%2E%2E", "1"),
        file_response("/a%00b", "1"),
        file_response(&format!("/{long}"), "1"),
        // The same href twice: the first one counts.
        file_response("/dup.txt", "3"),
        file_response("/dup.txt", "7"),
        // Sizes that are no sizes, one of them on a name with a terminal escape and a line break.
        file_response("/neg.txt", "-1"),
        file_response("/nan.txt", "abc"),
        file_response("/huge.txt", "9223372036854775808"),
        file_response("/esc%1B%5B31mred%0Afake%20line.txt", "-5"),
        file_response("/max.txt", &max),
    ])
}

/// Hrefs that decode to `.` or `..`, hold NUL or are over 255 bytes are left out (no phantom entries), a duplicate
/// href keeps its first entry, sizes that are not sizes leave their entry out rather than show size 0, and the
/// log lines saying so escape the names' control characters.
#[test]
fn odd_hrefs_and_sizes_are_left_out_and_logged_safely() {
    let server = Hostile::start(|req| match (req.method.as_str(), req.header("depth")) {
        ("PROPFIND", Some("1")) if req.path == "/" => Answer::multistatus(odd_listing()),
        ("PROPFIND", _) if req.path.starts_with("/sub") => {
            Answer::multistatus(multistatus_of(&[collection_response("/sub/")]))
        }
        ("PROPFIND", Some("0")) if req.path == "/" => Answer::multistatus(multistatus_of(&[collection_response("/")])),
        _ => Answer::reply(404, &[], ""),
    });
    let m = Mount::start(&server.url, &["--read-only"]);
    let mut names = list(m.path()).unwrap();
    names.sort();
    assert_eq!(names, ["dup.txt", "good.txt", "max.txt", "sub"]);
    assert_eq!(fs::metadata(m.path().join("dup.txt")).unwrap().len(), 3);
    assert_eq!(fs::metadata(m.path().join("max.txt")).unwrap().len(), i64::MAX as u64);
    assert_eq!(list(&m.path().join("sub")).unwrap(), Vec::<String>::new());
    let log = m.log();
    assert!(log.contains("leaving this item out of the listing"), "{log}");
    assert!(log.contains("names this item twice"), "{log}");
    assert!(
        log.contains(r"esc\u{1b}[31mred\nfake line.txt"),
        "the name is not shown escaped:\n{log}"
    );
    assert!(!log.contains('\x1b'), "a raw escape byte reached the log");
    assert!(
        !log.lines().any(|l| l.starts_with("fake line")),
        "a name forged a log line:\n{log}"
    );
    m.unmount();
}

/// A server that closes the connection without answering a listing: the listing fails with EIO, not
/// EHOSTUNREACH (the server was reached).
#[test]
fn a_connection_closed_without_an_answer_is_eio() {
    let server = share(&["closed"], |_| Answer::Close);
    let m = Mount::start(&server.url, &["--read-only", "--timeout", "3"]);
    assert_eq!(list(&m.path().join("closed")), Err(libc::EIO));
    m.unmount();
}
