//! Limits against hostile programs that aim at the host rather than at
//! their own memory: instances that are costly to create, and modules that
//! are costly to compile.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Berth, entries_under, example};

/// A WASI command component (it exports `wasi:cli/run`) whose run does
/// nothing, after instantiating `instances` copies of a core module that
/// defines `globals` mutable globals.
fn instance_bomb(globals: usize, instances: usize) -> String {
    let mut text = String::from("(component\n  (core module $m\n");
    for _ in 0..globals {
        text.push_str("    (global (mut i64) (i64.const 0))\n");
    }
    text.push_str("  )\n");
    for _ in 0..instances {
        text.push_str("  (core instance (instantiate $m))\n");
    }
    text.push_str(
        r#"  (core module $main (func (export "run") (result i32) (i32.const 0)))
  (core instance $main (instantiate $main))
  (type $run (func (result (result))))
  (func $run (type $run) (canon lift (core func $main "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli))
)
"#,
    );
    text
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write the program");
    path.display().to_string()
}

#[test]
fn instances_count_against_the_memory_limit() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // 200 instances of 100,000 globals: over 300 MB of host memory, with
    // no linear memory or table at all.
    let bomb = write(dir.path(), "bomb.wat", &instance_bomb(100_000, 200));
    let run = berth.run_with(
        berth.command(&["run", "-m", "1Mi", &bomb]),
        None,
        Duration::from_secs(300),
    );
    run.expect_code(137);
    assert!(run.stderr.contains("OOMKilled"), "{}", run.stderr);
    assert!(run.stderr.contains("1 MiB"), "{}", run.stderr);

    // The same shape, small, runs under the same limit.
    let small = write(dir.path(), "small.wat", &instance_bomb(10, 3));
    berth.run(&["run", "-m", "1Mi", &small]).expect_code(0);
}

#[test]
fn instances_per_sandbox_are_capped_without_a_memory_limit() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // A component may declare at most 1,000 instances, but nesting
    // multiplies them: 4 copies of a component with 900 instances each.
    let mut text = String::from("(component\n  (component $inner (core module $m)\n");
    for _ in 0..900 {
        text.push_str("    (core instance (instantiate $m))\n");
    }
    text.push_str("  )\n");
    for _ in 0..4 {
        text.push_str("  (instance (instantiate $inner))\n");
    }
    let runnable = instance_bomb(0, 0);
    text.push_str(runnable.trim_start_matches("(component\n  (core module $m\n  )\n"));
    let bomb = write(dir.path(), "many.wat", &text);
    let run = berth.run_with(
        berth.command(&["run", &bomb]),
        None,
        Duration::from_secs(300),
    );
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("instance count"), "{}", run.stderr);
}

#[test]
fn real_components_run_within_the_instance_limits() {
    let berth = Berth::new();
    let run = berth.run(&[
        "run",
        "-m",
        "64Mi",
        &example("wasm/hello-p2.wasm").display().to_string(),
    ]);
    run.expect_code(0);
}

/// A module that is small but slow and hungry to compile: `depth` nested
/// loops and blocks, each level reading and writing some of `locals`
/// locals, so that every loop header carries most of them. The values come
/// from a mutable global, so the optimiser cannot fold any of it away.
/// 400 levels of 400 locals take about 10 s of CPU and 300 MB to compile.
fn compile_bomb(depth: usize, locals: usize) -> String {
    let mut text =
        String::from("(module (global $g (mut i32) (i32.const 0)) (func (export \"_start\")\n");
    for _ in 0..locals {
        text.push_str("(local i32)");
    }
    for local in 0..locals {
        text.push_str(&format!(
            "(local.set {local} (i32.add (global.get $g) (i32.const {local})))\n"
        ));
    }
    text.push_str("(if (i32.eqz (global.get $g)) (then (return)))\n");
    for level in 0..depth {
        text.push_str(&format!(
            "(loop $l{level} (block $b{level} (local.set {} (i32.add (local.get {}) (local.get {}))) (br_if $b{} (local.get {}))\n",
            level % locals,
            (level * 7) % locals,
            (level * 13 + 1) % locals,
            level / 2,
            (level * 3) % locals,
        ));
    }
    for level in (0..depth).rev() {
        text.push_str(&format!(
            "(br_if $l{level} (local.get {}))))\n",
            level % locals
        ));
    }
    text.push_str("(global.set $g (local.get 0))))\n");
    text
}

