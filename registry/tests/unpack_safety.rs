//! Layer unpacking against hostile tars: every escape is refused and
//! nothing lands outside the cache; whiteouts and docker's leading-`/`
//! stripping behave as in docker; forged diff_ids and decompression bombs
//! are refused and leave nothing in the cache.

mod common;

use berth_registry::image::{
    self, Descriptor, ImageConfig, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
    Manifest, RootFs,
};
use berth_registry::{Reference, RegistryError, Store, digest, unpack};
use common::*;

/// One raw tar entry: name and link name are written byte for byte
/// (the tar crate's setters refuse `..`, which is exactly what we need).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn entry<'a>(name: &'a str, kind: tar::EntryType, link: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind,
        link,
        data,
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    entry(name, tar::EntryType::Regular, "", data)
}

fn raw_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            let _ = h.set_device_major(1);
            let _ = h.set_device_minor(3);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Stores an image made of `layers` (uncompressed tars) as `name`.
fn image_of(store: &Store, name: &str, layers: &[Vec<u8>]) -> TestResult<String> {
    let blobs: Vec<Layer<'_>> = layers
        .iter()
        .map(|l| (MEDIA_LAYER_TAR, l.clone()))
        .collect();
    let diff_ids = layers.iter().map(|l| digest::of(l)).collect();
    forged_image(store, name, &blobs, diff_ids)
}

#[test]
fn hostile_layers_are_refused() -> TestResult {
    use tar::EntryType::*;
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("dotdot", vec![raw_tar(&[file("../x", b"evil")])], "`..`"),
        (
            "nested-dotdot",
            vec![raw_tar(&[file("a/../../x", b"evil")])],
            "`..`",
        ),
        (
            "symlink-escape",
            vec![raw_tar(&[entry("out", Symlink, "../../../../tmp", b"")])],
            "leaves the image root",
        ),
        (
            "write-through-symlink",
            vec![raw_tar(&[
                entry("etc", Symlink, "/", b""),
                file("etc/x", b"evil"),
            ])],
            "through the symlink",
        ),
        (
            "write-through-symlink-next-layer",
            vec![
                raw_tar(&[
                    entry("lnk", Symlink, "sub", b""),
                    entry("sub/", Directory, "", b""),
                ]),
                raw_tar(&[file("lnk/x", b"evil")]),
            ],
            "through the symlink",
        ),
        (
            "char-device",
            vec![raw_tar(&[entry("dev/null", Char, "", b"")])],
            "device",
        ),
        (
            "fifo",
            vec![raw_tar(&[entry("pipe", Fifo, "", b"")])],
            "fifo",
        ),
        (
            "whiteout-dotdot",
            vec![
                raw_tar(&[file("a/b.txt", b"x")]),
                raw_tar(&[file(".wh...", b"")]),
            ],
            "whiteout",
        ),
        (
            "symlink-through-symlink",
            vec![raw_tar(&[
                entry("x/", Directory, "", b""),
                entry("x/a", Symlink, "..", b""),
                entry("x/b", Symlink, "a/../../..", b""),
            ])],
            "leaves the image root",
        ),
        (
            "hardlink-to-replaced-file",
            vec![raw_tar(&[
                file("f", b"data"),
                entry("f", Symlink, "/etc/passwd", b""),
                entry("h", Link, "f", b""),
            ])],
            "hard link",
        ),
        (
            "hardlink-outside",
            vec![raw_tar(&[entry("h", Link, "../../etc/passwd", b"")])],
            "hard link",
        ),
        (
            "hardlink-absolute-host-file",
            vec![raw_tar(&[entry("h", Link, "/etc/passwd", b"")])],
            "hard link",
        ),
    ];
    for (name, layers, needle) in cases {
        let (dir, store) = store()?;
        image_of(&store, &format!("evil-{name}:1"), &layers)?;
        let cache = dir.path().join("rootfs");
        let err = unpack::rootfs(&store, &format!("evil-{name}:1"), &cache);
        match err {
            Err(e @ RegistryError::UnsafeEntry { .. }) => {
                assert!(e.to_string().contains(needle), "{name}: {e}");
            }
            other => return Err(format!("{name}: expected a refusal, got {other:?}").into()),
        }
        assert!(!dir.path().join("x").exists(), "{name}: escaped");
        assert!(!dir.path().join("rootfs/x").exists(), "{name}: escaped");
        // Nothing is left under a final name, only (at most) nothing at all.
        let leftovers: Vec<_> = std::fs::read_dir(&cache)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
    Ok(())
}

