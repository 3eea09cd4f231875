//! Unpacks an image into a directory the runtime mounts read-only at `/`.
//!
//! Each image's files are unpacked once into `<cache>/<key>`, through a
//! temp directory renamed into place: a crash leaves no half-unpacked
//! rootfs under a final name. The key is a hash of each layer's kind, blob
//! digest (which the store verified when the blob arrived) and the diff_id
//! the image config claims for it; that diff_id is checked against the
//! sha256 of the layer's uncompressed stream before any of the layer's
//! files is written, and a mismatch refuses the image. A directory under a
//! final name therefore holds exactly the content its key names: an image
//! claiming another image's diff_ids has other blobs, so another key, and
//! is refused each time it is unpacked. Images sharing all layers share the
//! directory. It is only ever mounted read-only, so no guest can change
//! what another image later runs.
//!
//! Unpacking is bounded by [`UnpackLimits`]: uncompressed bytes and tar
//! entries per layer and per image, counted while reading, so a
//! decompression bomb is refused after at most the limit and leaves
//! nothing behind.
//!
//! Layers are untrusted input. Refused: paths escaping the root with `..`,
//! writes through a symlink (a symlink planted by one entry and written
//! through by a later one), symlinks whose target leaves the root, hard
//! links to anything but an earlier file of the same layer, device nodes,
//! fifos and sockets. Leading `/` is stripped, as docker does; absolute
//! symlink targets are rewritten relative to the link so they cannot
//! reach the host when followed outside the sandbox. OCI whiteouts
//! (`.wh.NAME`, `.wh..wh..opq`) delete from lower layers.
//!
//! For artifact and component-layer images, unpacking writes the wasm blob
//! to [`crate::image::DEFAULT_WASM_PATH`].

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{RegistryError, Result};
use crate::image::{
    self, DEFAULT_WASM_PATH, ImageConfig, MEDIA_COMPONENT_LAYER, MEDIA_WASM_LAYER, Manifest,
};
use crate::store::Store;

/// Why a layer entry that is not a file, directory or link is refused.
pub(crate) const SPECIAL_FILES_REFUSED: &str =
    "device nodes, fifos and other special files are not allowed in berth images";

/// Tar entries that only describe the next entry (long names, pax headers).
pub(crate) fn is_metadata_entry(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
    )
}

/// Caps on what unpacking one image may produce. A layer is a compressed
/// stream: a few kilobytes of gzip can expand to gigabytes, or to millions
/// of tiny files, so the uncompressed bytes are counted as they are read and
/// the entries as they are listed, and unpacking stops at the first one over
/// a cap.
///
/// The defaults leave room for any realistic WebAssembly image (whose
/// layers hold a few megabytes of wasm and data) and for large data layers,
/// while bounding what one hostile image can make berth write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Uncompressed bytes of one layer (its whole tar stream, or its wasm
    /// blob). Default 2 GiB.
    pub max_layer_bytes: u64,
    /// Tar entries of one layer. Default 500,000.
    pub max_layer_entries: u64,
    /// Uncompressed bytes of all layers of an image together. Default 4 GiB.
    pub max_image_bytes: u64,
    /// Tar entries of all layers of an image together. Default 1,000,000.
    pub max_image_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_layer_bytes: 2 << 30,
            max_layer_entries: 500_000,
            max_image_bytes: 4 << 30,
            max_image_entries: 1_000_000,
        }
    }
}

impl UnpackLimits {
    /// The environment variable that sets [`UnpackLimits::max_layer_bytes`].
    pub const ENV_LAYER_BYTES: &'static str = "BERTH_UNPACK_MAX_LAYER_BYTES";
    /// The environment variable that sets [`UnpackLimits::max_layer_entries`].
    pub const ENV_LAYER_ENTRIES: &'static str = "BERTH_UNPACK_MAX_LAYER_ENTRIES";
    /// The environment variable that sets [`UnpackLimits::max_image_bytes`].
    pub const ENV_IMAGE_BYTES: &'static str = "BERTH_UNPACK_MAX_IMAGE_BYTES";
    /// The environment variable that sets [`UnpackLimits::max_image_entries`].
    pub const ENV_IMAGE_ENTRIES: &'static str = "BERTH_UNPACK_MAX_IMAGE_ENTRIES";

