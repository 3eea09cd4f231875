//! `berth save` / `berth load`: images as an OCI image-layout tar
//! (`oci-layout`, `index.json`, `blobs/sha256/…`), the format
//! `ctr images import` and `docker load` read.
//!
//! Save writes the tar to a temp file beside the target and renames it, so
//! a failed save leaves no truncated archive. Load streams each blob into
//! the store through the digest-checking writer (a blob whose bytes do not
//! match its file name is refused), then names the images; an image is
//! named only when all its blobs arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

use crate::error::{RegistryError, Result};
use crate::image::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, Descriptor, Index, MEDIA_INDEX,
    MEDIA_MANIFEST, Manifest,
};
use crate::reference::Reference;
use crate::store::Store;

/// What [`load`] stored.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// Each image: its name (if the archive gave one) and manifest digest.
    pub images: Vec<(Option<Reference>, String)>,
}

/// Writes `images` (names or digests of the store) to the tar `output`.
pub fn save(store: &Store, images: &[&str], output: &Path) -> Result<()> {
    let mut index = Index::default();
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    for name in images {
        let (digest, manifest) = store.resolve(name)?;
        let mut annotations = BTreeMap::new();
        if let Ok(r) = Reference::parse(name)
            && r.tag().is_some()
            && !name.starts_with("sha256:")
        {
            annotations.insert(ANNOTATION_REF_NAME.to_string(), r.full());
            annotations.insert(ANNOTATION_CONTAINERD_NAME.to_string(), r.full());
        }
        let size = store.read_blob(&digest)?.len() as u64;
        let mut desc = Descriptor::new(
            manifest.media_type.as_deref().unwrap_or(MEDIA_MANIFEST),
            digest.clone(),
            size,
        );
        desc.annotations = (!annotations.is_empty()).then_some(annotations);
        index.manifests.push(desc);
        // What is attached to the image (precompiled programs) goes
        // with it, as entries of the archive's index.
        for attachment in store.attachments(&digest)? {
            let attached = store.manifest(&attachment.digest)?;
            blobs.insert(attachment.digest.clone());
            blobs.extend(attached.blobs().map(|b| b.digest.clone()));
            index.manifests.push(attachment);
        }
        blobs.insert(digest);
        blobs.extend(manifest.blobs().map(|b| b.digest.clone()));
    }
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".berth-save-")
        .tempfile_in(dir)
        .map_err(|e| RegistryError::io("cannot create a temp file in", dir, e))?;
    let err = |e| RegistryError::io("cannot write", output, e);
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
    let add_bytes = |tar: &mut tar::Builder<BufWriter<&File>>, path: &str, bytes: &[u8]| {
        let mut h = header(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    add_bytes(
        &mut tar,
        "oci-layout",
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .map_err(err)?;
    let index_bytes =
        serde_json::to_vec(&index).map_err(|e| RegistryError::json("index.json", e))?;
    add_bytes(&mut tar, "index.json", &index_bytes).map_err(err)?;
    let mut h = header(0);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    for d in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut h.clone(), d, std::io::empty())
            .map_err(err)?;
    }
    for digest in &blobs {
        let path = store.blob_path(digest)?;
        let file = store.open_blob(digest)?;
        let len = file
            .metadata()
            .map_err(|e| RegistryError::io("cannot read", &path, e))?
            .len();
        let mut h = header(len);
        let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        tar.append_data(&mut h, name, BufReader::new(file))
            .map_err(err)?;
    }
    let writer = tar.into_inner().map_err(err)?;
    writer.into_inner().map_err(|e| err(e.into_error()))?;
    berth_fs::persist(tmp, output).map_err(err)
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The largest index, manifest or config file `load` reads from an
/// archive (the OCI distribution spec's suggested manifest limit).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;

/// Loads an OCI image-layout tar (or a docker-archive with `manifest.json`)
/// into `store`, verifying every blob.
pub fn load(store: &Store, input: &Path) -> Result<LoadOutcome> {
    let bad = |reason: String| RegistryError::Archive {
        path: input.to_path_buf(),
        reason,
    };
    let file = File::open(input).map_err(|e| RegistryError::io("cannot open", input, e))?;
    let mut head = [0u8; 2];
    let gz = {
        let mut f = File::open(input).map_err(|e| RegistryError::io("cannot open", input, e))?;
        f.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    let io_err = |e| RegistryError::io("cannot read", input, e);
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // docker-archive files other than blobs: path → digest once stored.
    let mut docker_files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            crate::digest::hex_part(&digest)
                .map_err(|_| bad(format!("{path} is not named by a sha256 digest")))?;
            store.put_blob(&digest, &mut entry).map_err(|e| match e {
                RegistryError::DigestMismatch {
                    expected, actual, ..
                } => RegistryError::DigestMismatch {
                    what: format!("{path} in {}", input.display()),
                    expected,
                    actual,
                },
                other => other,
            })?;
        } else if matches!(path.as_str(), "index.json" | "manifest.json" | "oci-layout")
            || path.ends_with(".json")
        {
            // Indexes, manifests and configs are read whole, so they are
            // bounded: a forged archive must not make berth hold gigabytes.
            let size = entry.header().size().map_err(io_err)?;
            if size > MAX_METADATA_BYTES {
                return Err(bad(format!(
                    "{path} is {size} bytes; index, manifest and config files may be at most {MAX_METADATA_BYTES} bytes"
                )));
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_METADATA_BYTES)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            small.insert(path, bytes);
        } else if path.ends_with(".tar") || path.ends_with("layer.tar") {
            // docker-archive layer: streamed into the store under its own
            // digest, never held in memory.
            let (digest, size) =
                store.put_blob_stream(&mut entry, &format!("{path} in {}", input.display()))?;
            docker_files.insert(path, (digest, size));
        }
    }
    if let Some(index_bytes) = small.get("index.json") {
        return load_oci(store, index_bytes, input);
    }
    if let Some(manifest_json) = small.get("manifest.json") {
        return load_docker(store, manifest_json, &small, &docker_files, input);
    }
    Err(bad(
        "neither index.json (OCI layout) nor manifest.json (docker archive) found".into(),
    ))
}

