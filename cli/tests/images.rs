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
