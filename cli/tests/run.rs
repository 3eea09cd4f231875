//! `berth run` end to end: the examples' behaviour, exit codes, limits,
//! isolation and berth's own error messages, through the real binary.

mod common;

use std::time::Duration;

use common::{Berth, example};

fn path(relative: &str) -> String {
    example(relative).display().to_string()
}

#[test]
fn hello_sees_args_env_and_stdin() {
    let berth = Berth::new();
    let mut command = berth.command(&[
        "run",
        "-e",
        "GREETING=hi",
        &path("wasm/hello.wasm"),
        "one",
        "two words",
        "--stdin",
    ]);
    command.env("HOST_SECRET", "must-not-leak");
    let run = berth.run_with(command, Some(b"line a\nline b\n"), Duration::from_secs(60));
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Hello from berth!\narg[1]=one\narg[2]=two words\narg[3]=--stdin\nenv GREETING=hi\nstdin: line a\nstdin: line b\n"
    );
}

#[test]
fn env_file_and_later_flags_override() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("app.env");
    std::fs::write(&env_file, "# settings\nA=from-file\nB=kept\n").expect("write env file");
    let run = berth.run(&[
        "run",
        "--env-file",
        &env_file.display().to_string(),
        "-e",
        "A=from-flag",
        &path("wasm/hello.wasm"),
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("env A=from-flag\n"), "{}", run.stdout);
    assert!(run.stdout.contains("env B=kept\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("from-file"), "{}", run.stdout);
}

#[test]
fn preview2_component_runs() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("note.txt"), "mounted text\n").expect("write");
    let mount = format!("{}:/data:ro", dir.path().display());
    let run = berth.run(&[
        "run",
        "-e",
        "K=v",
        "-v",
        &mount,
        &path("wasm/hello-p2.wasm"),
        "cat",
        "/data/note.txt",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout
            .starts_with("Hello from a WASI preview2 component!\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("arg[1]=cat\n"), "{}", run.stdout);
    assert!(run.stdout.contains("env K=v\n"), "{}", run.stdout);
    assert!(run.stdout.contains("mounted text\n"), "{}", run.stdout);
    // Failure of a component command is exit code 1.
    berth
        .run(&["run", &path("wasm/hello-p2.wasm"), "cat", "/nowhere"])
        .expect_code(1);
}

#[test]
fn exit_codes_pass_through() {
    let berth = Berth::new();
    // WASI reserves 126..=255 (wasmtime traps on them), so the range ends at 125.
    for code in [0, 3, 42, 125] {
        berth
            .run(&["run", &path("wasm/exitcode.wasm"), &code.to_string()])
            .expect_code(code);
    }
}

#[test]
fn named_exports_are_called_with_typed_arguments() {
    let berth = Berth::new();
    let run = berth.run(&["run", &format!("{}#add", path("wat/add.wat")), "2", "40"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "42\n");
    let run = berth.run(&["run", &format!("{}#answer", path("wat/add.wat"))]);
    assert_eq!(run.stdout, "42\n");
    berth
        .run(&["run", &format!("{}#add", path("wat/add.wat")), "2"])
        .expect_berth_error("takes 2 argument(s)");
    berth
        .run(&["run", &format!("{}#add", path("wat/add.wat")), "2", "x"])
        .expect_berth_error("\"x\"");
    berth
        .run(&["run", &format!("{}#missing", path("wat/add.wat"))])
        .expect_berth_error("add, answer");
}

#[test]
fn traps_exit_134_with_a_backtrace() {
    let berth = Berth::new();
    let run = berth.run(&["run", &path("wat/trap.wat")]);
    run.expect_code(134);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.stderr.contains("inner"), "{}", run.stderr);
    assert!(run.stderr.contains("outer"), "{}", run.stderr);
    let run = berth.run(&["run", &path("wat/stackbomb.wat")]);
    run.expect_code(134);
    assert!(run.stderr.contains("stack"), "{}", run.stderr);
}

#[test]
fn bad_input_is_one_line_and_exit_125() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all\x00\x01").expect("write");
    berth
        .run(&["run", &garbage.display().to_string()])
        .expect_berth_error("is not WebAssembly");

    let hello = std::fs::read(example("wasm/hello.wasm")).expect("hello.wasm");
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &hello[..hello.len() / 2]).expect("write");
    berth
        .run(&["run", &truncated.display().to_string()])
        .expect_berth_error("is not a valid WebAssembly module");

    berth
        .run(&["run", "/definitely/missing.wasm"])
        .expect_berth_error("/definitely/missing.wasm");
    berth
        .run(&["run", "-m", "lots", &path("wasm/hello.wasm")])
        .expect_berth_error("\"lots\"");
    berth
        .run(&["run", "--cpus", "fast", &path("wasm/hello.wasm")])
        .expect_berth_error("\"fast\"");
    berth
        .run(&["run", "--timeout", "30", &path("wasm/hello.wasm")])
        .expect_berth_error("\"30\"");
    berth
        .run(&[
            "run",
            "-v",
            "/definitely/missing:/data",
            &path("wasm/hello.wasm"),
        ])
        .expect_berth_error("/definitely/missing");
    berth
        .run(&["run", "--no-such-flag", &path("wasm/hello.wasm")])
        .expect_berth_error("--no-such-flag");
    berth.run(&["run"]).expect_berth_error("FILE");
    berth
        .run(&["run", "-e", "=x", &path("wasm/hello.wasm")])
        .expect_berth_error("\"=x\"");
}

#[test]
fn memory_hog_is_oom_killed_over_the_limit_and_fine_under_it() {
    let berth = Berth::new();
    let run = berth.run(&["run", "-m", "32Mi", &path("wasm/hog.wasm"), "64"]);
    run.expect_code(137);
    assert!(run.stderr.contains("OOMKilled"), "{}", run.stderr);
    assert!(run.stderr.contains("32 MiB"), "{}", run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );

    let run = berth.run(&["run", "-m", "32Mi", &path("wasm/hog.wasm"), "16"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "hog: allocated 16 MiB\n");
}

#[test]
fn memory_and_table_bombs_are_contained() {
    let berth = Berth::new();
    for bomb in ["wat/membomb.wat", "wat/tablebomb.wat"] {
        let run = berth.run(&["run", "-m", "32Mi", &path(bomb)]);
        run.expect_code(137);
        assert!(run.stderr.contains("OOMKilled"), "{bomb}: {}", run.stderr);
    }
    // A module whose minimum memory exceeds the limit never starts.
    let run = berth.run(&["run", "-m", "64Mi", &path("wat/bigmem.wat")]);
    run.expect_code(137);
    assert!(run.stderr.contains("OOMKilled"), "{}", run.stderr);
}

#[test]
fn timeout_kills_an_endless_loop() {
    let berth = Berth::new();
    let run = berth.run(&["run", "--timeout", "1s", &path("wasm/busy.wasm")]);
    run.expect_code(137);
    assert!(run.stderr.contains("timeout of 1s"), "{}", run.stderr);
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "killed early: {:?}",
        run.elapsed
    );
    assert!(
        run.elapsed < Duration::from_secs(8),
        "killed late: {:?}",
        run.elapsed
    );
}

#[test]
fn hostile_module_cannot_leave_its_mounts() {
    let berth = Berth::new();
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "host secret").expect("write secret");
    let data = tempfile::tempdir().expect("data");
    std::fs::write(data.path().join("inside.txt"), "ok").expect("write inside");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), data.path().join("link-out"))
            .expect("symlink dir");
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            data.path().join("secret-link"),
        )
        .expect("symlink file");
        std::os::unix::fs::symlink(
            "../../../../../../etc/passwd",
            data.path().join("relative-link"),
        )
        .expect("relative symlink");
    }
    let outside_name = outside
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mount = format!("{}:/data", data.path().display());
    let attempts = [
        "/etc/passwd".to_owned(),
        "/data/../etc/passwd".to_owned(),
        "/data/../../../../etc/passwd".to_owned(),
        "../etc/passwd".to_owned(),
        format!("/data/../{outside_name}/secret"),
        "/data/link-out/secret".to_owned(),
        "/data/secret-link".to_owned(),
        "/data/relative-link".to_owned(),
        "/proc/self/environ".to_owned(),
    ];
    let mut args = vec!["run", "-v", &mount, "--timeout", "30s"];
    let escape = path("wasm/escape.wasm");
    args.push(&escape);
    args.extend(attempts.iter().map(String::as_str));
    args.extend([
        "--write",
        "/data/../escaped-write",
        "--write",
        "/data/link-out/planted",
        "--write",
        "/tmp/planted",
    ]);
    let mut command = berth.command(&args);
    command.env("HOST_SECRET", "must-not-leak");
    let run = berth.run_with(command, None, Duration::from_secs(60));
    assert!(!run.stdout.contains("ESCAPED"), "escaped:\n{}", run.stdout);
    assert!(run.stdout.contains("env count 0"), "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("denied").count(),
        attempts.len() + 3,
        "{}",
        run.stdout
    );
    run.expect_code(0);
    assert!(!outside.path().join("planted").exists());
    assert!(
        !data
            .path()
            .parent()
            .expect("parent")
            .join("escaped-write")
            .exists()
    );
}

