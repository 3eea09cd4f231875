//! Records of containers, independent of who supervises them: what each
//! container is ([`ContainerRecord`], holding its [`ContainerSpec`]) and
//! what it is doing ([`ContainerState`]), behind the [`RecordStore`] trait
//! so that a front door can keep them where it likes.
//!
//! [`FileRecords`] keeps them in files, one directory per container
//! (`<root>/<id>/`):
//!
//! - `config.json`: the [`ContainerRecord`], written once;
//! - `state.json`: the [`ContainerState`], rewritten atomically
//!   (temporary file, fsync, rename) so readers never see half a record;
//! - the container's logs (see [`crate::logs`]).
//!
//! Names are reserved in `<root>/names/<name>` (the file holds the ID),
//! created exclusively so that two containers cannot take the same name.
//! IDs are 64 hex characters; the short ID is the first 12.
//!
//! Records hold secrets (environment values), so every directory and file
//! here is created owner-only.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::spec::{ContainerSpec, InvalidValue, PullPolicy, RestartPolicy, Target, validate_name};

/// The container's record.
pub const CONFIG_FILE: &str = "config.json";
/// The container's current state.
pub const STATE_FILE: &str = "state.json";
/// Version of the record format in `config.json`: 2 stores the typed
/// [`ContainerSpec`]; 1 stored a command line.
pub const FORMAT_VERSION: u32 = 2;
/// Length of a short container ID.
pub const SHORT_ID_LEN: usize = 12;

/// Why a record cannot be read, written or found.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file or directory of the store cannot be used.
    // The OS error is part of the message rather than a `source`, so that
    // printing the error chain does not repeat it.
    #[error("{action} {}: {error}", path.display())]
    Io {
        /// What was being done ("cannot read").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// A record or state file is not what berth writes.
    #[error("{} is not a container {what}: {error}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// "record" or "state".
        what: &'static str,
        /// What is wrong with it.
        error: String,
    },
    /// The container name is invalid.
    #[error(transparent)]
    Name(#[from] InvalidValue),
    /// Another container holds the name.
    #[error(
        "the container name {name:?} is already in use by container {owner}; remove that container or choose another name"
    )]
    NameInUse {
        /// The name.
        name: String,
        /// The short ID of the container holding it.
        owner: String,
    },
    /// No container has this ID, name or ID prefix.
    #[error("no such container: {0}")]
    NotFound(String),
    /// An ID prefix matches several containers.
    #[error("{reference:?} matches {count} containers: give more of the ID or the name")]
    Ambiguous {
        /// The prefix.
        reference: String,
        /// How many containers it matches.
        count: usize,
    },
    /// The record was written by an older berth, in a format this one
    /// cannot run.
    #[error(
        "container {name} was created by an older berth (record format {version}); remove it with `berth rm {name}` and run it again"
    )]
    Outdated {
        /// The container's name.
        name: String,
        /// The record's format version.
        version: u32,
    },
}

impl RecordError {
    fn io(action: &'static str, path: &Path, error: io::Error) -> Self {
        RecordError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// What a container is (`config.json`), written once at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Record format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// When the container was created (RFC 3339, UTC).
    pub created: String,
    /// For an image that was local at creation: the program and arguments
    /// its ENTRYPOINT and CMD give (the spec's arguments replacing CMD), as
    /// `ps` shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_argv: Option<Vec<String>>,
    /// The container's definition.
    pub spec: ContainerSpec,
}

impl ContainerRecord {
    /// A new record of `spec`, named `name` (or `berth-SHORTID`).
    pub fn new(id: String, spec: ContainerSpec) -> ContainerRecord {
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("berth-{}", short_id(&id)));
        ContainerRecord {
            version: FORMAT_VERSION,
            id,
            name,
            created: crate::time::now_rfc3339(),
            image_argv: None,
            spec,
        }
    }

    /// The spec, if this berth can run it: records of an older format
    /// hold only what `ps` shows.
    pub fn runnable_spec(&self) -> Result<&ContainerSpec, RecordError> {
        if self.version != FORMAT_VERSION {
            return Err(RecordError::Outdated {
                name: self.name.clone(),
                version: self.version,
            });
        }
        Ok(&self.spec)
    }

