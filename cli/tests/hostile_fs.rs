//! Hostile modules and hand-made images against berth's filesystem
//! promises, through the real binary: a working directory never leads out
//! of its mount (whatever a guest planted in an earlier run), it gets the
//! rights of the very mount that holds it, an image whose config forges
//! its layers' digests is refused at pull, load and run, and a
//! decompression bomb is refused with its limit named and nothing left
//! behind.

mod common;
#[path = "../../registry/tests/common/mod.rs"]
mod registry_support;

use std::path::{Path, PathBuf};

use berth_registry::image::{
    Descriptor, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST, Manifest,
};
use berth_registry::{Reference, Store, digest};
use common::{Berth, entries_under, example};
use registry_support::Registry;

fn path(relative: &str) -> String {
    example(relative).display().to_string()
}

/// A module that plants the symlink `work -> ../../..` (far enough up to
/// reach the host's `/` from any temp dir) in the preopened directory `fd`,
/// and exits with WASI's error number (0 when planted).
fn planter(fd: u32) -> String {
    let target = vec![".."; 32].join("/");
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{target}")
  (data (i32.const 1024) "work")
  (func (export "_start")
    (call $exit (call $symlink (i32.const 0) (i32.const {len}) (i32.const {fd})
                               (i32.const 1024) (i32.const 4)))))"#,
        len = target.len()
    )
}

/// `path` as seen from the host's `/`: what a guest whose working directory
/// is the host's root would open.
fn from_host_root(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_owned()
}

/// A file outside every mount, that no guest may read or replace.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        // Not under /tmp: an image's guest reaches its private /tmp under
        // that name, which would hide a host path starting with tmp/.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("outside dir");
        std::fs::write(dir.path().join("secret"), "host secret").expect("write secret");
        Outside { dir }
    }

    fn secret(&self) -> String {
        from_host_root(&self.dir.path().join("secret"))
    }

    fn planted(&self) -> String {
        from_host_root(&self.dir.path().join("planted"))
    }

    /// Asserts that the secret did not leak into `output` and nothing was
    /// written beside it.
    fn assert_untouched(&self, output: &str) {
        assert!(!output.contains("host secret"), "leaked: {output}");
        assert!(
            !self.dir.path().join("planted").exists(),
            "a guest wrote outside its mounts"
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.path().join("secret")).expect("secret"),
            "host secret"
        );
    }
}

/// One raw tar entry, written byte for byte (the tar crate's setters
/// refuse some names that a hostile image would use).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A hand-made image: uncompressed `layers` (stored gzip-compressed when
/// `gzipped`), `config` as the image's run config, and `diff_ids` as the
/// config claims them (the layers' true ones when `None`).
struct ImageSpec<'a> {
    layers: Vec<Vec<u8>>,
    gzipped: bool,
    config: serde_json::Value,
    diff_ids: Option<Vec<String>>,
    name: &'a str,
}

/// Stores `image` in `store` and returns its manifest digest.
fn put_image(store: &Store, image: &ImageSpec<'_>) -> String {
    let mut descs = Vec::new();
    for layer in &image.layers {
        let (media, blob) = if image.gzipped {
            (MEDIA_LAYER_GZIP, gzip(layer))
        } else {
            (MEDIA_LAYER_TAR, layer.clone())
        };
        let d = store.put_blob_bytes(&blob).expect("layer blob");
        descs.push(Descriptor::new(media, d, blob.len() as u64));
    }
    let diff_ids = image
        .diff_ids
        .clone()
        .unwrap_or_else(|| image.layers.iter().map(|l| digest::of(l)).collect());
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": image.config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = store.put_blob_bytes(&config).expect("config blob");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_CONFIG, config_digest, config.len() as u64),
        layers: descs,
        annotations: None,
    };
    let digest = store
        .put_manifest(&serde_json::to_vec(&manifest).expect("manifest json"))
        .expect("manifest");
    store
        .tag(&Reference::parse(image.name).expect("name"), &digest)
        .expect("tag");
    digest
}

fn home_store(berth: &Berth) -> Store {
    Store::open(berth.home.path().join("images")).expect("store")
}

/// Writes `image` as an OCI layout tar (what `berth load` reads) into `dir`.
fn archive_of(image: &ImageSpec<'_>, dir: &Path) -> PathBuf {
    let scratch = tempfile::tempdir().expect("scratch store");
    let store = Store::open(scratch.path().join("images")).expect("store");
    put_image(&store, image);
    let out = dir.join(format!("{}.tar", image.name.replace([':', '/'], "_")));
    berth_registry::archive::save(&store, &[image.name], &out).expect("save");
    out
}

