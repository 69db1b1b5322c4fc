//! Folders: opendir takes a snapshot of the entries (listing the folder when its listing is older
//! than the TTL), readdir and readdirplus hand them out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind};

use super::attr::{content_tag, Attr};
use super::error::FsResult;
use super::fs::{DirItem, DriveFs};
use super::handles::{DirHandle, DirSlot};

impl DriveFs {
    /// Open folder `ino`: take a snapshot of its entries, listing it on the server when our
    /// listing is older than the TTL.
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.dir_node(ino)?;
        let now = Instant::now();
        let children = match self.inodes.fresh_listing(ino, now) {
            Some(children) => children,
            None => {
                // The answer may predate changes of ours that land while it is on its way (an
                // upload, a create, a rename, a delete): the inode table keeps what we know of
                // those names over what the listing says.
                let asked_at = self.inodes.local_epoch();
                let listed = match self.remote.list(&node.entry.id).await {
                    Ok(listed) => listed,
                    // Sign-in needed: a folder listed before stays listable.
                    Err(e @ RemoteError::Unauthorized(_)) => match self.inodes.last_listing(ino) {
                        Some(children) => {
                            tracing::debug!(item = %node.entry.id, error = %e, "cannot ask the server; using the last listing");
                            return Ok(self.dir_snapshot(ino, node.parent, children));
                        }
                        None => return Err(e.into()),
                    },
                    Err(e) => return Err(e.into()),
                };
                let (children, replaced) = self
                    .inodes
                    .set_listing_asked_at(ino, listed, self.valid_until(), asked_at);
                for (id, _) in replaced {
                    if let Some((_, e)) = children.iter().find(|(_, e)| e.id == id) {
                        self.purge_blocks(&id, Some(&content_tag(e)));
                    }
                }
                children
            }
        };
        Ok(self.dir_snapshot(ino, node.parent, children))
    }

    fn dir_snapshot(&self, ino: u64, parent: u64, mut children: Vec<(u64, Entry)>) -> u64 {
        children.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut slots = Vec::with_capacity(children.len() + 2);
        slots.push(DirSlot {
            ino,
            name: ".".into(),
            entry: None,
            is_dir: true,
            link: false,
        });
        slots.push(DirSlot {
            ino: parent,
            name: "..".into(),
            entry: None,
            is_dir: true,
            link: false,
        });
        slots.extend(
            super::links::shown_children(children)
                .into_iter()
                .map(|(ino, e, shown, link)| DirSlot {
                    ino,
                    name: shown,
                    is_dir: e.kind == EntryKind::Directory,
                    link,
                    entry: Some(e),
                }),
        );
        self.dirs.insert(DirHandle { ino, slots })
    }

    fn dir_handle(&self, fh: u64) -> FsResult<Arc<DirHandle>> {
        self.dirs
            .get(fh)
            .ok_or_else(|| fs_err!(BadHandle, "unknown folder handle {fh}"))
    }

    /// Hand the entries of folder handle `fh` from `offset` on to `add`, which returns `true`
    /// when its buffer is full (that entry was not taken).
    pub fn readdir(&self, fh: u64, offset: u64, mut add: impl FnMut(DirItem<'_>) -> bool) -> FsResult<()> {
        let h = self.dir_handle(fh)?;
        for (i, slot) in h.slots.iter().enumerate().skip(offset as usize) {
            let kind = if slot.is_dir {
                EntryKind::Directory
            } else {
                EntryKind::File
            };
            if add(DirItem {
                ino: slot.ino,
                next_offset: i as u64 + 1,
                name: &slot.name,
                kind,
                link: slot.link,
            }) {
                break;
            }
        }
        Ok(())
    }

    /// Like [`readdir`](Self::readdir), with attributes. Every entry but `.` and `..` that `add`
    /// accepts gives the kernel one reference to its inode, as FUSE's readdirplus requires.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirItem<'_>, &Attr, Duration) -> bool,
    ) -> FsResult<()> {
        let h = self.dir_handle(fh)?;
        let ttl = self.cfg.attr_ttl;
        for (i, slot) in h.slots.iter().enumerate().skip(offset as usize) {
            let next_offset = i as u64 + 1;
            match &slot.entry {
                None => {
                    let attr = match self.inodes.get(slot.ino) {
                        Some(node) => self.shown_attr(slot.ino, &node.entry),
                        None => continue,
                    };
                    let item = DirItem {
                        ino: slot.ino,
                        next_offset,
                        name: &slot.name,
                        kind: EntryKind::Directory,
                        link: false,
                    };
                    if add(item, &attr, ttl) {
                        break;
                    }
                }
                Some(entry) => {
                    let (ino, entry) = self.inodes.add_lookup(h.ino, slot.ino, entry, self.valid_until());
                    let attr = self.shown_attr(ino, &self.inodes.as_shown(ino, entry.clone()));
                    if add(
                        DirItem {
                            ino,
                            next_offset,
                            name: &slot.name,
                            kind: entry.kind,
                            link: slot.link,
                        },
                        &attr,
                        ttl,
                    ) {
                        self.inodes.forget(ino, 1);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close folder handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }
}
