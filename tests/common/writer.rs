//! A writer in a process of its own that holds one file open and writes to it on command.
//!
//! Tests about a file that stays open need it: every `close()` of a descriptor of the file, even
//! the copy a forked child closes at `exec` (any `Command` the test process or a test running
//! beside it spawns), sends FUSE a flush, and a flush hands the file to the upload queue. A
//! writer of its own, which never forks, closes the file exactly when told.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Opens the file (truncating it or not), then runs one command per line and answers `ok`:
/// `write OFFSET FROM TO` (bytes FROM..TO of the source file at OFFSET), `fsync`, `close`.
const SCRIPT: &str = r#"
import os, sys
path, src, mode = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if mode == "trunc" else 0), 0o644)
data = memoryview(open(src, "rb").read())
print("ok", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "write":
        off, a, b = map(int, cmd[1:])
        part = data[a:b]
        while len(part):
            n = os.pwrite(fd, part[: 1 << 20], off)
            part, off = part[n:], off + n
    elif cmd[0] == "fsync":
        os.fsync(fd)
    elif cmd[0] == "close":
        os.close(fd)
    print("ok", flush=True)
"#;

/// The writer process.
pub struct Writer {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
    _source: tempfile::NamedTempFile,
}

impl Writer {
    /// Open `path` (with `O_TRUNC` when `truncate`), ready to write bytes of `source`.
    pub fn open(path: &Path, source: &[u8], truncate: bool) -> Writer {
        let mut src = tempfile::NamedTempFile::new().unwrap();
        src.write_all(source).unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(path)
            .arg(src.path())
            .arg(if truncate { "trunc" } else { "keep" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, answers) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut w = Writer {
            child,
            stdin,
            answers,
            _source: src,
        };
        w.answer("open");
        w
    }

    fn answer(&mut self, what: &str) {
        match self.answers.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line == "ok" => {}
            Ok(other) => panic!("writer answered {other:?} to {what}"),
            Err(_) => panic!("the writer did not finish {what} within 120 s (or died)"),
        }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.answer(line);
    }

    /// Write bytes `range` of the source at `offset`.
    pub fn write(&mut self, offset: u64, range: std::ops::Range<usize>) {
        self.command(&format!("write {offset} {} {}", range.start, range.end));
    }

    /// fsync(2) the file.
    pub fn fsync(&mut self) {
        self.command("fsync");
    }

    /// close(2) the file.
    pub fn close(mut self) {
        self.command("close");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
