//! Builds, the local store and save/load, without a registry: Dockerfile
//! features and errors, reproducible digests, shared layers, prune, and
//! archive round trips.

mod common;

use std::collections::BTreeMap;

use berth_registry::build::{self, BuildOptions};
use berth_registry::image::{self, ImageFormat};
use berth_registry::{RegistryError, archive, digest, unpack};
use common::*;

fn blob_count(store: &berth_registry::Store) -> TestResult<usize> {
    Ok(std::fs::read_dir(store.root().join("blobs/sha256"))?.count())
}

#[test]
fn dockerfile_features() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, "conf/a.txt", &b"abc"[..])?;
    let tar = tar.into_inner()?;
    let dockerfile = r#"# syntax=docker/dockerfile:1
ARG BASE=scratch
FROM ${BASE}
ARG VERSION=1.0
ARG TARGET
MAINTAINER someone@example.com
LABEL org.opencontainers.image.version=$VERSION \
      description="a \"quoted\" value"
ENV APP_HOME=/srv/app MODE=${MODE:-prod}
ENV LEGACY some value
WORKDIR $APP_HOME
COPY --chown=1000:1000 bin/*.wasm ./
COPY static /srv/static/
ADD conf.tar /etc/
COPY ["notes.txt", "${TARGET}/"]
EXPOSE 8080 53/udp
ENTRYPOINT ["hello.wasm"]
CMD echo "two words"
"#;
    let ctx = context(
        dockerfile,
        &[
            ("bin/hello.wasm", &wasm),
            ("bin/readme.md", b"not copied"),
            ("static/index.html", b"<html>"),
            ("static/secret.key", b"ignored"),
            ("static/sub/x.txt", b"x"),
            ("conf.tar", &tar),
            ("notes.txt", b"n"),
            ("static/keep.key", b"kept"),
            (".dockerignore", b"# comment\n**/*.key\n!static/keep.key\n"),
        ],
    )?;
    let (dir, store) = store()?;
    let mut opts = BuildOptions::new(ctx.path());
    opts.tags = vec!["feat:1".into()];
    opts.build_args = BTreeMap::from([
        ("TARGET".into(), "/data".into()),
        ("UNUSED".into(), "x".into()),
    ]);
    let out = build::build(&store, &opts)?;
    assert_eq!(out.os, "wasip1");
    assert!(
        out.notes.iter().any(|n| n.contains("--chown")),
        "{:?}",
        out.notes
    );
    assert!(
        out.notes.iter().any(|n| n.contains("UNUSED")),
        "{:?}",
        out.notes
    );

    let rc = image::run_config(&store, "feat:1")?;
    assert_eq!(rc.wasm_path(), "/srv/app/hello.wasm");
    assert_eq!(rc.workdir.as_deref(), Some("/srv/app"));
    assert_eq!(rc.cmd, vec!["echo".to_string(), "two words".into()]);
    assert_eq!(
        rc.env,
        vec![
            "APP_HOME=/srv/app".to_string(),
            "MODE=prod".into(),
            "LEGACY=some value".into()
        ]
    );
    assert_eq!(
        rc.labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some("1.0")
    );
    assert_eq!(
        rc.labels.get("description").map(String::as_str),
        Some("a \"quoted\" value")
    );
    assert_eq!(
        rc.labels.get("maintainer").map(String::as_str),
        Some("someone@example.com")
    );
    assert_eq!(
        rc.exposed_ports,
        vec!["53/udp".to_string(), "8080/tcp".into()]
    );

    let root = unpack::rootfs(&store, "feat:1", &dir.path().join("rootfs"))?;
    assert_eq!(std::fs::read(root.join("srv/app/hello.wasm"))?, wasm);
    assert!(
        !root.join("srv/app/readme.md").exists(),
        "glob must only match *.wasm"
    );
    assert_eq!(
        std::fs::read(root.join("srv/static/index.html"))?,
        b"<html>"
    );
    assert_eq!(std::fs::read(root.join("srv/static/sub/x.txt"))?, b"x");
    assert!(
        !root.join("srv/static/secret.key").exists(),
        ".dockerignore must be honoured"
    );
    assert_eq!(
        std::fs::read(root.join("etc/conf/a.txt"))?,
        b"abc",
        "ADD must extract local tars"
    );
    assert_eq!(std::fs::read(root.join("data/notes.txt"))?, b"n");
    Ok(())
}

