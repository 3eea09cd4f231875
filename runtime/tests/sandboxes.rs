//! Many sandboxes in one process, through the library: handles (wait, kill,
//! stats), per-sandbox stdio, limits under load, two runtimes side by side,
//! HTTP handlers without a listener.

mod common;

use std::time::{Duration, Instant};

use berth_runtime::{
    EXIT_KILLED, EXIT_TERMINATED, EngineChoice, Entrypoint, ExitReason, KillMode, Limits, Output,
    OutputRing, SandboxSpec, Stdin,
};
use common::{EXIT_7, GROW_THEN_WAIT, SPIN, example, load, multi_thread, runtime, spec};

#[test]
fn kill_stops_a_spinning_guest_without_limits() {
    let runtime = runtime();
    let program = load(&runtime, SPIN);
    multi_thread().block_on(async {
        for mode in [KillMode::Immediate, KillMode::Graceful] {
            let handle = runtime
                .start(&program, spec(Limits::default()))
                .expect("starts");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                handle.try_wait().is_none(),
                "a spinning guest is still running"
            );
            let asked = Instant::now();
            handle.kill(mode);
            let status = tokio::time::timeout(Duration::from_secs(5), handle.wait())
                .await
                .expect("a killed guest stops");
            // An epoch tick is 5 ms; allow for a loaded machine.
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "took {:?}",
                asked.elapsed()
            );
            assert_eq!(status.reason, ExitReason::Killed { mode });
            let code = match mode {
                KillMode::Immediate => EXIT_KILLED,
                KillMode::Graceful => EXIT_TERMINATED,
            };
            assert_eq!(status.code, code);
        }
    });
}

#[test]
fn a_spinning_guest_does_not_hold_its_thread() {
    // One worker thread: if the spinning guest never gave it back, the
    // second sandbox could never run.
    let runtime = runtime();
    let spin = load(&runtime, SPIN);
    let exit = load(&runtime, EXIT_7);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        let spinning = runtime
            .start(&spin, spec(Limits::default()))
            .expect("starts");
        let other = runtime
            .start(&exit, spec(Limits::default()))
            .expect("starts");
        let status = tokio::time::timeout(Duration::from_secs(10), other.wait())
            .await
            .expect("the other sandbox runs beside the spinning one");
        assert_eq!(status.code, 7);
        spinning.kill(KillMode::Immediate);
        spinning.wait().await;
    });
}

#[test]
fn stats_match_what_the_guest_allocated() {
    let runtime = runtime();
    let program = load(&runtime, GROW_THEN_WAIT);
    multi_thread().block_on(async {
        let (reader, mut writer) = tokio::io::duplex(64);
        let handle = runtime
            .start(
                &program,
                SandboxSpec {
                    stdin: Stdin::Reader(Box::new(reader)),
                    ..spec(Limits::default())
                },
            )
            .expect("starts");
        let expected = program.footprint().bytes + 16 * 65536;
        let started = Instant::now();
        while handle.stats().memory_bytes < expected && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = handle.stats();
        assert_eq!(stats.memory_bytes, expected, "{stats:?}");
        assert_eq!(stats.peak_memory_bytes, expected, "{stats:?}");
        assert!(handle.try_wait().is_none(), "blocked on stdin");
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"go\n")
            .await
            .expect("write stdin");
        drop(writer);
        let status = tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("exits once stdin has data");
        assert_eq!(status.code, 0);
        // Freed with the store; the peak stays.
        let stats = handle.stats();
        assert_eq!(stats.memory_bytes, 0, "{stats:?}");
        assert_eq!(stats.peak_memory_bytes, expected);
    });
}

#[test]
fn cpu_time_and_throttling_are_reported() {
    let runtime = runtime();
    let program = load(&runtime, SPIN);
    multi_thread().block_on(async {
        let limits = Limits {
            cpus: Some(0.2),
            timeout: Some(Duration::from_millis(600)),
            ..Limits::default()
        };
        let handle = runtime.start(&program, spec(limits)).expect("starts");
        let status = handle.wait().await;
        assert!(
            matches!(status.reason, ExitReason::TimedOut { .. }),
            "{status:?}"
        );
        let stats = handle.stats();
        // A fifth of a core for 0.6 s is 120 ms (plus one period's burst
        // and a tick); without the quota it would have used 600 ms. How
        // much of the rest was spent throttled rather than waiting for a
        // core depends on the machine's load.
        assert!(stats.cpu_time > Duration::from_millis(20), "{stats:?}");
        assert!(stats.cpu_time < Duration::from_millis(250), "{stats:?}");
        assert!(stats.throttled > Duration::ZERO, "{stats:?}");
        assert_eq!(stats.throttled, status.throttled);
    });
}

