//! Where berth keeps its data: `$BERTH_HOME`, else the platform's data
//! directory (`~/.local/share/berth`, `~/Library/Application Support/berth`,
//! `%APPDATA%\berth`). berth writes nowhere else.
//!
//! The data directory holds secrets (`-e` values in container records,
//! registry credentials, logs) and native code that berth executes (the
//! compile cache), so on unix it belongs to the user alone: berth creates
//! it and everything in it owner-only (directories 0700, files 0600, with
//! the helpers of `berth_fs`), and checks it as ssh checks `~/.ssh`. A directory
//! owned by someone else, or writable by group or others, is refused (its
//! contents could have been replaced). One that others can only read is
//! made owner-only if it is berth's own (empty, or holding only what berth
//! keeps there, as older versions left it), and refused otherwise: berth
//! does not change the mode of a directory it does not own, such as a
//! home directory given as `BERTH_HOME`. On Windows the directory inherits
//! the per-user ACL of `%APPDATA%` and is not checked.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_fs::create_private_dir_all;

/// What berth keeps at the top of its data directory (`.auth.json.*` are
/// temporary files of `auth.json`; older versions named them `.auth-*`).
#[cfg(unix)]
const OWN_ENTRIES: [&str; 7] = [
    "auth.json",
    "berth.sock",
    "cache",
    "containers",
    "daemon",
    "images",
    "rootfs",
];

/// berth's data directory, created owner-only if missing and checked (see
/// the module documentation).
pub fn berth_home() -> Result<PathBuf> {
    let home = match std::env::var_os("BERTH_HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => dirs::data_dir()
            .map(|dir| dir.join("berth"))
            .context("cannot find a data directory for berth; set BERTH_HOME to choose one")?,
    };
    create_private_dir_all(&home)
        .with_context(|| format!("cannot create berth's data directory {}", home.display()))?;
    secure(&home)?;
    Ok(home)
}

