//! The mount's local metadata store: what the remote cannot keep of an item's [`Meta`] (mode and
//! owner on OneDrive and on WebDAV servers without dead properties, link targets read from link
//! files), keyed by item id, in the state directory, so the same machine sees it after a remount.
//!
//! Durable like the upload journal: a change is on disk before [`MetaStore::set`] returns. The
//! store is two files in its own folder (0700; files 0600, whatever the umask):
//! - `meta.json`, a snapshot of every item, replaced whole by writing `meta.json.tmp`, fsync,
//!   rename, fsync of the folder: after a crash it is the old snapshot or the new one, never a mix;
//! - `meta.log`, one JSON line per change since that snapshot, appended and fsynced (`set`,
//!   `remove`, `move`), each with a sequence number. On open, lines numbered at or below the
//!   snapshot's are skipped (a crash between a rewrite and the log's truncation leaves them), so
//!   no change applies twice; a torn last line (a crash mid-append) is dropped.
//!
//! When the log holds more lines than there are items (and at least [`COMPACT_MIN`]), the
//! snapshot is rewritten and the log emptied; so is it at every open. The store is bounded: a
//! change that would take it past its byte budget ([`DEFAULT_MAX_BYTES`]) fails with
//! [`MetaStoreError::Full`] and changes nothing. A snapshot that cannot be read is moved aside
//! (`meta.json.corrupt`) and reported; the mount then starts with an empty store rather than not
//! at all (what is lost is shown as the defaults again).
//!
//! Ids are opaque, except for [`MetaStore::move_path`], which is for remotes whose ids are paths
//! (WebDAV): it carries an item and everything below it to a new path.
//!
//! One lock serialises the store's own file writes (the order of the log must be the order of the
//! map); callers hold none of theirs while calling, and call from a blocking context.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::private_fs;
use crate::remote::Meta;

/// Default byte budget of the store: ids and values together, as JSON (about 200,000 items with
/// mode, owner and times).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Longest item id kept (longer ids are refused, not cut).
pub const MAX_ID_BYTES: usize = 4096;
/// The log is compacted into the snapshot once it holds more lines than this and than items.
pub const COMPACT_MIN: usize = 1024;

const SNAPSHOT: &str = "meta.json";
const SNAPSHOT_TMP: &str = "meta.json.tmp";
const SNAPSHOT_CORRUPT: &str = "meta.json.corrupt";
const LOG: &str = "meta.log";
/// Version of the files' format; a snapshot of another version is set aside, not misread.
const FORMAT: u32 = 1;

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaStoreError {
    /// Reading or writing the store's files failed.
    #[error("metadata store I/O: {0}")]
    Io(#[from] io::Error),
    /// The change would take the store past its budget.
    #[error("the metadata store is full ({limit} bytes)")]
    Full {
        /// The budget, in bytes.
        limit: usize,
    },
    /// The id or the value cannot be kept.
    #[error("cannot keep this metadata: {0}")]
    Invalid(String),
}

/// The snapshot file.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// The last change it includes.
    seq: u64,
    items: BTreeMap<String, Meta>,
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    seq: u64,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Set { id: String, meta: Meta },
    Remove { id: String },
    Move { from: String, to: String },
}

struct Inner {
    items: BTreeMap<String, Meta>,
    /// Bytes the items take (ids and JSON values), for the budget.
    bytes: usize,
    /// The last change's number.
    seq: u64,
    log: File,
    log_lines: usize,
}

