//! Server-side test data: deterministic pseudo-random content and files that every test server can read.
//!
//! Apache runs as `www-data` while the tests run as root, so whatever is put into a served dir is made
//! world-readable explicitly (files 0644, folders 0755) instead of trusting the umask.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// xorshift64*: fast, deterministic, and good enough that a misplaced block never matches by chance.
pub struct XorShift(u64);

impl XorShift {
    /// A generator; different seeds give unrelated streams (0 is remapped, xorshift is stuck at 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` completely.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Creates the folder `rel` under `root` (and its missing parents), each world-readable.
pub fn put_dir(root: &Path, rel: &str) -> PathBuf {
    let mut dir = root.to_path_buf();
    for c in Path::new(rel).components() {
        let Component::Normal(name) = c else {
            panic!("put_dir wants a plain relative path, got {rel:?}")
        };
        dir.push(name);
        if !dir.is_dir() {
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    }
    dir
}

/// Opens `root/rel` for writing (truncating it), creating parent folders; the file is made world-readable.
fn create(root: &Path, rel: &str) -> (PathBuf, File) {
    let path = root.join(rel);
    if let Some(parent) = Path::new(rel).parent().filter(|p| !p.as_os_str().is_empty()) {
        put_dir(root, parent.to_str().expect("utf-8 path"));
    }
    let f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod 0644");
    (path, f)
}

/// Writes `data` to `root/rel` (server side) and returns the full path.
pub fn put_file(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let (path, mut f) = create(root, rel);
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Streams `len` pseudo-random bytes from `seed` into `root/rel` without holding them in memory.
pub fn put_random_file(root: &Path, rel: &str, seed: u64, len: u64) -> PathBuf {
    let (path, f) = create(root, rel);
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut rng = XorShift::new(seed);
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        rng.fill(&mut block[..n]);
        w.write_all(&block[..n]).expect("write random file");
        left -= n as u64;
    }
    w.flush().expect("flush random file");
    path
}

/// Sets a file's modification time to `secs_ago` seconds before now. Servers derive ETags and getlastmodified from
/// it, so a test can make a same-size rewrite visible as a new version.
pub fn set_mtime_ago(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    let f = File::options().write(true).open(path).expect("open to set mtime");
    f.set_modified(t).expect("set mtime");
}

/// Panics with the first differing offset (not a multi-megabyte dump) unless `actual == expected`.
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: content differs (got {} bytes, want {}; first difference at offset {first})",
        actual.len(),
        expected.len()
    );
}

/// The file at `actual` has exactly the bytes of the file at `expected`, compared 1 MiB at a time so
/// that files of hundreds of MiB need no more memory than that.
pub fn assert_same_files(actual: &Path, expected: &Path, what: &str) {
    use std::io::Read;
    let (mut a, mut e) = (fs::File::open(actual).unwrap(), fs::File::open(expected).unwrap());
    let len = e.metadata().unwrap().len();
    assert_eq!(a.metadata().unwrap().len(), len, "{what}: length");
    let (mut ba, mut be) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        a.read_exact(&mut ba[..n]).unwrap();
        e.read_exact(&mut be[..n]).unwrap();
        assert_same_bytes(&ba[..n], &be[..n], &format!("{what}: MiB {}", off >> 20));
        off += n as u64;
    }
}

/// A local tree of files with odd names, nested folders, an empty file and one of 5 MiB (over
/// OneDrive's 4 MiB simple-upload limit); returns each file's path relative to `root` and content.
pub fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (i, rel) in [
        "a.txt",
        "with space.txt",
        "hash#percent%plus+.bin",
        "é日本🎉.txt",
        "sub/one.txt",
        "sub/deeper/two.txt",
        "sub/deeper/empty.txt",
        "big/five-mib.bin",
    ]
    .iter()
    .enumerate()
    {
        let len = match *rel {
            "sub/deeper/empty.txt" => 0,
            "big/five-mib.bin" => 5 << 20,
            _ => 1000 + i * 777,
        };
        let data = random_bytes(100 + i as u64, len);
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        files.push((rel.to_string(), data));
    }
    files
}

/// Every file of `files` under `root` holds its content.
pub fn assert_tree(root: &Path, files: &[(String, Vec<u8>)], what: &str) {
    for (rel, data) in files {
        let got = fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{what}: {rel}: {e}"));
        assert_same_bytes(&got, data, &format!("{what}: {rel}"));
    }
}
