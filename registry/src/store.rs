//! The local image store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) under one root directory.
//!
//! Promises, each relied on by pull, build and load:
//! - a blob is visible under its digest only once its bytes hash to it: it
//!   is streamed to a temp file in the store, hashed on the way, checked,
//!   fsynced and renamed into place;
//! - index.json only names manifests whose config and layers are all
//!   present: [`Store::tag`] checks under the lock before it writes;
//! - index.json is replaced atomically (temp file, fsync, rename) while
//!   holding `index.lock`, an OS file lock (`std::fs::File::lock`). The OS
//!   drops the lock when its holder dies, so a crash never leaves a stale
//!   lock to detect, and it works the same on Linux, macOS and Windows.
//!
//! Directories are created owner-only (0700) and files owner-only (0600)
//! on unix: the store may hold private images.
//!
//! Blobs are content-addressed, so layers shared by images are stored once.
//! Blobs are deleted only by [`Store::prune`]. The store never talks to the
//! network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{self, HashingWriter};
use crate::error::{RegistryError, Result};
use crate::image::{
    ANNOTATION_REF_NAME, ANNOTATION_SUBJECT, Descriptor, ImageConfig, Index, MEDIA_MANIFEST,
    Manifest,
};
use crate::reference::Reference;

const TMP_DIR: &str = "tmp";
const LOCK_FILE: &str = "index.lock";
const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
/// Temp files older than this are leftovers of a crashed writer.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// A local image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// One named (or, for digest-only pulls, unnamed) image of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The reference it is tagged with (`None` when only its digest is known).
    pub name: Option<Reference>,
    /// The manifest's digest.
    pub digest: String,
    /// Manifest, config and layer bytes.
    pub size: u64,
    /// The config's `created` time (RFC 3339), if any.
    pub created: Option<String>,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The full references that were removed.
    pub untagged: Vec<String>,
    /// The manifest digest they pointed to.
    pub digest: String,
}

/// What [`Store::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Digests of the deleted blobs.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// A blob being written: bytes go to a temp file and are hashed; nothing
/// is visible until [`BlobWriter::commit`] checks the digest.
pub struct BlobWriter {
    tmp: HashingWriter<tempfile::NamedTempFile>,
    expected: String,
    target: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

impl BlobWriter {
    /// Gives up on the blob: deletes the temp file and returns the digest
    /// and size of what was written so far.
    pub fn abandon(self) -> (String, u64) {
        let (_tmp, digest, size) = self.tmp.finish();
        (digest, size)
    }

    /// Verifies the digest, fsyncs and moves the blob into place. Returns
    /// its size. On mismatch the temp file is deleted and nothing changes.
    pub fn commit(self) -> Result<u64> {
        let (tmp, actual, size) = self.tmp.finish();
        if actual != self.expected {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {}", self.expected),
                expected: self.expected,
                actual,
            });
        }
        persist_blob(tmp, &self.target)?;
        Ok(size)
    }
}

/// Fsyncs a complete blob and moves it into place.
fn persist_blob(tmp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
    berth_fs::persist(tmp, target).map_err(|e| RegistryError::io("cannot write", target, e))
}

