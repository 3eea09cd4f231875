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
