//! Records of detached containers, independent of who supervises them.
//!
//! Each container lives in `$BERTH_HOME/containers/<id>/`:
//!
//! - `config.json`: the run request ([`ContainerConfig`]), written once;
//! - `state.json`: what is happening now ([`ContainerState`]), rewritten
//!   atomically (temporary file, fsync, rename) so readers never see half
//!   a record;
//! - `log.jsonl`: the guest's output, one JSON object per line
//!   (`{"time": RFC 3339 with nanoseconds, "stream": "stdout"|"stderr",
//!   "line": "..."}`), rotated by size to `log.1.jsonl` (one generation).
//!
//! Names are reserved in `$BERTH_HOME/containers/names/<name>` (the file
//! holds the ID), created exclusively so that two containers cannot take
//! the same name. IDs are 64 hex characters; the short ID is the first 12.
//!
//! Records hold secrets (`-e` values), so every directory and file here is
//! created owner-only (see [`crate::home`]).

// Only unix has a supervisor (yet) to write logs and apply restart policies.
#![cfg_attr(not(unix), allow(dead_code))]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::home::{create_private_dir, create_private_dir_all, private_file};

/// The run request of a container.
pub const CONFIG_FILE: &str = "config.json";
/// The container's current state.
pub const STATE_FILE: &str = "state.json";
/// The guest's output, newest generation.
pub const LOG_FILE: &str = "log.jsonl";
/// The guest's output, previous generation.
pub const ROTATED_LOG_FILE: &str = "log.1.jsonl";
/// Size at which `log.jsonl` is rotated.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Longest log line; longer output is split into several entries.
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// Version of the record format in `config.json`.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a short container ID.
pub const SHORT_ID_LEN: usize = 12;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, not (yet) running; also a container that failed to start.
    #[default]
    Created,
    /// The program is running.
    Running,
    /// The program exited and the restart policy will start it again.
    Restarting,
    /// The program exited (or was stopped) and will not be restarted.
    Exited,
}

