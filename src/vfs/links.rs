//! Symbolic links in the mount, kept on the drive as rclone's `--links` keeps them: a link `name`
//! is the small regular file `name.rclonelink` whose content is the target (the names are mapped
//! in [`crate::remote::links`]). This module is where the mount's names meet the drive's:
//!
//! - a lookup of `name` that finds nothing falls back to `name.rclonelink`; a link's file is never
//!   found under its own name (`name.rclonelink` is not shown);
//! - a listing shows each link file as the link, and leaves it out when an ordinary item holds the
//!   link's name (as rclone does);
//! - `symlink` creates the file through the ordinary create, write and upload path (journaled like
//!   any file); `readlink` reads it through the core and keeps the target on the node while the
//!   file's content version holds;
//! - unlink and rename find a link by its shown name, so they act on its file (a rename keeps the
//!   suffix, see [`DriveFs::rename`]).
//!
//! A regular file or folder whose name ends in the suffix cannot be made (EINVAL): the drive would
//! show it as a link.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use crate::fs_err;
use crate::remote::links::{check_target, link_file_name, link_name, shown_names, target_of_content};
use crate::remote::meta::MAX_LINK_TARGET;
use crate::remote::Entry;

use super::attr::content_tag;
use super::error::FsResult;
use super::fs::{existing_name, DriveFs, Looked};
use super::namespace::Invalidation;

/// EINVAL for a name a regular file or folder may not take (see the module doc).
pub(in crate::vfs) fn check_not_link_name(name: &OsStr) -> FsResult<()> {
    match name.to_str() {
        Some(n) if !crate::remote::links::name_is_free_for_non_link(n) => Err(fs_err!(
            InvalidName,
            "{n:?} ends in {}, which marks symbolic links on the drive",
            crate::remote::links::LINK_SUFFIX
        )),
        _ => Ok(()),
    }
}

/// A folder's children as the mount shows them: `(inode, item, shown name, is a link)`, link
/// files under their link's name, those hidden by an ordinary item of that name left out.
pub(in crate::vfs) fn shown_children(children: Vec<(u64, Entry)>) -> Vec<(u64, Entry, String, bool)> {
    let shown: HashMap<String, (String, bool)> = shown_names(children.iter().map(|(_, e)| (e.name.as_str(), e.kind)))
        .into_iter()
        .map(|(remote, shown, link)| (remote.to_string(), (shown.to_string(), link)))
        .collect();
    children
        .into_iter()
        .filter_map(|(ino, e)| match shown.get(&e.name) {
            Some((name, link)) => Some((ino, e.clone(), name.clone(), *link)),
            None => {
                tracing::debug!(name = %e.name, "link file hidden by an item of its link's name");
                None
            }
        })
        .collect()
}

/// `out` with, after each name a link's file changed under, the link's name too: the kernel knows
/// the link by that name only.
pub(in crate::vfs) fn with_shown_names(out: Vec<Invalidation>) -> Vec<Invalidation> {
    let mut all = Vec::with_capacity(out.len());
    for inv in out {
        let shown = match &inv {
            Invalidation::Entry { parent, name } => link_name(name).map(|shown| Invalidation::Entry {
                parent: *parent,
                name: shown.to_string(),
            }),
            Invalidation::Inode(_) => None,
        };
        all.push(inv);
        all.extend(shown);
    }
    all
}

