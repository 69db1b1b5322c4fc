//! Names OneDrive and SharePoint refuse (Microsoft docs: "Restrictions and limitations in OneDrive and SharePoint"), checked before anything is
//! sent, so that create, mkdir and rename fail at the FUSE call (EINVAL / ENAMETOOLONG) rather than
//! later in the upload queue.
//!
//! The rules common to personal and business drives: none of `" * : < > ? / \ |`; no leading or
//! trailing space; no trailing `.` (folders per the docs, files too per the project decision); no
//! `~$` prefix; not `.lock` or `desktop.ini`; not a device name (`CON`, `PRN`, `AUX`, `NUL`,
//! `COM0`–`COM9`, `LPT0`–`LPT9`) with or without an extension (the part before the first `.`); no
//! `_vti_` anywhere; at most 255 characters. Business-only rules (a folder starting with `~`,
//! `forms` at a library's root) are left to the server, whose `invalidPath` answer maps to the same
//! error. Names are compared case-insensitively. The 400-character path limit needs the path, which
//! the remote does not know: the server's `pathIsTooLong` maps to `NameTooLong`.

use crate::error::{RemoteError, RemoteResult};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

const FORBIDDEN: &[char] = &['"', '*', ':', '<', '>', '?', '/', '\\', '|'];

const DEVICES: &[&str] = &["CON", "PRN", "AUX", "NUL"];

/// Longest path (`/` plus the names from the drive's root), in characters.
pub const MAX_PATH_CHARS: usize = 400;

/// `Ok` when an item at `path` (names from the root joined by `/`) is within the 400-character limit.
pub fn check_path(path: &str) -> RemoteResult<()> {
    let chars = 1 + path.chars().count();
    if chars > MAX_PATH_CHARS {
        return Err(RemoteError::NameTooLong(format!(
            "the path would be {chars} characters; OneDrive allows {MAX_PATH_CHARS}"
        )));
    }
    Ok(())
}

/// `Ok` when OneDrive accepts `name` for a new file or folder.
pub fn check_name(name: &str) -> RemoteResult<()> {
    let bad = |why: &str| Err(RemoteError::InvalidName(format!("{name:?}: {why} (OneDrive)")));
    if name.is_empty() || name == "." || name == ".." {
        return bad("not a name");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(RemoteError::NameTooLong(format!(
            "{} characters; OneDrive allows {MAX_NAME_CHARS}",
            name.chars().count()
        )));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c) || *c == '\0') {
        return bad(&format!("the character {c:?} is not allowed"));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return bad("leading or trailing spaces are not allowed");
    }
    if name.ends_with('.') {
        return bad("a trailing dot is not allowed");
    }
    if name.starts_with("~$") {
        return bad("names starting with ~$ are not allowed");
    }
    let lower = name.to_lowercase();
    if lower == ".lock" || lower == "desktop.ini" {
        return bad("a reserved name");
    }
    if lower.contains("_vti_") {
        return bad("_vti_ is not allowed in names");
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let device = DEVICES.contains(&stem.as_str())
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if device {
        return bad("a reserved device name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_onedrive_refuses() {
        for bad in [
            "a\"b",
            "a*b",
            "a:b",
            "a<b",
            "a>b",
            "a?b",
            "a/b",
            "a\\b",
            "a|b",
            " lead",
            "trail ",
            "dot.",
            "~$doc.docx",
            ".lock",
            ".LOCK",
            "desktop.ini",
            "Desktop.INI",
            "CON",
            "con.txt",
            "Con.tar.gz",
            "prn",
            "AUX",
            "nul.x",
            "COM0",
            "com9.log",
            "LPT1",
            "lpt9",
            "a_vti_b",
            "_VTI_",
            "",
            ".",
            "..",
        ] {
            assert!(
                matches!(check_name(bad), Err(RemoteError::InvalidName(_))),
                "{bad:?} should be refused"
            );
        }
        assert!(matches!(check_name(&"x".repeat(256)), Err(RemoteError::NameTooLong(_))));
        assert!(check_path(&"p".repeat(399)).is_ok());
        assert!(matches!(check_path(&"p".repeat(400)), Err(RemoteError::NameTooLong(_))));
        assert!(check_path(&format!("{}/{}", "é".repeat(200), "ü".repeat(198))).is_ok());
        for good in [
            "a.txt",
            "x".repeat(255).as_str(),
            "é".repeat(255).as_str(),
            "CONSOLE",
            "com10",
            "LPTX",
            "a#b%c",
            "~tmp",
            "a$~",
            ".hidden",
            "desktop.ini.bak",
            "a.lock",
            "vti",
            "Report (1).docx",
        ] {
            assert!(check_name(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
