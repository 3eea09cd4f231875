//! Unpacks an image into a directory the runtime mounts read-only at `/`.
//!
//! Each image's files are unpacked once into `<cache>/<chain-id>` (the OCI
//! chain id of its layers, so images sharing all layers share the
//! directory), through a temp directory renamed into place: a crash leaves
//! no half-unpacked rootfs under a final name.
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

/// The unpacked root of image `name_or_digest`, unpacking it into
/// `cache_root` first if needed.
pub fn rootfs(store: &Store, name_or_digest: &str, cache_root: &Path) -> Result<PathBuf> {
    let (digest, manifest) = store.resolve(name_or_digest)?;
    rootfs_of(store, &digest, &manifest, cache_root)
}

/// Like [`rootfs`] for an already resolved manifest.
pub fn rootfs_of(
    store: &Store,
    digest: &str,
    manifest: &Manifest,
    cache_root: &Path,
) -> Result<PathBuf> {
    let key = chain_id(store, manifest)?;
    let target = cache_root.join(key.trim_start_matches("sha256:"));
    if target.is_dir() {
        return Ok(target);
    }
    fs::create_dir_all(cache_root)
        .map_err(|e| RegistryError::io("cannot create", cache_root, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache_root)
        .map_err(|e| RegistryError::io("cannot create a temp dir in", cache_root, e))?;
    let root = tmp.path();
    for layer in &manifest.layers {
        if layer.media_type == MEDIA_WASM_LAYER || layer.media_type == MEDIA_COMPONENT_LAYER {
            let dest = root.join(DEFAULT_WASM_PATH.trim_start_matches('/'));
            let mut src = store.open_blob(&layer.digest)?;
            let mut out = fs::File::create(&dest)
                .map_err(|e| RegistryError::io("cannot create", &dest, e))?;
            io::copy(&mut src, &mut out)
                .map_err(|e| RegistryError::io("cannot write", &dest, e))?;
            continue;
        }
        if !layer.media_type.contains("tar") || layer.media_type.ends_with("zstd") {
            return Err(RegistryError::Unsupported {
                image: digest.to_string(),
                reason: format!(
                    "layer {} has media type {}, which berth cannot unpack",
                    layer.digest, layer.media_type
                ),
            });
        }
        let gz = layer.media_type.ends_with("gzip");
        let open = || -> Result<Box<dyn Read>> {
            let f = store.open_blob(&layer.digest)?;
            Ok(if gz {
                Box::new(flate2::read::GzDecoder::new(f))
            } else {
                Box::new(f)
            })
        };
        unpack_layer(root, open, &layer.digest)?;
    }
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => {
            // Another process unpacked the same image first; use theirs.
            let _ = fs::remove_dir_all(&tmp_path);
            Ok(target)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp_path);
            Err(RegistryError::io("cannot rename into", &target, e))
        }
    }
}

/// The cache key: the OCI chain id of the layers' diff ids for tar images,
/// a hash of the layer digests for the others.
fn chain_id(store: &Store, manifest: &Manifest) -> Result<String> {
    let diff_ids = match manifest.format()? {
        image::ImageFormat::Image => {
            let cfg: ImageConfig =
                serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
                    .map_err(|e| RegistryError::json("image config", e))?;
            cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let ids: Vec<String> = if diff_ids.len() == manifest.layers.len() {
        diff_ids
    } else {
        manifest
            .layers
            .iter()
            .map(|l| format!("{}:{}", l.media_type, l.digest))
            .collect()
    };
    let mut chain = String::new();
    for id in ids {
        chain = if chain.is_empty() {
            id
        } else {
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{chain} {id}")))
            )
        };
    }
    if !chain.starts_with("sha256:") || chain.contains(['/', '\\']) || chain.len() != 71 {
        chain = format!("sha256:{}", hex::encode(Sha256::digest(chain)));
    }
    Ok(chain)
}

/// Applies one tar layer to `root`. `open` is called twice: whiteouts are
/// applied first (they only hide lower layers), then the entries.
pub fn unpack_layer(
    root: &Path,
    open: impl Fn() -> Result<Box<dyn Read>>,
    what: &str,
) -> Result<()> {
    let io_err = |e| RegistryError::io("cannot read layer", what, e);
    // Pass 1: whiteouts.
    let mut archive = tar::Archive::new(open()?);
    for entry in archive.entries().map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_rel(&raw, what)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == ".wh..wh..opq" {
            let dir = root.join(parent);
            check_no_symlink(root, parent, what, &raw)?;
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    remove_any(&e.path())?;
                }
            }
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            if matches!(hidden, "" | "." | "..") {
                return Err(RegistryError::UnsafeEntry {
                    layer: what.to_string(),
                    entry: raw.clone(),
                    reason: "a whiteout must name a file (`.wh.NAME`), not `.` or `..`".into(),
                });
            }
            check_no_symlink(root, parent, what, &raw)?;
            let victim = root.join(parent).join(hidden);
            if fs::symlink_metadata(&victim).is_ok() {
                remove_any(&victim)?;
            }
        }
    }
    // Pass 2: entries.
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let mut archive = tar::Archive::new(open()?);
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
