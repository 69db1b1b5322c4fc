//! File attributes as the core hands them out: plain data, no fuser types, so the core can be
//! tested without FUSE and the adapter converts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::remote::meta::MODE_BITS;
use crate::remote::{Entry, EntryKind, Meta, Version};

/// Attributes of one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or folder.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (also used for ctime and atime: remotes keep only one time).
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
    /// Link count: 1 for files, 2 for folders (we do not count subfolders, which would need a
    /// listing; `find` copes with 2 as it does on btrfs).
    pub nlink: u32,
    /// Owner shown to users.
    pub uid: u32,
    /// Group shown to users.
    pub gid: u32,
    /// Shown as a symbolic link: a `.rclonelink` file (see [`crate::remote::links`]); `size` is
    /// then its target's length.
    pub link: bool,
}

impl Attr {
    /// These attributes with what `meta` holds in place of the defaults: permission bits
    /// (setuid, setgid and sticky included), owner, group and modification time.
    pub fn with_meta(mut self, meta: &Meta) -> Attr {
        if let Some(mode) = meta.mode {
            self.perm = (mode & MODE_BITS) as u16;
        }
        if let Some(uid) = meta.uid {
            self.uid = uid;
        }
        if let Some(gid) = meta.gid {
            self.gid = gid;
        }
        if let Some(mtime) = meta.mtime {
            self.mtime = mtime;
        }
        self
    }
}

/// How remote items are presented locally: remotes have no owners or modes.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    /// Owner of every item.
    pub uid: u32,
    /// Group of every item.
    pub gid: u32,
    /// Permission bits of files.
    pub file_mode: u16,
    /// Permission bits of folders.
    pub dir_mode: u16,
}

impl Ownership {
    /// The default umask: files 0644, folders 0755.
    pub const DEFAULT_UMASK: u16 = 0o022;

    /// Items owned by the user running the daemon, files 0644 and folders 0755.
    pub fn current_user() -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ownership::new(uid, gid, Self::DEFAULT_UMASK)
    }

    /// Items owned by `uid`:`gid`, files `0666 & !umask` and folders `0777 & !umask` (as a local
    /// filesystem creates them under that umask).
    pub fn new(uid: u32, gid: u32, umask: u16) -> Self {
        Ownership {
            uid,
            gid,
            file_mode: 0o666 & !umask,
            dir_mode: 0o777 & !umask,
        }
    }

    /// The attributes of `entry` as inode `ino`.
    pub fn attr(&self, ino: u64, entry: &Entry) -> Attr {
        let dir = entry.kind == EntryKind::Directory;
        let link = crate::remote::links::is_link(entry.kind, &entry.name);
        Attr {
            ino,
            kind: entry.kind,
            size: if dir { 0 } else { entry.size },
            mtime: entry.mtime,
            // Links carry no mode of their own (lstat shows 0777, as on Linux).
            perm: if link {
                0o777
            } else if dir {
                self.dir_mode
            } else {
                self.file_mode
            },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            link,
        }
    }
}

/// The version that keys cached content. Servers without ETags get one made of size and mtime,
/// so a changed file still never serves old blocks.
pub fn content_tag(entry: &Entry) -> Version {
    match &entry.version {
        Some(v) => v.clone(),
        None => {
            let mtime = entry.mtime.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            Version::from_etag(&format!(
                "size{}-mtime{}.{}",
                entry.size,
                mtime.as_secs(),
                mtime.subsec_nanos()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_decides_modes() {
        let o = Ownership::new(7, 8, 0o027);
        assert_eq!((o.uid, o.gid, o.file_mode, o.dir_mode), (7, 8, 0o640, 0o750));
        let d = Ownership::new(0, 0, Ownership::DEFAULT_UMASK);
        assert_eq!((d.file_mode, d.dir_mode), (0o644, 0o755));
    }
}