fn load_oci(store: &Store, index_bytes: &[u8], input: &Path) -> Result<LoadOutcome> {
    let index: Index = serde_json::from_slice(index_bytes)
        .map_err(|e| RegistryError::json("index.json of the archive", e))?;
    let mut out = LoadOutcome::default();
    let mut queue: Vec<Descriptor> = index.manifests;
    let mut rounds = 0;
    while let Some(desc) = queue.pop() {
        rounds += 1;
        if rounds > 1000 {
            return Err(RegistryError::Archive {
                path: input.to_path_buf(),
                reason: "too many nested indexes".into(),
            });
        }
        if desc.media_type == MEDIA_INDEX {
            let nested: Index = serde_json::from_slice(&store.read_blob(&desc.digest)?)
                .map_err(|e| RegistryError::json(format!("index {}", desc.digest), e))?;
            for mut m in nested.manifests {
                if m.annotations.is_none() {
                    m.annotations = desc.annotations.clone();
                }
                queue.push(m);
            }
            continue;
        }
        let bytes = store.read_blob(&desc.digest)?;
        let digest = store.put_manifest(&bytes)?;
        if desc.is_attachment() {
            // Attached to the manifest its own (verified) bytes name, not
            // to whatever the archive's index claims.
            let subject =
                crate::precompiled::subject_of(&bytes).ok_or_else(|| RegistryError::Archive {
                    path: input.to_path_buf(),
                    reason: format!("the attached artifact {digest} names no subject"),
                })?;
            let mut annotations = desc.annotations.clone().unwrap_or_default();
            annotations.remove(crate::image::ANNOTATION_SUBJECT);
            let artifact_type = desc.artifact_type.clone().unwrap_or_default();
            store.attach(&digest, &artifact_type, &subject, annotations)?;
            continue;
        }
        let name = [ANNOTATION_REF_NAME, ANNOTATION_CONTAINERD_NAME]
            .iter()
            .filter_map(|k| desc.annotation(k))
            .filter_map(|n| Reference::parse(n).ok())
            .find(|r| r.tag().is_some());
        match &name {
            Some(r) => store.tag(r, &digest)?,
            None => store.keep(&digest)?,
        }
        out.images.push((name, digest));
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn load_docker(
    store: &Store,
    manifest_json: &[u8],
    small: &BTreeMap<String, Vec<u8>>,
    layers: &BTreeMap<String, (String, u64)>,
    input: &Path,
) -> Result<LoadOutcome> {
    let bad = |reason: String| RegistryError::Archive {
        path: input.to_path_buf(),
        reason,
    };
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| RegistryError::json("manifest.json of the archive", e))?;
    let mut out = LoadOutcome::default();
    for e in entries {
        let config = small
            .get(&e.config)
            .ok_or_else(|| bad(format!("config {} is missing", e.config)))?;
        let config_digest = store.put_blob_bytes(config)?;
        let mut descs = Vec::new();
        for l in &e.layers {
            let (d, size) = layers
                .get(l)
                .ok_or_else(|| bad(format!("layer {l} is missing")))?;
            descs.push(Descriptor::new(
                crate::image::MEDIA_LAYER_TAR,
                d.clone(),
                *size,
            ));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(
                crate::image::MEDIA_CONFIG,
                config_digest,
                config.len() as u64,
            ),
            layers: descs,
            annotations: None,
        };
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| RegistryError::json("manifest", e))?;
        let digest = store.put_manifest(&bytes)?;
        if e.repo_tags.is_empty() {
            store.keep(&digest)?;
            out.images.push((None, digest.clone()));
        }
        for t in &e.repo_tags {
            let r = Reference::parse(t)?;
            store.tag(&r, &digest)?;
            out.images.push((Some(r), digest.clone()));
        }
    }
    Ok(out)
}