    /// Decodes `config.json`. A version-1 record (a command line) is read
    /// for listing and removal only: its spec holds the target, arguments
    /// and restart policy, and [`ContainerRecord::runnable_spec`] refuses it.
    fn decode(bytes: &[u8]) -> Result<ContainerRecord, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(1) => legacy_record(&value).ok_or_else(|| "a damaged version 1 record".into()),
            _ => serde_json::from_value(value).map_err(|error| error.to_string()),
        }
    }
}

/// What `ps` needs of a version-1 record.
fn legacy_record(value: &serde_json::Value) -> Option<ContainerRecord> {
    let text = |key: &str| value.get(key)?.as_str().map(str::to_owned);
    let image = text("image")?;
    let mut spec = ContainerSpec::new(if crate::resolve::is_file_target(&image) {
        Target::File {
            path: PathBuf::from(&image),
            export: None,
        }
    } else {
        Target::Image {
            reference: image,
            pull: PullPolicy::Missing,
        }
    });
    spec.args = serde_json::from_value(value.get("command")?.clone()).ok()?;
    spec.restart = text("restart")
        .and_then(|text| RestartPolicy::parse(&text).ok())
        .unwrap_or_default();
    spec.auto_remove = value.get("auto_remove")?.as_bool()?;
    Some(ContainerRecord {
        version: 1,
        id: text("id")?,
        name: text("name")?,
        created: text("created")?,
        image_argv: value
            .get("image_argv")
            .and_then(|argv| serde_json::from_value(argv.clone()).ok()),
        spec,
    })
}

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

/// Why a container's program last ended, as recorded (the runtime's
/// [`berth_runtime::ExitReason`], plus being killed from outside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// The program returned or called exit.
    Exited,
    /// The program hit its memory limit.
    OomKilled,
    /// The program ran past its timeout.
    TimedOut,
    /// The program trapped.
    Trapped {
        /// The trap.
        message: String,
    },
    /// The program was killed (stopped, or its process died).
    Killed,
}

impl From<&berth_runtime::ExitReason> for ExitReason {
    fn from(reason: &berth_runtime::ExitReason) -> Self {
        match reason {
            berth_runtime::ExitReason::Exited => ExitReason::Exited,
            berth_runtime::ExitReason::OomKilled { .. } => ExitReason::OomKilled,
            berth_runtime::ExitReason::TimedOut { .. } => ExitReason::TimedOut,
            berth_runtime::ExitReason::Trapped { message } => ExitReason::Trapped {
                message: message.clone(),
            },
            berth_runtime::ExitReason::Killed { .. } => ExitReason::Killed,
        }
    }
}

/// What a container is doing (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// Fields missing from a state written by an older berth take their defaults.
#[serde(default)]
pub struct ContainerState {
    /// Where it is in its life.
    pub status: Status,
    /// The supervising process, while there is one.
    pub pid: Option<u32>,
    /// The last exit code.
    pub exit_code: Option<i32>,
    /// Why the program last ended, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
    /// Whether the program last ended at its memory limit (docker's
    /// `OOMKilled`).
    pub oom_killed: bool,
    /// Why the container could not start, if it could not.
    pub error: Option<String>,
    /// When the program last started (RFC 3339).
    pub started_at: Option<String>,
    /// When the program last exited (RFC 3339).
    pub finished_at: Option<String>,
    /// Restarts by the restart policy since the container was last started.
    pub restart_count: u32,
}

impl ContainerState {
    /// Records how the program ended: its code and reason (and
    /// `oom_killed` with it).
    pub fn set_exit(&mut self, code: i32, reason: Option<ExitReason>) {
        self.exit_code = Some(code);
        self.oom_killed = reason == Some(ExitReason::OomKilled);
        self.exit_reason = reason;
    }
}

/// A container: its record and its state as last recorded.
#[derive(Debug, Clone)]
pub struct Container {
    /// What it is.
    pub record: ContainerRecord,
    /// What it is doing.
    pub state: ContainerState,
}

