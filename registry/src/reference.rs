//! Image references parsed and normalized the way docker does it:
//! `hello` is `docker.io/library/hello:latest`, `127.0.0.1:5000/team/app:v1`
//! names its registry, `name@sha256:…` pins a digest. The full form is what
//! the store records; the short form is what users see.

use std::fmt;
use std::str::FromStr;

use crate::digest;
use crate::error::{RegistryError, Result};

/// The registry assumed when a reference does not name one.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag assumed when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses `value` (`name`, `name:tag`, `host[:port]/path/name:tag`,
    /// `name@sha256:…`, `name:tag@sha256:…`).
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason: &str| RegistryError::Reference {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if value.is_empty() {
            return Err(bad("the reference is empty"));
        }
        if value.chars().any(|c| c.is_whitespace()) {
            return Err(bad("references contain no whitespace"));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, d)) => {
                digest::hex_part(d).map_err(|_| {
                    bad("the part after @ must be sha256:<64 lowercase hex digits>")
                })?;
                (rest, Some(d.to_string()))
            }
            None => (value, None),
        };
        // A tag is a `:` in the last path component (a `:` before a `/` is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
                });
            if !valid {
                return Err(bad(
                    "a tag is 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if registry.is_empty() {
            return Err(bad("the registry host is empty"));
        }
        if path.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        for component in path.split('/') {
            if !valid_component(component) {
                return Err(bad(&format!(
                    "repository component {component:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
                )));
            }
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The same repository, pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        Reference::parse(&format!("{}/{}:{tag}", self.registry, self.repository))
    }

    /// The registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/hello`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (a digest-only reference has none).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The fully qualified form: `docker.io/library/hello:latest`.
    pub fn full(&self) -> String {
        self.with_tag_and_digest(format!("{}/{}", self.registry, self.repository))
    }

    /// The repository as users write it: `hello`, `127.0.0.1:5000/team/app`.
    pub fn short_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The short form users see: `hello:latest`, `127.0.0.1:5000/team/app:v1`.
    pub fn short(&self) -> String {
        self.with_tag_and_digest(self.short_name())
    }

    /// `name` followed by `:tag` and `@digest` where present.
    fn with_tag_and_digest(&self, mut name: String) -> String {
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(digest);
        }
        name
    }

    /// True for registries reached over plain HTTP by default: `localhost`
    /// by name, or a host that parses as a loopback IP address
    /// (`127.0.0.1:5000`, `[::1]:5000`).
    ///
    /// Only the exact forms count. A name that merely looks like a loopback
    /// address (`127.evil.example`, `localhost.evil.example`) is resolved by
    /// DNS and may lead anywhere, and the shorthand `127.1` (which C
    /// resolvers, but not Rust's address parser, read as 127.0.0.1) is
    /// treated as a name too: each gets HTTPS unless plain HTTP is asked for.
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    }
}

/// The host of `registry` without its port (`[::1]:5000` → `::1`).
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__', or runs of '-'; never two different ones in a row.
    let mut prev_sep: Option<u8> = None;
    let mut run = 0;
    for &b in bytes {
        if is_alnum(b) {
            prev_sep = None;
            run = 0;
        } else if matches!(b, b'.' | b'_' | b'-') {
            match prev_sep {
                None => {}
                Some(p) if p == b && (b == b'-' || (b == b'_' && run < 2)) => {}
                Some(_) => return false,
            }
            prev_sep = Some(b);
            run += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() -> Result<()> {
        let r = Reference::parse("hello")?;
        assert_eq!(r.full(), "docker.io/library/hello:latest");
        assert_eq!(r.short(), "hello:latest");
        let r = Reference::parse("hello:1.0")?;
        assert_eq!(r.tag(), Some("1.0"));
        let r = Reference::parse("127.0.0.1:5000/team/app:v1")?;
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app");
        assert!(r.is_loopback());
        assert_eq!(r.short(), "127.0.0.1:5000/team/app:v1");
        let d = crate::digest::of(b"x");
        let r = Reference::parse(&format!("name@{d}"))?;
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(Reference::parse("localhost/a")?.registry(), "localhost");
        assert_eq!(Reference::parse("team/app")?.repository(), "team/app");
        assert_eq!(Reference::parse("localhost:5000/a")?.tag(), Some("latest"));
        Ok(())
    }

    #[test]
    fn only_loopback_addresses_and_localhost_are_loopback() -> Result<()> {
        for (registry, loopback) in [
            ("127.0.0.1:5000", true),
            ("127.0.0.2", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("127.evil.example", false),
            ("127.evil.example:5000", false),
            ("localhost.evil.example", false),
            ("127.1", false),
            ("10.0.0.1:5000", false),
            ("[::2]:5000", false),
            ("docker.io", false),
        ] {
            let reference = Reference::parse(&format!("{registry}/app:v1"))?;
            assert_eq!(reference.is_loopback(), loopback, "{registry}");
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_value() {
        for bad in [
            "",
            "Hello",
            "a:",
            "a@sha256:12",
            "a b",
            "a//b",
            "a:-x",
            "-a",
        ] {
            let err = Reference::parse(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
