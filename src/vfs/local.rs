//! Content of a file that lives on local disk until the server has it: the file being written, or
//! written and waiting in the upload queue. While an inode has local content, that content is what
//! every reader sees and its size and mtime are what `stat` shows; server listings do not override
//! it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::remote::{Entry, GrowingFile, ItemId, Version};

use super::namespace::Node;

/// Whether the server holds an item yet. This type, and nothing in an id or a name, says so: a
/// server item may well be called `local:notes` (WebDAV ids are paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeId {
    /// An item the server holds, by its server id.
    Remote(ItemId),
    /// A file created here whose first upload has not landed yet: it has no server id, and
    /// deleting or moving it changes only our view (and its queued upload).
    Local,
}

impl NodeId {
    /// The server id, when the server holds the item.
    pub fn remote(&self) -> Option<&ItemId> {
        match self {
            NodeId::Remote(id) => Some(id),
            NodeId::Local => None,
        }
    }
}

/// The key under which the inode table indexes a file that the server does not hold yet. It is
/// only an index key: never sent to a server, and whether an item is on the server is
/// [`NodeId`]'s job ([`is_placeholder_id`] only recognises stale snapshot entries). The NUL byte keeps it apart from every server id.
pub fn placeholder_id(key: &str) -> ItemId {
    ItemId::new(format!("\0pending:{key}"))
}

/// Whether `id` is a [`placeholder_id`]: an entry taken from a snapshot (a folder listing handed
/// to the kernel) while its file was only here, whose node has since taken its server id. No
/// server id holds a NUL byte (listings with one are refused), so no server item is taken for one.
pub fn is_placeholder_id(id: &ItemId) -> bool {
    id.as_str().starts_with("\0pending:")
}

impl Node {
    /// Where the item lives: on the server (with its id), or only here so far.
    pub fn item(&self) -> NodeId {
        match &self.local {
            Some(local) => local.item.clone(),
            None => NodeId::Remote(self.entry.id.clone()),
        }
    }
}

/// Local content of one file.
#[derive(Clone, Debug)]
pub struct LocalContent {
    /// Journal key of this file's uploads (stable across its generations).
    pub key: String,
    /// Whether the server holds the file yet ([`NodeId::Local`] until its first upload lands).
    pub item: NodeId,
    /// The staged file holding the content.
    pub staged: PathBuf,
    /// It, open for positional reads and writes (stays valid even after the queue deletes the path).
    pub file: Arc<File>,
    /// Content length.
    pub size: u64,
    /// Modification time to show and to keep on the server where it allows.
    pub mtime: SystemTime,
    /// The server version this content replaces (`None`: a file the server does not have yet).
    pub base_version: Option<Version>,
    /// Changes not yet handed to the upload queue.
    pub dirty: bool,
    /// The queue owns `staged` (it is immutable now): the next change works on a copy.
    pub handed_off: bool,
    /// The last generation handed to the queue, for `fsync`.
    pub generation: Option<u64>,
    /// The last generation the server confirmed.
    pub uploaded: Option<u64>,
    /// The server's entry for the last generation of ours that landed under this name (not as a
    /// conflict copy): what the file is once the local copy goes (see [`LocalContent::settle`]).
    pub landed: Option<Entry>,
    /// Open handles that may write.
    pub writers: u32,
    /// The last upload went up as a conflict copy: once settled, the name takes the server's
    /// version.
    pub conflicted: bool,
    /// Every write since the staged file was last empty appended to it: the file is being written
    /// in order from its start, so it may be uploaded while it grows.
    pub in_order: bool,
    /// The upload following the writer, while there is one (see [`GrowingFile`]).
    pub growing: Option<Arc<GrowingFile>>,
}

impl LocalContent {
    /// Whether the server holds exactly this content and nobody is changing it: the local copy may go.
    pub fn settled(&self) -> bool {
        !self.dirty && self.writers == 0 && self.generation.is_some() && self.uploaded >= self.generation
    }

    /// Apply "generation `generation` of this file landed as `entry`" (from the upload queue).
    /// Generations land in order; an older report than one already applied changes nothing.
    pub fn note_landed(&mut self, generation: u64, entry: &Entry, conflict_copy: bool) {
        if self.uploaded >= Some(generation) {
            return;
        }
        self.uploaded = Some(generation);
        self.conflicted = conflict_copy;
        if !conflict_copy {
            // The next generation replaces what we just wrote, not what was there before.
            self.base_version = entry.version.clone();
            self.item = NodeId::Remote(entry.id.clone());
            self.landed = Some(entry.clone());
        }
    }
}

/// What became of a node whose local content was let go by [`settle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// The local content stays (not settled yet).
    Kept,
    /// The node now shows the version our last upload made.
    Ours,
    /// Our last upload went up as a conflict copy: the name holds another device's version,
    /// which the caller must fetch.
    Conflicted,
}

/// The single place where a node lets its local content go: only once it is settled, and then
/// the node takes on the entry of the version our upload made (its id, version and size), with
/// the modification time the file was written with: that time is ours, and servers that keep
/// only seconds must not move it under an editor that compares it to the nanosecond.
pub fn settle(n: &mut Node, valid_until: std::time::Instant) -> Settled {
    if !n.local.as_ref().is_some_and(LocalContent::settled) {
        return Settled::Kept;
    }
    let local = n.local.take().expect("checked above");
    if local.conflicted {
        // Ours went up under another name; this name holds the other device's version.
        n.attr_valid_until = std::time::Instant::now();
        return Settled::Conflicted;
    }
    if let Some(mut entry) = local.landed {
        entry.mtime = local.mtime;
        entry.size = local.size;
        n.cached_tag = Some(super::attr::content_tag(&entry));
        n.own_mtime = Some((entry.version.clone(), local.mtime));
        n.entry = entry;
        n.attr_valid_until = valid_until;
    }
    Settled::Ours
}
