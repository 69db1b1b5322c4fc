//! PROPFIND request bodies and a streaming parser for the 207 multistatus answer.
//!
//! The parser reads XML events straight off the response body (quick-xml's namespace-aware
//! reader), hands each `<response>` to a callback as soon as it is complete and keeps nothing
//! else, so a folder of 100,000 entries costs the memory of one entry, not of a DOM. Elements are
//! matched by namespace URI (`DAV:`), never by prefix: servers write `D:`, `d:`, `lp1:` or a
//! default namespace. Only properties inside a `<propstat>` whose status is 200 are used (servers
//! report the properties they lack in a 404 `<propstat>`, sometimes as empty elements).
//!
//! The server is not trusted with our memory. The body is read through [`Limited`], which fails the
//! parse as soon as one XML event (a text node, a tag, a comment...) grows past [`MAX_EVENT`], or
//! the whole answer past [`MAX_ANSWER`], *while streaming*: quick-xml collects an event whole
//! before handing it over, so a limit checked on the event would come after a 400 MB text node had
//! been buffered. The number of `<response>` elements kept is bounded by [`MAX_RESPONSES`]. Such
//! an answer is a protocol error (EIO), logged once with the limit it broke.

//!
//! Module map: [`limits`] is the reader that enforces those limits, [`parser`] the state machine
//! that turns XML events into [`DavResponse`]s; the bodies we send and the entry points are here.
//! Our own dead properties (mode, owner, times) are asked for by name in the same bodies and read
//! by the same parser; what they mean is in [`crate::webdav::props`].

mod limits;
mod parser;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use tokio::io::AsyncBufRead;
use tracing::warn;

use crate::error::{RemoteError, RemoteResult};
use crate::webdav::props::{DeadProps, META_NS};
use limits::{AnswerTooLarge, Counts, Limited};
pub use parser::parse_status_line;
use parser::{Ns, Parser};

const DAV_NS: &str = "DAV:";

/// Our dead properties, asked for by name after the live ones (`C:` is bound to
/// [`crate::webdav::props::META_NS`] in the bodies below).
macro_rules! dead_props {
    () => {
        "<C:mode/><C:uid/><C:gid/><C:mtime/><C:atime/><C:created/><C:stamp/>"
    };
}

/// Body for stat and listings: what an [`crate::remote::Entry`] needs. Quota properties are left
/// out on purpose: some servers compute them per collection (costly), and the others add a 404
/// `<propstat>` for them to every entry of a listing.
pub const PROPFIND_ENTRY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:" xmlns:C=""#,
    meta_ns!(),
    r#""><D:prop>"#,
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>",
    dead_props!(),
    "</D:prop></D:propfind>"
);

/// Body for the root: the entry's properties plus the RFC 4331 quota properties (which `allprop`
/// does not include, so they must be asked for by name).
pub const PROPFIND_ENTRY_AND_QUOTA: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:" xmlns:C=""#,
    meta_ns!(),
    r#""><D:prop>"#,
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>",
    dead_props!(),
    "<D:quota-available-bytes/><D:quota-used-bytes/>",
    "</D:prop></D:propfind>"
);

/// Longest text we accept in one element; real hrefs and dates are far shorter. Guards memory
/// against a broken or hostile server.
const MAX_TEXT: usize = 64 * 1024;
/// Deepest element nesting we accept, for the same reason.
const MAX_DEPTH: usize = 128;
/// Most bytes one XML event may take on the wire (a text node of any element, kept or not, a tag
/// with its attributes, a comment, a CDATA section). Kept text is bounded by [`MAX_TEXT`] already;
/// this bounds what the XML reader buffers for everything else.
pub const MAX_EVENT: u64 = MAX_TEXT as u64 + 16 * 1024;
/// Most bytes of one multistatus answer. A listing of 200,000 entries with the four live properties
/// we ask for takes about 100 MiB with Apache's verbose answers; the 404 `<propstat>` naming our
/// seven dead properties on items that have none adds 200 to 350 bytes each (40 to 70 MiB more).
pub const MAX_ANSWER: u64 = 256 << 20;
/// Most `<response>` elements in one answer: each becomes an entry held in memory until the
/// listing is complete, so their number bounds the memory a listing takes.
pub const MAX_RESPONSES: usize = 250_000;

/// Properties of one resource, taken from its 200 `<propstat>` blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props {
    /// `<resourcetype>` contains `<collection/>`.
    pub collection: bool,
    /// `getcontentlength`.
    pub content_length: Option<u64>,
    /// `getlastmodified`, parsed as an HTTP date; `None` when absent or unparseable.
    pub last_modified: Option<SystemTime>,
    /// `getetag` as sent (quoted, unquoted or weak; see [`crate::remote::Version::from_etag`]).
    pub etag: Option<String>,
    /// `quota-available-bytes`.
    pub quota_available: Option<u64>,
    /// `quota-used-bytes`.
    pub quota_used: Option<u64>,
    /// Why a property we need holds a value we cannot use (a `getcontentlength` that is negative,
    /// not a number, or past `i64::MAX`, the largest size a file can have). Such a resource is an
    /// error, not a file of size 0.
    pub invalid: Option<String>,
    /// Our dead properties, those whose value is ours (see [`crate::webdav::props`]).
    pub dead: DeadProps,
}

