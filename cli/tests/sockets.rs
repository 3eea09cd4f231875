//! `berth run -p` with programs that listen themselves through
//! `wasi:sockets` (examples/wasm/echo-server.wasm), through the real binary
//! on 127.0.0.1: published and remapped ports, denied binds, the outbound
//! policy, image EXPOSE, and berth's own errors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Berth, Run, Served, example, free_port, held_port};

fn echo_server() -> String {
    example("wasm/echo-server.wasm").display().to_string()
}

/// Serves echo-server with `flags`; it serves on host port `port`.
fn serve(berth: &Berth, flags: &[&str], port: u16) -> Served {
    let wasm = echo_server();
    let mut args = vec!["run"];
    args.extend(flags);
    args.push(&wasm);
    Served::spawn(berth.command(&args), port)
}

/// Sends `line` to 127.0.0.1:`port` and returns the line that comes back.
fn echo(port: u16, line: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (&stream)
        .write_all(format!("{line}\n").as_bytes())
        .expect("send");
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .expect("read the echo");
    reply
}

/// Asserts that the guest failed (exit 1) reporting `failure: Permission
/// denied` (the access-denied error of wasi:sockets).
fn expect_denied(run: &Run, failure: &str) {
    run.expect_code(1);
    let expected = format!("{failure}: Permission denied");
    assert!(
        run.stderr.contains(&expected),
        "expected {expected:?} on stderr: {}",
        run.stderr
    );
}

/// How the guest's std reports a lookup refused with
/// `permanent-resolver-failure` (wasi-libc's `EAI_FAIL`); a name that does
/// not exist reports `EAI_NONAME` instead.
const REFUSED_LOOKUP: &str = "failed to lookup address information: Non-recoverable error";

/// Two distinct free ports.
fn two_free_ports() -> (u16, u16) {
    let first = TcpListener::bind("127.0.0.1:0").expect("bind");
    let second = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |listener: &TcpListener| listener.local_addr().expect("addr").port();
    (port(&first), port(&second))
}

#[test]
fn echoes_through_the_published_port_to_clients_in_turn() {
    let berth = Berth::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:7000");
    let served = serve(&berth, &["-p", &publish], port);
    assert_eq!(echo(port, "first client"), "first client\n");
    assert_eq!(echo(port, "second client"), "second client\n");
    // The guest sees the port it bound, not the host's.
    let log = served.log_containing("listening on");
    assert!(log.contains("listening on 0.0.0.0:7000\n"), "{log}");
}

#[test]
fn a_container_port_is_bound_on_its_host_port_only() {
    let berth = Berth::new();
    let (host, container) = two_free_ports();
    let publish = format!("127.0.0.1:{host}:{container}");
    let env = format!("PORT={container}");
    let served = serve(&berth, &["-p", &publish, "-e", &env], host);
    assert_eq!(echo(host, "mapped"), "mapped\n");
    assert!(
        TcpStream::connect(("127.0.0.1", container)).is_err(),
        "the container port {container} is listening on the host as well"
    );
    let log = served.log_containing("listening on");
    assert!(
        log.contains(&format!("listening on 0.0.0.0:{container}\n")),
        "{log}"
    );
}

#[test]
fn binding_a_port_that_is_not_published_is_denied() {
    let berth = Berth::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:7000");
    let wasm = echo_server();
    for (flags, bound) in [
        // Another port than the published one.
        (
            vec!["-p", publish.as_str(), "-e", "PORT=7001"],
            "0.0.0.0:7001",
        ),
        // An ephemeral port.
        (vec!["-p", publish.as_str(), "-e", "PORT=0"], "0.0.0.0:0"),
        // No network at all without -p.
        (vec!["-e", "PORT=7000"], "0.0.0.0:7000"),
    ] {
        let mut args = vec!["run"];
        args.extend(&flags);
        args.push(&wasm);
        expect_denied(&berth.run(&args), &format!("cannot listen on {bound}"));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing may listen on the published port"
    );
}

/// A native echo server for `connections` clients, on a free port.
fn upstream(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(line.as_bytes());
            }
        }
    });
    port
}