#[test]
fn every_bad_line_names_its_line_number() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let cases: &[(&str, usize, &str)] = &[
        (
            "FROM scratch\nCOPY hello.wasm /\n\nRUN cargo build\n",
            4,
            "no Linux shell",
        ),
        (
            "FROM scratch\n# c\nHEALTHCHECK CMD true\n",
            3,
            "HEALTHCHECK",
        ),
        ("FROM scratch\nSHELL [\"/bin/bash\"]\n", 2, "no shell"),
        ("FROM scratch\nUSER app\n", 2, "USER"),
        ("FROM scratch\nVOLUME /data\n", 2, "-v"),
        ("FROM scratch\nSTOPSIGNAL SIGTERM\n", 2, "signals"),
        ("FROM scratch\nONBUILD COPY . /\n", 2, "ONBUILD"),
        ("FROM scratch\nFROBNICATE x\n", 2, "unknown instruction"),
        ("FROM scratch\nCOPY missing.wasm /\n", 2, "missing.wasm"),
        ("FROM scratch\nCOPY --from=builder /x /\n", 2, "multi-stage"),
        ("FROM scratch\nFROM scratch\n", 2, "multi-stage"),
        ("FROM scratch\nEXPOSE http\n", 2, "invalid port"),
        ("COPY hello.wasm /\nFROM scratch\n", 1, "before FROM"),
        ("FROM scratch\nENV A=${B\n", 2, "unterminated"),
        ("FROM scratch\nENV LONELY\n", 2, "missing value"),
        ("FROM not-in-store:1\n", 1, "not-in-store"),
        (
            "FROM scratch\nCOPY \\\n  ../outside /\n",
            2,
            "outside the build context",
        ),
        (
            "FROM scratch\nADD https://example.com/x.wasm /\n",
            2,
            "remote",
        ),
        ("FROM scratch\nCOPY hello.wasm\n", 2, "destination"),
        ("FROM scratch\nLABEL =x\n", 2, "KEY=VALUE"),
        ("FROM scratch\nRUN \\\n  make\nCOPY x /", 2, "RUN"),
    ];
    let (_d, store) = store()?;
    for (dockerfile, line, needle) in cases {
        let ctx = context(dockerfile, &[("hello.wasm", &wasm)])?;
        let err = match build::build(&store, &BuildOptions::new(ctx.path())) {
            Ok(_) => return Err(format!("{dockerfile:?} must fail").into()),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("line {line}:")),
            "{dockerfile:?}: {msg}"
        );
        assert!(
            msg.contains(needle),
            "{dockerfile:?}: {msg} (expected {needle:?})"
        );
    }
    Ok(())
}

#[test]
fn builds_are_reproducible() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let dockerfile = "FROM scratch\nCOPY . /app/\nENTRYPOINT [\"/app/hello.wasm\"]\n";
    let files: &[(&str, &[u8])] = &[("hello.wasm", &wasm), ("b/c.txt", b"c"), ("a.txt", b"a")];
    let mut digests = Vec::new();
    for format in [
        ImageFormat::Image,
        ImageFormat::Image,
        ImageFormat::Artifact,
        ImageFormat::Artifact,
    ] {
        let ctx = context(dockerfile, files)?;
        // Different mtimes between the two contexts must not matter.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (_d, store) = store()?;
        let mut opts = BuildOptions::new(ctx.path());
        opts.format = format;
        opts.source_date_epoch = Some(0);
        digests.push(build::build(&store, &opts)?.digest);
    }
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[2], digests[3]);
    assert_ne!(digests[0], digests[2]);

    let ctx = context(dockerfile, files)?;
    let (_d, store) = store()?;
    let mut opts = BuildOptions::new(ctx.path());
    opts.source_date_epoch = Some(1_700_000_000);
    let later = build::build(&store, &opts)?.digest;
    assert_ne!(
        later, digests[0],
        "SOURCE_DATE_EPOCH must change the timestamps"
    );
    Ok(())
}

