//! Paths, item IDs and hrefs.
//!
//! An item ID is the *decoded* path relative to the base URL's path, without leading or trailing
//! slash (`""` is the root). On the wire every segment is percent-encoded on its own, so that names
//! with `#`, `?`, `%`, `+`, spaces or non-ASCII characters survive the round trip. Servers answer
//! with hrefs in many shapes (absolute URLs or absolute paths, encoded or not, a trailing slash on
//! collections or not); [`href_to_id`] brings them all back to item IDs.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::error::{RemoteError, RemoteResult};

/// Longest name, in bytes, that a Linux filesystem can show (NAME_MAX).
pub const MAX_NAME_BYTES: usize = 255;

/// Everything but RFC 3986 "unreserved" characters is encoded. Encoding more than strictly needed
/// (sub-delims like `+`, `&`, `=`) is always safe, since servers decode `%XX` anywhere, while
/// leaving one of them raw is not (`+` reads as a space on some servers).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encode one path segment (a file or folder name).
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Percent-encode an item ID segment by segment (the `/` separators stay).
pub fn encode_path(id: &str) -> String {
    id.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// The base URL as used for requests: no user info, no query or fragment, path ending in `/`.
pub fn normalize_base(url: &Url) -> RemoteResult<Url> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(RemoteError::Unsupported(format!(
                "URL scheme {other:?} (use http or https)"
            )))
        }
    }
    if url.host_str().is_none() {
        return Err(RemoteError::Unsupported("URL without a host".into()));
    }
    let mut base = url.clone();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base.set_query(None);
    base.set_fragment(None);
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// The decoded segments of a URL's path (empty segments dropped): what an href must start with to
/// be inside the mount.
pub fn path_segments(url: &Url) -> RemoteResult<Vec<String>> {
    decode_segments(url.path()).ok_or_else(|| {
        RemoteError::Unsupported("base URL path is not valid UTF-8, or has a segment that cannot be a name".into())
    })
}

/// The URL of item `id` under `base` (which must end with `/`, see [`normalize_base`]). A trailing
/// slash is added for known collections: several servers redirect or answer differently without it.
pub fn item_url(base: &Url, id: &str, collection: bool) -> RemoteResult<Url> {
    let mut s = base.as_str().to_string();
    if !id.is_empty() {
        s.push_str(&encode_path(id));
        if collection {
            s.push('/');
        }
    }
    Url::parse(&s).map_err(|e| RemoteError::Protocol(format!("cannot build a URL for {id:?}: {e}")))
}

/// Split an encoded path, resolve `.` and `..`, and decode each segment. `None` when a segment
/// cannot be a file name: not UTF-8, or decoding to something with `/` or NUL, to `.` or `..`
/// (`%2E`, `%2E%2E`: dot segments are resolved before decoding, so these would show as phantom
/// entries), or longer than [`MAX_NAME_BYTES`].
fn decode_segments(path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for raw in path.split('/') {
        match raw {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                let seg = percent_decode_str(raw).decode_utf8().ok()?;
                if seg.contains(['/', '\0']) || seg == "." || seg == ".." || seg.len() > MAX_NAME_BYTES {
                    return None;
                }
                out.push(seg.into_owned());
            }
        }
    }
    Some(out)
}

/// The path part of an href: absolute URLs lose scheme and authority, relative references are
/// resolved against `request_path` (the encoded path of the URL that was asked). Query and fragment
/// markers are *not* interpreted: a server that leaves `#` or `?` raw in a name means the name.
fn href_path(href: &str, request_path: &str) -> String {
    let href = href.trim();
    if let Some(idx) = href.find("://") {
        let scheme = &href[..idx];
        if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            let rest = &href[idx + 3..];
            return match rest.find('/') {
                Some(slash) => rest[slash..].to_string(),
                None => "/".to_string(),
            };
        }
    }
    if href.starts_with('/') {
        return href.to_string();
    }
    let dir = match request_path.rfind('/') {
        Some(i) => &request_path[..=i],
        None => "/",
    };
    format!("{dir}{href}")
}

