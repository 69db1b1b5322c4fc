//! The inode table: which remote item each inode number stands for, what we last heard about it,
//! and how many references the kernel holds.
//!
//! Inodes are keyed by remote item ID, so the same item always gets the same inode while the kernel
//! remembers it. Inode numbers are never reused within a mount. The kernel's lookup count decides
//! lifetime: `lookup` and each `readdirplus` entry add one, `forget` takes them away, and an inode
//! nobody references is dropped. Nodes that only a plain `readdir` produced (count 0) stay until
//! the folder's next listing no longer contains them.
//!
//! Each node carries a time until which its attributes are trusted, and folders carry their last
//! listing with its own expiry, so lookups in a freshly listed folder (the `ls -l` case) never touch
//! the network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::remote::{Entry, ItemId, Version};

use super::attr::content_tag;
use super::changes::Invalidation;
use super::local::LocalContent;

/// The root folder's inode number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

/// A folder's children as last listed.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Children by name.
    pub children: BTreeMap<String, Entry>,
    /// Until when the listing is trusted without asking the server.
    pub valid_until: Instant,
}

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
    /// Last listing, for folders.
    pub listing: Option<Listing>,
    /// Content version that the kernel's page cache holds for this inode, if any: the version
    /// that was current at the last open. Reopening the same version may keep the page cache.
    pub cached_tag: Option<Version>,
    /// Content on local disk that the server does not have yet. While set, `entry` shows the local
    /// size and mtime and server metadata does not replace it.
    pub local: Option<LocalContent>,
    /// The modification time we wrote version `.0` with (see [`super::local::settle`]): while the
    /// server reports that version, `stat` shows this time, not the server's rounding of it.
    pub own_mtime: Option<(Option<Version>, SystemTime)>,
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

    /// A node with no listing yet and nothing in the kernel's page cache.
    fn new(
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
            listing: None,
            cached_tag: None,
            local,
            own_mtime: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<u64, Node>,
    by_id: HashMap<ItemId, u64>,
    next_ino: u64,
    /// Inodes with local content (few: files being written or waiting for upload).
    with_local: std::collections::BTreeSet<u64>,
    /// Names are compared as the remote does ([`crate::remote::Capabilities::case_insensitive_names`]).
    case_insensitive: bool,
    /// Names we changed ourselves (created, uploaded, renamed, deleted), by folder and name, with
    /// the local epoch of the last change: a listing asked for before that epoch predates the
    /// change, and what the mount knows of the name wins over it ([`InodeTable::set_listing_asked_at`]).
    changed_names: HashMap<(u64, String), u64>,
    /// Records of `changed_names` older than this epoch were pruned: a listing asked for before
    /// it cannot be merged with certainty.
    changes_pruned_before: u64,
    /// Work done: nodes and listing entries copied or visited (see [`InodeTable::work`]).
    work: std::sync::atomic::AtomicU64,
}

/// Whether `a` and `b` name the same item: equal, or, where the remote compares names
/// case-insensitively, equal once each character is folded to lowercase (one character at a
/// time, as the fake Graph server folds them).
pub fn same_name(case_insensitive: bool, a: &str, b: &str) -> bool {
    a == b
        || (case_insensitive
            && a.chars()
                .flat_map(char::to_lowercase)
                .eq(b.chars().flat_map(char::to_lowercase)))
}

/// The child called `name` among `children`: its exact spelling first, then, where names are
/// case-insensitive, another spelling of it (the server holds at most one).
fn find_named<'a>(
    children: &'a BTreeMap<String, Entry>,
    name: &str,
    case_insensitive: bool,
) -> Option<(&'a String, &'a Entry)> {
    children.get_key_value(name).or_else(|| {
        case_insensitive
            .then(|| children.iter().find(|(k, _)| same_name(true, k, name)))
            .flatten()
    })
}

/// Most names `changed_names` remembers before the oldest half is pruned.
const MAX_CHANGED_NAMES: usize = 16_384;

