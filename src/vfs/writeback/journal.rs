//! The upload journal: the durable list of files whose content must still reach the server.
//!
//! A write that returned success must survive a crash, so a file is recorded here before
//! `close()` returns, and the record goes only once the server holds the bytes. Each record is one
//! small JSON file, written to a temporary name, flushed, renamed over its final name and the
//! folder flushed: after a crash a record is either the old one or the new one, never a torn mix.
//! Records are few (one per file waiting) and independent, which is why this needs no database.
//!
//! On start, leftover temporary files (a crash mid-write) are removed, and a record that cannot be
//! parsed (a disk that lied) is moved aside as `*.corrupt` and reported, never silently dropped.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a waiting upload stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum UploadState {
    /// Waiting for (or between) attempts.
    Pending,
    /// Given up on after errors that retrying cannot fix; kept for the user to see.
    Failed {
        /// Why.
        error: String,
    },
}

/// One file waiting to be uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Stable key of this record (also its file name).
    pub key: String,
    /// Item id of the folder it goes into.
    pub parent: String,
    /// Name in that folder.
    pub name: String,
    /// The staged content on local disk.
    pub staged: PathBuf,
    /// Content length, checked against the staged file before upload.
    pub size: u64,
    /// Modification time to keep, in nanoseconds since the epoch.
    pub mtime_ns: u128,
    /// The server version this content replaces (`None`: a new file).
    pub base_version: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last error, for `status`.
    pub last_error: Option<String>,
    /// Backend-specific resume state (for example a Graph upload session URL), set by the remote
    /// through a [`crate::remote::ResumeSlot`]; absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<serde_json::Value>,
    /// Our own earlier versions of this file that may have reached the server without the
    /// journal hearing of it (the daemon died while one was sent): a server copy equal to one of
    /// them is ours, not another device's change (see [`OwnVersion`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ours: Vec<OwnVersion>,
    /// The name of this content's conflict copy once one was chosen: journaled before the copy
    /// is sent, so a restart sends it there again instead of making a second copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_copy: Option<String>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: UploadState,
}

/// An earlier generation of a file that was (perhaps) being sent when newer content replaced it
/// in the queue: its staged file is kept until the server's version is known again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnVersion {
    /// Its staged content.
    pub staged: PathBuf,
    /// Its length.
    pub size: u64,
}

impl UploadRecord {
    /// The modification time as a `SystemTime`.
    pub fn mtime(&self) -> SystemTime {
        let secs = (self.mtime_ns / 1_000_000_000) as u64;
        let nanos = (self.mtime_ns % 1_000_000_000) as u32;
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// Nanoseconds since the epoch of `t` (times before the epoch become 0).
    pub fn mtime_ns_of(t: SystemTime) -> u128 {
        t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }
}

/// What [`Journal::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records in key order.
    pub records: Vec<UploadRecord>,
    /// Records that could not be read, moved aside under these names.
    pub corrupt: Vec<PathBuf>,
}

/// The journal of one mount, in its own folder.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
}

