//! Images through the `berth` binary against a real registry (Debian's
//! `docker-registry`, CNCF Distribution, started per test on 127.0.0.1):
//! build → push → rmi → pull → run for every format, authenticated pushes,
//! save/load, and what `berth run IMAGE` grants the program.

mod common;
#[path = "../../registry/tests/common/mod.rs"]
mod registry_support;

use std::time::Duration;

use common::{Berth, example};
use registry_support::Registry;

/// A build context with hello.wasm and files.wasm and the given Dockerfile.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context");
    for name in ["hello.wasm", "files.wasm", "hello-p2.wasm"] {
        std::fs::copy(example(&format!("wasm/{name}")), dir.path().join(name)).expect("copy wasm");
    }
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    std::fs::write(dir.path().join("motd.txt"), "from the image\n").expect("write motd");
    dir
}

const HELLO_DOCKERFILE: &str = "FROM scratch\nCOPY hello.wasm /app/hello.wasm\nENV GREETING=hi\nWORKDIR /app\nENTRYPOINT [\"/app/hello.wasm\"]\nCMD [\"default-arg\"]\nEXPOSE 8080\n";

#[test]
fn build_push_rmi_pull_run_round_trip_in_every_format() {
    let registry = Registry::start(None).expect("start registry");
    let berth = Berth::new();
    for (format, dockerfile, expected) in [
        (
            "image",
            HELLO_DOCKERFILE,
            "arg[1]=default-arg\nenv GREETING=hi\n",
        ),
        (
            "artifact",
            "FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
            "Hello from berth!\n",
        ),
        (
            "component-layer",
            "FROM scratch\nCOPY hello-p2.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
            "Hello from a WASI preview2 component!\n",
        ),
    ] {
        let ctx = context(dockerfile);
        let name = format!("{}/round/{format}:v1", registry.host());
        let ctx_path = ctx.path().display().to_string();
        let built = berth.run(&["build", "-q", "--format", format, "-t", &name, &ctx_path]);
        built.expect_code(0);
        let digest = built.stdout.trim().to_owned();
        assert!(digest.starts_with("sha256:"), "{format}: {}", built.stdout);
        berth.run(&["push", &name]).expect_code(0);
        berth.run(&["rmi", &name]).expect_code(0);
        berth.run(&["image", "prune"]).expect_code(0);
        berth
            .run(&["run", "--pull", "never", &name])
            .expect_berth_error("not in the local store");
        let pulled = berth.run(&["pull", &name]);
        pulled.expect_code(0);
        assert!(
            pulled.stdout.contains(&digest),
            "{format}: pulled {} not {digest}",
            pulled.stdout
        );
        let run = berth.run(&["run", &name]);
        run.expect_code(0);
        assert!(run.stdout.contains(expected), "{format}: {}", run.stdout);
        let images = berth.run(&["images", "--digests"]);
        assert!(images.stdout.contains(&digest), "{}", images.stdout);
    }
    // --pull missing (the default) fetches an image that is not local.
    let fresh = Berth::new();
    let name = format!("{}/round/image:v1", registry.host());
    let run = fresh.run(&["run", &name, "given"]);
    run.expect_code(0);
    assert!(run.stdout.contains("arg[1]=given\n"), "{}", run.stdout);
}

#[test]
fn pushing_to_an_authenticated_registry_needs_login() {
    let registry = Registry::start(Some(("alice", "s3cret"))).expect("start registry");
    let berth = Berth::new();
    let ctx = context(HELLO_DOCKERFILE);
    let name = format!("{}/private/hello:v1", registry.host());
    berth
        .run(&["build", "-t", &name, &ctx.path().display().to_string()])
        .expect_code(0);
    let denied = berth.run(&["push", &name]);
    denied.expect_code(125);
    assert!(!denied.stderr.contains("panicked"), "{}", denied.stderr);

    let wrong = berth.run_with(
        berth.command(&["login", "-u", "alice", "--password-stdin", &registry.host()]),
        Some(b"wrong\n"),
        Duration::from_secs(60),
    );
    wrong.expect_code(125);
    let login = berth.run_with(
        berth.command(&["login", "-u", "alice", "--password-stdin", &registry.host()]),
        Some(b"s3cret\n"),
        Duration::from_secs(60),
    );
    login.expect_code(0);
    let auth_file = berth.home.path().join("auth.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&auth_file)
            .expect("auth.json")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "auth.json mode {mode:o}");
    }
    berth.run(&["push", &name]).expect_code(0);
    berth.run(&["rmi", &name]).expect_code(0);
    berth.run(&["pull", &name]).expect_code(0);
    berth.run(&["logout", &registry.host()]).expect_code(0);
    let fresh = Berth::new();
    fresh.run(&["pull", &name]).expect_code(125);
}