#[test]
fn stdio_of_concurrent_sandboxes_never_interleaves() {
    let runtime = runtime();
    let hello = runtime
        .load(&example("hello.wasm"), "hello.wasm", EngineChoice::Command)
        .expect("hello compiles");
    let hello_p2 = runtime
        .load(
            &example("hello-p2.wasm"),
            "hello-p2.wasm",
            EngineChoice::Command,
        )
        .expect("hello-p2 compiles");
    multi_thread().block_on(async {
        let mut running = Vec::new();
        for index in 0..200 {
            let ring = OutputRing::new(4096);
            let (program, args) = if index % 2 == 0 {
                (&hello, vec![format!("sandbox-{index}")])
            } else {
                (&hello_p2, Vec::new())
            };
            let handle = runtime
                .start(
                    program,
                    SandboxSpec {
                        args,
                        stdout: Output::Ring(ring.clone()),
                        ..spec(Limits::default())
                    },
                )
                .expect("starts");
            running.push((index, handle, ring));
        }
        for (index, handle, ring) in running {
            let status = handle.wait().await;
            assert_eq!(status.code, 0, "{status:?}");
            let expected = if index % 2 == 0 {
                format!("Hello from berth!\narg[1]=sandbox-{index}\n")
            } else {
                "Hello from a WASI preview2 component!\n".to_owned()
            };
            assert_eq!(String::from_utf8_lossy(&ring.contents()), expected);
        }
    });
}

#[test]
fn a_stalled_output_sink_blocks_only_its_own_guest() {
    // flood writes to stdout without end; its sink is a pipe nobody reads.
    let runtime = runtime();
    let flood = runtime
        .load(&example("flood.wasm"), "flood.wasm", EngineChoice::Command)
        .expect("flood compiles");
    let exit = load(&runtime, EXIT_7);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        let (unread, sink) = tokio::io::duplex(4096);
        let flooding = runtime
            .start(
                &flood,
                SandboxSpec {
                    stdout: Output::Writer(Box::new(sink)),
                    ..spec(Limits::default())
                },
            )
            .expect("starts");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            flooding.try_wait().is_none(),
            "the flood waits for its reader"
        );
        // The only worker thread is free for others.
        let other = runtime
            .start(&exit, spec(Limits::default()))
            .expect("starts");
        let status = tokio::time::timeout(Duration::from_secs(10), other.wait())
            .await
            .expect("another sandbox runs while the flood waits");
        assert_eq!(status.code, 7);
        // And the waiting guest's memory has not grown with its output.
        let stats = flooding.stats();
        assert!(stats.memory_bytes < 4 << 20, "{stats:?}");
        flooding.kill(KillMode::Immediate);
        flooding.wait().await;
        drop(unread);
    });
}

#[test]
fn two_runtimes_in_one_process_keep_their_limits() {
    let first = runtime();
    let second = runtime();
    let spin_first = load(&first, SPIN);
    let spin_second = load(&second, SPIN);
    let limits = || Limits {
        timeout: Some(Duration::from_millis(300)),
        ..Limits::default()
    };
    multi_thread().block_on(async {
        let a = first.start(&spin_first, spec(limits())).expect("starts");
        let b = second.start(&spin_second, spec(limits())).expect("starts");
        for handle in [&a, &b] {
            let status = tokio::time::timeout(Duration::from_secs(10), handle.wait())
                .await
                .expect("each runtime's clock preempts its guests");
            assert!(matches!(status.reason, ExitReason::TimedOut { .. }));
        }
        // Dropping one runtime leaves the other working.
        drop((a, spin_first, first));
        let c = second.start(&spin_second, spec(limits())).expect("starts");
        let status = tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .expect("the remaining runtime still preempts");
        assert!(matches!(status.reason, ExitReason::TimedOut { .. }));
    });
}

#[test]
fn entry_point_problems_are_reported_before_the_guest_starts() {
    let runtime = runtime();
    let program = load(&runtime, SPIN);
    multi_thread().block_on(async {
        let error = runtime
            .start(
                &program,
                SandboxSpec {
                    entrypoint: Entrypoint::Export("missing".into()),
                    ..spec(Limits::default())
                },
            )
            .expect_err("no such export");
        assert!(error.to_string().contains("\"missing\""), "{error}");
    });
    // Outside a tokio runtime, starting is refused, not a panic.
    let error = runtime
        .start(&program, spec(Limits::default()))
        .expect_err("needs a tokio runtime");
    assert!(error.to_string().contains("tokio"), "{error}");
}

