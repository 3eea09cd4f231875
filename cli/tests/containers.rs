//! Detached containers through the real binary: `run -d`, `ps`, `logs`,
//! `stop`, `start`, `rm`, `--rm`, restart policies and startup errors.
//! Every wait is bounded; supervisors and programs left behind by a failed
//! test are killed when its home is dropped.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Berth, Run, entries_under, example, free_port, held_port};

fn path(relative: &str) -> String {
    example(relative).display().to_string()
}

/// A private BERTH_HOME whose containers are killed on drop.
struct Home {
    berth: Berth,
}

impl Home {
    fn new() -> Home {
        Home {
            berth: Berth::new(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.berth.run(args)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.berth.home.path().join("containers").join(id)
    }

    /// The recorded state.json, if the container still exists.
    fn state(&self, id: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.container_dir(id).join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// `berth run -d ARGS`, expecting success; returns the ID.
    fn detach(&self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d"];
        full.extend(args);
        let run = self.run(&full);
        run.expect_code(0);
        let id = run.stdout.trim().to_owned();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "not an ID: {:?}",
            run.stdout
        );
        id
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.berth.home.path().join("containers")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            {
                if let Some(pid) = state["pid"]
                    .as_i64()
                    .and_then(|pid| i32::try_from(pid).ok())
                    && pid > 0
                {
                    // SAFETY: kill(2) on a process this test started.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Polls `check` every 50 ms for up to `limit`; panics with `what`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `ps` row whose NAMES column is `name`.
fn row<'a>(ps: &'a Run, name: &str) -> Option<&'a str> {
    ps.stdout
        .lines()
        .find(|line| line.split_whitespace().last() == Some(name))
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn looks_like_rfc3339_nanos(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() == 30
        && text.ends_with('Z')
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[19] == b'.'
        && text[..4].bytes().all(|b| b.is_ascii_digit())
        && text[20..29].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn a_detached_server_runs_logs_stops_starts_and_is_removed() {
    let home = Home::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = home.detach(&[
        "-p",
        &publish,
        "--name",
        "web",
        &path("wasm/http-hello.wasm"),
    ]);

    let ps = home.run(&["ps"]);
    ps.expect_code(0);
    assert!(ps.stdout.starts_with("CONTAINER ID"), "{}", ps.stdout);
    let web = row(&ps, "web").unwrap_or_else(|| panic!("web not listed:\n{}", ps.stdout));
    assert!(web.starts_with(&id[..12]), "{web}");
    assert!(web.contains("   Up "), "{web}");
    assert!(
        web.contains(&format!("127.0.0.1:{port}->8080/tcp")),
        "{web}"
    );

    let (status, body) = get(port, "/").expect("the container answers");
    assert_eq!((status, body.as_str()), (200, "Hello from berth!\n"));

    let logs = wait_for("the request in the log", Duration::from_secs(10), || {
        let logs = home.run(&["logs", "web"]);
        logs.stdout.contains("request GET /").then_some(logs)
    });
    logs.expect_code(0);
    // berth's own "serving" line is the program's stderr.
    assert!(logs.stderr.contains("serving"), "{}", logs.stderr);
    assert!(!logs.stdout.contains("serving"), "{}", logs.stdout);

    let stamped = home.run(&["logs", "--timestamps", "web"]);
    stamped.expect_code(0);
    let line = stamped
        .stdout
        .lines()
        .find(|line| line.ends_with("request GET /"))
        .unwrap_or_else(|| panic!("{}", stamped.stdout));
    let (time, rest) = line.split_once(' ').expect("a timestamp");
    assert!(looks_like_rfc3339_nanos(time), "{line}");
    assert_eq!(rest, "request GET /");

    let stop = home.run(&["stop", "web"]);
    stop.expect_code(0);
    assert_eq!(stop.stdout, "web\n");
    assert!(row(&home.run(&["ps"]), "web").is_none());
    let all = home.run(&["ps", "-a"]);
    let web = row(&all, "web").unwrap_or_else(|| panic!("{}", all.stdout));
    assert!(web.contains("Exited (0)"), "{web}");
    assert!(get(port, "/").is_none(), "still serving after stop");

    home.run(&["start", "web"]).expect_code(0);
    let (status, _) = get(port, "/").expect("served again after start");
    assert_eq!(status, 200);
    assert!(row(&home.run(&["ps"]), "web").is_some());

    home.run(&["rm", "web"])
        .expect_berth_error("container is running");
    let rm = home.run(&["rm", "-f", &id[..8]]);
    rm.expect_code(0);
    assert_eq!(rm.stdout, format!("{}\n", &id[..8]));
    assert!(row(&home.run(&["ps", "-a"]), "web").is_none());
    assert!(!home.container_dir(&id).exists());
    assert!(get(port, "/").is_none(), "still serving after rm -f");
    home.run(&["logs", "web"])
        .expect_berth_error("no such container: web");
}

/// A wasi:sockets program run with `-d` listens on its published port
/// exactly as in the foreground (the supervisor re-executes the same run).
#[test]
fn a_detached_socket_app_serves_its_published_port() {
    let home = Home::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:7000");
    let id = home.detach(&["-p", &publish, &path("wasm/echo-server.wasm")]);
    let stream = wait_for("the published port", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (&stream).write_all(b"detached\n").expect("send");
    let mut reply = [0u8; 9];
    (&stream).read_exact(&mut reply).expect("read the echo");
    assert_eq!(&reply, b"detached\n");
    let logs = wait_for("the listening line", Duration::from_secs(10), || {
        let logs = home.run(&["logs", &id]);
        logs.stdout.contains("listening on").then_some(logs)
    });
    assert!(
        logs.stdout.contains("listening on 0.0.0.0:7000"),
        "{}",
        logs.stdout
    );
    home.run(&["rm", "-f", &id]).expect_code(0);
}

#[test]
fn rm_flag_removes_the_container_when_it_exits() {
    let home = Home::new();
    let id = home.detach(&["--rm", &path("wasm/exitcode.wasm"), "0"]);
    wait_for(
        "the container to be removed",
        Duration::from_secs(30),
        || (!home.container_dir(&id).exists()).then_some(()),
    );
    assert!(!home.run(&["ps", "-a", "-q"]).stdout.contains(&id[..12]));
}

#[test]
fn on_failure_restarts_at_most_n_times() {
    let home = Home::new();
    let id = home.detach(&[
        "--restart",
        "on-failure:2",
        "--name",
        "flaky",
        &path("wasm/exitcode.wasm"),
        "3",
    ]);
    let state = wait_for("the container to exit", Duration::from_secs(60), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    assert_eq!(state["exit_code"], 3, "{state}");
    assert_eq!(state["restart_count"], 2, "{state}");
    let all = home.run(&["ps", "-a"]);
    let flaky = row(&all, "flaky").unwrap_or_else(|| panic!("{}", all.stdout));
    assert!(flaky.contains("Exited (3)"), "{flaky}");
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.container_dir(&id).join("config.json")).expect("config.json"),
    )
    .expect("config is JSON");
    // The record holds the typed spec, never a command line.
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["name"], "flaky");
    assert_eq!(config["spec"]["restart"], "on-failure:2", "{config}");
    assert_eq!(config["spec"]["args"], serde_json::json!(["3"]), "{config}");
    assert!(config.get("argv").is_none(), "{config}");
}

#[test]
fn logs_tail_and_follow() {
    let home = Home::new();
    let id = home.detach(&["--name", "hi", &path("wasm/hello.wasm"), "a", "b", "c"]);
    wait_for("hello to exit", Duration::from_secs(30), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    let all = home.run(&["logs", "hi"]);
    all.expect_code(0);
    assert_eq!(
        all.stdout,
        "Hello from berth!\narg[1]=a\narg[2]=b\narg[3]=c\n"
    );
    let tail = home.run(&["logs", "--tail", "2", "hi"]);
    assert_eq!(tail.stdout, "arg[2]=b\narg[3]=c\n");
    // Following an exited container prints everything and returns.
    let followed = home.run(&["logs", "-f", "hi"]);
    followed.expect_code(0);
    assert_eq!(followed.stdout, all.stdout);

    // Following a running container returns once it exits.
    let id = home.detach(&["--name", "spin", "--timeout", "2s", &path("wasm/busy.wasm")]);
    let started = Instant::now();
    let followed = home.berth.run_with(
        home.berth.command(&["logs", "-f", "spin"]),
        None,
        Duration::from_secs(30),
    );
    followed.expect_code(0);
    assert!(
        followed.stderr.contains("timeout of 2s was reached"),
        "{}",
        followed.stderr
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    let state = home.state(&id).expect("state");
    assert_eq!(state["status"], "exited", "{state}");
    assert_eq!(state["exit_code"], 137, "{state}");
}

#[test]
fn startup_errors_are_reported_with_exit_125() {
    let home = Home::new();
    let (_holder, port) = held_port();
    let publish = format!("127.0.0.1:{port}:8080");
    home.run(&["run", "-d", "-p", &publish, &path("wasm/http-hello.wasm")])
        .expect_berth_error(&format!("port {port} is already in use"));
    let missing = path("wasm/does-not-exist.wasm");
    home.run(&["run", "-d", "--rm", &missing])
        .expect_berth_error("does-not-exist.wasm");
    home.run(&["stop", "nothing"])
        .expect_berth_error("no such container: nothing");
    home.run(&["run", "-d", "--rm", "--restart", "always", &missing])
        .expect_berth_error("--restart and --rm");
    home.run(&["run", "--name", "x", &path("wasm/hello.wasm")])
        .expect_berth_error("add -d");

    // Names are unique.
    home.detach(&["--name", "once", &path("wasm/exitcode.wasm")]);
    home.run(&["run", "-d", "--name", "once", &path("wasm/exitcode.wasm")])
        .expect_berth_error("already in use");
}

#[test]
fn stop_kills_a_program_that_outlives_the_timeout() {
    let home = Home::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = home.detach(&[
        "-p",
        &publish,
        "--stop-timeout",
        "60s",
        "--name",
        "slow",
        &path("wasm/http-hello.wasm"),
    ]);
    // An in-flight request keeps the server draining past `stop -t 1`.
    let request = std::thread::spawn(move || get(port, "/sleep?ms=20000"));
    std::thread::sleep(Duration::from_millis(500));
    let stop = home.run(&["stop", "-t", "1", "slow"]);
    stop.expect_code(0);
    assert!(stop.elapsed < Duration::from_secs(10), "{:?}", stop.elapsed);
    let state = home.state(&id).expect("state");
    assert_eq!(state["status"], "exited", "{state}");
    assert_eq!(state["exit_code"], 137, "{state}");
    assert!(state["pid"].is_null(), "{state}");
    let _ = request.join();
}

#[test]
fn a_dead_supervisor_shows_as_exited() {
    let home = Home::new();
    let id = home.detach(&["--name", "orphan", &path("wasm/busy.wasm")]);
    let state = home.state(&id).expect("state");
    {
        let pid = state["pid"].as_i64().expect("a pid") as i32;
        // SAFETY: kill(2) on a process this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let all = wait_for("ps to notice", Duration::from_secs(10), || {
        let all = home.run(&["ps", "-a"]);
        row(&all, "orphan")
            .is_some_and(|row| row.contains("Exited (255)"))
            .then_some(all)
    });
    assert!(
        row(&home.run(&["ps"]), "orphan").is_none(),
        "{}",
        all.stdout
    );
    home.run(&["rm", "orphan"]).expect_code(0);
}

#[test]
fn ps_shows_what_an_image_runs() {
    let home = Home::new();
    let context = tempfile::tempdir().expect("context");
    std::fs::copy(path("wasm/hello.wasm"), context.path().join("hello.wasm")).expect("copy");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.wasm /app/hello.wasm\nENTRYPOINT [\"/app/hello.wasm\"]\nCMD [\"x\"]\n",
    )
    .expect("Dockerfile");
    home.run(&[
        "build",
        "-q",
        "-t",
        "greeter",
        &context.path().display().to_string(),
    ])
    .expect_code(0);
    home.detach(&["--name", "from-image", "greeter"]);
    home.detach(&["--name", "with-args", "greeter", "y"]);
    let all = wait_for("both to exit", Duration::from_secs(30), || {
        let all = home.run(&["ps", "-a"]);
        ["from-image", "with-args"]
            .iter()
            .all(|name| row(&all, name).is_some_and(|row| row.contains("Exited (0)")))
            .then_some(all)
    });
    // docker's COMMAND: ENTRYPOINT then CMD, or the given arguments.
    assert!(
        row(&all, "from-image").is_some_and(|row| row.contains("\"/app/hello.wasm x\"")),
        "{}",
        all.stdout
    );
    assert!(
        row(&all, "with-args").is_some_and(|row| row.contains("\"/app/hello.wasm y\"")),
        "{}",
        all.stdout
    );
}

/// Every directory and file under `root` (itself included), with its mode.
fn modes_under(root: &std::path::Path) -> Vec<(PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::iter::once(root.to_path_buf())
        .chain(entries_under(root))
        .map(|path| {
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            (path, meta.is_dir(), mode)
        })
        .collect()
}

/// The command lines of every process this test can see.
#[cfg(target_os = "linux")]
fn command_lines() -> Vec<(u32, String)> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&bytes).replace('\0', " ");
            lines.push((pid, line));
        }
    }
    lines
}

/// Another user on this machine must not learn a container's `-e` values:
/// not from the files under BERTH_HOME (records, logs, the compile cache),
/// not from the process list.
#[test]
fn secrets_are_kept_from_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let root = home.berth.home.path().to_path_buf();
    // As older berth versions (and tempdir) leave it: readable by others.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = format!("SECRET=s3cret-{}", std::process::id());
    let passed = format!("p4ssed-{}", std::process::id());

    // One container that prints its environment into its log...
    let printer = home.detach(&["-e", &secret, "--name", "printer", &path("wasm/hello.wasm")]);
    // ...and one that keeps running, with a value passed from berth's own
    // environment (`-e KEY`).
    let mut command = home.berth.command(&[
        "run",
        "-d",
        "-e",
        &secret,
        "-e",
        "PASSED",
        "--name",
        "spinner",
        &path("wasm/busy.wasm"),
    ]);
    command.env("PASSED", &passed);
    let run = home.berth.run_with(command, None, Duration::from_secs(60));
    run.expect_code(0);
    let spinner = run.stdout.trim().to_owned();
    wait_for("the printer to exit", Duration::from_secs(30), || {
        home.state(&printer)
            .filter(|state| state["status"] == "exited")
    });
    let state = wait_for("the spinner to run", Duration::from_secs(30), || {
        home.state(&spinner)
            .filter(|state| state["status"] == "running")
    });

    // The secrets are on disk (that is what the modes must protect).
    let log = std::fs::read_to_string(home.container_dir(&printer).join("log.jsonl"))
        .expect("printer log");
    assert!(log.contains(&secret), "{log}");
    let config = std::fs::read_to_string(home.container_dir(&spinner).join("config.json"))
        .expect("spinner config");
    assert!(config.contains(&format!("PASSED={passed}")), "{config}");

    let found = modes_under(&root);
    for expected in [
        "config.json",
        "state.json",
        "log.jsonl",
        "supervisor.log",
        "printer",
    ] {
        assert!(
            found
                .iter()
                .any(|(path, _, _)| path.file_name().is_some_and(|name| name == expected)),
            "{expected} not found under BERTH_HOME: {found:?}"
        );
    }
    assert!(
        found
            .iter()
            .any(|(path, _, _)| path.extension().is_some_and(|ext| ext == "cwasm")),
        "no compile cache entry: {found:?}"
    );
    for (path, is_dir, mode) in &found {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(
            *mode,
            wanted,
            "{} has mode {mode:04o}, not {wanted:04o}",
            path.display()
        );
    }

    #[cfg(target_os = "linux")]
    {
        let lines = command_lines();
        {
            let key = "pid";
            let pid = state[key].as_u64().expect("a pid") as u32;
            assert!(
                lines.iter().any(|(seen, line)| *seen == pid
                    && line.contains(&spinner)
                    && !line.contains("busy.wasm")),
                "{key} {pid} should run with only the container ID on its command line: {lines:?}"
            );
        }
        for (pid, line) in &lines {
            assert!(
                !line.contains(&secret) && !line.contains(&passed),
                "process {pid} shows a secret on its command line: {line}"
            );
        }
    }
    home.run(&["rm", "-f", "spinner"]).expect_code(0);
}

/// A data directory that others could have written to, or that belongs to
/// someone else, is refused (its records and compiled code cannot be
/// trusted), as ssh refuses such a `~/.ssh`.
#[test]
fn a_data_directory_others_control_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let berth = Berth::new();
    let root = berth.home.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    berth
        .run(&["run", &path("wasm/hello.wasm")])
        .expect_berth_error(&format!("`chmod 700 {}`", root.display()));
    berth
        .run(&["ps"])
        .expect_berth_error("is writable by others (mode 0777)");
    assert!(
        std::fs::read_dir(root).expect("read home").next().is_none(),
        "berth wrote into a directory it refused"
    );
    let mode = || std::fs::metadata(root).expect("home").permissions().mode() & 0o7777;

