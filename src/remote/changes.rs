//! Change feeds: how a remote tells the core what changed elsewhere, without naming inodes.
//!
//! A [`ChangeSource`] yields one [`ChangeBatch`] per round. Records are keyed by item id, carry the
//! item's latest state and its parent's id (delta records have no paths), and may come in any
//! order and more than once: the core's applier buffers children whose parent it has not seen yet
//! and lets the last record of an id win.

use async_trait::async_trait;

use crate::error::RemoteResult;

use super::{Entry, ItemId};

/// One record of a change feed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The item exists with this metadata, as child of `parent` (created, renamed, moved, changed,
    /// or unchanged: appliers ignore records that change nothing).
    Upsert {
        /// The folder it is in now.
        parent: ItemId,
        /// Its current metadata.
        entry: Entry,
    },
    /// The item is gone (with everything below it, for a folder).
    Deleted {
        /// Which item.
        id: ItemId,
    },
}

impl Change {
    /// The id the record is about.
    pub fn id(&self) -> &ItemId {
        match self {
            Change::Upsert { entry, .. } => &entry.id,
            Change::Deleted { id } => id,
        }
    }
}

/// What one round of a feed found.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeBatch {
    /// Changes since the previous round.
    Changes(Vec<Change>),
    /// The feed lost its position (Graph `410 Gone`) and enumerated everything again: these
    /// records are the whole current tree, so an item known locally but absent here is gone.
    Resync(Vec<Change>),
}

/// A remote-specific source of changes (Graph delta). The position advances only when a round
/// succeeds as a whole: a failed round returns an error and the next one yields its changes again.
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// Ask for everything that changed since the last successful round.
    async fn poll_round(&self) -> RemoteResult<ChangeBatch>;
}
