//! The inode table: the node store, the folders' listings, the names we changed, behind one
//! `std` mutex.
//!
//! Lock rule: the mutex is never held across I/O. Every method takes it, changes or copies
//! plain data, and releases it before returning: no `await`, no disk or network call, no guard
//! handed out (`lock` is private to the namespace). Callers do their I/O first and then commit
//! what it found here; local content a method takes out is dropped (its staged file closed)
//! after the lock is released.
//!
//! Reading a node copies that node alone; listings are read in place under the lock or handed
//! out as `Arc` snapshots.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::remote::{Entry, EntryKind, ItemId, Version};

use super::super::attr::content_tag;
use super::super::local::LocalContent;
use super::changed::ChangedNames;
use super::listing::Listing;
use super::node::Node;
use super::nodes::Nodes;
use super::{DETACHED, ROOT_INO};

/// What the mutex guards.
pub(super) struct Inner {
    pub(super) nodes: Nodes,
    /// Folders' last listings, by folder inode (a folder's listing goes with its node).
    pub(super) listings: HashMap<u64, Arc<Listing>>,
    /// Names we changed ourselves (see [`super::changed`]).
    pub(super) changed: ChangedNames,
    next_ino: u64,
    /// See [`InodeTable::work`].
    work: Cell<u64>,
}

impl Inner {
    /// Count `n` units of work (nodes or listing entries copied or visited).
    pub(super) fn count(&self, n: usize) {
        self.work.set(self.work.get() + n as u64);
    }

    /// A new inode number (never reused within a mount).
    pub(super) fn next_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Drop node `ino` and its listing (its id index entry is the caller's).
    pub(super) fn drop_node(&mut self, ino: u64) -> Option<Node> {
        self.listings.remove(&ino);
        self.nodes.remove(ino)
    }

    /// `dir`'s listing to change in place; copied first only when a snapshot of it is still held.
    pub(super) fn listing_mut(&mut self, dir: u64) -> Option<&mut Listing> {
        let listing = self.listings.get_mut(&dir)?;
        if Arc::strong_count(listing) > 1 {
            self.work.set(self.work.get() + listing.len() as u64);
        }
        Some(Arc::make_mut(listing))
    }
}

/// The result of recording fresh metadata for an item.
pub struct Upserted {
    /// Its inode number.
    pub ino: u64,
    /// The content version it had before, when that differs from the new one.
    pub replaced_tag: Option<Version>,
}

/// Thread-safe inode table (see the module doc).
pub struct InodeTable {
    inner: Mutex<Inner>,
    /// Bumped by every change we make ourselves (creates, writes, uploads, renames, deletes), so
    /// a revalidation round can tell that what it listed may predate one of them.
    local_epoch: AtomicU64,
}

impl InodeTable {
    /// A table holding only the root, described by `root`.
    pub fn new(root: Entry, valid_until: Instant) -> Self {
        let mut nodes = Nodes::default();
        nodes.by_id.insert(root.id.clone(), ROOT_INO);
        nodes.insert(Node::new(ROOT_INO, ROOT_INO, root, valid_until, 1, None));
        InodeTable {
            inner: Mutex::new(Inner {
                nodes,
                listings: HashMap::new(),
                changed: ChangedNames::default(),
                next_ino: ROOT_INO + 1,
                work: Cell::new(0),
            }),
            local_epoch: AtomicU64::new(0),
        }
    }

    /// Match names case-insensitively when `on` (a remote whose server does: OneDrive), in lookups
    /// of listed, local and known children and in our own listing updates.
    pub fn with_case_insensitive_names(self, on: bool) -> Self {
        self.lock().nodes.set_case_insensitive(on);
        self
    }

    /// How many changes we made ourselves so far (see the field).
    pub fn local_epoch(&self) -> u64 {
        self.local_epoch.load(Ordering::SeqCst)
    }

    /// Count one change of ours; returns the epoch it happened in.
    pub(super) fn bump_local(&self) -> u64 {
        self.local_epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Work the table has done so far: nodes and listing entries it copied or visited. A count,
    /// not a time, so a test can check that an operation costs the same however many items the
    /// table holds (tests/vfs_namespace.rs); also a figure for status reports.
    pub fn work(&self) -> u64 {
        self.lock().work.get()
    }

    /// A copy of the node (without any listing: see [`InodeTable::listing_of`]), if the inode is known.
    pub fn get(&self, ino: u64) -> Option<Node> {
        let inner = self.lock();
        inner.count(1);
        inner.nodes.get(ino).cloned()
    }

    /// The names from the mount's root down to `ino`, joined by `/` (`""` for the root); `None`
    /// when the chain is broken (an inode forgotten meanwhile). One walk up under the lock.
    pub fn path_of(&self, ino: u64) -> Option<String> {
        let inner = self.lock();
        let mut names = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            inner.count(1);
            let n = inner.nodes.get(cur)?;
            if n.ino == n.parent {
                names.reverse();
                return Some(names.join("/"));
            }
            names.push(n.entry.name.as_str());
            cur = n.parent;
        }
        None
    }

