//! Change application: remote records ("item X now is this entry, in folder P", "item X is
//! gone") applied to the table by item id, with what the kernel must forget as
//! [`Invalidation`]s. Records may come in any order (children whose parent is not known yet wait
//! for it) and more than once (the last one wins). Local edits in flight win: their node keeps
//! showing local content.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::remote::{Change, ChangeBatch, Entry, EntryKind, ItemId, Version};

use super::super::attr::content_tag;
use super::table::{Inner, InodeTable};
use super::{DETACHED, ROOT_INO};

/// What the kernel must forget after a remote change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// Content or attributes of this inode changed (`inval_inode`).
    Inode(u64),
    /// The name `name` in folder `parent` appeared, vanished or now means another item
    /// (`inval_entry`).
    Entry {
        /// Folder inode.
        parent: u64,
        /// Child name.
        name: String,
    },
}

/// What one applied batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Records that changed something here.
    pub changed: usize,
    /// Items dropped (deleted, or moved where we do not look).
    pub removed: usize,
}

/// A batch applied to the table: what it did, what the kernel must forget, and whose cached
/// blocks can go (all versions but the one named, or all for `None`), for the caller to act on
/// once the table's lock is released.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// What the batch did.
    pub applied: Applied,
    /// What the kernel must forget, in order (may repeat).
    pub invalidations: Vec<Invalidation>,
    /// Items whose cached blocks of other versions than the one named go.
    pub purge: Vec<(ItemId, Option<Version>)>,
}