    /// The defaults, with each limit whose variable `lookup` returns
    /// replaced by its value (a whole number of bytes or entries).
    pub fn from_settings(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut limits = UnpackLimits::default();
        for (name, slot) in [
            (Self::ENV_LAYER_BYTES, &mut limits.max_layer_bytes),
            (Self::ENV_LAYER_ENTRIES, &mut limits.max_layer_entries),
            (Self::ENV_IMAGE_BYTES, &mut limits.max_image_bytes),
            (Self::ENV_IMAGE_ENTRIES, &mut limits.max_image_entries),
        ] {
            if let Some(value) = lookup(name) {
                *slot = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| RegistryError::Setting {
                        name,
                        value: value.clone(),
                        reason: "expected a whole number (of bytes or of entries)".into(),
                    })?;
            }
        }
        Ok(limits)
    }
}

/// The unpacked root of image `name_or_digest`, unpacking it into
/// `cache_root` first if needed, within the default [`UnpackLimits`].
pub fn rootfs(store: &Store, name_or_digest: &str, cache_root: &Path) -> Result<PathBuf> {
    let (digest, manifest) = store.resolve(name_or_digest)?;
    rootfs_of(
        store,
        &digest,
        &manifest,
        cache_root,
        &UnpackLimits::default(),
    )
}

/// Like [`rootfs`] for an already resolved manifest, within `limits`.
///
/// Every layer is hashed as it is unpacked and the image is refused when a
/// layer's uncompressed content does not match the diff_id its config
/// claims. The directory is named only by digests that are verified before
/// it comes into existence, so an existing directory holds exactly the
/// content those digests name, whichever image unpacked it first.
pub fn rootfs_of(
    store: &Store,
    digest: &str,
    manifest: &Manifest,
    cache_root: &Path,
    limits: &UnpackLimits,
) -> Result<PathBuf> {
    let plan = plan_layers(store, digest, manifest)?;
    let target = cache_root.join(cache_key(&plan));
    if target.is_dir() {
        return Ok(target);
    }
    create_private_dir_all(cache_root)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache_root)
        .map_err(|e| RegistryError::io("cannot create a temp dir in", cache_root, e))?;
    let root = tmp.path();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|e| RegistryError::io("cannot restrict", root, e))?;
    }
    let mut budget = Budget {
        image: digest,
        limits,
        bytes: 0,
        entries: 0,
    };
    for layer in &plan {
        let desc = layer.desc;
        match layer.kind {
            LayerKind::Wasm => {
                let dest = root.join(DEFAULT_WASM_PATH.trim_start_matches('/'));
                let src = store.open_blob(&desc.digest)?;
                let mut meter = Meter::new(src, &budget);
                let mut out = fs::File::create(&dest)
                    .map_err(|e| RegistryError::io("cannot create", &dest, e))?;
                let copied = io::copy(&mut meter, &mut out);
                let state = meter.finish();
                budget.charge(&desc.digest, &state, 1)?;
                copied.map_err(|e| RegistryError::io("cannot write", &dest, e))?;
                layer.verify(digest, &state)?;
            }
            LayerKind::Tar { gzip } => {
                let open = || -> Result<Box<dyn Read>> {
                    let f = io::BufReader::new(store.open_blob(&desc.digest)?);
                    Ok(if gzip {
                        // A gzip stream may have several members; the
                        // diff_id covers all of them.
                        Box::new(flate2::read::MultiGzDecoder::new(f))
                    } else {
                        Box::new(f)
                    })
                };
                unpack_layer(root, open, layer, &mut budget)?;
            }
        }
    }
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => {
            // Another process unpacked the same verified content first; use theirs.
            let _ = fs::remove_dir_all(&tmp_path);
            Ok(target)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp_path);
            Err(RegistryError::io("cannot rename into", &target, e))
        }
    }
}

/// Creates `dir` and its missing parents, owner-only on unix: an unpacked
/// root is mounted into sandboxes, so nobody else may add to it.
fn create_private_dir_all(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| RegistryError::io("cannot create", dir, e))
}

/// How a layer becomes files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    /// A wasm blob, written to [`DEFAULT_WASM_PATH`].
    Wasm,
    /// A tar stream, gzip-compressed or not.
    Tar { gzip: bool },
}