#[test]
fn outbound_connections_need_allow_outbound() {
    let berth = Berth::new();
    let port = upstream(2);
    let wasm = echo_server();
    let target = format!("127.0.0.1:{port}");
    let by_name = format!("localhost:{port}");
    let other_port = format!("127.0.0.1:{}", free_port());

    for (rule, connect) in [
        (None, &target),
        (Some(&other_port), &target),
        (Some(&"10.0.0.1".to_owned()), &target),
    ] {
        let mut args = vec!["run"];
        if let Some(rule) = rule {
            args.extend(["--allow-outbound", rule.as_str()]);
        }
        args.extend([wasm.as_str(), "connect", connect.as_str(), "hi"]);
        expect_denied(&berth.run(&args), &format!("cannot connect to {connect}"));
    }

    for (rule, connect) in [(&target, &target), (&by_name, &by_name)] {
        let run = berth.run(&[
            "run",
            "--allow-outbound",
            rule,
            &wasm,
            "connect",
            connect,
            "through",
        ]);
        run.expect_code(0);
        assert_eq!(run.stdout, "through\n", "{rule}: {}", run.stderr);
    }
}

/// Name lookups answer only for the host names the rules name: a guest may
/// not resolve (and so leak data through) any other name, even one the host
/// would resolve.
#[test]
fn only_the_names_of_outbound_rules_resolve() {
    let berth = Berth::new();
    let port = upstream(1);
    let wasm = echo_server();
    let by_ip = format!("127.0.0.1:{port}");
    // `localhost` resolves on every host, to the very address the rule
    // allows: only berth's refusal, before any lookup, makes this fail.
    // `exfil.invalid` does not exist: a lookup would fail differently
    // (name-unresolvable) from berth's refusal (permanent-resolver-failure).
    for name in ["localhost", "exfil.invalid", "secret-data.localhost"] {
        let target = format!("{name}:{port}");
        let run = berth.run(&[
            "run",
            "--allow-outbound",
            &by_ip,
            &wasm,
            "connect",
            &target,
            "leak",
        ]);
        run.expect_code(1);
        let expected = format!("cannot connect to {target}: {REFUSED_LOOKUP}");
        assert!(
            run.stderr.contains(&expected),
            "expected {expected:?} on stderr: {}",
            run.stderr
        );
    }
    // The name a rule names still resolves (and connects).
    let by_name = format!("localhost:{port}");
    let run = berth.run(&[
        "run",
        "--allow-outbound",
        &by_name,
        &wasm,
        "connect",
        &by_name,
        "named",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "named\n", "{}", run.stderr);
}

#[test]
fn a_published_port_in_use_is_a_clear_error() {
    let berth = Berth::new();
    let (_holder, port) = held_port();
    let publish = format!("127.0.0.1:{port}:7000");
    berth
        .run(&["run", "-p", &publish, &echo_server()])
        .expect_port_in_use(port);
}

#[test]
fn preview1_modules_cannot_publish_ports() {
    let berth = Berth::new();
    let publish = format!("127.0.0.1:{}:7000", free_port());
    let hello = example("wasm/hello.wasm").display().to_string();
    berth
        .run(&["run", "-p", &publish, &hello])
        .expect_berth_error("hello.wasm is a WASI preview1 module, which cannot listen on a port");
}

#[test]
fn an_image_may_listen_on_the_ports_it_exposes() {
    let berth = Berth::new();
    let context = tempfile::tempdir().expect("context");
    std::fs::copy(echo_server(), context.path().join("echo.wasm")).expect("copy wasm");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY echo.wasm /echo.wasm\nENTRYPOINT [\"/echo.wasm\"]\nEXPOSE 7000\n",
    )
    .expect("write Dockerfile");
    let context = context.path().display().to_string();
    berth
        .run(&["build", "-q", "-t", "echo:v1", &context])
        .expect_code(0);

    // Exposed but not published: the guest listens (on a loopback port of
    // its own), nothing is published.
    let served = Served::spawn_until(berth.command(&["run", "echo:v1"]), "listening on");
    assert!(
        served.log().contains("listening on 0.0.0.0:7000\n"),
        "{}",
        served.log()
    );
    drop(served);

    // Published: reachable on the host port.
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:7000");
    let served = Served::spawn(berth.command(&["run", "-p", &publish, "echo:v1"]), port);
    assert_eq!(echo(port, "from the image"), "from the image\n");
    drop(served);

    // A port the image does not expose stays denied.
    expect_denied(
        &berth.run(&["run", "-e", "PORT=7001", "echo:v1"]),
        "cannot listen on 0.0.0.0:7001",
    );
}