/// Files in `berth`'s compile cache.
fn compiled_entries(berth: &Berth) -> usize {
    std::fs::read_dir(berth.home.path().join("cache/compiled"))
        .map(|entries| entries.flatten().filter(|e| e.path().is_file()).count())
        .unwrap_or(0)
}

#[test]
fn build_pull_and_load_precompile_the_entrypoint() {
    let registry = Registry::start(None).expect("start registry");
    let ctx =
        context("FROM scratch\nCOPY hello-p2.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n");
    let ctx_path = ctx.path().display().to_string();
    let name = format!("{}/pre/hello:v1", registry.host());

    let builder = Berth::new();
    builder
        .run(&["build", "-q", "-t", &name, &ctx_path])
        .expect_code(0);
    assert_eq!(
        compiled_entries(&builder),
        1,
        "build compiles the entrypoint"
    );
    builder.run(&["push", &name]).expect_code(0);
    let out = tempfile::tempdir().expect("out");
    let tar = out.path().join("hello.tar");
    builder
        .run(&["save", "-o", &tar.display().to_string(), &name])
        .expect_code(0);

    let puller = Berth::new();
    puller.run(&["pull", &name]).expect_code(0);
    assert_eq!(compiled_entries(&puller), 1, "pull compiles the entrypoint");
    // `run` finds the compiled program rather than compiling another.
    let run = puller.run(&["run", &name]);
    run.expect_code(0);
    assert!(run.stdout.contains("preview2"), "{}", run.stdout);
    assert_eq!(compiled_entries(&puller), 1);

    let loader = Berth::new();
    loader
        .run(&["load", "-i", &tar.display().to_string()])
        .expect_code(0);
    assert_eq!(compiled_entries(&loader), 1, "load compiles the entrypoint");

    // An image whose program does not compile is still built; the reason
    // is a warning, and running it reports the error.
    let bad =
        context("FROM scratch\nCOPY broken.wasm /broken.wasm\nENTRYPOINT [\"/broken.wasm\"]\n");
    std::fs::write(bad.path().join("broken.wasm"), b"\0asm\x01\0\0\0\xff\xff").expect("write");
    let built = builder.run(&["build", "-t", "bad:v1", &bad.path().display().to_string()]);
    built.expect_code(0);
    assert!(
        built.stderr.contains("cannot precompile") && built.stderr.contains("broken.wasm"),
        "{}",
        built.stderr
    );
    assert_eq!(compiled_entries(&builder), 1);
    builder
        .run(&["run", "bad:v1"])
        .expect_berth_error("broken.wasm");
}

#[test]
fn save_and_load_round_trip() {
    let berth = Berth::new();
    let ctx = context(HELLO_DOCKERFILE);
    berth
        .run(&["build", "-t", "saved:v1", &ctx.path().display().to_string()])
        .expect_code(0);
    let out = tempfile::tempdir().expect("out");
    let tar = out.path().join("saved.tar");
    berth
        .run(&["save", "-o", &tar.display().to_string(), "saved:v1"])
        .expect_code(0);
    let other = Berth::new();
    let loaded = other.run(&["load", "-i", &tar.display().to_string()]);
    loaded.expect_code(0);
    assert!(loaded.stdout.contains("saved:v1"), "{}", loaded.stdout);
    let run = other.run(&["run", "saved:v1"]);
    run.expect_code(0);
    assert!(run.stdout.contains("env GREETING=hi"), "{}", run.stdout);
}

