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

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tracing::warn;

use crate::error::{RemoteError, RemoteResult};

const DAV_NS: &str = "DAV:";

/// Body for stat and listings: what an [`crate::remote::Entry`] needs. Quota properties are left
/// out on purpose: some servers compute them per collection (costly), and the others add a 404
/// `<propstat>` for them to every entry of a listing.
pub const PROPFIND_ENTRY: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>",
    "</D:prop></D:propfind>"
);

/// Body for the root: the entry's properties plus the RFC 4331 quota properties (which `allprop`
/// does not include, so they must be asked for by name).
pub const PROPFIND_ENTRY_AND_QUOTA: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:"><D:prop>"#,
    "<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>",
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
/// Most bytes of one multistatus answer. A listing of 200,000 entries with the four properties we
/// ask for takes about 100 MiB with Apache's verbose answers.
pub const MAX_ANSWER: u64 = 256 << 20;
/// Most `<response>` elements in one answer: each becomes an entry held in memory until the
/// listing is complete, so their number bounds the memory a listing takes.
pub const MAX_RESPONSES: usize = 250_000;

/// Why a body was refused by [`Limited`]; carried inside the `io::Error` that stops the reader.
#[derive(Debug)]
struct AnswerTooLarge(String);

impl std::fmt::Display for AnswerTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnswerTooLarge {}

/// Bytes read so far: in the current XML event (reset by the parser after each event) and in all.
#[derive(Default)]
struct Counts {
    event: AtomicU64,
    total: AtomicU64,
}

/// A reader that fails once the current XML event or the whole body has been read past its limit.
/// The XML reader consumes exactly the bytes of the event it is assembling, so counting what it
/// consumes since the parser last reset the count measures that event while it is being buffered.
struct Limited<R> {
    inner: R,
    counts: Arc<Counts>,
    max_event: u64,
    max_total: u64,
}

impl<R> Limited<R> {
    fn check(&self) -> io::Result<()> {
        let event = self.counts.event.load(Ordering::Relaxed);
        let total = self.counts.total.load(Ordering::Relaxed);
        let why = if event > self.max_event {
            format!("an XML text node or tag longer than {} bytes", self.max_event)
        } else if total > self.max_total {
            format!("an answer longer than {} bytes", self.max_total)
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidData, AnswerTooLarge(why)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Only the buffered interface is used by the XML reader; reading directly is still bounded.
        let this = self.get_mut();
        this.check()?;
        let before = buf.filled().len();
        let out = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counts.event.fetch_add(n, Ordering::Relaxed);
        this.counts.total.fetch_add(n, Ordering::Relaxed);
        out
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Limited<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.counts.event.fetch_add(amt as u64, Ordering::Relaxed);
        this.counts.total.fetch_add(amt as u64, Ordering::Relaxed);
        Pin::new(&mut this.inner).consume(amt)
    }
}

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

/// Elements that matter, identified by namespace and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Multistatus,
    Response,
    Href,
    ResponseStatus,
    Propstat,
    PropstatStatus,
    Prop,
    ResourceType,
    Collection,
    ContentLength,
    LastModified,
    Etag,
    QuotaAvailable,
    QuotaUsed,
    Other,
}

impl Tag {
    fn classify(parent: Option<Tag>, is_dav: bool, local: &str) -> Tag {
        if !is_dav {
            return Tag::Other;
        }
        match (parent, local) {
            (None, "multistatus") => Tag::Multistatus,
            (Some(Tag::Multistatus), "response") => Tag::Response,
            (Some(Tag::Response), "href") => Tag::Href,
            (Some(Tag::Response), "status") => Tag::ResponseStatus,
            (Some(Tag::Response), "propstat") => Tag::Propstat,
            (Some(Tag::Propstat), "status") => Tag::PropstatStatus,
            (Some(Tag::Propstat), "prop") => Tag::Prop,
            (Some(Tag::Prop), "resourcetype") => Tag::ResourceType,
            (Some(Tag::Prop), "getcontentlength") => Tag::ContentLength,
            (Some(Tag::Prop), "getlastmodified") => Tag::LastModified,
            (Some(Tag::Prop), "getetag") => Tag::Etag,
            (Some(Tag::Prop), "quota-available-bytes") => Tag::QuotaAvailable,
            (Some(Tag::Prop), "quota-used-bytes") => Tag::QuotaUsed,
            (Some(Tag::ResourceType), "collection") => Tag::Collection,
            _ => Tag::Other,
        }
    }

