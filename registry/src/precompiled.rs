//! Programs precompiled for a target, attached to an image.
//!
//! An image's program compiled ahead of time for one target triple travels
//! as an OCI artifact manifest of its own whose `subject` is the image's
//! manifest (an OCI 1.1 referrer): the image, and so its digest, stays
//! exactly as built, and any number of targets can be attached or replaced
//! later (`berth image precompile`). The artifact has artifact type
//! [`MEDIA_PRECOMPILED`], the empty config, and one layer of the same media
//! type holding wasmtime's serialized code, annotated with the target
//! triple, the engine key it was compiled for, the digest of the
//! WebAssembly it was compiled from and wasmtime's compatibility hash.
//!
//! In the store, the artifact is an entry of index.json with the
//! [`ANNOTATION_SUBJECT`] annotation ([`Store::attach`]): never listed or
//! resolved as an image, kept while its subject is, saved and loaded with
//! it. This module writes and reads such artifacts; it never compiles
//! (that is the runtime's job) and never trusts the index's annotations:
//! what it returns is read from the digest-verified artifact manifest, and
//! code is read through [`Store::read_blob`], which checks its digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::image::{ANNOTATION_SUBJECT, Descriptor, MEDIA_MANIFEST};
use crate::store::Store;

/// The artifact type of a precompiled program, and its layer's media type.
pub const MEDIA_PRECOMPILED: &str = "application/vnd.berth.precompiled.v1+wasmtime";
/// The OCI empty config (`{}`).
pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The target triple the code runs on.
pub const ANNOTATION_TARGET: &str = "dev.berth.precompiled.target";
/// The engine key the code was compiled for (berth-runtime's
/// `precompiled::engine_key`).
pub const ANNOTATION_ENGINE: &str = "dev.berth.precompiled.engine";
/// The digest of the WebAssembly binary the code was compiled from.
pub const ANNOTATION_SOURCE: &str = "dev.berth.precompiled.source";
/// wasmtime's `precompile_compatibility_hash` of the compiling engine.
pub const ANNOTATION_COMPATIBILITY: &str = "dev.berth.precompiled.wasmtime-compatibility-hash";

const EMPTY_CONFIG: &[u8] = b"{}";

/// What a precompiled program was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecompiledInfo {
    /// Target triple.
    pub target: String,
    /// Engine key.
    pub engine: String,
    /// Digest (`sha256:<hex>`) of the WebAssembly it was compiled from.
    pub source: String,
    /// wasmtime's compatibility hash of the compiling engine (may be empty).
    pub compatibility_hash: String,
}

/// A precompiled program attached to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// What it was made for, from its (digest-verified) manifest.
    pub info: PrecompiledInfo,
    /// The digest of its artifact manifest.
    pub manifest: String,
    /// Its code blob.
    pub code: Descriptor,
}

/// An artifact manifest with a subject (the parts berth writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default)]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

impl PrecompiledInfo {
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::from([
            (ANNOTATION_TARGET.to_owned(), self.target.clone()),
            (ANNOTATION_ENGINE.to_owned(), self.engine.clone()),
            (ANNOTATION_SOURCE.to_owned(), self.source.clone()),
        ]);
        if !self.compatibility_hash.is_empty() {
            annotations.insert(
                ANNOTATION_COMPATIBILITY.to_owned(),
                self.compatibility_hash.clone(),
            );
        }
        annotations
    }

    fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Option<Self> {
        let annotations = annotations?;
        let get = |key: &str| annotations.get(key).cloned();
        Some(PrecompiledInfo {
            target: get(ANNOTATION_TARGET)?,
            engine: get(ANNOTATION_ENGINE)?,
            source: get(ANNOTATION_SOURCE)?,
            compatibility_hash: get(ANNOTATION_COMPATIBILITY).unwrap_or_default(),
        })
    }
}