/// Every name under the unpacked-rootfs cache, recursively, relative to it.
fn rootfs_cache_entries(berth: &Berth) -> Vec<String> {
    let root = berth.home.path().join("rootfs");
    let mut found: Vec<String> = entries_under(&root)
        .iter()
        .map(|path| {
            path.strip_prefix(&root)
                .expect("under the cache")
                .display()
                .to_string()
        })
        .collect();
    found.sort();
    found
}

/// Stores `name` in `berth`'s store: an image running `/bin/files.wasm`
/// in `workdir`, with the planter for preopen 5 at `/bin/plant.wasm`, and
/// `extra` entries in its layer.
fn put_tool_image(
    berth: &Berth,
    name: &str,
    workdir: &str,
    extra: &[(&str, tar::EntryType, &str, &[u8])],
) {
    let files = std::fs::read(example("wasm/files.wasm")).expect("files.wasm");
    let plant = planter(5);
    let mut entries = vec![
        ("bin/", tar::EntryType::Directory, "", &b""[..]),
        ("bin/files.wasm", tar::EntryType::Regular, "", &files),
        (
            "bin/plant.wasm",
            tar::EntryType::Regular,
            "",
            plant.as_bytes(),
        ),
    ];
    entries.extend_from_slice(extra);
    put_image(
        &home_store(berth),
        &ImageSpec {
            layers: vec![raw_tar(&entries)],
            gzipped: true,
            config: serde_json::json!({
                "Entrypoint": ["/bin/files.wasm"],
                "WorkingDir": workdir,
            }),
            diff_ids: None,
            name,
        },
    );
}