/// The local metadata store of one mount (see the module doc).
pub struct MetaStore {
    dir: PathBuf,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn item_bytes(id: &str, meta: &Meta) -> usize {
    id.len() + serde_json::to_vec(meta).map_or(0, |v| v.len())
}

/// Paths at or below `from` (`from` itself, `from/...`); everything for the root (`""`).
fn at_or_below(id: &str, from: &str) -> bool {
    from.is_empty() || id == from || id.strip_prefix(from).is_some_and(|rest| rest.starts_with('/'))
}

impl Inner {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Set { id, meta } => {
                self.bytes += item_bytes(&id, &meta);
                if let Some(old) = self.items.insert(id.clone(), meta) {
                    self.bytes -= item_bytes(&id, &old);
                }
            }
            Op::Remove { id } => {
                if let Some(old) = self.items.remove(&id) {
                    self.bytes -= item_bytes(&id, &old);
                }
            }
            Op::Move { from, to } => {
                let moved = self.take_tree(&from);
                // What was at the destination is replaced, as rename(2) replaces it.
                self.take_tree(&to);
                for (id, meta) in moved {
                    let new_id = format!("{to}{}", &id[from.len()..]);
                    self.apply(Op::Set { id: new_id, meta });
                }
            }
        }
    }

    fn take_tree(&mut self, from: &str) -> Vec<(String, Meta)> {
        let ids: Vec<String> = self
            .items
            .range(from.to_string()..)
            .take_while(|(id, _)| id.starts_with(from))
            .filter(|(id, _)| at_or_below(id, from))
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let meta = self.items.remove(&id)?;
                self.bytes -= item_bytes(&id, &meta);
                Some((id, meta))
            })
            .collect()
    }
}

impl MetaStore {
    /// Open (creating) the store in folder `dir`, with the default budget.
    pub fn open(dir: impl Into<PathBuf>) -> Result<MetaStore, MetaStoreError> {
        Self::open_with_limit(dir, DEFAULT_MAX_BYTES)
    }