/// Attaches `code`, precompiled as `info` says, to image manifest `image`
/// (a digest) in `store`, replacing code attached before for the same
/// target and engine. Returns the artifact manifest's digest.
pub fn attach(store: &Store, image: &str, info: &PrecompiledInfo, code: &[u8]) -> Result<String> {
    let subject_bytes = store.read_blob(image)?;
    let subject_type = crate::image::Manifest::from_slice(&subject_bytes, image)?
        .media_type
        .unwrap_or_else(|| MEDIA_MANIFEST.to_owned());
    let code_digest = store.put_blob_bytes(code)?;
    let config_digest = store.put_blob_bytes(EMPTY_CONFIG)?;
    let mut layer = Descriptor::new(MEDIA_PRECOMPILED, code_digest, code.len() as u64);
    layer.annotations = Some(info.annotations());
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_owned(),
        artifact_type: Some(MEDIA_PRECOMPILED.to_owned()),
        config: Descriptor::new(MEDIA_EMPTY, config_digest, EMPTY_CONFIG.len() as u64),
        layers: vec![layer],
        subject: Some(Descriptor::new(
            &subject_type,
            image.to_owned(),
            subject_bytes.len() as u64,
        )),
        annotations: Some(info.annotations()),
    };
    let bytes = serde_json::to_vec(&manifest)
        .map_err(|e| RegistryError::json("precompiled artifact manifest", e))?;
    let digest = store.put_manifest(&bytes)?;
    store.attach(&digest, MEDIA_PRECOMPILED, image, info.annotations())?;
    Ok(digest)
}

/// The precompiled programs attached to image manifest `image` (a digest)
/// in `store`, as their manifests (read and digest-checked here) say; for
/// `target` only, when given. An attachment whose manifest does not name
/// `image` as its subject, or is not a precompiled program, is an error.
pub fn list(store: &Store, image: &str, target: Option<&str>) -> Result<Vec<Attached>> {
    let mut out = Vec::new();
    for entry in store.attachments(image)? {
        if entry.artifact_type.as_deref() != Some(MEDIA_PRECOMPILED) {
            continue;
        }
        if let Some(target) = target
            && entry.annotation(ANNOTATION_TARGET) != Some(target)
        {
            continue;
        }
        let attached = read_attached(store, image, &entry.digest)?;
        if target.is_none_or(|target| attached.info.target == target) {
            out.push(attached);
        }
    }
    Ok(out)
}

/// Reads and checks the precompiled-program manifest `digest` attached to `image`.
fn read_attached(store: &Store, image: &str, digest: &str) -> Result<Attached> {
    let bad = |reason: &str| RegistryError::Unsupported {
        image: image.to_owned(),
        reason: format!("its precompiled program {digest} {reason}"),
    };
    let manifest: ArtifactManifest = serde_json::from_slice(&store.read_blob(digest)?)
        .map_err(|e| RegistryError::json(format!("manifest {digest}"), e))?;
    if manifest.artifact_type.as_deref() != Some(MEDIA_PRECOMPILED) {
        return Err(bad("is not a precompiled program"));
    }
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(image) {
        return Err(bad("names another image as its subject"));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(bad("must have exactly one layer"));
    };
    if layer.media_type != MEDIA_PRECOMPILED {
        return Err(bad("has a layer of another media type"));
    }
    let info = PrecompiledInfo::from_annotations(layer.annotations.as_ref())
        .ok_or_else(|| bad("does not say its target, engine and source"))?;
    Ok(Attached {
        info,
        manifest: digest.to_owned(),
        code: layer.clone(),
    })
}

/// The code of `attached`, checked against its digest.
pub fn read_code(store: &Store, attached: &Attached) -> Result<Vec<u8>> {
    store.read_blob(&attached.code.digest)
}

/// Whether index entry `entry` is a precompiled program (for archives:
/// its subject must be carried along).
pub fn is_precompiled(entry: &Descriptor) -> bool {
    entry.artifact_type.as_deref() == Some(MEDIA_PRECOMPILED)
        && entry.annotation(ANNOTATION_SUBJECT).is_some()
}

/// The subject of the artifact manifest `bytes` (its digest), if it has one.
pub(crate) fn subject_of(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<ArtifactManifest>(bytes)
        .ok()?
        .subject
        .map(|subject| subject.digest)
}
