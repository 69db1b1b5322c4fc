//! driveItem resources as we read them, and how they become [`Entry`]s.
//!
//! Choices, with the reasons (Microsoft Graph docs: "driveItem resource type"):
//! - **Version.** A file's version is its `cTag` (content tag), falling back to `eTag` when the
//!   server gives no `cTag`: the `eTag` also changes on renames and other metadata-only changes,
//!   which must not throw away cached content. Folders use their `eTag` on both flavours: business
//!   drives never give folders a `cTag`, and a personal folder's `cTag` changes with every change
//!   anywhere below it, which says nothing about the folder itself.
//! - **mtime** is `fileSystemInfo.lastModifiedDateTime` (the time the writing client set, what
//!   other OneDrive clients show) when present, else the service's `lastModifiedDateTime`, else
//!   the epoch (a fixed value, so two stats of an unchanged item agree).
//! - **Kinds.** Only items with a `file` or `folder` facet are shown. Packages (OneNote
//!   notebooks: neither a readable file nor a listable folder) and `remoteItem` shortcuts to other
//!   drives are hidden: a listing skips them and a lookup reports `NotFound`, so the mount never
//!   shows something it cannot open.
//! - **Root.** The root's `name` is `root` on the wire; as an [`Entry`] its name is empty.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use crate::remote::{Entry, EntryKind, ItemId, Meta, Version};

/// `$select` for items: only what [`to_entry`] and reads need. `@microsoft.graph.downloadUrl` must
/// be named explicitly once `$select` is used (`docs/onedrive.md`, Items and versions).
pub const ITEM_SELECT: &str = "id,name,size,eTag,cTag,file,folder,package,remoteItem,root,fileSystemInfo,\
lastModifiedDateTime,@microsoft.graph.downloadUrl";

/// The driveItem fields we use.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveItem {
    /// Stable id.
    pub id: String,
    /// Name, server's spelling.
    #[serde(default)]
    pub name: Option<String>,
    /// Bytes (folders: total of descendants).
    #[serde(default)]
    pub size: Option<i64>,
    /// Changes on any change of the item.
    #[serde(default, rename = "eTag")]
    pub e_tag: Option<String>,
    /// Changes on content changes only.
    #[serde(default, rename = "cTag")]
    pub c_tag: Option<String>,
    /// Present on files.
    #[serde(default)]
    pub file: Option<Value>,
    /// Present on folders.
    #[serde(default)]
    pub folder: Option<Value>,
    /// Present on packages (OneNote).
    #[serde(default)]
    pub package: Option<Value>,
    /// Present on shortcuts into other drives.
    #[serde(default)]
    pub remote_item: Option<Value>,
    /// Present on the drive's root.
    #[serde(default)]
    pub root: Option<Value>,
    /// Client-set times.
    #[serde(default)]
    pub file_system_info: Option<FileSystemInfo>,
    /// Service-side modification time.
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    /// Pre-authenticated content URL (files only).
    #[serde(default, rename = "@microsoft.graph.downloadUrl")]
    pub download_url: Option<String>,
}

/// `fileSystemInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSystemInfo {
    /// Modification time as the writing client set it.
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    /// Creation time as the writing client set it.
    #[serde(default)]
    pub created_date_time: Option<String>,
}

/// One page of a collection (`children`, `drives`).
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub value: Vec<T>,
    /// The next page, absent on the last one.
    #[serde(default, rename = "@odata.nextLink")]
    pub next_link: Option<String>,
}

impl DriveItem {
    /// File or folder; `None` for what we hide (packages, remote items, unknown kinds).
    pub fn kind(&self) -> Option<EntryKind> {
        if self.remote_item.is_some() || self.package.is_some() {
            return None;
        }
        if self.folder.is_some() || self.root.is_some() {
            Some(EntryKind::Directory)
        } else if self.file.is_some() {
            Some(EntryKind::File)
        } else {
            None
        }
    }

    /// The content version (see the module doc).
    pub fn version(&self) -> Option<Version> {
        let raw = match self.kind() {
            Some(EntryKind::File) => self.c_tag.as_deref().or(self.e_tag.as_deref()),
            _ => self.e_tag.as_deref(),
        };
        raw.map(Version::from_etag).filter(|v| !v.as_str().is_empty())
    }

