//! Files and folders only the mounting user can read.
//!
//! Everything cloudmount writes on the local disk (cached blocks, staged uploads, the upload
//! journal, change-feed positions, status files, logs) holds file content or names from the
//! drive. A mount with `--allow-other --umask 077` hides a file from other users, and those users
//! must not read the same bytes from our cache instead. So every folder we create is 0700 and every
//! file 0600, *whatever the process umask*: the mode is passed at creation (so no other user can
//! open the file in between) and set again when the umask took bits away (a umask of 0277 would
//! otherwise leave a folder we cannot write into).
//!
//! [`make_private_tree`] fixes what older versions left with the umask's modes (0755 / 0644); the
//! mount runs it over its own folders at startup.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every folder we create.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file we create.
pub const FILE_MODE: u32 = 0o600;

/// `mkdir -p` where each folder created is 0700. Folders that already exist are left as they are
/// (a parent such as `/var/cache` is not ours to change); see [`make_private_dir`] for ours.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a folder", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)),
        // Created meanwhile by another thread or process: fine, as with `create_dir_all`.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create folder `path` (and missing parents) as [`create_private_dir_all`] does, and make `path`
/// itself 0700 if it already existed with other modes: for folders that are ours alone.
pub fn make_private_dir(path: &Path) -> io::Result<()> {
    create_private_dir_all(path)?;
    restrict(path, &fs::symlink_metadata(path)?, DIR_MODE)
}

/// Make folder `path` 0700 if it exists and is ours; a missing one is left missing. For folders
/// older versions created on the way to ours (`~/.cache/cloudmount`), whose listing names remotes.
pub fn make_existing_dir_private(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => restrict(path, &meta, DIR_MODE),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options that create files 0600 (use like [`OpenOptions::new`], then [`open_private`]).
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Open `path` with `options` (from [`private_options`]) and make sure the file is 0600, also when
/// it existed before with a wider mode or the umask removed owner bits.
pub fn open_private(options: &OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if meta.mode() & 0o7777 != FILE_MODE && owned_by_us(&meta) {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// A new (or truncated) file, 0600: the private `File::create`.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    open_private(private_options().write(true).create(true).truncate(true), path)
}

/// Write `bytes` to a new (or truncated) 0600 file: the private `fs::write`.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create_private_file(path)?.write_all(bytes)
}

fn owned_by_us(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    meta.uid() == unsafe { libc::geteuid() }
}

/// chmod `path` to `mode` when its permission bits differ and it is ours (another user's file is
/// not ours to change, and chmod would fail anyway).
fn restrict(path: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<()> {
    if meta.mode() & 0o7777 != mode && owned_by_us(meta) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Make the tree at `root` private: every folder 0700 and every regular file 0600, `root`
/// included. Symbolic links are neither followed nor changed (we create none). A missing `root`
/// is fine (nothing to fix). Returns how many entries were changed; entries that cannot be
/// changed are logged and skipped, so one odd file does not stop a mount.
pub fn make_private_tree(root: &Path) -> io::Result<u64> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut changed = 0;
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        let want = if meta.is_dir() {
            DIR_MODE
        } else if meta.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        if meta.mode() & 0o7777 != want && owned_by_us(&meta) {
            match fs::set_permissions(&path, fs::Permissions::from_mode(want)) {
                Ok(()) => changed += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot make this file private"),
            }
        }
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read this folder to make it private");
                    continue;
                }
            };
            for entry in entries.flatten() {
                if let Ok(m) = entry.metadata() {
                    stack.push((entry.path(), m));
                }
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// Runs `f` with umask `mask`, restoring the old one: the modes must not depend on it.
    fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
        // SAFETY: umask only swaps the process's mask.
        let old = unsafe { libc::umask(mask) };
        let out = f();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        out
    }

    #[test]
    fn created_folders_and_files_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        // (Masks that take owner bits away are not tried: the umask is the whole test process's.)
        for (i, mask) in [0o000, 0o022].into_iter().enumerate() {
            let base = dir.path().join(format!("u{i}"));
            let deep = base.join("a/b/c");
            with_umask(mask, || {
                create_private_dir_all(&deep).unwrap();
                create_private_dir_all(&deep).unwrap();
                write_private_file(&deep.join("f"), b"x").unwrap();
                open_private(private_options().write(true).create_new(true), &deep.join("g")).unwrap();
            });
            for p in [&base, &base.join("a"), &base.join("a/b"), &deep] {
                assert_eq!(mode(p), 0o700, "{} with umask {mask:o}", p.display());
            }
            assert_eq!(mode(&deep.join("f")), 0o600);
            assert_eq!(mode(&deep.join("g")), 0o600);
        }
        // A file that is in the way is an error, not a folder.
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(create_private_dir_all(&file.join("x")).is_err());
        assert!(create_private_dir_all(&file).is_err());
    }

    #[test]
    fn existing_parents_are_left_alone_and_own_folders_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("shared");
        fs::create_dir(&parent).unwrap();
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir_all(&parent.join("ours")).unwrap();
        assert_eq!(mode(&parent), 0o755);
        assert_eq!(mode(&parent.join("ours")), 0o700);
        let old = parent.join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        make_private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        let older = parent.join("older");
        fs::create_dir(&older).unwrap();
        fs::set_permissions(&older, fs::Permissions::from_mode(0o755)).unwrap();
        make_existing_dir_private(&older).unwrap();
        assert_eq!(mode(&older), 0o700);
        make_existing_dir_private(&parent.join("missing")).unwrap();
        assert!(!parent.join("missing").exists());
    }

    #[test]
    fn trees_from_older_versions_are_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        fs::create_dir_all(root.join("blocks/item")).unwrap();
        fs::write(root.join("blocks/item/0.blk"), b"secret").unwrap();
        fs::write(root.join("lock"), b"").unwrap();
        for p in ["", "blocks", "blocks/item"] {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in ["blocks/item/0.blk", "lock"] {
            fs::set_permissions(root.join(p), fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).unwrap();
        let before = mode(Path::new("/etc/hostname"));
        assert_eq!(make_private_tree(&root).unwrap(), 5);
        for p in ["", "blocks", "blocks/item"] {
            assert_eq!(mode(&root.join(p)), 0o700);
        }
        for p in ["blocks/item/0.blk", "lock"] {
            assert_eq!(mode(&root.join(p)), 0o600);
        }
        assert_eq!(
            mode(Path::new("/etc/hostname")),
            before,
            "a symlink's target is not ours"
        );
        assert_eq!(make_private_tree(&root).unwrap(), 0);
        assert_eq!(make_private_tree(&dir.path().join("missing")).unwrap(), 0);
        // An existing file reopened through the helpers is made private too.
        let f = root.join("old.log");
        fs::write(&f, b"").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        open_private(private_options().append(true).create(true), &f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }
}
