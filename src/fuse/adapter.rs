//! The fuser adapter: decodes each kernel request, hands it to the [`DriveFs`] core on a tokio task
//! (so the event loop never waits on the network), and replies from that task. It holds no state and
//! makes no decisions of its own beyond the mapping of types and errnos.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{Instrument, Span};

use super::errno::{errno_of, is_expected};
use crate::remote::meta::MODE_BITS;
use crate::remote::{EntryKind, Meta};
use crate::vfs::{Attr, DriveFs, FsError};

/// The fuser `Filesystem` over a [`DriveFs`].
pub struct FuseAdapter {
    fs: Arc<DriveFs>,
    rt: Handle,
}

impl FuseAdapter {
    /// An adapter that runs the core's operations on runtime `rt`.
    pub fn new(fs: Arc<DriveFs>, rt: Handle) -> Self {
        FuseAdapter { fs, rt }
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(errno_of(e))
}

/// The span of one kernel request, entered by whatever serves it (the task it is handed to, or
/// the event loop for what is answered at once), so every log line of the core and the remote
/// below says which operation, inode, handle and process it was for. At WARN level, so it is
/// there whenever a warning is.
fn request_span(op: &'static str, req: &Request, ino: u64, fh: Option<u64>) -> Span {
    let span = tracing::warn_span!(
        "fuse",
        op = %op,
        unique = req.unique().0,
        ino,
        fh = tracing::field::Empty,
        pid = req.pid()
    );
    if let Some(fh) = fh {
        span.record("fh", fh);
    }
    span
}

/// `e` and every error under it, outermost first: `context: cause: root cause`.
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Log an error once, in the request's span, at a level that fits it (expected answers at debug,
/// failures at warn with their causes), and turn it into the errno the kernel gets.
fn failed(e: FsError) -> Errno {
    let errno = errno_of(&e);
    if is_expected(&e) {
        tracing::debug!(errno, error = %cause_chain(&e), "failed");
    } else {
        tracing::warn!(errno, error = %cause_chain(&e), "failed");
    }
    Errno::from_i32(errno)
}

fn file_attr(a: &Attr) -> FileAttr {
    let kind = file_type(a.kind, a.link);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        // The preferred I/O size: `cp` and other tools size their buffers by it, and every
        // request through FUSE costs a round trip, so bigger is faster (1 MiB is the largest
        // request the kernel sends us).
        blksize: PREFERRED_IO_SIZE,
        flags: 0,
    }
}

/// `st_blksize` of every item.
const PREFERRED_IO_SIZE: u32 = 1 << 20;

fn file_type(kind: EntryKind, link: bool) -> FileType {
    match kind {
        EntryKind::Directory => FileType::Directory,
        EntryKind::File if link => FileType::Symlink,
        EntryKind::File => FileType::RegularFile,
    }
}

impl FuseAdapter {
    /// Serve a request on the runtime, inside its span.
    fn spawn(&self, span: Span, work: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(work.instrument(span));
    }

