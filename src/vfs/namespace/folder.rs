//! Folders: storing a listing (merged with the changes we made while it was on its way),
//! answering lookups from it and from the nodes found in the folder, and keeping it true after
//! our own changes. Every lookup by (folder, name) is a map lookup in an index, never a scan.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::remote::{Entry, ItemId, Version};

use super::super::local::is_placeholder_id;
use super::listing::Listing;
use super::names::folded;
use super::node::Node;
use super::table::{Inner, InodeTable};

/// A listing stored by [`InodeTable::set_listing`]: the children with their inode numbers, and
/// the items whose content version changed (their cached blocks can go).
pub type StoredListing = (Vec<(u64, Entry)>, Vec<(ItemId, Version)>);

impl Inner {
    /// The inode with local content called `name` in `dir`, if any (its exact spelling first).
    pub(super) fn local_child(&self, dir: u64, name: &str) -> Option<&Node> {
        self.count(1);
        let exact = self.nodes.named(dir, name).find(|n| n.local.is_some());
        exact.or_else(|| self.nodes.spelled(dir, name).find(|n| n.local.is_some()))
    }

    /// The live node called `name` in `dir` (indexed by its id, so not a stale copy), if any.
    pub(super) fn named_child(&self, dir: u64, name: &str) -> Option<&Node> {
        self.count(1);
        self.nodes
            .named(dir, name)
            .find(|n| self.nodes.by_id.get(&n.entry.id) == Some(&n.ino))
    }

    /// The node standing for `entry` in `dir`: the one indexed by its id, or, for a file created
    /// here whose upload has given it its server id since `entry` was taken, the node that holds
    /// the name now.
    pub(super) fn holder(&self, dir: u64, entry: &Entry) -> Option<&Node> {
        match self.nodes.by_id.get(&entry.id) {
            Some(ino) => self.nodes.get(*ino),
            None if is_placeholder_id(&entry.id) => self.named_child(dir, &entry.name),
            None => None,
        }
    }

    /// Local children of `dir`, which override same-named entries of a server listing.
    pub(super) fn local_children(&self, dir: u64) -> Vec<(u64, Entry)> {
        let out: Vec<(u64, Entry)> = self.nodes.local_in(dir).map(|n| (n.ino, n.entry.clone())).collect();
        self.count(out.len());
        out
    }
}

impl InodeTable {
    /// Store a folder's listing and refresh the nodes of its children that already exist. Returns
    /// the children with their inode numbers (created with no kernel reference when new), and the
    /// content versions that changed, so their cached blocks can be dropped.
    pub fn set_listing(&self, dir: u64, children: Vec<Entry>, valid_until: Instant) -> StoredListing {
        self.set_listing_asked_at(dir, children, valid_until, self.local_epoch())
    }

    /// [`set_listing`](Self::set_listing) of a listing asked for at local epoch `asked_at`: names
    /// we changed ourselves since (an upload that landed, a create, a rename, a delete) keep what
    /// the mount knows of them, whatever the listing says, as the server's answer may predate the
    /// change. When the record of changes does not reach back that far, the listing is stored
    /// already expired, so it serves this one snapshot and no lookup trusts it.
    pub fn set_listing_asked_at(
        &self,
        dir: u64,
        mut children: Vec<Entry>,
        mut valid_until: Instant,
        asked_at: u64,
    ) -> StoredListing {
        let mut inner = self.lock();
        inner.count(children.len());
        if asked_at < inner.changed.pruned_before() {
            valid_until = valid_until.min(Instant::now());
        }
        let changed = inner.changed.since(dir, asked_at);
        let ci = inner.nodes.case_insensitive();
        if !changed.is_empty() {
            let changed_folded: HashSet<String> = changed.iter().map(|n| folded(ci, n)).collect();
            children.retain(|c| !changed_folded.contains(&folded(ci, &c.name)));
            let old = inner.listings.get(&dir).cloned();
            for name in &changed {
                // Our changes keep the folder's listing current (a delete takes the name out
                // before its inode goes), so where there is one, it says whether the name exists;
                // the node holding the name says what it is now (a file just uploaded goes by
                // its server id). Local children are merged below.
                let listed = old.as_ref().map(|l| l.get(name));
                let known = match (listed, inner.named_child(dir, name)) {
                    (Some(None), _) => None,
                    (_, Some(node)) if node.local.is_some() => None,
                    (_, Some(node)) => Some(node.entry.clone()),
                    (Some(Some(e)), None) if !is_placeholder_id(&e.id) => Some(e.clone()),
                    (Some(Some(_)), None) => None,
                    (None, None) => None,
                };
                children.extend(known);
            }
        }
        let mut listed = Vec::with_capacity(children.len());
        let mut replaced = Vec::new();
        let mut map = BTreeMap::new();
        let local = inner.local_children(dir);
        let local_names: HashSet<String> = local.iter().map(|(_, e)| folded(ci, &e.name)).collect();
        for child in children {
            if local_names.contains(&folded(ci, &child.name)) {
                continue;
            }
            let up = Self::upsert_locked(&mut inner, dir, child.clone(), valid_until, 0);
            if let Some(old) = up.replaced_tag {
                replaced.push((child.id.clone(), old));
            }
            map.insert(child.name.clone(), child.clone());
            listed.push((up.ino, child));
        }
        // Files still local stand in the listing under their local entries: when one's upload
        // lands, its name stays listed (the node, by its server id, answers for it) until the
        // upload's own listing update, rather than vanishing for a moment.
        for (_, e) in &local {
            map.insert(e.name.clone(), e.clone());
        }
        // Children that vanished and that the kernel no longer references can go now.
        let gone: Vec<u64> = match inner.listings.get(&dir) {
            Some(old) => {
                inner.count(old.len());
                old.iter()
                    .filter(|(name, e)| map.get(*name).map(|n: &Entry| n.id != e.id).unwrap_or(true))
                    .filter_map(|(_, e)| inner.nodes.by_id.get(&e.id).copied())
                    .collect()
            }
            None => Vec::new(),
        };
        for ino in gone {
            if inner.nodes.get(ino).is_some_and(|n| n.lookups == 0 && n.parent == dir) {
                Self::remove_locked(&mut inner, ino);
            }
        }
        if inner.nodes.get(dir).is_some() {
            inner.listings.insert(dir, Arc::new(Listing::new(map, valid_until, ci)));
        }
        listed.extend(local);
        (listed, replaced)
    }