    /// Elements whose text content we keep.
    fn keeps_text(self) -> bool {
        matches!(
            self,
            Tag::Href
                | Tag::ResponseStatus
                | Tag::PropstatStatus
                | Tag::ContentLength
                | Tag::LastModified
                | Tag::Etag
                | Tag::QuotaAvailable
                | Tag::QuotaUsed
        )
    }
}

/// The status code in an HTTP status line (`HTTP/1.1 200 OK` → 200).
pub fn parse_status_line(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A `getcontentlength`: a decimal number of bytes from 0 to `i64::MAX` (`off_t`'s range). An
/// empty element is no length (some servers send one for collections).
fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(Some(n)),
        _ => Err(format!(
            "getcontentlength {:?} is not a size (0 to {})",
            crate::webdav::href::printable(text),
            i64::MAX
        )),
    }
}

/// State of the parse: where we are and what the current response and propstat hold so far.
struct Parser {
    stack: Vec<Tag>,
    text: String,
    response: DavResponse,
    have_href: bool,
    propstat: Props,
    propstat_status: Option<u16>,
    seen_multistatus: bool,
    finished: bool,
    responses: usize,
}

impl Parser {
    fn new() -> Self {
        Parser {
            stack: Vec::new(),
            text: String::new(),
            response: DavResponse::default(),
            have_href: false,
            propstat: Props::default(),
            propstat_status: None,
            seen_multistatus: false,
            finished: false,
            responses: 0,
        }
    }

    fn top(&self) -> Option<Tag> {
        self.stack.last().copied()
    }

