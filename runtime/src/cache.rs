//! The compile cache: machine code produced by Cranelift, stored under
//! berth's data dir so that the second run of a module skips compilation.
//!
//! An entry is keyed by the sha256 of the WebAssembly binary together with
//! the engine's `precompile_compatibility_hash` (wasmtime version, target
//! and every codegen setting), so a different engine never sees another's
//! code. Each entry carries a sha256 of its own payload, checked before the
//! bytes reach `deserialize`: a truncated or corrupted entry is discarded
//! and rebuilt, never loaded. Entries are written to a temp file, fsynced
//! and renamed into place, so concurrent runs and crashes leave either a
//! whole entry or none. A miss may be compiled in a child process under
//! limits ([`CompileIsolation`]); nothing is stored unless it succeeded.
//!
//! The checksum detects damage, not tampering: whoever can write an entry
//! can make berth execute their native code. So the cache trusts only what
//! the user alone could have written. On unix, a cache directory that is
//! not owned by the user, or that group or others can write, is not used at
//! all (programs are compiled in memory, with one warning naming the
//! directory and the fix); an entry that is not owned by the user, or that
//! group or others can write, is discarded and rebuilt. The checks are made
//! on the opened entry, so what is checked is what is read. The directory
//! is created owner-only (0700) and entries owner-only (0600). On Windows
//! no owner or ACL checks are made: the cache lives in the user's profile
//! (`%APPDATA%`), whose ACL already excludes other users.

// Without the compiler, nothing is compiled and so nothing is cached; the
// type stays so that front doors configure both builds alike.
#![cfg_attr(not(feature = "compiler"), allow(dead_code, unused_imports))]

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::RuntimeError;
use crate::compile::{ChildFailure, CompileIsolation, compile_in_child};
#[cfg(feature = "compiler")]
use crate::program::compile;
use crate::program::{Code, WasmKind, deserialize};
use crate::sizing::Reservation;

const ENTRY_MAGIC: &[u8; 8] = b"BERTHCW1";
const HEADER_LEN: usize = ENTRY_MAGIC.len() + 32;

/// A directory of compiled code, and where programs missing from it are
/// compiled.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    isolation: CompileIsolation,
    /// Whether the untrusted directory was reported already (once per
    /// cache, shared by its clones).
    warned: Arc<AtomicBool>,
}

/// Where a program came from, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid cache entry.
    Hit,
    /// Compiled and stored.
    Miss,
    /// An entry existed but failed verification; it was replaced.
    Rebuilt,
    /// Compiled in memory: the cache directory is not trusted (see the
    /// module documentation), so nothing was loaded from it or stored.
    Untrusted,
}