/// One layer to unpack and the digest its uncompressed content must have.
struct PlannedLayer<'a> {
    desc: &'a image::Descriptor,
    kind: LayerKind,
    /// The config's diff_id, checked while unpacking; `None` when the
    /// config lists none (artifacts), and the layer is then identified by
    /// its blob digest alone.
    diff_id: Option<String>,
}

impl PlannedLayer<'_> {
    /// The layer's part of the cache key.
    fn identity(&self) -> String {
        let kind = match self.kind {
            LayerKind::Wasm => "wasm",
            LayerKind::Tar { .. } => "tar",
        };
        let blob = format!("{kind} {} {}", self.desc.media_type, self.desc.digest);
        match &self.diff_id {
            Some(diff_id) => format!("{blob} diff {diff_id}"),
            None => blob,
        }
    }

    /// Refuses the image when the content read does not hash to the
    /// layer's diff_id.
    fn verify(&self, image: &str, read: &MeterState) -> Result<()> {
        let Some(expected) = &self.diff_id else {
            return Ok(());
        };
        let actual = format!("sha256:{}", hex::encode(read.hash.clone().finalize()));
        if &actual != expected {
            return Err(RegistryError::DiffIdMismatch {
                image: image.to_string(),
                layer: self.desc.digest.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// The layers of `manifest` with the diff_ids its config claims for them.
fn plan_layers<'a>(
    store: &Store,
    digest: &str,
    manifest: &'a Manifest,
) -> Result<Vec<PlannedLayer<'a>>> {
    let format = manifest.format()?;
    let diff_ids = match format {
        image::ImageFormat::Image | image::ImageFormat::ComponentLayer => {
            let cfg: ImageConfig =
                serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
                    .map_err(|e| RegistryError::json("image config", e))?;
            cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default()
        }
        image::ImageFormat::Artifact => Vec::new(),
    };
    let use_diff_ids = diff_ids.len() == manifest.layers.len();
    if !use_diff_ids && !diff_ids.is_empty() && format == image::ImageFormat::Image {
        return Err(RegistryError::Unsupported {
            image: digest.to_string(),
            reason: format!(
                "its config lists {} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let mut plan = Vec::with_capacity(manifest.layers.len());
    for (index, desc) in manifest.layers.iter().enumerate() {
        let kind =
            if desc.media_type == MEDIA_WASM_LAYER || desc.media_type == MEDIA_COMPONENT_LAYER {
                LayerKind::Wasm
            } else if desc.media_type.contains("tar") && !desc.media_type.ends_with("zstd") {
                LayerKind::Tar {
                    gzip: desc.media_type.ends_with("gzip"),
                }
            } else {
                return Err(RegistryError::Unsupported {
                    image: digest.to_string(),
                    reason: format!(
                        "layer {} has media type {}, which berth cannot unpack",
                        desc.digest, desc.media_type
                    ),
                });
            };
        let diff_id = if use_diff_ids {
            let claimed = diff_ids[index].clone();
            crate::digest::hex_part(&claimed).map_err(|_| RegistryError::Unsupported {
                image: digest.to_string(),
                reason: format!(
                    "its config claims diff_id {claimed:?} for layer {}, which is not a sha256 digest",
                    desc.digest
                ),
            })?;
            Some(claimed)
        } else {
            None
        };
        plan.push(PlannedLayer {
            desc,
            kind,
            diff_id,
        });
    }
    Ok(plan)
}

/// The cache directory's name: a hash of every layer's kind and verified
/// digests, in order. The version tag keeps directories made before layers
/// were verified from ever being reused.
fn cache_key(plan: &[PlannedLayer<'_>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"berth-rootfs-v2");
    for layer in plan {
        hasher.update(b"\n");
        hasher.update(layer.identity().as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What an image has used of its [`UnpackLimits`] so far.
struct Budget<'a> {
    image: &'a str,
    limits: &'a UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Budget<'_> {
    /// The error for `what` going over `limit`.
    fn over(
        &self,
        what: String,
        limit: u64,
        unit: &'static str,
        setting: &'static str,
    ) -> RegistryError {
        RegistryError::UnpackLimit {
            image: self.image.to_string(),
            what,
            limit,
            unit,
            setting,
        }
    }

    /// Adds a finished read of layer `layer` (and `entries` entries) to the
    /// image's totals, refusing when the layer or the image went over.
    fn charge(&mut self, layer: &str, read: &MeterState, entries: u64) -> Result<()> {
        if let Some(error) = self.breach(layer, read) {
            return Err(error);
        }
        self.bytes += read.bytes;
        self.entries += entries;
        Ok(())
    }

    /// The limit a meter stopped at, if any.
    fn breach(&self, layer: &str, read: &MeterState) -> Option<RegistryError> {
        match read.stopped? {
            Stop::Layer => Some(self.over(
                format!("the uncompressed content of layer {layer}"),
                self.limits.max_layer_bytes,
                "bytes",
                UnpackLimits::ENV_LAYER_BYTES,
            )),
            Stop::Image => Some(self.over(
                "the uncompressed content of its layers together".into(),
                self.limits.max_image_bytes,
                "bytes",
                UnpackLimits::ENV_IMAGE_BYTES,
            )),
            Stop::Changed => Some(RegistryError::Unsupported {
                image: self.image.to_string(),
                reason: format!(
                    "layer {layer} grew in the local store while it was being unpacked"
                ),
            }),
        }
    }

    /// Counts one more entry of a layer that has had `in_layer` entries.
    fn count_entry(&self, layer: &str, in_layer: u64) -> Result<()> {
        if in_layer > self.limits.max_layer_entries {
            return Err(self.over(
                format!("the number of entries of layer {layer}"),
                self.limits.max_layer_entries,
                "entries",
                UnpackLimits::ENV_LAYER_ENTRIES,
            ));
        }
        if self.entries + in_layer > self.limits.max_image_entries {
            return Err(self.over(
                "the number of entries of its layers together".into(),
                self.limits.max_image_entries,
                "entries",
                UnpackLimits::ENV_IMAGE_ENTRIES,
            ));
        }
        Ok(())
    }
}

/// Which byte limit a [`Meter`] stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The layer's own limit.
    Layer,
    /// What was left of the image's limit.
    Image,
    /// The size the first pass over the same layer read.
    Changed,
}

/// What a [`Meter`] saw.
#[derive(Clone)]
struct MeterState {
    bytes: u64,
    hash: Sha256,
    stopped: Option<Stop>,
}

/// Hashes and counts the uncompressed bytes of one layer as they are read,
/// and fails the read past a byte limit, so a decompression bomb stops after
/// at most the limit, whatever its ratio.
struct Meter<R> {
    inner: R,
    state: std::rc::Rc<std::cell::RefCell<MeterState>>,
    limit: u64,
    stop: Stop,
}

impl<R: Read> Meter<R> {
    /// A meter for a first read of a layer, within the layer's limit and
    /// what the image has left.
    fn new(inner: R, budget: &Budget<'_>) -> Self {
        let layer = budget.limits.max_layer_bytes;
        let image = budget.limits.max_image_bytes.saturating_sub(budget.bytes);
        let (limit, stop) = if layer <= image {
            (layer, Stop::Layer)
        } else {
            (image, Stop::Image)
        };
        Self::with_limit(inner, limit, stop)
    }

    fn with_limit(inner: R, limit: u64, stop: Stop) -> Self {
        Meter {
            inner,
            state: std::rc::Rc::new(std::cell::RefCell::new(MeterState {
                bytes: 0,
                hash: Sha256::new(),
                stopped: None,
            })),
            limit,
            stop,
        }
    }

    /// A handle on the state that outlives the reader (tar owns it).
    fn shared(&self) -> std::rc::Rc<std::cell::RefCell<MeterState>> {
        self.state.clone()
    }

    fn finish(self) -> MeterState {
        self.state.borrow().clone()
    }
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.state.borrow_mut();
        // One byte past the limit is read to tell "exactly at" from "over".
        let room = self.limit.saturating_add(1).saturating_sub(state.bytes);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        state.bytes += n as u64;
        if state.bytes > self.limit {
            state.stopped = Some(self.stop);
            return Err(io::Error::other("unpack limit reached"));
        }
        state.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies one tar layer to `root`, within `budget`. `open` is called
/// twice: whiteouts are applied first (they only hide lower layers), then
/// the entries. The first pass reads the whole stream, so the layer's
/// digest and limits are checked before any of its files is written.
fn unpack_layer(
    root: &Path,
    open: impl Fn() -> Result<Box<dyn Read>>,
    layer: &PlannedLayer<'_>,
    budget: &mut Budget<'_>,
) -> Result<()> {
    let what = layer.desc.digest.as_str();
    let io_err = |e| RegistryError::io("cannot read layer", what, e);
    // Pass 1: check the whole stream, collect whiteouts.
    let meter = Meter::new(open()?, budget);
    let state = meter.shared();
    let mut whiteouts: Vec<(PathBuf, Option<String>, String)> = Vec::new();
    let mut entries_seen: u64 = 0;
    let listed = (|| -> Result<()> {
        let mut archive = tar::Archive::new(meter);
        for entry in archive.entries().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            entries_seen += 1;
            budget.count_entry(what, entries_seen)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let rel = safe_rel(&raw, what)?;
            let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == ".wh..wh..opq" {
                whiteouts.push((parent, None, raw));
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                if matches!(hidden, "" | "." | "..") {
                    return Err(RegistryError::UnsafeEntry {
                        layer: what.to_string(),
                        entry: raw.clone(),
                        reason: "a whiteout must name a file (`.wh.NAME`), not `.` or `..`".into(),
                    });
                }
                whiteouts.push((parent, Some(hidden.to_string()), raw));
            }
        }
        // The diff_id covers the whole stream, padding after the end of
        // the archive included.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_err)?;
        Ok(())
    })();
    let read = state.borrow().clone();
    if let Some(error) = budget.breach(what, &read) {
        return Err(error);
    }
    listed?;
    layer.verify(budget.image, &read)?;
    budget.charge(what, &read, entries_seen)?;
    for (parent, hidden, raw) in &whiteouts {
        check_no_symlink(root, parent, what, raw)?;
        match hidden {
            None => {
                if let Ok(entries) = fs::read_dir(root.join(parent)) {
                    for e in entries.flatten() {
                        remove_any(&e.path())?;
                    }
                }
            }
            Some(hidden) => {
                let victim = root.join(parent).join(hidden);
                if fs::symlink_metadata(&victim).is_ok() {
                    remove_any(&victim)?;
                }
            }
        }
    }
    // Pass 2: entries. The stream is read again from the store, so it is
    // metered again: the limits hold even if the blob changed in between.
    let verified_bytes = read.bytes;
    let meter = Meter::with_limit(open()?, verified_bytes, Stop::Changed);
    let state = meter.shared();
    let written = write_entries(root, meter, what);
    let read = state.borrow().clone();
    if let Some(error) = budget.breach(what, &read) {
        return Err(error);
    }
    written
}

/// Pass 2 of [`unpack_layer`]: creates the layer's files, directories and
/// links under `root`.
fn write_entries(root: &Path, stream: impl Read, what: &str) -> Result<()> {
    let io_err = |e| RegistryError::io("cannot read layer", what, e);
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_rel(&raw, what)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(".wh.") {
            continue;
        }
        let refuse = |reason: &str| RegistryError::UnsafeEntry {
            layer: what.to_string(),
            entry: raw.clone(),
            reason: reason.to_string(),
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        check_no_symlink(root, parent, what, &raw)?;
        fs::create_dir_all(root.join(parent))
            .map_err(|e| RegistryError::io("cannot create", root.join(parent), e))?;
        let dest = root.join(&rel);
        let existing = fs::symlink_metadata(&dest).ok();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove_any(&dest)?;
                    fs::create_dir(&dest)
                        .map_err(|e| RegistryError::io("cannot create", &dest, e))?;
                }
                None => fs::create_dir(&dest)
                    .map_err(|e| RegistryError::io("cannot create", &dest, e))?,
            }
            continue;
        }
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            other if is_metadata_entry(other) => continue,
            _ => return Err(refuse(SPECIAL_FILES_REFUSED)),
        }
        if existing.is_some() {
            remove_any(&dest)?;
        }
        match kind {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| refuse("symlink without a target"))?;
                let link = symlink_target(&rel, &target)
                    .ok_or_else(|| refuse("the symlink's target leaves the image root"))?;
                written.remove(&rel);
                make_symlink(&link, &dest)
                    .map_err(|e| RegistryError::io("cannot create symlink", &dest, e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .ok_or_else(|| refuse("hard link without a target"))?;
                let target_rel = safe_rel(&target, what)
                    .map_err(|_| refuse("the hard link points outside the image root"))?;
                check_no_symlink(
                    root,
                    target_rel.parent().unwrap_or(Path::new("")),
                    what,
                    &raw,
                )?;
                let is_file =
                    fs::symlink_metadata(root.join(&target_rel)).is_ok_and(|m| m.is_file());
                if !written.contains(&target_rel) || !is_file {
                    return Err(refuse(
                        "a hard link may only point to an earlier regular file of the same layer",
                    ));
                }
                fs::hard_link(root.join(&target_rel), &dest)
                    .map_err(|e| RegistryError::io("cannot link", &dest, e))?;
            }
            _ => {
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| RegistryError::io("cannot create", &dest, e))?;
                io::copy(&mut entry, &mut out)
                    .map_err(|e| RegistryError::io("cannot write", &dest, e))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                        .map_err(|e| RegistryError::io("cannot set mode of", &dest, e))?;
                }
                written.insert(rel.clone());
            }
        }
    }
    Ok(())
}

/// The entry's path relative to the root: leading `/` and `.` stripped,
/// `..` that would leave the root refused.
fn safe_rel(raw: &str, what: &str) -> Result<PathBuf> {
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(RegistryError::UnsafeEntry {
                        layer: what.to_string(),
                        entry: raw.to_string(),
                        reason: "the path leaves the image root through `..`".into(),
                    });
                }
            }
            c if c.contains('\\') || c.contains(':') && cfg!(windows) => {
                return Err(RegistryError::UnsafeEntry {
                    layer: what.to_string(),
                    entry: raw.to_string(),
                    reason: "the path contains characters that are path separators on Windows"
                        .into(),
                });
            }
            c => parts.push(c),
        }
    }
    Ok(parts.iter().collect())
}

