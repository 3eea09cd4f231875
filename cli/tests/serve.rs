//! `berth run -p` serving wasi:http components, through the real binary on
//! 127.0.0.1: responses, concurrency, per-request failure isolation,
//! limits, outbound policy, graceful stop and port conflicts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Berth, Served, example, free_port, held_port};

impl Served {
    /// Serves `wasm` (an example) with `extra` flags on a free port
    /// published as container port 8080.
    fn start(berth: &Berth, extra: &[&str], wasm: &str) -> Served {
        Served::start_within(berth, extra, wasm, Duration::from_secs(30))
    }

    /// [`Served::start`], allowing `limit` for berth to compile the
    /// component and start listening.
    fn start_within(berth: &Berth, extra: &[&str], wasm: &str, limit: Duration) -> Served {
        let port = free_port();
        let publish = format!("127.0.0.1:{port}:8080");
        let wasm = example(wasm).display().to_string();
        let mut args = vec!["run", "-p", publish.as_str()];
        args.extend(extra);
        args.push(&wasm);
        Served::spawn_within(berth.command(&args), port, limit)
    }

    /// `GET path` answers `status` with the plain-text `body`.
    fn expect_text(&self, path: &str, status: u16, body: &str) {
        let (got, head, got_body) = self.request("GET", path, "");
        assert_eq!((got, got_body.as_str()), (status, body), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{head}"
        );
    }

    /// Sends one request; returns (status, headers, body).
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        request(self.port, method, path, body)
    }
}

fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn serves_responses_with_headers_env_and_logs() {
    let berth = Berth::new();
    let served = Served::start(
        &berth,
        &["-e", "GREETING=first", "-e", "GREETING=hello"],
        "wasm/http-hello.wasm",
    );
    served.expect_text("/", 200, "Hello from berth!\n");
    served.expect_text("/env?name=GREETING", 200, "hello\n");
    let (status, _, body) = served.request("POST", "/echo", "ping");
    assert_eq!(status, 200);
    assert!(body.contains("ping"), "{body}");
    assert_eq!(served.request("GET", "/missing", "").0, 404);

    let json = Served::start(&berth, &[], "wasm/http-json.wasm");
    let (status, head, body) = json.request("GET", "/items", "");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    assert_eq!(body, r#"[{"id":1,"name":"berth"}]"#);
}

/// A component from ComponentizeJS (examples/js, SpiderMonkey inside)
/// imports wasi:cli (environment, stdio, terminal) and wasi:filesystem
/// beside wasi:http: it is served as it is, with env from `-e` and its
/// console.log lines in the log.
#[test]
fn serves_a_componentize_js_component_unchanged() {
    let berth = Berth::new();
    // ~13 MB of SpiderMonkey: compiling it on a cold cache takes a while
    // on a small machine that is also running other tests.
    let served = Served::start_within(
        &berth,
        &["-e", "GREETING=hello from js"],
        "wasm/http-hello-js.wasm",
        Duration::from_secs(180),
    );
    served.expect_text("/", 200, "Hello from JavaScript on berth!\n");
    served.expect_text("/env?name=GREETING", 200, "hello from js\n");
    served.expect_text("/env?name=UNSET", 404, "not set\n");
    assert_eq!(served.request("POST", "/", "x").0, 404);
    let log = served.log_containing("request POST /");
    for line in ["request GET /env", "request POST /"] {
        assert!(log.contains(line), "{line:?} not in the log: {log}");
    }
}

#[test]
fn a_thousand_concurrent_requests_are_all_answered() {
    let berth = Berth::new();
    let served = Served::start(&berth, &[], "wasm/http-hello.wasm");
    let port = served.port;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let answered = runtime.block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            tasks.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()?;
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut response = Vec::new();
                tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
                    .await
                    .ok()?
                    .ok()?;
                let text = String::from_utf8_lossy(&response).into_owned();
                (text.starts_with("HTTP/1.1 200") && text.ends_with("Hello from berth!\n"))
                    .then_some(())
            }));
        }
        let mut answered = 0;
        for task in tasks {
            if let Ok(Some(())) = task.await {
                answered += 1;
            }
        }
        answered
    });
    assert_eq!(answered, 1000);
}