/// The item ID an href names, given the decoded base path segments and the encoded path of the
/// request that produced it. `None` when the href lies outside the base or cannot be an ID.
///
/// Hrefs are decoded once: a server that sends names unencoded and a name that itself looks like
/// an escape (`a%20b`) is ambiguous, and is read as encoded, as the RFC requires.
pub fn href_to_id(href: &str, base: &[String], request_path: &str) -> Option<String> {
    let segments = decode_segments(&href_path(href, request_path))?;
    if segments.len() < base.len() || segments[..base.len()] != *base {
        return None;
    }
    Some(segments[base.len()..].join("/"))
}

/// `text` made safe for one log line: control characters (terminal escapes, line breaks) are
/// shown as `\u{1b}`-style escapes, and text longer than 300 characters is cut, so a name from the
/// server can neither drive the terminal showing the log nor forge log lines.
pub fn printable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The last segment of an ID: the entry's name (`""` for the root).
pub fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The ID of `name` inside folder `parent`.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The parent folder's ID, `None` for the root.
pub fn parent_of(id: &str) -> Option<&str> {
    if id.is_empty() {
        None
    } else {
        Some(id.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ODD: &[&str] = &[
        "a b",
        "hash#tag",
        "100%",
        "%41",
        "a+b",
        "what?",
        "brackets [x] {y}",
        "ünïcödé ✓ 日本語",
        "emoji 🎉",
        "semi;colon,comma=eq&amp",
        "quote'\"",
        "tab\there",
        "back\\slash",
        "...",
        "~tilde-_.",
        "a%2Fb",
    ];

    fn base() -> Url {
        normalize_base(&Url::parse("http://user:pw@example.com:8080/dav%20root/sub?x=1#f").unwrap()).unwrap()
    }

    #[test]
    fn base_is_normalised() {
        let b = base();
        assert_eq!(b.as_str(), "http://example.com:8080/dav%20root/sub/");
        assert_eq!(path_segments(&b).unwrap(), vec!["dav root", "sub"]);
        assert!(normalize_base(&Url::parse("ftp://example.com/").unwrap()).is_err());
        let root = normalize_base(&Url::parse("http://h").unwrap()).unwrap();
        assert_eq!(root.as_str(), "http://h/");
        assert!(path_segments(&root).unwrap().is_empty());
    }

    #[test]
    fn segments_round_trip_through_urls_and_hrefs() {
        let b = base();
        let segs = path_segments(&b).unwrap();
        for name in ODD {
            let enc = encode_segment(name);
            assert!(
                enc.chars().all(|c| c.is_ascii_alphanumeric() || "%-._~".contains(c)),
                "{enc}"
            );
            for id in [name.to_string(), format!("dir x/{name}"), format!("{name}/{name}")] {
                for coll in [false, true] {
                    let url = item_url(&b, &id, coll).unwrap();
                    // The absolute URL, the absolute path, and the path with a trailing slash all
                    // come back to the same ID.
                    assert_eq!(
                        href_to_id(url.as_str(), &segs, "/").as_deref(),
                        Some(id.as_str()),
                        "{url}"
                    );
                    assert_eq!(
                        href_to_id(url.path(), &segs, "/").as_deref(),
                        Some(id.as_str()),
                        "{url}"
                    );
                    let slash = format!("{}/", url.path().trim_end_matches('/'));
                    assert_eq!(href_to_id(&slash, &segs, "/").as_deref(), Some(id.as_str()));
                }
            }
        }
    }

    #[test]
    fn specific_encodings() {
        assert_eq!(encode_segment("a b#c%d+e?f"), "a%20b%23c%25d%2Be%3Ff");
        assert_eq!(encode_segment("[x]"), "%5Bx%5D");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_path("a b/c d"), "a%20b/c%20d");
        let b = base();
        assert_eq!(
            item_url(&b, "a b/c#d", false).unwrap().as_str(),
            "http://example.com:8080/dav%20root/sub/a%20b/c%23d"
        );
        assert_eq!(
            item_url(&b, "x", true).unwrap().as_str(),
            "http://example.com:8080/dav%20root/sub/x/"
        );
        assert_eq!(
            item_url(&b, "", true).unwrap().as_str(),
            "http://example.com:8080/dav%20root/sub/"
        );
    }

    #[test]
    fn href_shapes() {
        let segs = vec!["dav".to_string()];
        let id = |h: &str| href_to_id(h, &segs, "/dav/dir/");
        assert_eq!(id("/dav/").as_deref(), Some(""));
        assert_eq!(id("/dav").as_deref(), Some(""));
        assert_eq!(id("http://127.0.0.1:1234/dav/").as_deref(), Some(""));
        assert_eq!(id("https://h/dav/a%20b/").as_deref(), Some("a b"));
        assert_eq!(id("/dav/a b/c.txt").as_deref(), Some("a b/c.txt"));
        assert_eq!(id("/dav/a%20b/c.txt").as_deref(), Some("a b/c.txt"));
        assert_eq!(id("/dav/%E6%97%A5%E6%9C%AC").as_deref(), Some("日本"));
        assert_eq!(id("/dav/%e6%97%a5").as_deref(), Some("日"));
        assert_eq!(id("/dav/日本").as_deref(), Some("日本"));
        assert_eq!(id("/dav//double//slash/").as_deref(), Some("double/slash"));
        assert_eq!(id("  /dav/trimmed  ").as_deref(), Some("trimmed"));
        assert_eq!(id("/dav/raw#hash").as_deref(), Some("raw#hash"));
        assert_eq!(id("/dav/raw?q").as_deref(), Some("raw?q"));
        // Relative references resolve against the request path.
        assert_eq!(id("file.txt").as_deref(), Some("dir/file.txt"));
        // Outside the base, undecodable, or hiding a slash in a name: not an item.
        assert_eq!(id("/other/x"), None);
        assert_eq!(id("/"), None);
        assert_eq!(id("/davx/y"), None);
        assert_eq!(id("/dav/%FF"), None);
        assert_eq!(id("/dav/a%2Fb"), None);
        // Names no filesystem can show: dot segments spelt encoded, NUL, over 255 bytes.
        assert_eq!(id("/dav/%2E"), None);
        assert_eq!(id("/dav/%2e%2E/"), None);
        assert_eq!(id("/dav/%2E%2E/x"), None);
        assert_eq!(id("/dav/a%00b"), None);
        assert_eq!(id(&format!("/dav/{}", "x".repeat(256))), None);
        assert_eq!(id(&format!("/dav/{}", "%C3%A9".repeat(128))), None);
        assert_eq!(id(&format!("/dav/{}", "x".repeat(255))), Some("x".repeat(255)));
        assert_eq!(id("/dav/%2E.x").as_deref(), Some("..x"));
        assert_eq!(id("/dav/.hidden").as_deref(), Some(".hidden"));
        // With an empty base everything is inside.
        assert_eq!(href_to_id("/a/b/", &[], "/").as_deref(), Some("a/b"));
        assert_eq!(href_to_id("/", &[], "/").as_deref(), Some(""));
    }

    #[test]
    fn printable_escapes_controls_and_cuts() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(
            printable("a\u{1b}[31mred\nfake line\r"),
            "a\\u{1b}[31mred\\nfake line\\r"
        );
        assert_eq!(printable("\u{9b}x"), "\\u{9b}x");
        let long = printable(&"y".repeat(1000));
        assert_eq!(long.chars().count(), 301);
    }

    #[test]
    fn id_helpers() {
        assert_eq!(name_of(""), "");
        assert_eq!(name_of("a"), "a");
        assert_eq!(name_of("a/b c"), "b c");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a/b");
        assert_eq!(parent_of(""), None);
        assert_eq!(parent_of("a"), Some(""));
        assert_eq!(parent_of("a/b/c"), Some("a/b"));
    }
}
