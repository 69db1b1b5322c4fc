//! [`DriveHandle`]: out-of-band access to a drive, as if another device changed it. Every change goes through
//! the same model code as the HTTP routes, so tags, quota and delta see it exactly like an API change.

use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::GraphError;
use crate::model::{Conflict, Drive, Hasher, Patch, PutTarget};
use crate::state::{Shared, State};

/// Splits `/a/b/c` (or `a/b/c`) into segments.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Resolves a human path (`/a/b`, case-insensitive) to an item id.
pub(crate) fn resolve_path(d: &Drive, path: &str) -> Result<String, GraphError> {
    d.resolve(&d.root_id, &segments(path))
}

/// Handle on one drive of a running [`FakeGraph`](crate::FakeGraph). Paths are human paths relative to
/// the drive root (`/Documents/a.txt`; a leading `/` is optional), matched case-insensitively.
#[derive(Clone)]
pub struct DriveHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) drive: usize,
}

impl std::fmt::Debug for DriveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveHandle").field("id", &self.id()).finish()
    }
}

impl DriveHandle {
    fn with<R>(&self, f: impl FnOnce(&mut State, usize) -> R) -> R {
        f(&mut self.shared.lock(), self.drive)
    }

    /// The drive id (as used in `/drives/{drive-id}`).
    pub fn id(&self) -> String {
        self.with(|s, d| s.drives[d].id.clone())
    }

    /// The root folder's item id.
    pub fn root_id(&self) -> String {
        self.with(|s, d| s.drives[d].root_id.clone())
    }

    /// Creates folder `path` and any missing parents (like `mkdir -p`). Returns its id; an existing folder
    /// is fine, an existing file is `409 nameAlreadyExists`.
    pub fn mkdir(&self, path: &str) -> Result<String, GraphError> {
        self.with(|s, d| mkdir_p(&mut s.drives[d], &segments(path)))
    }

    /// Creates or replaces the file at `path` (missing parent folders are created). Returns its id.
    pub fn put_file(&self, path: &str, content: impl Into<Bytes>) -> Result<String, GraphError> {
        self.put_file_with_mtime(path, content, None)
    }

    /// Like [`put_file`](Self::put_file), setting `fileSystemInfo.lastModifiedDateTime` (and the created
    /// time for a new file) to `mtime` when given.
    pub fn put_file_with_mtime(
        &self,
        path: &str,
        content: impl Into<Bytes>,
        mtime: Option<SystemTime>,
    ) -> Result<String, GraphError> {
        let content: Bytes = content.into();
        let segs = segments(path);
        let (name, parents) = segs
            .split_last()
            .ok_or_else(|| GraphError::invalid("A file path is required"))?;
        let personal = self.with(|s, d| s.drives[d].personal);
        let hashes = Hasher::of(&content, personal);
        self.with(|s, d| {
            let drive = &mut s.drives[d];
            let parent = mkdir_p(drive, parents)?;
            let target = PutTarget::Child {
                parent,
                name: name.clone(),
            };
            let fs = (mtime, mtime);
            drive
                .put_content(&target, content, hashes, fs, Conflict::Replace, None, SystemTime::now())
                .map(|(id, _)| id)
        })
    }

    /// Deletes the item at `path` (recursively for folders).
    pub fn remove(&self, path: &str) -> Result<(), GraphError> {
        self.with(|s, d| {
            let drive = &mut s.drives[d];
            let id = resolve_path(drive, path)?;
            drive.delete(&id, None, SystemTime::now())
        })
    }

    /// Renames and/or moves `path` to `new_path` (the new parent must exist; an existing target name is
    /// `409 nameAlreadyExists`). The item keeps its id.
    pub fn rename(&self, path: &str, new_path: &str) -> Result<(), GraphError> {
        self.with(|s, d| {
            let drive = &mut s.drives[d];
            let id = resolve_path(drive, path)?;
            let segs = segments(new_path);
            let (name, parents) = segs
                .split_last()
                .ok_or_else(|| GraphError::invalid("A target path is required"))?;
            let parent = drive.resolve(&drive.root_id, parents)?;
            let patch = Patch {
                name: Some(name.clone()),
                parent: Some(parent),
                ..Default::default()
            };
            drive.update(&id, &patch, Conflict::Fail, None, SystemTime::now())
        })
    }

    /// Sets `fileSystemInfo.lastModifiedDateTime` (a metadata change: eTag changes, cTag does not).
    pub fn set_mtime(&self, path: &str, mtime: SystemTime) -> Result<(), GraphError> {
        self.with(|s, d| {
            let drive = &mut s.drives[d];
            let id = resolve_path(drive, path)?;
            let patch = Patch {
                fs_modified: Some(mtime),
                ..Default::default()
            };
            drive.update(&id, &patch, Conflict::Fail, None, SystemTime::now())
        })
    }

    /// Content of the file at `path`, if it is a file.
    pub fn file_bytes(&self, path: &str) -> Option<Bytes> {
        self.with(|s, d| {
            let drive = &s.drives[d];
            let id = resolve_path(drive, path).ok()?;
            drive.items[&id].file().map(|f| f.content.clone())
        })
    }

    /// Item id of `path`.
    pub fn item_id(&self, path: &str) -> Option<String> {
        self.with(|s, d| resolve_path(&s.drives[d], path).ok())
    }

    /// Human path (`/a/b`) of an item id, if it exists.
    pub fn path_of(&self, id: &str) -> Option<String> {
        self.with(|s, d| s.drives[d].items.contains_key(id).then(|| s.drives[d].path_string(id)))
    }

    /// The driveItem JSON of `path` as `GET` would return it (without a download URL).
    pub fn item_json(&self, path: &str) -> Option<Value> {
        self.with(|s, d| {
            let drive = &s.drives[d];
            let id = resolve_path(drive, path).ok()?;
            Some(drive.render(&id, false, None))
        })
    }

    /// eTag of `path`.
    pub fn etag(&self, path: &str) -> Option<String> {
        self.with(|s, d| resolve_path(&s.drives[d], path).ok().map(|id| s.drives[d].etag(&id)))
    }

    /// Names of the children of folder `path`, sorted case-insensitively.
    pub fn list(&self, path: &str) -> Vec<String> {
        self.with(|s, d| {
            let drive = &s.drives[d];
            match resolve_path(drive, path) {
                Ok(id) => drive
                    .children(&id)
                    .iter()
                    .map(|c| drive.items[c].name.clone())
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }

    /// True if `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.item_id(path).is_some()
    }

    /// Locks/unlocks `path` (writes answer `423 Locked` while locked).
    pub fn set_locked(&self, path: &str, locked: bool) -> Result<(), GraphError> {
        self.with(|s, d| {
            let drive = &mut s.drives[d];
            let id = resolve_path(drive, path)?;
            drive.set_locked(&id, locked)
        })
    }

    /// Bytes used by files in this drive.
    pub fn used_bytes(&self) -> u64 {
        self.with(|s, d| s.drives[d].used)
    }
}

fn mkdir_p(drive: &mut Drive, segs: &[String]) -> Result<String, GraphError> {
    let mut cur = drive.root_id.clone();
    for seg in segs {
        cur = match drive.child(&cur, seg).map(str::to_string) {
            Some(id) if drive.items[&id].is_folder() => id,
            Some(_) => return Err(GraphError::name_exists(seg)),
            None => drive.create_folder(&cur, seg, Conflict::Fail, SystemTime::now())?,
        };
    }
    Ok(cur)
}
