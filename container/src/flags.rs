//! Docker's user-facing syntax for container settings: `HOST:GUEST[:ro]`
//! volumes, `KEY=VALUE` environment variables and env files,
//! `[HOSTIP:]HOSTPORT:CONTAINERPORT` published ports, `HOST[:PORT]`
//! outbound rules and an image's `EXPOSE` entries. Every front door that
//! takes these forms parses them here, into the typed values of a
//! [`ContainerSpec`](crate::ContainerSpec) and of the runtime.
//!
//! Nothing here reads the process environment: `-e KEY` (the value of KEY
//! where the user typed it) is looked up through the closure the caller
//! passes, once, when the spec is made.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use berth_runtime::spec::normalize_guest_path;
use berth_runtime::{Mount, OutboundRule, PortMapping};

use crate::spec::MountSpec;

/// A setting in docker's syntax that is malformed or cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// A `-v` value is malformed or its host directory cannot be used.
    #[error("invalid volume {spec:?}: {reason}")]
    Volume {
        /// The text as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `-e` value (or env file line) is malformed.
    #[error("invalid environment variable {spec:?}: {reason}")]
    Env {
        /// The text as given.
        spec: String,
        /// What is wrong with it (and where, for an env file).
        reason: String,
    },
    /// An env file cannot be read.
    // The OS error is part of the message rather than a `source`, so that
    // printing the error chain does not repeat it.
    #[error("cannot read env file {path}: {error}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A `-w` value is not an absolute guest path.
    #[error("invalid workdir {dir:?}: expected an absolute guest path without '..', e.g. /app")]
    Workdir {
        /// The text as given.
        dir: String,
    },
    /// A `-p` value is malformed.
    #[error(
        "invalid port mapping {spec:?}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT, e.g. 8080:8080 or 127.0.0.1:10080:8080"
    )]
    Publish {
        /// The text as given.
        spec: String,
    },
    /// An `--allow-outbound` value is malformed.
    #[error("invalid outbound rule {spec:?}: expected HOST or HOST:PORT, e.g. api.example.com:443")]
    Outbound {
        /// The text as given.
        spec: String,
    },
    /// An exposed port (image `EXPOSE`) is malformed.
    #[error("invalid exposed port {spec:?}: expected PORT or PORT/tcp, e.g. 8080/tcp")]
    Expose {
        /// The text as given.
        spec: String,
    },
}