#[test]
fn run_image_mounts_it_read_only_with_a_private_tmp() {
    let berth = Berth::new();
    let ctx = context(
        "FROM scratch\nCOPY files.wasm /bin/files.wasm\nCOPY motd.txt /etc/motd\nENTRYPOINT [\"/bin/files.wasm\"]\n",
    );
    berth
        .run(&["build", "-t", "tool", &ctx.path().display().to_string()])
        .expect_code(0);
    let run = berth.run(&["run", "tool", "cat", "/etc/motd"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "from the image\n");
    // The image is read-only; /tmp is writable and private to one run.
    berth
        .run(&["run", "tool", "write", "/etc/motd", "changed"])
        .expect_code(1);
    berth
        .run(&["run", "tool", "write", "/tmp/scratch", "x"])
        .expect_code(0);
    berth
        .run(&["run", "tool", "cat", "/tmp/scratch"])
        .expect_code(1);
    let run = berth.run(&["run", "tool", "cat", "/etc/motd"]);
    assert_eq!(run.stdout, "from the image\n");
    // -e and -w override the image; --entrypoint replaces it.
    let hello = context(HELLO_DOCKERFILE);
    berth
        .run(&["build", "-t", "hello", &hello.path().display().to_string()])
        .expect_code(0);
    let run = berth.run(&["run", "-e", "GREETING=override", "hello"]);
    assert!(
        run.stdout.contains("env GREETING=override\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("env GREETING=hi\n"), "{}", run.stdout);
}

#[test]
fn bad_dockerfile_lines_name_their_line_number() {
    let berth = Berth::new();
    for (dockerfile, line) in [
        (
            "FROM scratch\nCOPY hello.wasm /hello.wasm\nRUN make\n",
            "line 3",
        ),
        ("FROM scratch\nBOGUS thing\n", "line 2"),
        (
            "# comment\nFROM scratch\nCOPY missing.wasm /x.wasm\n",
            "line 3",
        ),
        ("FROM scratch\nENTRYPOINT [\"/hello.wasm\"\n", "line 2"),
    ] {
        let ctx = context(dockerfile);
        let run = berth.run(&["build", "-t", "bad", &ctx.path().display().to_string()]);
        run.expect_berth_error(line);
    }
}

/// `berth inspect IMAGE`'s precompiled programs: (target, engine, code digest).
fn precompiled_of(berth: &Berth, image: &str) -> (String, Vec<(String, String, String)>) {
    let inspect = berth.run(&["inspect", image]);
    inspect.expect_code(0);
    let json: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("inspect JSON");
    let id = json[0]["Id"].as_str().expect("Id").to_owned();
    let mut attached: Vec<_> = json[0]["Precompiled"]
        .as_array()
        .expect("Precompiled")
        .iter()
        .map(|p| {
            (
                p["Target"].as_str().expect("Target").to_owned(),
                p["Engine"].as_str().expect("Engine").to_owned(),
                p["Digest"].as_str().expect("Digest").to_owned(),
            )
        })
        .collect();
    attached.sort();
    (id, attached)
}

/// The code blob of the precompiled program for `target` of `image`.
fn precompiled_code_blob(berth: &Berth, image: &str, target: &str) -> std::path::PathBuf {
    let (_, attached) = precompiled_of(berth, image);
    let (_, _, manifest) = attached
        .iter()
        .find(|(t, _, _)| t == target)
        .expect("attached for target");
    let blobs = berth.home.path().join("images/blobs/sha256");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blobs.join(manifest.trim_start_matches("sha256:"))).expect("manifest"),
    )
    .expect("manifest JSON");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer");
    blobs.join(layer.trim_start_matches("sha256:"))
}

/// The berth built without the compiler, when the environment names it
/// (`.ci/slim` builds it; building it is a second full wasmtime compile).
fn slim_berth() -> Option<std::path::PathBuf> {
    std::env::var_os("BERTH_SLIM_BIN").map(std::path::PathBuf::from)
}

#[test]
fn precompiled_programs_are_attached_carried_and_run() {
    let host = berth_runtime::precompiled::host_target();
    let foreign = if host.starts_with("aarch64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    let berth = Berth::new();
    let ctx = context(HELLO_DOCKERFILE);
    let ctx_path = ctx.path().display().to_string();

    // A target berth does not compile for is refused before building.
    berth
        .run(&[
            "build",
            "--precompile",
            "riscv64gc-unknown-linux-gnu",
            "-t",
            "x:v1",
            &ctx_path,
        ])
        .expect_berth_error("riscv64gc-unknown-linux-gnu");
    assert_eq!(berth.run(&["images", "-q"]).stdout.trim(), "");

    // Attaching leaves the image, and its digest, as built.
    let built = berth.run(&["build", "-q", "-t", "pre:v1", &ctx_path]);
    built.expect_code(0);
    let digest = built.stdout.trim().to_owned();
    berth
        .run(&["image", "precompile", "pre:v1", "--target", foreign])
        .expect_code(0);
    let (id, attached) = precompiled_of(&berth, "pre:v1");
    assert_eq!(id, digest);
    assert_eq!(attached.len(), 1, "{attached:?}");
    assert_eq!(attached[0].0, foreign);

    // `build --precompile` attaches each target; attaching a target again
    // replaces its code.
    let rebuilt = berth.run(&[
        "build",
        "-q",
        "--precompile",
        &host,
        "--precompile",
        foreign,
        "-t",
        "pre:v1",
        &ctx_path,
    ]);
    rebuilt.expect_code(0);
    let (id, attached) = precompiled_of(&berth, "pre:v1");
    assert_eq!(id, rebuilt.stdout.trim());
    let targets: Vec<&str> = attached.iter().map(|(t, _, _)| t.as_str()).collect();
    let mut expected = vec![host.as_str(), foreign];
    expected.sort();
    assert_eq!(targets, expected, "{attached:?}");
    assert_ne!(attached[0].1, attached[1].1, "engine keys differ by target");
    // Attachments are not images.
    let images = berth.run(&["images", "-q"]);
    assert_eq!(images.stdout.trim().lines().count(), 1, "{}", images.stdout);

    let run = berth.run(&["run", "pre:v1"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Hello"), "{}", run.stdout);

    // save/load carry them.
    let out = tempfile::tempdir().expect("out");
    let tar = out.path().join("pre.tar");
    berth
        .run(&["save", "-o", &tar.display().to_string(), "pre:v1"])
        .expect_code(0);
    let loader = Berth::new();
    loader
        .run(&["load", "-i", &tar.display().to_string()])
        .expect_code(0);
    assert_eq!(
        precompiled_of(&loader, "pre:v1"),
        (id.clone(), attached.clone())
    );
    loader.run(&["run", "pre:v1"]).expect_code(0);

    if let Some(slim) = slim_berth() {
        run_without_the_compiler(&slim, &loader, &host, foreign, &ctx_path);
    }

    // Code whose bytes no longer match their digest is refused, even by a
    // berth that could compile.
    let blob = precompiled_code_blob(&loader, "pre:v1", &host);
    let mut code = std::fs::read(&blob).expect("code");
    let last = code.len() - 1;
    code[last] ^= 0xff;
    std::fs::write(&blob, &code).expect("corrupt");
    loader
        .run(&["run", "pre:v1"])
        .expect_berth_error(&blob.file_name().expect("name").to_string_lossy());

    // They go with their image.
    berth.run(&["rmi", "pre:v1"]).expect_code(0);
    let pruned = berth.run(&["image", "prune"]);
    pruned.expect_code(0);
    for (_, _, manifest) in &attached {
        assert!(
            pruned.stdout.contains(manifest.as_str()),
            "{}",
            pruned.stdout
        );
    }
}

/// The compiler-less berth at `slim` with `full`'s image store: runs the
/// image precompiled for its target, refuses the rest by name.
fn run_without_the_compiler(
    slim: &std::path::Path,
    full: &Berth,
    host: &str,
    foreign: &str,
    ctx_path: &str,
) {
    let slim_run = |berth: &Berth, args: &[&str]| {
        let mut command = std::process::Command::new(slim);
        command
            .args(args)
            .env("BERTH_HOME", berth.home.path())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        berth.run_with(command, None, Duration::from_secs(60))
    };
    let run = slim_run(full, &["run", "pre:v1"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Hello"), "{}", run.stdout);

    // No code for this target: refused, naming it. (Another image: the
    // same Dockerfile would build pre:v1 again, digest for digest.)
    let variant = context(&format!("{HELLO_DOCKERFILE}ENV VARIANT=3\n"));
    full.run(&[
        "build",
        "-q",
        "--precompile",
        foreign,
        "-t",
        "foreign:v1",
        &variant.path().display().to_string(),
    ])
    .expect_code(0);
    let refused = slim_run(full, &["run", "foreign:v1"]);
    refused.expect_berth_error(&format!(
        "image foreign:v1 has no program precompiled for {host}"
    ));
    assert!(
        refused.stderr.contains(&format!("--precompile {host}")),
        "{}",
        refused.stderr
    );

    // Code for this target made for another engine is not used; garbage
    // for this target and engine is refused, never loaded.
    let other = Berth::new();
    other
        .run(&["build", "-q", "-t", "other:v1", ctx_path])
        .expect_code(0);
    // Another image (its own digest) with the same program.
    let variant = context(&format!("{HELLO_DOCKERFILE}ENV VARIANT=2\n"));
    other
        .run(&[
            "build",
            "-q",
            "-t",
            "garbage:v1",
            &variant.path().display().to_string(),
        ])
        .expect_code(0);
    let code = std::fs::read(precompiled_code_blob(full, "pre:v1", host)).expect("code");
    attach(&other, "other:v1", host, &"0".repeat(32), &code);
    let refused = slim_run(&other, &["run", "other:v1"]);
    refused.expect_berth_error(&format!(
        "image other:v1 has no program precompiled for {host} (engine {})",
        berth_runtime::precompiled::engine_key(host)
    ));
    attach(
        &other,
        "garbage:v1",
        host,
        &berth_runtime::precompiled::engine_key(host),
        b"not code",
    );
    slim_run(&other, &["run", "garbage:v1"]).expect_berth_error("not wasmtime's");

    // Files need the compiler.
    let hello = example("wasm/hello.wasm").display().to_string();
    slim_run(full, &["run", &hello]).expect_berth_error("without the compiler");
}

/// Attaches `code` to `image` of `berth`'s store as a precompiled program
/// of hello.wasm for `target` and `engine`, as a forger could.
fn attach(berth: &Berth, image: &str, target: &str, engine: &str, code: &[u8]) {
    let store = berth_registry::Store::open(berth.home.path().join("images")).expect("store");
    let (digest, _) = store.resolve(image).expect("image");
    let hello = std::fs::read(example("wasm/hello.wasm")).expect("hello");
    let info = berth_registry::precompiled::PrecompiledInfo {
        target: target.to_owned(),
        engine: engine.to_owned(),
        source: berth_registry::digest::of(&hello),
        compatibility_hash: String::new(),
    };
    berth_registry::precompiled::attach(&store, &digest, &info, code).expect("attach");
}

#[test]
fn garbage_attached_for_this_machine_is_refused() {
    let host = berth_runtime::precompiled::host_target();
    let berth = Berth::new();
    let ctx = context(HELLO_DOCKERFILE);
    berth
        .run(&[
            "build",
            "-q",
            "-t",
            "forged:v1",
            &ctx.path().display().to_string(),
        ])
        .expect_code(0);
    attach(
        &berth,
        "forged:v1",
        &host,
        &berth_runtime::precompiled::engine_key(&host),
        b"#!/bin/sh\necho owned\n",
    );
    let run = berth.run(&["run", "forged:v1"]);
    run.expect_berth_error("refusing the code precompiled for /app/hello.wasm in forged:v1");
    assert!(!run.stdout.contains("owned"));
    // Code for another engine is ignored: this berth compiles instead.
    let variant = context(&format!("{HELLO_DOCKERFILE}ENV VARIANT=2\n"));
    berth
        .run(&[
            "build",
            "-q",
            "-t",
            "elsewhere:v1",
            &variant.path().display().to_string(),
        ])
        .expect_code(0);
    attach(&berth, "elsewhere:v1", &host, &"0".repeat(32), b"garbage");
    berth.run(&["run", "elsewhere:v1"]).expect_code(0);
}
