//! What the table knows about one inode. A node holds no listing (folders' listings live in a map
//! of their own, see [`super::listing`]), so copying one costs the same whatever the folder holds.

use std::time::{Instant, SystemTime};

use crate::remote::{Entry, Version};

use super::super::local::LocalContent;

/// What the table knows about one inode.
#[derive(Clone, Debug)]
pub struct Node {
    /// The inode number.
    pub ino: u64,
    /// Inode of the folder it was found in (the root is its own parent).
    pub parent: u64,
    /// Last metadata from the server.
    pub entry: Entry,
    /// Until when `entry` is trusted without asking the server.
    pub attr_valid_until: Instant,
    /// References the kernel holds (lookups minus forgets).
    pub lookups: u64,
    /// Content version that the kernel's page cache holds for this inode, if any: the version
    /// that was current at the last open. Reopening the same version may keep the page cache.
    pub cached_tag: Option<Version>,
    /// Content on local disk that the server does not have yet. While set, `entry` shows the local
    /// size and mtime and server metadata does not replace it.
    pub local: Option<LocalContent>,
    /// The modification time we wrote version `.0` with (see [`crate::vfs::local::settle`]): while
    /// the server reports that version, `stat` shows this time, not the server's rounding of it.
    pub own_mtime: Option<(Option<Version>, SystemTime)>,
    /// A link's target as read from its file's content version `.0` (see [`crate::vfs::links`]).
    pub link_target: Option<(Version, String)>,
}

impl Node {
    /// `entry`'s modification time as this node shows it: the time we wrote its version with
    /// (see [`Node::own_mtime`]) when the server reports that version with its rounding of it.
    pub fn shown_mtime(&self, entry: &Entry) -> SystemTime {
        match &self.own_mtime {
            Some((Some(version), ours))
                if entry.version.as_ref() == Some(version)
                    && entry.mtime.duration_since(*ours).unwrap_or_else(|e| e.duration())
                        < std::time::Duration::from_secs(1) =>
            {
                *ours
            }
            _ => entry.mtime,
        }
    }

    /// A node with nothing in the kernel's page cache.
    pub(super) fn new(
        ino: u64,
        parent: u64,
        entry: Entry,
        attr_valid_until: Instant,
        lookups: u64,
        local: Option<LocalContent>,
    ) -> Node {
        Node {
            ino,
            parent,
            entry,
            attr_valid_until,
            lookups,
            cached_tag: None,
            local,
            own_mtime: None,
            link_target: None,
        }
    }
}