#[test]
fn artifact_needs_exactly_one_wasm() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let (_d, store) = store()?;
    let ctx = context(
        "FROM scratch\nCOPY a.wasm b.wasm /\nENTRYPOINT [\"/a.wasm\"]\n",
        &[("a.wasm", &wasm), ("b.wasm", &wasm)],
    )?;
    let mut opts = BuildOptions::new(ctx.path());
    opts.format = ImageFormat::Artifact;
    let err = build::build(&store, &opts)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("exactly one .wasm"), "{err}");
    opts.format = ImageFormat::Image;
    build::build(&store, &opts)?;
    Ok(())
}

#[test]
fn shared_layers_are_stored_once_and_prune_frees_the_rest() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let (_d, store) = store()?;
    let base = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm)],
        "base:1",
        ImageFormat::Image,
    )?;
    let child = build_image(
        &store,
        "FROM base:1\nCOPY extra.txt /extra.txt\nCMD [\"x\"]\n",
        &[("extra.txt", b"extra")],
        "child:1",
        ImageFormat::Image,
    )?;
    let (_, bm) = store.resolve("base:1")?;
    let (_, cm) = store.resolve("child:1")?;
    assert_eq!(cm.layers.len(), 2);
    assert_eq!(
        cm.layers[0], bm.layers[0],
        "the child reuses the base layer"
    );
    let mut unique = std::collections::BTreeSet::new();
    for (d, m) in [(&base.digest, &bm), (&child.digest, &cm)] {
        unique.insert(d.clone());
        unique.extend(m.blobs().map(|b| b.digest.clone()));
    }
    assert_eq!(blob_count(&store)?, unique.len(), "every blob once");

    // Two tags, one image: removing one tag keeps the image.
    assert_eq!(store.tag_image("base:1", "base:2")?, base.digest);
    let info = image::inspect(&store, "base:2")?;
    assert_eq!(
        info.names,
        vec![
            "docker.io/library/base:1".to_string(),
            "docker.io/library/base:2".into()
        ]
    );
    assert_eq!(info.config["architecture"], "wasm");
    store.remove("base:1")?;
    assert_eq!(store.resolve("base:2")?.0, base.digest);
    assert_eq!(
        store.prune()?.freed_bytes,
        0,
        "everything is still referenced"
    );

    store.remove("child:1")?;
    let pruned = store.prune()?;
    assert!(pruned.freed_bytes > 0);
    assert!(pruned.deleted.contains(&child.digest));
    assert!(pruned.deleted.contains(&cm.layers[1].digest));
    assert!(
        store.has_blob(&bm.layers[0].digest),
        "the shared layer stays for base:2"
    );
    assert!(store.resolve("child:1").is_err());
    let listed = store.images()?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].name.as_ref().map(|r| r.short()),
        Some("base:2".to_string())
    );
    assert_eq!(listed[0].created.as_deref(), Some("1970-01-01T00:00:00Z"));
    Ok(())
}

#[test]
fn blob_with_wrong_digest_never_becomes_visible() -> TestResult {
    let (_d, store) = store()?;
    let claimed = digest::of(b"right");
    let err = store.put_blob(&claimed, &b"wrong"[..]);
    assert!(
        matches!(err, Err(RegistryError::DigestMismatch { .. })),
        "{err:?}"
    );
    assert!(!store.has_blob(&claimed));
    assert_eq!(std::fs::read_dir(store.root().join("tmp"))?.count(), 0);
    // A manifest whose blobs are missing cannot be stored or named.
    let manifest = format!(
        "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{claimed}\",\"size\":5}},\"layers\":[]}}"
    );
    assert!(matches!(
        store.put_manifest(manifest.as_bytes()),
        Err(RegistryError::BlobNotFound(_))
    ));
    Ok(())
}

