//! What a sandbox is given: arguments, environment, mounts, working
//! directory, limits, stdio and network access. Everything is denied unless listed here:
//! no host file, environment variable or socket reaches a guest otherwise.
//!
//! The user-facing forms (`HOST:GUEST[:ro]`, `KEY=VALUE`, env files) are
//! parsed by the container library (`berth-container`), not here.

use std::path::PathBuf;

use crate::limits::Limits;
use crate::net::NetworkPolicy;
use crate::stdio::{Output, Stdin};

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host directory (canonical, so symlinks in the spec are resolved
    /// once, by the host, before the guest starts).
    pub host: PathBuf,
    /// Where the guest sees it: an absolute guest path such as `/data` or `/`.
    pub guest: String,
    /// Whether writes are refused.
    pub read_only: bool,
}

/// Normalizes an absolute guest path: collapses `//` and `.`, strips a
/// trailing `/` (but keeps `/` itself). Returns `None` for relative paths or
/// paths with `..`.
pub fn normalize_guest_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Which code the sandbox runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Entrypoint {
    /// A command: `_start` of a module, `wasi:cli/run` of a component.
    #[default]
    Command,
    /// A named export of a core module, called with the arguments parsed as
    /// its parameter types (`FILE#export` on the command line).
    Export(String),
}

/// `env` with later duplicates overriding earlier ones, in first-seen
/// order (docker's behaviour for repeated `-e` and image `ENV`).
pub fn merge_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (key, value) in env {
        match merged.iter_mut().find(|(existing, _)| existing == key) {
            Some(slot) => slot.1 = value.clone(),
            None => merged.push((key.clone(), value.clone())),
        }
    }
    merged
}

/// Everything a sandbox needs besides the program.
#[derive(Debug, Default)]
pub struct SandboxSpec {
    /// `argv[0]` as the guest sees it.
    pub program_name: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Environment variables, in order; later duplicates override.
    pub env: Vec<(String, String)>,
    /// Directories visible to the guest.
    pub mounts: Vec<Mount>,
    /// The guest's working directory (absolute guest path).
    pub workdir: Option<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Which code to run.
    pub entrypoint: Entrypoint,
    /// Standard input.
    pub stdin: Stdin,
    /// Standard output.
    pub stdout: Output,
    /// Standard error.
    pub stderr: Output,
    /// Ports the guest may listen on and hosts it may reach (WASI preview2
    /// components only; the default grants no network access).
    pub network: NetworkPolicy,
}

impl SandboxSpec {
    /// The environment with later duplicates overriding earlier ones, in
    /// first-seen order (docker's behaviour for repeated `-e`).
    pub fn effective_env(&self) -> Vec<(String, String)> {
        merge_env(&self.env)
    }

    /// The mount that covers guest path `guest` and the rest of the path
    /// below it (relative, empty for the mount itself), or `None` when no
    /// mount covers it or the path is not absolute.
    ///
    /// Mounts are matched by whole path components, so `/tmpx` is not
    /// inside `/tmp`; the deepest mount wins, and among mounts at the same
    /// guest path the last one listed. The rest must be resolved beneath the
    /// mount's directory (never joined onto its host path and opened): it
    /// may name guest-made symlinks.
    pub fn mount_for(&self, guest: &str) -> Option<(&Mount, String)> {
        let guest = normalize_guest_path(guest)?;
        self.mounts
            .iter()
            .filter_map(|mount| {
                let root = normalize_guest_path(&mount.guest)?;
                let rest = if root == "/" {
                    guest.trim_start_matches('/')
                } else if guest == root {
                    ""
                } else {
                    guest.strip_prefix(&root)?.strip_prefix('/')?
                };
                Some((root.len(), mount, rest.to_owned()))
            })
            .max_by_key(|(depth, _, _)| *depth)
            .map(|(_, mount, rest)| (mount, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_match_whole_components_and_the_deepest_wins() {
        let mount = |guest: &str, read_only: bool| Mount {
            host: PathBuf::from(format!("/host{guest}")),
            guest: guest.to_owned(),
            read_only,
        };
        let spec = SandboxSpec {
            mounts: vec![
                mount("/", true),
                mount("/tmp", false),
                mount("/data2", true),
                mount("/data", false),
            ],
            ..SandboxSpec::default()
        };
        let found = |guest: &str| {
            spec.mount_for(guest)
                .map(|(mount, rest)| (mount.guest.clone(), rest, mount.read_only))
        };
        assert_eq!(found("/tmp"), Some(("/tmp".into(), "".into(), false)));
        assert_eq!(
            found("/tmp/a/b"),
            Some(("/tmp".into(), "a/b".into(), false))
        );
        // A sibling that shares a prefix is not inside the mount.
        assert_eq!(found("/tmpx"), Some(("/".into(), "tmpx".into(), true)));
        assert_eq!(found("/data2/x"), Some(("/data2".into(), "x".into(), true)));
        assert_eq!(found("/data/x"), Some(("/data".into(), "x".into(), false)));
        assert_eq!(found("/"), Some(("/".into(), "".into(), true)));
        assert_eq!(found("relative"), None);
        let no_root = SandboxSpec {
            mounts: vec![mount("/tmp", false)],
            ..SandboxSpec::default()
        };
        assert!(no_root.mount_for("/tmpx").is_none());
        assert!(no_root.mount_for("/").is_none());
    }

    #[test]
    fn later_env_overrides() {
        let spec = SandboxSpec {
            env: vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("A".into(), "3".into()),
            ],
            ..SandboxSpec::default()
        };
        assert_eq!(
            spec.effective_env(),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }
}