impl Container {
    /// The full ID.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The first 12 characters of the ID.
    pub fn short_id(&self) -> &str {
        short_id(&self.record.id)
    }
}

/// The first 12 characters of an ID.
pub fn short_id(id: &str) -> &str {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}

/// Whether `text` has the shape of a full container ID.
pub fn is_full_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where container records are kept.
pub trait RecordStore {
    /// A fresh ID no container has.
    fn new_id(&self) -> String;

    /// Records a new container in state `created`; fails if its name is
    /// invalid or taken (and then records nothing).
    fn create(&self, record: &ContainerRecord) -> Result<Container, RecordError>;

    /// Reads one container by full ID.
    fn load(&self, id: &str) -> Result<Container, RecordError>;

    /// Every container, newest first (unreadable records are skipped).
    fn list(&self) -> Result<Vec<Container>, RecordError>;

    /// The recorded state, or `None` if the container is gone.
    fn read_state(&self, id: &str) -> Result<Option<ContainerState>, RecordError>;

    /// Replaces the recorded state atomically.
    fn write_state(&self, id: &str, state: &ContainerState) -> Result<(), RecordError>;

    /// Deletes a container's record, state, logs and name.
    fn remove(&self, container: &Container) -> Result<(), RecordError>;

    /// Finds a container by full ID, name or unique ID prefix.
    fn resolve(&self, reference: &str) -> Result<Container, RecordError> {
        if is_full_id(reference)
            && let Ok(container) = self.load(reference)
        {
            return Ok(container);
        }
        let containers = self.list()?;
        if let Some(container) = containers.iter().find(|c| c.record.name == reference) {
            return Ok(container.clone());
        }
        if !reference.is_empty() && reference.chars().all(|c| c.is_ascii_hexdigit()) {
            let prefix = reference.to_ascii_lowercase();
            let mut matches = containers
                .into_iter()
                .filter(|c| c.record.id.starts_with(&prefix));
            match (matches.next(), matches.count()) {
                (Some(one), 0) => return Ok(one),
                (None, _) => {}
                (Some(_), others) => {
                    return Err(RecordError::Ambiguous {
                        reference: reference.to_owned(),
                        count: others + 1,
                    });
                }
            }
        }
        Err(RecordError::NotFound(reference.to_owned()))
    }
}

/// Container records in files under one directory (see the module docs).
#[derive(Debug, Clone)]
pub struct FileRecords {
    root: PathBuf,
}

impl FileRecords {
    /// The records under `root`, created (owner-only) if needed.
    pub fn open(root: PathBuf) -> Result<FileRecords, RecordError> {
        let names = root.join("names");
        berth_fs::create_private_dir_all(&names)
            .map_err(|error| RecordError::io("cannot create", &names, error))?;
        Ok(FileRecords { root })
    }

    /// The directory holding the records.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A container's directory (its record, state, logs and whatever its
    /// supervisor keeps there).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn name_file(&self, name: &str) -> PathBuf {
        self.root.join("names").join(name)
    }

    /// Creates `names/<name>` holding `id`, complete or not at all (a
    /// hard link of a finished temporary file), unless another container
    /// holds the name.
    fn reserve_name(&self, name: &str, id: &str) -> Result<(), RecordError> {
        let path = self.name_file(name);
        let temp = self.root.join("names").join(format!(".{id}.tmp"));
        berth_fs::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| file.write_all(id.as_bytes()))
            .map_err(|error| RecordError::io("cannot write", &temp, error))?;
        let mut result = Err(RecordError::io(
            "cannot reserve the container name in",
            &path,
            io::Error::from(io::ErrorKind::AlreadyExists),
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
                        result = Err(RecordError::NameInUse {
                            name: name.to_owned(),
                            owner: short_id(owner).to_owned(),
                        });
                        break;
                    }
                    // Left behind by a container that is gone.
                    let _ = fs::remove_file(&path);
                }
                Err(error) => {
                    result = Err(RecordError::io("cannot create", &path, error));
                    break;
                }
            }
        }
        let _ = fs::remove_file(&temp);
        result
    }
}