#[test]
fn save_load_roundtrip_and_tampered_archive() -> TestResult {
    let p1 = example_wasm("hello.wasm")?;
    let p2 = example_wasm("hello-p2.wasm")?;
    let (dir, store) = store()?;
    let a = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &p1)],
        "one:1",
        ImageFormat::Image,
    )?;
    let b = build_image(
        &store,
        "FROM scratch\nCOPY p2.wasm /p2.wasm\n",
        &[("p2.wasm", &p2)],
        "localhost:5000/two:2",
        ImageFormat::Artifact,
    )?;
    let tar_path = dir.path().join("images.tar");
    archive::save(&store, &["one:1", "localhost:5000/two:2"], &tar_path)?;

    let (_d2, fresh) = common::store()?;
    let loaded = archive::load(&fresh, &tar_path)?;
    assert_eq!(loaded.images.len(), 2);
    assert_eq!(fresh.resolve("one:1")?.0, a.digest);
    assert_eq!(fresh.resolve("localhost:5000/two:2")?.0, b.digest);
    let rc = image::run_config(&fresh, "localhost:5000/two:2")?;
    let root = unpack::rootfs(&fresh, &b.digest, &dir.path().join("rootfs"))?;
    assert_eq!(
        std::fs::read(root.join(rc.wasm_path().trim_start_matches('/')))?,
        p2
    );

    // Flip one byte of the wasm layer inside the archive: load must refuse it.
    let (_, bm) = store.resolve(&b.digest)?;
    let layer_hex = bm.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let mut bytes = std::fs::read(&tar_path)?;
    let wasm_pos = find(&bytes, &p2[..64]).ok_or("wasm not found in the archive")?;
    bytes[wasm_pos + 200] ^= 0xff;
    let bad_path = dir.path().join("bad.tar");
    std::fs::write(&bad_path, &bytes)?;
    let (_d3, other) = common::store()?;
    let err = archive::load(&other, &bad_path);
    assert!(
        matches!(err, Err(RegistryError::DigestMismatch { .. })),
        "{err:?}"
    );
    assert!(other.images()?.is_empty());
    assert!(!other.has_blob(&format!("sha256:{layer_hex}")));
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(unix)]
#[test]
fn context_symlinks_are_copied_not_followed() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let ctx = context(
        "FROM scratch\nCOPY hello.wasm passwd /\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm)],
    )?;
    std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("passwd"))?;
    let (dir, store) = store()?;
    let out = build::build(&store, &BuildOptions::new(ctx.path()))?;
    let root = unpack::rootfs(&store, &out.digest, &dir.path().join("rootfs"))?;
    let meta = std::fs::symlink_metadata(root.join("passwd"))?;
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(root.join("passwd"))?,
        std::path::PathBuf::from("etc/passwd")
    );
    assert!(
        !root.join("etc/passwd").exists(),
        "the host file must not be copied"
    );
    Ok(())
}

#[test]
fn concurrent_writers_keep_the_index_whole() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let (_d, store) = store()?;
    let built = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm)],
        "base:1",
        ImageFormat::Image,
    )?;
    let root = store.root().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            let digest = built.digest.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let store = berth_registry::Store::open(root).map_err(|e| e.to_string())?;
                for j in 0..10 {
                    let r = berth_registry::Reference::parse(&format!("t{i}-{j}:1"))
                        .map_err(|e| e.to_string())?;
                    store.tag(&r, &digest).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "writer thread panicked")??;
    }
    assert_eq!(store.images()?.len(), 81);
    Ok(())
}

#[test]
fn an_image_interrupted_before_tagging_does_not_exist() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let (_d, store) = store()?;
    let built = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm)],
        "x:1",
        ImageFormat::Image,
    )?;
    // Simulate a crash between writing the blobs and naming the image: the
    // blobs are there, the index does not know them.
    store.remove("x:1")?;
    std::fs::write(store.root().join("tmp/blob-crashed"), b"half a layer")?;
    let reopened = berth_registry::Store::open(store.root())?;
    assert!(reopened.images()?.is_empty());
    assert!(matches!(
        reopened.resolve(&built.digest),
        Err(RegistryError::ImageNotFound(_))
    ));
    let pruned = reopened.prune()?;
    assert!(pruned.deleted.contains(&built.digest));
    assert_eq!(blob_count(&reopened)?, 0);
    Ok(())
}

