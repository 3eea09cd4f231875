//! Container logs: the guest's output, one JSON object per line
//! (`{"time": RFC 3339 with nanoseconds, "stream": "stdout"|"stderr",
//! "line": "..."}`) in `log.jsonl` in the container's directory, rotated by
//! size to `log.1.jsonl` (one generation). Lines are cut at a length so
//! that a guest that never writes a newline cannot grow memory.
//!
//! Log files hold what guests print, secrets included: they are created
//! owner-only.
//!
//! [`LogPumps`] carries one run's output into a [`LogWriter`]: every front
//! door that keeps logs (a detached container's supervisor, the daemon's
//! node agent) gives a run its pipes this way.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_runtime::Output;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::time::now_rfc3339;

/// The guest's output, newest generation.
pub const LOG_FILE: &str = "log.jsonl";
/// The guest's output, previous generation.
pub const ROTATED_LOG_FILE: &str = "log.1.jsonl";
/// Size at which `log.jsonl` is rotated.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Longest log line; longer output is split into several entries.
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the supervisor read the line (RFC 3339 with nanoseconds, UTC).
    pub time: String,
    /// Where the guest wrote it.
    pub stream: LogStream,
    /// The line without its newline.
    pub line: String,
}

/// Appends log entries to `log.jsonl`, rotating it to `log.1.jsonl` (the
/// previous generation is dropped) before it would grow past a size.
pub struct LogWriter {
    dir: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Opens (creating) `dir/log.jsonl` for appending.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<LogWriter> {
        let file = open_append(&dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_bytes,
            file,
            size,
        })
    }

    /// Appends one entry stamped with the current time.
    pub fn append(&mut self, stream: LogStream, line: &str) -> io::Result<()> {
        let entry = LogEntry {
            time: now_rfc3339(),
            stream,
            line: line.to_owned(),
        };
        let mut bytes = serde_json::to_vec(&entry)?;
        bytes.push(b'\n');
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        fs::rename(self.dir.join(LOG_FILE), self.dir.join(ROTATED_LOG_FILE))?;
        self.file = open_append(&self.dir.join(LOG_FILE))?;
        self.size = 0;
        Ok(())
    }
}

/// Opens `path` for appending, creating it owner-only.
pub fn open_append(path: &Path) -> io::Result<File> {
    berth_fs::private_file()
        .create(true)
        .append(true)
        .open(path)
}

/// Splits a byte stream into lines (without the newline), cutting lines
/// longer than a limit into pieces so that a guest cannot grow memory by
/// never writing a newline.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter cutting lines at `max` bytes.
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Feeds bytes; returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) if self.pending.len() + end <= self.max => {
                    self.pending.extend_from_slice(&bytes[..end]);
                    lines.push(self.take());
                    bytes = &bytes[end + 1..];
                }
                _ => {
                    let room = self.max - self.pending.len();
                    let used = room.min(bytes.len());
                    self.pending.extend_from_slice(&bytes[..used]);
                    bytes = &bytes[used..];
                    if self.pending.len() >= self.max {
                        lines.push(self.take());
                    }
                }
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// Bytes of a program's output in flight to its log pump.
const PIPE_BYTES: usize = 64 << 10;
/// What a pump reads at first: most programs print little, and an idle
/// one should not hold a large buffer.
const FIRST_READ_BYTES: usize = 512;
/// What a pump reads at once after its first buffer filled up.
const READ_BYTES: usize = 8 << 10;
/// How long finishing waits for a pump to drain its pipe.
const PUMP_DRAIN: Duration = Duration::from_secs(5);