/// When a container's supervisor starts the program again, as docker's
/// `--restart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max` times (unlimited if `None`).
    OnFailure {
        /// Restarts allowed.
        max: Option<u32>,
    },
    /// After every exit, until stopped.
    Always,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure`, `on-failure:N` or `always`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid restart policy {text:?}: expected no, on-failure[:N] or always");
        match text {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => {
                let count = text.strip_prefix("on-failure:").ok_or_else(bad)?;
                let max = count.parse().map_err(|_| bad())?;
                Ok(RestartPolicy::OnFailure { max: Some(max) })
            }
        }
    }

    /// Whether to start the program again after it exited with `code`,
    /// having been restarted `restarts` times already.
    pub fn should_restart(&self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|max| restarts < max),
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(max) } => write!(f, "on-failure:{max}"),
        }
    }
}

impl From<RestartPolicy> for String {
    fn from(policy: RestartPolicy) -> String {
        policy.to_string()
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        RestartPolicy::parse(&text)
    }
}

/// The delay before the `n`th consecutive restart (1-based): 100 ms,
/// doubling, at most 10 s.
pub fn restart_backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(10);
    Duration::from_millis(100u64 << shift).min(Duration::from_secs(10))
}

/// The run request of a container (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Record format version.
    pub version: u32,
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// When the container was created (RFC 3339, UTC).
    pub created: String,
    /// The `berth run` arguments after `run`, without `-d`, `--name`,
    /// `--rm` and `--restart` (`-e KEY` resolved to `KEY=VALUE`).
    pub argv: Vec<String>,
    /// The directory relative paths in `argv` are relative to.
    pub cwd: PathBuf,
    /// The FILE|IMAGE argument.
    pub image: String,
    /// The arguments after FILE|IMAGE.
    pub command: Vec<String>,
    /// For an image that was local at creation: the program and arguments
    /// its ENTRYPOINT and CMD give (ARGS replacing CMD), as `ps` shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_argv: Option<Vec<String>>,
    /// Published ports, as `HOSTIP:HOSTPORT->CONTAINERPORT/tcp`.
    pub ports: Vec<String>,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Keep the program's stdin open (`-i`).
    pub interactive: bool,
}

/// What a container is doing (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Where it is in its life.
    pub status: Status,
    /// The supervising process, while there is one.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The process running the program, while there is one.
    #[serde(default)]
    pub child_pid: Option<u32>,
    /// The last exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the container could not start, if it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// When the program last started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// When the program last exited (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Restarts by the restart policy since the container was last started.
    #[serde(default)]
    pub restart_count: u32,
}

/// A container's record.
#[derive(Debug, Clone)]
pub struct Container {
    /// The run request.
    pub config: ContainerConfig,
    /// The state as last recorded.
    pub state: ContainerState,
    /// The container's directory.
    pub dir: PathBuf,
}

impl Container {
    /// The first 12 characters of the ID.
    pub fn short_id(&self) -> &str {
        short_id(&self.config.id)
    }
}

/// The first 12 characters of an ID.
pub fn short_id(id: &str) -> &str {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}

/// The container records under one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `$BERTH_HOME/containers`, created if needed.
    pub fn open() -> Result<Store> {
        let root = crate::home::containers_dir()?;
        let root = std::path::absolute(&root).unwrap_or(root);
        Store::at(root)
    }

    /// The store under `root`, created if needed.
    pub fn at(root: PathBuf) -> Result<Store> {
        create_private_dir_all(&root.join("names"))
            .with_context(|| format!("cannot create {}", root.display()))?;
        Ok(Store { root })
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn name_file(&self, name: &str) -> PathBuf {
        self.root.join("names").join(name)
    }

    /// A fresh ID no container has.
    pub fn new_id(&self) -> String {
        loop {
            let id = random_id();
            if !self.dir(&id).exists() && !id.chars().take(SHORT_ID_LEN).all(|c| c.is_ascii_digit())
            {
                return id;
            }
        }
    }

    /// Records a new container: writes `config.json` and a `created`
    /// state, then reserves its name (so a reservation always points to a
    /// complete record).
    pub fn create(&self, config: &ContainerConfig) -> Result<Container> {
        validate_name(&config.name)?;
        let dir = self.dir(&config.id);
        let result = (|| -> Result<Container> {
            create_private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            write_json_atomic(&dir.join(CONFIG_FILE), config)?;
            let state = ContainerState::default();
            write_json_atomic(&dir.join(STATE_FILE), &state)?;
            self.reserve_name(&config.name, &config.id)?;
            Ok(Container {
                config: config.clone(),
                state,
                dir: dir.clone(),
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    /// Creates `names/<name>` holding `id`, complete or not at all (a
    /// hard link of a finished temporary file), unless another container
    /// holds the name.
    fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let path = self.name_file(name);
        let temp = self.root.join("names").join(format!(".{id}.tmp"));
        private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| file.write_all(id.as_bytes()))
            .with_context(|| format!("cannot write {}", temp.display()))?;
        let mut result = Err(anyhow::anyhow!(
            "cannot reserve the container name {name:?}"
        ));
        for _ in 0..2 {
            match fs::hard_link(&temp, &path) {
                Ok(()) => {
                    result = Ok(());
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path).unwrap_or_default();
                    let owner = owner.trim();
                    if self.dir(owner).join(CONFIG_FILE).exists() {
                        result = Err(anyhow::anyhow!(
                            "the container name {name:?} is already in use by container {}; remove that container or choose another name",
                            short_id(owner)
                        ));
                        break;
                    }
                    // Left behind by a container that is gone.
                    let _ = fs::remove_file(&path);
                }
                Err(error) => {
                    result =
                        Err(error).with_context(|| format!("cannot create {}", path.display()));
                    break;
                }
            }
        }
        let _ = fs::remove_file(&temp);
        result
    }

    /// Reads one container's record.
    pub fn load(&self, id: &str) -> Result<Container> {
        let dir = self.dir(id);
        let config: ContainerConfig = read_json(&dir.join(CONFIG_FILE))?;
        let state = self.read_state(id)?.unwrap_or_default();
        Ok(Container { config, state, dir })
    }

    /// Every container, newest first (unreadable records are skipped).
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut containers = Vec::new();
        let entries = fs::read_dir(&self.root)
            .with_context(|| format!("cannot read {}", self.root.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_full_id(&name) {
                continue;
            }
            match self.load(&name) {
                Ok(container) => containers.push(container),
                Err(error) => tracing::debug!(id = name, "skipping container: {error:#}"),
            }
        }
        containers.sort_by(|a, b| {
            b.config
                .created
                .cmp(&a.config.created)
                .then_with(|| a.config.id.cmp(&b.config.id))
        });
        Ok(containers)
    }

    /// Finds a container by full ID, name or unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Result<Container> {
        if is_full_id(reference)
            && let Ok(container) = self.load(reference)
        {
            return Ok(container);
        }
        let containers = self.list()?;
        if let Some(container) = containers.iter().find(|c| c.config.name == reference) {
            return Ok(container.clone());
        }
        if !reference.is_empty() && reference.chars().all(|c| c.is_ascii_hexdigit()) {
            let prefix = reference.to_ascii_lowercase();
            let matches: Vec<&Container> = containers
                .iter()
                .filter(|c| c.config.id.starts_with(&prefix))
                .collect();
            match matches.as_slice() {
                [one] => return Ok(Container::clone(one)),
                [] => {}
                _ => bail!(
                    "{reference:?} matches {} containers: give more of the ID or the name",
                    matches.len()
                ),
            }
        }
        bail!("no such container: {reference}")
    }

    /// The recorded state, or `None` if the container is gone.
    pub fn read_state(&self, id: &str) -> Result<Option<ContainerState>> {
        let path = self.dir(id).join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a container state", path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the recorded state atomically.
    pub fn write_state(&self, id: &str, state: &ContainerState) -> Result<()> {
        write_json_atomic(&self.dir(id).join(STATE_FILE), state)
    }

    /// Deletes a container's record, logs and name.
    pub fn remove(&self, container: &Container) -> Result<()> {
        let name_file = self.name_file(&container.config.name);
        if fs::read_to_string(&name_file).is_ok_and(|owner| owner.trim() == container.config.id) {
            let _ = fs::remove_file(&name_file);
        }
        match fs::remove_dir_all(&container.dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => {
                Err(error).with_context(|| format!("cannot remove {}", container.dir.display()))
            }
        }
    }
}

/// Whether `text` has the shape of a full container ID.
pub fn is_full_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid || name.len() > 128 {
        bail!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to 128 characters"
        );
    }
    Ok(())
}

/// 32 random bytes as 64 hex characters.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    let from_os = File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        // std seeds RandomState from the operating system's generator.
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        for chunk in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(nanos);
            hasher.write_u32(std::process::id());
            hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("cannot parse {}", path.display()))
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).context("cannot encode a record")?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` with `bytes` so that readers see the old or the new
/// content, never a mix: write a temporary file next to it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> io::Result<()> {
        let mut file = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

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
    private_file().create(true).append(true).open(path)
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

