//! Layer unpacking against hostile tars: every escape is refused and
//! nothing lands outside the cache; whiteouts and docker's leading-`/`
//! stripping behave as in docker.

mod common;

use berth_registry::image::{
    Descriptor, ImageConfig, MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST, Manifest, RootFs,
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
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = store.put_blob_bytes(l)?;
        diff_ids.push(d.clone());
        descs.push(Descriptor::new(MEDIA_LAYER_TAR, d, l.len() as u64));
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