impl InodeTable {
    /// Apply one batch of remote changes (see the module doc). A resync batch names the whole
    /// tree: what we know and it does not name is gone.
    pub fn apply_batch(&self, batch: ChangeBatch, valid_until: Instant) -> BatchOutcome {
        let (records, resync) = match batch {
            ChangeBatch::Changes(r) => (r, false),
            ChangeBatch::Resync(r) => (r, true),
        };
        // The last record of an id wins; keep the order of those last records.
        let mut last: HashMap<ItemId, usize> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            last.insert(r.id().clone(), i);
        }
        let present: HashSet<ItemId> = records
            .iter()
            .filter(|r| matches!(r, Change::Upsert { .. }))
            .map(|r| r.id().clone())
            .collect();
        let mut pending: Vec<Change> = records
            .into_iter()
            .enumerate()
            .filter(|(i, r)| last.get(r.id()) == Some(i))
            .map(|(_, r)| r)
            .collect();
        let mut done = BatchOutcome::default();
        let out = &mut done.invalidations;
        // Upserts first, parents before children: retry those whose parent is not known yet for
        // as long as a pass makes progress.
        let mut deletions = Vec::new();
        loop {
            let mut waiting = Vec::new();
            let before = pending.len();
            for change in pending {
                match change {
                    Change::Deleted { id } => deletions.push(id),
                    Change::Upsert { parent, entry } => {
                        let n = out.len();
                        match self.apply_upsert(&parent, entry.clone(), valid_until, out) {
                            Some(replaced) => {
                                if replaced.is_some() {
                                    done.purge.push((entry.id.clone(), Some(content_tag(&entry))));
                                }
                                if out.len() > n {
                                    done.applied.changed += 1;
                                }
                            }
                            None => waiting.push(Change::Upsert { parent, entry }),
                        }
                    }
                }
            }
            if waiting.is_empty() || waiting.len() == before {
                // Whatever still has no known parent moved (or was created) where we do not look.
                for c in waiting {
                    if self.apply_gone(c.id(), out) {
                        done.applied.removed += 1;
                    }
                }
                break;
            }
            pending = waiting;
        }
        for id in deletions {
            if self.apply_gone(&id, out) {
                done.purge.push((id, None));
                done.applied.removed += 1;
            }
        }
        if resync {
            for (id, ino) in self.known_ids() {
                if ino != ROOT_INO && !present.contains(&id) && self.apply_gone(&id, out) {
                    done.purge.push((id, None));
                    done.applied.removed += 1;
                }
            }
        }
        done
    }

    /// Apply a remote record "item `entry.id` now is `entry`, child of `parent_id`". Names that
    /// appeared, vanished or moved, and inodes whose content or attributes changed, go to `out`.
    /// Returns `None` when the parent is unknown here (the caller retries once the parent came,
    /// or calls [`InodeTable::apply_gone`]), else the content version replaced, if any.
    pub fn apply_upsert(
        &self,
        parent_id: &ItemId,
        mut entry: Entry,
        valid_until: Instant,
        out: &mut Vec<Invalidation>,
    ) -> Option<Option<Version>> {
        let mut inner = self.lock();
        inner.count(1);
        let existing = inner.nodes.by_id.get(&entry.id).copied();
        if existing == Some(ROOT_INO) {
            // Only its version matters (folder attributes: see below).
            return inner
                .nodes
                .update(ROOT_INO, |node| node.entry.version = entry.version)
                .map(|()| None);
        }
        let parent = *inner.nodes.by_id.get(parent_id)?;
        let Some(ino) = existing else {
            return Self::insert_new_locked(&mut inner, parent, entry, out);
        };
        let node = inner.nodes.get(ino)?.clone();
        if node.local.is_some() {
            // A local edit in flight wins: its upload, based on the version it replaced, meets
            // the new server version and the conflict rule keeps both.
            return Some(None);
        }
        if node.entry.kind != entry.kind {
            Self::gone_locked(&mut inner, ino, out);
            return Self::insert_new_locked(&mut inner, parent, entry, out);
        }
        if entry.kind == EntryKind::Directory {
            // A folder's own mtime and size follow the TTL, not the poller: changes inside it
            // are tracked by name, and its mtime is what we stamped on our own changes until
            // the server's next answer to a stat (as a local filesystem shows it).
            entry.mtime = node.entry.mtime;
            entry.size = node.entry.size;
        }
        if entry.version.is_none() && node.entry.size == entry.size && node.entry.mtime == entry.mtime {
            // Business delta omits cTag: no version is no change unless size or mtime moved.
            entry.version = node.entry.version.clone();
        }
        let (old_tag, new_tag) = (content_tag(&node.entry), content_tag(&entry));
        let replaced = (old_tag != new_tag).then_some(old_tag);
        let moved = node.parent != parent || node.entry.name != entry.name;
        let is_file = entry.kind == EntryKind::File;
        if is_file && (replaced.is_some() || node.entry.size != entry.size || node.entry.mtime != entry.mtime) {
            out.push(Invalidation::Inode(ino));
        }
        if moved {
            if let Some(l) = inner.listing_mut(node.parent) {
                if l.get(&node.entry.name).is_some_and(|e| e.id == entry.id) {
                    l.remove(&node.entry.name);
                }
            }
            out.push(Invalidation::Entry {
                parent: node.parent,
                name: node.entry.name.clone(),
            });
            out.push(Invalidation::Entry {
                parent,
                name: entry.name.clone(),
            });
        }
        Self::displace_locked(&mut inner, parent, &entry, out);
        if let Some(l) = inner.listing_mut(parent) {
            l.insert(entry.clone());
        }
        inner.nodes.update(ino, |n| {
            entry.mtime = n.shown_mtime(&entry);
            n.entry = entry;
            n.parent = parent;
            n.attr_valid_until = valid_until;
        });
        Some(replaced)
    }

    /// An item not known here appeared in `parent`: it goes into the parent's listing (its inode
    /// comes when the kernel looks it up), and the kernel forgets any negative entry of the name.
    fn insert_new_locked(
        inner: &mut Inner,
        parent: u64,
        entry: Entry,
        out: &mut Vec<Invalidation>,
    ) -> Option<Option<Version>> {
        Self::displace_locked(inner, parent, &entry, out);
        if let Some(l) = inner.listing_mut(parent) {
            l.insert(entry.clone());
            // Listed children have inodes (as after a listing), so records about its own children
            // that follow in the same batch find their parent.
            let until = l.valid_until;
            Self::upsert_locked(inner, parent, entry.clone(), until, 0);
        }
        // The kernel can hold a (negative) entry only in a folder it holds or we listed for it;
        // a full enumeration must not send one notification per item of the drive.
        let listed = inner.listings.contains_key(&parent);
        let seen = inner
            .nodes
            .get(parent)
            .is_some_and(|n| n.ino == ROOT_INO || n.lookups > 0 || listed);
        if seen {
            out.push(Invalidation::Entry {
                parent,
                name: entry.name,
            });
        }
        Some(None)
    }

    /// Another item listed under `entry`'s name in `parent` gives way to `entry`.
    fn displace_locked(inner: &mut Inner, parent: u64, entry: &Entry, out: &mut Vec<Invalidation>) {
        let other = inner
            .listings
            .get(&parent)
            .and_then(|l| l.get(&entry.name))
            .filter(|e| e.id != entry.id)
            .map(|e| e.id.clone());
        let Some(other) = other else { return };
        if let Some(l) = inner.listing_mut(parent) {
            l.remove(&entry.name);
        }
        out.push(Invalidation::Entry {
            parent,
            name: entry.name.clone(),
        });
        if let Some(&ino) = inner.nodes.by_id.get(&other) {
            if inner.nodes.get(ino).is_some_and(|n| n.parent == parent) {
                Self::gone_locked(inner, ino, out);
            }
        }
    }

    /// Item `id` is gone from the server (or moved where we do not look). Returns whether it was
    /// known. An item with local content not yet uploaded stays: local edits win.
    pub fn apply_gone(&self, id: &ItemId, out: &mut Vec<Invalidation>) -> bool {
        let mut inner = self.lock();
        inner.count(1);
        match inner.nodes.by_id.get(id).copied() {
            Some(ROOT_INO) | None => false,
            Some(ino) => Self::gone_locked(&mut inner, ino, out),
        }
    }

    fn gone_locked(inner: &mut Inner, ino: u64, out: &mut Vec<Invalidation>) -> bool {
        let Some(node) = inner.nodes.get(ino).cloned() else {
            return false;
        };
        if node.local.is_some() {
            return false;
        }
        if let Some(l) = inner.listing_mut(node.parent) {
            if l.get(&node.entry.name).is_some_and(|e| e.id == node.entry.id) {
                l.remove(&node.entry.name);
            }
        }
        if node.parent != DETACHED {
            out.push(Invalidation::Entry {
                parent: node.parent,
                name: node.entry.name.clone(),
            });
        }
        out.push(Invalidation::Inode(ino));
        if inner.nodes.by_id.get(&node.entry.id) == Some(&ino) {
            inner.nodes.by_id.remove(&node.entry.id);
        }
        if node.lookups == 0 {
            inner.drop_node(ino);
        } else {
            // The kernel still holds it (an open file): it stays until forgotten, detached.
            inner.listings.remove(&ino);
            inner.nodes.update(ino, |n| n.parent = DETACHED);
        }
        true
    }
}
