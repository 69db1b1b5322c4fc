//! Metadata kept on a WebDAV server as dead properties in a namespace of our own (RFC 4918 §4:
//! a server that supports them stores any property a client sets with PROPPATCH and returns it
//! in PROPFIND, unchanged, until the resource is deleted; MOVE takes them along).
//!
//! The namespace is [`META_NS`]; the properties, all plain text of our own format
//! (`crate::remote::meta`):
//!
//! | property | value | example |
//! |---|---|---|
//! | `mode` | permission bits, octal | `0755` |
//! | `uid`, `gid` | decimal | `1000` |
//! | `mtime`, `atime`, `created` | seconds since the epoch and nanoseconds | `1700000000.123456789` |
//! | `stamp` | the server's `getlastmodified` (Unix seconds) and size when `mtime` was set | `1700000005:42` |
//!
//! `mtime` belongs to the content it was set for: a server keeps dead properties across a PUT,
//! so after another client (one that does not know our properties) writes the file, our `mtime`
//! would be stale. The `stamp` records which version it was set for; when the server's time or
//! size no longer match it, the `mtime` is ignored and the server's own time shows. (Folders get
//! a new `getlastmodified` when their members change, so a folder's kept `mtime` lasts until then,
//! which is also what a local folder does.) Mode, owner and the other times stay.
//!
//! A value that is not in our format (another client's, damaged, holding XML elements) is ignored
//! as if absent, never an error. What each server does with dead properties is probed once per
//! mount ([`DavRemote::probe_meta`]), since several accept a PROPPATCH and keep nothing.

use std::time::UNIX_EPOCH;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use tracing::{debug, info, warn};

use super::propfind::{self, DavResponse, Props, PROPFIND_ENTRY};
use super::{href, DavRemote};
use crate::error::{RemoteError, RemoteResult};
use crate::http::HttpRequest;
use crate::remote::meta::{format_id, format_mode, format_time, parse_id, parse_mode, parse_time};
use crate::remote::{Entry, ItemId, Meta, MetaFields, Precondition};

/// The XML namespace of our dead properties. A URN: it names, it is never fetched, and it says
/// the format's version (a change of format gets a new name, so old values read as foreign).
pub const META_NS: &str = meta_ns!();

/// One of our dead properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadProp {
    /// Permission bits.
    Mode,
    /// Owner.
    Uid,
    /// Group.
    Gid,
    /// Modification time.
    Mtime,
    /// Access time.
    Atime,
    /// Creation time.
    Created,
    /// Which version `mtime` was set for.
    Stamp,
    /// The value the capability probe writes and reads back.
    Probe,
}

impl DeadProp {
    /// The property with local name `local` in our namespace, if it is one.
    pub fn from_local(local: &str) -> Option<DeadProp> {
        Some(match local {
            "mode" => DeadProp::Mode,
            "uid" => DeadProp::Uid,
            "gid" => DeadProp::Gid,
            "mtime" => DeadProp::Mtime,
            "atime" => DeadProp::Atime,
            "created" => DeadProp::Created,
            "stamp" => DeadProp::Stamp,
            "probe" => DeadProp::Probe,
            _ => return None,
        })
    }
}

/// Our dead properties on one resource, as far as their values are ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadProps {
    /// Mode, owner and times (`mtime` before the stamp check, see [`entry_meta`]).
    pub meta: Meta,
    /// The stamp `mtime` was set with.
    pub stamp: Option<String>,
    /// The probe's value.
    pub probe: Option<String>,
}

impl DeadProps {
    /// Take `value` for `prop` when it is in our format; anything else is ignored.
    pub fn apply(&mut self, prop: DeadProp, value: &str) {
        let m = &mut self.meta;
        match prop {
            DeadProp::Mode => m.mode = parse_mode(value),
            DeadProp::Uid => m.uid = parse_id(value),
            DeadProp::Gid => m.gid = parse_id(value),
            DeadProp::Mtime => m.mtime = parse_time(value),
            DeadProp::Atime => m.atime = parse_time(value),
            DeadProp::Created => m.created = parse_time(value),
            DeadProp::Stamp => self.stamp = parse_stamp(value).map(str::to_string),
            DeadProp::Probe => self.probe = Some(value.to_string()).filter(|v| v.len() <= 64),
        }
    }

    /// Values from a later `<propstat>` of the same resource win.
    pub fn merge(&mut self, other: DeadProps) {
        self.meta = self.meta.overlaid_with(&other.meta);
        self.stamp = other.stamp.or(self.stamp.take());
        self.probe = other.probe.or(self.probe.take());
    }
}