    // Readable by others and holding someone else's files (a home
    // directory given as BERTH_HOME): refused, its mode left alone.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(root.join("notes.txt"), "mine").expect("write");
    berth
        .run(&["ps"])
        .expect_berth_error("holds files that are not berth's");
    assert_eq!(mode(), 0o755);
    std::fs::remove_file(root.join("notes.txt")).expect("rm");

    // berth's own, readable by others: made owner-only, silently when
    // empty, with a warning when it held data that may have been read.
    let ps = berth.run(&["ps"]);
    ps.expect_code(0);
    assert_eq!((mode(), ps.stderr.as_str()), (0o700, ""));
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ps = berth.run(&["ps"]);
    ps.expect_code(0);
    assert_eq!(mode(), 0o700);
    assert!(
        ps.stderr
            .contains("was readable by others (mode 0755); it is now owner-only (0700)"),
        "{}",
        ps.stderr
    );

    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(root, Some(65534), None).expect("chown");
        berth
            .run(&["ps"])
            .expect_berth_error("belongs to uid 65534, not to you");
    }
}

/// `state.json` naming a pid that now belongs to an unrelated process (the
/// pid was reused, or the file was damaged) must not get that process
/// signalled by `stop`, `rm -f` or `start`, nor shown as running by `ps`.
#[test]
fn a_reused_pid_in_the_record_is_never_signalled() {
    let home = Home::new();
    let id = home.detach(&["--name", "gone", &path("wasm/exitcode.wasm"), "0"]);
    wait_for("the container to exit", Duration::from_secs(30), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let unrelated = bystander.id();
    let forge = || {
        let state = serde_json::json!({
            "status": "running",
            "pid": unrelated,
            "started_at": "2026-01-01T00:00:00.000000000Z",
        });
        std::fs::write(
            home.container_dir(&id).join("state.json"),
            serde_json::to_vec(&state).expect("encode"),
        )
        .expect("forge state.json");
    };
    let alive = |bystander: &mut std::process::Child, after: &str| {
        // Signals are delivered at once, but give the kernel a moment.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            bystander.try_wait().expect("wait").is_none(),
            "the unrelated process was killed by {after}"
        );
    };

    forge();
    assert!(
        row(&home.run(&["ps"]), "gone").is_none(),
        "shown as running"
    );
    let all = home.run(&["ps", "-a"]);
    assert!(
        row(&all, "gone").is_some_and(|row| row.contains("Exited (255)")),
        "{}",
        all.stdout
    );
    home.run(&["stop", "gone"]).expect_code(0);
    alive(&mut bystander, "stop");
    let state = home.state(&id).expect("state");
    assert_eq!(state["status"], "exited", "{state}");

    forge();
    home.run(&["start", "gone"]).expect_code(0);
    alive(&mut bystander, "start");
    wait_for(
        "the restarted container to exit",
        Duration::from_secs(30),
        || home.state(&id).filter(|state| state["status"] == "exited"),
    );

    forge();
    home.run(&["rm", "-f", "gone"]).expect_code(0);
    alive(&mut bystander, "rm -f");
    assert!(!home.container_dir(&id).exists());

    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// Words after FILE belong to the program, even when they look like berth
/// options, in a detached container too: its supervisor re-runs the
/// program with them, and `ps` shows them.
#[test]
fn a_detached_programs_arguments_may_look_like_options() {
    let home = Home::new();
    let id = home.detach(&[
        "--name",
        "dashes",
        &path("wasm/hello.wasm"),
        "-m",
        "5",
        "--rm",
        "-d",
    ]);
    wait_for("the container to exit", Duration::from_secs(30), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    let logs = home.run(&["logs", "dashes"]);
    logs.expect_code(0);
    assert_eq!(
        logs.stdout,
        "Hello from berth!\narg[1]=-m\narg[2]=5\narg[3]=--rm\narg[4]=-d\n"
    );
    let all = home.run(&["ps", "-a"]);
    let dashes = row(&all, "dashes").unwrap_or_else(|| panic!("removed: {}", all.stdout));
    assert!(dashes.contains("\"hello.wasm -m 5 --r…\""), "{dashes}");
    assert!(dashes.contains("Exited (0)"), "{dashes}");
}

#[test]
fn a_container_recorded_by_an_older_berth_is_listed_removed_and_never_rerun() {
    let home = Home::new();
    home.run(&["ps", "-a"]).expect_code(0);
    // Record format 1 stored the berth run command line.
    let id = "ab".repeat(32);
    let dir = home.container_dir(&id);
    std::fs::create_dir(&dir).expect("container dir");
    let record = serde_json::json!({
        "version": 1,
        "id": id,
        "name": "legacy",
        "created": "2026-01-01T00:00:00.000000000Z",
        "argv": ["--env=A=1", "app.wasm", "x"],
        "cwd": "/",
        "image": "app.wasm",
        "command": ["x"],
        "ports": [],
        "restart": "no",
        "auto_remove": false,
        "interactive": false
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&record).expect("json"),
    )
    .expect("config.json");
    let all = home.run(&["ps", "-a"]);
    let legacy = row(&all, "legacy").unwrap_or_else(|| panic!("{}", all.stdout));
    assert!(legacy.contains("app.wasm x"), "{legacy}");
    home.run(&["start", "legacy"]).expect_berth_error(
        "created by an older berth (record format 1); remove it with `berth rm legacy`",
    );
    home.run(&["rm", "legacy"]).expect_code(0);
    assert!(!dir.exists());
}

#[test]
fn a_container_killed_at_its_memory_limit_shows_oomkilled() {
    let home = Home::new();
    let id = home.detach(&["--name", "hog", "-m", "32Mi", &path("wasm/hog.wasm"), "64"]);
    wait_for("the container to exit", Duration::from_secs(60), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    let all = home.run(&["ps", "-a"]);
    let hog = row(&all, "hog").unwrap_or_else(|| panic!("hog not listed:\n{}", all.stdout));
    assert!(hog.contains("Exited (137)"), "{hog}");
    let inspect = home.run(&["inspect", "hog"]);
    inspect.expect_code(0);
    let inspected: serde_json::Value =
        serde_json::from_str(&inspect.stdout).expect("inspect prints JSON");
    let state = &inspected[0]["State"];
    assert_eq!(state["OOMKilled"], true, "{inspected}");
    assert_eq!(state["ExitCode"], 137, "{inspected}");
    assert_eq!(state["Status"], "exited", "{inspected}");
    assert_eq!(inspected[0]["Name"], "/hog");
    // The guest's own words before it was killed, and berth's reason.
    let logs = home.run(&["logs", "hog"]);
    assert!(logs.stderr.contains("OOMKilled"), "{}", logs.stderr);

    // A timeout is told apart from it (compiled first: the timeout counts
    // compiling).
    home.run(&["run", &path("wasm/busy.wasm"), "1"])
        .expect_code(0);
    let id = home.detach(&[
        "--name",
        "slow",
        "--timeout",
        "200ms",
        &path("wasm/busy.wasm"),
    ]);
    let state = wait_for("the container to time out", Duration::from_secs(60), || {
        home.state(&id).filter(|state| state["status"] == "exited")
    });
    assert_eq!(state["exit_code"], 137, "{state}");
    assert_eq!(state["oom_killed"], false, "{state}");
    assert_eq!(state["exit_reason"]["kind"], "timed_out", "{state}");
}
