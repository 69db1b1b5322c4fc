//! The change applier: brings remote changes made elsewhere into the inode table and the block
//! cache, and tells the kernel what to forget.
//!
//! Two sources feed it:
//! - a remote's [`ChangeSource`] (Graph delta), polled every interval;
//! - for remotes without one (WebDAV), a revalidation round: the folders the mount has listed or
//!   the kernel holds (at most [`MAX_REVALIDATED_DIRS`], the root and listed ones first) are listed
//!   again and compared with what we hold. Where folder versions propagate to the root
//!   ([`crate::remote::Capabilities::propagates_versions`]: Nextcloud, ownCloud), a Depth-0 look at the root skips the
//!   round when nothing changed, and only folders whose version moved are listed again.
//!
//! Either way the result is a [`ChangeBatch`] applied by item id in the namespace
//! ([`super::namespace::InodeTable::apply_batch`]): records may come in any order (children whose
//! parent is not known yet wait for it) and more than once (the last one wins).
//! What changed goes out as [`Invalidation`]s on a channel that the FUSE layer drains on a task of
//! its own (never from inside a FUSE handler): `inval_inode` for content and size, `inval_entry`
//! for names that appeared, vanished or moved. Blocks of replaced versions leave the cache.
//!
//! Local edits in flight (an open writable handle or a queued upload) win: their inode keeps
//! showing local content, and their upload, based on the version it replaces, meets the new
//! server version and becomes a conflict copy by the write path's rule.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::RemoteError;
use crate::remote::{Change, ChangeBatch, ChangeSource, EntryKind, ItemId};

use super::attr::content_tag;
use super::error::FsResult;
use super::fs::DriveFs;
use super::namespace::{Applied, Invalidation, ROOT_INO};

/// Most folders one revalidation round lists again.
pub const MAX_REVALIDATED_DIRS: usize = 256;

/// Most extra feed rounds one poll runs to catch up with our own changes.
pub const MAX_CHASED_ROUNDS: usize = 3;

/// `first` then `later` as one batch (a resync stays one: its records plus later changes still
/// describe the whole tree).
fn merge_batches(first: ChangeBatch, later: ChangeBatch) -> ChangeBatch {
    let (mut records, resync) = match first {
        ChangeBatch::Changes(r) => (r, false),
        ChangeBatch::Resync(r) => (r, true),
    };
    match later {
        ChangeBatch::Changes(r) => {
            records.extend(r);
            if resync {
                ChangeBatch::Resync(records)
            } else {
                ChangeBatch::Changes(records)
            }
        }
        // A resync is the whole tree by itself.
        ChangeBatch::Resync(r) => ChangeBatch::Resync(r),
    }
}

impl DriveFs {
    /// The receiving end of the invalidation channel (a new one each call; the previous receiver
    /// then sees the channel closed).
    pub fn invalidations(&self) -> tokio::sync::mpsc::UnboundedReceiver<Invalidation> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.invalidate_tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn emit(&self, out: Vec<Invalidation>) {
        if out.is_empty() {
            return;
        }
        let guard = self.invalidate_tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = guard.as_ref() {
            let mut seen = HashSet::new();
            for inv in super::links::with_shown_names(out) {
                if seen.insert(inv.clone()) {
                    let _ = tx.send(inv);
                }
            }
        }
    }

    /// Apply one batch of remote changes (see the module doc): the table takes them, then the
    /// blocks of replaced versions leave the cache and the kernel hears what to forget.
    pub fn apply_changes(&self, batch: ChangeBatch) -> Applied {
        let done = self.inodes.apply_batch(batch, self.valid_until());
        for (id, keep) in &done.purge {
            self.purge_blocks(id, keep.as_ref());
        }
        self.emit(done.invalidations);
        done.applied
    }