#[test]
fn leading_slash_is_stripped_and_whiteouts_apply() -> TestResult {
    use tar::EntryType::*;
    let (dir, store) = store()?;
    let lower = raw_tar(&[
        file("/abs.txt", b"abs"),
        entry("a/", Directory, "", b""),
        file("a/keep", b"k"),
        file("a/gone", b"g"),
        entry("b/", Directory, "", b""),
        file("b/old", b"o"),
        file("f", b"first"),
        entry("rel", Symlink, "a/keep", b""),
        entry("absl", Symlink, "/a/keep", b""),
    ]);
    let upper = raw_tar(&[
        file("a/.wh.gone", b""),
        file("b/.wh..wh..opq", b""),
        file("b/new", b"n"),
        file("f", b"second"),
        entry("f2", Link, "f", b""),
    ]);
    image_of(&store, "ok:1", &[lower, upper])?;
    let root = unpack::rootfs(&store, "ok:1", &dir.path().join("rootfs"))?;
    assert_eq!(std::fs::read(root.join("abs.txt"))?, b"abs");
    assert!(root.join("a/keep").exists());
    assert!(!root.join("a/gone").exists());
    assert!(!root.join("b/old").exists());
    assert_eq!(std::fs::read(root.join("b/new"))?, b"n");
    assert_eq!(std::fs::read(root.join("f"))?, b"second");
    assert_eq!(std::fs::read(root.join("f2"))?, b"second");
    assert_eq!(std::fs::read(root.join("rel"))?, b"k");
    // Absolute symlink targets are rewritten to stay inside the root.
    assert_eq!(
        std::fs::read_link(root.join("absl"))?,
        std::path::PathBuf::from("a/keep")
    );
    assert_eq!(std::fs::read(root.join("absl"))?, b"k");
    // Unpacked once: the same directory comes back.
    assert_eq!(
        unpack::rootfs(&store, "ok:1", &dir.path().join("rootfs"))?,
        root
    );
    let _ = digest::of(b"");
    Ok(())
}

/// A layer blob: media type and bytes.
type Layer<'a> = (&'a str, Vec<u8>);

/// Stores an image whose layers are `blobs` (media type, bytes) and whose
/// config claims `diff_ids` for them, as `name`: a forger's tool.
fn forged_image(
    store: &Store,
    name: &str,
    blobs: &[Layer<'_>],
    diff_ids: Vec<String>,
) -> TestResult<String> {
    let mut descs = Vec::new();
    for (media, bytes) in blobs {
        let d = store.put_blob_bytes(bytes)?;
        descs.push(Descriptor::new(media, d, bytes.len() as u64));
    }
    let cfg = ImageConfig {
        created: None,
        author: None,
        architecture: "wasm".into(),
        os: "wasip1".into(),
        config: None,
        rootfs: Some(RootFs {
            kind: "layers".into(),
            diff_ids,
        }),
    };
    let cfg_bytes = serde_json::to_vec(&cfg)?;
    let cfg_digest = store.put_blob_bytes(&cfg_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_CONFIG, cfg_digest, cfg_bytes.len() as u64),
        layers: descs,
        annotations: None,
    };
    let digest = store.put_manifest(&serde_json::to_vec(&manifest)?)?;
    store.tag(&Reference::parse(name)?, &digest)?;
    Ok(digest)
}

