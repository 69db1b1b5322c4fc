//! Reference-model property test of the filesystem core: random sequences of changes made on the
//! remote "by another device", interleaved with walks and reads through the core. With a TTL of
//! zero the core must always show exactly what the remote holds: same names, kinds, sizes and
//! bytes, at any offset.

use cloudmount::fuse::ToErrno;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use cloudmount::remote::memory::MemoryRemote;
use cloudmount::remote::EntryKind;
use cloudmount::vfs::{DriveFs, FsConfig};
use proptest::prelude::*;

const DIRS: [&str; 3] = ["", "d", "d/e"];
const FILES: [&str; 3] = ["f0", "f 1", "f#2"];

fn path(dir: usize, file: usize) -> String {
    let (d, f) = (DIRS[dir % 3], FILES[file % 3]);
    if d.is_empty() {
        f.to_string()
    } else {
        format!("{d}/{f}")
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    /// Another device writes a file.
    RemotePut {
        dir: usize,
        file: usize,
        len: usize,
        seed: u8,
    },
    /// Another device deletes a file.
    RemoteRemove { dir: usize, file: usize },
    /// Read a range of a file through the core.
    Read {
        dir: usize,
        file: usize,
        offset: u64,
        len: u32,
    },
    /// Walk the whole tree through the core and compare with the model.
    Walk,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..3usize, 0..20_000usize, any::<u8>()).prop_map(|(dir, file, len, seed)| Op::RemotePut {
            dir,
            file,
            len,
            seed
        }),
        (0..3usize, 0..3usize).prop_map(|(dir, file)| Op::RemoteRemove { dir, file }),
        (0..3usize, 0..3usize, 0..25_000u64, 0..10_000u32).prop_map(|(dir, file, offset, len)| Op::Read {
            dir,
            file,
            offset,
            len
        }),
        Just(Op::Walk),
    ]
}

/// Resolve `path` through the core by successive lookups.
async fn resolve(fs: &DriveFs, path: &str) -> Result<u64, i32> {
    let mut ino = 1;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        ino = fs.lookup(ino, OsStr::new(seg)).await.map_err(|e| e.errno())?.attr.ino;
    }
    Ok(ino)
}

/// Every file under `ino`, by path, with its bytes, read through the core.
async fn walk(fs: &DriveFs, ino: u64, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    let fh = fs.opendir(ino).await.unwrap();
    let mut names = Vec::new();
    fs.readdir(fh, 2, |item| {
        names.push((item.name.to_string(), item.kind));
        false
    })
    .unwrap();
    fs.releasedir(fh);
    for (name, kind) in names {
        let child = fs.lookup(ino, OsStr::new(&name)).await.unwrap();
        assert_eq!(child.attr.kind, kind);
        let p = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match kind {
            EntryKind::Directory => Box::pin(walk(fs, child.attr.ino, &p, out)).await,
            EntryKind::File => {
                let h = fs.open(child.attr.ino, libc::O_RDONLY).await.unwrap().fh;
                let data = fs.read(h, 0, u32::MAX).await.unwrap();
                fs.release(h).await.unwrap();
                assert_eq!(data.len() as u64, child.attr.size, "{p}: size and content agree");
                out.insert(p, data.to_vec());
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let remote = Arc::new(MemoryRemote::new());
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Folders exist from the start so files and folders never trade places.
    remote.put_dir("d/e");
    let cfg = FsConfig {
        attr_ttl: Duration::ZERO,
        negative_ttl: Duration::ZERO,
        block_size: 4096,
        cache_bytes: 16 * 4096,
        max_prefetch_bytes: 4 * 4096,
        ..FsConfig::default()
    };
    let fs = DriveFs::new(remote.clone(), cfg).await.unwrap();
    for op in ops {
        match op {
            Op::RemotePut { dir, file, len, seed } => {
                let data = bytes(len, seed);
                remote.put_file(&path(dir, file), data.clone());
                model.insert(path(dir, file), data);
            }
            Op::RemoteRemove { dir, file } => {
                remote.remove(&path(dir, file));
                model.remove(&path(dir, file));
            }
            Op::Read { dir, file, offset, len } => {
                let p = path(dir, file);
                match (resolve(&fs, &p).await, model.get(&p)) {
                    (Ok(ino), Some(want)) => {
                        let h = fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
                        let got = fs.read(h, offset, len).await.unwrap();
                        fs.release(h).await.unwrap();
                        let s = (offset as usize).min(want.len());
                        let e = (offset as usize + len as usize).min(want.len());
                        assert_eq!(&got[..], &want[s..e], "{p}: {len} bytes at {offset}");
                    }
                    (Err(errno), None) => assert_eq!(errno, libc::ENOENT),
                    (got, want) => panic!("{p}: core says {got:?}, model has {:?} bytes", want.map(|w| w.len())),
                }
            }
            Op::Walk => {
                let mut seen = BTreeMap::new();
                walk(&fs, 1, "", &mut seen).await;
                assert_eq!(seen, model, "the tree through the core equals the model");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_core_always_shows_what_the_remote_holds(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