impl Props {
    fn merge(&mut self, other: Props) {
        self.collection |= other.collection;
        self.content_length = other.content_length.or(self.content_length);
        self.last_modified = other.last_modified.or(self.last_modified);
        self.etag = other.etag.or(self.etag.take());
        self.quota_available = other.quota_available.or(self.quota_available);
        self.quota_used = other.quota_used.or(self.quota_used);
        self.invalid = other.invalid.or(self.invalid.take());
        self.dead.merge(other.dead);
    }
}

/// One `<response>` of a multistatus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DavResponse {
    /// The first `<href>`, entity-decoded but still percent-encoded.
    pub href: String,
    /// The `<response>`-level `<status>` code, present when the server reports the whole resource
    /// with one status (typically 404) instead of per-property `<propstat>` blocks.
    pub status: Option<u16>,
    /// Properties from 200 `<propstat>` blocks.
    pub props: Props,
    /// The status of every `<propstat>` block, in order (0 when one has none): what a PROPPATCH
    /// answer says about each property it was asked to set.
    pub propstat_statuses: Vec<u16>,
}

impl DavResponse {
    /// Whether the response describes an existing resource.
    pub fn is_ok(&self) -> bool {
        self.status.is_none_or(|s| (200..300).contains(&s))
    }
}

fn xml_error(e: quick_xml::Error) -> RemoteError {
    // An I/O error here is the HTTP body failing underneath the XML reader: report it as the
    // transport error it is, so that the request is retried like any other lost connection.
    if let quick_xml::Error::Io(io) = &e {
        if let Some(inner) = io.get_ref() {
            if let Some(large) = inner.downcast_ref::<AnswerTooLarge>() {
                // The server, not the connection: asking again gets the same answer.
                warn!("refusing a multistatus answer: {large}");
                return RemoteError::Protocol(format!("multistatus too large: {large}"));
            }
            if let Some(re) = inner.downcast_ref::<reqwest::Error>() {
                return crate::http::map_reqwest_error("PROPFIND body", re);
            }
        }
        if io.kind() == std::io::ErrorKind::TimedOut {
            return RemoteError::Timeout(format!("PROPFIND body: {io}"));
        }
        return RemoteError::ConnectionLost(format!("PROPFIND body: {io}"));
    }
    RemoteError::Protocol(format!("bad multistatus XML: {e}"))
}

/// Parse a multistatus document from `reader`, calling `on_response` for every `<response>` as
/// soon as its end tag is read. Fails on malformed XML, on a document that is not a
/// `DAV:multistatus`, and on a body that ends before the multistatus is closed (a truncated
/// listing must not pass for a short one).
pub async fn parse_multistatus<R, F>(reader: R, on_response: F) -> RemoteResult<()>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(DavResponse) -> RemoteResult<()>,
{
    parse_multistatus_limited(reader, MAX_EVENT, MAX_ANSWER, on_response).await
}

/// [`parse_multistatus`] with the given limits on one XML event and the whole answer, in bytes.
async fn parse_multistatus_limited<R, F>(
    reader: R,
    max_event: u64,
    max_total: u64,
    mut on_response: F,
) -> RemoteResult<()>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(DavResponse) -> RemoteResult<()>,
{
    let counts = Arc::new(Counts::default());
    let reader = Limited {
        inner: reader,
        counts: counts.clone(),
        max_event,
        max_total,
    };
    let mut xml = NsReader::from_reader(reader);
    xml.config_mut().expand_empty_elements = true;
    let mut parser = Parser::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        counts.event.store(0, Ordering::Relaxed);
        let (ns, event) = xml.read_resolved_event_into_async(&mut buf).await.map_err(xml_error)?;
        match event {
            Event::Start(e) => {
                let ns = match ns {
                    ResolveResult::Bound(n) if n.0 == DAV_NS => Ns::Dav,
                    ResolveResult::Bound(n) if n.0 == META_NS => Ns::Meta,
                    _ => Ns::Other,
                };
                parser.start(ns, e.local_name().as_ref())?;
            }
            Event::End(_) => parser.end(&mut on_response)?,
            Event::Text(t) => parser.text(&t.xml10_content())?,
            Event::CData(t) => parser.text(&t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content();
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_string(),
                            None => return Err(RemoteError::Protocol(format!("unknown XML entity &{name};"))),
                        }
                    }
                    Err(e) => return Err(RemoteError::Protocol(format!("bad character reference: {e}"))),
                };
                parser.text(&resolved)?;
            }
            Event::Eof => break,
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !parser.seen_multistatus {
        return Err(RemoteError::Protocol(
            "empty answer where a multistatus was expected".into(),
        ));
    }
    if !parser.finished {
        return Err(RemoteError::Protocol("multistatus ended early (truncated body)".into()));
    }
    Ok(())
}