#[test]
fn graceful_stop_of_a_server_closes_idle_keep_alive_connections() {
    use std::io::{Read, Write};
    let runtime = runtime();
    let program = runtime
        .load(
            &example("http-hello.wasm"),
            "http-hello.wasm",
            EngineChoice::Command,
        )
        .expect("http-hello compiles");
    multi_thread().block_on(async {
        let handler = runtime
            .http_handler(
                &program,
                "http-hello.wasm",
                berth_runtime::http::HandlerConfig {
                    max_concurrency: 10,
                    ..Default::default()
                },
            )
            .expect("a handler");
        let listener =
            berth_runtime::http::HttpListener::bind(berth_runtime::http::ListenerConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                grace_period: Duration::from_secs(30),
                header_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(75),
                max_connections: 100,
            })
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("address");
        let server = listener.serve(handler.clone());
        // One request on a keep-alive connection, which then stays idle.
        let client = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .expect("request");
            let response = read_one_response(&mut stream);
            assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
            stream
        })
        .await
        .expect("client");
        assert_eq!(handler.in_flight(), 0);
        let asked = Instant::now();
        server.kill(KillMode::Graceful);
        let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
            .await
            .expect("the server stops");
        assert_eq!(status.code, 0);
        // Nothing was in flight: it did not wait out the 30 s grace period.
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "took {:?}",
            asked.elapsed()
        );
        // The idle connection was closed by the server.
        let closed = tokio::task::spawn_blocking(move || {
            let mut stream = client;
            let mut rest = [0u8; 64];
            stream.read(&mut rest)
        })
        .await
        .expect("reader");
        assert_eq!(closed.expect("a clean close"), 0);
    });
}

/// Reads exactly one HTTP/1.1 response with a `content-length` body (bounded
/// to 64 KiB), so whatever the server sends afterwards can be told apart.
fn read_one_response(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while response.len() < 64 * 1024 {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map(|value| value.trim().parse().expect("a content-length"))
                .expect("a response with content-length");
            if response.len() >= end + 4 + length {
                assert_eq!(response.len(), end + 4 + length, "one response only");
                return response;
            }
        }
        let read = stream.read(&mut chunk).expect("response");
        assert!(read > 0, "connection closed mid-response: {response:?}");
        response.extend_from_slice(&chunk[..read]);
    }
    panic!("response over 64 KiB: {:?}", &response[..256]);
}

#[test]
fn a_sandbox_whose_tokio_runtime_shut_down_reads_as_killed() {
    let runtime = runtime();
    let program = load(&runtime, GROW_THEN_WAIT);
    let tokio = multi_thread();
    let (reader, writer) = tokio::io::duplex(64);
    let handle = tokio
        .block_on(async {
            runtime.start(
                &program,
                SandboxSpec {
                    stdin: Stdin::Reader(Box::new(reader)),
                    ..spec(Limits::default())
                },
            )
        })
        .expect("starts");
    assert!(handle.try_wait().is_none(), "blocked on stdin");
    // The task running the sandbox is dropped with its runtime.
    drop(tokio);
    let status = multi_thread().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("a lost sandbox reads as ended")
    });
    assert_eq!(status.code, EXIT_KILLED);
    assert_eq!(
        status.reason,
        ExitReason::Killed {
            mode: KillMode::Immediate
        }
    );
    assert_eq!(handle.try_wait(), Some(status));
    drop(writer);
}

/// Grows to 16 pages, then 16 more for each byte read from stdin.
const GROW_ON_EACH_BYTE: &str = include_str!("guests/grow-on-each-byte.wat");

/// Starts [`GROW_ON_EACH_BYTE`] with `limits` and waits (bounded) until it
/// has grown to 16 pages and blocks on stdin; returns its handle, its
/// stdin and the bytes it is charged then.
async fn grown_and_waiting(
    runtime: &berth_runtime::Runtime,
    program: &berth_runtime::Program,
    limits: Limits,
) -> (berth_runtime::SandboxHandle, tokio::io::DuplexStream, u64) {
    let (reader, writer) = tokio::io::duplex(64);
    let handle = runtime
        .start(
            program,
            SandboxSpec {
                stdin: Stdin::Reader(Box::new(reader)),
                ..spec(limits)
            },
        )
        .expect("starts");
    let grown = program.footprint().bytes + 16 * 65536;
    let started = Instant::now();
    while handle.stats().memory_bytes < grown && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.stats().memory_bytes, grown, "{:?}", handle.stats());
    assert!(handle.try_wait().is_none(), "blocked on stdin");
    (handle, writer, grown)
}

