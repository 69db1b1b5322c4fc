//! What a tree carries beyond bytes: permission bits, owner, times, and for symbolic links their
//! target. One type, [`Meta`], says it wherever it lives: in an [`crate::remote::Entry`] (what the
//! server holds of an item), in a [`crate::remote::Remote::set_meta`] call (what to keep), and in
//! the mount's local store for what the server cannot keep (`crate::metastore`).
//!
//! Every field is optional: `None` is "nothing kept", and the layer above then shows its defaults
//! (`--uid`, `--gid`, `--umask`, the server's own modification time). [`MetaFields`] names a set of
//! fields, for what a remote can keep ([`crate::remote::Capabilities::kept_meta`]).
//!
//! The text forms here ([`format_mode`], [`parse_mode`], [`format_id`], [`parse_id`],
//! [`format_time`], [`parse_time`]) are the ones written into WebDAV dead properties and the local
//! store. Parsing is strict and never fails loudly: a value that is not exactly what we write is
//! `None`, so a property set by someone else, or damaged, is ignored rather than trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The permission bits a mode may carry: rwx for owner, group and others, plus set-user-ID,
/// set-group-ID and sticky (`0o7777`). File type bits are not kept: the type comes from the
/// item's kind and, for symbolic links, from its name (see [`crate::remote::links`]).
pub const MODE_BITS: u32 = 0o7777;

/// Longest symbolic link target we keep, in bytes (Linux's `PATH_MAX` less the terminating NUL).
pub const MAX_LINK_TARGET: usize = 4095;

/// Metadata of one item beyond its bytes. `None` everywhere ([`Meta::default`]) is "nothing kept".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (within [`MODE_BITS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner's group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Modification time, to the nanosecond where the holder keeps that much.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub mtime: Option<SystemTime>,
    /// Access time.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub atime: Option<SystemTime>,
    /// Creation (birth) time: OneDrive's `fileSystemInfo.createdDateTime`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_time")]
    pub created: Option<SystemTime>,
    /// Target of a symbolic link. Remotes keep it as the content of the link's file (never as a
    /// property), so backends leave it `None`; the core reads it from the content and the local
    /// store may keep a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl Meta {
    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        *self == Meta::default()
    }

    /// The fields that hold a value.
    pub fn fields(&self) -> MetaFields {
        MetaFields {
            mode: self.mode.is_some(),
            owner: self.uid.is_some() || self.gid.is_some(),
            mtime: self.mtime.is_some(),
            atime: self.atime.is_some(),
            created: self.created.is_some(),
            link_target: self.link_target.is_some(),
        }
    }

    /// `self` with every field that `newer` holds replaced by `newer`'s value (a chmod after a
    /// chown keeps both).
    pub fn overlaid_with(&self, newer: &Meta) -> Meta {
        Meta {
            mode: newer.mode.or(self.mode),
            uid: newer.uid.or(self.uid),
            gid: newer.gid.or(self.gid),
            mtime: newer.mtime.or(self.mtime),
            atime: newer.atime.or(self.atime),
            created: newer.created.or(self.created),
            link_target: newer.link_target.clone().or_else(|| self.link_target.clone()),
        }
    }

    /// Only the fields in `fields` (the rest `None`): what a remote that keeps `fields` is given.
    pub fn restricted_to(&self, fields: MetaFields) -> Meta {
        Meta {
            mode: self.mode.filter(|_| fields.mode),
            uid: self.uid.filter(|_| fields.owner),
            gid: self.gid.filter(|_| fields.owner),
            mtime: self.mtime.filter(|_| fields.mtime),
            atime: self.atime.filter(|_| fields.atime),
            created: self.created.filter(|_| fields.created),
            link_target: self.link_target.clone().filter(|_| fields.link_target),
        }
    }

    /// Why this metadata cannot be kept as it is (a mode with type bits, a uid of `u32::MAX`,
    /// which chown(2) reads as "leave unchanged", an over-long or empty link target, one with a
    /// NUL); `None` when it can.
    pub fn invalid(&self) -> Option<String> {
        if let Some(mode) = self.mode.filter(|m| m & !MODE_BITS != 0) {
            return Some(format!("mode {mode:o} has bits beyond {MODE_BITS:o}"));
        }
        if self.uid == Some(u32::MAX) || self.gid == Some(u32::MAX) {
            return Some("uid and gid -1 mean \"unchanged\", not an owner".into());
        }
        if let Some(target) = &self.link_target {
            if let Err(why) = crate::remote::links::check_target(target) {
                return Some(why);
            }
        }
        None
    }
}

