//! Creates and the folder operations: mkdir, unlink, rmdir and rename. They go to the server at
//! once (a file created here goes with its first upload), so their errors reach the caller.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Entry, EntryKind};

use super::super::error::FsResult;
use super::super::fs::{DriveFs, Looked, Opened};
use super::super::local::{placeholder_id, Busy, LocalContent, NodeId};
use super::super::namespace::{Node, DETACHED};
use super::state::BusyMark;
use super::{io_err, new_key};

/// What a rename of a file found under the node's lock.
enum Moved {
    /// Only our view moved (the file has not gone to the server yet).
    Here,
    /// A close handed it to the queue meanwhile: let that upload land first.
    Queued,
    /// The server holds it: move it there.
    OnServer(Box<Node>),
}

impl DriveFs {
    /// Create file `name` in `parent` and open it for writing. An existing file is opened instead,
    /// unless `flags` has `O_EXCL` (EEXIST).
    /// `name` may not end in `.rclonelink` (EINVAL): the drive would show such a file as a link.
    pub async fn create(&self, parent: u64, name: &OsStr, flags: i32) -> FsResult<(Looked, Opened)> {
        super::super::links::check_not_link_name(name)?;
        self.create_item(parent, name, flags).await
    }

    /// [`create`](Self::create) by the name on the drive (a link's file too).
    pub(in crate::vfs) async fn create_item(
        &self,
        parent: u64,
        name: &OsStr,
        flags: i32,
    ) -> FsResult<(Looked, Opened)> {
        self.wb()?;
        let name = self.new_name(parent, name)?;
        let dir = self.dir_node(parent)?;
        match self.lookup_item(parent, name).await {
            Ok(found) => {
                if flags & libc::O_EXCL != 0 {
                    self.forget(found.attr.ino, 1);
                    return Err(fs_err!(Exists, "{name:?} exists"));
                }
                if found.attr.kind == EntryKind::Directory {
                    self.forget(found.attr.ino, 1);
                    return Err(fs_err!(IsADirectory, "{name:?} is a folder"));
                }
                let opened = self.open_for_write(found.attr.ino, flags).await?;
                let attr = self.attr_of(found.attr.ino)?;
                return Ok((
                    Looked {
                        attr,
                        ttl: self.cfg.attr_ttl,
                    },
                    opened,
                ));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let wb = self.wb()?;
        let (path, file) = wb.staging.create().map_err(|e| io_err("stage", e))?;
        let now = SystemTime::now();
        let key = new_key();
        let entry = Entry {
            id: placeholder_id(&key),
            name: name.to_string(),
            kind: EntryKind::File,
            size: 0,
            mtime: now,
            version: None,
            meta: Default::default(),
        };
        let mut local = LocalContent::new(key, NodeId::Local, (path, Arc::new(file)), 0, now);
        local.note_resized(0, now);
        local.writers = 1;
        let ino = self.inodes.insert_local(dir.ino, entry.clone(), local);
        self.inodes.touch_dir(dir.ino);
        let fh = self.writable_handle(ino, &entry);
        let attr = self.shown_attr(ino, &entry);
        Ok((
            Looked {
                attr,
                ttl: self.cfg.attr_ttl,
            },
            Opened { fh, keep_cache: false },
        ))
    }

    /// Create folder `name` in `parent` on the server.
    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Looked> {
        self.wb()?;
        super::super::links::check_not_link_name(name)?;
        let name = self.new_name(parent, name)?;
        let dir = self.dir_node(parent)?;
        if let Some(Some(_)) = self.inodes.listed_child(parent, name, Instant::now()) {
            return Err(fs_err!(Exists, "{name:?} exists"));
        }
        let entry = self.remote.mkdir(&dir.entry.id, name).await?;
        self.inodes.listing_insert(parent, entry.clone());
        self.inodes.touch_dir(parent);
        let up = self.inodes.upsert(parent, entry.clone(), self.valid_until(), 1);
        Ok(Looked {
            attr: self.shown_attr(up.ino, &entry),
            ttl: self.cfg.attr_ttl,
        })
    }

    /// Resolve `name` in `parent` to its inode without adding a kernel reference.
    pub(super) async fn child(&self, parent: u64, name: &str) -> FsResult<super::super::namespace::Node> {
        let looked = self.lookup(parent, OsStr::new(name)).await?;
        // Taken before the reference is given back: a node only this lookup held goes with it.
        let node = self.inodes.get(looked.attr.ino);
        self.forget(looked.attr.ino, 1);
        node.ok_or_else(|| fs_err!(NotFound, "{name:?} vanished"))
    }

    /// Wait until uploads queued for `ino`, or for anything below it, have landed (or were given
    /// up on), so the server's paths stay valid for them.
    pub(super) async fn settle_uploads_at(&self, ino: u64) -> FsResult<()> {
        let Some(wb) = self.writeback.get() else { return Ok(()) };
        let mut nodes = self.inodes.local_below(ino);
        if let Some(n) = self.inodes.get(ino) {
            if n.local.is_some() {
                nodes.push(n);
            }
        }
        for n in nodes {
            self.stop_growing(n.ino);
            let Some(local) = n.local else { continue };
            if let Some(g) = local.generation {
                wb.queue.wait(&local.key, g).await?;
            }
        }
        Ok(())
    }

    /// Drop an item we deleted or replaced: its queued uploads, its inode, its listing entry.
    pub(super) fn forget_item(&self, parent: u64, node: &super::super::namespace::Node) {
        if let (Some(wb), Some(local)) = (self.writeback.get(), &node.local) {
            wb.queue.cancel(&local.key);
        }
        self.inodes.listing_remove(parent, &node.entry.name);
        self.inodes.touch_dir(parent);
        self.inodes.remove_item(node.ino);
    }

    /// Whether `node` exists on the server yet (a file created here gets its server id once its
    /// first upload lands).
    pub(super) fn on_server(node: &super::super::namespace::Node) -> bool {
        node.item().remote().is_some()
    }

    /// Delete file `name` from `parent`.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.wb()?;
        let name = super::super::fs::existing_name(name)?;
        let node = self.child(parent, name).await?;
        if node.entry.kind == EntryKind::Directory {
            return Err(fs_err!(IsADirectory, "{name:?} is a folder"));
        }
        self.delete_node(parent, node).await
    }

    pub(super) async fn delete_node(&self, parent: u64, node: super::super::namespace::Node) -> FsResult<()> {
        if let (Some(wb), Some(local)) = (self.writeback.get(), &node.local) {
            // An upload under way finishes first; then nothing of it remains queued.
            wb.queue.settle(&local.key).await;
            wb.queue.cancel(&local.key);
        }
        let node = self.inodes.get(node.ino).unwrap_or(node);
        if Self::on_server(&node) {
            match self.remote.delete(&node.entry.id).await {
                Ok(()) | Err(RemoteError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.meta_removed(&node.entry.id, node.local.as_ref().map(|l| l.key.as_str()))
            .await;
        if node.local.is_some() && self.files.any(|h| h.ino == node.ino) {
            self.detach_open_file(parent, &node).await;
            return Ok(());
        }
        self.forget_item(parent, &node);
        Ok(())
    }

    /// `node` was unlinked while descriptors are open on it: as on a local disk, they keep reading
    /// and writing its content (from the staged copy, through its open file) until the last one
    /// closes, while the name is gone and nothing more is uploaded.
    pub(super) async fn detach_open_file(&self, parent: u64, node: &Node) {
        let ino = node.ino;
        // Marked busy: no close queues another generation while the queue lets go of it.
        let claimed = self
            .when_file(
                ino,
                |l| l.busy.is_none(),
                |n| {
                    let l = n.local.as_mut()?;
                    l.busy = Some(Busy::Detaching);
                    Some(l.key.clone())
                },
            )
            .await
            .ok()
            .flatten();
        let mark = claimed.as_deref().map(|key| BusyMark::new(self, ino, key));
        if let Some(key) = &claimed {
            // Writes in flight end first (a descriptor still open may be writing).
            let _ = self.quiesce(ino, key).await;
        }
        if let (Some(wb), Some(key)) = (self.writeback.get(), &claimed) {
            // A close since the first cancel may have queued another generation.
            wb.queue.settle(key).await;
            wb.queue.cancel(key);
        }
        self.inodes.listing_remove(parent, &node.entry.name);
        self.inodes.touch_dir(parent);
        self.inodes.detach(ino);
        if let Some(mark) = mark {
            mark.clear_with(|n| {
                if let Some(l) = n.local.as_mut() {
                    // The queue let go of the staged file; the open file is ours to write again.
                    l.note_taken_back();
                }
            });
        }
    }

    /// After a close: a file unlinked while open goes once its last descriptor is closed.
    pub(in crate::vfs) fn drop_if_unlinked(&self, ino: u64) {
        let detached = self.inodes.get(ino).is_some_and(|n| n.parent == DETACHED);
        if detached && !self.files.any(|h| h.ino == ino) {
            if let Some(local) = self.inodes.with_node(ino, |n| n.local.take()).flatten() {
                // Never handed to the queue, or taken back from it: the staged copy is ours to delete.
                let _ = std::fs::remove_file(&local.staged);
            }
            self.inodes.forget(ino, 0);
        }
    }

    /// Delete the empty folder `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.wb()?;
        let name = super::super::fs::existing_name(name)?;
        let node = self.child(parent, name).await?;
        if node.entry.kind != EntryKind::Directory {
            return Err(fs_err!(NotADirectory, "{name:?} is not a folder"));
        }
        self.ensure_empty(node.ino).await?;
        // The listing above may be stale by the time a DELETE arrives, and a DELETE takes the
        // folder with whatever another device moved in meanwhile: the remote deletes only if
        // the folder is still empty (ENOTEMPTY otherwise).
        match self.remote.delete_empty_folder(&node.entry.id).await {
            Ok(()) | Err(RemoteError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.meta_removed(&node.entry.id, None).await;
        self.forget_item(parent, &node);
        Ok(())
    }

    /// ENOTEMPTY unless folder `ino` has no children, asking the server (deletes there are
    /// recursive, so an rmdir must not trust a stale listing).
    pub(super) async fn ensure_empty(&self, ino: u64) -> FsResult<()> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        let listed = self.remote.list(&node.entry.id).await?;
        let (children, _) = self.inodes.set_listing(ino, listed, self.valid_until());
        if !children.is_empty() {
            return Err(fs_err!(NotEmpty, "folder is not empty"));
        }
        Ok(())
    }

    /// Rename `name` in `parent` to `new_name` in `new_parent`. `noreplace`: fail with EEXIST
    /// rather than replace (RENAME_NOREPLACE).
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        noreplace: bool,
    ) -> FsResult<()> {
        self.wb()?;
        let name = super::super::fs::existing_name(name)?;
        let shown_new_name = super::super::fs::existing_name(new_name)?;
        // A name the drive refuses is refused before anything is asked of the server (a link's
        // name follows the same rules as a file's).
        self.new_name(new_parent, OsStr::new(shown_new_name))?;
        let source = self.child(parent, name).await?;
        // A link moves as its `.rclonelink` file, keeping the suffix; nothing else may take it.
        let source_is_link = crate::remote::links::is_link(source.entry.kind, &source.entry.name);
        let new_name = if source_is_link {
            crate::remote::links::link_file_name(shown_new_name)
        } else {
            super::super::links::check_not_link_name(OsStr::new(shown_new_name))?;
            shown_new_name.to_string()
        };
        let new_name = self.new_name(new_parent, OsStr::new(&new_name))?;
        let old_name = source.entry.name.clone();
        let dest_dir = self.dir_node(new_parent)?;
        if parent == new_parent && name == shown_new_name {
            return Ok(());
        }
        if source.entry.kind == EntryKind::Directory && self.is_below(new_parent, source.ino) {
            return Err(fs_err!(InvalidArgument, "cannot move a folder into itself"));
        }
        let target = match self.child(new_parent, shown_new_name).await {
            // Where names ignore case, `mv a.txt A.txt` finds the file itself: a rename, no target.
            Ok(t) if t.ino == source.ino => None,
            Ok(t) => Some(t),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        if let Some(t) = &target {
            if noreplace {
                return Err(fs_err!(Exists, "{new_name:?} exists"));
            }
            match (source.entry.kind, t.entry.kind) {
                (EntryKind::Directory, EntryKind::File) => return Err(fs_err!(NotADirectory, "target is a file")),
                (EntryKind::File, EntryKind::Directory) => return Err(fs_err!(IsADirectory, "target is a folder")),
                (EntryKind::Directory, EntryKind::Directory) => self.ensure_empty(t.ino).await?,
                _ => {}
            }
        }
        let target = match target {
            // What is shown under the new name has another name on the drive (a link replacing a
            // file, or the other way round): the rename would not replace it there, so it goes first.
            Some(t) if crate::remote::links::is_link(t.entry.kind, &t.entry.name) != source_is_link => {
                self.delete_node(new_parent, t).await?;
                None
            }
            t => t,
        };
        let source = loop {
            self.settle_uploads_at(source.ino).await?;
            let moved = match self
                .when_file(
                    source.ino,
                    |l| l.busy.is_none(),
                    |n| {
                        let Some(l) = n.local.as_ref().filter(|_| n.item().remote().is_none()) else {
                            return Moved::OnServer(Box::new(n.clone()));
                        };
                        if l.generation.is_some() {
                            return Moved::Queued;
                        }
                        // Never handed to the queue: only our view moves, and its upload will go to
                        // the new place. Done under the node's lock, which a hand-off takes to read
                        // the name it queues under.
                        n.parent = new_parent;
                        n.entry.name = new_name.to_string();
                        Moved::Here
                    },
                )
                .await
            {
                Ok(moved) => moved,
                // Forgotten by the table meanwhile: what we looked up is what there is.
                Err(e) if e.is_not_found() => Moved::OnServer(Box::new(source.clone())),
                Err(e) => return Err(e),
            };
            match moved {
                Moved::OnServer(now) => break *now,
                Moved::Queued => continue,
                Moved::Here => {
                    if let Some(t) = target {
                        self.delete_node(new_parent, t).await?;
                    }
                    return Ok(());
                }
            }
        };
        if let Some(t) = &target {
            if let (Some(wb), Some(local)) = (self.writeback.get(), &t.local) {
                wb.queue.settle(&local.key).await;
                wb.queue.cancel(&local.key);
            }
        }
        // What a landed upload gives its item goes to the id it landed as: before that id moves.
        self.settle_metadata(super::super::meta::LANDING_WAIT).await;
        let moved = self
            .remote
            .rename(&source.entry.id, &dest_dir.entry.id, new_name, target.is_some())
            .await?;
        self.meta_moved(&source.entry.id, &moved.id, target.as_ref().map(|t| &t.entry.id))
            .await;
        if let Some(t) = &target {
            self.forget_item(new_parent, t);
        }
        let old_id = source.entry.id.clone();
        if source.entry.kind == EntryKind::Directory && old_id != moved.id {
            let (from, to) = (old_id.clone(), moved.id.clone());
            let remote = self.remote.clone();
            self.inodes.rekey_below(move |id| remote.moved_id(id, &from, &to));
        }
        self.inodes.listing_remove(parent, &old_name);
        self.inodes.listing_insert(new_parent, moved.clone());
        self.inodes.touch_dir(parent);
        self.inodes.touch_dir(new_parent);
        let valid = self.valid_until();
        self.inodes.with_node(source.ino, move |n| {
            n.parent = new_parent;
            if let Some(local) = n.local.as_mut() {
                // Pending changes now replace the moved item.
                local.base_version = moved.version.clone();
                local.item = NodeId::Remote(moved.id.clone());
                n.entry.id = moved.id.clone();
                n.entry.name = moved.name.clone();
            } else {
                n.entry = moved;
                n.attr_valid_until = valid;
            }
        });
        Ok(())
    }

    /// Whether folder `ino` is `ancestor` or below it.
    pub(super) fn is_below(&self, ino: u64, ancestor: u64) -> bool {
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ancestor {
                return true;
            }
            match self.inodes.get(cur) {
                Some(n) if n.ino != n.parent => cur = n.parent,
                _ => return false,
            }
        }
        false
    }
}
