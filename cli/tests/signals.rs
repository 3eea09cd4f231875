//! Stopping a foreground `berth run` with signals: Ctrl-C (SIGINT) and
//! SIGTERM stop even a guest that spins in pure computation, with no limit
//! that would ever stop it, at once.
#![cfg(unix)]

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Berth, example};

/// Starts `berth run busy.wasm` (spinning for ever without a WASI call)
/// and gives it time to be inside the guest.
fn spinning(berth: &Berth) -> Child {
    let busy = example("wasm/busy.wasm").display().to_string();
    let mut command = berth.command(&["run", &busy]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = command.spawn().expect("spawn berth");
    std::thread::sleep(Duration::from_millis(500));
    child
}

/// Sends `signal` and returns how long the process took to exit, and its
/// exit code.
fn stop_with(mut child: Child, signal: libc::c_int) -> (Duration, Option<i32>) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "berth must still be running the guest"
    );
    let sent = Instant::now();
    // SAFETY: kill only sends a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (sent.elapsed(), status.code());
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth did not stop within 10 s of signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn ctrl_c_stops_a_busy_guest_at_once() {
    let berth = Berth::new();
    // Fills the compile cache, so that the runs below start at once.
    berth
        .run(&["run", &example("wasm/busy.wasm").display().to_string(), "1"])
        .expect_code(0);
    // The best of three (a loaded machine may delay any one process), and
    // every one well under a second.
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (took, code) = stop_with(spinning(&berth), libc::SIGINT);
        assert_eq!(code, Some(130), "Ctrl-C exits 130");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        fastest = fastest.min(took);
    }
    assert!(
        fastest < Duration::from_millis(100),
        "Ctrl-C took {fastest:?} at best"
    );
}

#[test]
fn sigterm_stops_a_busy_guest_with_143() {
    let berth = Berth::new();
    berth
        .run(&["run", &example("wasm/busy.wasm").display().to_string(), "1"])
        .expect_code(0);
    let (took, code) = stop_with(spinning(&berth), libc::SIGTERM);
    assert_eq!(code, Some(143));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn stop_ends_a_detached_busy_guest_within_its_grace_period() {
    let berth = Berth::new();
    let busy = example("wasm/busy.wasm").display().to_string();
    let started = berth.run(&["run", "-d", "--name", "spinner", &busy]);
    started.expect_code(0);
    // Running: the supervisor reports it so once the program started.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = berth.run(&["ps"]);
        if ps.stdout.contains("spinner") && ps.stdout.contains("Up") {
            break;
        }
        assert!(Instant::now() < deadline, "never running: {}", ps.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    // A grace period far longer than a stop should take: SIGTERM must end
    // the spinning guest itself, not the SIGKILL after the grace period.
    let stopped = berth.run(&["stop", "-t", "30", "spinner"]);
    stopped.expect_code(0);
    assert!(
        stopped.elapsed < Duration::from_secs(10),
        "stop took {:?}",
        stopped.elapsed
    );
    let ps = berth.run(&["ps", "-a"]);
    let line = ps
        .stdout
        .lines()
        .find(|line| line.contains("spinner"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("Exited (143)"), "{}", ps.stdout);
}