fn gzip(bytes: &[u8]) -> TestResult<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Names left in the cache directory (none, or the directory is missing).
fn cache_names(cache: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(cache)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

fn unpack_with(
    store: &Store,
    name: &str,
    cache: &std::path::Path,
    limits: &unpack::UnpackLimits,
) -> Result<std::path::PathBuf, RegistryError> {
    let (digest, manifest) = store.resolve(name)?;
    unpack::rootfs_of(store, &digest, &manifest, cache, limits)
}

#[test]
fn forged_diff_ids_are_refused_and_never_poison_the_cache() -> TestResult {
    let (dir, store) = store()?;
    let cache = dir.path().join("rootfs");
    let legit = raw_tar(&[file("app.wasm", b"legit program")]);
    let legit_diff = digest::of(&legit);
    let evil = raw_tar(&[file("app.wasm", b"evil program")]);
    let evil_diff = digest::of(&evil);
    // The attacker's image arrives first and claims the legit layer's
    // diff_id, both as a plain tar and gzip-compressed.
    for (tag, media, blob) in [
        ("evil:tar", MEDIA_LAYER_TAR, evil.clone()),
        ("evil:gz", MEDIA_LAYER_GZIP, gzip(&evil)?),
    ] {
        let blob_digest = digest::of(&blob);
        forged_image(&store, tag, &[(media, blob)], vec![legit_diff.clone()])?;
        match unpack::rootfs(&store, tag, &cache) {
            Err(e @ RegistryError::DiffIdMismatch { .. }) => {
                let message = e.to_string();
                for needle in [&blob_digest, &legit_diff, &evil_diff] {
                    assert!(message.contains(needle.as_str()), "{tag}: {message}");
                }
            }
            other => return Err(format!("{tag}: expected a refusal, got {other:?}").into()),
        }
        assert!(
            cache_names(&cache).is_empty(),
            "{tag}: {:?}",
            cache_names(&cache)
        );
    }
    // The legit image unpacks its own files, and the forged one is still
    // refused afterwards: it never shares the legit image's directory.
    image_of(&store, "legit:1", std::slice::from_ref(&legit))?;
    let root = unpack::rootfs(&store, "legit:1", &cache)?;
    assert_eq!(std::fs::read(root.join("app.wasm"))?, b"legit program");
    #[cfg(unix)]
    for dir in [&cache, &root] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
    assert!(matches!(
        unpack::rootfs(&store, "evil:tar", &cache),
        Err(RegistryError::DiffIdMismatch { .. })
    ));
    assert_eq!(std::fs::read(root.join("app.wasm"))?, b"legit program");
    // Bytes hidden after the end of the archive are part of the diff_id.
    let mut padded = legit.clone();
    padded.extend_from_slice(b"trailing bytes");
    forged_image(
        &store,
        "padded:1",
        &[(MEDIA_LAYER_TAR, padded)],
        vec![legit_diff.clone()],
    )?;
    assert!(matches!(
        unpack::rootfs(&store, "padded:1", &cache),
        Err(RegistryError::DiffIdMismatch { .. })
    ));
    // A config that lists a different number of diff_ids than layers.
    forged_image(
        &store,
        "short:1",
        &[(MEDIA_LAYER_TAR, legit.clone()), (MEDIA_LAYER_TAR, legit)],
        vec![legit_diff],
    )?;
    let err = unpack::rootfs(&store, "short:1", &cache).expect_err("refused");
    assert!(err.to_string().contains("1 diff_ids for 2 layers"), "{err}");
    assert_eq!(cache_names(&cache).len(), 1, "{:?}", cache_names(&cache));
    Ok(())
}

fn small_limits() -> unpack::UnpackLimits {
    unpack::UnpackLimits {
        max_layer_bytes: 1 << 20,
        max_layer_entries: 100,
        max_image_bytes: 3 << 19,
        max_image_entries: 150,
    }
}

#[test]
fn decompression_bombs_are_refused_with_the_limit_named() -> TestResult {
    // 16 MiB of zeros in one file compress to about 16 KiB.
    let mut huge = Vec::new();
    {
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros")?;
        h.set_size(16 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        huge.extend_from_slice(h.as_bytes());
        huge.resize(huge.len() + (16 << 20) + 1024, 0);
    }
    let bomb = gzip(&huge)?;
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let names: Vec<String> = (0..2000).map(|i| format!("f{i}")).collect();
    let many = raw_tar(&names.iter().map(|n| file(n, b"")).collect::<Vec<_>>());
    let sixty: Vec<String> = (0..60).map(|i| format!("g{i}")).collect();
    let sixty = raw_tar(&sixty.iter().map(|n| file(n, b"")).collect::<Vec<_>>());
    let blob = |len: usize| raw_tar(&[file("blob", &vec![7u8; len])]);
    let cases: Vec<(&str, Vec<Layer<'_>>, &str, &str)> = vec![
        (
            "gzip-bomb",
            vec![(MEDIA_LAYER_GZIP, bomb)],
            "BERTH_UNPACK_MAX_LAYER_BYTES",
            "1048576 bytes",
        ),
        (
            "many-entries",
            vec![(MEDIA_LAYER_GZIP, gzip(&many)?)],
            "BERTH_UNPACK_MAX_LAYER_ENTRIES",
            "100 entries",
        ),
        (
            "image-entries",
            vec![
                (MEDIA_LAYER_TAR, sixty.clone()),
                (MEDIA_LAYER_TAR, sixty.clone()),
                (MEDIA_LAYER_TAR, sixty),
            ],
            "BERTH_UNPACK_MAX_IMAGE_ENTRIES",
            "150 entries",
        ),
        (
            "image-bytes",
            vec![
                (MEDIA_LAYER_TAR, blob(900 << 10)),
                (MEDIA_LAYER_TAR, blob(900 << 10)),
            ],
            "BERTH_UNPACK_MAX_IMAGE_BYTES",
            "1572864 bytes",
        ),
        (
            "wasm-layer",
            vec![(image::MEDIA_WASM_LAYER, vec![0u8; (1 << 20) + 1])],
            "BERTH_UNPACK_MAX_LAYER_BYTES",
            "1048576 bytes",
        ),
    ];
    for (name, layers, setting, limit) in cases {
        let (dir, store) = store()?;
        let cache = dir.path().join("rootfs");
        let diff_ids = layers
            .iter()
            .map(|(media, bytes)| {
                if *media == MEDIA_LAYER_GZIP {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&bytes[..]),
                        &mut out,
                    )
                    .map(|_| digest::of(&out))
                } else {
                    Ok(digest::of(bytes))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        forged_image(&store, &format!("{name}:1"), &layers, diff_ids)?;
        match unpack_with(&store, &format!("{name}:1"), &cache, &small_limits()) {
            Err(e @ RegistryError::UnpackLimit { .. }) => {
                let message = e.to_string();
                assert!(message.contains(setting), "{name}: {message}");
                assert!(message.contains(limit), "{name}: {message}");
            }
            other => return Err(format!("{name}: expected a refusal, got {other:?}").into()),
        }
        assert!(
            cache_names(&cache).is_empty(),
            "{name}: {:?}",
            cache_names(&cache)
        );
        // Within the defaults the same images unpack (the bomb is 16 MiB).
        unpack::rootfs(&store, &format!("{name}:1"), &cache)?;
    }
    Ok(())
}

#[test]
fn unpack_limits_default_to_the_documented_values() -> TestResult {
    let defaults = unpack::UnpackLimits::default();
    assert_eq!(defaults.max_layer_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(defaults.max_layer_entries, 500_000);
    assert_eq!(defaults.max_image_bytes, 4 * 1024 * 1024 * 1024);
    assert_eq!(defaults.max_image_entries, 1_000_000);
    assert_eq!(unpack::UnpackLimits::from_settings(|_| None)?, defaults);
    let set = unpack::UnpackLimits::from_settings(|name| {
        (name == "BERTH_UNPACK_MAX_IMAGE_BYTES").then(|| "1000".to_string())
    })?;
    assert_eq!(set.max_image_bytes, 1000);
    assert_eq!(set.max_layer_bytes, defaults.max_layer_bytes);
    let err = unpack::UnpackLimits::from_settings(|name| {
        (name == "BERTH_UNPACK_MAX_LAYER_ENTRIES").then(|| "lots".to_string())
    })
    .expect_err("not a number");
    let message = err.to_string();
    assert!(
        message.contains("BERTH_UNPACK_MAX_LAYER_ENTRIES"),
        "{message}"
    );
    assert!(message.contains("\"lots\""), "{message}");
    Ok(())
}