/// A set of [`Meta`] fields: what a remote keeps, what a value holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaFields {
    /// Permission bits.
    pub mode: bool,
    /// uid and gid.
    pub owner: bool,
    /// Modification time (to the precision the holder states elsewhere).
    pub mtime: bool,
    /// Access time.
    pub atime: bool,
    /// Creation time.
    pub created: bool,
    /// Symbolic link target (only the local store keeps it as metadata).
    pub link_target: bool,
}

impl MetaFields {
    /// No field.
    pub const NONE: MetaFields = MetaFields {
        mode: false,
        owner: false,
        mtime: false,
        atime: false,
        created: false,
        link_target: false,
    };

    /// Every field a remote can keep as a property (mode, owner and the three times; link
    /// targets are content, not properties).
    pub const PROPERTIES: MetaFields = MetaFields {
        mode: true,
        owner: true,
        mtime: true,
        atime: true,
        created: true,
        link_target: false,
    };

    /// Whether no field is in the set.
    pub fn is_empty(self) -> bool {
        self == MetaFields::NONE
    }

    /// The fields of `self` that are not in `other`: what is left for the local store when a
    /// remote keeps `other`.
    pub fn without(self, other: MetaFields) -> MetaFields {
        MetaFields {
            mode: self.mode && !other.mode,
            owner: self.owner && !other.owner,
            mtime: self.mtime && !other.mtime,
            atime: self.atime && !other.atime,
            created: self.created && !other.created,
            link_target: self.link_target && !other.link_target,
        }
    }
}

/// A mode as we write it: four octal digits (`0755`, `4755`).
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & MODE_BITS)
}

/// A mode written by [`format_mode`]: one to six octal digits whose value has no bits beyond
/// [`MODE_BITS`]. Anything else (`rwxr-xr-x`, `0x1ed`, `100644` with type bits, `-1`) is `None`.
pub fn parse_mode(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| m & !MODE_BITS == 0)
}

/// A uid or gid as we write it: decimal.
pub fn format_id(id: u32) -> String {
    id.to_string()
}

/// A uid or gid written by [`format_id`]: decimal digits only, below `u32::MAX` (which chown(2)
/// reserves for "unchanged").
pub fn parse_id(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// A time as we write it: seconds since the epoch and nanoseconds, `1700000000.123456789`; before
/// the epoch with a minus sign (`-1.500000000` is a second and a half before it).
pub fn format_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            format!("-{}.{:09}", d.as_secs(), d.subsec_nanos())
        }
    }
}

