//! Small machines: berth under `ulimit -v` the size of a 39-bit address
//! space (512 GiB, as on many ARM64 kernels) and of a 1 GiB device still
//! serves a wasi:http component and runs commands, with the instance pool
//! and memory reservations sized to fit, and says so in its log.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Berth, Served, berth_bin, example, free_port};

/// 512 GiB in KiB: the user address space of a 39-bit kernel.
const SPACE_39_BIT_KIB: u64 = 512 << 20;
/// 1 GiB in KiB.
const ONE_GIB_KIB: u64 = 1 << 20;

/// `berth ARGS` under `ulimit -v KIB`, logging the runtime's info lines.
fn limited(berth: &Berth, kib: u64, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(berth_bin())
        .args(args)
        .env("BERTH_HOME", berth.home.path())
        .env("RUST_LOG", "berth_runtime=info");
    command
}

/// Serves http-hello.wasm under `ulimit -v KIB` with `extra` flags.
fn serve(berth: &Berth, kib: u64, extra: &[&str]) -> Served {
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let wasm = example("wasm/http-hello.wasm").display().to_string();
    let mut args = vec!["run", "-p", publish.as_str()];
    args.extend(extra);
    args.push(&wasm);
    // Compiling the component on a cold cache on a busy machine.
    Served::spawn_within(limited(berth, kib, &args), port, Duration::from_secs(120))
}

/// `GET /`: (status, body).
fn get(port: u16) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// The `serving pool sized` line of the log.
fn sizing_line(served: &Served) -> String {
    let log = served.log_containing("serving pool sized");
    log.lines()
        .find(|line| line.contains("serving pool sized"))
        .unwrap_or_else(|| panic!("no sizing in the log: {log}"))
        .to_owned()
}

/// A `name=value` field of a log line, as a number.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {line}"))
}

#[test]
fn serves_in_a_39_bit_address_space() {
    let berth = Berth::new();
    let served = serve(&berth, SPACE_39_BIT_KIB, &[]);
    assert_eq!(get(served.port), (200, "Hello from berth!\n".to_owned()));
    let line = sizing_line(&served);
    // Without -m each instance keeps 4 GiB of memory: fewer than the 1,000
    // slots asked for fit, and the pool stays inside the address space.
    let instances = field(&line, "instances");
    assert!((16..1000).contains(&instances), "{line}");
    assert!(field(&line, "reserved") < SPACE_39_BIT_KIB << 10, "{line}");
    assert!(!served.log().contains("falling back"), "{}", served.log());
    // More requests at once than the pool holds wait for a slot rather
    // than fail.
    let port = served.port;
    let clients: Vec<_> = (0..instances + 8)
        .map(|_| std::thread::spawn(move || get(port).0))
        .collect();
    for client in clients {
        assert_eq!(client.join().expect("client"), 200);
    }

    // With -m the whole pool of 1,000 fits.
    let limited = serve(&berth, SPACE_39_BIT_KIB, &["-m", "64Mi"]);
    assert_eq!(get(limited.port).0, 200);
    let line = sizing_line(&limited);
    assert_eq!(field(&line, "instances"), 1000, "{line}");
    assert_eq!(field(&line, "max_memory"), 64 << 20, "{line}");
}

#[test]
fn serves_and_runs_commands_within_one_gib() {
    let berth = Berth::new();
    let served = serve(&berth, ONE_GIB_KIB, &["-m", "16Mi"]);
    assert_eq!(get(served.port), (200, "Hello from berth!\n".to_owned()));
    let line = sizing_line(&served);
    assert!(field(&line, "instances") >= 1, "{line}");
    assert_eq!(field(&line, "max_memory"), 16 << 20, "{line}");
    assert_eq!(field(&line, "memory_reservation"), 16 << 20, "{line}");
    assert!(field(&line, "reserved") < ONE_GIB_KIB << 10, "{line}");
    drop(served);

    // A command: its memories reserve less than wasmtime's 4 GiB each.
    let run = berth.run_with(
        limited(
            &berth,
            ONE_GIB_KIB,
            &["run", &example("wasm/hello.wasm").display().to_string()],
        ),
        None,
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("Hello from berth!"), "{}", run.stdout);
    assert!(
        run.stderr.contains("smaller memory reservations"),
        "{}",
        run.stderr
    );
    // And the memory limit still holds there.
    let hog = berth.run_with(
        limited(
            &berth,
            ONE_GIB_KIB,
            &[
                "run",
                "-m",
                "32Mi",
                &example("wasm/hog.wasm").display().to_string(),
                "64",
            ],
        ),
        None,
        Duration::from_secs(120),
    );
    assert_eq!(hog.code, Some(137), "{}", hog.stderr);
}
