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

/// Who owns the staged file, and whether it holds changes the upload queue has not been given.
/// Every change of it goes through a method of [`LocalContent`] (below): the lifecycle of a
/// file's local content lives there, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// The staged file is ours to write and holds nothing the queue still has to be given
    /// (filled from the server, or taken back from the queue).
    Clean,
    /// The staged file is ours and holds changes not handed to the queue yet.
    Dirty,
    /// The queue owns the staged file (immutable now): the next change of content works on a
    /// copy.
    Queued,
    /// The queue owns the staged file, and the modification time changed since it was handed
    /// over: the next hand-off queues the same content again with the new time.
    QueuedRetimed,
}

impl FileState {
    /// Whether the staged file may be written in place.
    pub fn owns_staged(self) -> bool {
        matches!(self, FileState::Clean | FileState::Dirty)
    }

    /// Whether something must still be handed to the queue.
    pub fn is_dirty(self) -> bool {
        matches!(self, FileState::Dirty | FileState::QueuedRetimed)
    }
}

/// Slow work under way on a file's staged copy, done without any lock held: while it runs,
/// nothing else writes the staged file or changes who owns it; other operations on this file
/// wait for it to end (see `DriveFs::wait_for_file`), operations on other files do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// Copying the staged file away from the queue, or resizing it.
    Preparing,
    /// Syncing the staged file and journaling it for the queue.
    HandingOff,
    /// Taking the file back from the queue after it was unlinked while open.
    Detaching,
}

/// How the file has been written since its staged copy was last empty.
#[derive(Clone, Debug)]
pub enum WriteOrder {
    /// Some write did not append: the file goes up whole at close.
    Scattered,
    /// Every write appended: it may be uploaded while it grows.
    InOrder,
    /// Every write appended, and an upload follows the writer (see [`GrowingFile`]).
    Followed(Arc<GrowingFile>),
}

/// What the last upload of ours that the queue reported did.
#[derive(Clone, Debug)]
pub enum Landed {
    /// It landed under this name as this server entry: what the file is once the local copy goes
    /// (see [`settle`]).
    Here(Entry),
    /// It went up as a conflict copy: once settled, the name takes the server's version.
    AsConflictCopy,
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
    /// Who owns the staged file and whether changes wait to be handed to the queue.
    pub state: FileState,
    /// Slow work under way on the staged file, if any.
    pub busy: Option<Busy>,
    /// Writes into the staged file under way now (their `pwrite` runs without a lock): slow work,
    /// once marked [`Busy`] (so no new write starts), waits until there are none.
    pub writing: u32,
    /// Counts every change (content, size, time): a hand-off that finds it moved while it
    /// synced knows that what it queued is not the latest.
    pub changes: u64,
    /// The last generation handed to the queue, for `fsync`.
    pub generation: Option<u64>,
    /// The last generation the server confirmed.
    pub uploaded: Option<u64>,
    /// What the last upload the queue reported did.
    pub landed: Option<Landed>,
    /// Open handles that may write.
    pub writers: u32,
    /// How the file has been written (whether it may be uploaded while it grows).
    pub order: WriteOrder,
}

impl LocalContent {
    /// Content just staged: filled from the server (`Clean`), or new or truncated (`Dirty`).
    pub fn new(key: String, item: NodeId, staged: (PathBuf, Arc<File>), size: u64, mtime: SystemTime) -> Self {
        LocalContent {
            key,
            item,
            staged: staged.0,
            file: staged.1,
            size,
            mtime,
            base_version: None,
            state: FileState::Clean,
            busy: None,
            writing: 0,
            changes: 0,
            generation: None,
            uploaded: None,
            landed: None,
            writers: 0,
            order: if size == 0 {
                WriteOrder::InOrder
            } else {
                WriteOrder::Scattered
            },
        }
    }

    /// Content a previous run left queued as generation `generation` of an upload the server may
    /// not have yet: the queue owns its staged file.
    pub fn restored(
        key: String,
        staged: (PathBuf, Arc<File>),
        size: u64,
        mtime: SystemTime,
        base_version: Option<Version>,
        generation: u64,
    ) -> Self {
        let mut local = LocalContent::new(key, NodeId::Local, staged, size, mtime);
        local.base_version = base_version;
        local.state = FileState::Queued;
        local.generation = Some(generation);
        local
    }

    /// Whether the server holds exactly this content and nobody is changing it: the local copy may go.
    pub fn settled(&self) -> bool {
        !self.state.is_dirty()
            && self.busy.is_none()
            && self.writers == 0
            && self.generation.is_some()
            && self.uploaded >= self.generation
    }