/// A time written by [`format_time`]: an optional `-`, up to 12 digits of seconds (beyond year
/// 30000 is not a file time), then optionally `.` and one to nine digits of fraction. Anything
/// else (an HTTP date, an exponent, spaces inside) is `None`.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = match rest.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (rest, None),
    };
    let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs, 12) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos = match frac {
        None => 0,
        Some(f) if digits(f, 9) => f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    let d = Duration::new(secs, nanos);
    if negative {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

/// Serde form of an optional time: the text of [`format_time`], so that times before the epoch
/// and nanoseconds survive (serde's own `SystemTime` form refuses times before 1970).
mod opt_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_time(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not a time: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn modes_round_trip_and_foreign_forms_are_refused() {
        for mode in [0, 0o644, 0o755, 0o4755, 0o7777, 0o1777] {
            assert_eq!(parse_mode(&format_mode(mode)), Some(mode), "{mode:o}");
        }
        assert_eq!(format_mode(0o644), "0644");
        assert_eq!(parse_mode(" 755 "), Some(0o755));
        for bad in [
            "",
            "rwxr-xr-x",
            "0x1ed",
            "100644",
            "17777",
            "-1",
            "8",
            "0o755",
            "7 55",
            "0644\n0",
        ] {
            assert_eq!(parse_mode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_round_trip_and_minus_one_is_no_owner() {
        for id in [0, 1000, 65534, u32::MAX - 1] {
            assert_eq!(parse_id(&format_id(id)), Some(id));
        }
        for bad in [
            "",
            "-1",
            "4294967295",
            "4294967296",
            "1e3",
            "0x10",
            "12 3",
            "+5",
            "99999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_keep_nanoseconds_and_the_years_before_1970() {
        for time in [
            t(0, 0),
            t(1_700_000_000, 123_456_789),
            t(1, 1),
            UNIX_EPOCH - Duration::new(1, 500_000_000),
            UNIX_EPOCH - Duration::new(86_400 * 365 * 50, 7),
        ] {
            assert_eq!(parse_time(&format_time(time)), Some(time), "{}", format_time(time));
        }
        assert_eq!(format_time(t(5, 42)), "5.000000042");
        assert_eq!(format_time(UNIX_EPOCH - Duration::new(1, 500_000_000)), "-1.500000000");
        assert_eq!(parse_time("12"), Some(t(12, 0)));
        assert_eq!(parse_time("12.5"), Some(t(12, 500_000_000)));
        for bad in [
            "",
            "-",
            ".5",
            "12.",
            "12.1234567890",
            "1e9",
            "Sat, 22 Nov 2025 10:00:00 GMT",
            "2024-01-01T00:00:00Z",
            "1 2",
            "+12",
            "9999999999999",
            "--1",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn overlay_restrict_and_fields() {
        let old = Meta {
            mode: Some(0o644),
            uid: Some(1),
            mtime: Some(t(10, 0)),
            ..Meta::default()
        };
        let new = Meta {
            mode: Some(0o755),
            gid: Some(2),
            ..Meta::default()
        };
        let both = old.overlaid_with(&new);
        assert_eq!(
            both,
            Meta {
                mode: Some(0o755),
                uid: Some(1),
                gid: Some(2),
                mtime: Some(t(10, 0)),
                ..Meta::default()
            }
        );
        let times_only = MetaFields {
            mtime: true,
            created: true,
            ..MetaFields::NONE
        };
        let kept = both.restricted_to(times_only);
        assert_eq!(
            kept,
            Meta {
                mtime: Some(t(10, 0)),
                ..Meta::default()
            }
        );
        assert_eq!(
            both.fields().without(times_only),
            MetaFields {
                mode: true,
                owner: true,
                ..MetaFields::NONE
            }
        );
        assert!(Meta::default().is_empty() && Meta::default().fields().is_empty());
        assert!(!both.is_empty());
    }

    #[test]
    fn invalid_metadata_is_named() {
        assert!(Meta::default().invalid().is_none());
        let m = |f: fn(&mut Meta)| {
            let mut m = Meta::default();
            f(&mut m);
            m.invalid()
        };
        assert!(m(|m| m.mode = Some(0o100644)).is_some());
        assert!(m(|m| m.uid = Some(u32::MAX)).is_some());
        assert!(m(|m| m.gid = Some(u32::MAX)).is_some());
        assert!(m(|m| m.link_target = Some(String::new())).is_some());
        assert!(m(|m| m.link_target = Some("a\0b".into())).is_some());
        assert!(m(|m| m.link_target = Some("x".repeat(MAX_LINK_TARGET + 1))).is_some());
        assert!(m(|m| m.link_target = Some("../a b/ü".into())).is_none());
        assert!(m(|m| m.mode = Some(0o7777)).is_none());
    }

    #[test]
    fn serde_form_keeps_every_field_and_refuses_bad_times() {
        let meta = Meta {
            mode: Some(0o4755),
            uid: Some(0),
            gid: Some(100),
            mtime: Some(UNIX_EPOCH - Duration::new(3, 1)),
            atime: Some(t(1_700_000_000, 999_999_999)),
            created: Some(t(1, 0)),
            link_target: Some("/abs/target".into()),
        };
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<Meta>(&json).unwrap(), meta);
        assert_eq!(serde_json::to_string(&Meta::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<Meta>(r#"{"mtime":"yesterday"}"#).is_err());
    }
}