impl DriveFs {
    /// Find `name` as the mount shows it in folder `parent`: the item of that name, else the link
    /// kept as `name.rclonelink`. On success the kernel holds one more reference to it.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Looked> {
        let name = existing_name(name)?;
        if link_name(name).is_some() {
            // A link's file is shown only under its link's name; a folder so called is itself.
            let found = self.lookup_item(parent, name).await?;
            if found.attr.link {
                self.forget(found.attr.ino, 1);
                return Err(fs_err!(NotFound, "{name:?} is a link's file, shown without its suffix"));
            }
            return Ok(found);
        }
        match self.lookup_item(parent, name).await {
            Err(e) if e.is_not_found() => {}
            found => return found,
        }
        let file = link_file_name(name);
        if file.len() > 255 || self.remote.check_name(name).is_err() {
            // No drive holds a name that long, and a link's name follows the drive's rules for
            // names (see `symlink`): no link can have it, and the server is not asked.
            return Err(fs_err!(NotFound, "{name:?} not found"));
        }
        let found = match self.lookup_item(parent, &file).await {
            Err(e) if e.is_not_found() => return Err(fs_err!(NotFound, "{name:?} not found")),
            found => found?,
        };
        if !found.attr.link {
            // A folder called `name.rclonelink` is no link.
            self.forget(found.attr.ino, 1);
            return Err(fs_err!(NotFound, "{name:?} not found"));
        }
        Ok(found)
    }

    /// Make the symbolic link `name` in `parent` pointing at `target`: the file
    /// `name.rclonelink` holding the target, created, written and handed to the upload queue as
    /// any file is. On success the kernel holds one reference to it.
    pub async fn symlink(&self, parent: u64, name: &OsStr, target: &Path) -> FsResult<Looked> {
        self.check_writable()?;
        let name = existing_name(name)?;
        // The name shown is held to the drive's rules for names, as a file's would be (OneDrive
        // refuses `y.` though it would take `y..rclonelink`): what the mount shows stays a name
        // the drive could hold.
        self.remote.check_name(name)?;
        let target = target
            .to_str()
            .ok_or_else(|| fs_err!(InvalidArgument, "a link target must be UTF-8 to be kept on the drive"))?;
        if let Err(why) = check_target(target) {
            return Err(if target.is_empty() {
                fs_err!(NotFound, "{why}")
            } else if target.len() > MAX_LINK_TARGET {
                fs_err!(NameTooLong, "{why}")
            } else {
                fs_err!(InvalidArgument, "{why}")
            });
        }
        if self
            .lookup(parent, OsStr::new(name))
            .await
            .map(|l| self.forget(l.attr.ino, 1))
            .is_ok()
        {
            return Err(fs_err!(Exists, "{name:?} exists"));
        }
        let file = link_file_name(name);
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
        let (looked, opened) = self.create_item(parent, OsStr::new(&file), flags).await?;
        let written = match self.write(opened.fh, 0, target.as_bytes()).await {
            Ok(n) if n as usize == target.len() => self.flush(opened.fh).await,
            Ok(n) => Err(fs_err!(Internal, "wrote {n} of the link's {} bytes", target.len())),
            Err(e) => Err(e),
        };
        let released = self.release(opened.fh).await;
        if let Err(e) = written.and(released) {
            // No half-made link stays behind.
            self.forget(looked.attr.ino, 1);
            if let Err(undo) = self.unlink(parent, OsStr::new(name)).await {
                tracing::warn!(name, error = %undo, "could not remove a link whose file failed");
            }
            return Err(e);
        }
        let ino = looked.attr.ino;
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "{name:?} vanished"))?;
        Ok(Looked {
            attr: self.attr_for(ino, &node.entry),
            ttl: looked.ttl,
        })
    }

    /// The target of link `ino`: read from its file through the core (so a link not uploaded yet
    /// reads from its staged copy), at most [`MAX_LINK_TARGET`] bytes. EINVAL when `ino` is no link.
    pub async fn readlink(&self, ino: u64) -> FsResult<String> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if !crate::remote::links::is_link(node.entry.kind, &node.entry.name) {
            return Err(fs_err!(InvalidArgument, "inode {ino} is not a symbolic link"));
        }
        // Content on the server has a version to key the target by; staged content changes freely.
        let tag = node.local.is_none().then(|| content_tag(&node.entry));
        if let (Some(tag), Some((seen, target))) = (&tag, &node.link_target) {
            if seen == tag {
                return Ok(target.clone());
            }
        }
        let opened = self.open(ino, libc::O_RDONLY).await?;
        let content = self.read_link_file(opened.fh).await;
        if let Err(e) = self.release(opened.fh).await {
            tracing::debug!(ino, error = %e, "closing a link's file after reading it");
        }
        let target = target_of_content(&content?)
            .map_err(|why| fs_err!(Internal, "link file of inode {ino} holds no target: {why}"))?;
        if let Some(tag) = tag {
            let kept = target.clone();
            self.inodes.with_node(ino, move |n| {
                if n.local.is_none() && content_tag(&n.entry) == tag {
                    n.link_target = Some((tag, kept));
                }
            });
        }
        Ok(target)
    }

    /// The content of the link file open as `fh`, up to one byte over the longest target (a file
    /// that long holds no target; a trailing newline is allowed for).
    async fn read_link_file(&self, fh: u64) -> FsResult<Vec<u8>> {
        let limit = MAX_LINK_TARGET + 2;
        let mut content = Vec::new();
        while content.len() < limit {
            let chunk = self
                .read(fh, content.len() as u64, (limit - content.len()) as u32)
                .await?;
            if chunk.is_empty() {
                break;
            }
            content.extend_from_slice(&chunk);
        }
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_link_file_invalidates_the_link_name_too() {
        let entry = |name: &str| Invalidation::Entry {
            parent: 1,
            name: name.to_string(),
        };
        assert_eq!(
            with_shown_names(vec![entry("a.rclonelink"), Invalidation::Inode(5), entry("b")]),
            vec![entry("a.rclonelink"), entry("a"), Invalidation::Inode(5), entry("b")]
        );
    }

    #[test]
    fn only_regular_names_with_the_suffix_are_refused() {
        assert!(check_not_link_name(OsStr::new("x.rclonelink")).is_err());
        assert!(check_not_link_name(OsStr::new("x")).is_ok());
        assert!(check_not_link_name(OsStr::new(".rclonelink")).is_ok());
    }
}