#[test]
fn serves_h2c_with_many_streams_on_one_connection() {
    use http_body_util::{BodyExt, Empty};
    let berth = Berth::new();
    let served = Served::start(&berth, &[], "wasm/http-hello.wasm");
    let port = served.port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answers = runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("HTTP/2 handshake with prior knowledge");
        tokio::spawn(connection);
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let mut sender = sender.clone();
            streams.spawn(async move {
                let request = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                let version = response.version();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.expect("body");
                (
                    version,
                    status,
                    String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                )
            });
        }
        tokio::time::timeout(Duration::from_secs(60), streams.join_all())
            .await
            .expect("all streams answered within 60 s")
    });
    assert_eq!(answers.len(), 20);
    for (version, status, body) in answers {
        assert_eq!(version, hyper::Version::HTTP_2);
        assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));
    }
    // HTTP/1.1 still works on the same port.
    assert_eq!(served.request("GET", "/", "").0, 200);
}

#[test]
fn a_trap_fails_one_request_not_the_server() {
    let berth = Berth::new();
    let served = Served::start(&berth, &[], "wasm/http-hello.wasm");
    assert_eq!(served.request("GET", "/trap", "").0, 500);
    assert_eq!(served.request("GET", "/", "").0, 200);
    let log = served.log_containing("request trapped");
    assert!(log.contains("request trapped"), "{log}");
}

#[test]
fn memory_limit_and_request_timeout_apply_per_request() {
    let berth = Berth::new();
    let served = Served::start(
        &berth,
        &["-m", "32Mi", "--request-timeout", "1s"],
        "wasm/http-hello.wasm",
    );
    assert_eq!(served.request("GET", "/alloc?mib=8", "").0, 200);
    assert_eq!(served.request("GET", "/alloc?mib=64", "").0, 500);
    let started = Instant::now();
    assert_eq!(served.request("GET", "/spin", "").0, 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(served.request("GET", "/", "").0, 200);
    let log = served.log_containing("memory limit of 32 MiB");
    assert!(log.contains("memory limit of 32 MiB"), "{log}");
    let log = served.log_containing("timed out");
    assert!(log.contains("timed out"), "{log}");
}

#[test]
fn outbound_http_is_denied_unless_allowed() {
    let berth = Berth::new();
    let upstream = Served::start(&berth, &[], "wasm/http-hello.wasm");
    let target = format!("/fetch?url=http://127.0.0.1:{}/", upstream.port);
    let denied = Served::start(&berth, &[], "wasm/http-hello.wasm");
    let (status, _, body) = denied.request("GET", &target, "");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    let rule = format!("127.0.0.1:{}", upstream.port);
    let allowed = Served::start(&berth, &["--allow-outbound", &rule], "wasm/http-hello.wasm");
    let (status, _, body) = allowed.request("GET", &target, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from berth!"), "{body}");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_in_flight_requests() {
    let berth = Berth::new();
    let mut served = Served::start(&berth, &["--stop-timeout", "10s"], "wasm/http-hello.wasm");
    let port = served.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/sleep?ms=1500", ""));
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: kill(2) on our own child's pid.
    let result = unsafe { libc::kill(served.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(result, 0);
    let (status, _, body) = slow.join().expect("request thread");
    assert_eq!((status, body.as_str()), (200, "slept 1500 ms\n"));
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "berth did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after stop"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let berth = Berth::new();
    let (_holder, port) = held_port();
    let publish = format!("127.0.0.1:{port}:8080");
    berth
        .run(&[
            "run",
            "-p",
            &publish,
            &example("wasm/http-hello.wasm").display().to_string(),
        ])
        .expect_port_in_use(port);
    berth
        .run(&[
            "run",
            "-p",
            "99999:80",
            &example("wasm/http-hello.wasm").display().to_string(),
        ])
        .expect_berth_error("invalid port mapping \"99999:80\"");
    berth
        .run(&[
            "run",
            &example("wasm/http-hello.wasm").display().to_string(),
        ])
        .expect_berth_error("-p 8080:8080");
}

/// On a machine that cannot reserve the instance pool (small address space,
/// `ulimit -v`), berth logs the fallback and still serves.
#[cfg(target_os = "linux")]
#[test]
fn serves_without_the_pool_when_address_space_is_short() {
    let berth = Berth::new();
    let port = free_port();
    let script = format!(
        "ulimit -v 16000000 && exec '{}' run -p 127.0.0.1:{port}:8080 '{}'",
        common::berth_bin().display(),
        example("wasm/http-hello.wasm").display()
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script])
        .env("BERTH_HOME", berth.home.path())
        .env_remove("RUST_LOG");
    let served = Served::spawn(command, port);
    assert_eq!(served.request("GET", "/", "").0, 200);
    let log = served.log_containing("falling back to on-demand allocation");
    assert!(
        log.contains("falling back to on-demand allocation"),
        "{log}"
    );
}