const RECORD_EXT: &str = "json";
const TMP_EXT: &str = "tmp";

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Open (creating) the journal in `dir`, clearing temporary files left by a crash.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Journal> {
        let dir = dir.into();
        crate::private_fs::create_private_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some(TMP_EXT) {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        sync_dir(&dir)?;
        Ok(Journal { dir })
    }

    /// The journal in `dir` as it stands, to read while its owner may be writing it (tests look
    /// at a live queue's journal this way): unlike [`Journal::open`], it removes nothing.
    #[cfg(test)]
    pub(super) fn inspect(dir: impl Into<PathBuf>) -> Journal {
        Journal { dir: dir.into() }
    }

    /// The folder holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str, ext: &str) -> io::Result<PathBuf> {
        if !valid_key(key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad journal key {key:?}"),
            ));
        }
        Ok(self.dir.join(format!("{key}.{ext}")))
    }

    /// Write `record` durably: when this returns `Ok`, it survives a crash or power loss.
    pub fn put(&self, record: &UploadRecord) -> io::Result<()> {
        let final_path = self.path_of(&record.key, RECORD_EXT)?;
        let tmp_path = self.path_of(&record.key, TMP_EXT)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        {
            let mut f = crate::private_fs::create_private_file(&tmp_path)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp_path, &final_path)?;
        sync_dir(&self.dir)
    }

    /// Remove the record `key` durably (the upload is done or abandoned). Removing a record that
    /// is not there is not an error.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(key, RECORD_EXT)?) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record, for resuming after a restart.
    pub fn load(&self) -> io::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(RECORD_EXT))
            .collect();
        paths.sort();
        for path in paths {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<UploadRecord>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(rec) if path.file_stem().and_then(|s| s.to_str()) == Some(rec.key.as_str()) => {
                    loaded.records.push(rec)
                }
                other => {
                    let why = other.err().unwrap_or_else(|| "key does not match the file name".into());
                    let aside = path.with_extension("corrupt");
                    tracing::error!(record = %path.display(), moved_to = %aside.display(), error = %why,
                        "unreadable upload journal record");
                    fs::rename(&path, &aside)?;
                    loaded.corrupt.push(aside);
                }
            }
        }
        if !loaded.corrupt.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(loaded)
    }
}

/// Delete a staged file, quietly when it is gone already.
fn remove_staged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove a staged file");
        }
    }
}

/// One change of the journal, in the order the queue decided it.
enum JournalOp {
    Put(Box<UploadRecord>),
    Remove(String),
    /// Nothing: done once every change handed over before it is.
    Barrier,
    /// Delete staged files no record names any more, once the records that named them are gone
    /// from the disk (a crash in between must not leave a record without its file).
    DeleteStaged(Vec<PathBuf>),
}

/// The thread that owns the journal's files: the queue decides changes under its lock and hands
/// them over here (a channel send, no disk I/O), and this thread writes them one after the other
/// in that order. So no lock is held across a journal fsync, and two changes of one record can
/// never land out of order.
pub struct JournalWriter {
    tx: std::sync::mpsc::Sender<(JournalOp, std::sync::mpsc::Sender<io::Result<()>>)>,
    dir: PathBuf,
}

/// A journal change handed to the [`JournalWriter`]: [`wait`](Written::wait) returns once it is on
/// disk (or with why it is not). Dropped unwaited, a failure is logged.
#[must_use = "a journal change is durable only once waited for"]
pub struct Written(std::sync::mpsc::Receiver<io::Result<()>>);

impl Written {
    /// Block until the change is durable. Never call with a lock held.
    pub fn wait(self) -> io::Result<()> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the journal writer stopped")))
    }

    /// [`wait`](Self::wait) from async code, off the runtime's threads.
    pub async fn done(self) -> io::Result<()> {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}

impl JournalWriter {
    /// Start the writer thread over `journal`.
    pub fn start(journal: Journal) -> io::Result<JournalWriter> {
        let dir = journal.dir().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel::<(JournalOp, std::sync::mpsc::Sender<io::Result<()>>)>();
        std::thread::Builder::new()
            .name("upload-journal".into())
            .spawn(move || {
                // Ends when the queue (the only sender) is dropped.
                for (op, done) in rx {
                    let (result, what) = match &op {
                        JournalOp::Put(record) => (journal.put(record), "update"),
                        JournalOp::Remove(key) => (journal.remove(key), "remove a record from"),
                        JournalOp::Barrier => (Ok(()), "reach"),
                        JournalOp::DeleteStaged(paths) => {
                            paths.iter().for_each(|p| remove_staged(p));
                            (Ok(()), "reach")
                        }
                    };
                    if let Err(std::sync::mpsc::SendError(Err(e))) = done.send(result) {
                        tracing::error!(error = %e, "cannot {what} the upload journal");
                    }
                }
            })?;
        Ok(JournalWriter { tx, dir })
    }

