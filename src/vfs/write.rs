//! The write operations of [`DriveFs`]: create, open for writing, write, truncate, flush, fsync,
//! release, mkdir, unlink, rmdir and rename.
//!
//! File content is written to a staged file on local disk (never held in memory) and handed to the
//! upload queue on `flush` (every `close`) and `fsync`, after which the queue's journal keeps it
//! through crashes. The upload starts at `release` (the last close of the open file), or when
//! someone waits for it. `fsync` through any handle returns once the server has the bytes. Folder
//! operations (mkdir, unlink, rmdir, rename) go to the server at once, so their errors reach the
//! caller.
//!
//! One owner of a file's state: the node's [`LocalContent`]. Upload events change it in place
//! ([`LocalContent::note_landed`], generations in order), slow work (copying, downloading) works on
//! a snapshot and then applies its result field by field, and the local copy goes in one place
//! only ([`super::local::settle`]), which moves the node onto the version our upload made.
//!
//! Ordering rules that keep data safe:
//! - A staged file handed to the queue is immutable; the next write to that file works on a copy.
//! - Before an item moves or is deleted on the server, uploads queued for it (or below it) land
//!   first, so no upload goes to a path that no longer exists.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::error::RemoteError;
use crate::fs_err;
use crate::remote::{Change, ChangeBatch, Entry, EntryKind, GrowingFile, ItemId};

use super::attr::{content_tag, Attr};
use super::error::{FsError, FsResult};
use super::fs::{DriveFs, Looked, Opened};
use super::handles::FileHandle;
use super::local::{placeholder_id, settle, LocalContent, NodeId, Settled};
use super::namespace::DETACHED;
use super::prefetch::ReadPattern;
use super::upload::journal::{Journal, UploadRecord, UploadState};
use super::upload::queue::{QueueConfig, UploadEvent, UploadQueue};
use super::upload::staging::StagingArea;

/// A file written in order starts uploading while it is written once it holds this many bytes:
/// smaller files go up whole at close about as fast, with fewer requests.
const GROW_AFTER: u64 = 4 << 20;

/// The write-back machinery of one mount.
pub struct WriteBack {
    /// The upload queue.
    pub queue: Arc<UploadQueue>,
    /// Where staged files live.
    pub staging: StagingArea,
    /// Keys of uploads a previous run left in the journal that are not shown in the tree yet: they
    /// join their folder's entries the first time that folder is used (see
    /// [`DriveFs::show_restored_uploads`]).
    restored: Mutex<std::collections::HashSet<String>>,
    /// How many keys `restored` holds, so the common case (none) costs no lock.
    restored_left: AtomicU64,
}

/// Where a mount keeps its write-back state.
#[derive(Clone, Debug)]
pub struct WriteBackPaths {
    /// The upload journal (must survive reboots: a state directory).
    pub journal: std::path::PathBuf,
    /// Staged file content (same filesystem as nothing else in particular; a cache directory).
    pub staging: std::path::PathBuf,
    /// Free space the staging disk must keep; writes past it get ENOSPC.
    pub min_free_bytes: u64,
}

static KEYS: AtomicU64 = AtomicU64::new(0);

fn new_key() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("k{ms}-{}-{}", std::process::id(), KEYS.fetch_add(1, Ordering::Relaxed))
}

fn io_err(what: &str, e: std::io::Error) -> FsError {
    FsError::new(e.raw_os_error().unwrap_or(libc::EIO), format!("{what}: {e}"))
}

/// Read from local content.
pub(super) fn read_local(local: &LocalContent, offset: u64, size: u32) -> FsResult<Bytes> {
    if offset >= local.size || size == 0 {
        return Ok(Bytes::new());
    }
    let len = (size as u64).min(local.size - offset) as usize;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = local
            .file
            .read_at(&mut buf[done..], offset + done as u64)
            .map_err(|e| io_err("read staged", e))?;
        if n == 0 {
            // The staged file is shorter than recorded: a truncate raced; the rest reads as zeros.
            break;
        }
        done += n;
    }
    Ok(Bytes::from(buf))
}

/// A name the remote could hold: UTF-8, not `.`/`..`, no `/`, at most 255 bytes.
fn checked_name(name: &OsStr) -> FsResult<&str> {
    let s = name
        .to_str()
        .ok_or_else(|| fs_err!(libc::EINVAL, "names must be UTF-8 on this remote"))?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(fs_err!(libc::EINVAL, "invalid name {s:?}"));
    }
    if s.len() > 255 {
        return Err(fs_err!(libc::ENAMETOOLONG, "name longer than 255 bytes"));
    }
    Ok(s)
}

