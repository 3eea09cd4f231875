//! The image model: OCI manifests, indexes and configs as berth reads and
//! writes them, and the three shapes a WebAssembly image can take:
//!
//! - [`ImageFormat::Image`]: an OCI image whose config says
//!   `architecture: wasm`, `os: wasip1|wasip2`, with gzip tar layers and an
//!   entrypoint naming the `.wasm` file inside them;
//! - [`ImageFormat::Artifact`]: a CNCF wasm artifact (config
//!   `application/vnd.wasm.config.v0+json`, exactly one `application/wasm` layer);
//! - [`ImageFormat::ComponentLayer`]: an image whose wasm travels as a layer
//!   of type `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`.
//!
//! [`run_config`] turns any of them into one [`RunConfig`], the only thing
//! `berth run` needs. This module only reads and describes; it never
//! touches the network or writes the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::store::Store;

/// OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest (accepted on pull).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config (accepted on pull).
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// gzip-compressed tar layer.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Uncompressed tar layer.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker gzip tar layer (accepted on pull).
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// CNCF wasm artifact config.
pub const MEDIA_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// CNCF wasm artifact layer.
pub const MEDIA_WASM_LAYER: &str = "application/wasm";
/// A wasm component carried as a layer of an otherwise ordinary image.
pub const MEDIA_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// The annotation naming an image in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation marking an index entry as an artifact attached to an
/// image (its value: the image's manifest digest), such as a precompiled
/// program ([`crate::precompiled`]).
pub const ANNOTATION_SUBJECT: &str = "dev.berth.subject";
/// The annotation containerd reads for the image's name on import.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Where the wasm file of an artifact or component-layer image lives in its rootfs.
pub const DEFAULT_WASM_PATH: &str = "/app.wasm";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    /// The artifact type (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor without annotations.
    pub fn new(media_type: &str, digest: String, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// Whether this index entry is an artifact attached to an image rather
    /// than an image.
    pub fn is_attachment(&self) -> bool {
        self.annotation(ANNOTATION_SUBJECT).is_some()
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// An image manifest (OCI or Docker schema 2; both have this shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type, for artifacts that set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses manifest bytes; `what` names them in errors.
    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Self> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| RegistryError::json(what, e))?;
        if m.schema_version != 2 {
            return Err(RegistryError::Json {
                what: what.to_string(),
                reason: format!(
                    "schemaVersion {} is not supported (expected 2)",
                    m.schema_version
                ),
            });
        }
        Ok(m)
    }

    /// Every blob the manifest refers to: config first, then layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// Total bytes of config and layers.
    pub fn content_size(&self) -> u64 {
        self.blobs().map(|d| d.size).sum()
    }

    /// Which of the three wasm image shapes this is.
    pub fn format(&self) -> Result<ImageFormat> {
        if self.config.media_type == MEDIA_WASM_CONFIG {
            return Ok(ImageFormat::Artifact);
        }
        if self
            .layers
            .iter()
            .any(|l| l.media_type == MEDIA_COMPONENT_LAYER)
        {
            return Ok(ImageFormat::ComponentLayer);
        }
        Ok(ImageFormat::Image)
    }
}

/// An image index (also the shape of an OCI layout's index.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.to_string()),
            manifests: Vec::new(),
        }
    }
}

/// The three shapes of a berth image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// OCI image with tar layers; the entrypoint names a `.wasm` in them.
    Image,
    /// CNCF wasm artifact: one `application/wasm` layer.
    Artifact,
    /// OCI image carrying the wasm as a component layer.
    ComponentLayer,
}

impl ImageFormat {
    /// The name used on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Image => "image",
            ImageFormat::Artifact => "artifact",
            ImageFormat::ComponentLayer => "component-layer",
        }
    }

    /// Parses `image`, `artifact` or `component-layer`.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "image" => Ok(ImageFormat::Image),
            "artifact" => Ok(ImageFormat::Artifact),
            "component-layer" => Ok(ImageFormat::ComponentLayer),
            other => Err(RegistryError::Build(format!(
                "unknown output format {other:?}: expected image, artifact or component-layer"
            ))),
        }
    }
}

/// The runtime part of an OCI image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The program and its first arguments.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` environment.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Working directory.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// Exposed ports (`80/tcp` → `{}`).
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The layer list of an OCI image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layers.
    pub diff_ids: Vec<String>,
}

/// An OCI image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `wasm` for berth images.
    #[serde(default)]
    pub architecture: String,
    /// `wasip1` or `wasip2` for berth images.
    #[serde(default)]
    pub os: String,
    /// What to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
}

/// The config of a CNCF wasm artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip1` or `wasip2`.
    pub os: String,
    /// Digests of the wasm layers.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// Component imports/exports, when the layer is a component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<serde_json::Value>,
}

