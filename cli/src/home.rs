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