impl Store {
    /// Opens the store at `root` (usually `$BERTH_HOME/images`), creating it if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join(TMP_DIR)] {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(&dir)
                .map_err(|e| RegistryError::io("cannot create", &dir, e))?;
        }
        let store = Store { root };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&store.root, &layout, OCI_LAYOUT.as_bytes())?;
        }
        if !store.index_path().exists() {
            let _lock = store.lock()?;
            if !store.index_path().exists() {
                store.write_index(&Index::default())?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// The path of blob `digest` (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// True if blob `digest` is present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Starts writing blob `expected`.
    pub fn blob_writer(&self, expected: &str) -> Result<BlobWriter> {
        let target = self.blob_path(expected)?;
        let dir = self.root.join(TMP_DIR);
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|e| RegistryError::io("cannot create a temp file in", &dir, e))?;
        Ok(BlobWriter {
            tmp: HashingWriter::new(tmp),
            expected: expected.to_string(),
            target,
        })
    }

    /// Streams `reader` into blob `expected`, verifying the digest before the
    /// blob becomes visible. Returns the blob's size. Does nothing (beyond
    /// draining nothing) if the blob already exists.
    pub fn put_blob(&self, expected: &str, mut reader: impl Read) -> Result<u64> {
        if let Ok(meta) = fs::metadata(self.blob_path(expected)?) {
            return Ok(meta.len());
        }
        let mut w = self.blob_writer(expected)?;
        io::copy(&mut reader, &mut w)
            .map_err(|e| RegistryError::io("cannot store blob", expected, e))?;
        w.commit()
    }

    /// Streams `reader` into the blob named by the digest of what it
    /// yields, without holding it in memory (for blobs whose digest is not
    /// known in advance, such as a docker-archive's layers). The blob is
    /// named only after all of it was read and hashed, so it cannot be
    /// stored under a digest it does not have. Returns its digest and size.
    pub fn put_blob_stream(&self, mut reader: impl Read, what: &str) -> Result<(String, u64)> {
        let dir = self.root.join(TMP_DIR);
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(|e| RegistryError::io("cannot create a temp file in", &dir, e))?;
        let mut writer = HashingWriter::new(tmp);
        io::copy(&mut reader, &mut writer)
            .map_err(|e| RegistryError::io("cannot store blob", what, e))?;
        let (tmp, digest, size) = writer.finish();
        let target = self.blob_path(&digest)?;
        if !target.is_file() {
            persist_blob(tmp, &target)?;
        }
        Ok((digest, size))
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<String> {
        let d = digest::of(bytes);
        self.put_blob(&d, bytes)?;
        Ok(d)
    }

    /// Opens blob `digest` for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RegistryError::BlobNotFound(digest.to_string()),
            _ => RegistryError::io("cannot read", &path, e),
        })
    }

    /// Reads blob `digest` whole and checks its digest (meant for small
    /// blobs: manifests and configs).
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest)?;
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(|e| RegistryError::io("cannot read", &path, e))?;
        let actual = digest::of(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads and parses manifest `digest`.
    pub fn manifest(&self, digest: &str) -> Result<Manifest> {
        Manifest::from_slice(&self.read_blob(digest)?, &format!("manifest {digest}"))
    }

    /// Stores manifest bytes after checking that they parse and that every
    /// blob they name is present. Returns the manifest's digest. The
    /// manifest is not named in the index until [`Store::tag`].
    pub fn put_manifest(&self, bytes: &[u8]) -> Result<String> {
        let d = digest::of(bytes);
        let manifest = Manifest::from_slice(bytes, &format!("manifest {d}"))?;
        self.check_complete(&manifest)?;
        self.put_blob(&d, bytes)?;
        Ok(d)
    }

    fn check_complete(&self, manifest: &Manifest) -> Result<()> {
        for blob in manifest.blobs() {
            if !self.has_blob(&blob.digest) {
                return Err(RegistryError::BlobNotFound(blob.digest.clone()));
            }
        }
        Ok(())
    }

    /// Manifest `digest`: its bytes, parsed form and media type (OCI's
    /// default when the manifest does not say), for index entries.
    fn manifest_with_media_type(&self, digest: &str) -> Result<(Vec<u8>, Manifest, String)> {
        let bytes = self.read_blob(digest)?;
        let manifest = Manifest::from_slice(&bytes, &format!("manifest {digest}"))?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| MEDIA_MANIFEST.to_string());
        Ok((bytes, manifest, media_type))
    }

    /// Names manifest `digest` as `name` (replacing what `name` pointed to).
    pub fn tag(&self, name: &Reference, digest: &str) -> Result<()> {
        let (manifest_bytes, manifest, media_type) = self.manifest_with_media_type(digest)?;
        let _lock = self.lock()?;
        // Checked under the lock: a concurrent prune cannot delete a blob between
        // this check and the index write.
        self.check_complete(&manifest)?;
        let mut index = self.read_index()?;
        let full = name.full();
        index
            .manifests
            .retain(|d| match d.annotation(ANNOTATION_REF_NAME) {
                Some(n) => n != full,
                None => d.digest != digest,
            });
        let mut desc =
            Descriptor::new(&media_type, digest.to_string(), manifest_bytes.len() as u64);
        desc.annotations = Some(BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), full)]));
        index.manifests.push(desc);
        index.manifests.sort_by(|a, b| {
            a.annotation(ANNOTATION_REF_NAME)
                .cmp(&b.annotation(ANNOTATION_REF_NAME))
                .then(a.digest.cmp(&b.digest))
        });
        self.write_index(&index)
    }

    /// `berth tag SOURCE TARGET`: names the image `source` (a name, digest
    /// or digest prefix) also as `target`. Returns the manifest digest.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<String> {
        let target = Reference::parse(target)?;
        let digest = self.resolve_digest(source)?;
        self.tag(&target, &digest)?;
        Ok(digest)
    }

    /// Records manifest `digest` in the index without a name (an untagged
    /// build), so that prune keeps it and it can be referred to by digest.
    pub fn keep(&self, digest: &str) -> Result<()> {
        let (manifest_bytes, manifest, media_type) = self.manifest_with_media_type(digest)?;
        let _lock = self.lock()?;
        self.check_complete(&manifest)?;
        let mut index = self.read_index()?;
        if index.manifests.iter().any(|d| d.digest == digest) {
            return Ok(());
        }
        index.manifests.push(Descriptor::new(
            &media_type,
            digest.to_string(),
            manifest_bytes.len() as u64,
        ));
        self.write_index(&index)
    }

    /// Records manifest `digest`, an artifact of type `artifact_type`
    /// attached to image manifest `subject` (a digest), in the index with
    /// `annotations` and [`ANNOTATION_SUBJECT`]: never listed or resolved
    /// as an image, kept by [`Store::prune`] while `subject` is in the
    /// index. Replaces an attachment of `subject` with the same type and
    /// annotations. The manifest must be stored ([`Store::put_manifest`])
    /// and name `subject` as its subject.
    pub fn attach(
        &self,
        digest: &str,
        artifact_type: &str,
        subject: &str,
        mut annotations: BTreeMap<String, String>,
    ) -> Result<()> {
        let (manifest_bytes, manifest, media_type) = self.manifest_with_media_type(digest)?;
        if crate::precompiled::subject_of(&manifest_bytes).as_deref() != Some(subject) {
            return Err(RegistryError::Unsupported {
                image: subject.to_owned(),
                reason: format!("the artifact {digest} does not name it as its subject"),
            });
        }
        annotations.insert(ANNOTATION_SUBJECT.to_owned(), subject.to_owned());
        let _lock = self.lock()?;
        self.check_complete(&manifest)?;
        if !self.has_blob(subject) {
            return Err(RegistryError::BlobNotFound(subject.to_owned()));
        }
        let mut index = self.read_index()?;
        index.manifests.retain(|d| {
            !(d.digest == digest
                || (d.artifact_type.as_deref() == Some(artifact_type)
                    && d.annotations.as_ref() == Some(&annotations)))
        });
        let mut desc =
            Descriptor::new(&media_type, digest.to_string(), manifest_bytes.len() as u64);
        desc.artifact_type = Some(artifact_type.to_owned());
        desc.annotations = Some(annotations);
        index.manifests.push(desc);
        self.write_index(&index)
    }

    /// The index entries of the artifacts attached to image manifest
    /// `subject` (a digest).
    pub fn attachments(&self, subject: &str) -> Result<Vec<Descriptor>> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter(|d| d.annotation(ANNOTATION_SUBJECT) == Some(subject))
            .collect())
    }

    /// Resolves a name (`hello`, `hello:1.0`, `name@sha256:…`), a digest
    /// (`sha256:…`) or a unique digest prefix (at least 4 hex digits, as
    /// `berth images` prints) to the manifest digest and manifest.
    pub fn resolve(&self, name_or_digest: &str) -> Result<(String, Manifest)> {
        let digest = self.resolve_digest(name_or_digest)?;
        let manifest = self.manifest(&digest)?;
        Ok((digest, manifest))
    }

    fn resolve_digest(&self, value: &str) -> Result<String> {
        resolve_in(&self.read_index()?, value)
    }
    /// Every image named in the index.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for d in index.manifests.iter().filter(|d| !d.is_attachment()) {
            let name = d
                .annotation(ANNOTATION_REF_NAME)
                .and_then(|n| Reference::parse(n).ok())
                .filter(|r| r.tag().is_some());
            let (size, created) = match self.manifest(&d.digest) {
                Ok(m) => {
                    let created = self
                        .read_blob(&m.config.digest)
                        .ok()
                        .and_then(|c| serde_json::from_slice::<ImageConfig>(&c).ok())
                        .and_then(|c| c.created);
                    (d.size + m.content_size(), created)
                }
                Err(_) => (d.size, None),
            };
            out.push(ImageSummary {
                name,
                digest: d.digest.clone(),
                size,
                created,
            });
        }
        Ok(out)
    }

    /// Removes a name from the index. Given a digest (or digest prefix),
    /// removes every name of that image. Blobs stay until [`Store::prune`].
    pub fn remove(&self, name_or_digest: &str) -> Result<Removed> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let named = Reference::parse(name_or_digest)
            .ok()
            .map(|r| r.full())
            .filter(|full| {
                index
                    .manifests
                    .iter()
                    .any(|d| d.annotation(ANNOTATION_REF_NAME) == Some(full.as_str()))
            });
        let digest = match &named {
            Some(full) => index
                .manifests
                .iter()
                .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(full.as_str()))
                .map(|d| d.digest.clone())
                .ok_or_else(|| RegistryError::ImageNotFound(name_or_digest.to_string()))?,
            None => resolve_in(&index, name_or_digest)?,
        };
        let mut untagged = Vec::new();
        index.manifests.retain(|d| {
            let name = d
                .annotation(ANNOTATION_REF_NAME)
                .unwrap_or_default()
                .to_string();
            let hit = match &named {
                Some(full) => &name == full,
                None => d.digest == digest,
            };
            if hit {
                untagged.push(name);
            }
            !hit
        });
        self.write_index(&index)?;
        Ok(Removed { untagged, digest })
    }

    /// Deletes every blob not reachable from the index, and temp files left
    /// by crashed writers. Returns what was freed.
    pub fn prune(&self) -> Result<Pruned> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        // Attachments go with their image: once no image entry names
        // their subject, they are dropped from the index, and their blobs
        // below.
        let images: BTreeSet<String> = index
            .manifests
            .iter()
            .filter(|d| !d.is_attachment())
            .map(|d| d.digest.clone())
            .collect();
        let before = index.manifests.len();
        index.manifests.retain(|d| {
            d.annotation(ANNOTATION_SUBJECT)
                .is_none_or(|subject| images.contains(subject))
        });
        if index.manifests.len() != before {
            self.write_index(&index)?;
        }
        let mut keep = BTreeSet::new();
        for d in &index.manifests {
            keep.insert(d.digest.clone());
            // An unreadable manifest stops the prune: guessing would delete
            // layers an image still needs. `remove` the broken image first.
            let m = self.manifest(&d.digest)?;
            keep.extend(m.blobs().map(|b| b.digest.clone()));
        }
        let mut pruned = Pruned::default();
        let dir = self.root.join("blobs/sha256");
        let entries = fs::read_dir(&dir).map_err(|e| RegistryError::io("cannot list", &dir, e))?;
        for entry in entries.flatten() {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if keep.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path())
                .map_err(|e| RegistryError::io("cannot delete", entry.path(), e))?;
            pruned.freed_bytes += size;
            pruned.deleted.push(digest);
        }
        let tmp = self.root.join(TMP_DIR);
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TMP);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        pruned.deleted.sort();
        Ok(pruned)
    }

    /// The index as it is on disk.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(|e| RegistryError::io("cannot read", &path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::json(path.display().to_string(), e))
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(index).map_err(|e| RegistryError::json("index.json", e))?;
        write_atomic(&self.root.join(TMP_DIR), &self.index_path(), &bytes)
    }

    fn lock(&self) -> Result<File> {
        let path = self.root.join(LOCK_FILE);
        let mut options = fs::OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RegistryError::io("cannot open", &path, e))?;
        file.lock()
            .map_err(|e| RegistryError::io("cannot lock", &path, e))?;
        Ok(file)
    }
}

