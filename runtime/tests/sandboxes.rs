//! Many sandboxes in one process, through the library: handles (wait, kill,
//! stats), per-sandbox stdio, limits under load, two runtimes side by side,
//! HTTP handlers without a listener.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::http::HandlerConfig;
use berth_runtime::{
    EXIT_KILLED, EXIT_TERMINATED, EngineChoice, Entrypoint, ExitReason, KillMode, Limits, Output,
    OutputRing, Program, Runtime, RuntimeConfig, SandboxSpec, Stdin,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A guest that spins forever without calling the host.
const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

/// A guest that grows its memory a page at a time until refused, then
/// traps (as a C program's failed malloc would abort).
const HOG: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
      (br $l))))"#;

/// A guest that grows its memory by 15 pages (to 16), then blocks reading
/// stdin, then exits 0.
const GROW_THEN_WAIT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 15)))
    ;; one iovec at 0: buffer at 16, 8 bytes; bytes read at 8
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A guest that exits with the code given as its only export parameter
/// is awkward in WAT; this one exits with 7 through proc_exit.
const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"#;

fn example(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/wasm")
            .join(name),
    )
    .expect("example wasm is checked in")
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default())
}

fn load(runtime: &Runtime, text: &str) -> Program {
    runtime
        .load(text.as_bytes(), "test.wat", EngineChoice::Command)
        .expect("the test module compiles")
}

fn spec(limits: Limits) -> SandboxSpec {
    SandboxSpec {
        program_name: "guest".into(),
        limits,
        ..SandboxSpec::default()
    }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

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
        // A fifth of a core for 0.6 s is 120 ms; it is throttled the rest
        // of the time it would have run (less under other tests' load).
        assert!(stats.cpu_time > Duration::from_millis(20), "{stats:?}");
        assert!(stats.cpu_time < Duration::from_millis(400), "{stats:?}");
        assert!(stats.throttled > Duration::from_millis(50), "{stats:?}");
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
fn thousand_sandboxes_with_every_limit_firing() {
    let runtime = runtime();
    let spin = load(&runtime, SPIN);
    let hog = load(&runtime, HOG);
    let exit = load(&runtime, EXIT_7);
    let wait = load(&runtime, GROW_THEN_WAIT);
    let http = runtime
        .load(
            &example("http-hello.wasm"),
            "http-hello.wasm",
            EngineChoice::Command,
        )
        .expect("http-hello compiles");
    // One copy of each program however many sandboxes run it.
    let again = load(&runtime, SPIN);
    assert_eq!(runtime.cached_programs(), 5);
    drop(again);
    multi_thread().block_on(async {
        let handler = runtime
            .http_handler(
                &http,
                "http-hello.wasm",
                HandlerConfig {
                    limits: Limits {
                        memory_bytes: Some(64 << 20),
                        ..Limits::default()
                    },
                    request_timeout: Duration::from_secs(60),
                    max_concurrency: 100,
                    env: Vec::new(),
                    mounts: Vec::new(),
                    allow_outbound: Vec::new(),
                    stdout: Output::Null,
                    stderr: Output::Null,
                },
            )
            .expect("a handler");
        let started = Instant::now();
        let mut sandboxes = Vec::new();
        // Held open, so that the guests reading them wait for ever.
        let mut stdin_writers = Vec::new();
        for index in 0..900 {
            let mut stdin = Stdin::Null;
            let (program, limits) = match index % 4 {
                // Blocked in the host: only the timeout can end it.
                0 => {
                    let (reader, writer) = tokio::io::duplex(64);
                    stdin_writers.push(writer);
                    stdin = Stdin::Reader(Box::new(reader));
                    (
                        &wait,
                        Limits {
                            timeout: Some(Duration::from_millis(1500)),
                            ..Limits::default()
                        },
                    )
                }
                // Spinning: 225 quotas of 0.2% of a core add up to less
                // than the machine has, so each really runs over its quota.
                1 => (
                    &spin,
                    Limits {
                        cpus: Some(0.002),
                        timeout: Some(Duration::from_secs(5)),
                        ..Limits::default()
                    },
                ),
                2 => (
                    &hog,
                    Limits {
                        memory_bytes: Some(2 << 20),
                        ..Limits::default()
                    },
                ),
                _ => (&exit, Limits::default()),
            };
            let handle = runtime
                .start(
                    program,
                    SandboxSpec {
                        stdin,
                        ..spec(limits)
                    },
                )
                .expect("starts");
            sandboxes.push((index, handle));
        }
        // A hundred requests to the handler while the sandboxes run.
        let mut requests = Vec::new();
        for _ in 0..100 {
            let handler = handler.clone();
            requests.push(tokio::spawn(async move {
                let request = hyper::Request::builder()
                    .uri("http://localhost/")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let response = handler.handle(request).await;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|body| body.to_bytes());
                (status, body.map(|body| body.len()).unwrap_or(0))
            }));
        }
        for request in requests {
            let (status, length) = request.await.expect("request task");
            assert_eq!(status, 200);
            assert!(length > 0);
        }
        let (mut timed_out, mut throttled, mut oom, mut exited) = (0, 0, 0, 0);
        for (index, handle) in sandboxes {
            let status = tokio::time::timeout(Duration::from_secs(120), handle.wait())
                .await
                .expect("every sandbox ends");
            match (index % 4, &status.reason) {
                (0, ExitReason::TimedOut { .. }) => timed_out += 1,
                (1, ExitReason::TimedOut { .. }) if status.throttled > Duration::ZERO => {
                    throttled += 1
                }
                (2, ExitReason::OomKilled { limit, .. }) if *limit == 2 << 20 => oom += 1,
                (3, ExitReason::Exited) if status.code == 7 => exited += 1,
                other => panic!("sandbox {index} ended unexpectedly: {other:?} {status:?}"),
            }
        }
        assert_eq!((timed_out, throttled, oom, exited), (225, 225, 225, 225));
        assert_eq!(handler.in_flight(), 0);
        drop(stdin_writers);
        eprintln!("1,000 sandboxes ended after {:?}", started.elapsed());
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
