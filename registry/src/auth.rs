//! Registry credentials: berth's own file (`$BERTH_HOME/auth.json`, docker's
//! `config.json` format `{"auths":{"host":{"auth":base64(user:pass)}}}`,
//! written 0600 on unix), falling back to docker's `~/.docker/config.json`
//! (or `$DOCKER_CONFIG/config.json`) for reading. [`login`] verifies the
//! credentials against the registry before storing them.
//!
//! Credential helpers (`credsStore`, `credHelpers`) are not consulted.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::reference::DEFAULT_REGISTRY;

/// The key docker uses for Docker Hub in config.json.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token used as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// The file docker reads credentials from, if any.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    dirs::home_dir().map(|h| h.join(".docker/config.json"))
}

/// The keys a registry may be stored under.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == DEFAULT_REGISTRY
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        keys.insert(0, DOCKER_HUB_KEY.to_string());
        keys.push("docker.io".into());
        keys.push("index.docker.io".into());
    }
    keys
}

fn read_file(path: &Path) -> Result<Option<AuthFile>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RegistryError::AuthFile {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RegistryError::io("cannot read", path, e)),
    }
}

fn lookup(file: &AuthFile, path: &Path, registry: &str) -> Result<Option<Credentials>> {
    for key in keys_for(registry) {
        let Some(entry) = file.auths.get(&key) else {
            continue;
        };
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }));
        }
        if let Some(auth) = &entry.auth {
            let bad = |reason: &str| RegistryError::AuthFile {
                path: path.to_path_buf(),
                reason: format!("entry {key:?}: {reason}"),
            };
            let decoded = STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not base64(user:password)"))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Credentials for `registry`: from berth's `auth_file` first, then from
/// docker's config.json ([`docker_config_path`]). `None` means anonymous.
pub fn credentials_for(auth_file: &Path, registry: &str) -> Result<Option<Credentials>> {
    let docker = docker_config_path();
    let mut files = vec![auth_file];
    files.extend(docker.as_deref());
    credentials_from(&files, registry)
}

/// Credentials for `registry` from the first of `files` (docker config.json
/// format) that has an entry for it. Missing files are skipped.
pub fn credentials_from(files: &[&Path], registry: &str) -> Result<Option<Credentials>> {
    for path in files {
        if let Some(file) = read_file(path)?
            && let Some(c) = lookup(&file, path, registry)?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Stores `credentials` for `registry` in `auth_file` (no verification;
/// see [`login`]).
pub fn store_credentials(
    auth_file: &Path,
    registry: &str,
    credentials: &Credentials,
) -> Result<()> {
    let mut file = read_file(auth_file)?.unwrap_or_default();
    for key in keys_for(registry) {
        file.auths.remove(&key);
    }
    let key = if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_KEY
    } else {
        registry
    };
    let auth = STANDARD.encode(format!("{}:{}", credentials.username, credentials.password));
    file.auths.insert(
        key.to_string(),
        AuthEntry {
            auth: Some(auth),
            ..AuthEntry::default()
        },
    );
    write_private(auth_file, &file)
}

/// Removes the credentials for `registry` from `auth_file`. Returns false
/// if there were none.
pub fn logout(auth_file: &Path, registry: &str) -> Result<bool> {
    let Some(mut file) = read_file(auth_file)? else {
        return Ok(false);
    };
    let before = file.auths.len();
    for key in keys_for(registry) {
        file.auths.remove(&key);
    }
    if file.auths.len() == before {
        return Ok(false);
    }
    write_private(auth_file, &file)?;
    Ok(true)
}

/// Verifies `credentials` against `registry`, then stores them in `auth_file`.
/// `plain_http: None` means HTTP for loopback registries, HTTPS otherwise.
pub async fn login(
    auth_file: &Path,
    registry: &str,
    credentials: &Credentials,
    plain_http: Option<bool>,
) -> Result<()> {
    crate::client::verify_credentials(registry, credentials, plain_http).await?;
    store_credentials(auth_file, registry, credentials)
}

fn write_private(path: &Path, file: &AuthFile) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| RegistryError::json("auth file", e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| RegistryError::io("cannot create", dir, e))?;
    // Owner-only: the file holds credentials.
    berth_fs::write_atomic(path, &bytes).map_err(|e| RegistryError::io("cannot write", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_logout() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| RegistryError::io("tempdir", "", e))?;
        let path = dir.path().join("auth.json");
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        store_credentials(&path, "127.0.0.1:5000", &c)?;
        assert_eq!(
            lookup(
                &read_file(&path)?.unwrap_or_default(),
                &path,
                "127.0.0.1:5000"
            )?,
            Some(c)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path)
                .map_err(|e| RegistryError::io("stat", &path, e))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(logout(&path, "127.0.0.1:5000")?);
        assert!(!logout(&path, "127.0.0.1:5000")?);
        Ok(())
    }

    #[test]
    fn falls_back_to_docker_config() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| RegistryError::io("tempdir", "", e))?;
        let berth = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        let hub = STANDARD.encode("hubuser:hubpass");
        let local = STANDARD.encode("me:pw");
        let text = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{hub}"}},"localhost:5000":{{"auth":"{local}"}}}},"credsStore":"desktop"}}"#
        );
        fs::write(&docker, text).map_err(|e| RegistryError::io("write", &docker, e))?;
        let files = [berth.as_path(), docker.as_path()];
        let got = credentials_from(&files, "docker.io")?.map(|c| c.username);
        assert_eq!(got.as_deref(), Some("hubuser"));
        let got = credentials_from(&files, "localhost:5000")?.map(|c| c.password);
        assert_eq!(got.as_deref(), Some("pw"));
        assert_eq!(credentials_from(&files, "elsewhere.io")?, None);
        // berth's own file wins over docker's.
        store_credentials(
            &berth,
            "localhost:5000",
            &Credentials {
                username: "b".into(),
                password: "q".into(),
            },
        )?;
        let got = credentials_from(&files, "localhost:5000")?.map(|c| c.username);
        assert_eq!(got.as_deref(), Some("b"));
        // And storing kept docker's other settings untouched in docker's file.
        let kept =
            fs::read_to_string(&docker).map_err(|e| RegistryError::io("read", &docker, e))?;
        assert!(kept.contains("credsStore"));
        Ok(())
    }
}