/// The current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ`.
pub fn format_rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        since.subsec_nanos()
    )
}

/// Parses the UTC form [`format_rfc3339`] writes (fraction optional).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let year: i64 = date.next()?.parse().ok()?;
    let month: i64 = date.next()?.parse().ok()?;
    let day: i64 = date.next()?.parse().ok()?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock = clock.splitn(3, ':');
    let hour: i64 = clock.next()?.parse().ok()?;
    let minute: i64 = clock.next()?.parse().ok()?;
    let second: i64 = clock.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{fraction:0<9}").parse().ok()?
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// (year, month, day) of a day number counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day number (from 1970-01-01) of a date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration as docker words it: `Less than a second`, `5 seconds`,
/// `About a minute`, `3 hours`, `2 days`...
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// How long ago an RFC 3339 time was (zero if unknown or in the future).
pub fn elapsed_since(time: Option<&str>) -> Duration {
    time.and_then(parse_rfc3339)
        .and_then(|time| SystemTime::now().duration_since(time).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_decide() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::parse("always"), Ok(RestartPolicy::Always));
        assert_eq!(
            RestartPolicy::parse("on-failure:2"),
            Ok(RestartPolicy::OnFailure { max: Some(2) })
        );
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert!(RestartPolicy::parse("sometimes").is_err());
        let policy = RestartPolicy::OnFailure { max: Some(2) };
        assert!(policy.should_restart(3, 0));
        assert!(policy.should_restart(3, 1));
        assert!(!policy.should_restart(3, 2));
        assert!(!policy.should_restart(0, 0));
        assert!(RestartPolicy::Always.should_restart(0, 100));
        assert!(!RestartPolicy::No.should_restart(1, 0));
        assert_eq!(policy.to_string(), "on-failure:2");
        let json = serde_json::to_string(&policy).expect("encode");
        assert_eq!(json, "\"on-failure:2\"");
        assert_eq!(
            serde_json::from_str::<RestartPolicy>(&json).expect("decode"),
            policy
        );
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(2), Duration::from_millis(200));
        assert_eq!(restart_backoff(4), Duration::from_millis(800));
        assert_eq!(restart_backoff(8), Duration::from_secs(10));
        assert_eq!(restart_backoff(1000), Duration::from_secs(10));
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 5);
        assert_eq!(format_rfc3339(leap), "2000-02-29T01:02:03.000000005Z");
        assert_eq!(parse_rfc3339("2000-02-29T01:02:03.000000005Z"), Some(leap));
        assert_eq!(
            parse_rfc3339("2000-02-29T01:02:03.5Z"),
            Some(UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 500_000_000))
        );
        let now = SystemTime::now();
        assert_eq!(parse_rfc3339(&format_rfc3339(now)), Some(now));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert!(is_full_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(short_id(&a).len(), 12);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("a/b").is_err());
    }

    fn config(store: &Store, name: &str) -> ContainerConfig {
        ContainerConfig {
            version: FORMAT_VERSION,
            id: store.new_id(),
            name: name.to_owned(),
            created: now_rfc3339(),
            argv: vec!["app.wasm".into()],
            cwd: PathBuf::from("/"),
            image: "app.wasm".into(),
            command: Vec::new(),
            image_argv: None,
            ports: Vec::new(),
            restart: RestartPolicy::No,
            auto_remove: false,
            interactive: false,
        }
    }

    #[test]
    fn store_reserves_names_and_resolves_references() {
        let temp = tempfile::tempdir().expect("tempdir");
        let store = Store::at(temp.path().to_path_buf()).expect("store");
        let web = store.create(&config(&store, "web")).expect("create web");
        let error = store
            .create(&config(&store, "web"))
            .expect_err("duplicate name");
        assert!(error.to_string().contains("already in use"), "{error}");
        assert_eq!(
            store.resolve("web").expect("by name").config.id,
            web.config.id
        );
        assert_eq!(
            store.resolve(&web.config.id).expect("by id").config.name,
            "web"
        );
        assert_eq!(
            store
                .resolve(&web.config.id[..6])
                .expect("by prefix")
                .config
                .name,
            "web"
        );
        let missing = store.resolve("nothing").expect_err("missing");
        assert_eq!(missing.to_string(), "no such container: nothing");

        let mut state = ContainerState {
            status: Status::Exited,
            exit_code: Some(3),
            restart_count: 2,
            ..ContainerState::default()
        };
        store
            .write_state(&web.config.id, &state)
            .expect("write state");
        assert_eq!(
            store.read_state(&web.config.id).expect("read"),
            Some(state.clone())
        );
        state.status = Status::Running;
        store.write_state(&web.config.id, &state).expect("rewrite");
        assert_eq!(store.list().expect("list").len(), 1);

        store.remove(&web).expect("remove");
        assert!(store.list().expect("list").is_empty());
        assert!(store.create(&config(&store, "web")).is_ok(), "name freed");
    }

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