    /// The folder holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, op: JournalOp) -> Written {
        let (done, rx) = std::sync::mpsc::channel();
        let sent = self.tx.send((op, done.clone()));
        if sent.is_err() {
            let _ = done.send(Err(io::Error::other("the journal writer stopped")));
        }
        Written(rx)
    }

    /// Write `record` (after every change handed over before it).
    pub fn put(&self, record: &UploadRecord) -> Written {
        self.send(JournalOp::Put(Box::new(record.clone())))
    }

    /// Done once every change handed over before it is on disk.
    pub fn barrier(&self) -> Written {
        self.send(JournalOp::Barrier)
    }

    /// Delete the staged files `paths` once every change handed over before is on disk.
    pub fn delete_staged(&self, paths: Vec<PathBuf>) -> Written {
        if paths.is_empty() {
            let (done, rx) = std::sync::mpsc::channel();
            let _ = done.send(Ok(()));
            return Written(rx);
        }
        self.send(JournalOp::DeleteStaged(paths))
    }

    /// Remove the record `key` (after every change handed over before it).
    pub fn remove(&self, key: &str) -> Written {
        self.send(JournalOp::Remove(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> UploadRecord {
        UploadRecord {
            key: key.into(),
            parent: "docs/a b".into(),
            name: "report #1.txt".into(),
            staged: PathBuf::from("/var/cache/cloudmount/staging/x"),
            size: 42,
            mtime_ns: UploadRecord::mtime_ns_of(UNIX_EPOCH + Duration::new(1_700_000_000, 123)),
            base_version: Some("etag-1".into()),
            attempts: 0,
            last_error: None,
            resume: None,
            ours: Vec::new(),
            conflict_copy: None,
            state: UploadState::Pending,
        }
    }

    #[test]
    fn records_round_trip_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut a = record("a1");
        j.put(&a).unwrap();
        j.put(&record("b2")).unwrap();
        a.attempts = 3;
        a.state = UploadState::Failed {
            error: "HTTP 507".into(),
        };
        j.put(&a).unwrap();
        let again = Journal::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(again.records, vec![a.clone(), record("b2")]);
        assert_eq!(again.records[0].mtime(), UNIX_EPOCH + Duration::new(1_700_000_000, 123));
        j.remove("a1").unwrap();
        j.remove("a1").unwrap();
        assert_eq!(j.load().unwrap().records, vec![record("b2")]);
    }

    #[test]
    fn a_crash_mid_write_leaves_the_previous_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.put(&record("k")).unwrap();
        // What a crash between writing the temporary file and the rename leaves behind.
        fs::write(dir.path().join("k.tmp"), b"{\"key\": \"k\", \"trunc").unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(!dir.path().join("k.tmp").exists());
        assert_eq!(j.load().unwrap().records, vec![record("k")]);
    }

    #[test]
    fn unreadable_records_are_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.put(&record("good")).unwrap();
        fs::write(dir.path().join("bad.json"), b"not json").unwrap();
        let loaded = j.load().unwrap();
        assert_eq!(loaded.records, vec![record("good")]);
        assert_eq!(loaded.corrupt, vec![dir.path().join("bad.corrupt")]);
        assert!(dir.path().join("bad.corrupt").exists());
    }

    #[test]
    fn resume_tokens_round_trip_and_old_records_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut a = record("a");
        a.resume = Some(serde_json::json!({"graph_session": {"url": "http://x/_up/1"}}));
        j.put(&a).unwrap();
        // A record written before resume tokens existed.
        let mut old = serde_json::to_value(record("old")).unwrap();
        old.as_object_mut().unwrap().remove("resume");
        fs::write(dir.path().join("old.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let loaded = j.load().unwrap();
        assert!(loaded.corrupt.is_empty());
        assert_eq!(loaded.records, vec![a, record("old")]);
    }

    #[test]
    fn keys_cannot_escape_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.put(&record("../evil")).is_err());
        assert!(j.remove("a/b").is_err());
    }
}
