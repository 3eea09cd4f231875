//! 1,000 sandboxes at once in one runtime, through the library: commands
//! with and without quotas, timeouts and memory limits, and requests to an
//! HTTP handler, all running together; every limit fires. A test binary of
//! its own, so that no other test competes with it for the two cores.

mod common;

use std::time::{Duration, Instant};

use berth_runtime::http::HandlerConfig;
use berth_runtime::{EngineChoice, ExitReason, Limits, SandboxSpec, Stdin};
use bytes::Bytes;
use common::{EXIT_7, HOG, SPIN, WAIT, example, load, multi_thread, runtime, spec};
use http_body_util::{BodyExt, Full};

#[test]
fn thousand_sandboxes_with_every_limit_firing() {
    let runtime = runtime();
    let spin = load(&runtime, SPIN);
    let hog = load(&runtime, HOG);
    let exit = load(&runtime, EXIT_7);
    let wait = load(&runtime, WAIT);
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
                    request_timeout: Duration::from_secs(10),
                    max_concurrency: 100,
                    ..HandlerConfig::default()
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
                        timeout: Some(Duration::from_secs(10)),
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
        // A hundred requests to the handler while the sandboxes run; every
        // tenth outlasts the request timeout.
        let mut requests = Vec::new();
        for index in 0..100 {
            let handler = handler.clone();
            let uri = if index % 10 == 0 {
                "http://localhost/sleep?ms=60000"
            } else {
                "http://localhost/"
            };
            requests.push(tokio::spawn(async move {
                let request = hyper::Request::builder()
                    .uri(uri)
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
        for (index, request) in requests.into_iter().enumerate() {
            let (status, length) = request.await.expect("request task");
            if index % 10 == 0 {
                assert_eq!(status, 504, "request {index} outlasts its timeout");
            } else {
                assert_eq!(status, 200, "request {index}");
                assert!(length > 0);
            }
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
