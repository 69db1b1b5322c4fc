//! The interface every backend implements. It speaks in stable item IDs, entries with a content
//! version, and byte ranges; it never names inodes, handles or FUSE.

pub mod changes;
pub mod growing;
pub mod links;
pub mod memory;
pub mod meta;
pub mod upload;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{RemoteError, RemoteResult};

pub use changes::{Change, ChangeBatch, ChangeSource};
pub use growing::GrowingFile;
pub use meta::{Meta, MetaFields};
pub use upload::{ResumeSlot, TransferProgress, UploadCtx, UploadSource, UploadTarget};

/// Stable identity of a remote item: Graph item id; WebDAV `oc:fileid` where offered, else the
/// decoded path relative to the mount's base URL (`""` is the root, no leading or trailing slash).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(Arc<str>);

impl ItemId {
    /// Wrap a backend's identifier.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ItemId(id.into())
    }

    /// The identifier as the backend gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A content version (ETag, eTag/cTag). Normalised so that the weak (`W/"x"`) and strong (`"x"`)
/// forms of one value compare equal: Apache hands out the weak form for a second after a write.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(Arc<str>);

impl Version {
    /// Build from a raw ETag header or property value (`W/"abc"`, `"abc"` or `abc`).
    pub fn from_etag(raw: &str) -> Self {
        let v = raw.trim();
        let v = v.strip_prefix("W/").unwrap_or(v);
        let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
        Version(v.into())
    }

    /// The normalised value (no quotes, no weak prefix).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Whether an item is a file or a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with content.
    File,
    /// A folder (WebDAV collection, Graph folder).
    Directory,
}

/// What a remote says about one item.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Stable identity.
    pub id: ItemId,
    /// Decoded last path segment; empty for the root.
    pub name: String,
    /// File or folder.
    pub kind: EntryKind,
    /// Content length in bytes (0 for folders when the server does not say).
    pub size: u64,
    /// Last modification time as the server reports it.
    pub mtime: SystemTime,
    /// Content version; `None` when the server gives none (then content is revalidated by size
    /// and mtime only).
    pub version: Option<Version>,
    /// What the server keeps of the item's metadata beyond these (see [`Meta`]); nothing
    /// ([`Meta::default`]) on servers that keep none. `mtime` here is the time a client set, to
    /// the precision the server keeps; [`Entry::mtime`] stays the server's own view.
    pub meta: Meta,
}

/// Space use on the remote, when the server reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes in use.
    pub used: Option<u64>,
    /// Bytes still available.
    pub available: Option<u64>,
}

/// What an upload may assume about the item it writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The name must be free (a create). Fails with `RemoteError::AlreadyExists` otherwise.
    Absent,
    /// The server must still hold this version (a replace of what we read). Fails with
    /// `RemoteError::PreconditionFailed` otherwise, on servers that can check it (see
    /// [`Capabilities::conditional_writes`]).
    Matches(Version),
    /// Replace whatever is there.
    Any,
}

/// What a remote can do beyond the common core, so the layers above choose honestly. Every such
/// fact is here, in one value a remote gives through [`Remote::capabilities`]; some are learnt
/// while mounted (a WebDAV server's answers), so callers ask again rather than keep a copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The remote implements the write operations ([`Remote::upload`], [`Remote::mkdir`],
    /// [`Remote::delete`], [`Remote::rename`]). A remote without them is mounted read-only (changes
    /// answer EROFS) whatever the command line says.
    pub writes: bool,
    /// The server enforces [`Precondition::Matches`] and [`Precondition::Absent`] atomically.
    pub conditional_writes: bool,
    /// The server keeps a modification time we send.
    pub set_mtime: bool,
    /// The server compares names case-insensitively (OneDrive: `A.txt` and `a.txt` are one name;
    /// it keeps the spelling an item was created with). Lookups in the core then match names the
    /// same way, so that a name in another case finds the item, as the server would.
    pub case_insensitive_names: bool,
    /// A folder's version changes whenever anything below it changes (Nextcloud and ownCloud
    /// collection ETags, Graph personal folders): then an unchanged root version means nothing
    /// changed, and only folders whose version moved need listing again.
    pub propagates_versions: bool,
    /// [`UploadSource::Growing`] may be used: the remote can stream a file of unknown length, and
    /// an upload cut off halfway leaves the server's copy as it was (the server writes the body
    /// aside and swaps it in only when complete). Where that is not known, a spoiled growing upload
    /// could leave a truncated file behind, so it stays `false`.
    pub streams_growing_uploads: bool,
    /// The [`Meta`] fields [`Remote::set_meta`] keeps on the server, where another machine sees
    /// them; the core keeps the others in its local store (`crate::metastore`). On WebDAV known
    /// once probed (`DavRemote::probe_meta`, which the first [`Remote::set_meta`] runs), none
    /// before.
    pub kept_meta: MetaFields,
}