/// One run's stdout and stderr on their way into a log: pipes whose far
/// ends a task each copies line by line into the [`LogWriter`].
#[derive(Debug)]
pub struct LogPumps {
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl LogPumps {
    /// Pipes for a run's stdout and stderr (the returned outputs, in that
    /// order), pumped into `log`. Must be called within a tokio runtime.
    pub fn start(log: &Arc<Mutex<LogWriter>>) -> (LogPumps, Output, Output) {
        let (stdout, stdout_reader) = tokio::io::duplex(PIPE_BYTES);
        let (stderr, stderr_reader) = tokio::io::duplex(PIPE_BYTES);
        let pumps = vec![
            tokio::spawn(pump(stdout_reader, LogStream::Stdout, Arc::clone(log))),
            tokio::spawn(pump(stderr_reader, LogStream::Stderr, Arc::clone(log))),
        ];
        (
            LogPumps { pumps },
            Output::Writer(Box::new(stdout)),
            Output::Writer(Box::new(stderr)),
        )
    }

    /// Lets the pumps write what the run left in its pipes: they end when
    /// the sandbox's ends of the pipes close, which a run that ended does
    /// soon.
    pub async fn finish(self) {
        for pump in self.pumps {
            if tokio::time::timeout(PUMP_DRAIN, pump).await.is_err() {
                tracing::warn!("a log pump did not finish; some output may be missing");
            }
        }
    }
}

/// Copies one output stream of the program into the log, line by line.
async fn pump<R: AsyncRead + Unpin>(mut reader: R, stream: LogStream, log: Arc<Mutex<LogWriter>>) {
    let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
    let mut buffer = vec![0u8; FIRST_READ_BYTES];
    loop {
        let read = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let lines = splitter.push(&buffer[..read]);
        write_lines(&log, stream, &lines);
        if read == buffer.len() && buffer.len() < READ_BYTES {
            buffer.resize(READ_BYTES, 0);
        }
    }
    if let Some(line) = splitter.finish() {
        write_lines(&log, stream, &[line]);
    }
}

/// Appends `lines` to the log; a failure is logged, never fatal, so that
/// the program is still looked after when its log cannot be written.
pub fn write_lines(log: &Mutex<LogWriter>, stream: LogStream, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut writer = log.lock().unwrap_or_else(PoisonError::into_inner);
    for line in lines {
        if let Err(error) = writer.append(stream, line) {
            tracing::warn!(%error, "cannot write the container log");
        }
    }
}

/// Reads a container's log, then what is appended to it, across rotations.
pub struct LogFollower {
    dir: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
}

impl LogFollower {
    /// Opens the log of the container in `dir` and returns the entries so
    /// far, oldest first (the rotated generation, then the current one).
    pub fn open(dir: &Path) -> io::Result<(LogFollower, Vec<LogEntry>)> {
        let mut entries = Vec::new();
        match fs::read(dir.join(ROTATED_LOG_FILE)) {
            Ok(bytes) => parse_entries(&bytes, &mut entries),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut follower = LogFollower {
            dir: dir.to_path_buf(),
            file: None,
            pending: Vec::new(),
        };
        entries.extend(follower.poll()?);
        Ok((follower, entries))
    }

    /// Entries appended since the last call.
    pub fn poll(&mut self) -> io::Result<Vec<LogEntry>> {
        let path = self.dir.join(LOG_FILE);
        let mut entries = Vec::new();
        for _ in 0..2 {
            if self.file.is_none() {
                match File::open(&path) {
                    Ok(file) => self.file = Some(file),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => break,
                    Err(error) => return Err(error),
                }
            }
            let Some(file) = self.file.as_mut() else {
                break;
            };
            let mut bytes = std::mem::take(&mut self.pending);
            file.read_to_end(&mut bytes)?;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            parse_entries(&bytes[..complete], &mut entries);
            self.pending = bytes[complete..].to_vec();
            if !replaced(file, &path) {
                break;
            }
            // Rotated: this file is now log.1.jsonl and fully read; go on
            // with the new log.jsonl from its start.
            self.file = None;
            self.pending.clear();
        }
        Ok(entries)
    }
}

/// Whether `path` now names a different file than the open `file`.
fn replaced(file: &mut File, path: &Path) -> bool {
    let Ok(current) = fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        file.metadata()
            .is_ok_and(|open| (open.dev(), open.ino()) != (current.dev(), current.ino()))
    }
    #[cfg(not(unix))]
    {
        use std::io::Seek;
        file.stream_position()
            .is_ok_and(|position| current.len() < position)
    }
}

fn parse_entries(bytes: &[u8], entries: &mut Vec<LogEntry>) {
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(entry) => entries.push(entry),
            Err(error) => tracing::debug!(%error, "skipping a damaged log line"),
        }
    }
}