impl RecordStore for FileRecords {
    fn new_id(&self) -> String {
        loop {
            let id = random_id();
            // An all-digit short ID could be taken for a number.
            if !self.dir(&id).exists() && !id.chars().take(SHORT_ID_LEN).all(|c| c.is_ascii_digit())
            {
                return id;
            }
        }
    }

    /// Writes `config.json` and a `created` state, then reserves the name
    /// (so a reservation always points to a complete record).
    fn create(&self, record: &ContainerRecord) -> Result<Container, RecordError> {
        validate_name(&record.name)?;
        let dir = self.dir(&record.id);
        berth_fs::create_private_dir(&dir)
            .map_err(|error| RecordError::io("cannot create", &dir, error))?;
        let result = (|| {
            write_json(&dir.join(CONFIG_FILE), record)?;
            let state = ContainerState::default();
            write_json(&dir.join(STATE_FILE), &state)?;
            self.reserve_name(&record.name, &record.id)?;
            Ok(Container {
                record: record.clone(),
                state,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    fn load(&self, id: &str) -> Result<Container, RecordError> {
        let path = self.dir(id).join(CONFIG_FILE);
        let bytes =
            fs::read(&path).map_err(|error| RecordError::io("cannot read", &path, error))?;
        let record = ContainerRecord::decode(&bytes).map_err(|error| RecordError::Corrupt {
            path: path.clone(),
            what: "record",
            error,
        })?;
        let state = self.read_state(id)?.unwrap_or_default();
        Ok(Container { record, state })
    }

    fn list(&self) -> Result<Vec<Container>, RecordError> {
        let mut containers = Vec::new();
        let entries = fs::read_dir(&self.root)
            .map_err(|error| RecordError::io("cannot read", &self.root, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| RecordError::io("cannot read", &self.root, error))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_full_id(&name) {
                continue;
            }
            match self.load(&name) {
                Ok(container) => containers.push(container),
                Err(error) => tracing::debug!(id = name, "skipping container: {error}"),
            }
        }
        containers.sort_by(|a, b| {
            b.record
                .created
                .cmp(&a.record.created)
                .then_with(|| a.record.id.cmp(&b.record.id))
        });
        Ok(containers)
    }

    fn read_state(&self, id: &str) -> Result<Option<ContainerState>, RecordError> {
        let path = self.dir(id).join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| RecordError::Corrupt {
                        path,
                        what: "state",
                        error: error.to_string(),
                    })
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(RecordError::io("cannot read", &path, error)),
        }
    }

    fn write_state(&self, id: &str, state: &ContainerState) -> Result<(), RecordError> {
        write_json(&self.dir(id).join(STATE_FILE), state)
    }

    fn remove(&self, container: &Container) -> Result<(), RecordError> {
        let record = &container.record;
        let name_file = self.name_file(&record.name);
        if fs::read_to_string(&name_file).is_ok_and(|owner| owner.trim() == record.id) {
            let _ = fs::remove_file(&name_file);
        }
        let dir = self.dir(&record.id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(RecordError::io("cannot remove", &dir, error)),
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    // Records are plain data with string keys: encoding cannot fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    berth_fs::write_atomic(path, &bytes)
        .map_err(|error| RecordError::io("cannot write", path, error))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert!(is_full_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(short_id(&a).len(), 12);
    }

    #[test]
    fn exit_reasons_are_recorded_with_oom_killed() {
        let mut state = ContainerState::default();
        state.set_exit(137, Some(ExitReason::OomKilled));
        assert!(state.oom_killed);
        let json = serde_json::to_value(&state).expect("encode");
        assert_eq!(json["exit_reason"]["kind"], "oom_killed");
        state.set_exit(
            134,
            Some(ExitReason::Trapped {
                message: "unreachable".into(),
            }),
        );
        assert!(!state.oom_killed);
        let json = serde_json::to_string(&state).expect("encode");
        let back: ContainerState = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, state);
        // A state written before exit reasons existed still reads.
        let old: ContainerState =
            serde_json::from_str(r#"{"status": "exited", "exit_code": 3}"#).expect("old state");
        assert_eq!(old.exit_reason, None);
        assert!(!old.oom_killed);
    }
}
