//! Content of a file that lives on local disk until the server has it: the file being written, or
//! written and waiting in the upload queue. While an inode has local content, that content is what
//! every reader sees and its size and mtime are what `stat` shows; server listings do not override
//! it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::remote::{GrowingFile, Version};

/// Local content of one file.
#[derive(Clone, Debug)]
pub struct LocalContent {
    /// Journal key of this file's uploads (stable across its generations).
    pub key: String,
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
}
