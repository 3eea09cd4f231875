//! Shared test fixtures: a private Distribution registry per test (the
//! Debian `docker-registry` binary), build contexts, and the example wasm.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_registry::Store;
use berth_registry::build::{self, BuildOptions};
use berth_registry::image::ImageFormat;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> TestResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A registry process, killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    /// Starts an anonymous registry, or one requiring `user`/`password` (htpasswd).
    pub fn start(credentials: Option<(&str, &str)>) -> TestResult<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            return Err(
                format!("{REGISTRY_BIN} is missing: apt-get install docker-registry").into(),
            );
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((user, password)) = credentials {
            let hash = bcrypt::hash(password, 4)?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let reg = Registry { port, dir, child };
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(reg)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage file for blob `digest`.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until something listens on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration) -> TestResult {
    let start = Instant::now();
    for _ in 0..1000 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on 127.0.0.1:{port} after {limit:?}").into())
}

/// The bytes of `examples/wasm/NAME`.
pub fn example_wasm(name: &str) -> TestResult<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/wasm")
        .join(name);
    Ok(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// A build context holding `files` (path, bytes) and a Dockerfile.
pub fn context(dockerfile: &str, files: &[(&str, &[u8])]) -> TestResult<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
    for (path, bytes) in files {
        let p = dir.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, bytes)?;
    }
    Ok(dir)
}

/// A fresh store in a temp dir.
pub fn store() -> TestResult<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("images"))?;
    Ok((dir, store))
}

/// Builds `dockerfile` with `files` into `store` as `tag` in `format`.
pub fn build_image(
    store: &Store,
    dockerfile: &str,
    files: &[(&str, &[u8])],
    tag: &str,
    format: ImageFormat,
) -> TestResult<build::BuildOutcome> {
    let ctx = context(dockerfile, files)?;
    let mut opts = BuildOptions::new(ctx.path());
    opts.tags = vec![tag.to_string()];
    opts.format = format;
    Ok(build::build(store, &opts)?)
}
