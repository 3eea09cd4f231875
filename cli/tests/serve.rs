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

/// Serves http-hello.wasm with `flags` under `ulimit LIMIT` (a shell
/// applies it, then execs berth).
#[cfg(target_os = "linux")]
fn serve_under_ulimit(berth: &Berth, limit: &str, flags: &str) -> Served {
    let port = free_port();
    let script = format!(
        "ulimit {limit} && exec '{}' run {flags} -p 127.0.0.1:{port}:8080 '{}'",
        common::berth_bin().display(),
        example("wasm/http-hello.wasm").display()
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script])
        .env("BERTH_HOME", berth.home.path())
        .env_remove("RUST_LOG");
    Served::spawn(command, port)
}

/// On a machine that cannot reserve the default instance pool (small
/// address space, `ulimit -v`), berth sizes a pool that fits instead of
/// falling back to on-demand allocation, and serves (the sizing it logs is
/// checked in small_machines.rs).
#[cfg(target_os = "linux")]
#[test]
fn serves_from_a_smaller_pool_when_address_space_is_short() {
    let berth = Berth::new();
    let served = serve_under_ulimit(&berth, "-v 16000000", "");
    assert_eq!(served.request("GET", "/", "").0, 200);
    let log = served.log();
    assert!(!log.contains("falling back"), "{log}");
}

/// Reads `stream` until the server closes it; the time that took, or `None`
/// if it was still open after `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            // A reset closes it too.
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// A connection that has sent `sent` and nothing more.
fn stalled(port: u16, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(sent).expect("send");
    stream
}

/// The most a closing may take on a loaded machine for a 1 s timeout.
const CLOSE_LIMIT: Duration = Duration::from_secs(20);

/// Slowloris: clients that never finish a request header, over HTTP/1.1 or
/// before even showing a protocol, are disconnected after the header
/// timeout, while other clients are served.
#[test]
fn clients_that_never_finish_a_header_are_disconnected() {
    let berth = Berth::new();
    let served = Served::start(&berth, &["--header-timeout", "1s"], "wasm/http-hello.wasm");
    let mut half_header = stalled(served.port, b"GET / HTTP/1.1\r\nHost: local");
    let mut silent = stalled(served.port, b"");
    let mut h2_preface_only = stalled(served.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    served.expect_text("/", 200, "Hello from berth!\n");
    for (name, stream) in [
        ("half a header", &mut half_header),
        ("nothing", &mut silent),
        ("an HTTP/2 preface only", &mut h2_preface_only),
    ] {
        assert!(
            closed_within(stream, CLOSE_LIMIT).is_some(),
            "a client that sent {name} is still connected after {CLOSE_LIMIT:?}"
        );
    }
    served.expect_text("/", 200, "Hello from berth!\n");
}

/// Keep-alive connections, HTTP/1.1 and h2c, close once idle for the idle
/// timeout; a connection in use is not idle.
#[test]
fn idle_keep_alive_connections_are_closed() {
    use http_body_util::{BodyExt, Empty};
    let berth = Berth::new();
    let served = Served::start(
        &berth,
        &["--idle-timeout", "1s", "--header-timeout", "60s"],
        "wasm/http-hello.wasm",
    );
    let port = served.port;

    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut response = Vec::new();
    // Two requests in a row on the one connection, then silence.
    for _ in 0..2 {
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        response.clear();
        let mut buffer = [0u8; 1024];
        while !response.ends_with(b"Hello from berth!\n") {
            let read = kept.read(&mut buffer).expect("read the response");
            assert!(read > 0, "closed before the response");
            response.extend_from_slice(&buffer[..read]);
        }
        assert!(response.starts_with(b"HTTP/1.1 200"));
    }
    assert!(
        closed_within(&mut kept, CLOSE_LIMIT).is_some(),
        "an idle HTTP/1.1 keep-alive connection is still open after {CLOSE_LIMIT:?}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("HTTP/2 handshake with prior knowledge");
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(format!("http://127.0.0.1:{port}/"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("body");
        tokio::time::timeout(CLOSE_LIMIT, connection)
            .await
            .expect("an idle h2c connection is still open")
            .expect("connection task")
            .expect("the server closes cleanly (GOAWAY)");
    });
}

/// Past --max-connections, new connections are refused with 503 while the
/// open ones are served; once they close, new ones are served again.
#[test]
fn connections_past_the_limit_are_refused_and_the_open_ones_served() {
    let berth = Berth::new();
    let served = Served::start(&berth, &["--max-connections", "5"], "wasm/http-hello.wasm");
    let port = served.port;
    // Half-open requests hold the five places. The probe connections of
    // the start-up wait may still hold places for a moment: retry, bounded.
    let started = Instant::now();
    let mut open = Vec::new();
    while open.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "could not open 5 connections: {}",
            served.log()
        );
        let mut stream = stalled(port, b"GET / HTTP/1.1\r\nHost: x\r\n");
        if closed_within(&mut stream, Duration::from_millis(300)).is_none() {
            open.push(stream);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The sixth is answered 503 and closed at once.
    let mut sixth = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sixth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut refusal = String::new();
    let _ = sixth.read_to_string(&mut refusal);
    assert!(
        refusal.starts_with("HTTP/1.1 503") && refusal.ends_with("too many open connections\n"),
        "the sixth connection got {refusal:?}"
    );
    // The five finish their requests.
    for mut stream in open {
        stream
            .write_all(b"Connection: close\r\n\r\n")
            .expect("finish the request");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(
            response.starts_with("HTTP/1.1 200") && response.ends_with("Hello from berth!\n"),
            "{response:?}"
        );
    }
    // Places free up as those connections end.
    let started = Instant::now();
    loop {
        let (status, _, _) = served.request("GET", "/", "");
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still refused after the connections closed: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = served.log_containing("connection limit reached");
    assert_eq!(log.matches("connection limit reached").count(), 1, "{log}");
}

/// CPU time (user + system) of process `pid` so far.
#[cfg(target_os = "linux")]
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Out of file descriptors (EMFILE), the accept loop backs off instead of
/// spinning, logs once, and serves again once descriptors free up.
#[cfg(target_os = "linux")]
#[test]
fn running_out_of_file_descriptors_does_not_spin_the_accept_loop() {
    let berth = Berth::new();
    let served = serve_under_ulimit(&berth, &format!("-n {FD_LIMIT}"), "--max-connections 1000");
    let port = served.port;
    assert_eq!(served.request("GET", "/", "").0, 200);
    // More connections than descriptors left: the last ones wait queued.
    let held: Vec<TcpStream> = (0..FD_LIMIT)
        .map(|_| stalled(port, b"GET / HTTP/1.1\r\n"))
        .collect();
    let log = served.log_containing("cannot accept connections");
    assert!(log.contains("cannot accept connections"), "{log}");
    let pid = served.child.id();
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_time(pid) - before;
    assert!(
        spent < Duration::from_millis(600),
        "the server used {spent:?} of CPU in 3 s while out of descriptors"
    );
    drop(held);
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not serving again after descriptors freed up: {}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Logged once per burst of failures: a descriptor freed for a moment
    // may end one burst and start another, but a loop that logged every
    // retry would have logged hundreds of times in these seconds.
    let log = served.log();
    let warnings = log.matches("cannot accept connections").count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings: {log}");
}

/// The open-files limit for the EMFILE test: room for berth itself and a
/// few connections.
#[cfg(target_os = "linux")]
const FD_LIMIT: usize = 64;