/// Refuses if any existing component of `rel_dir` under `root` is a symlink
/// (writing through it could land anywhere).
fn check_no_symlink(root: &Path, rel_dir: &Path, what: &str, raw: &str) -> Result<()> {
    let mut p = root.to_path_buf();
    for c in rel_dir.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RegistryError::UnsafeEntry {
                    layer: what.to_string(),
                    entry: raw.to_string(),
                    reason: format!(
                        "it would be written through the symlink {}",
                        p.strip_prefix(root).unwrap_or(&p).display()
                    ),
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// The target to store for a symlink at `rel` pointing to `target`:
/// relative and lexically normalized, so that `..` appears only at its
/// start and never climbs above the root. `None` if it would leave the root.
///
/// Normalizing matters: `a/../..` where `a` is itself a symlink resolves
/// differently in the kernel than on paper; the stored form has no `..`
/// after a name, so following it can only descend after climbing through
/// real directories.
fn symlink_target(rel: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return None;
    }
    let absolute = target.starts_with('/');
    let depth = rel.parent().map_or(0, |p| p.components().count());
    // Absolute targets are relative to the root in the container's view:
    // climb from the link's directory up to the root first.
    let mut ups = if absolute { depth } else { 0 };
    let mut names: Vec<&str> = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if names.pop().is_none() && !absolute {
                    ups += 1;
                }
            }
            c => names.push(c),
        }
    }
    if ups > depth {
        return None;
    }
    let mut out: Vec<&str> = vec![".."; ups];
    out.extend(names);
    Some(if out.is_empty() {
        ".".into()
    } else {
        out.join("/")
    })
}

#[cfg(unix)]
fn make_symlink(target: &str, dest: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, dest)
}

#[cfg(windows)]
fn make_symlink(target: &str, dest: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, dest)
}

#[cfg(not(any(unix, windows)))]
fn make_symlink(_target: &str, _dest: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinks are not supported on this platform",
    ))
}

fn remove_any(path: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(path).map_err(|e| RegistryError::io("cannot inspect", path, e))?;
    let r = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| RegistryError::io("cannot remove", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets() {
        assert_eq!(
            symlink_target(Path::new("a/l"), "../b"),
            Some("../b".into())
        );
        assert_eq!(symlink_target(Path::new("a/l"), "../../etc"), None);
        assert_eq!(symlink_target(Path::new("l"), "../etc"), None);
        assert_eq!(
            symlink_target(Path::new("a/b/l"), "/etc/x"),
            Some("../../etc/x".into())
        );
        let t = |rel: &str, target: &str| symlink_target(Path::new(rel), target);
        assert_eq!(t("x/b", "a/../.."), Some("..".into()));
        assert_eq!(t("x/b", "a/../../.."), None);
        assert_eq!(t("l", "/../../etc"), Some("etc".into()));
        assert_eq!(t("l", ""), None);
    }
}