/// Where the program to run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmSource {
    /// A file inside the image's rootfs (absolute guest path).
    Path(String),
    /// A blob of the store; [`crate::unpack::rootfs`] also writes it to
    /// [`DEFAULT_WASM_PATH`] in the rootfs.
    Blob {
        /// The blob's digest.
        digest: String,
        /// Its guest path once unpacked.
        path: String,
    },
}

/// Everything `berth run IMAGE` needs to know, whatever the image's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The image's format.
    pub format: ImageFormat,
    /// `wasip1` or `wasip2` (empty when the image does not say).
    pub os: String,
    /// Entrypoint: the wasm path and its first arguments.
    pub entrypoint: Vec<String>,
    /// Default arguments, replaced by the user's.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory, if set.
    pub workdir: Option<String>,
    /// Exposed ports (`8080/tcp`).
    pub exposed_ports: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Where the wasm comes from.
    pub wasm: WasmSource,
}

impl RunConfig {
    /// The guest path of the wasm program.
    pub fn wasm_path(&self) -> &str {
        match &self.wasm {
            WasmSource::Path(p) => p,
            WasmSource::Blob { path, .. } => path,
        }
    }

    /// The program's argv: entrypoint then `args` (or the image's cmd when
    /// `args` is empty), as docker combines them.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.entrypoint.clone();
        argv.extend(if args.is_empty() {
            self.cmd.clone()
        } else {
            args.to_vec()
        });
        argv
    }
}

/// Everything `berth inspect` shows about an image.
#[derive(Debug, Clone)]
pub struct Inspect {
    /// The manifest digest.
    pub digest: String,
    /// The names pointing at it (full references).
    pub names: Vec<String>,
    /// The manifest.
    pub manifest: Manifest,
    /// The config blob as JSON (OCI image config or CNCF wasm config).
    pub config: serde_json::Value,
    /// What `berth run` would do with it.
    pub run_config: RunConfig,
}

/// Inspects image `name_or_digest` of `store`.
pub fn inspect(store: &Store, name_or_digest: &str) -> Result<Inspect> {
    let (digest, manifest) = store.resolve(name_or_digest)?;
    let config = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .map_err(|e| RegistryError::json(format!("config {}", manifest.config.digest), e))?;
    let run_config = run_config_of(store, &digest, &manifest)?;
    let names = store
        .read_index()?
        .manifests
        .iter()
        .filter(|d| d.digest == digest)
        .filter_map(|d| d.annotation(ANNOTATION_REF_NAME).map(str::to_string))
        .collect();
    Ok(Inspect {
        digest,
        names,
        manifest,
        config,
        run_config,
    })
}

/// The run configuration of the image `name_or_digest` in `store`.
pub fn run_config(store: &Store, name_or_digest: &str) -> Result<RunConfig> {
    let (digest, manifest) = store.resolve(name_or_digest)?;
    run_config_of(store, &digest, &manifest)
}

/// The run configuration of an already resolved manifest.
pub fn run_config_of(store: &Store, digest: &str, manifest: &Manifest) -> Result<RunConfig> {
    let unsupported = |reason: String| RegistryError::Unsupported {
        image: digest.to_string(),
        reason,
    };
    let config_bytes = store.read_blob(&manifest.config.digest)?;
    match manifest.format()? {
        ImageFormat::Artifact => {
            let cfg: WasmConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
                RegistryError::json(format!("wasm config {}", manifest.config.digest), e)
            })?;
            let wasm_layers: Vec<_> = manifest
                .layers
                .iter()
                .filter(|l| l.media_type == MEDIA_WASM_LAYER)
                .collect();
            let [layer] = wasm_layers.as_slice() else {
                return Err(unsupported(format!(
                    "a wasm artifact must have exactly one {MEDIA_WASM_LAYER} layer, this one has {}",
                    wasm_layers.len()
                )));
            };
            Ok(RunConfig {
                format: ImageFormat::Artifact,
                os: cfg.os,
                entrypoint: vec![DEFAULT_WASM_PATH.to_string()],
                cmd: Vec::new(),
                env: Vec::new(),
                workdir: None,
                exposed_ports: Vec::new(),
                labels: BTreeMap::new(),
                wasm: WasmSource::Blob {
                    digest: layer.digest.clone(),
                    path: DEFAULT_WASM_PATH.to_string(),
                },
            })
        }
        format @ (ImageFormat::Image | ImageFormat::ComponentLayer) => {
            let cfg: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
                RegistryError::json(format!("image config {}", manifest.config.digest), e)
            })?;
            let cc = cfg.config.clone().unwrap_or_default();
            let mut entrypoint = cc.entrypoint.unwrap_or_default();
            let mut cmd = cc.cmd.unwrap_or_default();
            let wasm = if format == ImageFormat::ComponentLayer {
                let layer = manifest
                    .layers
                    .iter()
                    .find(|l| l.media_type == MEDIA_COMPONENT_LAYER)
                    .ok_or_else(|| unsupported("no component layer".into()))?;
                if entrypoint.is_empty() {
                    entrypoint = vec![DEFAULT_WASM_PATH.to_string()];
                }
                WasmSource::Blob {
                    digest: layer.digest.clone(),
                    path: DEFAULT_WASM_PATH.to_string(),
                }
            } else {
                if entrypoint.is_empty() && !cmd.is_empty() {
                    entrypoint = vec![cmd.remove(0)];
                }
                let Some(first) = entrypoint.first() else {
                    return Err(unsupported(
                        "it has neither ENTRYPOINT nor CMD, so berth does not know which .wasm file to run".into(),
                    ));
                };
                let path = if first.starts_with('/') {
                    first.clone()
                } else {
                    let wd = cc.working_dir.clone().unwrap_or_else(|| "/".into());
                    format!("{}/{}", wd.trim_end_matches('/'), first)
                };
                WasmSource::Path(path)
            };
            if cfg.architecture != "wasm" && !cfg.architecture.is_empty() {
                return Err(unsupported(format!(
                    "its architecture is {:?}; berth runs only WebAssembly images (architecture \"wasm\")",
                    cfg.architecture
                )));
            }
            Ok(RunConfig {
                format,
                os: cfg.os,
                entrypoint,
                cmd,
                env: cc.env.unwrap_or_default(),
                workdir: cc.working_dir,
                exposed_ports: cc.exposed_ports.unwrap_or_default().into_keys().collect(),
                labels: cc.labels.unwrap_or_default(),
                wasm,
            })
        }
    }
}