    /// Open (creating) the store in folder `dir`, keeping at most `max_bytes` (see the module
    /// doc). Replays the log over the snapshot and compacts them.
    pub fn open_with_limit(dir: impl Into<PathBuf>, max_bytes: usize) -> Result<MetaStore, MetaStoreError> {
        let dir = dir.into();
        private_fs::make_private_dir(&dir)?;
        match fs::remove_file(dir.join(SNAPSHOT_TMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let snapshot = Self::read_snapshot(&dir)?;
        let mut items = BTreeMap::new();
        let mut bytes = 0;
        for (id, meta) in snapshot.items {
            bytes += item_bytes(&id, &meta);
            items.insert(id, meta);
        }
        let log = private_fs::open_private(private_fs::private_options().create(true).append(true), &dir.join(LOG))?;
        let mut inner = Inner {
            items,
            bytes,
            seq: snapshot.seq,
            log,
            log_lines: 0,
        };
        Self::replay(&dir, &mut inner)?;
        let store = MetaStore {
            dir,
            max_bytes,
            inner: Mutex::new(inner),
        };
        {
            let mut inner = store.lock();
            store.compact(&mut inner)?;
        }
        Ok(store)
    }

    fn read_snapshot(dir: &Path) -> Result<Snapshot, MetaStoreError> {
        let path = dir.join(SNAPSHOT);
        let empty = Snapshot {
            format: FORMAT,
            seq: 0,
            items: BTreeMap::new(),
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(empty),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) if s.format == FORMAT => Ok(s),
            other => {
                let why = match other {
                    Ok(s) => format!("format {} is not {FORMAT}", s.format),
                    Err(e) => e.to_string(),
                };
                let aside = dir.join(SNAPSHOT_CORRUPT);
                error!(store = %path.display(), moved_to = %aside.display(), error = %why,
                    "unreadable metadata store; starting without the modes, owners and times it held");
                fs::rename(&path, &aside)?;
                // Its log was relative to it: without the snapshot, its lines would apply to
                // nothing coherent.
                private_fs::create_private_file(&dir.join(LOG))?.sync_all()?;
                sync_dir(dir)?;
                Ok(empty)
            }
        }
    }

    /// Apply the log lines newer than the snapshot. A line that cannot be read is skipped with a
    /// warning, except the last, which a crash may have cut, and which is dropped silently.
    fn replay(dir: &Path, inner: &mut Inner) -> Result<(), MetaStoreError> {
        let file = File::open(dir.join(LOG))?;
        let lines: Vec<String> = BufReader::new(file).lines().collect::<io::Result<_>>().or_else(|e| {
            // Invalid UTF-8 (a torn or damaged line): read what can be read.
            warn!(error = %e, "the metadata log holds bytes that are not text");
            let raw = fs::read(dir.join(LOG))?;
            Ok::<_, io::Error>(String::from_utf8_lossy(&raw).lines().map(str::to_string).collect())
        })?;
        let count = lines.len();
        for (n, line) in lines.into_iter().enumerate() {
            match serde_json::from_str::<Record>(&line) {
                Ok(r) if r.seq > inner.seq => {
                    inner.seq = r.seq;
                    inner.apply(r.op);
                }
                Ok(_) => {}
                Err(_) if n + 1 == count => {}
                Err(e) => warn!(line = n + 1, error = %e, "skipping an unreadable line of the metadata log"),
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The folder holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What is kept for `id` (nothing: [`Meta::default`]).
    pub fn get(&self, id: &str) -> Meta {
        self.lock().items.get(id).cloned().unwrap_or_default()
    }

    /// Number of items with something kept.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep `meta` for `id`, replacing what was kept (an empty `meta` removes it), durably.
    pub fn set(&self, id: &str, meta: &Meta) -> Result<(), MetaStoreError> {
        if id.len() > MAX_ID_BYTES {
            return Err(MetaStoreError::Invalid(format!(
                "an item id longer than {MAX_ID_BYTES} bytes"
            )));
        }
        if let Some(why) = meta.invalid() {
            return Err(MetaStoreError::Invalid(why));
        }
        if meta.is_empty() {
            return self.remove(id);
        }
        let mut inner = self.lock();
        let old = inner.items.get(id).map_or(0, |m| item_bytes(id, m));
        if inner.bytes - old + item_bytes(id, meta) > self.max_bytes {
            return Err(MetaStoreError::Full { limit: self.max_bytes });
        }
        self.append(
            &mut inner,
            Op::Set {
                id: id.to_string(),
                meta: meta.clone(),
            },
        )
    }

    /// Keep `meta`'s fields for `id` over what is kept ([`Meta::overlaid_with`]); returns the
    /// result.
    pub fn update(&self, id: &str, meta: &Meta) -> Result<Meta, MetaStoreError> {
        let merged = self.get(id).overlaid_with(meta);
        self.set(id, &merged)?;
        Ok(merged)
    }

    /// Forget `id` (nothing kept is not an error).
    pub fn remove(&self, id: &str) -> Result<(), MetaStoreError> {
        let mut inner = self.lock();
        if !inner.items.contains_key(id) {
            return Ok(());
        }
        self.append(&mut inner, Op::Remove { id: id.to_string() })
    }

    /// For remotes whose ids are paths: what was kept at `from` and below is now at `to` and
    /// below; what was at `to` and below is forgotten (the rename replaced it).
    pub fn move_path(&self, from: &str, to: &str) -> Result<(), MetaStoreError> {
        if from == to {
            return Ok(());
        }
        let mut inner = self.lock();
        let affected = inner
            .items
            .keys()
            .any(|id| at_or_below(id, from) || at_or_below(id, to));
        if !affected {
            return Ok(());
        }
        self.append(
            &mut inner,
            Op::Move {
                from: from.to_string(),
                to: to.to_string(),
            },
        )
    }

    /// Log `op` durably, then apply it; compact when the log has grown.
    fn append(&self, inner: &mut Inner, op: Op) -> Result<(), MetaStoreError> {
        let record = Record { seq: inner.seq + 1, op };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        inner.log.write_all(&line)?;
        inner.log.sync_data()?;
        inner.seq = record.seq;
        inner.log_lines += 1;
        inner.apply(record.op);
        if inner.log_lines > COMPACT_MIN.max(inner.items.len()) {
            self.compact(inner)?;
        }
        Ok(())
    }

    /// Write the snapshot (temporary file, fsync, rename, fsync of the folder), then empty the
    /// log. A crash between the two leaves log lines the snapshot already holds: their numbers
    /// are at or below its own, so they are skipped on open.
    fn compact(&self, inner: &mut Inner) -> Result<(), MetaStoreError> {
        let snapshot = Snapshot {
            format: FORMAT,
            seq: inner.seq,
            items: std::mem::take(&mut inner.items),
        };
        let written = serde_json::to_vec(&snapshot).map_err(io::Error::other);
        inner.items = snapshot.items;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            let mut f = private_fs::create_private_file(&tmp)?;
            f.write_all(&written?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(SNAPSHOT))?;
        sync_dir(&self.dir)?;
        inner.log.set_len(0)?;
        inner.log.sync_all()?;
        inner.log_lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode: Some(mode),
            uid: Some(1000),
            mtime: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 42)),
            ..Meta::default()
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn kept_across_reopen_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/meta");
        {
            let s = MetaStore::open(&dir).unwrap();
            assert!(s.is_empty());
            s.set("a", &meta(0o755)).unwrap();
            s.set("", &meta(0o700)).unwrap();
            s.set("b/c", &meta(0o600)).unwrap();
            let merged = s
                .update(
                    "a",
                    &Meta {
                        gid: Some(5),
                        link_target: Some("../x".into()),
                        ..Meta::default()
                    },
                )
                .unwrap();
            assert_eq!((merged.mode, merged.gid), (Some(0o755), Some(5)));
            s.remove("b/c").unwrap();
            s.remove("never-there").unwrap();
            s.set("d", &Meta::default()).unwrap();
            assert_eq!(s.len(), 2);
        }
        let s = MetaStore::open(&dir).unwrap();
        assert_eq!(s.get("a").gid, Some(5));
        assert_eq!(s.get("a").link_target.as_deref(), Some("../x"));
        assert_eq!(s.get("a").mtime, meta(0).mtime, "nanoseconds kept");
        assert_eq!(s.get(""), meta(0o700));
        assert!(s.get("b/c").is_empty());
        assert_eq!(s.len(), 2);
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join(SNAPSHOT)), 0o600);
        assert_eq!(mode_of(&dir.join(LOG)), 0o600);
    }