fn resolve_in(index: &Index, value: &str) -> Result<String> {
    let not_found = || RegistryError::ImageNotFound(value.to_string());
    // Attached artifacts are not images: never run, tag or remove one by
    // its digest.
    let images = Index {
        manifests: index
            .manifests
            .iter()
            .filter(|d| !d.is_attachment())
            .cloned()
            .collect(),
        ..Index::default()
    };
    let index = &images;
    if value.starts_with("sha256:") {
        digest::hex_part(value)?;
        return index
            .manifests
            .iter()
            .find(|d| d.digest == value)
            .map(|d| d.digest.clone())
            .ok_or_else(not_found);
    }
    let is_hex_prefix =
        value.len() >= 4 && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    if let Ok(reference) = Reference::parse(value) {
        let full = reference.full();
        if let Some(d) = index
            .manifests
            .iter()
            .find(|d| d.annotation(ANNOTATION_REF_NAME) == Some(full.as_str()))
        {
            return Ok(d.digest.clone());
        }
        if let Some(pinned) = reference.digest()
            && index.manifests.iter().any(|d| d.digest == pinned)
        {
            return Ok(pinned.to_string());
        }
        if !is_hex_prefix {
            return Err(not_found());
        }
    }
    if is_hex_prefix {
        let matches: BTreeSet<&str> = index
            .manifests
            .iter()
            .filter(|d| d.digest.trim_start_matches("sha256:").starts_with(value))
            .map(|d| d.digest.as_str())
            .collect();
        if matches.len() == 1 {
            return matches
                .into_iter()
                .next()
                .map(str::to_string)
                .ok_or_else(not_found);
        }
    }
    Err(not_found())
}

/// Writes `bytes` to `target` through a temp file in `tmp_dir` (same
/// filesystem), fsynced before the rename.
pub(crate) fn write_atomic(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    berth_fs::write_atomic_in(tmp_dir, target, |file| file.write_all(bytes))
        .map_err(|e| RegistryError::io("cannot write", target, e))
}