/// The WebAssembly program of image `name_or_digest` in `store`, with its
/// run configuration: what a host embedding the runtime needs from an
/// image, in any of the three formats. A blob-carried program (artifact,
/// component-layer) is checked against its digest as it is read; a program
/// that is a file in tar layers is read from the image unpacked (layers
/// verified, within the default [`crate::unpack::UnpackLimits`]) into a
/// temp directory that is removed afterwards.
///
/// `store` can be any OCI image-layout folder ([`Store::open`]), e.g. a
/// `berth save` archive unpacked with `tar`.
pub fn program(store: &Store, name_or_digest: &str) -> Result<(Vec<u8>, RunConfig)> {
    let (digest, manifest) = store.resolve(name_or_digest)?;
    let config = run_config_of(store, &digest, &manifest)?;
    let wasm = match &config.wasm {
        WasmSource::Blob { digest, .. } => store.read_blob(digest)?,
        WasmSource::Path(path) => {
            let scratch = tempfile::tempdir().map_err(|e| {
                RegistryError::io("cannot create a temp dir in", std::env::temp_dir(), e)
            })?;
            let root = crate::unpack::rootfs_of(
                store,
                &digest,
                &manifest,
                scratch.path(),
                &crate::unpack::UnpackLimits::default(),
            )?;
            read_in_root(&root, path).map_err(|reason| RegistryError::Unsupported {
                image: name_or_digest.to_string(),
                reason,
            })?
        }
    };
    Ok((wasm, config))
}

/// Reads the file at guest path `guest` of the unpacked `root`, never
/// following a symlink (a path from an image is not resolved on the host).
fn read_in_root(root: &std::path::Path, guest: &str) -> std::result::Result<Vec<u8>, String> {
    let mut path = root.to_path_buf();
    for part in guest
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
    {
        if part == ".." {
            return Err(format!("its program path {guest} contains `..`"));
        }
        path.push(part);
        let kind = std::fs::symlink_metadata(&path)
            .map_err(|_| format!("its program {guest} is not in the image"))?
            .file_type();
        if kind.is_symlink() {
            return Err(format!(
                "its program path {guest} goes through a symlink, which berth does not follow outside a sandbox"
            ));
        }
    }
    if !path.is_file() {
        return Err(format!("its program {guest} is not a regular file"));
    }
    std::fs::read(&path).map_err(|e| format!("cannot read its program {guest}: {e}"))
}

/// `wasip1` for a core module, `wasip2` for a component, judged from the
/// header bytes (4..8: `01 00 00 00` module, `0d 00 01 00` component).
pub fn wasi_version(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    match &bytes[4..8] {
        [1, 0, 0, 0] => Some("wasip1"),
        [0x0d, 0, 1, 0] => Some("wasip2"),
        _ => None,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::read_in_root;

    #[test]
    fn a_program_path_is_read_beneath_the_root_without_following_symlinks() {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("outside");
        std::fs::create_dir(root.path().join("app")).expect("app");
        std::fs::write(root.path().join("app/main.wasm"), b"\0asm").expect("write");
        std::fs::write(outside.path().join("main.wasm"), b"host").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("symlink");

        assert_eq!(
            read_in_root(root.path(), "/app/./main.wasm").expect("read"),
            b"\0asm"
        );
        for (path, says) in [
            ("/link/main.wasm", "symlink"),
            ("/app/../link/main.wasm", "`..`"),
            ("/app/missing.wasm", "not in the image"),
            ("/app", "not a regular file"),
        ] {
            let error = read_in_root(root.path(), path).expect_err(path);
            assert!(error.contains(says), "{path}: {error}");
        }
    }
}