    /// Record fresh metadata for a child of `parent`, creating its inode if needed, and add
    /// `add_lookups` kernel references.
    pub fn upsert(&self, parent: u64, entry: Entry, valid_until: Instant, add_lookups: u64) -> Upserted {
        let mut inner = self.lock();
        if super::super::local::is_placeholder_id(&entry.id) && !inner.nodes.by_id.contains_key(&entry.id) {
            // A file created here, seen while only local, whose upload landed since: it now goes by
            // its server id. Its node still holds the name; never make a second one for the old id.
            if let Some(ino) = inner.holder(parent, &entry).map(|n| n.ino) {
                inner.nodes.update(ino, |n| n.lookups += add_lookups);
                return Upserted {
                    ino,
                    replaced_tag: None,
                };
            }
        }
        Self::upsert_locked(&mut inner, parent, entry, valid_until, add_lookups)
    }

    pub(super) fn upsert_locked(
        inner: &mut Inner,
        parent: u64,
        entry: Entry,
        valid_until: Instant,
        add: u64,
    ) -> Upserted {
        inner.count(1);
        if let Some(&ino) = inner.nodes.by_id.get(&entry.id) {
            let mut kind_changed = false;
            let done = inner.nodes.update(ino, |node| {
                if node.local.is_some() {
                    // Our own content wins until the server has it.
                    node.lookups += add;
                    return None;
                }
                let old = content_tag(&node.entry);
                let new = content_tag(&entry);
                let replaced_tag = (old != new).then_some(old);
                // Same path, different kind: the folder listing of a file is meaningless.
                kind_changed = node.entry.kind != entry.kind;
                let mut entry = entry.clone();
                entry.mtime = node.shown_mtime(&entry);
                node.entry = entry;
                node.attr_valid_until = valid_until;
                node.lookups += add;
                if ino != ROOT_INO {
                    node.parent = parent;
                }
                replaced_tag
            });
            if let Some(replaced_tag) = done {
                if kind_changed {
                    inner.listings.remove(&ino);
                }
                return Upserted { ino, replaced_tag };
            }
        }
        let ino = inner.next_ino();
        inner.nodes.by_id.insert(entry.id.clone(), ino);
        inner
            .nodes
            .insert(Node::new(ino, parent, entry, valid_until, add, None));
        Upserted {
            ino,
            replaced_tag: None,
        }
    }

    /// Replace the metadata of a known inode (after a `stat`). Returns the replaced content
    /// version when it changed, or `None` when the inode is gone.
    pub fn refresh(&self, ino: u64, entry: Entry, valid_until: Instant) -> Option<Upserted> {
        let mut inner = self.lock();
        let node = inner.nodes.get(ino)?;
        if node.entry.id != entry.id {
            return None;
        }
        let parent = node.parent;
        Some(Self::upsert_locked(&mut inner, parent, entry, valid_until, 0))
    }

    /// Add one kernel reference to `ino` (a `readdirplus` entry the kernel accepted). When the
    /// inode was dropped meanwhile, it is recreated from `entry`; returns the inode number to use.
    /// The entry returned is what the mount knows of the item now, which may be newer than the
    /// snapshot's `entry` (a file whose upload landed since goes by its server id).
    pub fn add_lookup(&self, dir: u64, ino: u64, entry: &Entry, valid_until: Instant) -> (u64, Entry) {
        let mut inner = self.lock();
        inner.count(1);
        let same_item = inner
            .nodes
            .get(ino)
            .is_some_and(|n| n.entry.id == entry.id || (n.parent == dir && n.entry.name == entry.name));
        let holder = if same_item {
            Some(ino)
        } else if let Some(&by_id) = inner.nodes.by_id.get(&entry.id) {
            Some(by_id)
        } else {
            // The snapshot's id is gone (the item got another id, or the node was dropped): the
            // name's current holder, so the kernel never gets a second inode for one file.
            inner.named_child(dir, &entry.name).map(|n| n.ino)
        };
        if let Some(found) = holder.and_then(|i| {
            inner.nodes.update(i, |node| {
                node.lookups += 1;
                (node.ino, node.entry.clone())
            })
        }) {
            return found;
        }
        let up = Self::upsert_locked(&mut inner, dir, entry.clone(), valid_until, 1);
        (up.ino, entry.clone())
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inner = self.lock();
        let drop_it = inner
            .nodes
            .update(ino, |node| {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            })
            .unwrap_or(false);
        if drop_it {
            Self::remove_locked(&mut inner, ino);
        }
    }