/// Refuses a data directory others could have changed, and makes one that
/// others can read owner-only.
#[cfg(unix)]
fn secure(home: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta =
        std::fs::metadata(home).with_context(|| format!("cannot read {}", home.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "berth's data directory {} is not a directory; set BERTH_HOME to a directory of your own",
            home.display()
        );
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        anyhow::bail!(
            "berth's data directory {} belongs to uid {}, not to you (uid {me}): it holds secrets and native code berth runs; set BERTH_HOME to a directory of your own",
            home.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "berth's data directory {} is writable by others (mode {mode:04o}): anyone who can write there can change container records and the native code berth runs; fix it with `chmod 700 {}`",
            home.display(),
            home.display()
        );
    }
    if mode & 0o077 != 0 {
        let names: Vec<String> = std::fs::read_dir(home)
            .with_context(|| format!("cannot read {}", home.display()))?
            .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read {}", home.display()))?;
        let own = |name: &String| {
            OWN_ENTRIES.contains(&name.as_str())
                || name.starts_with(".auth.json.")
                || name.starts_with(".auth-")
        };
        if !names.iter().all(own) {
            anyhow::bail!(
                "berth's data directory {} is readable by others (mode {mode:04o}) and holds files that are not berth's: berth keeps secrets there; make it owner-only with `chmod 700 {}`, or set BERTH_HOME to a directory of berth's own",
                home.display(),
                home.display()
            );
        }
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} owner-only", home.display()))?;
        // Data already there may have been exposed (older versions wrote
        // records readable by others); an empty directory exposed nothing.
        if !names.is_empty() {
            eprintln!(
                "berth: warning: {} was readable by others (mode {mode:04o}); it is now owner-only (0700)",
                home.display()
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn secure(_home: &Path) -> Result<()> {
    Ok(())
}

/// Where compiled code is cached (created owner-only when possible; the
/// compile cache itself refuses a directory others can write).
pub fn compile_cache_dir() -> Result<PathBuf> {
    let dir = berth_home()?.join("cache").join("compiled");
    // Failing here only means the cache will not be used.
    let _ = create_private_dir_all(&dir);
    Ok(dir)
}

/// The hidden subcommand that compiles one program in a child process.
pub const COMPILE_COMMAND: &str = "__compile";

/// The compile cache, compiling misses in a child process (`berth
/// __compile`) under `limits`.
pub fn compile_cache(limits: berth_runtime::CompileLimits) -> Result<berth_runtime::CompileCache> {
    let program = std::env::current_exe()
        .context("cannot find berth's own executable to compile programs with")?;
    Ok(
        berth_runtime::CompileCache::new(compile_cache_dir()?).with_isolation(
            berth_runtime::CompileIsolation::Child(berth_runtime::ChildCompiler {
                program,
                args: vec![COMPILE_COMMAND.into()],
                limits,
            }),
        ),
    )
}

/// The compile limits: `BERTH_COMPILE_TIMEOUT` (a duration) and
/// `BERTH_COMPILE_MEMORY` (a size) when set, else 180 s and 2 GiB. A run's
/// `--timeout`, when given, replaces the time limit (`run_timeout`).
pub fn compile_limits(
    run_timeout: Option<std::time::Duration>,
) -> Result<berth_runtime::CompileLimits> {
    use berth_runtime::quantity::{parse_duration, parse_memory};
    let mut limits = berth_runtime::CompileLimits::DEFAULT;
    if let Some(text) = std::env::var_os("BERTH_COMPILE_TIMEOUT") {
        let text = text.to_string_lossy();
        limits.deadline = parse_duration(&text)
            .map_err(|error| anyhow::anyhow!("invalid BERTH_COMPILE_TIMEOUT {text:?}: {error}"))?;
    }
    if let Some(text) = std::env::var_os("BERTH_COMPILE_MEMORY") {
        let text = text.to_string_lossy();
        limits.memory_bytes = parse_memory(&text)
            .map_err(|error| anyhow::anyhow!("invalid BERTH_COMPILE_MEMORY {text:?}: {error}"))?;
    }
    if let Some(timeout) = run_timeout {
        limits.deadline = timeout;
    }
    Ok(limits)
}

/// The local image store.
pub fn image_store_dir() -> Result<PathBuf> {
    Ok(berth_home()?.join("images"))
}

/// Unpacked image roots, one directory per layer chain (created
/// owner-only).
pub fn rootfs_cache_dir() -> Result<PathBuf> {
    let dir = berth_home()?.join("rootfs");
    create_private_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Registry credentials (docker's config.json format, mode 0600).
pub fn auth_file() -> Result<PathBuf> {
    Ok(berth_home()?.join("auth.json"))
}

/// Containers: records of detached containers (`<id>/`, see
/// [`berth_container::records`]) and scratch space for running ones
/// (private `/tmp` directories).
pub fn containers_dir() -> Result<PathBuf> {
    Ok(berth_home()?.join("containers"))
}

/// The daemon's own files: its state database, lock, pods' logs and
/// volumes (created owner-only).
pub fn daemon_dir() -> Result<PathBuf> {
    let dir = berth_home()?.join("daemon");
    create_private_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The daemon's API socket.
pub fn socket_path() -> Result<PathBuf> {
    Ok(berth_home()?.join("berth.sock"))
}

/// Opens (creating if needed) the local image store.
pub fn open_store() -> Result<berth_registry::Store> {
    let dir = image_store_dir()?;
    berth_registry::Store::open(&dir)
        .with_context(|| format!("cannot open the image store at {}", dir.display()))
}

/// Opens (creating if needed) the records of detached containers.
pub fn open_records() -> Result<berth_container::FileRecords> {
    let root = containers_dir()?;
    let root = std::path::absolute(&root).unwrap_or(root);
    Ok(berth_container::FileRecords::open(root)?)
}

/// The unpack limits: the defaults, or the `BERTH_UNPACK_MAX_*`
/// environment variables.
pub fn unpack_limits() -> Result<berth_registry::unpack::UnpackLimits> {
    Ok(berth_registry::unpack::UnpackLimits::from_settings(
        |name| std::env::var(name).ok(),
    )?)
}