    #[test]
    fn every_change_is_durable_before_compaction() {
        // Changes are read back from the log alone (no compaction has run since open).
        let tmp = tempfile::tempdir().unwrap();
        let s = MetaStore::open(tmp.path()).unwrap();
        s.set("x", &meta(0o644)).unwrap();
        s.move_path("x", "y").unwrap();
        let log = fs::read_to_string(tmp.path().join(LOG)).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
        // A second store opened on the same files (as after a crash: the first is never closed).
        let again = MetaStore::open(tmp.path()).unwrap();
        assert_eq!(again.get("y"), meta(0o644));
        assert!(again.get("x").is_empty());
    }

    #[test]
    fn path_moves_carry_the_tree_and_replace_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let s = MetaStore::open(tmp.path()).unwrap();
        for (id, mode) in [("a", 1), ("a/x", 2), ("a/x/y", 3), ("ab", 4), ("b", 5), ("b/old", 6)] {
            s.set(id, &meta(mode)).unwrap();
        }
        s.move_path("a", "b").unwrap();
        let s = MetaStore::open(tmp.path()).unwrap();
        assert_eq!(s.get("b").mode, Some(1));
        assert_eq!(s.get("b/x").mode, Some(2));
        assert_eq!(s.get("b/x/y").mode, Some(3));
        assert!(s.get("b/old").is_empty(), "the replaced folder's items are gone");
        assert_eq!(s.get("ab").mode, Some(4), "a sibling sharing the prefix stays");
        assert!(s.get("a").is_empty() && s.get("a/x").is_empty());
        s.move_path("b/x", "c").unwrap();
        assert_eq!((s.get("c").mode, s.get("c/y").mode), (Some(2), Some(3)));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn a_torn_last_line_and_a_damaged_one_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = MetaStore::open(tmp.path()).unwrap();
            s.set("a", &meta(0o755)).unwrap();
            s.set("b", &meta(0o644)).unwrap();
        }
        let log = tmp.path().join(LOG);
        let text = fs::read_to_string(&log).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(1, "{\"seq\": garbage");
        let torn = r#"{"seq":3,"op":"set","id":"c","meta":{"mo"#;
        fs::write(&log, format!("{}\n{torn}", lines.join("\n"))).unwrap();
        let s = MetaStore::open(tmp.path()).unwrap();
        assert_eq!(s.get("a").mode, Some(0o755));
        assert_eq!(s.get("b").mode, Some(0o644));
        assert!(s.get("c").is_empty());
        // Open compacted everything into the snapshot and emptied the log.
        assert_eq!(fs::read(&log).unwrap().len(), 0);
        s.set("c", &meta(0o600)).unwrap();
        assert_eq!(MetaStore::open(tmp.path()).unwrap().get("c").mode, Some(0o600));
    }

    #[test]
    fn a_crash_during_a_rewrite_loses_nothing_and_applies_nothing_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let s = MetaStore::open(dir).unwrap();
            s.set("a", &meta(0o711)).unwrap();
            s.set("b", &meta(0o622)).unwrap();
        }
        // The rewrite in progress: a half-written temporary snapshot.
        fs::write(dir.join(SNAPSHOT_TMP), b"{\"format\":1,\"seq\":9,\"items\":{\"x\":").unwrap();
        {
            let s = MetaStore::open(dir).unwrap();
            assert_eq!(s.get("a").mode, Some(0o711), "the old snapshot stands");
            assert!(!dir.join(SNAPSHOT_TMP).exists());
            // `a` replaces `b`.
            s.move_path("a", "b").unwrap();
        }
        // A crash after the snapshot holding the move was renamed into place, before the log
        // was emptied: the log still holds the move.
        let log = fs::read(dir.join(LOG)).unwrap();
        assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), 1);
        {
            let s = MetaStore::open(dir).unwrap();
            assert_eq!((s.get("a").mode, s.get("b").mode), (None, Some(0o711)));
        }
        fs::write(dir.join(LOG), &log).unwrap();
        let s = MetaStore::open(dir).unwrap();
        // Applied again, the move would find no `a` and take `b` away with nothing in its place.
        assert_eq!(
            s.get("b").mode,
            Some(0o711),
            "the move was replayed over the snapshot holding it"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn an_unreadable_snapshot_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(SNAPSHOT), b"not json").unwrap();
        fs::write(tmp.path().join(LOG), br#"{"seq":1,"op":"remove","id":"a"}"#).unwrap();
        let s = MetaStore::open(tmp.path()).unwrap();
        assert!(s.is_empty());
        assert_eq!(fs::read(tmp.path().join(SNAPSHOT_CORRUPT)).unwrap(), b"not json");
        s.set("a", &meta(0o755)).unwrap();
        assert_eq!(MetaStore::open(tmp.path()).unwrap().get("a").mode, Some(0o755));
    }

    #[test]
    fn bounded_and_compacted() {
        let tmp = tempfile::tempdir().unwrap();
        let one = item_bytes("item-0000", &meta(0o644));
        let s = MetaStore::open_with_limit(tmp.path(), one * 10).unwrap();
        for i in 0..10 {
            s.set(&format!("item-{i:04}"), &meta(0o644)).unwrap();
        }
        assert!(matches!(
            s.set("item-0010", &meta(0o644)),
            Err(MetaStoreError::Full { .. })
        ));
        assert!(s.get("item-0010").is_empty(), "a refused change changes nothing");
        // Changing an existing item within the budget is fine; removing makes room.
        s.set("item-0000", &meta(0o600)).unwrap();
        s.remove("item-0001").unwrap();
        s.set("item-0010", &meta(0o644)).unwrap();
        // Many changes: the log is folded into the snapshot and stays short.
        for round in 0..(COMPACT_MIN as u32 + 10) {
            s.set("item-0002", &meta(round % 0o777)).unwrap();
        }
        let lines = fs::read_to_string(tmp.path().join(LOG)).unwrap().lines().count();
        assert!(lines <= COMPACT_MIN, "{lines} lines in the log");
        let again = MetaStore::open(tmp.path()).unwrap();
        assert_eq!(again.get("item-0002").mode, Some((COMPACT_MIN as u32 + 9) % 0o777));
        assert_eq!(again.len(), 10);
        // Refused outright: invalid values and over-long ids.
        let bad = Meta {
            mode: Some(0o170000),
            ..Meta::default()
        };
        assert!(matches!(s.set("x", &bad), Err(MetaStoreError::Invalid(_))));
        assert!(matches!(
            s.set(&"x".repeat(MAX_ID_BYTES + 1), &meta(0)),
            Err(MetaStoreError::Invalid(_))
        ));
    }
}