    /// Apply "generation `generation` of this file landed as `entry`" (from the upload queue).
    /// Generations land in order; an older report than one already applied changes nothing.
    pub fn note_landed(&mut self, generation: u64, entry: &Entry, conflict_copy: bool) {
        if self.uploaded >= Some(generation) {
            return;
        }
        self.uploaded = Some(generation);
        if conflict_copy {
            self.landed = Some(Landed::AsConflictCopy);
        } else {
            // The next generation replaces what we just wrote, not what was there before.
            self.base_version = entry.version.clone();
            self.item = NodeId::Remote(entry.id.clone());
            self.landed = Some(Landed::Here(entry.clone()));
        }
    }

    /// A write of `offset..end` went into the staged file.
    pub fn note_written(&mut self, offset: u64, end: u64, now: SystemTime) {
        let appended = match &self.order {
            WriteOrder::Followed(g) => g.appended(offset, end),
            _ => offset == self.size,
        };
        if !appended {
            self.order = WriteOrder::Scattered;
        }
        self.size = self.size.max(end);
        self.note_changed(now);
    }

    /// The staged file was cut (or extended) to `size`.
    pub fn note_resized(&mut self, size: u64, now: SystemTime) {
        self.stop_following();
        self.order = if size == 0 {
            WriteOrder::InOrder
        } else {
            WriteOrder::Scattered
        };
        self.size = size;
        self.note_changed(now);
    }

    /// The modification time was set.
    pub fn note_retimed(&mut self, mtime: SystemTime) {
        self.mtime = mtime;
        self.changes += 1;
        self.state = match self.state {
            FileState::Clean | FileState::Dirty => FileState::Dirty,
            FileState::Queued | FileState::QueuedRetimed => FileState::QueuedRetimed,
        };
    }

    fn note_changed(&mut self, now: SystemTime) {
        debug_assert!(
            self.state.owns_staged(),
            "a change of content in a staged file the queue owns"
        );
        self.mtime = now;
        self.changes += 1;
        self.state = FileState::Dirty;
    }

    /// The content moved to `staged`, a copy of the staged file the queue owns, which is ours.
    pub fn note_copied(&mut self, staged: (PathBuf, Arc<File>)) {
        self.staged = staged.0;
        self.file = staged.1;
        self.state = if self.state.is_dirty() {
            FileState::Dirty
        } else {
            FileState::Clean
        };
        self.order = if self.size == 0 {
            WriteOrder::InOrder
        } else {
            WriteOrder::Scattered
        };
    }

    /// The content was handed to the queue as generation `generation`. `changes_then`: the
    /// change count the hand-off started from; a change since (a new time) still waits.
    pub fn note_handed_off(&mut self, generation: u64, changes_then: u64) {
        self.state = if self.changes == changes_then {
            FileState::Queued
        } else {
            FileState::QueuedRetimed
        };
        self.generation = Some(generation);
        // The queue has it now (sealed, or spoiled by the hand-over).
        self.order = match self.order {
            WriteOrder::Followed(_) => WriteOrder::InOrder,
            ref o => o.clone(),
        };
    }

    /// The queue let go of the staged file (the file was unlinked while open): it is ours to
    /// write again, and nothing of it goes to the server.
    pub fn note_taken_back(&mut self) {
        self.state = FileState::Clean;
        self.generation = None;
    }

    /// The upload following the writer, if one does.
    pub fn following(&self) -> Option<&Arc<GrowingFile>> {
        match &self.order {
            WriteOrder::Followed(g) => Some(g),
            _ => None,
        }
    }

    /// Stop the upload that follows the writer, if one does (the file goes up whole at close).
    pub fn stop_following(&mut self) {
        if let WriteOrder::Followed(g) = &self.order {
            g.spoil();
            self.order = WriteOrder::InOrder;
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
    if let Some(Landed::AsConflictCopy) = local.landed {
        // Ours went up under another name; this name holds the other device's version.
        n.attr_valid_until = std::time::Instant::now();
        return Settled::Conflicted;
    }
    if let Some(Landed::Here(mut entry)) = local.landed {
        entry.mtime = local.mtime;
        entry.size = local.size;
        n.cached_tag = Some(super::attr::content_tag(&entry));
        n.own_mtime = Some((entry.version.clone(), local.mtime));
        n.entry = entry;
        n.attr_valid_until = valid_until;
    }
    Settled::Ours
}