    /// One revalidation round for remotes without a change feed (see the module doc).
    pub async fn revalidate_round(&self) -> FsResult<Applied> {
        let propagates = self.remote.capabilities().propagates_versions;
        let mut records = Vec::new();
        if propagates {
            let root = self.inodes.get(ROOT_INO).map(|n| n.entry);
            let fresh = self.remote.root().await?;
            if root.as_ref().map(|r| r.version.is_some() && r.version == fresh.version) == Some(true) {
                return Ok(Applied::default());
            }
            // Recorded with the rest, so a failed walk leaves the old root version to compare.
            records.push(Change::Upsert {
                parent: fresh.id.clone(),
                entry: fresh,
            });
        }
        let candidates = self.inodes.revalidation_candidates(MAX_REVALIDATED_DIRS);
        let wanted: HashMap<u64, ItemId> = candidates.iter().cloned().collect();
        let mut queue: Vec<(u64, ItemId)> = if propagates {
            vec![(
                ROOT_INO,
                self.inodes
                    .get(ROOT_INO)
                    .map(|n| n.entry.id)
                    .unwrap_or_else(|| ItemId::new("")),
            )]
        } else {
            candidates
        };
        let epoch = self.inodes.local_epoch();
        let mut listed_now: HashSet<ItemId> = HashSet::new();
        let mut vanished: Vec<ItemId> = Vec::new();
        let mut renewed = Vec::new();
        let mut first_listings = Vec::new();
        let mut visited = 0;
        while let Some((ino, id)) = queue.pop() {
            visited += 1;
            if visited > MAX_REVALIDATED_DIRS {
                break;
            }
            let old = self.inodes.listing_of(ino);
            let children = match self.remote.list(&id).await {
                Ok(c) => c,
                Err(RemoteError::NotFound) => {
                    vanished.push(id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let here: HashSet<&ItemId> = children.iter().map(|c| &c.id).collect();
            for child in &children {
                listed_now.insert(child.id.clone());
                if propagates && child.kind == EntryKind::Directory {
                    let moved = old
                        .as_ref()
                        .and_then(|old| old.get(&child.name))
                        .map(|o| o.id != child.id || o.version != child.version);
                    if moved != Some(false) {
                        if let Some(cino) = self.inodes.ino_of(&child.id).filter(|c| wanted.contains_key(c)) {
                            queue.push((cino, child.id.clone()));
                        }
                    }
                }
            }
            let Some(old) = old else {
                // Never listed (the kernel only looked names up in it): what it knows of are
                // inodes; the listing kept now is what later rounds compare with.
                records.extend(
                    children
                        .iter()
                        .filter(|c| self.inodes.ino_of(&c.id).is_some())
                        .map(|entry| Change::Upsert {
                            parent: id.clone(),
                            entry: entry.clone(),
                        }),
                );
                vanished.extend(
                    self.inodes
                        .known_children(ino)
                        .into_iter()
                        .filter(|k| !here.contains(k)),
                );
                first_listings.push((ino, children));
                continue;
            };
            vanished.extend(old.values().filter(|o| !here.contains(&o.id)).map(|o| o.id.clone()));
            records.extend(children.into_iter().map(|entry| Change::Upsert {
                parent: id.clone(),
                entry,
            }));
            renewed.push(ino);
        }
        records.extend(
            vanished
                .into_iter()
                .filter(|id| !listed_now.contains(id))
                .map(|id| Change::Deleted { id }),
        );
        if self.inodes.local_epoch() != epoch {
            // We changed something ourselves meanwhile: these listings may predate it, and
            // applying them would undo it for a round. The next round looks again.
            tracing::debug!("local changes during revalidation; its results are dropped");
            return Ok(Applied::default());
        }
        let applied = self.apply_changes(ChangeBatch::Changes(records));
        let until = self.valid_until();
        for ino in renewed {
            self.inodes.renew_listing(ino, until);
        }
        for (ino, children) in first_listings {
            let (stored, replaced) = self.inodes.set_listing(ino, children, until);
            for (id, _) in replaced {
                if let Some((_, e)) = stored.iter().find(|(_, e)| e.id == id) {
                    self.purge_blocks(&id, Some(&content_tag(e)));
                }
            }
        }
        Ok(applied)
    }

    /// One round of `source`, applied. When we changed something ourselves while the round ran,
    /// its records may predate that change (and applying them alone would undo it until the next
    /// interval): the feed's position has moved on already, so another round follows at once and
    /// both are applied together, the later records winning (at most [`MAX_CHASED_ROUNDS`]).
    pub async fn poll_feed(&self, source: &dyn ChangeSource) -> FsResult<Applied> {
        let mut epoch = self.inodes.local_epoch();
        let mut batch = source.poll_round().await?;
        for _ in 0..MAX_CHASED_ROUNDS {
            let now = self.inodes.local_epoch();
            if now == epoch {
                break;
            }
            epoch = now;
            let more = source.poll_round().await?;
            batch = merge_batches(batch, more);
        }
        let batch = match batch {
            ChangeBatch::Changes(r) => ChangeBatch::Changes(self.fill_missing_versions(r).await),
            ChangeBatch::Resync(r) => ChangeBatch::Resync(self.fill_missing_versions(r).await),
        };
        Ok(self.apply_changes(batch))
    }

    /// Business delta leaves out cTag. A file we know whose record moved its size or mtime (our
    /// own upload, seen again with the server's rounding of the time, or another device's change)
    /// is asked for afresh, so its version stays known: it keys the cached blocks and is the base
    /// our next upload is checked against. Unknown files cost nothing.
    async fn fill_missing_versions(&self, records: Vec<Change>) -> Vec<Change> {
        let mut out = Vec::with_capacity(records.len());
        for change in records {
            let change = match change {
                Change::Upsert { parent, entry }
                    if entry.kind == EntryKind::File
                        && entry.version.is_none()
                        && self
                            .inodes
                            .ino_of(&entry.id)
                            .and_then(|ino| self.inodes.get(ino))
                            .is_some_and(|n| {
                                n.entry.version.is_some()
                                    && (n.entry.size != entry.size || n.entry.mtime != entry.mtime)
                            }) =>
                {
                    match self.remote.stat(&entry.id).await {
                        Ok(fresh) => Change::Upsert { parent, entry: fresh },
                        Err(e) => {
                            tracing::debug!(item = %entry.id, error = %e, "no fresh version for a changed file");
                            Change::Upsert { parent, entry }
                        }
                    }
                }
                other => other,
            };
            out.push(change);
        }
        out
    }

    /// Poll for remote changes every `interval` on the current tokio runtime: rounds of `source`
    /// when the remote has a feed, else revalidation rounds. A failed round is logged and retried
    /// at the next interval (a feed keeps its position, so nothing is lost).
    pub fn start_change_polling(
        self: &Arc<Self>,
        interval: Duration,
        source: Option<Box<dyn ChangeSource>>,
    ) -> tokio::task::JoinHandle<()> {
        let fs = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(interval).await;
                let Some(fs) = fs.upgrade() else { return };
                let started = Instant::now();
                let result = match &source {
                    Some(src) => fs.poll_feed(src.as_ref()).await,
                    None => fs.revalidate_round().await,
                };
                match result {
                    Ok(a) => {
                        if failing {
                            tracing::info!("change polling works again");
                        }
                        failing = false;
                        if a != Applied::default() {
                            tracing::debug!(changed = a.changed, removed = a.removed, took = ?started.elapsed(), "applied remote changes");
                        }
                    }
                    Err(e) => {
                        let e: super::FsError = e;
                        if !failing {
                            tracing::warn!(error = %e, "polling for remote changes failed; trying again next interval");
                        }
                        failing = true;
                    }
                }
            }
        })
    }
}
