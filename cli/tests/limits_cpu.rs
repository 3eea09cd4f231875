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

#[test]
fn cpu_quota_holds_for_a_guest_looping_over_a_costly_host_call() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let berth = Berth::new();
    // Outside BERTH_HOME, which berth keeps to itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("random-loop.wat");
    std::fs::write(&module, RANDOM_LOOP).expect("write the module");
    let module = module.display().to_string();
    let before = children_cpu_time();
    let run = berth.run_with(
        berth.command(&["run", "--cpus", "0.1", "--timeout", "4s", &module]),
        None,
        Duration::from_secs(60),
    );
    run.expect_code(137);
    assert!(run.stderr.contains("timeout of 4s"), "{}", run.stderr);
    let cpu = children_cpu_time() - before;
    let share = cpu.as_secs_f64() / run.elapsed.as_secs_f64();
    eprintln!(
        "--cpus 0.1: {cpu:?} of CPU in {:?}: {:.0}% of a core",
        run.elapsed,
        share * 100.0
    );
    // 10% plus start-up, with room for a loaded machine; before the quota
    // charged host calls, this guest took all of a core it could get.
    assert!(
        share < 0.25,
        "the guest used {:.0}% of a core under --cpus 0.1",
        share * 100.0
    );
}
