//! The CPU quota throttles, it never kills: a busy loop under `--cpus 0.25`
//! uses about a quarter of a core, so it takes about four times as long as
//! the CPU time it needs (which throttling does not change); and the quota
//! holds whatever the guest spends its time on, wasm or costly host calls. The tests are in their own binary and take turns, so no
//! other test competes for the CPU or the child-rusage counters. Unix
//! only: CPU time is read with getrusage.
#![cfg(unix)]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{Berth, example};

/// Held by each test: the child-rusage counters are per process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// CPU time (user + system) used by all waited-for children so far.
fn children_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(result, 0, "getrusage failed");
    let to_duration = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

#[test]
fn quarter_cpu_throttles_a_busy_loop_about_four_times() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let berth = Berth::new();
    let busy = example("wasm/busy.wasm").display().to_string();
    // Warm the compile cache so both runs do the same work.
    berth.run(&["run", &busy, "1"]).expect_code(0);

    // Find an iteration count that runs for about a second unthrottled.
    let mut iterations = 100u64;
    let (free_wall, free_cpu) = loop {
        let before = children_cpu_time();
        let run = berth.run(&["run", &busy, &iterations.to_string()]);
        run.expect_code(0);
        let cpu = children_cpu_time() - before;
        if run.elapsed >= Duration::from_millis(700) || iterations >= 100_000 {
            break (run.elapsed, cpu);
        }
        iterations *= 2;
    };

    let before = children_cpu_time();
    let run = berth.run_with(
        berth.command(&["run", "--cpus", "0.25", &busy, &iterations.to_string()]),
        None,
        Duration::from_secs(120),
    );
    run.expect_code(0);
    assert!(run.stdout.contains("busy: done"), "{}", run.stdout);
    let throttled_cpu = children_cpu_time() - before;
    // Compared with CPU time rather than the unthrottled wall time: on a
    // busy machine the unthrottled run gets less than a core, the
    // throttled one still gets its quarter.
    let ratio = run.elapsed.as_secs_f64() / free_cpu.as_secs_f64();
    let share = throttled_cpu.as_secs_f64() / run.elapsed.as_secs_f64();
    eprintln!(
        "unthrottled {free_wall:?} wall / {free_cpu:?} cpu; --cpus 0.25 {:?} wall / {throttled_cpu:?} cpu; {ratio:.2}x the CPU time, {:.0}% of a core",
        run.elapsed,
        share * 100.0
    );
    assert!(
        (3.0..=6.0).contains(&ratio),
        "throttled wall time is {ratio:.2}x the CPU time needed, not about 4x"
    );
    assert!(
        share <= 0.35,
        "the guest used {:.0}% of a core under --cpus 0.25",
        share * 100.0
    );
    let cpu_ratio = throttled_cpu.as_secs_f64() / free_cpu.as_secs_f64();
    assert!(
        (0.6..=1.6).contains(&cpu_ratio),
        "CPU time changed by {cpu_ratio:.2}x under throttling"
    );
}

/// A guest that spends its time in the host, not in wasm: it asks for
/// 1 MiB of random bytes, over and over.
const RANDOM_LOOP: &str = r#"(module
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 17)
  (func (export "_start")
    (loop $forever
      (drop (call $random_get (i32.const 0) (i32.const 1048576)))
      (br $forever))))
"#;

/// A guest whose host work runs on tokio's blocking threads, not its own:
/// it writes 1 MiB to a file in a mounted folder, over and over.
const WRITE_LOOP: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite"
    (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 18)
  (data (i32.const 16) "f")
  (func (export "_start")
    ;; iovec at 32: 1 MiB from 65536.
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 1048576))
    ;; Open (create) "f" in the first preopen, fd 3; its fd lands at 64.
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 1)
          (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 64))
      (then (call $exit (i32.const 3))))
    (loop $forever
      (drop (call $fd_pwrite (i32.load (i32.const 64)) (i32.const 32) (i32.const 1)
              (i64.const 0) (i32.const 48)))
      (br $forever))))
"#;

/// Runs `wat` under `--cpus 0.1` until a 4 s timeout and checks that it
/// used less than `most` of a core.
fn assert_tenth_of_a_core(wat: &str, extra: &[&str], most: f64) {
    let berth = Berth::new();
    // Outside BERTH_HOME, which berth keeps to itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("loop.wat");
    std::fs::write(&module, wat).expect("write the module");
    let module = module.display().to_string();
    let mut args = vec!["run", "--cpus", "0.1", "--timeout", "4s"];
    args.extend_from_slice(extra);
    args.push(&module);
    let before = children_cpu_time();
    let run = berth.run_with(berth.command(&args), None, Duration::from_secs(60));
    run.expect_code(137);
    assert!(run.stderr.contains("timeout of 4s"), "{}", run.stderr);
    let cpu = children_cpu_time() - before;
    let share = cpu.as_secs_f64() / run.elapsed.as_secs_f64();
    eprintln!(
        "--cpus 0.1: {cpu:?} of CPU in {:?}: {:.0}% of a core",
        run.elapsed,
        share * 100.0
    );
    // 10% plus start-up, with room for a loaded machine.
    assert!(
        share < most,
        "the guest used {:.0}% of a core under --cpus 0.1",
        share * 100.0
    );
}

#[test]
fn cpu_quota_holds_for_a_guest_looping_over_a_costly_host_call() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Before the quota charged host calls, this guest took 44 to 80%.
    assert_tenth_of_a_core(RANDOM_LOOP, &[], 0.25);
}

#[test]
fn cpu_quota_holds_for_file_writes_done_on_other_threads() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let data = tempfile::tempdir().expect("tempdir");
    let volume = format!("{}:/data", data.path().display());
    // Charging only the sandbox's own thread, this guest took 23 to 27%;
    // with the whole process's CPU charged, 10%.
    assert_tenth_of_a_core(WRITE_LOOP, &["-v", &volume], 0.17);
    let written = std::fs::metadata(data.path().join("f")).expect("the guest wrote f");
    assert_eq!(written.len(), 1 << 20);
}