/// A remote drive as the filesystem core sees it.
#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// A short human description for logs and the mount's fsname (for example the base URL without
    /// credentials).
    fn describe(&self) -> String;

    /// The root folder. Also proves that the server answers and accepts our credentials.
    async fn root(&self) -> RemoteResult<Entry>;

    /// Fresh metadata of one item, bypassing any cache.
    async fn stat(&self, id: &ItemId) -> RemoteResult<Entry>;

    /// The child called `name` of folder `parent`; `RemoteError::NotFound` when there is none.
    async fn lookup(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry>;

    /// Every child of folder `dir` (all pages), without the folder itself.
    async fn list(&self, dir: &ItemId) -> RemoteResult<Vec<Entry>>;

    /// Bytes `[offset, offset + len)` of file `id`. Returns fewer bytes only at end of file. When
    /// `version` is given and the server now holds another version, fails with
    /// `RemoteError::VersionChanged` instead of returning bytes of a different version.
    async fn read(&self, id: &ItemId, version: Option<&Version>, offset: u64, len: u64) -> RemoteResult<Bytes>;

    /// Space use, or `None` when the server does not report it.
    async fn quota(&self) -> RemoteResult<Option<Quota>>;

    /// After folder `from` moved to `to`, the id of what was `id`; `None` when `id` is not at or
    /// below `from` or keeps its id. Remotes whose ids are paths (WebDAV) rewrite the prefix;
    /// remotes with stable ids (Graph) keep the default.
    fn moved_id(&self, id: &ItemId, from: &ItemId, to: &ItemId) -> Option<ItemId> {
        let _ = (id, from, to);
        None
    }

    /// What this remote can do beyond the common core.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// A feed of changes made elsewhere (Graph delta), keeping its position in a file under
    /// `state_dir` when one is given, so a restart continues from it. `None` when the remote has no
    /// feed: the core then revalidates what it has listed (see [`crate::vfs::changes`]).
    fn changes(&self, state_dir: Option<&Path>) -> Option<Box<dyn ChangeSource>> {
        let _ = state_dir;
        None
    }

    /// Make the content of `from` the content of the file `to` names (created or replaced per its
    /// precondition), keeping the modification time where the server allows, counting the bytes
    /// sent in `cx.progress` as they go out (set back when an attempt starts over; the whole size
    /// once done), and, on remotes that can resume, carrying on from and keeping up to date the
    /// token in `cx.resume` (see [`ResumeSlot`]). Returns the item as the server now describes it.
    /// The default is a read-only remote's answer.
    async fn upload(&self, to: UploadTarget<'_>, from: UploadSource<'_>, cx: &UploadCtx) -> RemoteResult<Entry> {
        let _ = (to, from, cx);
        Err(RemoteError::Unsupported("this remote is read-only".into()))
    }

    /// An upload whose resume token is `token` will not be continued (its file was deleted or
    /// replaced): release what the server keeps for it. Best effort; the default does nothing.
    async fn discard_resume(&self, token: serde_json::Value) {
        let _ = token;
    }

    /// Whether the server would accept `name` for a new item, checked locally before anything is
    /// sent: `RemoteError::InvalidName` (EINVAL) or `RemoteError::NameTooLong` (ENAMETOOLONG)
    /// otherwise. The core calls it at create, mkdir and rename; the default accepts every name.
    fn check_name(&self, name: &str) -> RemoteResult<()> {
        let _ = name;
        Ok(())
    }

    /// Whether the server would accept a new item at `path` (its names from the root, joined by
    /// `/`, no leading slash), checked locally: `RemoteError::NameTooLong` when the whole path is
    /// longer than the server allows. The core calls it with [`Remote::check_name`].
    fn check_path(&self, path: &str) -> RemoteResult<()> {
        let _ = path;
        Ok(())
    }

    /// Create folder `name` in `parent`; `RemoteError::AlreadyExists` when the name is taken.
    async fn mkdir(&self, parent: &ItemId, name: &str) -> RemoteResult<Entry> {
        let _ = (parent, name);
        Err(RemoteError::Unsupported("this remote is read-only".into()))
    }

    /// Delete an item (a folder with everything in it).
    async fn delete(&self, id: &ItemId) -> RemoteResult<()> {
        let _ = id;
        Err(RemoteError::Unsupported("this remote is read-only".into()))
    }

    /// Delete folder `id` only if it holds nothing, else fail with `RemoteError::NotEmpty`: what
    /// rmdir(2) needs. A plain [`Remote::delete`] removes whatever the folder holds by the time
    /// it arrives, so a file another device moves in between a listing and the delete would be
    /// destroyed. Remotes make the check and the delete one step where the server allows it
    /// (OneDrive: `If-Match` on the folder's cTag; WebDAV: the folder is moved aside first and
    /// looked at there);
    /// this default lists and then deletes, which leaves that window open.
    async fn delete_empty_folder(&self, id: &ItemId) -> RemoteResult<()> {
        if !self.list(id).await?.is_empty() {
            return Err(RemoteError::NotEmpty);
        }
        self.delete(id).await
    }

    /// Move and/or rename `id` to child `new_name` of `new_parent`. An existing item there is
    /// replaced only when `replace` is true, else `RemoteError::AlreadyExists`. Returns the item as
    /// the server now describes it (on WebDAV its id, a path, changes).
    async fn rename(&self, id: &ItemId, new_parent: &ItemId, new_name: &str, replace: bool) -> RemoteResult<Entry> {
        let _ = (id, new_parent, new_name, replace);
        Err(RemoteError::Unsupported("this remote is read-only".into()))
    }

    /// Set the modification time of `id` where the server allows ([`Capabilities::set_mtime`]).
    /// Returns the item as the server now describes it.
    async fn set_mtime(&self, id: &ItemId, mtime: SystemTime) -> RemoteResult<Entry> {
        let _ = (id, mtime);
        Err(RemoteError::Unsupported(
            "this remote cannot set modification times".into(),
        ))
    }

    /// Keep on the server the fields of `meta` it can hold ([`Capabilities::kept_meta`]), leaving
    /// the fields `meta` does not hold as they are; the others are ignored (the caller keeps them
    /// elsewhere). With [`Precondition::Matches`] nothing changes unless the server still holds
    /// that version (`RemoteError::PreconditionFailed`); [`Precondition::Absent`] makes no sense
    /// here and is refused. Returns the item as the server now describes it.
    async fn set_meta(&self, id: &ItemId, meta: &Meta, precondition: Precondition) -> RemoteResult<Entry> {
        let _ = (id, meta, precondition);
        Err(RemoteError::Unsupported("this remote keeps no metadata".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_strong_etags_are_one_version() {
        assert_eq!(Version::from_etag("W/\"abc-1\""), Version::from_etag("\"abc-1\""));
        assert_eq!(Version::from_etag("abc-1"), Version::from_etag("\"abc-1\""));
        assert_ne!(Version::from_etag("\"abc-1\""), Version::from_etag("\"abc-2\""));
    }
}

/// [`Remote::moved_id`] for remotes whose ids are paths relative to the root (`"a/b"`): what was
/// `id` at or below `from` is now at the same place below `to`.
pub fn moved_path_id(id: &ItemId, from: &ItemId, to: &ItemId) -> Option<ItemId> {
    let (id, from) = (id.as_str(), from.as_str());
    if id == from {
        return Some(to.clone());
    }
    let rest = id.strip_prefix(from)?.strip_prefix('/')?;
    Some(ItemId::new(if to.as_str().is_empty() {
        rest.to_string()
    } else {
        format!("{}/{rest}", to.as_str())
    }))
}

#[cfg(test)]
mod moved_tests {
    use super::*;

    #[test]
    fn path_ids_follow_their_folder() {
        let (from, to) = (ItemId::new("a/b"), ItemId::new("c"));
        assert_eq!(
            moved_path_id(&ItemId::new("a/b/x y"), &from, &to),
            Some(ItemId::new("c/x y"))
        );
        assert_eq!(moved_path_id(&ItemId::new("a/b"), &from, &to), Some(ItemId::new("c")));
        assert_eq!(moved_path_id(&ItemId::new("a/bc"), &from, &to), None);
        assert_eq!(moved_path_id(&ItemId::new("z"), &from, &to), None);
    }
}
