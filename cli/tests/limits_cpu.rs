//! The CPU quota throttles, it never kills: a busy loop under `--cpus 0.25`
//! takes about four times its unthrottled wall time for about the same CPU
//! time. One test in its own binary so no other test competes for the CPU
//! or the child-rusage counters.

mod common;

use std::time::Duration;

use common::{Berth, example};

/// CPU time (user + system) used by all waited-for children so far.
#[cfg(unix)]
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

#[cfg(unix)]
#[test]
fn quarter_cpu_throttles_a_busy_loop_about_four_times() {
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
    let ratio = run.elapsed.as_secs_f64() / free_wall.as_secs_f64();
    eprintln!(
        "unthrottled {free_wall:?} wall / {free_cpu:?} cpu; --cpus 0.25 {:?} wall / {throttled_cpu:?} cpu; ratio {ratio:.2}",
        run.elapsed
    );
    assert!(
        (3.0..=5.5).contains(&ratio),
        "wall-time ratio {ratio:.2} is not about 4"
    );
    let cpu_ratio = throttled_cpu.as_secs_f64() / free_cpu.as_secs_f64();
    assert!(
        (0.6..=1.6).contains(&cpu_ratio),
        "CPU time changed by {cpu_ratio:.2}x under throttling"
    );
}
