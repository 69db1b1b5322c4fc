//! Small helpers: ISO 8601 time formatting/parsing without a date crate, random tokens and ids,
//! percent-encoding of path segments, MIME type guessing.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use rand::Rng as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Characters left unencoded when the server writes a path (`parentReference.path`): RFC 3986 `pchar` minus
/// `:` (which would end a Graph path-addressing block).
pub const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// Strict encoding for query-string values we build ourselves (tokens are base64url anyway).
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment for server-written paths.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// Percent-encodes a query value.
pub fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Percent-decodes one raw path segment exactly once (`+` stays a plus). `None` if the result is not UTF-8.
pub fn decode_segment(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Parses a query string into (name, value) pairs (names are case-sensitive, values decoded).
pub fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    match q {
        None => Vec::new(),
        Some(q) => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    }
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut ms = d.subsec_millis();
            if ms > 0 {
                secs -= 1;
                ms = 1000 - ms;
            }
            (secs, ms)
        }
    }
}

fn ymdhms(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// ISO 8601 UTC: `2016-03-21T20:01:37Z`, or with milliseconds `2015-01-29T09:21:55.523Z`.
pub fn fmt_time(t: SystemTime, millis: bool) -> String {
    let (secs, ms) = split_time(t);
    let (y, mo, d, h, mi, s) = ymdhms(secs);
    if millis {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// The identity platform's timestamp style: `2024-01-02 16:21:38Z`.
pub fn fmt_aad_time(t: SystemTime) -> String {
    let (secs, _) = split_time(t);
    let (y, mo, d, h, mi, s) = ymdhms(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// Truncates a time to whole seconds (OneDrive for Business stores `fileSystemInfo` with second precision).
pub fn trunc_secs(t: SystemTime) -> SystemTime {
    let (secs, _) = split_time(t);
    from_secs_ms(secs, 0)
}

/// Truncates a time to whole milliseconds (personal OneDrive precision).
pub fn trunc_millis(t: SystemTime) -> SystemTime {
    let (secs, ms) = split_time(t);
    from_secs_ms(secs, ms)
}

fn from_secs_ms(secs: i64, ms: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs((-secs) as u64) + Duration::from_millis(ms as u64)
    }
}

/// Parses ISO 8601 / RFC 3339 date-times: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; a missing zone means
/// UTC (Graph accepts both). Sub-millisecond digits are dropped.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let mut v = 0u32;
        for (i, c) in frac[..digits].bytes().take(3).enumerate() {
            v += (c - b'0') as u32 * [100, 10, 1][i];
        }
        ms = v;
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &rest[1..];
            let (oh, om) = match z.len() {
                5 if z.as_bytes()[2] == b':' => (z[0..2].parse::<i64>().ok()?, z[3..5].parse::<i64>().ok()?),
                4 => (z[0..2].parse::<i64>().ok()?, z[2..4].parse::<i64>().ok()?),
                2 => (z.parse::<i64>().ok()?, 0),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(from_secs_ms(secs, ms))
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A random GUID, upper-case hex (`86EB4C8E-1C7E-4D38-9C47-2A8A1E3B4F5D`).
pub fn random_guid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random lower-case GUID (user ids, request ids).
pub fn random_guid_lower() -> String {
    random_guid().to_ascii_lowercase()
}

/// Random string over `alphabet`.
pub fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Upper-case hex of bytes.
pub fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// MIME type from the file extension, as the service determines it (it ignores the uploaded Content-Type).
pub fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" | "csv" | "ini" | "conf" | "cfg" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/x-zip-compressed",
        "gz" | "tgz" => "application/x-gzip",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        let t = parse_time("2015-01-29T09:21:55.523Z").unwrap();
        assert_eq!(fmt_time(t, true), "2015-01-29T09:21:55.523Z");
        assert_eq!(fmt_time(t, false), "2015-01-29T09:21:55Z");
        assert_eq!(fmt_aad_time(t), "2015-01-29 09:21:55Z");
        let t2 = parse_time("2016-03-21T22:01:37+02:00").unwrap();
        assert_eq!(fmt_time(t2, false), "2016-03-21T20:01:37Z");
        assert_eq!(parse_time("2024-02-29T00:00:00"), parse_time("2024-02-29T00:00:00Z"));
        assert!(parse_time("2024-13-01T00:00:00Z").is_none());
        assert!(parse_time("yesterday").is_none());
        let old = parse_time("1960-06-01T12:00:00.250Z").unwrap();
        assert_eq!(fmt_time(old, true), "1960-06-01T12:00:00.250Z");
        assert_eq!(fmt_time(UNIX_EPOCH, false), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn segments() {
        assert_eq!(decode_segment("a%20b+c%25%23").unwrap(), "a b+c%#");
        assert_eq!(decode_segment("%E2%82%AC").unwrap(), "€");
        assert!(decode_segment("%FF").is_none());
        assert_eq!(encode_segment("a b:c#%€"), "a%20b%3Ac%23%25%E2%82%AC");
    }
}