    /// Answer an operation no remote can honour: EROFS on a read-only mount, else `unsupported`.
    fn refuse(&self, unsupported: Errno) -> Errno {
        let e = match self.fs.check_writable() {
            Err(e) => errno(&e),
            Ok(()) => unsupported,
        };
        tracing::debug!(?e, "refused");
        e
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for readdirplus so `ls -l` costs one listing, not one lookup per entry. Never ask for
        // the writeback cache: the kernel would then ignore sizes the server reports.
        // Atomic O_TRUNC: `open(O_TRUNC)` comes as one open that truncates its handle's content;
        // otherwise the kernel sends a truncate without a handle first, which uploads an empty
        // version on its own (and makes a conflict copy of its own when the server changed).
        let wanted = fuser::InitFlags::FUSE_DO_READDIRPLUS
            | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
            | fuser::InitFlags::FUSE_ATOMIC_O_TRUNC;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            tracing::debug!(?unsupported, "kernel lacks some capabilities");
        }
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let span = request_span("lookup", req, parent.0, None);
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            match fs.lookup(parent.0, &name).await {
                Ok(l) => reply.entry(&l.ttl, &file_attr(&l.attr), Generation(0)),
                // A negative entry: the kernel remembers the name is missing for the TTL.
                Err(e) if e.is_not_found() && !fs.config().negative_ttl.is_zero() => {
                    let ttl = fs.config().negative_ttl;
                    let mut attr = file_attr(&Attr {
                        ino: 0,
                        kind: EntryKind::File,
                        size: 0,
                        mtime: SystemTime::UNIX_EPOCH,
                        perm: 0,
                        nlink: 0,
                        uid: 0,
                        gid: 0,
                        link: false,
                    });
                    attr.ino = INodeNo(0);
                    reply.entry_with_ttls(&Duration::ZERO, &ttl, &attr, Generation(0))
                }
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let span = request_span("getattr", req, ino.0, fh.map(|f| f.0));
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.getattr(ino.0).await {
                Ok((attr, ttl)) => reply.attr(&ttl, &file_attr(&attr)),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let span = request_span("setattr", req, ino.0, fh.map(|f| f.0));
        let fs = self.fs.clone();
        self.spawn(span, async move {
            let result = async {
                let mut attr = None;
                if let Some(size) = size {
                    attr = Some(fs.truncate(ino.0, size, fh.map(|f| f.0)).await?);
                }
                let at = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let change = Meta {
                    mode: mode.map(|m| m & MODE_BITS),
                    uid,
                    gid,
                    mtime: mtime.map(at),
                    atime: atime.map(at),
                    ..Meta::default()
                };
                if !change.is_empty() {
                    attr = Some(fs.change_meta(ino.0, change).await?);
                }
                match attr {
                    Some(a) => Ok((a, fs.config().attr_ttl)),
                    None => fs.getattr(ino.0).await,
                }
            }
            .await;
            match result {
                Ok((attr, ttl)) => reply.attr(&ttl, &file_attr(&attr)),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let span = request_span("mknod", req, parent.0, None);
        if mode & libc::S_IFMT != libc::S_IFREG {
            // Devices, fifos and sockets cannot exist on a remote drive.
            return reply.error(span.in_scope(|| self.refuse(Errno::EPERM)));
        }
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            let made = async {
                let (looked, opened) = fs.create(parent.0, &name, libc::O_WRONLY | libc::O_EXCL).await?;
                fs.release(opened.fh).await?;
                Ok::<_, FsError>(looked)
            }
            .await;
            match made {
                Ok(l) => reply.entry(&l.ttl, &file_attr(&l.attr), Generation(0)),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let span = request_span("mkdir", req, parent.0, None);
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            let made = async {
                let mut l = fs.mkdir(parent.0, &name).await?;
                l.attr = fs.keep_created_mode(l.attr, mode).await?;
                Ok::<_, FsError>(l)
            }
            .await;
            match made {
                Ok(l) => reply.entry(&l.ttl, &file_attr(&l.attr), Generation(0)),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = request_span("unlink", req, parent.0, None);
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let span = request_span("rmdir", req, parent.0, None);
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            match fs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let span = request_span("symlink", req, parent.0, None);
        let (fs, name, target) = (self.fs.clone(), link_name.to_owned(), target.to_owned());
        self.spawn(span, async move {
            match fs.symlink(parent.0, &name, &target).await {
                Ok(l) => reply.entry(&l.ttl, &file_attr(&l.attr), Generation(0)),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let span = request_span("readlink", req, ino.0, None);
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let span = request_span("rename", req, parent.0, None);
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            // No remote can swap two items atomically.
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let (fs, name, newname) = (self.fs.clone(), name.to_owned(), newname.to_owned());
        self.spawn(span, async move {
            match fs.rename(parent.0, &name, newparent.0, &newname, noreplace).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn link(&self, req: &Request, ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        let span = request_span("link", req, ino.0, None);
        // link(2): EPERM when the filesystem does not support hard links.
        reply.error(span.in_scope(|| self.refuse(Errno::EPERM)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let span = request_span("open", req, ino.0, None);
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.open(ino.0, flags.0).await {
                Ok(o) => {
                    let f = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(o.fh), f)
                }
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let span = request_span("read", req, ino.0, Some(fh.0));
        if let Some(done) = span.in_scope(|| self.fs.try_read_now(fh.0, offset, size)) {
            match done {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(span.in_scope(|| failed(e))),
            }
            return;
        }
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let span = request_span("write", req, ino.0, Some(fh.0));
        // O_APPEND writes go at the end of the file as the core holds it. The kernel places them
        // at the size it last heard of, which is stale when the open took a version another
        // machine wrote within the TTL.
        let offset = match flags.0 & libc::O_APPEND {
            0 => offset,
            _ => self.fs.end_of_file(fh.0).unwrap_or(offset),
        };
        if let Some(done) = span.in_scope(|| self.fs.try_write_now(fh.0, offset, data)) {
            match done {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(span.in_scope(|| failed(e))),
            }
            return;
        }
        let (fs, data) = (self.fs.clone(), data.to_vec());
        self.spawn(span, async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let span = request_span("flush", req, ino.0, Some(fh.0));
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.flush(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let span = request_span("release", req, ino.0, Some(fh.0));
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.release(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let span = request_span("fsync", req, ino.0, Some(fh.0));
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.fsync(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let span = request_span("opendir", req, ino.0, None);
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let span = request_span("readdir", req, ino.0, Some(fh.0));
        let _entered = span.enter();
        let result = self.fs.readdir(fh.0, offset, |item| {
            reply.add(
                INodeNo(item.ino),
                item.next_offset,
                file_type(item.kind, item.link),
                item.name,
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(e)),
        }
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let span = request_span("readdirplus", req, ino.0, Some(fh.0));
        let _entered = span.enter();
        let result = self.fs.readdirplus(fh.0, offset, |item, attr, ttl| {
            reply.add(
                INodeNo(item.ino),
                item.next_offset,
                item.name,
                &ttl,
                &file_attr(attr),
                Generation(0),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(e)),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let span = request_span("statfs", req, ino.0, None);
        let fs = self.fs.clone();
        self.spawn(span, async move {
            match fs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
                ),
                Err(e) => reply.error(failed(e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        // Remotes keep no extended attributes.
        reply.error(Errno::ENOTSUP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        // Truthfully empty: a size probe gets 0, a read gets no names.
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let span = request_span("setxattr", req, ino.0, None);
        reply.error(span.in_scope(|| self.refuse(Errno::ENOTSUP)));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        let span = request_span("removexattr", req, ino.0, None);
        reply.error(span.in_scope(|| self.refuse(Errno::ENOTSUP)));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let span = request_span("create", req, parent.0, None);
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.spawn(span, async move {
            let made = async {
                let (mut l, o) = fs.create(parent.0, &name, flags).await?;
                match fs.keep_created_mode(l.attr, mode).await {
                    Ok(attr) => l.attr = attr,
                    Err(e) => {
                        let _ = fs.release(o.fh).await;
                        return Err(e);
                    }
                }
                Ok::<_, FsError>((l, o))
            }
            .await;
            match made {
                Ok((l, o)) => reply.created(
                    &l.ttl,
                    &file_attr(&l.attr),
                    Generation(0),
                    FileHandle(o.fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(failed(e)),
            }
        });
    }
}