    pub(super) fn remove_locked(inner: &mut Inner, ino: u64) {
        if inner.nodes.get(ino).is_some_and(|n| n.local.is_some()) {
            // Content the server does not have yet keeps its inode until uploaded or deleted.
            return;
        }
        if let Some(node) = inner.drop_node(ino) {
            if inner.nodes.by_id.get(&node.entry.id) == Some(&ino) {
                inner.nodes.by_id.remove(&node.entry.id);
            }
        }
    }

    /// Note which content version the kernel's page cache holds for `ino` after an open; returns
    /// whether it was that version already (so the page cache may be kept).
    pub fn note_cached_tag(&self, ino: u64, tag: &Version) -> bool {
        self.lock()
            .nodes
            .update(ino, |node| {
                let same = node.cached_tag.as_ref() == Some(tag);
                node.cached_tag = Some(tag.clone());
                same
            })
            .unwrap_or(false)
    }

    /// Forget every listing and attribute trust (used when the remote may have changed in ways
    /// we cannot see, and by tests).
    pub fn expire_all(&self, now: Instant) {
        let mut inner = self.lock();
        inner.count(inner.nodes.len());
        inner.nodes.expire_all(now);
        for dir in inner.listings.keys().copied().collect::<Vec<_>>() {
            if let Some(l) = inner.listing_mut(dir) {
                l.valid_until = now;
            }
        }
    }

    /// Create an inode for an item that exists only locally so far (a file just created), with one
    /// kernel reference. Its id is provisional until the upload gives it the server's.
    pub fn insert_local(&self, parent: u64, entry: Entry, local: LocalContent) -> u64 {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        inner.count(1);
        inner.changed.note(parent, &entry.name, epoch);
        let ino = inner.next_ino();
        inner.nodes.by_id.insert(entry.id.clone(), ino);
        inner
            .nodes
            .insert(Node::new(ino, parent, entry, Instant::now(), 1, Some(local)));
        ino
    }

    /// Change `ino` under the lock: its local content, its entry, or both. Returns what `f` returns,
    /// or `None` when the inode is unknown. Keeps the indexes right. `f` runs under the table's
    /// lock: it changes fields and does no I/O (what it takes out, it returns).
    pub fn with_node<R>(&self, ino: u64, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        inner.count(1);
        let (r, old_id, old_place, new_id, new_place) = inner.nodes.update(ino, |node| {
            let old_id = node.entry.id.clone();
            let old_place = (node.parent, node.entry.name.clone());
            let r = f(node);
            let new_place = (node.parent, node.entry.name.clone());
            (r, old_id, old_place, node.entry.id.clone(), new_place)
        })?;
        if new_place != old_place {
            inner.changed.note(old_place.0, &old_place.1, epoch);
        }
        inner.changed.note(new_place.0, &new_place.1, epoch);
        if old_id != new_id {
            if inner.nodes.by_id.get(&old_id) == Some(&ino) {
                inner.nodes.by_id.remove(&old_id);
            }
            // Another inode the server listing made for the new id gives way to this one.
            if let Some(other) = inner.nodes.by_id.insert(new_id, ino) {
                if other != ino
                    && inner
                        .nodes
                        .get(other)
                        .is_some_and(|n| n.lookups == 0 && n.local.is_none())
                {
                    inner.drop_node(other);
                }
            }
        }
        Some(r)
    }

    /// The inode whose local content has journal key `key`.
    pub fn by_local_key(&self, key: &str) -> Option<u64> {
        let inner = self.lock();
        inner.count(1);
        inner.nodes.by_local_key(key)
    }

    /// Inodes with local content at or below folder `dir` (for waiting on their uploads before the
    /// folder moves).
    pub fn local_below(&self, dir: u64) -> Vec<Node> {
        let inner = self.lock();
        inner
            .nodes
            .with_local()
            .filter(|n| {
                let mut p = n.parent;
                let mut hops = 0;
                loop {
                    inner.count(1);
                    if p == dir {
                        return true;
                    }
                    if p == ROOT_INO || hops > 4096 {
                        return false;
                    }
                    hops += 1;
                    p = match inner.nodes.get(p) {
                        Some(parent) => parent.parent,
                        None => return false,
                    };
                }
            })
            .cloned()
            .collect()
    }

    /// Folder `dir` just gained, lost or renamed a child by our hand: show the time of that change
    /// as its mtime, as a local filesystem would (`make`, backup tools and pjdfstest look at it).
    /// The next answer from the server replaces it with the server's own.
    pub fn touch_dir(&self, dir: u64) {
        self.bump_local();
        self.lock()
            .nodes
            .update(dir, |node| node.entry.mtime = SystemTime::now());
    }