/// A stamp as we write it, `SECS:SIZE`, both decimal; `None` for anything else.
fn parse_stamp(text: &str) -> Option<&str> {
    let text = text.trim();
    let (secs, size) = text.split_once(':')?;
    let number = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    (number(secs) && number(size)).then_some(text)
}

/// The stamp of the version `props` describe: `getlastmodified` in Unix seconds and the size.
/// `None` when the server gives no time (then no `mtime` of ours can be tied to a version).
pub fn stamp_of(props: &Props) -> Option<String> {
    let secs = props.last_modified?.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(format!("{secs}:{}", props.content_length.unwrap_or(0)))
}

/// What the server keeps of an item's metadata: our dead properties, with `mtime` only when its
/// stamp matches the version the server now describes (see the module doc).
pub fn entry_meta(props: &Props) -> Meta {
    let mut meta = props.dead.meta.clone();
    if meta.mtime.is_some() && (props.dead.stamp.is_none() || props.dead.stamp != stamp_of(props)) {
        meta.mtime = None;
    }
    meta
}

/// Whether `seen` holds every value `sent` holds (fields `sent` leaves out may hold anything).
fn holds(seen: &Meta, sent: &Meta) -> bool {
    fn same<T: PartialEq>(sent: &Option<T>, seen: &Option<T>) -> bool {
        sent.is_none() || sent == seen
    }
    same(&sent.mode, &seen.mode)
        && same(&sent.uid, &seen.uid)
        && same(&sent.gid, &seen.gid)
        && same(&sent.mtime, &seen.mtime)
        && same(&sent.atime, &seen.atime)
        && same(&sent.created, &seen.created)
}

/// The PROPPATCH body that sets every field `meta` holds (and `stamp`, with an `mtime`).
fn set_body(meta: &Meta, stamp: Option<&str>) -> String {
    // One `<D:set>` per property: lighttpd (1.4.69) keeps only the first property of each
    // `<D:prop>` and still answers 204 for all of them.
    let mut sets = String::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            sets.push_str(&format!("<D:set><D:prop><C:{name}>{v}</C:{name}></D:prop></D:set>"));
        }
    };
    put("mode", meta.mode.map(format_mode));
    put("uid", meta.uid.map(format_id));
    put("gid", meta.gid.map(format_id));
    put("mtime", meta.mtime.map(format_time));
    put("stamp", meta.mtime.and(stamp.map(str::to_string)));
    put("atime", meta.atime.map(format_time));
    put("created", meta.created.map(format_time));
    update_body(&sets)
}

/// A PROPPATCH body of the `<D:set>` and `<D:remove>` instructions `updates`.
fn update_body(updates: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propertyupdate xmlns:D="DAV:" xmlns:C="{ns}">{updates}</D:propertyupdate>"#
        ),
        ns = META_NS,
        updates = updates
    )
}

/// A PROPFIND body asking for the probe's property only.
const PROPFIND_PROBE: &str = concat!(
    r#"<?xml version="1.0" encoding="utf-8"?>"#,
    r#"<D:propfind xmlns:D="DAV:" xmlns:C=""#,
    meta_ns!(),
    r#""><D:prop><C:probe/></D:prop></D:propfind>"#
);

