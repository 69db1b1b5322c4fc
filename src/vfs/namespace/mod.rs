//! The namespace: which remote item each inode number stands for, what we last heard about it,
//! how many references the kernel holds, and what each folder held when last listed.
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
//!
//! The parts, one job each:
//! - [`node`]: one inode's facts ([`Node`]), without its folder's listing;
//! - [`nodes`]: the node store and its indexes (by id, by folder and name, local content);
//! - [`listing`]: a folder's listing ([`Listing`]), kept apart and shared as `Arc`;
//! - [`names`]: how names compare (case folding);
//! - [`changed`]: the names we changed ourselves, so a listing that predates them cannot undo them;
//! - [`table`]: the [`InodeTable`] behind its mutex and its node operations;
//! - [`folder`]: listings stored, merged and asked;
//! - [`apply`]: remote change records applied, with what the kernel must forget.
//!
//! Cost: reading a node copies that node alone, and finding a child by (folder, name) or a
//! folder's local children is a map lookup, so an operation costs the same however many items
//! a folder holds. [`InodeTable::work`] counts the work, for the test that holds this and for
//! status reports. The table's mutex is never held across I/O.

mod apply;
mod changed;
mod folder;
mod listing;
mod names;
mod node;
mod nodes;
mod table;

#[cfg(test)]
mod tests;

pub use apply::{Applied, BatchOutcome, Invalidation};
pub use folder::StoredListing;
pub use listing::Listing;
pub use names::same_name;
pub use node::Node;
pub use table::{InodeTable, Upserted};

/// The root folder's inode number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

/// The parent of a detached inode ([`InodeTable::detach`]): a file unlinked while still open.
pub const DETACHED: u64 = u64::MAX;