    /// The modification time (see the module doc).
    pub fn mtime(&self) -> SystemTime {
        self.file_system_info
            .as_ref()
            .and_then(|f| f.last_modified_date_time.as_deref())
            .and_then(parse_time)
            .or_else(|| self.last_modified_date_time.as_deref().and_then(parse_time))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// What the drive keeps of the item's metadata: the client-set times of `fileSystemInfo`
    /// (mode and owner have no place on OneDrive). A time that does not parse is not kept.
    pub fn meta(&self) -> Meta {
        let fs = self.file_system_info.as_ref();
        Meta {
            mtime: fs
                .and_then(|f| f.last_modified_date_time.as_deref())
                .and_then(parse_time),
            created: fs.and_then(|f| f.created_date_time.as_deref()).and_then(parse_time),
            ..Meta::default()
        }
    }

    /// The entry, or `None` for hidden items.
    pub fn to_entry(&self) -> Option<Entry> {
        let kind = self.kind()?;
        let name = if self.root.is_some() {
            String::new()
        } else {
            self.name.clone().unwrap_or_default()
        };
        Some(Entry {
            id: ItemId::new(self.id.as_str()),
            name,
            kind,
            size: self.size.unwrap_or(0).max(0) as u64,
            mtime: self.mtime(),
            version: self.version(),
            meta: self.meta(),
        })
    }
}

/// Parse an ISO 8601 / RFC 3339 UTC timestamp as Graph writes them: `2016-03-21T20:01:37Z`,
/// with optional fractional seconds, and tolerating a numeric offset (`+02:00`).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].bytes().take(9).enumerate() {
            nanos += u64::from(c - b'0') * 10u64.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) && &r[3..4] == ":" => {
            let oh: i64 = r[1..3].parse().ok()?;
            let om: i64 = r[4..6].parse().ok()?;
            let o = oh * 3600 + om * 60;
            if r.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(v: Value) -> DriveItem {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn times() {
        let t = |s| parse_time(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(t("2016-03-21T20:01:37Z"), Some(Duration::from_secs(1_458_590_497)));
        assert_eq!(
            t("2015-01-29T09:21:55.523Z"),
            Some(Duration::from_millis(1_422_523_315_523))
        );
        assert_eq!(t("2016-03-21T22:01:37+02:00"), Some(Duration::from_secs(1_458_590_497)));
        assert_eq!(t("2024-02-29T00:00:00Z"), Some(Duration::from_secs(1_709_164_800)));
        assert_eq!(t("2016-03-21 20:01:37"), None);
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2016-13-21T20:01:37Z"), None);
        assert_eq!(t("2016-03-21T20:01:37.Z"), None);
    }

    #[test]
    fn file_entries_use_ctag_and_client_mtime() {
        let i = item(json!({
            "id": "01A", "name": "Report.docx", "size": 35212,
            "eTag": "\"{B0D3},3\"", "cTag": "\"c:{B0D3},2\"",
            "lastModifiedDateTime": "2024-03-02T11:30:00Z",
            "fileSystemInfo": { "lastModifiedDateTime": "2024-03-02T11:29:40Z" },
            "file": { "mimeType": "x" }
        }));
        let e = i.to_entry().unwrap();
        assert_eq!(e.name, "Report.docx");
        assert_eq!(e.kind, EntryKind::File);
        assert_eq!(e.size, 35212);
        assert_eq!(e.version, Some(Version::from_etag("c:{B0D3},2")));
        assert_eq!(e.mtime, parse_time("2024-03-02T11:29:40Z").unwrap());
        assert_eq!(e.meta.mtime, Some(e.mtime));
        assert_eq!(e.meta.created, None);
        assert_eq!((e.meta.mode, e.meta.uid), (None, None));
    }

    #[test]
    fn file_system_info_times_are_metadata_and_bad_ones_are_ignored() {
        let i = item(json!({
            "id": "01A", "name": "a", "file": {},
            "fileSystemInfo": { "createdDateTime": "2020-02-02T02:02:02.5Z",
                                "lastModifiedDateTime": "2021-01-01T00:00:00.123Z" }
        }));
        let m = i.meta();
        assert_eq!(m.created, parse_time("2020-02-02T02:02:02.500Z"));
        assert_eq!(m.mtime, parse_time("2021-01-01T00:00:00.123Z"));
        let bad = item(json!({
            "id": "01B", "name": "b", "file": {},
            "fileSystemInfo": { "createdDateTime": "soon", "lastModifiedDateTime": "2021-13-01T00:00:00Z" }
        }));
        assert!(bad.meta().is_empty());
    }

    #[test]
    fn fallbacks_folders_and_hidden_kinds() {
        // No cTag (business delta, or a server that leaves it out): eTag.
        let f = item(
            json!({"id": "a", "name": "x", "eTag": "e1", "file": {}, "lastModifiedDateTime": "2024-01-01T00:00:00Z"}),
        );
        assert_eq!(f.version(), Some(Version::from_etag("e1")));
        assert_eq!(f.mtime(), parse_time("2024-01-01T00:00:00Z").unwrap());
        // Personal folders carry a cTag that changes with descendants: folders use the eTag.
        let d =
            item(json!({"id": "b", "name": "d", "eTag": "e2", "cTag": "c2", "folder": {"childCount": 1}, "size": 10}));
        let e = d.to_entry().unwrap();
        assert_eq!(
            (e.kind, e.version),
            (EntryKind::Directory, Some(Version::from_etag("e2")))
        );
        assert_eq!(e.mtime, SystemTime::UNIX_EPOCH);
        let root = item(json!({"id": "r", "name": "root", "eTag": "e3", "folder": {}, "root": {}}));
        assert_eq!(root.to_entry().unwrap().name, "");
        let pkg = item(json!({"id": "p", "name": "Notes", "package": {"type": "oneNote"}}));
        assert!(pkg.to_entry().is_none());
        let remote = item(json!({"id": "s", "name": "Shared", "folder": {}, "remoteItem": {"id": "x"}}));
        assert!(remote.to_entry().is_none());
        assert!(item(json!({"id": "n"})).to_entry().is_none());
        assert_eq!(
            item(json!({"id": "z", "file": {}, "size": -1}))
                .to_entry()
                .unwrap()
                .size,
            0
        );
    }
}
