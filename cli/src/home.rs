//! Where berth keeps its data: `$BERTH_HOME`, else the platform's data
//! directory (`~/.local/share/berth`, `~/Library/Application Support/berth`,
//! `%APPDATA%\berth`). berth writes nowhere else.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// berth's data directory (not created here).
pub fn berth_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("BERTH_HOME").filter(|home| !home.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    dirs::data_dir()
        .map(|dir| dir.join("berth"))
        .context("cannot find a data directory for berth; set BERTH_HOME to choose one")
}

/// Where compiled code is cached.
pub fn compile_cache_dir() -> Result<PathBuf> {
    Ok(berth_home()?.join("cache").join("compiled"))
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

/// Unpacked image roots, one directory per layer chain.
pub fn rootfs_cache_dir() -> Result<PathBuf> {
    Ok(berth_home()?.join("rootfs"))
}

/// Registry credentials (docker's config.json format, mode 0600).
pub fn auth_file() -> Result<PathBuf> {
    Ok(berth_home()?.join("auth.json"))
}

/// Containers: records of detached containers (`<id>/`, see
/// `containers.rs`) and scratch space for running ones (private `/tmp`
/// directories).
pub fn containers_dir() -> Result<PathBuf> {
    Ok(berth_home()?.join("containers"))
}

/// Opens (creating if needed) the local image store.
pub fn open_store() -> Result<berth_registry::Store> {
    let dir = image_store_dir()?;
    berth_registry::Store::open(&dir)
        .with_context(|| format!("cannot open the image store at {}", dir.display()))
}