    /// Take file `ino` out of the tree while descriptors are still open on it (it was unlinked): it
    /// keeps its inode and local content for them, but no folder lists it and no lookup finds it.
    pub fn detach(&self, ino: u64) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let Some((parent, name, id)) = inner.nodes.update(ino, |node| {
            let parent = std::mem::replace(&mut node.parent, DETACHED);
            (parent, node.entry.name.clone(), node.entry.id.clone())
        }) else {
            return;
        };
        inner.changed.note(parent, &name, epoch);
        if inner.nodes.by_id.get(&id) == Some(&ino) {
            inner.nodes.by_id.remove(&id);
        }
    }

    /// Every inode whose id is at or below `from` gets the id `translate` gives it (a folder moved
    /// on a remote whose ids are paths).
    pub fn rekey_below(&self, translate: impl Fn(&ItemId) -> Option<ItemId>) {
        self.bump_local();
        let mut inner = self.lock();
        inner.count(inner.nodes.len());
        let moves: Vec<(u64, ItemId, ItemId)> = inner
            .nodes
            .values()
            .filter_map(|n| translate(&n.entry.id).map(|new| (n.ino, n.entry.id.clone(), new)))
            .collect();
        for (ino, old, new) in moves {
            if inner.nodes.by_id.get(&old) == Some(&ino) {
                inner.nodes.by_id.remove(&old);
            }
            inner.nodes.by_id.insert(new.clone(), ino);
            if inner.nodes.update(ino, |n| n.entry.id = new).is_some() {
                if let Some(listing) = inner.listing_mut(ino) {
                    listing.valid_until = Instant::now();
                }
            }
        }
    }

    /// Drop the inode `ino` outright (its item was deleted), unless the kernel still holds it, in
    /// which case it stays until forgotten but leaves the id index.
    pub fn remove_item(&self, ino: u64) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let Some((parent, name, id, keep, local)) = inner.nodes.update(ino, |node| {
            let local = node.local.take();
            let keep = node.lookups > 0;
            (node.parent, node.entry.name.clone(), node.entry.id.clone(), keep, local)
        }) else {
            return;
        };
        inner.changed.note(parent, &name, epoch);
        if inner.nodes.by_id.get(&id) == Some(&ino) {
            inner.nodes.by_id.remove(&id);
        }
        if !keep {
            inner.drop_node(ino);
        }
        drop(inner);
        // Its staged file closes here, once the lock is released.
        drop(local);
    }

    /// `entry` (the server's answer about inode `ino`) as the node shows it: with the time we
    /// wrote its version with, when it is ours (see [`Node::shown_mtime`]).
    pub fn as_shown(&self, ino: u64, mut entry: Entry) -> Entry {
        if let Some(n) = self.lock().nodes.get(ino) {
            entry.mtime = n.shown_mtime(&entry);
        }
        entry
    }

    /// The inode of item `id`, if known.
    pub fn ino_of(&self, id: &ItemId) -> Option<u64> {
        self.lock().nodes.by_id.get(id).copied()
    }

    /// Every item id known, with its inode (for reconciling after a full enumeration).
    pub fn known_ids(&self) -> Vec<(ItemId, u64)> {
        let inner = self.lock();
        inner.count(inner.nodes.by_id.len());
        inner.nodes.by_id.iter().map(|(id, ino)| (id.clone(), *ino)).collect()
    }

    /// Folders worth revalidating, at most `max`: the root, those with a listing, and those the
    /// kernel holds (it may have names in them cached). Listed ones first.
    pub fn revalidation_candidates(&self, max: usize) -> Vec<(u64, ItemId)> {
        let inner = self.lock();
        inner.count(inner.nodes.len());
        let listed = |n: &Node| inner.listings.contains_key(&n.ino);
        let mut found: Vec<&Node> = inner
            .nodes
            .values()
            .filter(|n| n.entry.kind == EntryKind::Directory)
            .filter(|n| n.ino == ROOT_INO || listed(n) || n.lookups > 0)
            .filter(|n| inner.nodes.by_id.get(&n.entry.id) == Some(&n.ino))
            .collect();
        found.sort_by_key(|n| (n.ino != ROOT_INO, !listed(n), n.ino));
        found
            .into_iter()
            .take(max)
            .map(|n| (n.ino, n.entry.id.clone()))
            .collect()
    }

    /// Ids of the items known to be in folder `dir` (their inodes say so).
    pub fn known_children(&self, dir: u64) -> Vec<ItemId> {
        let inner = self.lock();
        let ids: Vec<ItemId> = inner
            .nodes
            .children(dir)
            .filter(|n| n.ino != ROOT_INO && inner.nodes.by_id.get(&n.entry.id) == Some(&n.ino))
            .map(|n| n.entry.id.clone())
            .collect();
        inner.count(ids.len());
        ids
    }

    /// Number of inodes held (for tests and status).
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether only the root is left.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}
