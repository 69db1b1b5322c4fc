//! Symbolic links on drives that hold only files and folders, stored the way rclone's `--links`
//! stores them: a link `name -> target` is a small file called `name.rclonelink` whose whole
//! content is the target (no trailing newline). The mount shows the file as the link `name`; a
//! drive written by `rclone --links` reads the same through the mount, and the other way round.
//!
//! The helpers here map names between the two sides; the core uses them when it lists, looks up,
//! creates and renames (see docs/semantics.md). Whether a name is a link depends on the name
//! alone, as in rclone: a regular file whose name ends in the suffix *is* a link for both.

use std::collections::HashSet;

use super::meta::MAX_LINK_TARGET;
use super::EntryKind;

/// What rclone appends to a link's name on the drive.
pub const LINK_SUFFIX: &str = ".rclonelink";

/// The name on the drive of a link shown as `name`.
pub fn link_file_name(name: &str) -> String {
    format!("{name}{LINK_SUFFIX}")
}

/// The name a link file on the drive is shown as, or `None` when `remote_name` is not a link's
/// (no suffix, or nothing before it: `.rclonelink` alone is an ordinary file).
pub fn link_name(remote_name: &str) -> Option<&str> {
    remote_name.strip_suffix(LINK_SUFFIX).filter(|n| !n.is_empty())
}

/// Whether an item of `kind` called `remote_name` on the drive is shown as a symbolic link
/// (folders never are, whatever their name).
pub fn is_link(kind: EntryKind, remote_name: &str) -> bool {
    kind == EntryKind::File && link_name(remote_name).is_some()
}

/// Whether a new regular file or folder may be called `name` in the mount: not when the name
/// ends in the suffix, since the drive would then show it as a link (on the next listing, and to
/// every rclone user of the drive).
pub fn name_is_free_for_non_link(name: &str) -> bool {
    link_name(name).is_none()
}

/// Whether `target` can be kept as a link's target: not empty, no NUL, at most
/// [`MAX_LINK_TARGET`] bytes (symlink(2) answers ENOENT, EINVAL and ENAMETOOLONG for these).
/// Relative, absolute, dangling and pointing out of the mount are all fine.
pub fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        Err("a symbolic link needs a target".into())
    } else if target.contains('\0') {
        Err("a link target cannot hold a NUL byte".into())
    } else if target.len() > MAX_LINK_TARGET {
        Err(format!("a link target is at most {MAX_LINK_TARGET} bytes"))
    } else {
        Ok(())
    }
}

/// The target kept in a link file's content, or why it is not a target. rclone writes the target
/// as it is; a link file edited by hand may end with a newline, which is not part of it.
pub fn target_of_content(content: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(content).map_err(|_| "the link file is not UTF-8".to_string())?;
    let target = text.strip_suffix('\n').unwrap_or(text);
    check_target(target)?;
    Ok(target.to_string())
}

/// How a folder's items on the drive are shown: `(remote name, shown name, is a link)` for each
/// of `items` (remote name and kind), in their order. When a link file and an ordinary item would
/// both be shown under one name (`a` and `a.rclonelink` side by side), the ordinary item keeps the
/// name and the link file is left out, as rclone does; such names are logged by the caller.
pub fn shown_names<'a>(items: impl IntoIterator<Item = (&'a str, EntryKind)>) -> Vec<(&'a str, &'a str, bool)> {
    let items: Vec<(&str, EntryKind)> = items.into_iter().collect();
    let ordinary: HashSet<&str> = items
        .iter()
        .filter(|(name, kind)| !is_link(*kind, name))
        .map(|(name, _)| *name)
        .collect();
    items
        .into_iter()
        .filter_map(
            |(remote, kind)| match link_name(remote).filter(|_| kind == EntryKind::File) {
                Some(shown) if ordinary.contains(shown) => None,
                Some(shown) => Some((remote, shown, true)),
                None => Some((remote, remote, false)),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_is_added_and_stripped() {
        assert_eq!(link_file_name("a b"), "a b.rclonelink");
        assert_eq!(link_name("a b.rclonelink"), Some("a b"));
        assert_eq!(link_name(&link_file_name(".hidden")), Some(".hidden"));
        assert_eq!(link_name(".rclonelink"), None);
        assert_eq!(link_name("a.rclonelink.txt"), None);
        assert_eq!(link_name("a.RCLONELINK"), None);
        assert_eq!(link_name("a.rclonelink.rclonelink"), Some("a.rclonelink"));
        assert!(is_link(EntryKind::File, "x.rclonelink"));
        assert!(!is_link(EntryKind::Directory, "x.rclonelink"));
        assert!(!is_link(EntryKind::File, "x"));
        assert!(!name_is_free_for_non_link("x.rclonelink"));
        assert!(name_is_free_for_non_link("x"));
        assert!(name_is_free_for_non_link(".rclonelink"));
    }

    #[test]
    fn targets() {
        assert!(check_target("../up/and over").is_ok());
        assert!(check_target("/etc/passwd").is_ok());
        assert!(check_target(&"t".repeat(MAX_LINK_TARGET)).is_ok());
        assert!(check_target("").is_err());
        assert!(check_target("a\0").is_err());
        assert!(check_target(&"t".repeat(MAX_LINK_TARGET + 1)).is_err());
        assert_eq!(target_of_content(b"../a").unwrap(), "../a");
        assert_eq!(target_of_content(b"/x/y\n").unwrap(), "/x/y");
        assert!(target_of_content(b"").is_err());
        assert!(target_of_content(b"\n").is_err());
        assert!(target_of_content(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn listings_hide_the_suffix_and_ordinary_items_win_a_clash() {
        let items = [
            ("a", EntryKind::File),
            ("a.rclonelink", EntryKind::File),
            ("b.rclonelink", EntryKind::File),
            ("d.rclonelink", EntryKind::Directory),
            ("c", EntryKind::Directory),
            ("c.rclonelink", EntryKind::File),
            (".rclonelink", EntryKind::File),
        ];
        assert_eq!(
            shown_names(items),
            vec![
                ("a", "a", false),
                ("b.rclonelink", "b", true),
                ("d.rclonelink", "d.rclonelink", false),
                ("c", "c", false),
                (".rclonelink", ".rclonelink", false),
            ]
        );
    }
}