impl DavRemote {
    /// The fields of [`Meta`] this server keeps: none until [`DavRemote::probe_meta`] has found
    /// that dead properties stick, then mode, owner and the three times.
    pub(super) fn kept_meta(&self) -> MetaFields {
        match *self.dead_props.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(true) => MetaFields::PROPERTIES,
            _ => MetaFields::NONE,
        }
    }

    /// Find out, once per mount, whether the server keeps dead properties: PROPPATCH a property
    /// of ours with a random value on the share's root folder, read it back with a PROPFIND, and
    /// remove it again. Only a read-back of the same value counts: some servers answer 207 or 204
    /// to a PROPPATCH and keep nothing. A transient failure gives no verdict (`Err`, asked again
    /// next time); any other refusal means "no". Returns what the server keeps.
    pub async fn probe_meta(&self) -> RemoteResult<MetaFields> {
        if self.dead_props.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(self.kept_meta());
        }
        let _one_probe_at_a_time = self.probe_lock.lock().await;
        if self.dead_props.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(self.kept_meta());
        }
        let token = format!("{:016x}", rand::random::<u64>());
        let verdict = match self
            .proppatch(
                "",
                &update_body(&format!("<D:set><D:prop><C:probe>{token}</C:probe></D:prop></D:set>")),
            )
            .await
        {
            Ok(true) => {
                let url = href::item_url(&self.base, "", true)?;
                let answers = self.propfind(url, super::Depth::Zero, PROPFIND_PROBE).await?;
                let kept = answers
                    .iter()
                    .any(|(_, r)| r.props.dead.probe.as_deref() == Some(&token));
                if let Err(e) = self
                    .proppatch("", &update_body("<D:remove><D:prop><C:probe/></D:prop></D:remove>"))
                    .await
                {
                    debug!(error = %e, "could not remove the probe's dead property");
                }
                kept
            }
            Ok(false) => false,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                debug!(error = %e, "the dead-property probe was refused");
                false
            }
        };
        *self.dead_props.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        info!(server = %self.base, dead_properties = verdict, "probed whether the server keeps dead properties");
        Ok(self.kept_meta())
    }

    /// [`crate::remote::Remote::set_meta`] on WebDAV: one PROPPATCH of the fields the server
    /// keeps, between two Depth-0 PROPFINDs. The first gives the stamp for `mtime` and checks a
    /// [`Precondition::Matches`] (so the check and the write are two steps: a change landing in
    /// between is not seen); the second shows what the server kept. A server that answers yes
    /// and keeps other values is an error, not a success.
    pub(super) async fn set_meta_inner(
        &self,
        id: &ItemId,
        meta: &Meta,
        precondition: Precondition,
    ) -> RemoteResult<Entry> {
        if let Some(why) = meta.invalid() {
            return Err(RemoteError::Unsupported(why));
        }
        let kept = meta.restricted_to(self.probe_meta().await?);
        let (entry, resp) = self.stat_id(id.as_str(), PROPFIND_ENTRY).await?;
        match precondition {
            Precondition::Absent => {
                return Err(RemoteError::Unsupported(
                    "metadata is set on an item that exists".into(),
                ))
            }
            Precondition::Matches(want) if entry.version.as_ref() != Some(&want) => {
                debug!(item = %id, ours = ?want, server = ?entry.version, "the server holds another version");
                return Err(RemoteError::PreconditionFailed);
            }
            _ => {}
        }
        if kept.is_empty() {
            return Ok(entry);
        }
        let stamp = stamp_of(&resp.props);
        if kept.mtime.is_some() && stamp.is_none() {
            // Our mtime would read back as stale at once (see `entry_meta`): say so rather than
            // set it and fail the read-back.
            warn!(item = %id, "the server gives no modification time, so ours cannot be tied to a version");
            return Err(RemoteError::Protocol(format!(
                "{id}: the server reports no getlastmodified, so a modification time cannot be kept"
            )));
        }
        if !self.proppatch(id.as_str(), &set_body(&kept, stamp.as_deref())).await? {
            return Err(RemoteError::Unsupported(format!(
                "the server refused to keep metadata for {id}"
            )));
        }
        let (entry, _) = self.stat_id(id.as_str(), PROPFIND_ENTRY).await?;
        if !holds(&entry.meta, &kept) {
            if entry.meta.mtime.is_none()
                && holds(
                    &entry.meta,
                    &Meta {
                        mtime: None,
                        ..kept.clone()
                    },
                )
            {
                // The item changed between the two PROPFINDs: the time went to the old version.
                debug!(item = %id, "the item changed while its modification time was set");
                return Err(RemoteError::PreconditionFailed);
            }
            warn!(item = %id, sent = ?kept, kept = ?entry.meta, "the server accepted metadata but kept other values");
            return Err(RemoteError::Protocol(format!(
                "the server did not keep the metadata set on {id}"
            )));
        }
        Ok(entry)
    }

    /// One PROPPATCH of `body` on item `id` (a folder when `id` is the root); whether the server
    /// says it applied every property.
    pub(super) async fn proppatch(&self, id: &str, body: &str) -> RemoteResult<bool> {
        let url = href::item_url(&self.base, id, id.is_empty())?;
        let method = reqwest::Method::from_bytes(b"PROPPATCH").unwrap_or(reqwest::Method::OPTIONS);
        let mut req = HttpRequest::idempotent(method, url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"))
            .body(body.to_string());
        for refusal in [400, 403, 405, 409, 422, 501] {
            if let Ok(status) = StatusCode::from_u16(refusal) {
                req = req.accept_status(status);
            }
        }
        self.http
            .execute(&req, |resp| async move {
                let status = resp.status();
                if status == StatusCode::MULTI_STATUS {
                    let body = futures::TryStreamExt::map_err(resp.bytes_stream(), std::io::Error::other);
                    let reader = tokio_util::io::StreamReader::new(body);
                    let mut statuses = Vec::new();
                    propfind::parse_multistatus(reader, |r: DavResponse| {
                        statuses.extend(r.status);
                        statuses.extend(r.propstat_statuses);
                        Ok(())
                    })
                    .await?;
                    Ok(!statuses.is_empty() && statuses.iter().all(|s| (200..300).contains(s)))
                } else {
                    // lighttpd answers 204; the PROPFIND that follows tells the truth.
                    Ok(status.is_success())
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn props(dead: &[(DeadProp, &str)], last_modified: u64, size: u64) -> Props {
        let mut p = Props {
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(last_modified)),
            content_length: Some(size),
            ..Props::default()
        };
        for (prop, value) in dead {
            p.dead.apply(*prop, value);
        }
        p
    }

    #[test]
    fn our_values_are_read_and_foreign_ones_ignored() {
        let p = props(
            &[
                (DeadProp::Mode, "0755"),
                (DeadProp::Uid, "1000"),
                (DeadProp::Gid, "rwx"),
                (DeadProp::Atime, "Sat, 22 Nov 2025 10:00:00 GMT"),
                (DeadProp::Created, "5.5"),
                (DeadProp::Stamp, "bogus"),
            ],
            10,
            3,
        );
        let m = entry_meta(&p);
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert_eq!((m.gid, m.atime), (None, None));
        assert_eq!(m.created, Some(UNIX_EPOCH + Duration::from_millis(5500)));
        assert_eq!(p.dead.stamp, None);
    }

    #[test]
    fn mtime_counts_only_for_the_version_it_was_set_for() {
        let set = [(DeadProp::Mtime, "1.000000007"), (DeadProp::Stamp, "10:3")];
        let t = UNIX_EPOCH + Duration::new(1, 7);
        assert_eq!(entry_meta(&props(&set, 10, 3)).mtime, Some(t));
        // Rewritten by someone else: a new time or a new size.
        assert_eq!(entry_meta(&props(&set, 11, 3)).mtime, None);
        assert_eq!(entry_meta(&props(&set, 10, 4)).mtime, None);
        // No stamp at all: not ours to trust.
        assert_eq!(entry_meta(&props(&set[..1], 10, 3)).mtime, None);
        assert_eq!(stamp_of(&props(&[], 10, 3)).as_deref(), Some("10:3"));
        assert_eq!(stamp_of(&Props::default()), None);
    }

    #[test]
    fn read_back_compares_only_what_was_sent() {
        let seen = Meta {
            uid: Some(1),
            gid: Some(2),
            ..Meta::default()
        };
        let chown_user = Meta {
            uid: Some(1),
            ..Meta::default()
        };
        assert!(holds(&seen, &chown_user));
        assert!(holds(&seen, &Meta::default()));
        assert!(!holds(
            &seen,
            &Meta {
                uid: Some(3),
                ..Meta::default()
            }
        ));
        assert!(!holds(
            &seen,
            &Meta {
                mode: Some(0o644),
                ..Meta::default()
            }
        ));
    }

    #[test]
    fn bodies_name_only_what_is_set() {
        let meta = Meta {
            mode: Some(0o4755),
            uid: Some(0),
            mtime: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 1)),
            ..Meta::default()
        };
        let b = set_body(&meta, Some("1700000005:42"));
        assert!(b.contains(&format!(r#"xmlns:C="{META_NS}""#)), "{b}");
        assert!(
            b.contains("<D:set><D:prop><C:mode>4755</C:mode></D:prop></D:set>"),
            "{b}"
        );
        assert!(b.contains("<C:uid>0</C:uid>"), "{b}");
        assert!(b.contains("<C:mtime>1700000000.000000001</C:mtime>"), "{b}");
        assert!(b.contains("<C:stamp>1700000005:42</C:stamp>"), "{b}");
        assert!(
            !b.contains("gid") && !b.contains("atime") && !b.contains("created"),
            "{b}"
        );
        // No stamp without an mtime.
        let b = set_body(
            &Meta {
                mode: Some(0o644),
                ..Meta::default()
            },
            Some("1:1"),
        );
        assert!(!b.contains("stamp"), "{b}");
        assert!(PROPFIND_ENTRY.contains(META_NS) && PROPFIND_ENTRY.contains("<C:stamp/>"));
    }
}
