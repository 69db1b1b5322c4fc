//! A folder's children as last listed. The table keeps listings in a map of their own, each
//! behind an `Arc`: reading a node never copies its folder's listing, and a listing handed out
//! (see [`super::InodeTable::listing_of`]) is a snapshot that a later change copies only if the
//! snapshot is still held.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crate::remote::Entry;

use super::names::folded;

/// A folder's children as last listed.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Children by name.
    children: BTreeMap<String, Entry>,
    /// Where names are case-insensitive: the names of `children` by their folded form, so another
    /// spelling of a name is found without a scan.
    by_folded: Option<HashMap<String, BTreeSet<String>>>,
    /// Until when the listing is trusted without asking the server.
    pub valid_until: Instant,
}

impl Listing {
    /// A listing of `children` (by name), trusted until `valid_until`.
    pub fn new(children: BTreeMap<String, Entry>, valid_until: Instant, case_insensitive: bool) -> Listing {
        let mut listing = Listing {
            children: BTreeMap::new(),
            by_folded: case_insensitive.then(HashMap::new),
            valid_until,
        };
        for (_, entry) in children {
            listing.insert(entry);
        }
        listing
    }

    /// The child called exactly `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.children.get(name)
    }

    /// The child called `name`: its exact spelling first, then, where names are
    /// case-insensitive, another spelling of it (the server holds at most one; of several, the
    /// first in name order).
    pub fn find(&self, name: &str) -> Option<(&String, &Entry)> {
        self.children.get_key_value(name).or_else(|| {
            let spellings = self.by_folded.as_ref()?.get(&folded(true, name))?;
            spellings.iter().next().and_then(|k| self.children.get_key_value(k))
        })
    }

    /// Add or replace the child called `entry.name`.
    pub fn insert(&mut self, entry: Entry) {
        if let Some(by_folded) = self.by_folded.as_mut() {
            by_folded
                .entry(folded(true, &entry.name))
                .or_default()
                .insert(entry.name.clone());
        }
        self.children.insert(entry.name.clone(), entry);
    }

    /// Remove the child called exactly `name`.
    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        let removed = self.children.remove(name)?;
        if let Some(by_folded) = self.by_folded.as_mut() {
            let key = folded(true, name);
            if let Some(spellings) = by_folded.get_mut(&key) {
                spellings.remove(name);
                if spellings.is_empty() {
                    by_folded.remove(&key);
                }
            }
        }
        Some(removed)
    }

    /// The children, in name order.
    pub fn values(&self) -> impl Iterator<Item = &Entry> {
        self.children.values()
    }

    /// The children by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.children.iter()
    }

    /// How many children.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether the folder was listed empty.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}