/// Writes a tar archive of `files` (name, bytes) at `path`.
fn write_archive(path: &std::path::Path, files: &[(&str, &[u8])]) -> TestResult {
    let mut outer = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        outer.append_data(&mut h, name, *bytes)?;
    }
    std::fs::write(path, outer.into_inner()?)?;
    Ok(())
}

#[test]
fn docker_archive_loads() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(wasm.len() as u64);
    h.set_mode(0o755);
    layer.append_data(&mut h, "hello.wasm", wasm.as_slice())?;
    let layer = layer.into_inner()?;
    let config = format!(
        r#"{{"architecture":"wasm","os":"wasip1","config":{{"Entrypoint":["/hello.wasm"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        digest::of(&layer)
    );
    let manifest = r#"[{"Config":"abc.json","RepoTags":["dock:1"],"Layers":["l1/layer.tar"]}]"#;
    let (dir, store) = store()?;
    let path = dir.path().join("docker.tar");
    write_archive(
        &path,
        &[
            ("manifest.json", manifest.as_bytes()),
            ("abc.json", config.as_bytes()),
            ("l1/layer.tar", layer.as_slice()),
        ],
    )?;
    let loaded = archive::load(&store, &path)?;
    assert_eq!(loaded.images.len(), 1);
    let rc = image::run_config(&store, "dock:1")?;
    assert_eq!(rc.wasm_path(), "/hello.wasm");
    let root = unpack::rootfs(&store, "dock:1", &dir.path().join("rootfs"))?;
    assert_eq!(std::fs::read(root.join("hello.wasm"))?, wasm);
    Ok(())
}

/// A forged archive cannot make `load` hold a huge "config" in memory:
/// index, manifest and config files are bounded, and the refusal names the
/// file and the limit.
#[test]
fn archive_metadata_files_are_bounded() -> TestResult {
    let huge = vec![b' '; usize::try_from(archive::MAX_METADATA_BYTES)? + 1];
    let manifest = r#"[{"Config":"huge.json","RepoTags":["dock:1"],"Layers":[]}]"#;
    let (dir, store) = store()?;
    let path = dir.path().join("docker.tar");
    write_archive(
        &path,
        &[
            ("manifest.json", manifest.as_bytes()),
            ("huge.json", huge.as_slice()),
        ],
    )?;
    let error = archive::load(&store, &path).expect_err("a 4 MiB + 1 config is refused");
    let message = error.to_string();
    assert!(
        message.contains("huge.json") && message.contains("at most 4194304 bytes"),
        "{message}"
    );
    assert!(store.images()?.is_empty());
    Ok(())
}

#[test]
fn entrypoint_resets_only_an_inherited_cmd() -> TestResult {
    let wasm = example_wasm("hello.wasm")?;
    let (_d, store) = store()?;
    build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /\nCMD [\"/hello.wasm\", \"base\"]\n",
        &[("hello.wasm", &wasm)],
        "withcmd:1",
        ImageFormat::Image,
    )?;
    build_image(
        &store,
        "FROM withcmd:1\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[],
        "reset:1",
        ImageFormat::Image,
    )?;
    assert!(image::run_config(&store, "reset:1")?.cmd.is_empty());
    build_image(
        &store,
        "FROM withcmd:1\nCMD [\"mine\"]\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[],
        "kept:1",
        ImageFormat::Image,
    )?;
    let rc = image::run_config(&store, "kept:1")?;
    assert_eq!(rc.cmd, vec!["mine".to_string()]);
    assert_eq!(rc.argv(&[]), vec!["/hello.wasm".to_string(), "mine".into()]);
    assert_eq!(
        rc.argv(&["x".into()]),
        vec!["/hello.wasm".to_string(), "x".into()]
    );
    Ok(())
}
