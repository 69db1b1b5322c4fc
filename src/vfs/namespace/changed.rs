//! The names we changed ourselves (created, uploaded, renamed, deleted), by folder, with the local
//! epoch of the last change: a listing asked for before that epoch predates the change, and what
//! the mount knows of the name wins over it ([`super::InodeTable::set_listing_asked_at`]).

use std::collections::HashMap;

/// Most names remembered before the oldest half is pruned.
const MAX_CHANGED_NAMES: usize = 16_384;

/// Changed names by folder (so a listing's merge looks at its folder's names only).
#[derive(Default)]
pub(super) struct ChangedNames {
    by_dir: HashMap<u64, HashMap<String, u64>>,
    len: usize,
    /// Records older than this epoch were pruned: a listing asked for before it cannot be merged
    /// with certainty.
    pruned_before: u64,
}

impl ChangedNames {
    /// Note that we changed `name` in `dir` at local epoch `epoch`.
    pub(super) fn note(&mut self, dir: u64, name: &str, epoch: u64) {
        if self
            .by_dir
            .entry(dir)
            .or_default()
            .insert(name.to_string(), epoch)
            .is_none()
        {
            self.len += 1;
        }
        if self.len > MAX_CHANGED_NAMES {
            self.prune();
        }
    }

    /// Drop the older half (amortised: it runs once per [`MAX_CHANGED_NAMES`] / 2 notes).
    fn prune(&mut self) {
        let mut epochs: Vec<u64> = self.by_dir.values().flat_map(|names| names.values().copied()).collect();
        epochs.sort_unstable();
        let cut = epochs[epochs.len() / 2];
        for names in self.by_dir.values_mut() {
            names.retain(|_, e| *e > cut);
        }
        self.by_dir.retain(|_, names| !names.is_empty());
        self.len = self.by_dir.values().map(HashMap::len).sum();
        self.pruned_before = self.pruned_before.max(cut + 1);
    }

    /// The names of `dir` changed after epoch `asked_at`.
    pub(super) fn since(&self, dir: u64, asked_at: u64) -> Vec<String> {
        self.by_dir
            .get(&dir)
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, e)| **e > asked_at)
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// See the field.
    pub(super) fn pruned_before(&self) -> u64 {
        self.pruned_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newer_half_and_says_how_far_back_it_reaches() {
        let mut c = ChangedNames::default();
        for e in 1..=MAX_CHANGED_NAMES as u64 + 1 {
            c.note(e % 7, &format!("n{e}"), e);
        }
        assert!(c.len <= MAX_CHANGED_NAMES / 2 + 1);
        assert!(c.pruned_before() > 1);
        let newest = MAX_CHANGED_NAMES as u64 + 1;
        assert_eq!(c.since(newest % 7, newest - 1), vec![format!("n{newest}")]);
        assert!(c
            .since(1, 0)
            .iter()
            .all(|n| n[1..].parse::<u64>().unwrap() >= c.pruned_before()));
    }
}
