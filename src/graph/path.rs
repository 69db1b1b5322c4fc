//! URLs of Graph resources. Names are percent-encoded one segment at a time, strictly: Graph ends
//! a path-addressing block at a literal `:`, reads `+` as a plus only if it is encoded, and cuts
//! the URL at `#` and `?`. Everything outside the unreserved set (`A-Z a-z 0-9 - . _ ~`) is
//! encoded as UTF-8 bytes (Microsoft Graph docs: "Addressing a driveItem by path").
//!
//! Opaque ids (drive, item, site ids) keep `!` and `,` literal, as Graph prints them
//! (`b!t18F…`, `D4648F06C91D9D3D!54927`, `contoso.sharepoint.com,{guid},{guid}`); both forms are
//! equivalent to the service, the literal one is what its own links use.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use crate::error::{RemoteError, RemoteResult};

/// Everything but the RFC 3986 unreserved characters.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Like [`NAME`], keeping the sub-delimiters and `@` that appear in Graph ids and user names.
const ID: &AsciiSet = &NAME.remove(b'!').remove(b',').remove(b'@');

/// Percent-encode one name (a single path segment) for path addressing.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, NAME).to_string()
}

/// Percent-encode an opaque id or user principal name for use as one path segment.
pub fn encode_id(id: &str) -> String {
    utf8_percent_encode(id, ID).to_string()
}

/// Builds URLs under one service root.
#[derive(Clone, Debug)]
pub struct Urls {
    /// Service root without a trailing slash, e.g. `https://graph.microsoft.com/v1.0`.
    root: String,
}

impl Urls {
    /// From the configured service root.
    pub fn new(graph_url: &Url) -> RemoteResult<Urls> {
        if !matches!(graph_url.scheme(), "http" | "https") || graph_url.host_str().is_none() {
            return Err(RemoteError::Protocol(format!(
                "the Graph URL must be http(s)://host/...: {graph_url}"
            )));
        }
        let mut u = graph_url.clone();
        u.set_query(None);
        u.set_fragment(None);
        let _ = u.set_username("");
        let _ = u.set_password(None);
        Ok(Urls {
            root: u.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// The service root as configured (no trailing slash).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `{root}{path}` where `path` starts with `/` and is already encoded.
    pub fn at(&self, path: &str) -> RemoteResult<Url> {
        Url::parse(&format!("{}{path}", self.root))
            .map_err(|e| RemoteError::Protocol(format!("cannot build a Graph URL for {path}: {e}")))
    }

    /// `/drives/{drive}`.
    pub fn drive(&self, drive: &str) -> RemoteResult<Url> {
        self.at(&format!("/drives/{}", encode_id(drive)))
    }

    /// `/drives/{drive}/items/{id}` plus `suffix` (`""`, `/children`, `/content`, ...).
    pub fn item(&self, drive: &str, id: &str, suffix: &str) -> RemoteResult<Url> {
        self.at(&format!("/drives/{}/items/{}{suffix}", encode_id(drive), encode_id(id)))
    }

    /// `/drives/{drive}/items/{parent}:/{name}:` plus `suffix` (e.g. `/content`): the child
    /// `name` of `parent`, by path relative to the parent's id.
    pub fn child(&self, drive: &str, parent: &str, name: &str, suffix: &str) -> RemoteResult<Url> {
        self.at(&format!(
            "/drives/{}/items/{}:/{}:{suffix}",
            encode_id(drive),
            encode_id(parent),
            encode_segment(name)
        ))
    }

    /// `/drives/{drive}/root`.
    pub fn root_item(&self, drive: &str) -> RemoteResult<Url> {
        self.at(&format!("/drives/{}/root", encode_id(drive)))
    }

    /// Whether `link` (a `@odata.nextLink`) points at this service: only then may it carry our
    /// bearer token.
    pub fn is_ours(&self, link: &Url) -> bool {
        Url::parse(&self.root).is_ok_and(|r| r.origin() == link.origin())
    }
}

/// Append query options (`$select`, `$top`) to a URL. Keys are written as given (`$select`, as
/// Graph documents them); values are encoded like ids, so field lists keep their `,` and `@`.
pub fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    let mut q = url.query().map(str::to_string).unwrap_or_default();
    for (k, v) in pairs {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(k);
        q.push('=');
        q.push_str(&encode_id(v));
    }
    url.set_query(Some(&q));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_per_segment() {
        assert_eq!(encode_segment("a b"), "a%20b");
        assert_eq!(encode_segment("Break#Out"), "Break%23Out");
        assert_eq!(encode_segment("estimate%s.docx"), "estimate%25s.docx");
        assert_eq!(encode_segment("1+1"), "1%2B1");
        assert_eq!(encode_segment("a:b"), "a%3Ab");
        assert_eq!(encode_segment("€ü"), "%E2%82%AC%C3%BC");
        assert_eq!(encode_segment("saved_game[1].bin"), "saved_game%5B1%5D.bin");
        assert_eq!(encode_segment("why?"), "why%3F");
        assert_eq!(encode_segment("R&D"), "R%26D");
        assert_eq!(encode_segment("Ryan's Files"), "Ryan%27s%20Files");
        assert_eq!(encode_segment("doc (1).docx"), "doc%20%281%29.docx");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(encode_segment("-._~AZaz09"), "-._~AZaz09");
    }

    #[test]
    fn ids_keep_their_punctuation() {
        assert_eq!(encode_id("b!t18F8y-_x"), "b!t18F8y-_x");
        assert_eq!(encode_id("D4648F06C91D9D3D!54927"), "D4648F06C91D9D3D!54927");
        assert_eq!(
            encode_id("contoso.sharepoint.com,2C71,2D22"),
            "contoso.sharepoint.com,2C71,2D22"
        );
        assert_eq!(encode_id("megan@contoso.com"), "megan@contoso.com");
        assert_eq!(encode_id("a/b:c d"), "a%2Fb%3Ac%20d");
    }

    #[test]
    fn urls() {
        let u = Urls::new(&Url::parse("http://127.0.0.1:9/v1.0/").unwrap()).unwrap();
        assert_eq!(u.root(), "http://127.0.0.1:9/v1.0");
        assert_eq!(
            u.child("b!x", "01AB", "a #?.txt", "").unwrap().as_str(),
            "http://127.0.0.1:9/v1.0/drives/b!x/items/01AB:/a%20%23%3F.txt:"
        );
        assert_eq!(
            u.item("b!x", "01AB", "/children").unwrap().as_str(),
            "http://127.0.0.1:9/v1.0/drives/b!x/items/01AB/children"
        );
        let q = with_query(u.root_item("d").unwrap(), &[("$select", "id,name"), ("$top", "5")]);
        assert_eq!(
            q.as_str(),
            "http://127.0.0.1:9/v1.0/drives/d/root?$select=id,name&$top=5"
        );
        assert!(u.is_ours(&Url::parse("http://127.0.0.1:9/v1.0/x?$skiptoken=1").unwrap()));
        assert!(!u.is_ours(&Url::parse("http://evil.example/v1.0/x").unwrap()));
        assert!(Urls::new(&Url::parse("file:///x").unwrap()).is_err());
    }
}