#[test]
fn read_only_mounts_refuse_writes_and_rw_mounts_accept_them() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = format!("{}:/ro:ro", dir.path().display());
    let run = berth.run(&[
        "run",
        "-v",
        &ro,
        &path("wasm/files.wasm"),
        "write",
        "/ro/new.txt",
        "data",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("/ro/new.txt"), "{}", run.stderr);
    assert!(!dir.path().join("new.txt").exists());

    std::fs::write(dir.path().join("existing.txt"), "original").expect("write");
    let run = berth.run(&[
        "run",
        "-v",
        &ro,
        &path("wasm/files.wasm"),
        "append",
        "/ro/existing.txt",
        "more",
    ]);
    run.expect_code(1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("existing.txt")).expect("read"),
        "original"
    );

    let rw = format!("{}:/rw", dir.path().display());
    berth
        .run(&[
            "run",
            "-v",
            &rw,
            &path("wasm/files.wasm"),
            "write",
            "/rw/new.txt",
            "written",
        ])
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).expect("read"),
        "written"
    );
    let run = berth.run(&["run", "-v", &ro, &path("wasm/files.wasm"), "ls", "/ro"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "existing.txt\nnew.txt\n");
}

#[test]
fn root_mount_and_workdir() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("app")).expect("mkdir");
    std::fs::write(dir.path().join("app").join("config.txt"), "relative ok").expect("write");
    let mount = format!("{}:/", dir.path().display());
    let run = berth.run(&[
        "run",
        "-v",
        &mount,
        "-w",
        "/app",
        &path("wasm/files.wasm"),
        "cat",
        "config.txt",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "relative ok");
    let run = berth.run(&[
        "run",
        "-v",
        &mount,
        &path("wasm/files.wasm"),
        "cat",
        "/app/config.txt",
    ]);
    assert_eq!(run.stdout, "relative ok");
}