/// Parses docker's `HOST:GUEST[:ro|:rw]` and checks that HOST is an
/// existing directory, which is resolved (symlinks and all) once, here.
///
/// The split is made at the last `:` that is followed by `/`, so Windows
/// host paths such as `C:\data:/data` work.
pub fn parse_mount(spec: &str) -> Result<MountSpec, FlagError> {
    let invalid = |reason: String| FlagError::Volume {
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
    let mount = checked_mount(spec, Path::new(host), guest, read_only)?;
    Ok(MountSpec {
        host: mount.host,
        guest: mount.guest,
        read_only,
    })
}

/// The runtime's mount of host directory `host` at `guest`, once `host` is
/// checked to be an existing directory and resolved; errors name `spec`.
pub(crate) fn checked_mount(
    spec: &str,
    host: &Path,
    guest: &str,
    read_only: bool,
) -> Result<Mount, FlagError> {
    let invalid = |reason: String| FlagError::Volume {
        spec: spec.to_owned(),
        reason,
    };
    let guest = normalize_guest_path(guest).ok_or_else(|| {
        invalid(format!(
            "guest path {guest:?} must be absolute and must not contain '..'"
        ))
    })?;
    let shown = host.display();
    let metadata = std::fs::metadata(host).map_err(|error| {
        invalid(format!(
            "host directory \"{shown}\" cannot be used: {error}"
        ))
    })?;
    if !metadata.is_dir() {
        return Err(invalid(format!(
            "host path \"{shown}\" is not a directory; berth mounts directories only"
        )));
    }
    let host = std::fs::canonicalize(host).map_err(|error| {
        invalid(format!(
            "cannot resolve host directory \"{shown}\": {error}"
        ))
    })?;
    Ok(Mount {
        host,
        guest,
        read_only,
    })
}

/// Parses `KEY=VALUE`. A bare `KEY` takes the value `lookup` gives it (the
/// CLI passes its own environment, as docker does) and is skipped when
/// there is none: that skip is `None`.
pub fn parse_env(
    spec: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, FlagError> {
    let (key, value) = match spec.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (spec, None),
    };
    if key.is_empty() || key.contains('\0') || value.is_some_and(|v| v.contains('\0')) {
        return Err(FlagError::Env {
            spec: spec.to_owned(),
            reason: "expected KEY=VALUE (or KEY to pass the host's value) with a non-empty KEY"
                .into(),
        });
    }
    Ok(match value {
        Some(value) => Some((key.to_owned(), value.to_owned())),
        None => lookup(key).map(|value| (key.to_owned(), value)),
    })
}

/// Parses a docker env file: one `KEY=VALUE` or `KEY` per line, `#`
/// comments and blank lines ignored; a bare `KEY` is looked up as in
/// [`parse_env`]. Errors name the file and line.
pub fn parse_env_file(
    path: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, FlagError> {
    let text = std::fs::read_to_string(path).map_err(|error| FlagError::EnvFile {
        path: path.to_path_buf(),
        error,
    })?;
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_env(line, &lookup) {
            Ok(Some(var)) => vars.push(var),
            Ok(None) => {}
            Err(FlagError::Env { spec, reason }) => {
                return Err(FlagError::Env {
                    spec,
                    reason: format!("{reason} (in {} line {})", path.display(), index + 1),
                });
            }
            Err(other) => return Err(other),
        }
    }
    Ok(vars)
}

/// Checks a working directory (`-w`): an absolute guest path, normalized.
pub fn parse_workdir(dir: &str) -> Result<String, FlagError> {
    normalize_guest_path(dir).ok_or_else(|| FlagError::Workdir {
        dir: dir.to_owned(),
    })
}

/// Parses docker's `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]` (IPv6 host
/// addresses in brackets); HOSTIP defaults to 0.0.0.0, as docker's.
pub fn parse_port_mapping(text: &str) -> Result<PortMapping, FlagError> {
    let bad = || FlagError::Publish {
        spec: text.to_owned(),
    };
    let spec = text.strip_suffix("/tcp").unwrap_or(text);
    let (host_part, container) = spec.rsplit_once(':').ok_or_else(bad)?;
    let container_port: u16 = container.parse().map_err(|_| bad())?;
    let (ip, host_port) = match host_part.rsplit_once(':') {
        Some((ip, port)) => (ip.trim_start_matches('[').trim_end_matches(']'), port),
        None => ("0.0.0.0", host_part),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let host_port: u16 = host_port.parse().map_err(|_| bad())?;
    if container_port == 0 {
        return Err(bad());
    }
    Ok(PortMapping {
        host: SocketAddr::new(ip, host_port),
        container_port,
    })
}

/// Parses an outbound rule: `HOST` or `HOST:PORT` (IPv6 as `[::1]:8080`).
pub fn parse_outbound_rule(text: &str) -> Result<OutboundRule, FlagError> {
    let bad = || FlagError::Outbound {
        spec: text.to_owned(),
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        match tail.strip_prefix(':') {
            Some(port) => (host, Some(port.parse().map_err(|_| bad())?)),
            None if tail.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().map_err(|_| bad())?)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    Ok(OutboundRule {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Parses an image's exposed port (`8080/tcp`, `8080`). UDP ports give
/// `None`: berth publishes TCP only.
pub fn parse_exposed_port(spec: &str) -> Result<Option<u16>, FlagError> {
    let (port, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let port = port.parse::<u16>().ok().filter(|port| *port != 0);
    match (port, protocol.to_ascii_lowercase().as_str()) {
        (Some(port), "tcp") => Ok(Some(port)),
        (Some(_), "udp" | "sctp") => Ok(None),
        _ => Err(FlagError::Expose {
            spec: spec.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_host_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_volumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().display().to_string();
        let mount = parse_mount(&format!("{host}:/data:ro")).expect("valid");
        assert_eq!(mount.guest, "/data");
        assert!(mount.read_only);
        assert_eq!(
            mount.host,
            std::fs::canonicalize(dir.path()).expect("canonical")
        );
        let mount = parse_mount(&format!("{host}:/")).expect("root");
        assert_eq!(mount.guest, "/");
        assert!(!mount.read_only);
        let mount = parse_mount(&format!("{host}://a/./b/")).expect("normalized");
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
            let error = parse_mount(&spec).expect_err(&spec);
            assert!(error.to_string().contains(&format!("{spec:?}")), "{error}");
        }
    }

    #[test]
    fn env_parsing() {
        assert_eq!(
            parse_env("A=b=c", no_host_env).ok().flatten(),
            Some(("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_env("A=", no_host_env).ok().flatten(),
            Some(("A".into(), String::new()))
        );
        assert!(parse_env("=x", no_host_env).is_err());
        assert_eq!(parse_env("UNSET", no_host_env).ok().flatten(), None);
    }

    #[test]
    fn a_bare_key_takes_the_callers_value_and_only_that() {
        let lookup = |key: &str| (key == "TOKEN").then(|| "from the caller".to_owned());
        assert_eq!(
            parse_env("TOKEN", lookup).ok().flatten(),
            Some(("TOKEN".into(), "from the caller".into()))
        );
        // PATH is set in this process, but only the closure is asked.
        assert_eq!(parse_env("PATH", lookup).ok().flatten(), None);
    }

    #[test]
    fn env_file_reports_line_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("env");
        std::fs::write(&path, "# comment\n\nA=1\nB=two words\n=bad\n").expect("write");
        let error = parse_env_file(&path, no_host_env).expect_err("line 5 is bad");
        assert!(error.to_string().contains("line 5"), "{error}");
        std::fs::write(&path, "A=1\n  B=2\nC\n").expect("write");
        let vars =
            parse_env_file(&path, |key| (key == "C").then(|| "3".to_owned())).expect("valid");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("C".into(), "3".into())
            ]
        );
        let missing = dir.path().join("missing");
        let error = parse_env_file(&missing, no_host_env).expect_err("missing");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read env file {}: ", missing.display())),
            "{error}"
        );
    }

    #[test]
    fn parses_port_mappings() {
        let mapping = parse_port_mapping("127.0.0.1:10080:8080").expect("valid");
        assert_eq!(mapping.host, "127.0.0.1:10080".parse().expect("addr"));
        assert_eq!(mapping.container_port, 8080);
        let mapping = parse_port_mapping("9000:7000/tcp").expect("valid");
        assert_eq!(mapping.host, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(mapping.describe(), "0.0.0.0:9000->7000/tcp");
        let mapping = parse_port_mapping("[::1]:9000:7000").expect("valid");
        assert_eq!(mapping.host, "[::1]:9000".parse().expect("addr"));
        for bad in ["8080", "x:8080", "8080:0", "1.2.3:80:80", "80:80/udp"] {
            let error = parse_port_mapping(bad).expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn parses_exposed_ports() {
        assert_eq!(parse_exposed_port("8080/tcp").ok(), Some(Some(8080)));
        assert_eq!(parse_exposed_port("7000").ok(), Some(Some(7000)));
        assert_eq!(parse_exposed_port("53/udp").ok(), Some(None));
        assert!(parse_exposed_port("http/tcp").is_err());
        assert!(parse_exposed_port("0/tcp").is_err());
    }

    #[test]
    fn parses_outbound_rules() {
        let rule = parse_outbound_rule("API.example.com:443").expect("valid");
        assert_eq!(rule.host, "api.example.com");
        assert!(rule.allows("api.example.com", 443));
        assert!(!rule.allows("api.example.com", 80));
        let rule = parse_outbound_rule("[::1]").expect("valid");
        assert!(rule.allows("[::1]", 8080));
        assert!(parse_outbound_rule("a b").is_err());
        assert!(parse_outbound_rule("host:port").is_err());
    }

    #[test]
    fn workdirs_are_absolute_guest_paths() {
        assert_eq!(parse_workdir("/app/./x/").ok().as_deref(), Some("/app/x"));
        let error = parse_workdir("app").expect_err("relative");
        assert_eq!(
            error.to_string(),
            "invalid workdir \"app\": expected an absolute guest path without '..', e.g. /app"
        );
    }
}