/// Lets the guest read one byte (one growth) and end stdin; its end,
/// bounded.
async fn feed_and_wait(
    handle: &berth_runtime::SandboxHandle,
    mut writer: tokio::io::DuplexStream,
) -> berth_runtime::ExitStatus {
    use tokio::io::AsyncWriteExt;
    // A write to a guest that already ended fails; its status says why.
    let _ = writer.write_all(b"g").await;
    let _ = writer.shutdown().await;
    let status = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("the guest ends once stdin has data and ends");
    drop(writer);
    status
}

#[test]
fn a_memory_cap_changed_while_running_bounds_the_next_growth() {
    let runtime = runtime();
    let program = load(&runtime, GROW_ON_EACH_BYTE);
    multi_thread().block_on(async {
        // Lowered below what it uses: it keeps its memory, but its next
        // growth is refused and it is OOM-killed with the new cap.
        let (handle, writer, grown) =
            grown_and_waiting(&runtime, &program, Limits::default()).await;
        let lowered = grown - 65536;
        handle
            .update_limits(Some(lowered), None)
            .expect("a lower cap");
        assert_eq!(handle.stats().memory_bytes, grown, "nothing is taken back");
        let status = feed_and_wait(&handle, writer).await;
        assert_eq!(status.code, EXIT_KILLED, "{status:?}");
        assert_eq!(
            status.reason,
            ExitReason::OomKilled {
                limit: lowered,
                requested: grown + 16 * 65536
            }
        );

        // At its cap, the next growth fails, unless the cap is raised.
        let capped = Limits {
            memory_bytes: Some(program.footprint().bytes + 16 * 65536),
            ..Limits::default()
        };
        let (handle, writer, _) = grown_and_waiting(&runtime, &program, capped.clone()).await;
        let status = feed_and_wait(&handle, writer).await;
        assert!(status.oom_killed(), "{status:?}");
        let (handle, writer, grown) = grown_and_waiting(&runtime, &program, capped).await;
        handle
            .update_limits(Some(grown + 64 * 65536), None)
            .expect("a higher cap");
        let status = feed_and_wait(&handle, writer).await;
        assert_eq!(status.code, 0, "{status:?}");
        assert_eq!(handle.stats().peak_memory_bytes, grown + 16 * 65536);

        // Caps that cannot be are refused, naming the value.
        let error = handle
            .update_limits(Some(0), None)
            .expect_err("0 bytes")
            .to_string();
        assert!(error.contains("memory limit 0"), "{error}");
        for cpus in [0.0, -1.0, f64::NAN] {
            let error = handle
                .update_limits(None, Some(cpus))
                .expect_err("not a quota")
                .to_string();
            assert!(error.contains(&format!("CPU quota {cpus}")), "{error}");
        }
    });
}

#[test]
fn a_cpu_quota_set_while_running_throttles_and_lifting_it_stops_that() {
    let runtime = runtime();
    let program = load(&runtime, SPIN);
    multi_thread().block_on(async {
        let handle = runtime
            .start(&program, spec(Limits::default()))
            .expect("starts");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(handle.stats().throttled, Duration::ZERO);
        handle.update_limits(None, Some(0.1)).expect("a quota");
        let started = Instant::now();
        while handle.stats().throttled < Duration::from_millis(200)
            && started.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = handle.stats();
        assert!(before.throttled >= Duration::from_millis(200), "{before:?}");
        // A tenth of a core: over a second, well under half a second of
        // CPU (a burst of one period at most on top).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = handle.stats();
        let used = after.cpu_time.saturating_sub(before.cpu_time);
        assert!(used < Duration::from_millis(500), "{before:?} {after:?}");

        // A whole core lifts it: no more time is spent throttled once the
        // pause in progress (at most a few periods) is over.
        handle.update_limits(None, Some(1.0)).expect("lifted");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lifted = handle.stats().throttled;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(handle.stats().throttled, lifted);
        handle.kill(KillMode::Immediate);
        let status = tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .expect("killed");
        assert_eq!(status.code, EXIT_KILLED);
    });
}