    fn start(&mut self, is_dav: bool, local: &str) -> RemoteResult<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(RemoteError::Protocol("multistatus nested too deeply".into()));
        }
        let parent = self.top();
        // Anything under an element we do not know stays unknown, whatever its name.
        let tag = if parent == Some(Tag::Other) || (parent.is_none() && self.seen_multistatus) {
            Tag::Other
        } else {
            Tag::classify(parent, is_dav, local)
        };
        match tag {
            Tag::Multistatus => self.seen_multistatus = true,
            Tag::Response => {
                self.response = DavResponse::default();
                self.have_href = false;
            }
            Tag::Propstat => {
                self.propstat = Props::default();
                self.propstat_status = None;
            }
            Tag::Collection => self.propstat.collection = true,
            _ => {}
        }
        if parent.is_none() && tag != Tag::Multistatus {
            return Err(RemoteError::Protocol(
                "the answer is not a DAV:multistatus document".into(),
            ));
        }
        self.text.clear();
        self.stack.push(tag);
        Ok(())
    }

    fn text(&mut self, s: &str) -> RemoteResult<()> {
        if self.top().is_some_and(Tag::keeps_text) {
            if self.text.len() + s.len() > MAX_TEXT {
                return Err(RemoteError::Protocol("multistatus element text too long".into()));
            }
            self.text.push_str(s);
        }
        Ok(())
    }

    fn end(&mut self, on_response: &mut dyn FnMut(DavResponse) -> RemoteResult<()>) -> RemoteResult<()> {
        let Some(tag) = self.stack.pop() else {
            return Err(RemoteError::Protocol("unbalanced multistatus".into()));
        };
        let text = std::mem::take(&mut self.text);
        let value = text.trim();
        match tag {
            Tag::Multistatus => self.finished = true,
            Tag::Response => {
                if !self.have_href {
                    return Err(RemoteError::Protocol("multistatus response without href".into()));
                }
                self.responses += 1;
                if self.responses > MAX_RESPONSES {
                    let why = format!("the answer lists over {MAX_RESPONSES} items");
                    warn!("refusing a multistatus answer: {why}");
                    return Err(RemoteError::Protocol(format!("multistatus too large: {why}")));
                }
                on_response(std::mem::take(&mut self.response))?;
            }
            Tag::Href => {
                if !self.have_href {
                    self.response.href = value.to_string();
                    self.have_href = true;
                }
            }
            Tag::ResponseStatus => self.response.status = parse_status_line(value),
            Tag::PropstatStatus => self.propstat_status = parse_status_line(value),
            Tag::Propstat => {
                self.response.propstat_statuses.push(self.propstat_status.unwrap_or(0));
                if self.propstat_status == Some(200) {
                    let props = std::mem::take(&mut self.propstat);
                    self.response.props.merge(props);
                }
            }
            Tag::ContentLength => match parse_size(value) {
                Ok(size) => self.propstat.content_length = size,
                Err(why) => self.propstat.invalid = Some(why),
            },
            Tag::LastModified => self.propstat.last_modified = httpdate::parse_http_date(value).ok(),
            Tag::Etag => {
                if !value.is_empty() {
                    self.propstat.etag = Some(value.to_string());
                }
            }
            Tag::QuotaAvailable => self.propstat.quota_available = parse_u64(value),
            Tag::QuotaUsed => self.propstat.quota_used = parse_u64(value),
            Tag::Prop | Tag::ResourceType | Tag::Collection | Tag::Other => {}
        }
        Ok(())
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
                let is_dav = matches!(ns, ResolveResult::Bound(n) if n.0 == DAV_NS);
                parser.start(is_dav, e.local_name().as_ref())?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(xml: &str) -> RemoteResult<Vec<DavResponse>> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            parse_multistatus(xml.as_bytes(), |r| {
                out.push(r);
                Ok(())
            })
            .await?;
            Ok(out)
        })
    }

    fn date(s: &str) -> Option<SystemTime> {
        Some(httpdate::parse_http_date(s).unwrap())
    }

    #[test]
    fn apache_style_with_lp1_prefix_and_404_propstat() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/dir%20one/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Sat, 22 Nov 2025 10:00:00 GMT</lp1:getlastmodified>
<lp1:getetag>"1000-5f1"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<D:getcontentlength/>
<ns0:quota-available-bytes/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
<D:response xmlns:lp1="DAV:">
<D:href>/dav/dir%20one/a.txt</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype/>
<lp1:getcontentlength>12</lp1:getcontentlength>
<lp1:getlastmodified>Sat, 22 Nov 2025 10:00:01 GMT</lp1:getlastmodified>
<lp1:getetag>W/"c-5f2"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].href, "/dav/dir%20one/");
        assert!(r[0].props.collection);
        assert_eq!(r[0].props.content_length, None);
        assert_eq!(r[0].props.quota_available, None);
        assert_eq!(r[0].props.etag.as_deref(), Some("\"1000-5f1\""));
        assert_eq!(r[0].props.last_modified, date("Sat, 22 Nov 2025 10:00:00 GMT"));
        assert!(r[0].is_ok());
        assert!(!r[1].props.collection);
        assert_eq!(r[1].props.content_length, Some(12));
        assert_eq!(r[1].props.etag.as_deref(), Some("W/\"c-5f2\""));
    }

    #[test]
    fn default_namespace_lowercase_prefix_and_absolute_hrefs() {
        let xml = r#"<multistatus xmlns="DAV:"><response>
<href>http://127.0.0.1:8080/remote.php/dav/files/u/My%20File%23.txt</href>
<propstat><prop><getcontentlength>42</getcontentlength><getetag>abc123</getetag>
<resourcetype/></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].href,
            "http://127.0.0.1:8080/remote.php/dav/files/u/My%20File%23.txt"
        );
        assert_eq!(r[0].props.content_length, Some(42));
        assert_eq!(r[0].props.etag.as_deref(), Some("abc123"));

        let xml = r#"<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:response>
