//! Typed errors of the registry library. Front doors (CLI, daemon) map them
//! to messages and exit codes; every variant names the offending value and,
//! where there is one, the way out.

use std::path::PathBuf;

/// Everything that can go wrong while handling images.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An image reference could not be parsed.
    #[error("invalid image reference {value:?}: {reason}")]
    Reference {
        /// The text as given.
        value: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A digest is not of the form `sha256:<64 hex digits>`.
    #[error("invalid digest {value:?}: expected sha256:<64 lowercase hex digits>")]
    Digest {
        /// The text as given.
        value: String,
    },
    /// Content did not hash to the digest it was announced under.
    #[error(
        "content of {what} does not match its digest: expected {expected}, got {actual}; nothing was stored"
    )]
    DigestMismatch {
        /// What was being read (a blob, a layer, a file in an archive).
        what: String,
        /// The digest the content should have.
        expected: String,
        /// The digest it actually has.
        actual: String,
    },
    /// Content was shorter or longer than its descriptor said.
    #[error(
        "size of {what} does not match its descriptor: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        /// What was being read.
        what: String,
        /// The size announced by the descriptor.
        expected: u64,
        /// The size actually read.
        actual: u64,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What berth was doing ("cannot read", "cannot write").
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The image is not in the local store.
    #[error(
        "no such image {0:?} in the local store; pull it or build it first (`berth images` lists what exists)"
    )]
    ImageNotFound(String),
    /// A blob the store should hold is missing.
    #[error("blob {0} is missing from the local store; pull the image again")]
    BlobNotFound(String),
    /// A JSON document (manifest, config, index) is malformed.
    #[error("invalid {what}: {reason}")]
    Json {
        /// Which document.
        what: String,
        /// serde_json's explanation.
        reason: String,
    },
    /// The image is not a berth (WebAssembly) image in a supported format.
    #[error("unsupported image {image}: {reason}")]
    Unsupported {
        /// The image (reference or digest).
        image: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A Dockerfile line is malformed or uses an instruction berth cannot honour.
    #[error("{file}: line {line}: {message}")]
    Dockerfile {
        /// The Dockerfile's path.
        file: String,
        /// 1-based line number of the instruction.
        line: usize,
        /// What is wrong and what to do instead.
        message: String,
    },
    /// The build failed for a reason not tied to one Dockerfile line.
    #[error("build failed: {0}")]
    Build(String),
    /// A layer entry was refused while unpacking.
    #[error("refusing layer {layer} entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The layer's digest.
        layer: String,
        /// The path of the tar entry as stored.
        entry: String,
        /// Why it would escape or is not allowed.
        reason: String,
    },
    /// A layer's content does not hash to the diff_id its image config
    /// claims for it.
    #[error(
        "image {image} is refused: layer {layer} unpacks to content with digest {actual}, but the image config claims {expected} for it (a forged config or a corrupt layer)"
    )]
    DiffIdMismatch {
        /// The image's manifest digest.
        image: String,
        /// The layer's blob digest.
        layer: String,
        /// The diff_id the config claims.
        expected: String,
        /// The digest of the layer's uncompressed content.
        actual: String,
    },
    /// Unpacking an image would exceed one of the [`crate::unpack::UnpackLimits`].
    #[error(
        "image {image} is refused: {what} exceeds the unpack limit of {limit} {unit}; raise it with {setting} if you trust this image"
    )]
    UnpackLimit {
        /// The image's manifest digest.
        image: String,
        /// What went over ("layer sha256:… (its uncompressed content)", "the image's entries").
        what: String,
        /// The limit.
        limit: u64,
        /// "bytes" or "entries".
        unit: &'static str,
        /// The environment variable that sets the limit in the berth CLI.
        setting: &'static str,
    },
    /// A setting (environment variable) has a value berth cannot use.
    #[error("invalid {name}={value:?}: {reason}")]
    Setting {
        /// The setting's name.
        name: &'static str,
        /// The value as given.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// An archive (save/load tar) is malformed.
    #[error("invalid archive {path}: {reason}")]
    Archive {
        /// The archive's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry rejected the credentials.
    #[error(
        "authentication to {registry} failed: {reason}; check the user name and password (`berth login {registry}`)"
    )]
    Auth {
        /// The registry host.
        registry: String,
        /// The registry's explanation.
        reason: String,
    },
    /// A request to the registry failed.
    #[error("registry {registry}: {reason}")]
    Remote {
        /// The registry host.
        registry: String,
        /// What failed.
        reason: String,
    },
    /// The credential file could not be understood.
    #[error("invalid credentials file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl RegistryError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RegistryError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, err: serde_json::Error) -> Self {
        RegistryError::Json {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
