//! The state machine behind [`super::parse_multistatus`]: which element we are in, identified by
//! namespace and position, and what the current `<response>` and `<propstat>` hold so far.

use tracing::warn;

use super::{DavResponse, Props, MAX_DEPTH, MAX_RESPONSES, MAX_TEXT};
use crate::error::{RemoteError, RemoteResult};
use crate::webdav::props::DeadProp;

/// The namespace of an element, as far as the parser cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ns {
    /// `DAV:`.
    Dav,
    /// Ours ([`crate::webdav::props::META_NS`]).
    Meta,
    /// Anything else, or none.
    Other,
}

/// Elements that matter, identified by namespace and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tag {
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
    /// One of our dead properties.
    Dead(DeadProp),
    Other,
}

impl Tag {
    fn classify(parent: Option<Tag>, ns: Ns, local: &str) -> Tag {
        match ns {
            Ns::Dav => {}
            Ns::Meta if parent == Some(Tag::Prop) => {
                return DeadProp::from_local(local).map_or(Tag::Other, Tag::Dead);
            }
            Ns::Meta | Ns::Other => return Tag::Other,
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
                | Tag::Dead(_)
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
pub(super) struct Parser {
    stack: Vec<Tag>,
    text: String,
    response: DavResponse,
    have_href: bool,
    propstat: Props,
    propstat_status: Option<u16>,
    pub(super) seen_multistatus: bool,
    pub(super) finished: bool,
    /// The dead property being read holds an element: a value of ours never does, so it is
    /// ignored.
    dead_spoiled: bool,
    responses: usize,
}

impl Parser {
    pub(super) fn new() -> Self {
        Parser {
            stack: Vec::new(),
            text: String::new(),
            response: DavResponse::default(),
            have_href: false,
            propstat: Props::default(),
            propstat_status: None,
            seen_multistatus: false,
            finished: false,
            dead_spoiled: false,
            responses: 0,
        }
    }

    fn top(&self) -> Option<Tag> {
        self.stack.last().copied()
    }

    pub(super) fn start(&mut self, ns: Ns, local: &str) -> RemoteResult<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(RemoteError::Protocol("multistatus nested too deeply".into()));
        }
        let parent = self.top();
        // Anything under an element we do not know stays unknown, whatever its name.
        let tag = if parent == Some(Tag::Other) || (parent.is_none() && self.seen_multistatus) {
            Tag::Other
        } else {
            Tag::classify(parent, ns, local)
        };
        if matches!(parent, Some(Tag::Dead(_))) {
            self.dead_spoiled = true;
        }
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
            Tag::Dead(_) => self.dead_spoiled = false,
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

    pub(super) fn text(&mut self, s: &str) -> RemoteResult<()> {
        if self.top().is_some_and(Tag::keeps_text) {
            if self.text.len() + s.len() > MAX_TEXT {
                return Err(RemoteError::Protocol("multistatus element text too long".into()));
            }
            self.text.push_str(s);
        }
        Ok(())
    }

    pub(super) fn end(&mut self, on_response: &mut dyn FnMut(DavResponse) -> RemoteResult<()>) -> RemoteResult<()> {
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
            Tag::Dead(prop) => {
                if !std::mem::take(&mut self.dead_spoiled) {
                    self.propstat.dead.apply(prop, value);
                }
            }
            Tag::Prop | Tag::ResourceType | Tag::Collection | Tag::Other => {}
        }
        Ok(())
    }
}
