//! Modes, owners and times set through the mount (chmod, chown, utimens), kept and shown.
//!
//! What an item shows is three layers, later ones winning field by field: the defaults
//! (`--uid`, `--gid`, `--umask`, the server's own modification time), what this machine's
//! [`MetaStore`] holds for the item, and what the server holds ([`Entry::meta`]). A change goes to
//! both: the fields the server can keep ([`crate::remote::Capabilities::kept_meta`]) to it with
//! [`Remote::set_meta`], so another machine sees them, and every field to the store, so this
//! machine sees them after a remount, also where the server keeps nothing, and also after an
//! upload that replaced the item on the server (WebDAV uploads move a new file into place, which
//! drops its dead properties).
//!
//! A file whose content waits in the upload queue has no server item to hold its metadata (a new
//! file has only a placeholder id): its changes are kept under its journal key
//! ([`pending_key`]) and, once its upload lands, given to the item it became
//! ([`DriveFs::meta_after_upload`]), together with the modification time the upload was made
//! with, which the server may not have kept (most WebDAV servers stamp their own).
//!
//! The store is keyed by item id: on WebDAV ids are paths, so renames move its entries
//! ([`MetaStore::move_path`]) and deletes remove them.
//!
//! Locks: none of ours is held across the network or the store's disk writes (which run on the
//! blocking pool); the inode table is only read through its own short calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::RemoteError;
use crate::fs_err;
use crate::metastore::{MetaStore, MetaStoreError};
use crate::remote::{Entry, ItemId, Meta, MetaFields, Precondition};

use super::attr::Attr;
use super::error::FsResult;
use super::local::{is_placeholder_id, FileState, NodeId};
use super::DriveFs;

/// The metadata side of a core: its local store, once the mount gives one.
#[derive(Debug, Default)]
pub(super) struct MetaWiring {
    store: OnceLock<Arc<MetaStore>>,
    /// Whether `--no-metadata`'s "accepted without effect" was logged.
    told_forgotten: AtomicBool,
    /// Landed uploads whose metadata is still being given to their item ([`DriveFs::meta_after_upload`]).
    landing: AtomicUsize,
    /// Woken when `landing` drops.
    landed: tokio::sync::Notify,
    /// By item id: what was set while its upload was pending, for the moment between the
    /// landing and its metadata being written under the id.
    in_flight: Mutex<HashMap<String, Meta>>,
}

/// How long a rename waits for landed uploads' metadata to be written before moving it.
pub(super) const LANDING_WAIT: Duration = Duration::from_secs(30);

/// The store key of changes made to a file whose upload has not landed (by its journal key; the
/// NUL keeps it apart from every server id).
/// Whether `a` and `b` are the same time as a server that rounds (to the second at worst) keeps it.
fn same_second(a: SystemTime, b: SystemTime) -> bool {
    a.duration_since(b).unwrap_or_else(|e| e.duration()) < Duration::from_secs(1)
}

fn pending_key(journal_key: &str) -> String {
    format!("\0pending:{journal_key}")
}

/// Whether `current` already holds every value `wanted` holds.
fn holds(current: &Meta, wanted: &Meta) -> bool {
    current.overlaid_with(wanted) == *current
}

/// Run a store change on the blocking pool (it fsyncs).
async fn in_store<T: Send + 'static>(
    store: &Arc<MetaStore>,
    f: impl FnOnce(&MetaStore) -> Result<T, MetaStoreError> + Send + 'static,
) -> FsResult<T> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(MetaStoreError::Full { limit })) => {
            Err(fs_err!(NoSpace, "the local metadata store is full ({limit} bytes)"))
        }
        Ok(Err(MetaStoreError::Invalid(why))) => Err(fs_err!(InvalidArgument, "{why}")),
        Ok(Err(MetaStoreError::Io(e))) => Err(fs_err!(LocalIo, "metadata store: {e}")),
        Err(e) => Err(fs_err!(Internal, "metadata store task: {e}")),
    }
}

impl DriveFs {
    /// Keep metadata the server cannot hold in `store` (the mount's, in its state directory).
    /// Call once, at mount. What the server keeps is found out by the first change sent to it
    /// (on WebDAV a probe of dead properties, which on Apache creates its `.DAV` property
    /// database: not done for a mount that never sets anything).
    pub async fn enable_metadata(&self, store: Option<Arc<MetaStore>>) {
        if let Some(store) = store {
            let _ = self.meta.store.set(store);
        }
    }