impl DriveFs {
    /// [`checked_name`], then the remote's own rules ([`crate::remote::Remote::check_name`]):
    /// a name the server would refuse fails here (EINVAL / ENAMETOOLONG), before anything is
    /// queued or sent.
    fn new_name<'a>(&self, parent: u64, name: &'a OsStr) -> FsResult<&'a str> {
        let name = checked_name(name)?;
        self.remote.check_name(name)?;
        if let Some(dir) = self.path_of(parent) {
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            self.remote.check_path(&path)?;
        }
        Ok(name)
    }

    /// The names from the mount's root down to `ino`, joined by `/` (`""` for the root); `None`
    /// when the chain is broken (an inode forgotten meanwhile).
    fn path_of(&self, ino: u64) -> Option<String> {
        let mut names = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            let n = self.inodes.get(cur)?;
            if n.ino == n.parent {
                names.reverse();
                return Some(names.join("/"));
            }
            names.push(n.entry.name);
            cur = n.parent;
        }
        None
    }

    /// Turn on writes: start the upload queue over the journal in `paths` (resuming what a previous
    /// run left) and the staging area. Call once, within the tokio runtime.
    pub fn enable_writes(self: &Arc<Self>, paths: &WriteBackPaths, cfg: QueueConfig) -> std::io::Result<()> {
        let journal = Journal::open(&paths.journal)?;
        let staging = StagingArea::open(&paths.staging, paths.min_free_bytes)?;
        let weak = Arc::downgrade(self);
        let sink = Box::new(move |ev: UploadEvent| {
            if let Some(fs) = weak.upgrade() {
                if let Some(ino) = fs.on_upload_event(ev) {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move { fs.take_server_version(ino).await });
                    }
                }
            }
        });
        let queue = UploadQueue::start(self.remote.clone(), journal, cfg, Some(sink))?;
        let mut restored = std::collections::HashSet::new();
        queue.for_each_queued(|record, _| {
            restored.insert(record.key.clone());
        });
        let restored_left = AtomicU64::new(restored.len() as u64);
        let wb = WriteBack {
            queue,
            staging,
            restored: Mutex::new(restored),
            restored_left,
        };
        if self.writeback.set(wb).is_err() {
            return Err(std::io::Error::other("writes are already enabled"));
        }
        Ok(())
    }

    /// Folder `dir` is being used: files of it that a previous run wrote and left in the upload
    /// journal appear in it now, with their local size and content, as they did before the
    /// restart (the server may not have them yet, or hold an older version).
    pub(super) fn show_restored_uploads(&self, dir: &super::namespace::Node) {
        let Some(wb) = self.writeback.get() else { return };
        if wb.restored_left.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut restored = wb.restored.lock().unwrap_or_else(|e| e.into_inner());
        wb.queue.for_each_queued(|record, generation| {
            if record.parent != dir.entry.id.as_str() || !restored.remove(&record.key) {
                return;
            }
            if self.inodes.by_local_key(&record.key).is_some() {
                return;
            }
            // Read-only: the queue owns this file; a later write works on a copy.
            let file = match std::fs::File::open(&record.staged) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(file = %record.name, error = %e, "staged copy of a queued upload is unreadable");
                    return;
                }
            };
            let entry = Entry {
                id: placeholder_id(&record.key),
                name: record.name.clone(),
                kind: EntryKind::File,
                size: record.size,
                mtime: record.mtime(),
                version: None,
            };
            let local = LocalContent {
                key: record.key.clone(),
                item: NodeId::Local,
                staged: record.staged.clone(),
                file: Arc::new(file),
                size: record.size,
                mtime: record.mtime(),
                base_version: record.base_version.as_deref().map(crate::remote::Version::from_etag),
                dirty: false,
                handed_off: true,
                generation: Some(generation),
                uploaded: None,
                landed: None,
                writers: 0,
                conflicted: false,
                in_order: false,
                growing: None,
            };
            // The kernel holds no reference yet: it takes one when it looks the name up.
            let ino = self.inodes.insert_local(dir.ino, entry, local);
            self.inodes.forget(ino, 1);
        });
        wb.restored_left.store(restored.len() as u64, Ordering::Relaxed);
    }

    fn wb(&self) -> FsResult<&WriteBack> {
        self.check_writable()?;
        self.writeback
            .get()
            .ok_or_else(|| fs_err!(libc::EROFS, "the mount is read-only"))
    }

    /// The staging area, when writes are enabled (for tests of its durability).
    pub fn staging(&self) -> Option<&StagingArea> {
        self.writeback.get().map(|w| &w.staging)
    }

    /// The upload queue, when writes are enabled (for status and unmount).
    pub fn upload_queue(&self) -> Option<&Arc<UploadQueue>> {
        self.writeback.get().map(|w| &w.queue)
    }

    fn attr_of(&self, ino: u64) -> FsResult<Attr> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        Ok(self.attr_for(ino, &node.entry))
    }

    fn writable_handle(&self, ino: u64, entry: &Entry) -> u64 {
        self.files.insert(FileHandle {
            ino,
            id: entry.id.clone(),
            tag: content_tag(entry),
            remote_version: entry.version.clone(),
            size: entry.size,
            pattern: Mutex::new(ReadPattern::new(0)),
            writable: true,
            follows_local: true,
            served: Default::default(),
        })
    }

    /// Give `ino` local content it may write to: reuse what it has, copy it when the queue owns
    /// it, or fill a new staged file from the server (unless `truncate`). Takes the write gate.
    ///
    /// The slow part (copying or downloading) works on a snapshot of the node; what it produced
    /// is then applied field by field to the node as it is by then, never by storing the snapshot
    /// back: upload events that landed meanwhile (a new base version, the generation the server
    /// confirmed, the server's id) stay applied.
    async fn make_writable(&self, ino: u64, truncate: bool, add_writer: bool) -> FsResult<()> {
        let wb = self.wb()?;
        let _gate = self.write_gate.write().await;
        loop {
            let node = self
                .inodes
                .get(ino)
                .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
            if node.entry.kind == EntryKind::Directory {
                return Err(fs_err!(libc::EISDIR, "inode {ino} is a folder"));
            }
            let now = SystemTime::now();
            let Some(snapshot) = node.local else {
                return self.fill_local(wb, ino, truncate, add_writer).await;
            };
            // The writer's gate is ours: nobody writes or replaces the staged file meanwhile.
            let fresh = match (truncate, snapshot.handed_off) {
                (true, true) => Some(wb.staging.create().map_err(|e| io_err("stage", e))?),
                (true, false) => {
                    snapshot.file.set_len(0).map_err(|e| io_err("truncate staged", e))?;
                    None
                }
                (false, true) => Some(
                    wb.staging
                        .copy_of(&snapshot.file, snapshot.size)
                        .map_err(|e| io_err("stage", e))?,
                ),
                (false, false) => None,
            }
            .map(|(path, file)| (path, Arc::new(file)));
            let applied = self.inodes.with_node(ino, |n| {
                let Some(l) = n.local.as_mut().filter(|l| l.key == snapshot.key) else {
                    return false;
                };
                if truncate {
                    if let Some(g) = l.growing.take() {
                        g.spoil();
                    }
                    l.in_order = true;
                    l.size = 0;
                    l.mtime = now;
                    l.dirty = true;
                }
                if let Some((path, file)) = &fresh {
                    l.staged = path.clone();
                    l.file = file.clone();
                    l.handed_off = false;
                    if !truncate {
                        l.in_order = l.size == 0;
                        l.growing = None;
                    }
                }
                if add_writer {
                    l.writers += 1;
                }
                n.entry.size = l.size;
                n.entry.mtime = l.mtime;
                true
            });
            if applied == Some(true) {
                return Ok(());
            }
            // Its upload landed and the local copy went meanwhile: start again from the server's
            // version (which is ours).
            if let Some((path, _)) = fresh {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// [`make_writable`](Self::make_writable) of a file without local content: a new staged file,
    /// filled from the server's version unless `truncate`.
    async fn fill_local(&self, wb: &WriteBack, ino: u64, truncate: bool, add_writer: bool) -> FsResult<()> {
        let now = SystemTime::now();
        let mut entry = self.fresh_entry(ino).await?;
        let (path, file) = wb.staging.create().map_err(|e| io_err("stage", e))?;
        let file = Arc::new(file);
        let mut tries = 0;
        while !truncate && entry.size > 0 {
            match self.fill_from_server(wb, &entry, &file).await {
                Ok(()) => break,
                // The version we knew was replaced on the server: open the one it holds now.
                Err(e) if e.errno() == libc::ESTALE && tries < 3 => {
                    tries += 1;
                    entry = match self.server_entry(ino).await {
                        Ok(entry) => entry,
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            return Err(e);
                        }
                    };
                    file.set_len(0).map_err(|e| io_err("truncate staged", e))?;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        let local = LocalContent {
            key: new_key(),
            item: NodeId::Remote(entry.id.clone()),
            staged: path,
            file,
            size: if truncate { 0 } else { entry.size },
            mtime: if truncate { now } else { entry.mtime },
            base_version: entry.version.clone(),
            dirty: truncate,
            handed_off: false,
            generation: None,
            uploaded: None,
            landed: None,
            writers: u32::from(add_writer),
            conflicted: false,
            in_order: truncate || entry.size == 0,
            growing: None,
        };
        self.inodes.with_node(ino, move |n| {
            n.entry.size = local.size;
            n.entry.mtime = local.mtime;
            n.local = Some(local);
        });
        Ok(())
    }

    /// Copy the server's content of `entry` into `file`, checking that it stays one version.
    async fn fill_from_server(&self, wb: &WriteBack, entry: &Entry, file: &std::fs::File) -> FsResult<()> {
        wb.staging.reserve(entry.size).map_err(|e| io_err("stage", e))?;
        let chunk = self.cache.block_size().max(1 << 20) * 4;
        let mut off = 0;
        while off < entry.size {
            let len = chunk.min(entry.size - off);
            let data = self
                .remote
                .read(&entry.id, entry.version.as_ref(), off, len)
                .await
                .map_err(|e| match e {
                    RemoteError::VersionChanged => {
                        fs_err!(libc::ESTALE, "{} changed on the server while opening", entry.id)
                    }
                    e => FsError::from(e),
                })?;
            if data.len() as u64 != len {
                return Err(fs_err!(
                    libc::ESTALE,
                    "{} is shorter on the server than listed",
                    entry.id
                ));
            }
            file.write_all_at(&data, off).map_err(|e| io_err("write staged", e))?;
            off += len;
        }
        Ok(())
    }

    /// Open `ino` for writing (`flags` from open(2)).
    pub(super) async fn open_for_write(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        self.make_writable(ino, flags & libc::O_TRUNC != 0, true).await?;
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        let fh = self.writable_handle(ino, &node.entry);
        Ok(Opened { fh, keep_cache: false })
    }

    /// Create file `name` in `parent` and open it for writing. An existing file is opened instead,
    /// unless `flags` has `O_EXCL` (EEXIST).
    pub async fn create(&self, parent: u64, name: &OsStr, flags: i32) -> FsResult<(Looked, Opened)> {
        self.wb()?;
        let name = self.new_name(parent, name)?;
        let dir = self.dir_node(parent)?;
        match self.lookup(parent, OsStr::new(name)).await {
            Ok(found) => {
                if flags & libc::O_EXCL != 0 {
                    self.forget(found.attr.ino, 1);
                    return Err(fs_err!(libc::EEXIST, "{name:?} exists"));
                }
                if found.attr.kind == EntryKind::Directory {
                    self.forget(found.attr.ino, 1);
                    return Err(fs_err!(libc::EISDIR, "{name:?} is a folder"));
                }
                let opened = self.open_for_write(found.attr.ino, flags).await?;
                let attr = self.attr_of(found.attr.ino)?;
                return Ok((
                    Looked {
                        attr,
                        ttl: self.cfg.attr_ttl,
                    },
                    opened,
                ));
            }
            Err(e) if e.errno() == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        let wb = self.wb()?;
        let (path, file) = wb.staging.create().map_err(|e| io_err("stage", e))?;
        let now = SystemTime::now();
        let key = new_key();
        let entry = Entry {
            id: placeholder_id(&key),
            name: name.to_string(),
            kind: EntryKind::File,
            size: 0,
            mtime: now,
            version: None,
        };
        let local = LocalContent {
            key,
            item: NodeId::Local,
            staged: path,
            file: Arc::new(file),
            size: 0,
            mtime: now,
            base_version: None,
            dirty: true,
            handed_off: false,
            generation: None,
            uploaded: None,
            landed: None,
            writers: 1,
            conflicted: false,
            in_order: true,
            growing: None,
        };
        let ino = self.inodes.insert_local(dir.ino, entry.clone(), local);
        self.inodes.touch_dir(dir.ino);
        let fh = self.writable_handle(ino, &entry);
        let attr = self.cfg.ownership.attr(ino, &entry);
        Ok((
            Looked {
                attr,
                ttl: self.cfg.attr_ttl,
            },
            Opened { fh, keep_cache: false },
        ))
    }

    /// Write `data` at `offset` through handle `fh`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        loop {
            {
                let _shared = self.write_gate.read().await;
                if let Some(n) = self.write_staged(fh, offset, data)? {
                    return Ok(n);
                }
            }
            // The queue owns the staged file now: continue on a copy.
            let ino = self
                .files
                .get(fh)
                .ok_or_else(|| fs_err!(libc::EBADF, "unknown file handle {fh}"))?
                .ino;
            self.make_writable(ino, false, false).await?;
        }
    }

    /// [`DriveFs::write`] without waiting, for the FUSE thread: a write into the staged file is a
    /// local `pwrite`, and doing it where the request arrives spares a copy of the data and a hop
    /// to another thread (a fresh 1 MiB buffer per write cost more than the write itself). `None`
    /// when the write has to wait: another operation holds the write gate, or the staged file was
    /// handed to the upload queue and must be copied first; then call [`DriveFs::write`].
    pub fn try_write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Option<FsResult<u32>> {
        let _shared = self.write_gate.try_read().ok()?;
        self.write_staged(fh, offset, data).transpose()
    }

    /// With the write gate held shared: write into `fh`'s staged file. `Ok(None)` when the upload
    /// queue owns that file (it is immutable then).
    fn write_staged(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<Option<u32>> {
        let h = self
            .files
            .get(fh)
            .ok_or_else(|| fs_err!(libc::EBADF, "unknown file handle {fh}"))?;
        if !h.writable {
            return Err(fs_err!(libc::EBADF, "handle {fh} is not open for writing"));
        }
        let wb = self.wb()?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| fs_err!(libc::EFBIG, "offset too large"))?;
        let local = self
            .inodes
            .get(h.ino)
            .and_then(|n| n.local)
            .ok_or_else(|| fs_err!(libc::EIO, "file {} lost its local content", h.ino))?;
        if local.handed_off {
            return Ok(None);
        }
        wb.staging
            .reserve(end.saturating_sub(local.size))
            .map_err(|e| io_err("write", e))?;
        local
            .file
            .write_all_at(data, offset)
            .map_err(|e| io_err("write staged", e))?;
        let mut may_grow = false;
        self.inodes.with_node(h.ino, |n| {
            if let Some(l) = n.local.as_mut() {
                let appended = match &l.growing {
                    Some(g) => g.appended(offset, end),
                    None => offset == l.size,
                };
                if !appended {
                    l.in_order = false;
                    l.growing = None;
                }
                l.size = l.size.max(end);
                l.mtime = SystemTime::now();
                l.dirty = true;
                n.entry.size = l.size;
                n.entry.mtime = l.mtime;
                may_grow = l.in_order && l.growing.is_none() && l.size >= GROW_AFTER && n.parent != DETACHED;
            }
        });
        if may_grow && self.remote.streams_growing_uploads() {
            self.start_growing(h.ino);
        }
        Ok(Some(data.len() as u32))
    }

    /// Start uploading `ino` while it is written (see [`GrowingFile`]), unless the queue has an
    /// upload of it already (one of its earlier content, say the empty file a create made: the
    /// next write tries again).
    fn start_growing(&self, ino: u64) {
        let Ok(wb) = self.wb() else { return };
        let Some(node) = self.inodes.get(ino) else { return };
        let Some(local) = node.local.clone() else { return };
        let Some(parent) = self.inodes.get(node.parent) else {
            return;
        };
        let file = GrowingFile::new(&local.staged, local.size);
        let started = wb.queue.start_growing(&local.key, file.clone(), || {
            self.upload_record(ino, &local, &parent.entry.id, &node.entry.name)
        });
        if !started {
            return;
        }
        let mut kept = false;
        self.inodes.with_node(ino, |n| {
            if let Some(l) = n.local.as_mut() {
                // Writes since `local` was read were not seen by `file`: then it cannot stand for
                // the content (its seal would fail anyway).
                if l.growing.is_none() && l.staged == local.staged && l.size == local.size && l.in_order {
                    l.growing = Some(file.clone());
                    kept = true;
                }
            }
        });
        if kept {
            tracing::debug!(file = %node.entry.name, "uploading while it is written");
        } else {
            file.spoil();
        }
    }

    /// Stop the upload that follows `ino`'s writer, if there is one: the file is renamed, deleted
    /// or truncated. The whole-file upload at close takes over.
    fn stop_growing(&self, ino: u64) {
        self.inodes.with_node(ino, |n| {
            if let Some(g) = n.local.as_mut().and_then(|l| l.growing.take()) {
                g.spoil();
            }
        });
    }

    /// Hand `ino`'s changes to the upload queue (durably) and return the generation to wait for.
    /// `hold`: a descriptor closes while the file stays open: journal the content but send it
    /// only at the last close (or when someone waits for it); otherwise let it go now.
    async fn hand_off(&self, ino: u64, hold: bool) -> FsResult<Option<(String, u64)>> {
        let handed = self.hand_off_held(ino, hold).await?;
        if let (Some((key, _)), false) = (&handed, hold) {
            self.wb()?.queue.release_hold(key);
        }
        Ok(handed)
    }

    async fn hand_off_held(&self, ino: u64, hold: bool) -> FsResult<Option<(String, u64)>> {
        let wb = self.wb()?;
        let _gate = self.write_gate.write().await;
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        let Some(local) = node.local else { return Ok(None) };
        if node.parent == DETACHED {
            // Unlinked while open: what is written now goes nowhere, as on a local disk.
            return Ok(None);
        }
        if !local.dirty {
            return Ok(local
                .generation
                .filter(|g| local.uploaded < Some(*g))
                .map(|g| (local.key.clone(), g)));
        }
        let parent = self
            .inodes
            .get(node.parent)
            .ok_or_else(|| fs_err!(libc::ENOENT, "folder is gone"))?;
        if local.growing.is_some() {
            // An upload follows this writer: seal it now, and the close is over as soon as the
            // server has the file or the journal does, whichever comes first.
            let sealed = wb.queue.seal_growing(&local.key, || {
                self.upload_record(ino, &local, &parent.entry.id, &node.entry.name)
            });
            if let Some(generation) = sealed {
                self.mark_handed_off(ino, generation);
                drop(_gate);
                self.secure(wb, &local, generation).await?;
                return Ok(Some((local.key, generation)));
            }
        }
        local.file.sync_all().map_err(|e| io_err("sync staged", e))?;
        wb.staging.sync_dir().map_err(|e| io_err("sync staging folder", e))?;
        // Built under the queue's lock: the base version read here cannot go stale before queueing.
        let generation = wb
            .queue
            .enqueue_held(
                || self.upload_record(ino, &local, &parent.entry.id, &node.entry.name),
                hold,
            )
            .map_err(|e| io_err("journal", e))?;
        self.mark_handed_off(ino, generation);
        Ok(Some((local.key, generation)))
    }

    /// The upload record of `ino`'s local content (`fallback` when the inode is gone), for the
    /// queue. Called under the queue's lock, so the base version read here cannot go stale.
    fn upload_record(&self, ino: u64, fallback: &LocalContent, parent: &ItemId, name: &str) -> UploadRecord {
        let now = self
            .inodes
            .get(ino)
            .and_then(|n| n.local)
            .unwrap_or_else(|| fallback.clone());
        UploadRecord {
            key: now.key.clone(),
            parent: parent.as_str().to_string(),
            name: name.to_string(),
            staged: now.staged.clone(),
            size: now.size,
            mtime_ns: UploadRecord::mtime_ns_of(now.mtime),
            base_version: now.base_version.as_ref().map(|v| v.as_str().to_string()),
            attempts: 0,
            last_error: None,
            resume: None,
            ours: Vec::new(),
            conflict_copy: None,
            state: UploadState::Pending,
        }
    }

    /// The queue owns `ino`'s staged file now, as generation `generation`.
    fn mark_handed_off(&self, ino: u64, generation: u64) {
        self.inodes.with_node(ino, |n| {
            if let Some(l) = n.local.as_mut() {
                l.dirty = false;
                l.handed_off = true;
                l.generation = Some(generation);
                // The queue has it now (sealed, or spoiled by the hand-over).
                l.growing = None;
            }
        });
    }

    /// Wait until generation `generation` of `local`, sealed by [`UploadQueue::seal_growing`],
    /// is safe: on the server, or journaled with its staged file on disk, whichever comes first.
    /// The upload usually wins, and then the close never waits for the disk.
    async fn secure(&self, wb: &WriteBack, local: &LocalContent, generation: u64) -> FsResult<()> {
        let landed = wb.queue.wait(&local.key, generation);
        let file = local.file.clone();
        let journaled = async {
            let dir = wb.staging.dir().to_path_buf();
            tokio::task::spawn_blocking(move || {
                file.sync_all()?;
                std::fs::File::open(dir)?.sync_all()
            })
            .await
            .map_err(|e| io_err("sync staged", std::io::Error::other(e)))?
            .map_err(|e| io_err("sync staged", e))?;
            wb.queue
                .journal_sealed(&local.key, generation)
                .map_err(|e| io_err("journal", e))
        };
        tokio::pin!(landed, journaled);
        let (mut upload_failed, mut journal_error) = (false, None);
        loop {
            tokio::select! {
                r = &mut landed, if !upload_failed => match r {
                    Ok(()) => return Ok(()),
                    Err(_) => upload_failed = true,
                },
                r = &mut journaled, if journal_error.is_none() => match r {
                    Ok(()) => return Ok(()),
                    Err(e) => journal_error = Some(e),
                },
            }
            if let (true, Some(e)) = (upload_failed, journal_error.take()) {
                return Err(e);
            }
        }
    }

    /// `close()` of a descriptor: its changes go to the upload queue's journal; when this returns
    /// `Ok`, they survive a crash. They are sent when the last descriptor of the open file closes
    /// ([`release`](DriveFs::release)): a shell's `>` closes a duplicate descriptor before the
    /// command writes, and sending then would show other devices an empty version.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.files.get(fh) else { return Ok(()) };
        if h.writable {
            self.hand_off(h.ino, true).await?;
        }
        Ok(())
    }

    /// `fsync()` through any handle of the file, written through or not (`sync FILE` opens it
    /// read-only): returns once the server holds the file's content (or with the reason it does
    /// not yet; the data stays queued).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let Some(h) = self.files.get(fh) else { return Ok(()) };
        if self.writeback.get().is_none() || self.inodes.get(h.ino).is_none_or(|n| n.local.is_none()) {
            // Nothing of it waits to go up (and the write gate stays free for writers).
            return Ok(());
        }
        if let Some((key, generation)) = self.hand_off(h.ino, false).await? {
            self.wb()?.queue.wait(&key, generation).await?;
        }
        Ok(())
    }

    pub(super) async fn release_writer(&self, h: &FileHandle) -> FsResult<()> {
        let others = self
            .inodes
            .get(h.ino)
            .and_then(|n| n.local)
            .is_some_and(|l| l.writers > 1);
        let result = self.hand_off(h.ino, others).await;
        let valid = self.valid_until();
        let settled = self.inodes.with_node(h.ino, |n| {
            if let Some(l) = n.local.as_mut() {
                l.writers = l.writers.saturating_sub(1);
            }
            settle(n, valid)
        });
        if settled == Some(Settled::Conflicted) {
            self.take_server_version(h.ino).await;
        }
        result.map(|_| ())
    }

    /// Truncate (or extend with zeros) `ino` to `size`. Without an open handle the change goes to
    /// the upload queue at once.
    pub async fn truncate(&self, ino: u64, size: u64, fh: Option<u64>) -> FsResult<Attr> {
        self.make_writable(ino, size == 0, false).await?;
        {
            let _gate = self.write_gate.write().await;
            let local = self
                .inodes
                .get(ino)
                .and_then(|n| n.local)
                .ok_or_else(|| fs_err!(libc::EIO, "no local content"))?;
            if size > local.size {
                self.wb()?
                    .staging
                    .reserve(size - local.size)
                    .map_err(|e| io_err("truncate", e))?;
            }
            self.stop_growing(ino);
            local.file.set_len(size).map_err(|e| io_err("truncate staged", e))?;
            self.inodes.with_node(ino, |n| {
                if let Some(l) = n.local.as_mut() {
                    l.in_order = size == 0;
                    l.size = size;
                    l.mtime = SystemTime::now();
                    l.dirty = true;
                    n.entry.size = size;
                    n.entry.mtime = l.mtime;
                }
            });
        }
        let has_writer = fh.and_then(|f| self.files.get(f)).map(|h| h.writable).unwrap_or(false);
        if !has_writer {
            self.hand_off(ino, false).await?;
        }
        self.attr_of(ino)
    }

    /// Set the modification time of `ino`. Kept with local content (sent with its upload), else
    /// set on the server where it allows; EPERM where it cannot keep one.
    pub async fn set_mtime(&self, ino: u64, mtime: SystemTime) -> FsResult<Attr> {
        self.wb()?;
        let had_local = self
            .inodes
            .with_node(ino, |n| match n.local.as_mut() {
                Some(l) => {
                    l.mtime = mtime;
                    l.dirty = true;
                    n.entry.mtime = mtime;
                    true
                }
                None => false,
            })
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        if had_local {
            let writers = self
                .inodes
                .get(ino)
                .and_then(|n| n.local)
                .map(|l| l.writers)
                .unwrap_or(0);
            if writers == 0 {
                self.hand_off(ino, false).await?;
            }
            return self.attr_of(ino);
        }
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        // Remotes learn on first use whether the server keeps times; a refusal is the user's EPERM.
        let entry = match self.remote.set_mtime(&node.entry.id, mtime).await {
            Ok(entry) => entry,
            Err(RemoteError::Unsupported(why)) => {
                return Err(fs_err!(
                    libc::EPERM,
                    "this server cannot keep modification times: {why}"
                ))
            }
            Err(e) => return Err(e.into()),
        };
        self.inodes.refresh(ino, entry, self.valid_until());
        self.attr_of(ino)
    }

    /// Create folder `name` in `parent` on the server.
    pub async fn mkdir(&self, parent: u64, name: &OsStr) -> FsResult<Looked> {
        self.wb()?;
        let name = self.new_name(parent, name)?;
        let dir = self.dir_node(parent)?;
        if let Some(Some(_)) = self.inodes.listed_child(parent, name, Instant::now()) {
            return Err(fs_err!(libc::EEXIST, "{name:?} exists"));
        }
        let entry = self.remote.mkdir(&dir.entry.id, name).await?;
        self.inodes.listing_insert(parent, entry.clone());
        self.inodes.touch_dir(parent);
        let up = self.inodes.upsert(parent, entry.clone(), self.valid_until(), 1);
        Ok(Looked {
            attr: self.cfg.ownership.attr(up.ino, &entry),
            ttl: self.cfg.attr_ttl,
        })
    }

    /// Resolve `name` in `parent` to its inode without adding a kernel reference.
    async fn child(&self, parent: u64, name: &str) -> FsResult<super::namespace::Node> {
        let looked = self.lookup(parent, OsStr::new(name)).await?;
        // Taken before the reference is given back: a node only this lookup held goes with it.
        let node = self.inodes.get(looked.attr.ino);
        self.forget(looked.attr.ino, 1);
        node.ok_or_else(|| fs_err!(libc::ENOENT, "{name:?} vanished"))
    }

    /// Wait until uploads queued for `ino`, or for anything below it, have landed (or were given
    /// up on), so the server's paths stay valid for them.
    async fn settle_uploads_at(&self, ino: u64) -> FsResult<()> {
        let Some(wb) = self.writeback.get() else { return Ok(()) };
        let mut nodes = self.inodes.local_below(ino);
        if let Some(n) = self.inodes.get(ino) {
            if n.local.is_some() {
                nodes.push(n);
            }
        }
        for n in nodes {
            self.stop_growing(n.ino);
            let Some(local) = n.local else { continue };
            if let Some(g) = local.generation {
                wb.queue.wait(&local.key, g).await?;
            }
        }
        Ok(())
    }

    /// Drop an item we deleted or replaced: its queued uploads, its inode, its listing entry.
    fn forget_item(&self, parent: u64, node: &super::namespace::Node) {
        if let (Some(wb), Some(local)) = (self.writeback.get(), &node.local) {
            wb.queue.cancel(&local.key);
        }
        self.inodes.listing_remove(parent, &node.entry.name);
        self.inodes.touch_dir(parent);
        self.inodes.remove_item(node.ino);
    }

    /// Whether `node` exists on the server yet (a file created here gets its server id once its
    /// first upload lands).
    fn on_server(node: &super::namespace::Node) -> bool {
        node.item().remote().is_some()
    }

    /// Delete file `name` from `parent`.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.wb()?;
        let name = super::fs::existing_name(name)?;
        let node = self.child(parent, name).await?;
        if node.entry.kind == EntryKind::Directory {
            return Err(fs_err!(libc::EISDIR, "{name:?} is a folder"));
        }
        self.delete_node(parent, node).await
    }

    async fn delete_node(&self, parent: u64, node: super::namespace::Node) -> FsResult<()> {
        if let (Some(wb), Some(local)) = (self.writeback.get(), &node.local) {
            // An upload under way finishes first; then nothing of it remains queued.
            wb.queue.settle(&local.key).await;
            wb.queue.cancel(&local.key);
        }
        let node = self.inodes.get(node.ino).unwrap_or(node);
        if Self::on_server(&node) {
            match self.remote.delete(&node.entry.id).await {
                Ok(()) | Err(RemoteError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if node.local.is_some() && self.files.any(|h| h.ino == node.ino) {
            self.detach_open_file(parent, &node).await;
            return Ok(());
        }
        self.forget_item(parent, &node);
        Ok(())
    }

    /// `node` was unlinked while descriptors are open on it: as on a local disk, they keep reading
    /// and writing its content (from the staged copy, through its open file) until the last one
    /// closes, while the name is gone and nothing more is uploaded.
    async fn detach_open_file(&self, parent: u64, node: &super::namespace::Node) {
        let _gate = self.write_gate.write().await;
        if let (Some(wb), Some(local)) = (self.writeback.get(), self.inodes.get(node.ino).and_then(|n| n.local)) {
            // A close since the first cancel may have queued another generation.
            wb.queue.settle(&local.key).await;
            wb.queue.cancel(&local.key);
        }
        self.inodes.listing_remove(parent, &node.entry.name);
        self.inodes.touch_dir(parent);
        self.inodes.detach(node.ino);
        self.inodes.with_node(node.ino, |n| {
            if let Some(l) = n.local.as_mut() {
                // The queue let go of the staged file; the open file is ours to write again.
                l.handed_off = false;
                l.dirty = false;
                l.generation = None;
            }
        });
    }

    /// After a close: a file unlinked while open goes once its last descriptor is closed.
    pub(super) fn drop_if_unlinked(&self, ino: u64) {
        let detached = self.inodes.get(ino).is_some_and(|n| n.parent == DETACHED);
        if detached && !self.files.any(|h| h.ino == ino) {
            if let Some(local) = self.inodes.with_node(ino, |n| n.local.take()).flatten() {
                // Never handed to the queue, or taken back from it: the staged copy is ours to delete.
                let _ = std::fs::remove_file(&local.staged);
            }
            self.inodes.forget(ino, 0);
        }
    }

    /// Delete the empty folder `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.wb()?;
        let name = super::fs::existing_name(name)?;
        let node = self.child(parent, name).await?;
        if node.entry.kind != EntryKind::Directory {
            return Err(fs_err!(libc::ENOTDIR, "{name:?} is not a folder"));
        }
        self.ensure_empty(node.ino).await?;
        // The listing above may be stale by the time a DELETE arrives, and a DELETE takes the
        // folder with whatever another device moved in meanwhile: the remote deletes only if
        // the folder is still empty (ENOTEMPTY otherwise).
        match self.remote.delete_empty_folder(&node.entry.id).await {
            Ok(()) | Err(RemoteError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.forget_item(parent, &node);
        Ok(())
    }

    /// ENOTEMPTY unless folder `ino` has no children, asking the server (deletes there are
    /// recursive, so an rmdir must not trust a stale listing).
    async fn ensure_empty(&self, ino: u64) -> FsResult<()> {
        let node = self
            .inodes
            .get(ino)
            .ok_or_else(|| fs_err!(libc::ENOENT, "unknown inode {ino}"))?;
        let listed = self.remote.list(&node.entry.id).await?;
        let (children, _) = self.inodes.set_listing(ino, listed, self.valid_until());
        if !children.is_empty() {
            return Err(fs_err!(libc::ENOTEMPTY, "folder is not empty"));
        }
        Ok(())
    }

    /// Rename `name` in `parent` to `new_name` in `new_parent`. `noreplace`: fail with EEXIST
    /// rather than replace (RENAME_NOREPLACE).
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        noreplace: bool,
    ) -> FsResult<()> {
        self.wb()?;
        let name = super::fs::existing_name(name)?;
        let new_name = self.new_name(new_parent, new_name)?;
        let source = self.child(parent, name).await?;
        let dest_dir = self.dir_node(new_parent)?;
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        if source.entry.kind == EntryKind::Directory && self.is_below(new_parent, source.ino) {
            return Err(fs_err!(libc::EINVAL, "cannot move a folder into itself"));
        }
        let target = match self.child(new_parent, new_name).await {
            // Where names ignore case, `mv a.txt A.txt` finds the file itself: a rename, no target.
            Ok(t) if t.ino == source.ino => None,
            Ok(t) => Some(t),
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => return Err(e),
        };
        if let Some(t) = &target {
            if noreplace {
                return Err(fs_err!(libc::EEXIST, "{new_name:?} exists"));
            }
            match (source.entry.kind, t.entry.kind) {
                (EntryKind::Directory, EntryKind::File) => return Err(fs_err!(libc::ENOTDIR, "target is a file")),
                (EntryKind::File, EntryKind::Directory) => return Err(fs_err!(libc::EISDIR, "target is a folder")),
                (EntryKind::Directory, EntryKind::Directory) => self.ensure_empty(t.ino).await?,
                _ => {}
            }
        }
        let source = loop {
            self.settle_uploads_at(source.ino).await?;
            let gate = self.write_gate.write().await;
            let now = self.inodes.get(source.ino).unwrap_or_else(|| source.clone());
            if Self::on_server(&now) {
                break now;
            }
            if now.local.as_ref().map(|l| l.generation.is_some()).unwrap_or(false) {
                // A close handed it to the queue meanwhile: let that upload land first.
                drop(gate);
                continue;
            }
            // Never handed to the queue: only our view moves, and its upload will go to the new
            // place. The gate keeps a concurrent close from queueing it under the old name.
            self.inodes.with_node(source.ino, |n| {
                n.parent = new_parent;
                n.entry.name = new_name.to_string();
            });
            drop(gate);
            if let Some(t) = target {
                self.delete_node(new_parent, t).await?;
            }
            return Ok(());
        };
        if let Some(t) = &target {
            if let (Some(wb), Some(local)) = (self.writeback.get(), &t.local) {
                wb.queue.settle(&local.key).await;
                wb.queue.cancel(&local.key);
            }
        }
        let moved = self
            .remote
            .rename(&source.entry.id, &dest_dir.entry.id, new_name, target.is_some())
            .await?;
        if let Some(t) = &target {
            self.forget_item(new_parent, t);
        }
        let old_id = source.entry.id.clone();
        if source.entry.kind == EntryKind::Directory && old_id != moved.id {
            let (from, to) = (old_id.clone(), moved.id.clone());
            let remote = self.remote.clone();
            self.inodes.rekey_below(move |id| remote.moved_id(id, &from, &to));
        }
        self.inodes.listing_remove(parent, name);
        self.inodes.listing_insert(new_parent, moved.clone());
        self.inodes.touch_dir(parent);
        self.inodes.touch_dir(new_parent);
        let valid = self.valid_until();
        self.inodes.with_node(source.ino, move |n| {
            n.parent = new_parent;
            if let Some(local) = n.local.as_mut() {
                // Pending changes now replace the moved item.
                local.base_version = moved.version.clone();
                local.item = NodeId::Remote(moved.id.clone());
                n.entry.id = moved.id.clone();
                n.entry.name = moved.name.clone();
            } else {
                n.entry = moved;
                n.attr_valid_until = valid;
            }
        });
        Ok(())
    }

    /// Whether folder `ino` is `ancestor` or below it.
    fn is_below(&self, ino: u64, ancestor: u64) -> bool {
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ancestor {
                return true;
            }
            match self.inodes.get(cur) {
                Some(n) if n.ino != n.parent => cur = n.parent,
                _ => return false,
            }
        }
        false
    }

    /// The upload queue reports: keep our view of the file in step with the server. Returns the
    /// inode whose name now holds another device's version (ours went up as a conflict copy and
    /// nothing local is left): see [`DriveFs::take_server_version`].
    fn on_upload_event(&self, ev: UploadEvent) -> Option<u64> {
        let UploadEvent::Uploaded {
            record,
            entry,
            conflict_copy,
            generation,
        } = ev
        else {
            return None;
        };
        let ino = self.inodes.by_local_key(&record.key)?;
        let valid = self.valid_until();
        let parent = self.inodes.get(ino).map(|n| n.parent);
        let settled = self
            .inodes
            .with_node(ino, |n| {
                let Some(local) = n.local.as_mut() else {
                    return Settled::Kept;
                };
                local.note_landed(generation, &entry, conflict_copy);
                if !conflict_copy {
                    n.entry.id = entry.id.clone();
                }
                settle(n, valid)
            })
            .unwrap_or(Settled::Kept);
        if let (Some(parent), false) = (parent, conflict_copy) {
            let mut shown = entry;
            if let Some(n) = self.inodes.get(ino) {
                // The listing shows what the node shows: our size and time.
                shown.size = n.entry.size;
                shown.mtime = n.entry.mtime;
            }
            self.inodes.listing_insert(parent, shown);
        }
        (settled == Settled::Conflicted).then_some(ino)
    }

    /// Our version of `ino` went up as a conflict copy: its name holds the other device's version,
    /// which the change feed reported while ours was in flight (and the applier skipped, the local
    /// edit winning) and will not report again. Take the server's current state of the item
    /// through the applier, so that the kernel, the folder's listing and the cache forget ours.
    async fn take_server_version(&self, ino: u64) {
        let Some(node) = self.inodes.get(ino).filter(|n| n.local.is_none()) else {
            return;
        };
        let Some(parent) = self.inodes.get(node.parent) else {
            return;
        };
        let change = match self.remote.stat(&node.entry.id).await {
            Ok(entry) => Change::Upsert {
                parent: parent.entry.id,
                entry,
            },
            Err(RemoteError::NotFound) => Change::Deleted { id: node.entry.id },
            Err(e) => {
                // The TTL brings it back in time.
                tracing::debug!(ino, error = %e, "cannot read the server's version after a conflict copy");
                return;
            }
        };
        self.apply_changes(ChangeBatch::Changes(vec![change]));
    }
}

/// Whether `path` names a staged file of this mount (for tests).
pub fn is_staged(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.starts_with("staged-"))
        .unwrap_or(false)
}