<d:href>/x/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>
<oc:fileid>123</oc:fileid><d:quota-used-bytes>100</d:quota-used-bytes>
<d:quota-available-bytes>900</d:quota-available-bytes></d:prop>
<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        let r = parse(xml).unwrap();
        assert!(r[0].props.collection);
        assert_eq!(r[0].props.quota_used, Some(100));
        assert_eq!(r[0].props.quota_available, Some(900));
    }

    #[test]
    fn names_are_matched_by_namespace_not_prefix() {
        // `D:` bound to something else, and a `getetag` outside DAV:, are not ours.
        let xml = r#"<x:multistatus xmlns:x="DAV:" xmlns:D="urn:not-dav"><x:response>
<x:href>/a</x:href><x:propstat><x:prop><D:getetag>"wrong"</D:getetag>
<D:resourcetype><x:collection/></D:resourcetype><x:getcontentlength>7</x:getcontentlength></x:prop>
<x:status>HTTP/1.1 200 OK</x:status></x:propstat></x:response></x:multistatus>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r[0].props.etag, None);
        assert!(!r[0].props.collection);
        assert_eq!(r[0].props.content_length, Some(7));
        // A document in another namespace entirely is rejected.
        assert!(parse(r#"<multistatus xmlns="urn:x"><response/></multistatus>"#).is_err());
    }

    #[test]
    fn only_200_propstats_count_and_missing_props_stay_none() {
        let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href>
<D:propstat><D:prop><D:getcontentlength>5</D:getcontentlength></D:prop><D:status>HTTP/1.1 403 Forbidden</D:status></D:propstat>
<D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
<D:propstat><D:prop><D:getetag>"e"</D:getetag></D:prop></D:propstat>
<D:propstat><D:prop><D:getlastmodified>not a date</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
</D:response></D:multistatus>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r[0].props, Props::default());
        assert_eq!(r[0].propstat_statuses, vec![403, 404, 0, 200]);
    }

    #[test]
    fn response_level_status_entities_cdata_and_comments() {
        let xml = r#"<?xml version="1.0"?>
<!-- a comment -->
<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/gone</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>
<D:response><D:href>/a&amp;b%20&#x4E2D;</D:href><D:propstat><D:prop>
<D:getetag>&quot;q&quot;</D:getetag><D:getlastmodified><![CDATA[Sun, 06 Nov 1994 08:49:37 GMT]]></D:getlastmodified>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].status, Some(404));
        assert!(!r[0].is_ok());
        assert_eq!(r[1].href, "/a&b%20中");
        assert_eq!(r[1].props.etag.as_deref(), Some("\"q\""));
        assert_eq!(
            r[1].props.last_modified,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
        );
    }

    #[test]
    fn broken_documents_are_errors_not_panics() {
        let bad = [
            "",
            "<html><body>Hello</body></html>",
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href>"#,
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:wrong></D:response></D:multistatus>"#,
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:propstat/></D:response></D:multistatus>"#,
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>&bogus;</D:href></D:response></D:multistatus>"#,
            "<<<<",
        ];
        for doc in bad {
            assert!(parse(doc).is_err(), "accepted {doc:?}");
        }
        let deep = format!(
            r#"<D:multistatus xmlns:D="DAV:">{}{}</D:multistatus>"#,
            "<x>".repeat(1000),
            "</x>".repeat(1000)
        );
        assert!(parse(&deep).is_err());
        let long = format!(
            r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>{}</D:href></D:response></D:multistatus>"#,
            "a".repeat(MAX_TEXT + 1)
        );
        assert!(parse(&long).is_err());
        // An empty multistatus is fine: nothing to report.
        assert_eq!(parse(r#"<D:multistatus xmlns:D="DAV:"/>"#).unwrap(), vec![]);
    }

    /// `prefix`, then `len` bytes of `filler`, then `suffix`, parsed with the given limits.
    fn parse_streamed(
        prefix: &str,
        filler: u8,
        len: u64,
        suffix: &str,
        max_event: u64,
        max_total: u64,
    ) -> RemoteResult<usize> {
        use tokio::io::AsyncReadExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let body = prefix
                .as_bytes()
                .chain(tokio::io::repeat(filler).take(len))
                .chain(suffix.as_bytes());
            let mut n = 0;
            parse_multistatus_limited(tokio::io::BufReader::new(body), max_event, max_total, |_| {
                n += 1;
                Ok(())
            })
            .await?;
            Ok(n)
        })
    }

    #[test]
    fn huge_text_nodes_are_refused_while_streaming_kept_or_not() {
        let open =
            r#"<D:multistatus xmlns:D="DAV:" xmlns:X="urn:x"><D:response><D:href>/a</D:href><D:propstat><D:prop>"#;
        let close = "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>";
        for (element, end) in [
            ("<X:junk>", "</X:junk>"),
            ("<D:displayname>", "</D:displayname>"),
            ("<D:getetag>", "</D:getetag>"),
            ("<X:junk><![CDATA[", "]]></X:junk>"),
            ("<!--", "-->"),
            ("<X:junk X:attr=\"", "\"/>"),
        ] {
            let big = parse_streamed(
                &format!("{open}{element}"),
                b'a',
                8 << 20,
                &format!("{end}{close}"),
                MAX_EVENT,
                MAX_ANSWER,
            );
            match big {
                Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{element}: {m}"),
                other => panic!("{element}: 8 MiB in one node accepted: {other:?}"),
            }
            // The same shape within the limits is fine.
            let small = parse_streamed(
                &format!("{open}{element}"),
                b'a',
                1000,
                &format!("{end}{close}"),
                MAX_EVENT,
                MAX_ANSWER,
            );
            assert_eq!(small.unwrap(), 1, "{element}");
        }
    }

    #[test]
    fn answers_past_the_total_limit_or_count_are_refused() {
        let one = r#"<D:response><D:href>/a</D:href></D:response>"#;
        let doc = format!(r#"<D:multistatus xmlns:D="DAV:">{}</D:multistatus>"#, one.repeat(100));
        assert_eq!(parse_streamed(&doc, b' ', 0, "", MAX_EVENT, 1 << 20).unwrap(), 100);
        match parse_streamed(&doc, b' ', 0, "", MAX_EVENT, 2000) {
            Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{m}"),
            other => panic!("{other:?}"),
        }
        let many = format!(
            r#"<D:multistatus xmlns:D="DAV:">{}</D:multistatus>"#,
            one.repeat(MAX_RESPONSES + 1)
        );
        match parse(&many) {
            Err(RemoteError::Protocol(m)) => assert!(m.contains("too large"), "{m}"),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn sizes_must_be_sizes() {
        let doc = |size: &str| {
            format!(
                r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/f</D:href><D:propstat><D:prop><D:getcontentlength>{size}</D:getcontentlength></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#
            )
        };
        let props = |size: &str| parse(&doc(size)).unwrap().remove(0).props;
        assert_eq!(props("0").content_length, Some(0));
        assert_eq!(props(" 42 ").content_length, Some(42));
        assert_eq!(props(&i64::MAX.to_string()).content_length, Some(i64::MAX as u64));
        assert_eq!(props("").content_length, None);
        assert_eq!(props("").invalid, None);
        for bad in [
            "-1",
            "12abc",
            "1e3",
            "0x10",
            "9223372036854775808",
            "18446744073709551616",
        ] {
            let p = props(bad);
            assert_eq!(p.content_length, None, "{bad}");
            assert!(p.invalid.as_deref().is_some_and(|w| w.contains(bad)), "{bad}: {p:?}");
        }
    }

    #[test]
    fn callback_errors_stop_the_parse() {
        let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a</D:href></D:response><D:response><D:href>/b</D:href></D:response></D:multistatus>"#;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut seen = 0;
        let res = rt.block_on(parse_multistatus(xml.as_bytes(), |_| {
            seen += 1;
            Err(RemoteError::Protocol("stop".into()))
        }));
        assert!(res.is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("  HTTP/1.1   404 Not Found "), Some(404));
        assert_eq!(parse_status_line("garbage"), None);
    }
}