impl Inner {
    fn count(&self, n: usize) {
        self.work.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The inode with local content called `name` in `dir`, if any (its exact spelling first).
    fn local_child(&self, dir: u64, name: &str) -> Option<&Node> {
        self.count(self.with_local.len());
        let mine = || {
            self.with_local
                .iter()
                .filter_map(|i| self.nodes.get(i))
                .filter(|n| n.parent == dir)
        };
        mine()
            .find(|n| n.entry.name == name)
            .or_else(|| mine().find(|n| same_name(self.case_insensitive, &n.entry.name, name)))
    }

    /// Note that we changed `name` in `dir` at local epoch `epoch`.
    fn note_changed(&mut self, dir: u64, name: &str, epoch: u64) {
        self.changed_names.insert((dir, name.to_string()), epoch);
        if self.changed_names.len() > MAX_CHANGED_NAMES {
            let mut epochs: Vec<u64> = self.changed_names.values().copied().collect();
            epochs.sort_unstable();
            let cut = epochs[epochs.len() / 2];
            self.changed_names.retain(|_, e| *e > cut);
            self.changes_pruned_before = self.changes_pruned_before.max(cut + 1);
        }
    }

    /// The live node called `name` in `dir` (indexed by its id, so not a stale copy), if any.
    fn named_child(&self, dir: u64, name: &str) -> Option<&Node> {
        self.count(self.nodes.len());
        self.nodes
            .values()
            .filter(|n| n.parent == dir && n.ino != dir && n.entry.name == name)
            .find(|n| self.by_id.get(&n.entry.id) == Some(&n.ino))
    }

    /// The node standing for `entry` in `dir`: the one indexed by its id, or, for a file created
    /// here whose upload has given it its server id since `entry` was taken, the node that holds
    /// the name now.
    fn holder(&self, dir: u64, entry: &Entry) -> Option<&Node> {
        match self.by_id.get(&entry.id) {
            Some(ino) => self.nodes.get(ino),
            None if super::local::is_placeholder_id(&entry.id) => self.named_child(dir, &entry.name),
            None => None,
        }
    }

    /// Local children of `dir`, which override same-named entries of a server listing.
    fn local_children(&self, dir: u64) -> Vec<(u64, Entry)> {
        self.count(self.with_local.len());
        self.with_local
            .iter()
            .filter_map(|i| self.nodes.get(i))
            .filter(|n| n.parent == dir)
            .map(|n| (n.ino, n.entry.clone()))
            .collect()
    }
}

/// The parent of a detached inode ([`InodeTable::detach`]): a file unlinked while still open.
pub const DETACHED: u64 = u64::MAX;

/// The result of recording fresh metadata for an item.
pub struct Upserted {
    /// Its inode number.
    pub ino: u64,
    /// The content version it had before, when that differs from the new one.
    pub replaced_tag: Option<Version>,
}

/// A listing stored by [`InodeTable::set_listing`]: the children with their inode numbers, and
/// the items whose content version changed (their cached blocks can go).
pub type StoredListing = (Vec<(u64, Entry)>, Vec<(ItemId, Version)>);

/// Thread-safe inode table.
pub struct InodeTable {
    inner: Mutex<Inner>,
    /// Bumped by every change we make ourselves (creates, writes, uploads, renames, deletes), so
    /// a revalidation round can tell that what it listed may predate one of them.
    local_epoch: std::sync::atomic::AtomicU64,
}

impl InodeTable {
    /// A table holding only the root, described by `root`.
    pub fn new(root: Entry, valid_until: Instant) -> Self {
        let mut inner = Inner {
            next_ino: ROOT_INO + 1,
            ..Default::default()
        };
        inner.by_id.insert(root.id.clone(), ROOT_INO);
        inner
            .nodes
            .insert(ROOT_INO, Node::new(ROOT_INO, ROOT_INO, root, valid_until, 1, None));
        InodeTable {
            inner: Mutex::new(inner),
            local_epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Match names case-insensitively when `on` (a remote whose server does: OneDrive), in lookups
    /// of listed, local and known children and in our own listing updates.
    pub fn with_case_insensitive_names(self, on: bool) -> Self {
        self.lock().case_insensitive = on;
        self
    }

    /// How many changes we made ourselves so far (see the field).
    pub fn local_epoch(&self) -> u64 {
        self.local_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Count one change of ours; returns the epoch it happened in.
    fn bump_local(&self) -> u64 {
        self.local_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the node, if the inode is known.
    pub fn get(&self, ino: u64) -> Option<Node> {
        let inner = self.lock();
        let node = inner.nodes.get(&ino)?;
        inner.count(1 + node.listing.as_ref().map_or(0, |l| l.children.len()));
        Some(node.clone())
    }

    /// Work the table has done so far: nodes and listing entries it copied or visited. A count,
    /// not a time, so a test can check that an operation costs the same however many items the
    /// table holds; also a figure for status reports.
    pub fn work(&self) -> u64 {
        self.lock().work.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Record fresh metadata for a child of `parent`, creating its inode if needed, and add
    /// `add_lookups` kernel references.
    pub fn upsert(&self, parent: u64, entry: Entry, valid_until: Instant, add_lookups: u64) -> Upserted {
        let mut inner = self.lock();
        if super::local::is_placeholder_id(&entry.id) && !inner.by_id.contains_key(&entry.id) {
            // A file created here, seen while only local, whose upload landed since: it now goes by
            // its server id. Its node still holds the name; never make a second one for the old id.
            if let Some(ino) = inner.holder(parent, &entry).map(|n| n.ino) {
                if let Some(node) = inner.nodes.get_mut(&ino) {
                    node.lookups += add_lookups;
                }
                return Upserted {
                    ino,
                    replaced_tag: None,
                };
            }
        }
        Self::upsert_locked(&mut inner, parent, entry, valid_until, add_lookups)
    }

    fn upsert_locked(inner: &mut Inner, parent: u64, entry: Entry, valid_until: Instant, add: u64) -> Upserted {
        if let Some(&ino) = inner.by_id.get(&entry.id) {
            if let Some(node) = inner.nodes.get_mut(&ino) {
                if node.local.is_some() {
                    // Our own content wins until the server has it.
                    node.lookups += add;
                    return Upserted {
                        ino,
                        replaced_tag: None,
                    };
                }
                let old = content_tag(&node.entry);
                let new = content_tag(&entry);
                let replaced_tag = (old != new).then_some(old);
                if node.entry.kind != entry.kind {
                    // Same path, different kind: the folder listing of a file is meaningless.
                    node.listing = None;
                }
                let mut entry = entry;
                entry.mtime = node.shown_mtime(&entry);
                node.entry = entry;
                node.attr_valid_until = valid_until;
                node.lookups += add;
                if ino != ROOT_INO {
                    node.parent = parent;
                }
                return Upserted { ino, replaced_tag };
            }
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.by_id.insert(entry.id.clone(), ino);
        inner
            .nodes
            .insert(ino, Node::new(ino, parent, entry, valid_until, add, None));
        Upserted {
            ino,
            replaced_tag: None,
        }
    }

    /// Replace the metadata of a known inode (after a `stat`). Returns the replaced content
    /// version when it changed, or `None` when the inode is gone.
    pub fn refresh(&self, ino: u64, entry: Entry, valid_until: Instant) -> Option<Upserted> {
        let mut inner = self.lock();
        let parent = inner.nodes.get(&ino)?.parent;
        let old_id = inner.nodes.get(&ino)?.entry.id.clone();
        if old_id != entry.id {
            return None;
        }
        Some(Self::upsert_locked(&mut inner, parent, entry, valid_until, 0))
    }

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
        if asked_at < inner.changes_pruned_before {
            valid_until = valid_until.min(Instant::now());
        }
        let changed: Vec<String> = inner
            .changed_names
            .iter()
            .filter(|((d, _), e)| *d == dir && **e > asked_at)
            .map(|((_, name), _)| name.clone())
            .collect();
        let ci = inner.case_insensitive;
        if !changed.is_empty() {
            children.retain(|c| !changed.iter().any(|n| same_name(ci, n, &c.name)));
            let old = inner.nodes.get(&dir).and_then(|n| n.listing.as_ref());
            for name in &changed {
                // Our changes keep the folder's listing current (a delete takes the name out
                // before its inode goes), so where there is one, it says whether the name exists;
                // the node holding the name says what it is now (a file just uploaded goes by
                // its server id). Local children are merged below.
                let listed = old.map(|l| l.children.get(name));
                let known = match (listed, inner.named_child(dir, name)) {
                    (Some(None), _) => None,
                    (_, Some(node)) if node.local.is_some() => None,
                    (_, Some(node)) => Some(node.entry.clone()),
                    (Some(Some(e)), None) if !super::local::is_placeholder_id(&e.id) => Some(e.clone()),
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
        for child in children {
            if local.iter().any(|(_, e)| same_name(ci, &e.name, &child.name)) {
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
        let gone: Vec<u64> = match inner.nodes.get(&dir).and_then(|n| n.listing.as_ref()) {
            Some(old) => old
                .children
                .iter()
                .filter(|(name, e)| map.get(*name).map(|n| n.id != e.id).unwrap_or(true))
                .filter_map(|(_, e)| inner.by_id.get(&e.id).copied())
                .collect(),
            None => Vec::new(),
        };
        for ino in gone {
            if inner
                .nodes
                .get(&ino)
                .map(|n| n.lookups == 0 && n.parent == dir)
                .unwrap_or(false)
            {
                Self::remove_locked(&mut inner, ino);
            }
        }
        if let Some(node) = inner.nodes.get_mut(&dir) {
            node.listing = Some(Listing {
                children: map,
                valid_until,
            });
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
        let listing = inner.nodes.get(&dir)?.listing.as_ref()?;
        if listing.valid_until <= now {
            return None;
        }
        Some(find_named(&listing.children, name, inner.case_insensitive).map(|(_, e)| e.clone()))
    }

    /// The entry named `name` in `dir` as last seen, however old: from the folder's listing, or
    /// from a node found by an earlier lookup. For when the server cannot be asked (sign-in needed).
    pub fn known_child(&self, dir: u64, name: &str) -> Option<Entry> {
        let inner = self.lock();
        let ci = inner.case_insensitive;
        if let Some((_, e)) = inner
            .nodes
            .get(&dir)
            .and_then(|n| n.listing.as_ref())
            .and_then(|l| find_named(&l.children, name, ci))
        {
            return Some(e.clone());
        }
        inner.count(inner.nodes.len());
        let in_dir = || inner.nodes.values().filter(|n| n.parent == dir && n.ino != dir);
        in_dir()
            .find(|n| n.entry.name == name)
            .or_else(|| in_dir().find(|n| same_name(ci, &n.entry.name, name)))
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
        let listing = inner.nodes.get(&dir)?.listing.as_ref()?;
        if now.is_some_and(|now| listing.valid_until <= now) {
            return None;
        }
        let children: Vec<Entry> = listing.children.values().cloned().collect();
        let valid_until = listing.valid_until;
        let local = inner.local_children(dir);
        let mut out: Vec<(u64, Entry)> = children
            .into_iter()
            .filter(|e| !local.iter().any(|(_, l)| l.name == e.name))
            .map(|e| {
                // Keep nodes current but never extend trust beyond the listing's own.
                match inner.holder(dir, &e) {
                    Some(node) => (node.ino, if node.entry.id == e.id { e } else { node.entry.clone() }),
                    None => (Self::upsert_locked(&mut inner, dir, e.clone(), valid_until, 0).ino, e),
                }
            })
            .collect();
        out.extend(local);
        Some(out)
    }

    /// Add one kernel reference to `ino` (a `readdirplus` entry the kernel accepted). When the
    /// inode was dropped meanwhile, it is recreated from `entry`; returns the inode number to use.
    /// The entry returned is what the mount knows of the item now, which may be newer than the
    /// snapshot's `entry` (a file whose upload landed since goes by its server id).
    pub fn add_lookup(&self, dir: u64, ino: u64, entry: &Entry, valid_until: Instant) -> (u64, Entry) {
        let mut inner = self.lock();
        let same_item = inner
            .nodes
            .get(&ino)
            .is_some_and(|n| n.entry.id == entry.id || (n.parent == dir && n.entry.name == entry.name));
        let holder = if same_item {
            Some(ino)
        } else if let Some(&by_id) = inner.by_id.get(&entry.id) {
            Some(by_id)
        } else {
            // The snapshot's id is gone (the item got another id, or the node was dropped): the
            // name's current holder, so the kernel never gets a second inode for one file.
            inner.named_child(dir, &entry.name).map(|n| n.ino)
        };
        if let Some(node) = holder.and_then(|i| inner.nodes.get_mut(&i)) {
            node.lookups += 1;
            return (node.ino, node.entry.clone());
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
        let drop_it = match inner.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            }
            None => false,
        };
        if drop_it {
            Self::remove_locked(&mut inner, ino);
        }
    }

    fn remove_locked(inner: &mut Inner, ino: u64) {
        if inner.nodes.get(&ino).map(|n| n.local.is_some()).unwrap_or(false) {
            // Content the server does not have yet keeps its inode until uploaded or deleted.
            return;
        }
        inner.with_local.remove(&ino);
        if let Some(node) = inner.nodes.remove(&ino) {
            if inner.by_id.get(&node.entry.id) == Some(&ino) {
                inner.by_id.remove(&node.entry.id);
            }
        }
    }

    /// Note which content version the kernel's page cache holds for `ino` after an open; returns
    /// whether it was that version already (so the page cache may be kept).
    pub fn note_cached_tag(&self, ino: u64, tag: &Version) -> bool {
        let mut inner = self.lock();
        match inner.nodes.get_mut(&ino) {
            Some(node) => {
                let same = node.cached_tag.as_ref() == Some(tag);
                node.cached_tag = Some(tag.clone());
                same
            }
            None => false,
        }
    }

    /// Forget every listing and attribute trust (used when the remote may have changed in ways
    /// we cannot see, and by tests).
    pub fn expire_all(&self, now: Instant) {
        let mut inner = self.lock();
        for node in inner.nodes.values_mut() {
            node.attr_valid_until = now;
            if let Some(l) = node.listing.as_mut() {
                l.valid_until = now;
            }
        }
    }

    /// Create an inode for an item that exists only locally so far (a file just created), with one
    /// kernel reference. Its id is provisional until the upload gives it the server's.
    pub fn insert_local(&self, parent: u64, entry: Entry, local: LocalContent) -> u64 {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        inner.note_changed(parent, &entry.name, epoch);
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.by_id.insert(entry.id.clone(), ino);
        inner.with_local.insert(ino);
        inner
            .nodes
            .insert(ino, Node::new(ino, parent, entry, Instant::now(), 1, Some(local)));
        ino
    }

    /// Change `ino` under the lock: its local content, its entry, or both. Returns what `f` returns,
    /// or `None` when the inode is unknown. Keeps the index of local inodes right.
    pub fn with_node<R>(&self, ino: u64, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let node = inner.nodes.get_mut(&ino)?;
        let old_id = node.entry.id.clone();
        let old_place = (node.parent, node.entry.name.clone());
        let r = f(node);
        let (has_local, new_id) = (node.local.is_some(), node.entry.id.clone());
        let new_place = (node.parent, node.entry.name.clone());
        if new_place != old_place {
            inner.note_changed(old_place.0, &old_place.1, epoch);
        }
        inner.note_changed(new_place.0, &new_place.1, epoch);
        if has_local {
            inner.with_local.insert(ino);
        } else {
            inner.with_local.remove(&ino);
        }
        if old_id != new_id {
            if inner.by_id.get(&old_id) == Some(&ino) {
                inner.by_id.remove(&old_id);
            }
            // Another inode the server listing made for the new id gives way to this one.
            if let Some(other) = inner.by_id.insert(new_id, ino) {
                if other != ino {
                    if let Some(n) = inner.nodes.get(&other) {
                        if n.lookups == 0 && n.local.is_none() {
                            inner.nodes.remove(&other);
                        }
                    }
                }
            }
        }
        Some(r)
    }

    /// The inode whose local content has journal key `key`.
    pub fn by_local_key(&self, key: &str) -> Option<u64> {
        let inner = self.lock();
        inner.count(inner.with_local.len());
        inner.with_local.iter().copied().find(|i| {
            inner
                .nodes
                .get(i)
                .and_then(|n| n.local.as_ref())
                .map(|l| l.key == key)
                .unwrap_or(false)
        })
    }

    /// Inodes with local content at or below folder `dir` (for waiting on their uploads before the
    /// folder moves).
    pub fn local_below(&self, dir: u64) -> Vec<Node> {
        let inner = self.lock();
        inner
            .with_local
            .iter()
            .filter_map(|i| inner.nodes.get(i))
            .filter(|n| {
                let mut p = n.parent;
                let mut hops = 0;
                loop {
                    if p == dir {
                        return true;
                    }
                    if p == ROOT_INO || hops > 4096 {
                        return false;
                    }
                    hops += 1;
                    p = match inner.nodes.get(&p) {
                        Some(parent) => parent.parent,
                        None => return false,
                    };
                }
            })
            .cloned()
            .collect()
    }

    /// Add or replace `entry` in `dir`'s listing (after a change we made ourselves), so a fresh
    /// listing stays true without asking the server.
    pub fn listing_insert(&self, dir: u64, entry: Entry) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let ci = inner.case_insensitive;
        inner.note_changed(dir, &entry.name, epoch);
        if let Some(listing) = inner.nodes.get_mut(&dir).and_then(|n| n.listing.as_mut()) {
            // One name on the server: another spelling of it gives way.
            let other = find_named(&listing.children, &entry.name, ci)
                .map(|(k, _)| k.clone())
                .filter(|k| *k != entry.name);
            if let Some(k) = other {
                listing.children.remove(&k);
            }
            listing.children.insert(entry.name.clone(), entry);
        }
    }

    /// Folder `dir` just gained, lost or renamed a child by our hand: show the time of that change
    /// as its mtime, as a local filesystem would (`make`, backup tools and pjdfstest look at it).
    /// The next answer from the server replaces it with the server's own.
    pub fn touch_dir(&self, dir: u64) {
        self.bump_local();
        if let Some(node) = self.lock().nodes.get_mut(&dir) {
            node.entry.mtime = SystemTime::now();
        }
    }

    /// Take file `ino` out of the tree while descriptors are still open on it (it was unlinked): it
    /// keeps its inode and local content for them, but no folder lists it and no lookup finds it.
    pub fn detach(&self, ino: u64) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else { return };
        let (parent, name) = (node.parent, node.entry.name.clone());
        node.parent = DETACHED;
        inner.note_changed(parent, &name, epoch);
        let Some(node) = inner.nodes.get_mut(&ino) else { return };
        let id = node.entry.id.clone();
        if inner.by_id.get(&id) == Some(&ino) {
            inner.by_id.remove(&id);
        }
    }

    /// Remove `name` from `dir`'s listing (after a change we made ourselves).
    pub fn listing_remove(&self, dir: u64, name: &str) {
        let epoch = self.bump_local();
        let mut inner = self.lock();
        let ci = inner.case_insensitive;
        inner.note_changed(dir, name, epoch);
        if let Some(listing) = inner.nodes.get_mut(&dir).and_then(|n| n.listing.as_mut()) {
            // The name as the caller spelt it may be another spelling of the listed one.
            if let Some(k) = find_named(&listing.children, name, ci).map(|(k, _)| k.clone()) {
                listing.children.remove(&k);
            }
        }
    }

    /// Every inode whose id is at or below `from` gets the id `translate` gives it (a folder moved
    /// on a remote whose ids are paths).
    pub fn rekey_below(&self, translate: impl Fn(&ItemId) -> Option<ItemId>) {
        self.bump_local();
        let mut inner = self.lock();
        let moves: Vec<(u64, ItemId, ItemId)> = inner
            .nodes
            .values()
            .filter_map(|n| translate(&n.entry.id).map(|new| (n.ino, n.entry.id.clone(), new)))
            .collect();
        for (ino, old, new) in moves {
            if inner.by_id.get(&old) == Some(&ino) {
                inner.by_id.remove(&old);
            }
            inner.by_id.insert(new.clone(), ino);
            if let Some(n) = inner.nodes.get_mut(&ino) {
                n.entry.id = new.clone();
                if let Some(listing) = n.listing.as_mut() {
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
        inner.with_local.remove(&ino);
        if let Some((parent, name)) = inner.nodes.get(&ino).map(|n| (n.parent, n.entry.name.clone())) {
            inner.note_changed(parent, &name, epoch);
        }
        let Some(node) = inner.nodes.get_mut(&ino) else { return };
        node.local = None;
        let id = node.entry.id.clone();
        let keep = node.lookups > 0;
        if inner.by_id.get(&id) == Some(&ino) {
            inner.by_id.remove(&id);
        }
        if !keep {
            inner.nodes.remove(&ino);
        }
    }

    /// `entry` (the server's answer about inode `ino`) as the node shows it: with the time we
    /// wrote its version with, when it is ours (see [`Node::shown_mtime`]).
    pub fn as_shown(&self, ino: u64, mut entry: Entry) -> Entry {
        if let Some(n) = self.lock().nodes.get(&ino) {
            entry.mtime = n.shown_mtime(&entry);
        }
        entry
    }

    /// The inode of item `id`, if known.
    pub fn ino_of(&self, id: &ItemId) -> Option<u64> {
        self.lock().by_id.get(id).copied()
    }

    /// Every item id known, with its inode (for reconciling after a full enumeration).
    pub fn known_ids(&self) -> Vec<(ItemId, u64)> {
        self.lock().by_id.iter().map(|(id, ino)| (id.clone(), *ino)).collect()
    }

    /// Folders worth revalidating, at most `max`: the root, those with a listing, and those the
    /// kernel holds (it may have names in them cached). Listed ones first.
    pub fn revalidation_candidates(&self, max: usize) -> Vec<(u64, ItemId)> {
        let inner = self.lock();
        let mut listed: Vec<&Node> = inner
            .nodes
            .values()
            .filter(|n| n.entry.kind == crate::remote::EntryKind::Directory)
            .filter(|n| n.ino == ROOT_INO || n.listing.is_some() || n.lookups > 0)
            .filter(|n| inner.by_id.get(&n.entry.id) == Some(&n.ino))
            .collect();
        listed.sort_by_key(|n| (n.ino != ROOT_INO, n.listing.is_none(), n.ino));
        listed
            .into_iter()
            .take(max)
            .map(|n| (n.ino, n.entry.id.clone()))
            .collect()
    }

    /// Ids of the items known to be in folder `dir` (their inodes say so).
    pub fn known_children(&self, dir: u64) -> Vec<ItemId> {
        let inner = self.lock();
        inner
            .nodes
            .values()
            .filter(|n| n.parent == dir && n.ino != ROOT_INO && inner.by_id.get(&n.entry.id) == Some(&n.ino))
            .map(|n| n.entry.id.clone())
            .collect()
    }

    /// The children of `dir`'s listing (fresh or not) by name, if it has one.
    pub fn listing_of(&self, dir: u64) -> Option<BTreeMap<String, Entry>> {
        self.lock()
            .nodes
            .get(&dir)?
            .listing
            .as_ref()
            .map(|l| l.children.clone())
    }

    /// Trust `dir`'s listing until `valid_until` (it was just compared with the server).
    pub fn renew_listing(&self, dir: u64, valid_until: Instant) {
        if let Some(l) = self.lock().nodes.get_mut(&dir).and_then(|n| n.listing.as_mut()) {
            l.valid_until = l.valid_until.max(valid_until);
        }
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
        let existing = inner.by_id.get(&entry.id).copied();
        if existing == Some(ROOT_INO) {
            // Only its version matters (folder attributes: see below).
            let node = inner.nodes.get_mut(&ROOT_INO)?;
            node.entry.version = entry.version;
            return Some(None);
        }
        let parent = *inner.by_id.get(parent_id)?;
        if let Some(ino) = existing {
            let node = inner.nodes.get(&ino)?.clone();
            if node.local.is_some() {
                // A local edit in flight wins: its upload, based on the version it replaced, meets
                // the new server version and the conflict rule keeps both.
                return Some(None);
            }
            if node.entry.kind != entry.kind {
                Self::gone_locked(&mut inner, ino, out);
                return Self::insert_new_locked(&mut inner, parent, entry, out);
            }
            if entry.kind == crate::remote::EntryKind::Directory {
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
            let is_file = entry.kind == crate::remote::EntryKind::File;
            if is_file && (replaced.is_some() || node.entry.size != entry.size || node.entry.mtime != entry.mtime) {
                out.push(Invalidation::Inode(ino));
            }
            if moved {
                if let Some(l) = inner.nodes.get_mut(&node.parent).and_then(|n| n.listing.as_mut()) {
                    if l.children
                        .get(&node.entry.name)
                        .map(|e| e.id == entry.id)
                        .unwrap_or(false)
                    {
                        l.children.remove(&node.entry.name);
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
            if let Some(l) = inner.nodes.get_mut(&parent).and_then(|n| n.listing.as_mut()) {
                l.children.insert(entry.name.clone(), entry.clone());
            }
            if let Some(n) = inner.nodes.get_mut(&ino) {
                entry.mtime = n.shown_mtime(&entry);
                n.entry = entry;
                n.parent = parent;
                n.attr_valid_until = valid_until;
            }
            return Some(replaced);
        }
        Self::insert_new_locked(&mut inner, parent, entry, out)
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
        if let Some(l) = inner.nodes.get_mut(&parent).and_then(|n| n.listing.as_mut()) {
            l.children.insert(entry.name.clone(), entry.clone());
            // Listed children have inodes (as after a listing), so records about its own children
            // that follow in the same batch find their parent.
            let until = l.valid_until;
            Self::upsert_locked(inner, parent, entry.clone(), until, 0);
        }
        // The kernel can hold a (negative) entry only in a folder it holds or we listed for it;
        // a full enumeration must not send one notification per item of the drive.
        let seen = inner
            .nodes
            .get(&parent)
            .map(|n| n.ino == ROOT_INO || n.lookups > 0 || n.listing.is_some())
            .unwrap_or(false);
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
            .nodes
            .get(&parent)
            .and_then(|n| n.listing.as_ref())
            .and_then(|l| l.children.get(&entry.name))
            .filter(|e| e.id != entry.id)
            .map(|e| e.id.clone());
        if let Some(other) = other {
            if let Some(l) = inner.nodes.get_mut(&parent).and_then(|n| n.listing.as_mut()) {
                l.children.remove(&entry.name);
            }
            out.push(Invalidation::Entry {
                parent,
                name: entry.name.clone(),
            });
            if let Some(&ino) = inner.by_id.get(&other) {
                if inner.nodes.get(&ino).map(|n| n.parent == parent).unwrap_or(false) {
                    Self::gone_locked(inner, ino, out);
                }
            }
        }
    }

    /// Item `id` is gone from the server (or moved where we do not look). Returns whether it was
    /// known. An item with local content not yet uploaded stays: local edits win.
    pub fn apply_gone(&self, id: &ItemId, out: &mut Vec<Invalidation>) -> bool {
        let mut inner = self.lock();
        match inner.by_id.get(id).copied() {
            Some(ROOT_INO) | None => false,
            Some(ino) => Self::gone_locked(&mut inner, ino, out),
        }
    }

    fn gone_locked(inner: &mut Inner, ino: u64, out: &mut Vec<Invalidation>) -> bool {
        let Some(node) = inner.nodes.get(&ino).cloned() else {
            return false;
        };
        if node.local.is_some() {
            return false;
        }
        if let Some(l) = inner.nodes.get_mut(&node.parent).and_then(|n| n.listing.as_mut()) {
            if l.children
                .get(&node.entry.name)
                .map(|e| e.id == node.entry.id)
                .unwrap_or(false)
            {
                l.children.remove(&node.entry.name);
            }
        }
        if node.parent != DETACHED {
            out.push(Invalidation::Entry {
                parent: node.parent,
                name: node.entry.name.clone(),
            });
        }
        out.push(Invalidation::Inode(ino));
        if inner.by_id.get(&node.entry.id) == Some(&ino) {
            inner.by_id.remove(&node.entry.id);
        }
        if node.lookups == 0 {
            inner.nodes.remove(&ino);
        } else if let Some(n) = inner.nodes.get_mut(&ino) {
            // The kernel still holds it (an open file): it stays until forgotten, detached.
            n.listing = None;
            n.parent = DETACHED;
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::EntryKind;
    use std::time::{Duration, SystemTime};

    fn entry(id: &str, kind: EntryKind, version: &str) -> Entry {
        Entry {
            id: ItemId::new(id),
            name: id.rsplit('/').next().unwrap().to_string(),
            kind,
            size: 3,
            mtime: SystemTime::UNIX_EPOCH,
            version: Some(Version::from_etag(version)),
        }
    }

    fn table() -> InodeTable {
        InodeTable::new(entry("", EntryKind::Directory, "r"), Instant::now())
    }

    #[test]
    fn same_item_keeps_its_inode_and_reports_version_changes() {
        let t = table();
        let later = Instant::now() + Duration::from_secs(5);
        let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1);
        assert!(a.replaced_tag.is_none());
        let b = t.upsert(ROOT_INO, entry("a", EntryKind::File, "2"), later, 1);
        assert_eq!(a.ino, b.ino);
        assert_eq!(b.replaced_tag, Some(Version::from_etag("1")));
        assert_eq!(t.get(a.ino).unwrap().lookups, 2);
    }

    #[test]
    fn forget_drops_inode_at_zero_and_numbers_are_not_reused() {
        let t = table();
        let later = Instant::now() + Duration::from_secs(5);
        let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 2).ino;
        t.forget(a, 1);
        assert!(t.get(a).is_some());
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        let again = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1).ino;
        assert_ne!(a, again);
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn listing_answers_lookups_only_while_fresh() {
        let t = table();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        t.set_listing(ROOT_INO, vec![entry("a", EntryKind::File, "1")], later);
        assert!(matches!(t.listed_child(ROOT_INO, "a", now), Some(Some(_))));
        assert!(matches!(t.listed_child(ROOT_INO, "b", now), Some(None)));
        assert!(t.listed_child(ROOT_INO, "a", later).is_none());
    }

    #[test]
    fn names_match_in_another_case_only_where_the_remote_says_so() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut hello = entry("id-1", EntryKind::File, "1");
        hello.name = "Hello.txt".into();
        for ci in [false, true] {
            let t = table().with_case_insensitive_names(ci);
            t.set_listing(ROOT_INO, vec![hello.clone()], later);
            let found = |name: &str| t.listed_child(ROOT_INO, name, now).flatten().map(|e| e.name);
            assert_eq!(found("Hello.txt").as_deref(), Some("Hello.txt"));
            let other = ci.then(|| "Hello.txt".to_string());
            assert_eq!(found("HELLO.TXT"), other, "case-insensitive: {ci}");
            assert_eq!(t.known_child(ROOT_INO, "hello.TXT").map(|e| e.name), other);
            assert_eq!(found("Hello.tx"), None);
            t.listing_remove(ROOT_INO, "hello.txt");
            assert_eq!(found("Hello.txt").is_none(), ci, "removed by another spelling: {ci}");
        }
        assert!(same_name(true, "Straße Ä", "STRAßE ä"));
        assert!(!same_name(false, "a", "A"));
    }

    #[test]
    fn relisting_drops_vanished_unreferenced_children() {
        let t = table();
        let later = Instant::now() + Duration::from_secs(5);
        let (listed, _) = t.set_listing(
            ROOT_INO,
            vec![entry("a", EntryKind::File, "1"), entry("b", EntryKind::File, "1")],
            later,
        );
        let (kept, _) = t.add_lookup(ROOT_INO, listed[1].0, &listed[1].1, later);
        let (_, replaced) = t.set_listing(ROOT_INO, vec![entry("b", EntryKind::File, "2")], later);
        assert_eq!(replaced.len(), 1);
        assert!(t.get(listed[0].0).is_none(), "unreferenced vanished child is dropped");
        assert!(t.get(kept).is_some(), "referenced child stays");
    }

    #[test]
    fn a_listing_asked_for_before_our_changes_does_not_undo_them() {
        let t = table();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let (a, b) = (entry("a", EntryKind::File, "1"), entry("b", EntryKind::File, "1"));
        t.set_listing(ROOT_INO, vec![a.clone(), b.clone()], later);
        let asked_at = t.local_epoch();
        // While the next listing is on its way we delete b and a new c lands.
        t.listing_remove(ROOT_INO, "b");
        t.listing_insert(ROOT_INO, entry("c", EntryKind::File, "1"));
        let (children, _) = t.set_listing_asked_at(ROOT_INO, vec![a, b], later, asked_at);
        let mut names: Vec<String> = children.into_iter().map(|(_, e)| e.name).collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
        assert!(
            matches!(t.listed_child(ROOT_INO, "b", now), Some(None)),
            "b stays deleted"
        );
        assert!(
            matches!(t.listed_child(ROOT_INO, "c", now), Some(Some(_))),
            "c stays listed"
        );
        // A listing asked for after the changes is taken as it is.
        let fresh = vec![entry("a", EntryKind::File, "1")];
        let (children, _) = t.set_listing_asked_at(ROOT_INO, fresh, later, t.local_epoch());
        assert_eq!(children.len(), 1);
    }

    #[test]
    fn cached_tag_tells_whether_page_cache_may_be_kept() {
        let t = table();
        let later = Instant::now() + Duration::from_secs(5);
        let a = t.upsert(ROOT_INO, entry("a", EntryKind::File, "1"), later, 1).ino;
        assert!(!t.note_cached_tag(a, &Version::from_etag("1")));
        assert!(t.note_cached_tag(a, &Version::from_etag("1")));
        assert!(!t.note_cached_tag(a, &Version::from_etag("2")));
    }
}
