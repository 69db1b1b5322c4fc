//! The fuser adapter: decodes each kernel request, hands it to the [`DriveFs`] core on a tokio task
//! (so the event loop never waits on the network), and replies from that task. It holds no state and
//! makes no decisions of its own beyond the mapping of types and errnos.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::remote::EntryKind;
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
    Errno::from_i32(e.errno())
}

/// Log an error at a level that fits it (a missing name is routine) and turn it into an errno.
fn failed(op: &str, e: FsError) -> Errno {
    if e.is_not_found() {
        tracing::trace!(op, error = %e, "failed");
    } else {
        tracing::warn!(op, errno = e.errno(), error = %e, "failed");
    }
    errno(&e)
}

fn file_attr(a: &Attr) -> FileAttr {
    let kind = match a.kind {
        EntryKind::Directory => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
    };
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
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::Directory => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
    }
}

impl FuseAdapter {
    /// Answer a request that would change the remote: the core decides the errno (EROFS on a
    /// read-only mount).
    fn refuse_change(&self, op: &str) -> Errno {
        match self.fs.check_writable() {
            Err(e) => {
                tracing::debug!(op, error = %e, "refused");
                errno(&e)
            }
            Ok(()) => Errno::ENOTSUP,
        }
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for readdirplus so `ls -l` costs one listing, not one lookup per entry. Never ask for
        // the writeback cache: the kernel would then ignore sizes the server reports.
        let wanted = fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            tracing::debug!(?unsupported, "kernel lacks some capabilities");
        }
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.rt.spawn(async move {
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
                    });
                    attr.ino = INodeNo(0);
                    reply.entry_with_ttls(&Duration::ZERO, &ttl, &attr, Generation(0))
                }
                Err(e) => reply.error(failed("lookup", e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.getattr(ino.0).await {
                Ok((attr, ttl)) => reply.attr(&ttl, &file_attr(&attr)),
                Err(e) => reply.error(failed("getattr", e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(self.refuse_change("setattr"));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse_change("mknod"));
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(self.refuse_change("mkdir"));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_change("unlink"));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_change("rmdir"));
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(self.refuse_change("symlink"));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse_change("rename"));
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(self.refuse_change("link"));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.open(ino.0, flags.0).await {
                Ok(o) => {
                    let f = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(o.fh), f)
                }
                Err(e) => reply.error(failed("open", e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(failed("read", e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse_change("write"));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is ever pending on a read-only handle.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Read-only handles hold nothing to write back; the data on the server is already durable.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(failed("opendir", e)),
            }
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let result = self.fs.readdir(fh.0, offset, |item| {
            reply.add(INodeNo(item.ino), item.next_offset, file_type(item.kind), item.name)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed("readdir", e)),
        }
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
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
            Err(e) => reply.error(failed("readdirplus", e)),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
                ),
                Err(e) => reply.error(failed("statfs", e)),
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
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(match self.fs.check_writable() {
            Err(e) if e.errno() == libc::EROFS => Errno::EROFS,
            _ => Errno::ENOTSUP,
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(match self.fs.check_writable() {
            Err(e) if e.errno() == libc::EROFS => Errno::EROFS,
            _ => Errno::ENOTSUP,
        });
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(self.refuse_change("create"));
    }
}