#[cfg(target_os = "linux")]
#[test]
fn output_flood_is_backpressured_not_buffered() {
    use std::process::Stdio;
    let berth = Berth::new();
    let mut command = berth.command(&["run", "--timeout", "20s", &path("wasm/flood.wasm")]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn");
    // Nobody reads stdout: the guest must block on the full pipe, not make
    // berth buffer its output in memory.
    std::thread::sleep(Duration::from_millis(1500));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("proc status");
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        rss_kib < 150 * 1024,
        "berth grew to {rss_kib} KiB while its output was not read"
    );
}

#[test]
fn compile_cache_is_used_and_corrupt_entries_are_rebuilt() {
    let berth = Berth::new();
    let hello = path("wasm/hello.wasm");
    berth.run(&["run", &hello]).expect_code(0);
    let cache_dir = berth.home.path().join("cache").join("compiled");
    let entries: Vec<_> = std::fs::read_dir(&cache_dir)
        .expect("cache dir exists after a run")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let original = std::fs::read(entry).expect("read entry");

    let mut logged = berth.command(&["run", &hello]);
    logged.env("RUST_LOG", "berth_runtime=debug");
    let run = berth.run_with(logged, None, Duration::from_secs(60));
    run.expect_code(0);
    assert!(run.stderr.contains("compile cache hit"), "{}", run.stderr);

    // Truncated, then a flipped byte in the middle: both detected, discarded, rebuilt.
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for damaged in [original[..original.len() / 3].to_vec(), flipped, Vec::new()] {
        std::fs::write(entry, &damaged).expect("damage entry");
        let mut logged = berth.command(&["run", &hello]);
        logged.env("RUST_LOG", "berth_runtime=debug");
        let run = berth.run_with(logged, None, Duration::from_secs(60));
        run.expect_code(0);
        assert!(
            run.stdout.starts_with("Hello from berth!"),
            "{}",
            run.stdout
        );
        assert!(
            run.stderr
                .contains("discarding invalid compile cache entry"),
            "{}",
            run.stderr
        );
        assert_eq!(std::fs::read(entry).expect("rebuilt entry"), original);
    }
}