/// Feeds `Hash` output into sha256 so the key is stable across processes.
pub(crate) struct Sha256Hasher(pub(crate) Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

impl CompileCache {
    /// A cache rooted at `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache {
            dir: dir.into(),
            isolation: CompileIsolation::InProcess,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Compiles misses as `isolation` says (in this process by default).
    /// Hits never start anything.
    pub fn with_isolation(mut self, isolation: CompileIsolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    #[cfg(feature = "compiler")]
    /// The path of the entry for the binary whose sha256 is `digest`,
    /// compiled by `engine`.
    fn entry_path(&self, engine: &Engine, digest: &[u8; 32], kind: WasmKind) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(b"berth-compile-cache-v1\0");
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.write(kind.noun().as_bytes());
        hasher.write(digest);
        let key = hex::encode(hasher.0.finalize());
        self.dir.join(format!("{key}.cwasm"))
    }

    #[cfg(feature = "compiler")]
    /// Loads `binary` (whose sha256 is `digest`) from the cache, or
    /// compiles and stores it; also says whether it hit.
    /// `reservation` is the engine's, for a compile child to compile for.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        reservation: Option<Reservation>,
        binary: &[u8],
        digest: &[u8; 32],
        kind: WasmKind,
        origin: &str,
    ) -> Result<(Code, CacheOutcome), RuntimeError> {
        if let Some(reason) = distrust_dir(&self.dir) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "not using the compile cache {}: {reason}, so anyone could plant native code there; compiling in memory. Fix: {}",
                    self.dir.display(),
                    fix(&self.dir)
                );
            }
            let (program, _) = self.compile_miss(engine, reservation, binary, kind, origin)?;
            return Ok((program, CacheOutcome::Untrusted));
        }
        let path = self.entry_path(engine, digest, kind);
        let mut outcome = CacheOutcome::Miss;
        match read_entry(&path) {
            Ok(entry) => match entry.and_then(|entry| {
                verified_payload(&entry).and_then(|payload| deserialize(engine, payload, kind))
            }) {
                Ok(code) => {
                    tracing::debug!(path = %path.display(), "compile cache hit");
                    return Ok((code, CacheOutcome::Hit));
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "discarding invalid compile cache entry");
                    let _ = std::fs::remove_file(&path);
                    outcome = CacheOutcome::Rebuilt;
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read compile cache entry")
            }
        }
        let (program, serialized) = self.compile_miss(engine, reservation, binary, kind, origin)?;
        match serialized {
            Ok(payload) => {
                if let Err(error) = self.store(&path, &payload) {
                    // A read-only or full disk must not stop the run.
                    tracing::warn!(path = %path.display(), %error, "cannot store compiled code");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot serialize compiled code"),
        }
        Ok((program, outcome))
    }

    #[cfg(feature = "compiler")]
    /// Compiles `binary` as the cache's isolation says: the program, and
    /// its serialized code to store (or why it could not be serialized).
    fn compile_miss(
        &self,
        engine: &Engine,
        reservation: Option<Reservation>,
        binary: &[u8],
        kind: WasmKind,
        origin: &str,
    ) -> Result<(Code, wasmtime::Result<Vec<u8>>), RuntimeError> {
        Ok(match &self.isolation {
            CompileIsolation::InProcess => {
                let code = compile(engine, binary, kind, origin)?;
                let serialized = match &code {
                    Code::Module(module) => module.serialize(),
                    Code::Component(component) => component.serialize(),
                };
                (code, serialized)
            }
            CompileIsolation::Child(child) => {
                let payload = match compile_in_child(child, reservation, binary, kind, origin) {
                    Ok(payload) => payload,
                    Err(ChildFailure::Invalid(reason)) => {
                        return Err(RuntimeError::InvalidWasm {
                            origin: origin.to_owned(),
                            kind: kind.noun(),
                            reason,
                        });
                    }
                    Err(ChildFailure::Limit(error) | ChildFailure::Failed(error)) => {
                        return Err(error);
                    }
                };
                // Loading is where this engine's own requirements (e.g. a
                // pool's memory size) are checked, as compiling in process
                // would have: the same error.
                let code = deserialize(engine, &payload, kind).map_err(|reason| {
                    RuntimeError::InvalidWasm {
                        origin: origin.to_owned(),
                        kind: kind.noun(),
                        reason,
                    }
                })?;
                (code, Ok(payload))
            }
        })
    }

    fn store(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        berth_fs::create_private_dir_all(&self.dir)?;
        berth_fs::write_atomic_in(&self.dir, path, |file| {
            file.write_all(ENTRY_MAGIC)?;
            file.write_all(&Sha256::digest(payload))?;
            file.write_all(payload)
        })
    }
}

/// Reads the entry at `path`: its bytes, or why it is not trusted (checked
/// on the opened file, so that what is checked is what is read).
fn read_entry(path: &Path) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Err("not a regular file".into()));
    }
    if let Some(reason) = distrust(&meta) {
        return Ok(Err(reason));
    }
    let mut entry = Vec::new();
    file.read_to_end(&mut entry)?;
    Ok(Ok(entry))
}

/// Why the cache directory `dir` cannot be trusted, if it cannot. A
/// directory that does not exist yet is created owner-only by `store`.
fn distrust_dir(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Some("it is not a directory".into()),
        Ok(meta) => distrust(&meta),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => Some(format!("it cannot be read ({error})")),
    }
}

/// Why a cache file or directory with `meta` cannot be trusted: another
/// owner, or writable by group or others.
#[cfg(unix)]
fn distrust(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some(format!(
            "it belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    (mode & 0o022 != 0).then(|| format!("group or others can write to it (mode {mode:04o})"))
}

#[cfg(not(unix))]
fn distrust(_meta: &std::fs::Metadata) -> Option<String> {
    None
}

/// How to make `dir` trusted again.
fn fix(dir: &Path) -> String {
    format!(
        "`chmod 700 {0}` if it is yours, else remove {0} (berth recreates it)",
        dir.display()
    )
}

/// Checks an entry's magic and checksum and returns its payload.
fn verified_payload(entry: &[u8]) -> Result<&[u8], String> {
    if entry.len() < HEADER_LEN || &entry[..ENTRY_MAGIC.len()] != ENTRY_MAGIC {
        return Err("not a berth compile cache entry (truncated or foreign)".into());
    }
    let (expected, payload) = entry[ENTRY_MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != expected {
        return Err("checksum mismatch (corrupted or truncated)".into());
    }
    Ok(payload)
}
