//! The node store: every node by inode number, and the indexes that answer the table's questions
//! without a scan of all nodes: by item id, by (folder, name) in exact and folded spelling, and
//! the nodes with local content (by folder and by journal key). Every change of a node's folder,
//! name or local content goes through [`Nodes::update`], which keeps the indexes in step.

use std::collections::{BTreeSet, HashMap};

use crate::remote::ItemId;

use super::names::folded;
use super::node::Node;
use super::DETACHED;

/// Every node, with its indexes.
#[derive(Default)]
pub(super) struct Nodes {
    map: HashMap<u64, Node>,
    /// The inode each item id stands for. Kept by the table's own rules, not by this store: a
    /// node may stay after its id left the index (the kernel still holds it) and an id may move
    /// to another node (a file created here that got its server id).
    pub(super) by_id: HashMap<ItemId, u64>,
    /// Children by folder. The root (its own parent) and detached nodes are in no folder.
    places: HashMap<u64, Place>,
    /// Inodes with local content (few: files being written or waiting for upload).
    with_local: BTreeSet<u64>,
    /// Inodes with local content by its journal key.
    by_key: HashMap<String, BTreeSet<u64>>,
    /// Names are compared as the remote does (see [`super::names`]).
    case_insensitive: bool,
}

/// The nodes found in one folder.
#[derive(Default)]
struct Place {
    by_name: HashMap<String, BTreeSet<u64>>,
    /// By folded name, where names are case-insensitive.
    by_folded: HashMap<String, BTreeSet<u64>>,
    /// Those with local content.
    local: BTreeSet<u64>,
}

/// What a node is indexed by.
#[derive(PartialEq, Eq)]
struct Keys {
    parent: u64,
    name: String,
    local_key: Option<String>,
}

fn keys(n: &Node) -> Keys {
    Keys {
        parent: n.parent,
        name: n.entry.name.clone(),
        local_key: n.local.as_ref().map(|l| l.key.clone()),
    }
}

fn add(set: &mut HashMap<String, BTreeSet<u64>>, key: String, ino: u64) {
    set.entry(key).or_default().insert(ino);
}

fn take(set: &mut HashMap<String, BTreeSet<u64>>, key: &str, ino: u64) {
    if let Some(inos) = set.get_mut(key) {
        inos.remove(&ino);
        if inos.is_empty() {
            set.remove(key);
        }
    }
}

impl Nodes {
    /// Compare names case-insensitively when `on` (only while the store is empty but for the root,
    /// which is in no folder).
    pub(super) fn set_case_insensitive(&mut self, on: bool) {
        self.case_insensitive = on;
        let all: Vec<u64> = self.map.keys().copied().collect();
        self.places.clear();
        for ino in all {
            let k = keys(&self.map[&ino]);
            self.index(ino, &k);
        }
    }

    pub(super) fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    fn index(&mut self, ino: u64, k: &Keys) {
        if let Some(key) = &k.local_key {
            self.with_local.insert(ino);
            add(&mut self.by_key, key.clone(), ino);
        }
        if k.parent == ino || k.parent == DETACHED {
            return;
        }
        let place = self.places.entry(k.parent).or_default();
        add(&mut place.by_name, k.name.clone(), ino);
        if self.case_insensitive {
            add(&mut place.by_folded, folded(true, &k.name), ino);
        }
        if k.local_key.is_some() {
            place.local.insert(ino);
        }
    }

    fn unindex(&mut self, ino: u64, k: &Keys) {
        if let Some(key) = &k.local_key {
            self.with_local.remove(&ino);
            take(&mut self.by_key, key, ino);
        }
        let Some(place) = self.places.get_mut(&k.parent) else {
            return;
        };
        take(&mut place.by_name, &k.name, ino);
        if self.case_insensitive {
            take(&mut place.by_folded, &folded(true, &k.name), ino);
        }
        place.local.remove(&ino);
        if place.by_name.is_empty() {
            self.places.remove(&k.parent);
        }
    }

    /// The node `ino`.
    pub(super) fn get(&self, ino: u64) -> Option<&Node> {
        self.map.get(&ino)
    }

    /// How many nodes.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every node (for the few rare operations that must look at all: each caller counts it).
    pub(super) fn values(&self) -> impl Iterator<Item = &Node> {
        self.map.values()
    }

    /// Add `node` (replacing a node of the same number).
    pub(super) fn insert(&mut self, node: Node) {
        self.remove(node.ino);
        let k = keys(&node);
        self.index(node.ino, &k);
        self.map.insert(node.ino, node);
    }

    /// Take node `ino` out (its id stays in `by_id`: that is the caller's rule).
    pub(super) fn remove(&mut self, ino: u64) -> Option<Node> {
        let node = self.map.remove(&ino)?;
        self.unindex(ino, &keys(&node));
        Some(node)
    }

    /// Change node `ino` with `f`; the indexes follow its new folder, name and local content.
    pub(super) fn update<R>(&mut self, ino: u64, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        let node = self.map.get_mut(&ino)?;
        let before = keys(node);
        let r = f(node);
        let after = keys(node);
        if before != after {
            self.unindex(ino, &before);
            self.index(ino, &after);
        }
        Some(r)
    }

    /// Change every node's trust time (touches no index).
    pub(super) fn expire_all(&mut self, now: std::time::Instant) {
        for node in self.map.values_mut() {
            node.attr_valid_until = now;
        }
    }

    /// Nodes in folder `dir` called exactly `name`, lowest inode first.
    pub(super) fn named(&self, dir: u64, name: &str) -> impl Iterator<Item = &Node> {
        self.places
            .get(&dir)
            .and_then(|p| p.by_name.get(name))
            .into_iter()
            .flatten()
            .filter_map(|i| self.map.get(i))
    }

    /// Nodes in folder `dir` whose name is `name` in any spelling the remote takes for it (only
    /// exact spellings where names are case-sensitive), lowest inode first.
    pub(super) fn spelled(&self, dir: u64, name: &str) -> Box<dyn Iterator<Item = &Node> + '_> {
        if !self.case_insensitive {
            return Box::new(self.named(dir, name));
        }
        Box::new(
            self.places
                .get(&dir)
                .and_then(|p| p.by_folded.get(&folded(true, name)))
                .into_iter()
                .flatten()
                .filter_map(|i| self.map.get(i)),
        )
    }

    /// Every node found in folder `dir`.
    pub(super) fn children(&self, dir: u64) -> impl Iterator<Item = &Node> {
        self.places
            .get(&dir)
            .into_iter()
            .flat_map(|p| p.by_name.values().flatten())
            .filter_map(|i| self.map.get(i))
    }

    /// Nodes with local content in folder `dir`, lowest inode first.
    pub(super) fn local_in(&self, dir: u64) -> impl Iterator<Item = &Node> {
        self.places
            .get(&dir)
            .into_iter()
            .flat_map(|p| p.local.iter())
            .filter_map(|i| self.map.get(i))
    }

    /// Every node with local content, lowest inode first.
    pub(super) fn with_local(&self) -> impl Iterator<Item = &Node> {
        self.with_local.iter().filter_map(|i| self.map.get(i))
    }

    /// The node with local content whose journal key is `key` (the lowest, should two share it).
    pub(super) fn by_local_key(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).and_then(|inos| inos.iter().next().copied())
    }
}