/// The only compile cache entry other than `except`.
#[cfg(unix)]
fn cache_entry(
    cache_dir: &std::path::Path,
    except: Option<&std::path::Path>,
) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(cache_dir)
        .expect("cache dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .filter(|path| Some(path.as_path()) != except)
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

/// The compile cache holds native code that berth executes; its checksum
/// only detects damage. A cache directory others can write to, or an entry
/// others can write, could hold anyone's code, so it is never loaded.
#[cfg(unix)]
#[test]
fn compile_cache_others_can_write_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let berth = Berth::new();
    let hello = path("wasm/hello.wasm");
    let exitcode = path("wasm/exitcode.wasm");
    let cache_dir = berth.home.path().join("cache").join("compiled");
    berth.run(&["run", &hello]).expect_code(0);
    let hello_entry = cache_entry(&cache_dir, None);
    berth.run(&["run", &exitcode]).expect_code(0);
    let planted = std::fs::read(cache_entry(&cache_dir, Some(&hello_entry))).expect("entry");
    // A valid entry (good checksum) of another program, under hello's name.
    std::fs::write(&hello_entry, &planted).expect("plant");
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(&hello_entry, 0o600);

    // Control: in a cache only the user can write, what is there runs (the
    // user's own files are trusted): the planted program prints nothing.
    let run = berth.run(&["run", &hello]);
    run.expect_code(0);
    assert_eq!(run.stdout, "", "the planted entry was not loaded");

    // A directory others can write to: not used at all, with a warning
    // naming it and the fix; nothing is loaded from it or written to it.
    chmod(&cache_dir, 0o777);
    let run = berth.run(&["run", &hello]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Hello from berth!\n");
    assert!(
        run.stderr.contains(&format!(
            "not using the compile cache {}",
            cache_dir.display()
        )) && run.stderr.contains("mode 0777")
            && run
                .stderr
                .contains(&format!("chmod 700 {}", cache_dir.display())),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.matches("not using").count(), 1, "{}", run.stderr);
    assert_eq!(std::fs::read(&hello_entry).expect("entry"), planted);

    // An entry others can write to, in a good directory: discarded, rebuilt.
    chmod(&cache_dir, 0o700);
    chmod(&hello_entry, 0o666);
    let run = berth.run(&["run", &hello]);
    run.expect_code(0);
    assert_eq!(run.stdout, "Hello from berth!\n");
    assert!(
        run.stderr
            .contains("discarding invalid compile cache entry")
            && run.stderr.contains("mode 0666"),
        "{}",
        run.stderr
    );
    let rebuilt = std::fs::metadata(&hello_entry).expect("rebuilt entry");
    assert_eq!(rebuilt.permissions().mode() & 0o7777, 0o600);
    assert_ne!(std::fs::read(&hello_entry).expect("entry"), planted);

    // An entry that belongs to another user (only root can make one).
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::write(&hello_entry, &planted).expect("plant");
        chmod(&hello_entry, 0o600);
        std::os::unix::fs::chown(&hello_entry, Some(65534), None).expect("chown");
        let run = berth.run(&["run", &hello]);
        run.expect_code(0);
        assert_eq!(run.stdout, "Hello from berth!\n");
        assert!(
            run.stderr.contains("belongs to uid 65534"),
            "{}",
            run.stderr
        );
    }
}

/// Every berth option comes before FILE|IMAGE: what follows belongs to the
/// program, even words that look like berth options (`-m 5` is not a
/// 5-byte memory limit, `-w` not a working directory).
#[test]
fn arguments_after_the_program_are_the_programs() {
    let berth = Berth::new();
    let hello = path("wasm/hello.wasm");
    let run = berth.run(&[
        "run",
        &hello,
        "-m",
        "5",
        "-w",
        "-c",
        "--timeout",
        "1ms",
        "-e",
        "A=1",
        "--help",
        "-d",
        "--",
        "-v",
    ]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Hello from berth!\narg[1]=-m\narg[2]=5\narg[3]=-w\narg[4]=-c\narg[5]=--timeout\narg[6]=1ms\narg[7]=-e\narg[8]=A=1\narg[9]=--help\narg[10]=-d\narg[11]=--\narg[12]=-v\n"
    );

    // Options before FILE still apply; `--` ends them.
    let run = berth.run(&["run", "-e", "A=1", "--", &hello, "-e", "B=2"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "Hello from berth!\narg[1]=-e\narg[2]=B=2\nenv A=1\n"
    );
    // (Long enough for busy.wasm to compile first: --timeout counts
    // compiling too.)
    berth
        .run(&["run", "--timeout", "3s", &path("wasm/busy.wasm")])
        .expect_code(137);

    let help = berth.run(&["run", "--help"]);
    help.expect_code(0);
    assert!(
        help.stdout
            .contains("Usage: berth run [OPTIONS] <FILE|IMAGE> [ARGS]..."),
        "{}",
        help.stdout
    );
}
