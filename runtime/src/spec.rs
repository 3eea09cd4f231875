//! What a sandbox is given: arguments, environment, mounts, working
//! directory, limits, stdio and network access. Everything is denied unless listed here:
//! no host file, environment variable or socket reaches a guest otherwise.
//!
//! The parsers for the user-facing forms (`HOST:GUEST[:ro]`, `KEY=VALUE`,
//! env files) live here so that the CLI, the daemon and the shim agree.

use std::path::{Path, PathBuf};

use crate::RuntimeError;
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

impl Mount {
    /// Parses docker's `HOST:GUEST[:ro|:rw]` and checks that HOST is an
    /// existing directory.
    ///
    /// The split is made at the last `:` that is followed by `/`, so Windows
    /// host paths such as `C:\data:/data` work.
    pub fn parse(spec: &str) -> Result<Mount, RuntimeError> {
        let invalid = |reason: String| RuntimeError::Volume {
            spec: spec.to_owned(),
            reason,
        };
        let (rest, read_only) = if let Some(rest) = spec.strip_suffix(":ro") {
            (rest, true)
        } else if let Some(rest) = spec.strip_suffix(":rw") {
            (rest, false)
        } else {
            (spec, false)
        };
        let split = rest
            .rmatch_indices(":/")
            .next()
            .map(|(index, _)| index)
            .ok_or_else(|| {
                invalid("expected HOST:GUEST or HOST:GUEST:ro with an absolute GUEST path, e.g. ./data:/data:ro".into())
            })?;
        let (host, guest) = (&rest[..split], &rest[split + 1..]);
        if host.is_empty() {
            return Err(invalid(
                "the host directory is empty; expected HOST:GUEST[:ro]".into(),
            ));
        }
        let guest = normalize_guest_path(guest).ok_or_else(|| {
            invalid(format!(
                "guest path {guest:?} must be absolute and must not contain '..'"
            ))
        })?;
        let host_path = Path::new(host);
        let metadata = std::fs::metadata(host_path)
            .map_err(|error| invalid(format!("host directory {host:?} cannot be used: {error}")))?;
        if !metadata.is_dir() {
            return Err(invalid(format!(
                "host path {host:?} is not a directory; berth mounts directories only"
            )));
        }
        let host = std::fs::canonicalize(host_path)
            .map_err(|error| invalid(format!("cannot resolve host directory {host:?}: {error}")))?;
        Ok(Mount {
            host,
            guest,
            read_only,
        })
    }
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

/// Parses `KEY=VALUE`. A bare `KEY` takes the host's value, as docker does,
/// and is skipped when the host has none. Returns `None` for that skip.
pub fn parse_env(spec: &str) -> Result<Option<(String, String)>, RuntimeError> {
    let (key, value) = match spec.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (spec, None),
    };
    if key.is_empty() || key.contains('\0') || value.is_some_and(|v| v.contains('\0')) {
        return Err(RuntimeError::Env {
            spec: spec.to_owned(),
            reason: "expected KEY=VALUE (or KEY to pass the host's value) with a non-empty KEY"
                .into(),
        });
    }
    Ok(match value {
        Some(value) => Some((key.to_owned(), value.to_owned())),
        None => std::env::var(key).ok().map(|value| (key.to_owned(), value)),
    })
}

/// Parses a docker env file: one `KEY=VALUE` or `KEY` per line, `#`
/// comments and blank lines ignored. Errors name the file and line.
pub fn parse_env_file(path: &Path) -> Result<Vec<(String, String)>, RuntimeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| RuntimeError::io("cannot read env file", path, source))?;
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_env(line) {
            Ok(Some(var)) => vars.push(var),
            Ok(None) => {}
            Err(RuntimeError::Env { spec, reason }) => {
                return Err(RuntimeError::Env {
                    spec,
                    reason: format!("{reason} (in {} line {})", path.display(), index + 1),
                });
            }
            Err(other) => return Err(other),
        }
    }
    Ok(vars)
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
    fn parses_volumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().display().to_string();
        let mount = Mount::parse(&format!("{host}:/data:ro")).expect("valid");
        assert_eq!(mount.guest, "/data");
        assert!(mount.read_only);
        let mount = Mount::parse(&format!("{host}:/")).expect("root");
        assert_eq!(mount.guest, "/");
        assert!(!mount.read_only);
        let mount = Mount::parse(&format!("{host}://a/./b/")).expect("normalized");
        assert_eq!(mount.guest, "/a/b");
    }

    #[test]
    fn rejects_bad_volumes_with_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().display().to_string();
        let missing = format!("{host}/missing:/data");
        for spec in [
            "nocolon".to_owned(),
            format!("{host}:relative"),
            format!("{host}:/a/../b"),
            ":/data".to_owned(),
            missing,
        ] {
            let error = Mount::parse(&spec).expect_err(&spec);
            assert!(error.to_string().contains(&format!("{spec:?}")), "{error}");
        }
    }

    #[test]
    fn env_parsing() {
        assert_eq!(
            parse_env("A=b=c").ok().flatten(),
            Some(("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_env("A=").ok().flatten(),
            Some(("A".into(), String::new()))
        );
        assert!(parse_env("=x").is_err());
        assert_eq!(
            parse_env("BERTH_SURELY_UNSET_VARIABLE").ok().flatten(),
            None
        );
    }

    #[test]
    fn env_file_reports_line_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("env");
        std::fs::write(&path, "# comment\n\nA=1\nB=two words\n=bad\n").expect("write");
        let error = parse_env_file(&path).expect_err("line 5 is bad");
        assert!(error.to_string().contains("line 5"), "{error}");
        std::fs::write(&path, "A=1\n  B=2\n").expect("write");
        let vars = parse_env_file(&path).expect("valid");
        assert_eq!(
            vars,
            vec![("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }

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