    /// The mount's local metadata store, if it has one.
    pub fn meta_store(&self) -> Option<&Arc<MetaStore>> {
        self.meta.store.get()
    }

    /// The attributes of `ino` showing `entry`: the defaults, overlaid by what the store holds,
    /// overlaid by what the server holds (see the module doc).
    pub(super) fn shown_attr(&self, ino: u64, entry: &Entry) -> Attr {
        let attr = self.cfg.ownership.attr(ino, entry);
        if !self.cfg.keep_metadata {
            return attr;
        }
        let node = self.inodes.get(ino);
        let pending = node.as_ref().and_then(|n| n.local.as_ref()).map(|l| l.key.clone());
        let mut meta = Meta::default();
        if let Some(store) = self.meta.store.get() {
            if !is_placeholder_id(&entry.id) {
                meta = store.get(entry.id.as_str());
                let landing = self.meta.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pending) = landing.get(entry.id.as_str()) {
                    meta = meta.overlaid_with(pending);
                }
            }
            if let Some(key) = &pending {
                meta = meta.overlaid_with(&store.get(&pending_key(key)));
            }
        }
        meta = meta.overlaid_with(&entry.meta);
        if pending.is_some() {
            // Local content shows its own time (`entry.mtime`), which its upload carries.
            meta.mtime = None;
        }
        attr.with_meta(&meta)
    }

    /// chmod, chown, utimens: keep `change`'s fields for `ino` (see the module doc). With
    /// `--no-metadata`, only a modification time the remote keeps by itself is set; the rest
    /// succeeds without effect.
    pub async fn change_meta(&self, ino: u64, change: Meta) -> FsResult<Attr> {
        self.check_writable()?;
        if let Some(why) = change.invalid() {
            return Err(fs_err!(InvalidArgument, "{why}"));
        }
        if !self.cfg.keep_metadata {
            return self.forget_meta(ino, change).await;
        }
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        if let Some(local) = &node.local {
            // Kept with the content; given to the item once its upload lands.
            if let Some(mtime) = change.mtime {
                // Content the queue holds already keeps it: a new time is metadata, given to the
                // item when the upload lands (see `on_upload_event`), not another upload (whose
                // staged file the landing one may take away).
                let as_meta = self
                    .inodes
                    .with_node(ino, |n| match n.local.as_mut() {
                        Some(l) if l.state == FileState::Queued && l.writers == 0 && l.busy.is_none() => {
                            l.mtime = mtime;
                            n.entry.mtime = mtime;
                            true
                        }
                        _ => false,
                    })
                    .unwrap_or(false);
                if !as_meta {
                    self.set_mtime(ino, mtime).await?;
                }
            }
            // The time itself travels with the content; kept here it marks the time as set
            // (`touch -d`), so the landing sends it to the server again.
            let again = change.clone();
            let rest = change;
            if !rest.is_empty() {
                // Under the journal key, which the landing of its upload reads last (so a change
                // made now wins over one made before); under the item's id too where it has one,
                // in case no upload follows.
                let pending = pending_key(&local.key);
                let id = match &local.item {
                    NodeId::Local => None,
                    NodeId::Remote(id) => Some(id.as_str().to_string()),
                };
                let store = self.local_store_for(&rest)?;
                in_store(&store, move |s| {
                    if let Some(id) = id {
                        s.update(&id, &rest)?;
                    }
                    s.update(&pending, &rest).map(|_| ())
                })
                .await?;
                let still_pending = self
                    .inodes
                    .get(ino)
                    .and_then(|n| n.local)
                    .is_some_and(|l| l.key == local.key);
                if !still_pending {
                    // The upload landed meanwhile and may have taken what was pending before this
                    // change reached it: give the change to the item now, after that landing.
                    return Box::pin(self.change_meta(ino, again)).await;
                }
            }
            return self.attr_of_node(ino);
        }
        // An upload of it that just landed may still be giving the item what was set while it
        // was pending: this change comes after.
        self.settle_metadata(LANDING_WAIT).await;
        let id = node.entry.id.clone();
        let kept = match self.remote.set_meta(&id, &change, Precondition::Any).await {
            Ok(entry) => {
                self.inodes.refresh(ino, entry.clone(), self.valid_until());
                entry.meta
            }
            Err(RemoteError::Unsupported(_)) => Meta::default(),
            Err(e) => return Err(e.into()),
        };
        match self.meta.store.get() {
            Some(store) => {
                let key = id.as_str().to_string();
                in_store(store, move |s| s.update(&key, &change)).await?;
            }
            None if !holds(&kept, &change) => {
                return Err(fs_err!(
                    NotPermitted,
                    "this server cannot keep that metadata and the mount has no local store"
                ))
            }
            None => {}
        }
        self.attr_of_node(ino)
    }

    /// `ino` was just made by create(2) or mkdir(2) with `mode` (the umask applied): keep that
    /// mode when it is not what the item shows by default (`open(..., 0755)` by `git checkout`
    /// or `tar` makes executables that way). Returns the attributes to answer with.
    pub async fn keep_created_mode(&self, attr: Attr, mode: u32) -> FsResult<Attr> {
        let mode = mode & crate::remote::meta::MODE_BITS;
        if !self.cfg.keep_metadata || mode == u32::from(attr.perm) {
            return Ok(attr);
        }
        self.change_meta(
            attr.ino,
            Meta {
                mode: Some(mode),
                ..Meta::default()
            },
        )
        .await
    }

    fn attr_of_node(&self, ino: u64) -> FsResult<Attr> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(NotFound, "unknown inode {ino}"))?;
        Ok(self.attr_for(ino, &node.entry))
    }

    fn local_store_for(&self, change: &Meta) -> FsResult<Arc<MetaStore>> {
        self.meta.store.get().cloned().ok_or_else(|| {
            fs_err!(
                NotPermitted,
                "no local metadata store to keep {:?} until the upload lands",
                change.fields()
            )
        })
    }

    /// `--no-metadata`: a modification time goes where it went before metadata was kept (with
    /// local content, or to a server that sets times); everything else is accepted and dropped.
    async fn forget_meta(&self, ino: u64, change: Meta) -> FsResult<Attr> {
        if !self.meta.told_forgotten.swap(true, Ordering::Relaxed) {
            tracing::info!("--no-metadata: modes, owners and times the remote cannot keep are accepted and not kept");
        }
        if let Some(mtime) = change.mtime {
            match self.set_mtime(ino, mtime).await {
                Ok(attr) => return Ok(attr),
                Err(e) if e.kind() == super::FsErrorKind::NotPermitted => {}
                Err(e) => return Err(e),
            }
        }
        self.attr_of_node(ino)
    }

    /// An upload of the file with journal key `journal_key` landed as `entry`, made with `mtime`:
    /// what was kept for it while pending, and that time, now belong to the item (sent again to
    /// the server where it keeps them: an upload replaces what it held).
    ///
    /// [`DriveFs::meta_landing_started`] was called for it, synchronously, before this runs.
    pub(super) async fn meta_after_upload(&self, journal_key: String, mtime: SystemTime, entry: Entry) {
        let id = entry.id.as_str().to_string();
        self.give_meta_to_upload(journal_key, mtime, entry).await;
        self.meta
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if self.meta.landing.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.meta.landed.notify_waiters();
        }
    }

    /// An upload landed and [`DriveFs::meta_after_upload`] is about to run for it: counted, so
    /// [`DriveFs::settle_metadata`] waits for it.
    ///
    /// What was set while the upload was pending shows on the item from now on (the node no
    /// longer has local content to find it by), until the landing has written it under the id.
    pub(super) fn meta_landing_started(&self, journal_key: &str, id: &ItemId) {
        self.meta.landing.fetch_add(1, Ordering::SeqCst);
        let Some(store) = self.meta.store.get() else { return };
        let pending = store.get(&pending_key(journal_key));
        if !pending.is_empty() {
            self.meta
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.as_str().to_string(), pending);
        }
    }

    /// Wait (at most `limit`) until the metadata of every landed upload is given to its item:
    /// before unmounting, after the upload queue drained.
    pub async fn settle_metadata(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let woken = self.meta.landed.notified();
                if self.meta.landing.load(Ordering::SeqCst) == 0 {
                    return;
                }
                woken.await;
            }
        })
        .await;
    }

    async fn give_meta_to_upload(&self, journal_key: String, mtime: SystemTime, entry: Entry) {
        if !self.cfg.keep_metadata {
            return;
        }
        let Some(store) = self.meta.store.get().cloned() else {
            return;
        };
        let pending = pending_key(&journal_key);
        let id = entry.id.as_str().to_string();
        let set_while_pending = store.get(&pending);
        let wanted = store.get(&id).overlaid_with(&set_while_pending).overlaid_with(&Meta {
            mtime: Some(mtime),
            ..Meta::default()
        });
        // The server is given what was set, not what merely shows: the time of plain writes is
        // its own to stamp (kept here to the nanosecond), and a mode or owner that is the
        // default is left out unless the server holds another one.
        let defaults = self.cfg.ownership.attr(0, &entry);
        let held = &entry.meta;
        let for_server = Meta {
            mode: wanted
                .mode
                .filter(|m| held.mode.is_some() || *m != u32::from(defaults.perm)),
            uid: wanted.uid.filter(|u| held.uid.is_some() || *u != defaults.uid),
            gid: wanted.gid.filter(|g| held.gid.is_some() || *g != defaults.gid),
            // Sent again only when set while pending, or when the server holds another time than
            // the upload's beyond its rounding: a PATCH of the same time changes the item's version
            // (OneDrive's eTag), and with it the time shown (ours to the nanosecond until then),
            // which editors read as "changed since reading it" (vim's W11).
            mtime: wanted
                .mtime
                .filter(|t| set_while_pending.mtime.is_some() || held.mtime.is_some_and(|h| !same_second(h, *t))),
            ..wanted.clone()
        }
        .restricted_to(MetaFields::PROPERTIES);
        // This machine first (durable), then the server.
        let stored = wanted.clone();
        let written = in_store(&store, move |s| {
            s.set(&id, &stored)?;
            s.remove(&pending)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(item = %entry.id, error = %e, "cannot keep the metadata of an uploaded file");
        }
        if !for_server.is_empty() && !holds(&entry.meta, &for_server) {
            // Only if the server still holds this upload's version: a newer one has its own.
            let precondition = match &entry.version {
                Some(v) => Precondition::Matches(v.clone()),
                None => Precondition::Any,
            };
            match self.remote.set_meta(&entry.id, &for_server, precondition).await {
                Ok(now) => {
                    if let Some(ino) = self.inodes.ino_of(&entry.id) {
                        if self.inodes.get(ino).is_some_and(|n| n.local.is_none()) {
                            self.inodes.refresh(ino, now, self.valid_until());
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(item = %entry.id, error = %e, "uploaded, but could not send its metadata again")
                }
            }
        }
    }

    /// An item moved from `from` to `to` on the server (`replaced`: the id of what it replaced):
    /// on remotes whose ids are paths, what the store holds moves with it.
    pub(super) async fn meta_moved(&self, from: &ItemId, to: &ItemId, replaced: Option<&ItemId>) {
        let Some(store) = self.meta.store.get() else { return };
        let (from, to) = (from.as_str().to_string(), to.as_str().to_string());
        let replaced = replaced.map(|r| r.as_str().to_string()).filter(|r| *r != to);
        let moved = in_store(store, move |s| {
            if let Some(r) = replaced {
                s.remove(&r)?;
            }
            s.move_path(&from, &to)
        })
        .await;
        if let Err(e) = moved {
            tracing::warn!(error = %e, "cannot move the kept metadata of a renamed item");
        }
    }

    /// Item `id` was deleted: forget what the store holds for it.
    pub(super) async fn meta_removed(&self, id: &ItemId, journal_key: Option<&str>) {
        let Some(store) = self.meta.store.get() else { return };
        self.settle_metadata(LANDING_WAIT).await;
        let id = (!is_placeholder_id(id)).then(|| id.as_str().to_string());
        let pending = journal_key.map(pending_key);
        let removed = in_store(store, move |s| {
            if let Some(id) = id {
                s.remove(&id)?;
            }
            if let Some(p) = pending {
                s.remove(&p)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "cannot forget the kept metadata of a deleted item");
        }
    }
}