/// Reads the whole log (both generations), oldest first.
#[cfg(test)]
fn read_log(dir: &Path) -> io::Result<Vec<LogEntry>> {
    LogFollower::open(dir).map(|(_, entries)| entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    #[test]
    fn lines_are_split_and_capped() {
        let mut splitter = LineSplitter::new(8);
        assert_eq!(splitter.push(b"ab"), Vec::<String>::new());
        assert_eq!(splitter.push(b"c\r\nde\nf"), vec!["abc", "de"]);
        assert_eq!(splitter.push(b"0123456789\n"), vec!["f0123456", "789"]);
        assert_eq!(splitter.push(b"tail"), Vec::<String>::new());
        assert_eq!(splitter.finish().as_deref(), Some("tail"));
        assert_eq!(splitter.finish(), None);
    }

    #[tokio::test]
    async fn pumps_carry_a_runs_output_into_the_log_line_by_line() {
        use tokio::io::AsyncWriteExt;
        let temp = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(Mutex::new(
            LogWriter::open(temp.path(), LOG_MAX_BYTES).expect("log"),
        ));
        let (pumps, stdout, stderr) = LogPumps::start(&log);
        let (Output::Writer(mut stdout), Output::Writer(mut stderr)) = (stdout, stderr) else {
            panic!("pipes expected");
        };
        // Longer than a pump's first buffer, and cut across writes.
        let long = "x".repeat(3000);
        stdout
            .write_all(format!("{long}\nfirst ").as_bytes())
            .await
            .expect("write");
        stdout
            .write_all(b"half\nunterminated")
            .await
            .expect("write");
        stderr.write_all(b"oops\n").await.expect("write");
        drop((stdout, stderr));
        pumps.finish().await;
        let entries = read_log(temp.path()).expect("read log");
        let mut out: Vec<&str> = entries
            .iter()
            .filter(|e| e.stream == LogStream::Stdout)
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(out.remove(0), long);
        assert_eq!(out, ["first half", "unterminated"]);
        let err: Vec<&str> = entries
            .iter()
            .filter(|e| e.stream == LogStream::Stderr)
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(err, ["oops"]);
    }

    #[test]
    fn log_rotates_at_the_size_limit_keeping_one_generation() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path();
        let mut writer = LogWriter::open(dir, 300).expect("open log");
        let (mut follower, initial) = LogFollower::open(dir).expect("follow");
        assert!(initial.is_empty());
        let mut seen = Vec::new();
        for i in 0..20 {
            let stream = if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            };
            writer.append(stream, &format!("line {i}")).expect("append");
            seen.extend(follower.poll().expect("poll"));
        }
        // Every line was seen once, in order, across the rotations.
        let lines: Vec<String> = seen.iter().map(|entry| entry.line.clone()).collect();
        let expected: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, expected);
        assert_eq!(seen[1].stream, LogStream::Stderr);
        assert!(parse_rfc3339(&seen[0].time).is_some(), "{}", seen[0].time);

        // Both generations stay under the limit; older lines are gone.
        for file in [LOG_FILE, ROTATED_LOG_FILE] {
            let size = fs::metadata(dir.join(file)).expect("log file").len();
            assert!(size <= 300, "{file} is {size} bytes");
        }
        assert!(!dir.join("log.2.jsonl").exists());
        let kept = read_log(dir).expect("read log");
        assert!(kept.len() < 20, "rotation dropped nothing");
        assert_eq!(kept.last().map(|e| e.line.as_str()), Some("line 19"));
        let kept_lines: Vec<&str> = kept.iter().map(|e| e.line.as_str()).collect();
        let tail: Vec<&str> = expected[20 - kept.len()..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(kept_lines, tail, "the newest lines are kept, in order");
    }
}
