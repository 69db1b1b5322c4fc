//! `cloudmount install`: put the binary where mount.fuse3 finds it (`PATH`) and link the helper
//! mount(8) runs for `-t fuse.cloudmount`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the binary lives at run time.
pub const BIN: &str = "/usr/local/bin/cloudmount";
/// The helper mount(8) runs for type `fuse.cloudmount`.
pub const HELPER: &str = "/sbin/mount.fuse.cloudmount";

/// `path` (absolute) placed under `prefix`.
fn under(prefix: &Path, path: &str) -> PathBuf {
    prefix.join(path.trim_start_matches('/'))
}

/// Copy `exe` to PREFIX/usr/local/bin/cloudmount (atomically, so a running copy is not disturbed)
/// and point PREFIX/sbin/mount.fuse.cloudmount at /usr/local/bin/cloudmount. Returns what was
/// installed, for people.
pub fn install(exe: &Path, prefix: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let bin = under(prefix, BIN);
    let helper = under(prefix, HELPER);
    for dir in [bin.parent(), helper.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = bin.with_extension("new");
    let same = exe.canonicalize().ok() == bin.canonicalize().ok();
    if !same {
        std::fs::copy(exe, &tmp).with_context(|| format!("cannot copy {} to {}", exe.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &bin).with_context(|| format!("cannot install {}", bin.display()))?;
    }
    let link_tmp = helper.with_extension("new");
    let _ = std::fs::remove_file(&link_tmp);
    std::os::unix::fs::symlink(BIN, &link_tmp).with_context(|| format!("cannot create {}", link_tmp.display()))?;
    std::fs::rename(&link_tmp, &helper).with_context(|| format!("cannot install {}", helper.display()))?;
    Ok(vec![
        format!("installed {}", bin.display()),
        format!("linked {} -> {BIN}", helper.display()),
    ])
}
