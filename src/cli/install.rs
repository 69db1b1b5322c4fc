//! `cloudmount install` and `cloudmount uninstall`: put the binary where mount.fuse3 finds it
//! (`PATH`), link the helper mount(8) runs for `-t fuse.cloudmount`, install the man pages
//! (generated from the command-line definitions), and take exactly that away again.
//!
//! Install writes a manifest of what it put in place, folders it had to create included, so that
//! uninstall removes those and nothing else (a folder only when it is empty again).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the binary lives at run time.
pub const BIN: &str = "/usr/local/bin/cloudmount";
/// The helper mount(8) runs for type `fuse.cloudmount`.
pub const HELPER: &str = "/sbin/mount.fuse.cloudmount";
/// Section 1 man pages.
pub const MAN_DIR: &str = "/usr/local/share/man/man1";
/// The list of what install put in place.
pub const MANIFEST: &str = "/usr/local/share/cloudmount/installed";

/// `path` (absolute) placed under `prefix`.
fn under(prefix: &Path, path: &str) -> PathBuf {
    prefix.join(path.trim_start_matches('/'))
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placed {
    /// A file we wrote.
    File(PathBuf),
    /// A symlink we made, and where it points.
    Link(PathBuf),
    /// A folder that did not exist before.
    Dir(PathBuf),
}

impl Placed {
    fn line(&self) -> String {
        match self {
            Placed::File(p) => format!("file {}", p.display()),
            Placed::Link(p) => format!("link {}", p.display()),
            Placed::Dir(p) => format!("dir {}", p.display()),
        }
    }

    fn parse(line: &str) -> Option<Placed> {
        let (kind, path) = line.split_once(' ')?;
        let path = PathBuf::from(path);
        match kind {
            "file" => Some(Placed::File(path)),
            "link" => Some(Placed::Link(path)),
            "dir" => Some(Placed::Dir(path)),
            _ => None,
        }
    }
}

fn read_manifest(path: &Path) -> Vec<Placed> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter_map(Placed::parse).collect())
        .unwrap_or_default()
}

/// Create `dir` and its missing parents, noting each one created in `placed`.
fn create_dirs(dir: &Path, placed: &mut Vec<Placed>) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    for p in missing.into_iter().rev() {
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        placed.push(Placed::Dir(p));
    }
    Ok(())
}

/// The man pages: `cloudmount.1` and one per subcommand (`cloudmount-mount.1`, …), from the
/// same definitions as `--help`.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    use clap::CommandFactory;
    let cmd = super::Cli::command();
    let mut pages = Vec::new();
    let mut top = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut top)?;
    pages.push(("cloudmount.1".to_string(), top));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("cloudmount-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}

/// Write `bytes` to `path` through a temporary file and a rename (a running copy is not
/// disturbed), with `mode`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot install {}", path.display()))
}

/// Copy `exe` to PREFIX/usr/local/bin/cloudmount, point PREFIX/sbin/mount.fuse.cloudmount at
/// /usr/local/bin/cloudmount, write the man pages to PREFIX/usr/local/share/man/man1, and list
/// all of it in the manifest. Returns what was installed, for people.
pub fn install(exe: &Path, prefix: &Path) -> Result<Vec<String>> {
    let manifest = under(prefix, MANIFEST);
    // A second install keeps the first one's list (its folders were created by us too).
    let mut placed = read_manifest(&manifest);
    let note = |p: Placed, placed: &mut Vec<Placed>| {
        if !placed.contains(&p) {
            placed.push(p);
        }
    };
    let bin = under(prefix, BIN);
    let helper = under(prefix, HELPER);
    let man = under(prefix, MAN_DIR);
    let mut created = Vec::new();
    for dir in [bin.parent(), helper.parent(), Some(man.as_path()), manifest.parent()]
        .into_iter()
        .flatten()
    {
        create_dirs(dir, &mut created)?;
    }
    for d in created {
        note(d, &mut placed);
    }
    let same = exe.canonicalize().ok() == bin.canonicalize().ok();
    if !same {
        let bytes = std::fs::read(exe).with_context(|| format!("cannot read {}", exe.display()))?;
        write_atomically(&bin, &bytes, 0o755)?;
    }
    note(Placed::File(bin.clone()), &mut placed);
    let link_tmp = helper.with_extension("new");
    let _ = std::fs::remove_file(&link_tmp);
    std::os::unix::fs::symlink(BIN, &link_tmp).with_context(|| format!("cannot create {}", link_tmp.display()))?;
    std::fs::rename(&link_tmp, &helper).with_context(|| format!("cannot install {}", helper.display()))?;
    note(Placed::Link(helper.clone()), &mut placed);
    let pages = man_pages()?;
    for (name, page) in &pages {
        let p = man.join(name);
        write_atomically(&p, page, 0o644)?;
        note(Placed::File(p), &mut placed);
    }
    let text: String = placed.iter().map(|p| p.line() + "\n").collect();
    write_atomically(&manifest, text.as_bytes(), 0o644)?;
    Ok(vec![
        format!("installed {}", bin.display()),
        format!("linked {} -> {BIN}", helper.display()),
        format!(
            "installed {} man pages in {} (`man cloudmount-mount`)",
            pages.len(),
            man.display()
        ),
        format!("`cloudmount uninstall{}` takes them away again", prefix_flag(prefix)),
    ])
}

fn prefix_flag(prefix: &Path) -> String {
    if prefix == Path::new("/") {
        String::new()
    } else {
        format!(" --prefix {}", super::shell_quote(&prefix.to_string_lossy()))
    }
}

/// Remove what `install` put under `prefix` (by its manifest), and nothing else: the helper link
/// only while it points at our binary, folders only once empty. Returns what was removed.
pub fn uninstall(prefix: &Path) -> Result<Vec<String>> {
    let manifest = under(prefix, MANIFEST);
    let mut placed = read_manifest(&manifest);
    if placed.is_empty() {
        // Installed by a version without a manifest: its two files, if they are ours.
        placed = vec![Placed::File(under(prefix, BIN)), Placed::Link(under(prefix, HELPER))];
    }
    let mut said = Vec::new();
    let remove = |p: &Path, said: &mut Vec<String>| -> Result<()> {
        match std::fs::remove_file(p) {
            Ok(()) => {
                said.push(format!("removed {}", p.display()));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    };
    for p in &placed {
        match p {
            Placed::File(f) => remove(f, &mut said)?,
            Placed::Link(l) => match std::fs::read_link(l) {
                Ok(target) if target == Path::new(BIN) => remove(l, &mut said)?,
                Ok(target) => said.push(format!(
                    "left {} alone: it points at {}, not {BIN}",
                    l.display(),
                    target.display()
                )),
                Err(_) => {}
            },
            Placed::Dir(_) => {}
        }
    }
    remove(&manifest, &mut said)?;
    // Folders we created, deepest first, while empty.
    let mut dirs: Vec<&PathBuf> = placed
        .iter()
        .filter_map(|p| match p {
            Placed::Dir(d) => Some(d),
            _ => None,
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if std::fs::remove_dir(d).is_ok() {
            said.push(format!("removed {}/", d.display()));
        }
    }
    if said.is_empty() {
        said.push(format!("nothing of cloudmount is installed under {}", prefix.display()));
    }
    Ok(said)
}