/// Every file under `dir` (empty if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    entries_under(dir)
        .into_iter()
        .filter(|path| !path.is_dir())
        .collect()
}

#[test]
fn compiling_stops_at_the_run_timeout_and_caches_nothing() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = write(dir.path(), "slow.wat", &compile_bomb(500, 500));
    let run = berth.run_with(
        berth.command(&["run", "--timeout", "2s", &bomb]),
        None,
        Duration::from_secs(300),
    );
    run.expect_berth_error("compile time limit of 2s");
    assert!(
        run.elapsed < Duration::from_secs(15),
        "compiling was stopped only after {:?}",
        run.elapsed
    );
    let cache = berth.home.path().join("cache");
    assert_eq!(files_under(&cache), Vec::<PathBuf>::new());
}

#[test]
fn compiling_stops_at_the_memory_ceiling_and_caches_nothing() {
    let berth = Berth::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = write(dir.path(), "hungry.wat", &compile_bomb(400, 400));
    let mut command = berth.command(&["run", &bomb]);
    command.env("BERTH_COMPILE_MEMORY", "128Mi");
    let run = berth.run_with(command, None, Duration::from_secs(300));
    run.expect_berth_error("compile memory limit of 128 MiB");
    let cache = berth.home.path().join("cache");
    assert_eq!(files_under(&cache), Vec::<PathBuf>::new());

    // A real program compiles under the same ceiling, and its code is
    // cached for the next run.
    let mut command = berth.command(&["run", &example("wasm/hello.wasm").display().to_string()]);
    command.env("BERTH_COMPILE_MEMORY", "128Mi");
    berth
        .run_with(command, None, Duration::from_secs(120))
        .expect_code(0);
    assert_eq!(files_under(&cache).len(), 1, "{:?}", files_under(&cache));
}

#[test]
fn bad_compile_limits_are_named() {
    let berth = Berth::new();
    let hello = example("wasm/hello.wasm").display().to_string();
    let mut command = berth.command(&["run", &hello]);
    command.env("BERTH_COMPILE_MEMORY", "lots");
    berth
        .run_with(command, None, Duration::from_secs(60))
        .expect_berth_error("BERTH_COMPILE_MEMORY \"lots\"");
}

#[test]
fn build_stops_precompiling_at_the_compile_limit() {
    let berth = Berth::new();
    let context = tempfile::tempdir().expect("context");
    let text = compile_bomb(500, 500);
    let (binary, _) = berth_runtime::program::to_binary(text.as_bytes(), "slow")
        .expect("the generated module is valid");
    std::fs::write(context.path().join("slow.wasm"), binary).expect("write the module");
    write(
        context.path(),
        "Dockerfile",
        "FROM scratch\nCOPY slow.wasm /slow.wasm\nENTRYPOINT [\"/slow.wasm\"]\n",
    );
    let mut command = berth.command(&[
        "build",
        "-t",
        "slow:v1",
        &context.path().display().to_string(),
    ]);
    command.env("BERTH_COMPILE_TIMEOUT", "2s");
    let built = berth.run_with(command, None, Duration::from_secs(300));
    // The image is stored; only the precompile is given up, with the limit
    // named, and nothing is cached.
    built.expect_code(0);
    assert!(
        built.stderr.contains("cannot precompile")
            && built.stderr.contains("compile time limit of 2s"),
        "{}",
        built.stderr
    );
    assert!(
        built.elapsed < Duration::from_secs(15),
        "build took {:?}",
        built.elapsed
    );
    let cache = berth.home.path().join("cache");
    assert_eq!(files_under(&cache), Vec::<PathBuf>::new());
}
