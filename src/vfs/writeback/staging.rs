//! The staging area: local files that hold content being written or waiting for upload, so a
//! file of any size is never held in memory.
//!
//! Staged files are named by a counter under one folder per mount. Before accepting bytes the area
//! checks that the disk keeps a minimum of free space, so a full cache disk gives the writer ENOSPC
//! at once instead of failing an upload that was already promised.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One mount's staging folder.
#[derive(Debug)]
pub struct StagingArea {
    dir: PathBuf,
    next: AtomicU64,
    min_free_bytes: u64,
    dir_syncs: AtomicU64,
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

impl StagingArea {
    /// Use (creating) `dir`, refusing new bytes when fewer than `min_free_bytes` would stay free.
    /// Staged files already there belong to the journal and are left alone.
    pub fn open(dir: impl Into<PathBuf>, min_free_bytes: u64) -> io::Result<StagingArea> {
        let dir = dir.into();
        crate::private_fs::create_private_dir_all(&dir)?;
        let mut highest = 0u64;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix("staged-"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                highest = highest.max(n);
            }
        }
        Ok(StagingArea {
            dir,
            next: AtomicU64::new(highest + 1),
            min_free_bytes,
            dir_syncs: AtomicU64::new(0),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new empty staged file, open for reading and writing.
    pub fn create(&self) -> io::Result<(PathBuf, File)> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("staged-{n}"));
            match crate::private_fs::open_private(
                crate::private_fs::private_options()
                    .read(true)
                    .write(true)
                    .create_new(true),
                &path,
            ) {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Make the folder's entries durable: a staged file created (or renamed) since is found
    /// after a power loss, as the journal that names it promises. Call before journaling.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()?;
        self.dir_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times [`sync_dir`](Self::sync_dir) made the folder durable (for tests).
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs.load(Ordering::Relaxed)
    }

    /// Check that `more` bytes can be written and still leave the minimum free. ENOSPC otherwise.
    pub fn reserve(&self, more: u64) -> io::Result<()> {
        let free = free_bytes(&self.dir)?;
        if free < more.saturating_add(self.min_free_bytes) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// A new staged file holding a copy of the first `len` bytes of `source` (used when content
    /// handed to the upload queue, which is then immutable, is written again). Reads through the
    /// open file, so it works even after the queue removed the old path.
    pub fn copy_of(&self, source: &File, len: u64) -> io::Result<(PathBuf, File)> {
        use std::os::unix::fs::FileExt;
        self.reserve(len)?;
        let (path, dst) = self.create()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let copied = (|| {
            while off < len {
                let want = buf.len().min((len - off) as usize);
                let n = source.read_at(&mut buf[..want], off)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "staged file shorter than recorded",
                    ));
                }
                dst.write_all_at(&buf[..n], off)?;
                off += n as u64;
            }
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((path, dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn files_are_new_and_numbering_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), 0).unwrap();
        let (a, mut fa) = area.create().unwrap();
        let (b, _) = area.create().unwrap();
        assert_ne!(a, b);
        fa.write_all(b"kept").unwrap();
        let again = StagingArea::open(dir.path(), 0).unwrap();
        let (c, _) = again.create().unwrap();
        assert!(
            c != a && c != b,
            "a restarted area never reuses a name the journal may hold"
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"kept");
    }

    #[test]
    fn copies_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), 0).unwrap();
        let (a, mut fa) = area.create().unwrap();
        fa.write_all(b"original").unwrap();
        let (_, mut fb) = area.copy_of(&fa, 8).unwrap();
        // Callers write at explicit offsets, as the core does.
        std::os::unix::fs::FileExt::write_all_at(&fb, b"+more", 8).unwrap();
        fb.rewind().unwrap();
        let mut s = String::new();
        fb.read_to_string(&mut s).unwrap();
        assert_eq!(s, "original+more");
        assert_eq!(std::fs::read(&a).unwrap(), b"original");
    }

    #[test]
    fn a_disk_without_the_minimum_free_gives_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let area = StagingArea::open(dir.path(), u64::MAX / 2).unwrap();
        let err = area.reserve(1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        let ok = StagingArea::open(dir.path(), 0).unwrap();
        ok.reserve(1).unwrap();
    }
}
