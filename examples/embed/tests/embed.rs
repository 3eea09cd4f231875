//! Runs the example host against an OCI layout folder made the way a user
//! would: images built into a store, written out with `berth save`'s
//! archive code, and the archive unpacked with tar.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_registry::build::{BuildOptions, build};
use berth_registry::{ImageFormat, Store, archive};

fn example_wasm(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../wasm")
        .join(name)
}

/// Builds `hello` as an artifact and `hog` as an image with tar layers,
/// saves both to one archive and unpacks it into a layout folder.
fn layout(dir: &Path) -> PathBuf {
    let store = Store::open(dir.join("store")).expect("store");
    for (name, format) in [
        ("hello", ImageFormat::Artifact),
        ("hog", ImageFormat::Image),
    ] {
        let context = dir.join(format!("{name}-context"));
        std::fs::create_dir_all(&context).expect("context");
        std::fs::copy(
            example_wasm(&format!("{name}.wasm")),
            context.join("app.wasm"),
        )
        .expect("copy wasm");
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY app.wasm /app.wasm\nENTRYPOINT [\"/app.wasm\"]\n",
        )
        .expect("Dockerfile");
        let mut options = BuildOptions::new(&context);
        options.tags = vec![format!("{name}:v1")];
        options.format = format;
        build(&store, &options).expect("build");
    }
    let archive_path = dir.join("images.tar");
    archive::save(&store, &["hello:v1", "hog:v1"], &archive_path).expect("save");
    let layout = dir.join("layout");
    let file = std::fs::File::open(&archive_path).expect("open archive");
    tar::Archive::new(file)
        .unpack(&layout)
        .expect("unpack archive");
    layout
}

/// Runs the example, killing it after a generous bound.
fn embed(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn embed");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("embed {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn the_example_runs_an_image_of_a_layout_folder_under_limits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = layout(dir.path());
    let layout = layout.to_str().expect("utf-8 path");

    let hello = embed(&[layout, "hello:v1", "64Mi", "one", "two"]);
    let stdout = String::from_utf8_lossy(&hello.stdout);
    assert_eq!(
        hello.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&hello.stderr)
    );
    assert!(stdout.contains("Hello from berth!\n"), "{stdout}");
    assert!(stdout.contains("arg[1]=one\narg[2]=two\n"), "{stdout}");
    assert!(stdout.contains("exit 0: Exited"), "{stdout}");

    // 16 MiB fits under 64 MiB; 64 MiB does not fit under 32 MiB.
    let fits = embed(&[layout, "hog:v1", "64Mi", "16"]);
    assert_eq!(fits.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&fits.stdout).contains("hog: allocated 16 MiB"));
    let hog = embed(&[layout, "hog:v1", "32Mi", "64"]);
    let stdout = String::from_utf8_lossy(&hog.stdout);
    assert_eq!(hog.status.code(), Some(137), "{stdout}");
    assert!(stdout.contains("OomKilled { limit: 33554432"), "{stdout}");
    assert!(!stdout.contains("allocated"), "{stdout}");

    // A bad limit is an error naming it.
    let bad = embed(&[layout, "hello:v1", "lots"]);
    assert_ne!(bad.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("invalid memory size \"lots\""), "{stderr}");

    // An image the folder does not hold is an error naming it.
    let missing = embed(&[layout, "absent:v1", "64Mi"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("absent"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