    /// The entry named `name` in `dir`'s listing, if that listing is still valid at `now`:
    /// `Some(Some(entry))` when present, `Some(None)` when the fresh listing says it does not
    /// exist, `None` when there is no fresh listing to ask.
    pub fn listed_child(&self, dir: u64, name: &str, now: Instant) -> Option<Option<Entry>> {
        let inner = self.lock();
        if let Some(local) = inner.local_child(dir, name) {
            return Some(Some(local.entry.clone()));
        }
        let listing = inner.listings.get(&dir)?;
        if listing.valid_until <= now {
            return None;
        }
        inner.count(1);
        Some(listing.find(name).map(|(_, e)| e.clone()))
    }

    /// The entry named `name` in `dir` as last seen, however old: from the folder's listing, or
    /// from a node found by an earlier lookup. For when the server cannot be asked (sign-in needed).
    pub fn known_child(&self, dir: u64, name: &str) -> Option<Entry> {
        let inner = self.lock();
        inner.count(1);
        if let Some((_, e)) = inner.listings.get(&dir).and_then(|l| l.find(name)) {
            return Some(e.clone());
        }
        let exact = inner.nodes.named(dir, name).next();
        exact
            .or_else(|| inner.nodes.spelled(dir, name).next())
            .map(|n| n.entry.clone())
    }

    /// The children of `dir` from a listing still valid at `now`, with their inode numbers.
    pub fn fresh_listing(&self, dir: u64, now: Instant) -> Option<Vec<(u64, Entry)>> {
        self.listing_as_of(dir, Some(now))
    }

    /// The children of `dir` from its last listing however old (`None`: it was never listed).
    pub fn last_listing(&self, dir: u64) -> Option<Vec<(u64, Entry)>> {
        self.listing_as_of(dir, None)
    }

    fn listing_as_of(&self, dir: u64, now: Option<Instant>) -> Option<Vec<(u64, Entry)>> {
        let mut inner = self.lock();
        let listing = inner.listings.get(&dir)?.clone();
        if now.is_some_and(|now| listing.valid_until <= now) {
            return None;
        }
        inner.count(listing.len());
        let local = inner.local_children(dir);
        let local_names: HashSet<&str> = local.iter().map(|(_, l)| l.name.as_str()).collect();
        let mut out: Vec<(u64, Entry)> = Vec::with_capacity(listing.len());
        for e in listing.values().filter(|e| !local_names.contains(e.name.as_str())) {
            // Keep nodes current but never extend trust beyond the listing's own.
            let child = match inner.holder(dir, e) {
                Some(node) => (
                    node.ino,
                    if node.entry.id == e.id {
                        e.clone()
                    } else {
                        node.entry.clone()
                    },
                ),
                None => (
                    Self::upsert_locked(&mut inner, dir, e.clone(), listing.valid_until, 0).ino,
                    e.clone(),
                ),
            };
            out.push(child);
        }
        out.extend(local);
        Some(out)
    }

    /// The children of `dir`'s listing (fresh or not), if it has one: a snapshot, shared with the
    /// table until the listing next changes.
    pub fn listing_of(&self, dir: u64) -> Option<Arc<Listing>> {
        self.lock().listings.get(&dir).cloned()
    }

    /// Trust `dir`'s listing until `valid_until` (it was just compared with the server).
    pub fn renew_listing(&self, dir: u64, valid_until: Instant) {
        if let Some(l) = self.lock().listing_mut(dir) {
            l.valid_until = l.valid_until.max(valid_until);
        }
    }

    /// Add or replace `entry` in `dir`'s listing (after a change we made ourselves), so a fresh
    /// listing stays true without asking the server.
    pub fn listing_insert(&self, dir: u64, entry: Entry) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        inner.count(1);
        inner.changed.note(dir, &entry.name, epoch);
        if let Some(listing) = inner.listing_mut(dir) {
            // One name on the server: another spelling of it gives way.
            let other = listing
                .find(&entry.name)
                .map(|(k, _)| k.clone())
                .filter(|k| *k != entry.name);
            if let Some(k) = other {
                listing.remove(&k);
            }
            listing.insert(entry);
        }
    }

    /// Remove `name` from `dir`'s listing (after a change we made ourselves).
    pub fn listing_remove(&self, dir: u64, name: &str) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        inner.count(1);
        inner.changed.note(dir, name, epoch);
        if let Some(listing) = inner.listing_mut(dir) {
            // The name as the caller spelt it may be another spelling of the listed one.
            if let Some(k) = listing.find(name).map(|(k, _)| k.clone()) {
                listing.remove(&k);
            }
        }
    }
}
