//! Setting a modification time: PROPPATCH of `DAV:getlastmodified` (an HTTP date) or, on
//! Nextcloud and ownCloud, of `DAV:lastmodified` (Unix seconds), believed only once a PROPFIND
//! shows the new time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info};

use super::unix_secs;
use crate::error::{RemoteError, RemoteResult};
use crate::remote::Entry;
use crate::webdav::propfind::PROPFIND_ENTRY;
use crate::webdav::DavRemote;

/// The property a server lets us set the modification time through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MtimeProp {
    /// `DAV:getlastmodified` as an HTTP date (WsgiDAV with `mutable_live_props`).
    GetLastModified,
    /// `DAV:lastmodified` as Unix seconds (Nextcloud and ownCloud, which refuse the former).
    OcLastModified,
}

/// The PROPPATCH body that sets the modification time through `prop`.
pub(super) fn proppatch_body(prop: MtimeProp, secs: u64) -> String {
    let (name, value) = match prop {
        MtimeProp::GetLastModified => (
            "getlastmodified",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)),
        ),
        MtimeProp::OcLastModified => ("lastmodified", secs.to_string()),
    };
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="utf-8"?>"#,
            r#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>"#,
            "<D:{name}>{value}</D:{name}>",
            "</D:prop></D:set></D:propertyupdate>"
        ),
        name = name,
        value = value
    )
}

impl DavRemote {
    /// [`crate::remote::Remote::set_mtime`] on WebDAV: PROPPATCH of `DAV:getlastmodified` (an HTTP
    /// date; WsgiDAV allows it when configured to), or on Nextcloud/ownCloud of `DAV:lastmodified`
    /// (Unix seconds). Success needs a 2xx for the property *and* the new time in a PROPFIND
    /// afterwards (to the second: HTTP dates have no fractions), since some servers say yes and
    /// keep their own time. A refusal is remembered (`capabilities().set_mtime` false) and any
    /// later call fails at once with `Unsupported`.
    pub(in crate::webdav) async fn set_mtime_inner(&self, id: &str, mtime: SystemTime) -> RemoteResult<Entry> {
        let Some(secs) = unix_secs(mtime) else {
            return Err(RemoteError::Unsupported(
                "modification times before 1970 or after 9999 cannot be sent".into(),
            ));
        };
        let forms = {
            let caps = self.caps();
            match (caps.set_mtime, caps.mtime_prop) {
                (Some(false), _) => {
                    return Err(RemoteError::Unsupported(
                        "this server does not let clients set modification times".into(),
                    ))
                }
                (_, Some(prop)) => vec![prop],
                _ if caps.oc_mtime => vec![MtimeProp::OcLastModified, MtimeProp::GetLastModified],
                _ => vec![MtimeProp::GetLastModified],
            }
        };
        for prop in forms {
            if !self.proppatch_mtime(id, prop, secs).await? {
                continue;
            }
            let (entry, _) = self.stat_id(id, PROPFIND_ENTRY).await?;
            if unix_secs(entry.mtime) == Some(secs) {
                let mut caps = self.caps();
                caps.set_mtime = Some(true);
                caps.mtime_prop = Some(prop);
                return Ok(entry);
            }
            debug!(item = %id, ?prop, "the server accepted the modification time but kept its own");
        }
        let mut caps = self.caps();
        if caps.set_mtime != Some(true) {
            if caps.set_mtime.is_none() {
                info!(server = %self.base, "the server does not let clients set modification times");
            }
            caps.set_mtime = Some(false);
        }
        Err(RemoteError::Unsupported(
            "this server does not let clients set modification times".into(),
        ))
    }

    /// One PROPPATCH; whether the server says it set the property.
    pub(super) async fn proppatch_mtime(&self, id: &str, prop: MtimeProp, secs: u64) -> RemoteResult<bool> {
        self.proppatch(id, &proppatch_body(prop, secs)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proppatch_bodies() {
        let b = proppatch_body(MtimeProp::GetLastModified, 784_111_777);
        assert!(
            b.contains("<D:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</D:getlastmodified>"),
            "{b}"
        );
        assert!(b.contains(r#"xmlns:D="DAV:""#));
        let b = proppatch_body(MtimeProp::OcLastModified, 784_111_777);
        assert!(b.contains("<D:lastmodified>784111777</D:lastmodified>"), "{b}");
    }
}