#[test]
fn a_symlink_planted_in_a_volume_cannot_carry_the_workdir_out() {
    let berth = Berth::new();
    let outside = Outside::new();
    let data = tempfile::tempdir().expect("data");
    let mount = format!("{}:/data", data.path().display());
    let scratch = tempfile::tempdir().expect("scratch");
    let plant = scratch.path().join("plant.wat");
    std::fs::write(&plant, planter(3)).expect("write planter");

    // Run 1: the guest plants a symlink that climbs out of its volume.
    berth
        .run(&["run", "-v", &mount, &plant.display().to_string()])
        .expect_code(0);
    assert!(
        std::fs::symlink_metadata(data.path().join("work")).is_ok_and(|m| m.is_symlink()),
        "run 1 should have planted the symlink"
    );

    // Run 2: a working directory through it is refused, not followed.
    let files = path("wasm/files.wasm");
    let secret = outside.secret();
    let planted = outside.planted();
    for args in [vec!["cat", secret.as_str()], vec!["write", &planted, "x"]] {
        let mut command = vec!["run", "-v", &mount, "-w", "/data/work", &files];
        command.extend(&args);
        let run = berth.run(&command);
        outside.assert_untouched(&run.stdout);
        run.expect_berth_error("/data/work");
    }

    // A symlink that stays inside the volume still works as the workdir.
    std::fs::create_dir(data.path().join("sub")).expect("mkdir");
    std::fs::write(data.path().join("sub/config.txt"), "inside").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink("sub", data.path().join("inner")).expect("symlink");
    let run = berth.run(&[
        "run",
        "-v",
        &mount,
        "-w",
        "/data/inner",
        &files,
        "cat",
        "config.txt",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "inside");
}

#[test]
fn an_image_workdir_through_a_planted_symlink_is_refused() {
    let berth = Berth::new();
    let outside = Outside::new();
    let volume = tempfile::tempdir().expect("volume");
    let mount = format!("{}:/data", volume.path().display());
    // Preopens of an image: / (3), /tmp (4), then -v mounts: /data (5);
    // the workdir does not exist yet in run 1.
    put_tool_image(&berth, "workdir-trap:1", "/data/work", &[]);
    berth
        .run(&[
            "run",
            "-v",
            &mount,
            "--entrypoint",
            "/bin/plant.wasm",
            "workdir-trap:1",
        ])
        .expect_code(0);
    let secret = outside.secret();
    let planted = outside.planted();
    for args in [vec!["cat", secret.as_str()], vec!["write", &planted, "x"]] {
        let mut command = vec!["run", "-v", &mount, "workdir-trap:1"];
        command.extend(&args);
        let run = berth.run(&command);
        outside.assert_untouched(&run.stdout);
        run.expect_berth_error("/data/work");
    }
}

#[test]
fn a_read_only_volume_stays_read_only_under_a_writable_prefix_sibling() {
    let berth = Berth::new();
    let rw = tempfile::tempdir().expect("rw");
    let ro = tempfile::tempdir().expect("ro");
    std::fs::create_dir(ro.path().join("data")).expect("mkdir");
    std::fs::write(ro.path().join("data/existing.txt"), "original").expect("write");
    // The workdir /srv/data is inside the read-only /srv; the writable
    // /srv/dat only shares a prefix with it.
    let ro_mount = format!("{}:/srv:ro", ro.path().display());
    let rw_mount = format!("{}:/srv/dat", rw.path().display());
    let files = path("wasm/files.wasm");
    let base = [
        "run",
        "-v",
        &ro_mount,
        "-v",
        &rw_mount,
        "-w",
        "/srv/data",
        &files,
    ];
    let run = berth.run(&[&base[..], &["write", "new.txt", "x"]].concat());
    run.expect_code(1);
    let run = berth.run(&[&base[..], &["append", "existing.txt", "more"]].concat());
    run.expect_code(1);
    assert!(!ro.path().join("data/new.txt").exists());
    assert!(!rw.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(ro.path().join("data/existing.txt")).expect("read"),
        "original"
    );
    // Reading is what the read-only mount grants.
    let run = berth.run(&[&base[..], &["cat", "existing.txt"]].concat());
    run.expect_code(0);
    assert_eq!(run.stdout, "original");
}

#[test]
fn an_image_workdir_beside_tmp_gets_the_read_only_root() {
    let berth = Berth::new();
    // WORKDIR /tmpx shares a prefix with the writable /tmp, and `tmpx -> .`
    // makes it the image's own root. Preopens: / (3), /tmp (4), and the
    // workdir "." (5).
    put_tool_image(
        &berth,
        "tmpx:1",
        "/tmpx",
        &[("tmpx", tar::EntryType::Symlink, ".", b"")],
    );
    let before = rootfs_cache_entries(&berth);
    let run = berth.run(&["run", "tmpx:1", "write", "planted", "x"]);
    run.expect_code(1);
    let run = berth.run(&["run", "--entrypoint", "/bin/plant.wasm", "tmpx:1"]);
    assert_ne!(run.code, Some(0), "the symlink was planted: {run:?}");
    // Reading through the workdir works, and nothing was added to the
    // image's root (which every later run of it shares).
    let run = berth.run(&["run", "tmpx:1", "ls", "bin"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "files.wasm\nplant.wasm\n");
    let after = rootfs_cache_entries(&berth);
    assert!(
        after
            .iter()
            .all(|entry| !entry.ends_with("planted") && !entry.ends_with("work")),
        "{after:?}"
    );
    assert!(
        before.is_empty() || before == after,
        "{before:?} → {after:?}"
    );
}

/// The victim's image and an attacker's image whose config claims the
/// victim layer's diff_id for a layer of its own.
fn legit_and_forged() -> (ImageSpec<'static>, ImageSpec<'static>) {
    let hello = std::fs::read(example("wasm/hello.wasm")).expect("hello.wasm");
    let exitcode = std::fs::read(example("wasm/exitcode.wasm")).expect("exitcode.wasm");
    let legit_layer = raw_tar(&[("app.wasm", tar::EntryType::Regular, "", &hello)]);
    let legit_diff = digest::of(&legit_layer);
    let evil_layer = raw_tar(&[("app.wasm", tar::EntryType::Regular, "", &exitcode)]);
    let legit = ImageSpec {
        layers: vec![legit_layer],
        gzipped: true,
        config: serde_json::json!({ "Entrypoint": ["/app.wasm"] }),
        diff_ids: None,
        name: "legit:1",
    };
    let forged = ImageSpec {
        layers: vec![evil_layer],
        gzipped: true,
        config: serde_json::json!({ "Entrypoint": ["/app.wasm", "7"] }),
        diff_ids: Some(vec![legit_diff]),
        name: "forged:1",
    };
    (legit, forged)
}

#[test]
fn an_image_forging_diff_ids_is_refused_at_load_and_run() {
    let berth = Berth::new();
    let (legit, forged) = legit_and_forged();
    let legit_diff = digest::of(&legit.layers[0]);
    let dir = tempfile::tempdir().expect("archives");

    // Loaded first, the forged image is refused and not kept.
    let forged_tar = archive_of(&forged, dir.path());
    berth
        .run(&["load", "-i", &forged_tar.display().to_string()])
        .expect_berth_error(&legit_diff);
    let images = berth.run(&["images"]);
    assert!(!images.stdout.contains("forged"), "{}", images.stdout);
    assert!(rootfs_cache_entries(&berth).is_empty());

    // Put in the store by other means, it is refused when run, before and
    // after the legit image is unpacked.
    put_image(&home_store(&berth), &forged);
    berth
        .run(&["run", "forged:1"])
        .expect_berth_error(&legit_diff);
    let legit_tar = archive_of(&legit, dir.path());
    berth
        .run(&["load", "-i", &legit_tar.display().to_string()])
        .expect_code(0);
    berth
        .run(&["run", "forged:1"])
        .expect_berth_error(&legit_diff);

    // The legit image runs its own program.
    let run = berth.run(&["run", "legit:1"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("Hello from berth!"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_image_forging_diff_ids_is_refused_at_pull() {
    let registry = Registry::start(None).expect("start registry");
    let (legit, forged) = legit_and_forged();
    let legit_diff = digest::of(&legit.layers[0]);
    let name = format!("{}/evil/app:v1", registry.host());
    let forged = ImageSpec {
        name: &name,
        ..forged
    };
    let attacker = Berth::new();
    put_image(&home_store(&attacker), &forged);
    attacker.run(&["push", "-q", &name]).expect_code(0);

    let victim = Berth::new();
    victim
        .run(&["pull", "-q", &name])
        .expect_berth_error(&legit_diff);
    let images = victim.run(&["images"]);
    assert!(!images.stdout.contains("evil/app"), "{}", images.stdout);
    assert!(rootfs_cache_entries(&victim).is_empty());
}

#[test]
fn decompression_bombs_are_refused_at_load_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("archives");
    // 8 MiB of zeros compress to a few KiB.
    let zeros = raw_tar(&[("zeros", tar::EntryType::Regular, "", &vec![0u8; 8 << 20])]);
    let names: Vec<String> = (0..500).map(|i| format!("f{i}")).collect();
    let many = raw_tar(
        &names
            .iter()
            .map(|n| (n.as_str(), tar::EntryType::Regular, "", &b""[..]))
            .collect::<Vec<_>>(),
    );
    for (layer, setting, value) in [
        (zeros, "BERTH_UNPACK_MAX_LAYER_BYTES", "1048576"),
        (many, "BERTH_UNPACK_MAX_LAYER_ENTRIES", "50"),
    ] {
        let bomb = ImageSpec {
            layers: vec![layer],
            gzipped: true,
            config: serde_json::json!({ "Entrypoint": ["/zeros"] }),
            diff_ids: None,
            name: "bomb:1",
        };
        let tar = archive_of(&bomb, dir.path());
        assert!(std::fs::metadata(&tar).expect("tar").len() < 1 << 20);
        let berth = Berth::new();
        let mut command = berth.command(&["load", "-i", &tar.display().to_string()]);
        command.env(setting, value);
        let run = berth.run_with(command, None, std::time::Duration::from_secs(60));
        run.expect_berth_error(setting);
        assert!(run.stderr.contains(value), "{}", run.stderr);
        assert!(
            rootfs_cache_entries(&berth).is_empty(),
            "{:?}",
            rootfs_cache_entries(&berth)
        );
        let images = berth.run(&["images"]);
        assert!(!images.stdout.contains("bomb"), "{}", images.stdout);
    }
}

#[test]
fn an_image_entrypoint_that_is_a_symlink_out_of_the_image_is_never_run() {
    let berth = Berth::new();
    // Creates the data directory owner-only before the store is opened here.
    berth.run(&["images"]).expect_code(0);
    // A real program on the host, outside any image: what the hostile
    // image wants berth to read and run for it.
    let outside = tempfile::tempdir().expect("outside");
    let host_program = outside.path().join("host.wasm");
    std::fs::copy(example("wasm/hello.wasm"), &host_program).expect("copy");
    let absolute = host_program.display().to_string();
    let relative = format!("../../../../../../../../..{absolute}");
    let store = home_store(&berth);
    // An absolute symlink means a path inside the image (the unpacked root
    // keeps it pointing there), where no such program exists; a relative
    // one that climbs out is refused when the layer is unpacked. Either
    // way the host's program is never read.
    for (name, link, refusal) in [
        ("escape:abs", absolute.as_str(), "does not exist in image"),
        ("escape:rel", relative.as_str(), "leaves the image root"),
    ] {
        let layer = raw_tar(&[
            ("app/", tar::EntryType::Directory, "", b""),
            ("app/x.wasm", tar::EntryType::Symlink, link, b""),
        ]);
        put_image(
            &store,
            &ImageSpec {
                layers: vec![layer],
                gzipped: false,
                config: serde_json::json!({ "Entrypoint": ["/app/x.wasm"] }),
                diff_ids: None,
                name,
            },
        );
        let run = berth.run(&["run", name]);
        assert!(!run.stdout.contains("Hello from berth"), "{}", run.stdout);
        run.expect_berth_error(refusal);
    }
}
