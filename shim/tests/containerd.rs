//! The shim under a real containerd (Debian's 1.6.20): a private daemon
//! with its root, state, sockets and config in a temp dir, the `native`
//! snapshotter, and this build's `containerd-shim-berth-v1` first on its
//! PATH. Images are built and saved by berth's registry library (what
//! `berth build` and `berth save` run), imported with `ctr image import`
//! and run with `ctr run --runtime io.containerd.berth.v1`.
//!
//! Skips (with a message) where containerd is not installed; needs root,
//! as containerd does.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-berth-v1");
const NAMESPACE: &str = "berth-test";
const RUNTIME: &str = "io.containerd.berth.v1";
/// containerd 1.6 puts every shim's socket here, whatever its config says.
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// Grows to 1 MiB, then by 1 MiB more for each byte read from stdin
/// (the runtime's tests use it too).
const GROW_ON_EACH_BYTE: &str = include_str!("../../runtime/tests/guests/grow-on-each-byte.wat");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn containerd_installed() -> bool {
    Command::new("containerd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What a bounded command printed and how it ended.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Waits for `child` at most `limit`, killing it after that.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not finish within {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("wait");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A private containerd, stopped (with the shims it started) on drop.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {grpc:?}\n[ttrpc]\n  address = {ttrpc:?}\n[debug]\n  address = {debug:?}\n\
             [metrics]\n  address = \"\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = path("root"),
            state = path("state"),
            grpc = path("containerd.sock"),
            ttrpc = path("containerd.sock.ttrpc"),
            debug = path("debug.sock"),
            opt = path("opt"),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let shim_dir = Path::new(SHIM).parent().expect("shim dir");
        let search = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![shim_dir.to_path_buf()];
        paths.extend(std::env::split_paths(&search));
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .env("BERTH_SHIM_DATA_DIR", dir.path().join("berth"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd.socket().exists()
                && containerd
                    .ctr(&["version"], Duration::from_secs(10))
                    .code
                    .is_some_and(|code| code == 0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20s; its log: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `ctr ARGS` for at most `limit`.
    fn ctr(&self, args: &[&str], limit: Duration) -> Output {
        let child = self.ctr_command(args).spawn().expect("run ctr");
        wait_bounded(child, limit, &format!("ctr {}", args.join(" ")))
    }

    /// Runs `ctr ARGS` and expects it to succeed.
    fn ctr_ok(&self, args: &[&str]) -> Output {
        let output = self.ctr(args, Duration::from_secs(60));
        assert_eq!(
            output.code,
            Some(0),
            "ctr {} failed: {}\nstdout: {}\ncontainerd log:\n{}",
            args.join(" "),
            output.stderr,
            output.stdout,
            self.log()
        );
        output
    }

    /// Builds `dockerfile` (with the examples' wasm in its context) as
    /// `name`, saves it and imports it; returns the name containerd gives.
    fn import_image(&self, name: &str, dockerfile: &str) -> String {
        let work = tempfile::tempdir().expect("build dir");
        let context = work.path().join("context");
        std::fs::create_dir(&context).expect("context");
        for wasm in [
            "wasm/hello.wasm",
            "wasm/exitcode.wasm",
            "wasm/busy.wasm",
            "wasm/hog.wasm",
            "wasm/http-hello.wasm",
        ] {
            let name = Path::new(wasm).file_name().expect("name");
            std::fs::copy(examples().join(wasm), context.join(name)).expect("copy");
        }
        // A stand-in for the pause image's native binary: never executed.
        std::fs::write(context.join("pause"), b"\x7fELF\x02\x01\x01\0").expect("pause");
        let (grow, _) = berth_runtime::program::to_binary(GROW_ON_EACH_BYTE.as_bytes(), "grow")
            .expect("the test module compiles");
        std::fs::write(context.join("grow.wasm"), grow).expect("grow");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let store = berth_registry::Store::open(work.path().join("store")).expect("store");
        let mut options = berth_registry::build::BuildOptions::new(&context);
        options.tags = vec![name.to_owned()];
        berth_registry::build::build(&store, &options).expect("build");
        let tar = work.path().join("image.tar");
        berth_registry::archive::save(&store, &[name], &tar).expect("save");
        self.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            "--all-platforms",
            &tar.display().to_string(),
        ]);
        let listed = self.ctr_ok(&["images", "ls", "-q"]).stdout;
        listed
            .lines()
            .find(|line| line.contains(name.split(':').next().unwrap_or(name)))
            .unwrap_or_else(|| panic!("{name} not among the imported images: {listed}"))
            .to_owned()
    }

    fn run_args<'a>(&self, image: &'a str, id: &'a str, fifo_dir: &'a str) -> Vec<&'a str> {
        vec![
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--platform",
            "wasip1/wasm",
            "--fifo-dir",
            fifo_dir,
            "--runtime",
            RUNTIME,
            image,
            id,
        ]
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let address = self.socket().display().to_string();
        // Shims this daemon started and that outlived it (a failed test):
        // found by the daemon address they were given, and their sockets
        // in /run/containerd/s by the -socket they were given (other
        // tests' shims run there at the same time). A shim that exited
        // normally removed its socket itself.
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let args: Vec<_> = cmdline
                    .split(|byte| *byte == 0)
                    .map(String::from_utf8_lossy)
                    .collect();
                let ours = args
                    .iter()
                    .any(|arg| arg.contains("containerd-shim-berth-v1"))
                    && args.iter().any(|arg| arg.contains(&address));
                if ours {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    let socket = args
                        .iter()
                        .skip_while(|arg| *arg != "-socket")
                        .nth(1)
                        .map(|socket| socket.trim_start_matches("unix://").to_owned());
                    if let Some(socket) = socket.filter(|s| s.starts_with(SHIM_SOCKETS)) {
                        let _ = std::fs::remove_file(socket);
                    }
                }
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn skip_without_containerd() -> bool {
    if !containerd_installed() {
        eprintln!("skipping: containerd is not installed (Debian package `containerd`)");
        return true;
    }
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")),
        "this test starts containerd, which needs root"
    );
    false
}

#[test]
fn ctr_run_prints_the_guests_output_and_returns_its_exit_code() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();

    let hello = containerd.import_image(
        "shimtest/hello:v1",
        "FROM scratch\nCOPY hello.wasm /app/hello.wasm\nENV GREETING=hi\nENTRYPOINT [\"/app/hello.wasm\"]\n",
    );
    // Without arguments the image's ENTRYPOINT runs...
    let run = containerd.ctr_ok(&containerd.run_args(&hello, "hello-0", &fifo_dir));
    assert!(run.stdout.contains("env GREETING=hi"), "{run:?}");
    assert!(!run.stdout.contains("arg[1]"), "{run:?}");
    // ...and ctr's arguments replace the whole command line, program first.
    let mut args = containerd.run_args(&hello, "hello-1", &fifo_dir);
    args.extend(["/app/hello.wasm", "one", "two"]);
    let run = containerd.ctr_ok(&args);
    assert!(run.stdout.contains("arg[1]=one"), "{run:?}");
    assert!(run.stdout.contains("arg[2]=two"), "{run:?}");
    assert!(run.stdout.contains("env GREETING=hi"), "{run:?}");

    let exitcode = containerd.import_image(
        "shimtest/exitcode:v1",
        "FROM scratch\nCOPY exitcode.wasm /exitcode.wasm\nENTRYPOINT [\"/exitcode.wasm\"]\n",
    );
    let mut args = containerd.run_args(&exitcode, "exitcode-1", &fifo_dir);
    args.extend(["/exitcode.wasm", "7"]);
    let run = containerd.ctr(&args, Duration::from_secs(60));
    assert_eq!(run.code, Some(7), "{run:?}\n{}", containerd.log());

    // The shims share the node's compile cache (here under the temp dir).
    let compiled = containerd.dir.path().join("berth/cache/compiled");
    let entries = std::fs::read_dir(&compiled)
        .map(|dir| dir.count())
        .unwrap_or_default();
    assert!(
        entries > 0,
        "nothing in the compile cache {}",
        compiled.display()
    );

    // Nothing is left behind: --rm deleted the containers and tasks.
    let tasks = containerd.ctr_ok(&["tasks", "ls", "-q"]).stdout;
    assert!(tasks.trim().is_empty(), "tasks left: {tasks}");
}

#[test]
fn ctr_task_metrics_and_kill_with_term_and_with_kill_on_a_busy_guest() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();
    let busy = containerd.import_image(
        "shimtest/busy:v1",
        "FROM scratch\nCOPY busy.wasm /busy.wasm\nENTRYPOINT [\"/busy.wasm\"]\n",
    );
    for (signal, code) in [("TERM", 143), ("KILL", 137)] {
        let id = format!("busy-{}", signal.to_lowercase());
        let mut args = containerd.run_args(&busy, &id, &fifo_dir);
        args.splice(2..2, ["--memory-limit", "67108864"]);
        let run = containerd.ctr_command(&args).spawn().expect("ctr run");
        // Kill only once the task runs; bounded in count and time.
        running_pid(&containerd, &id);
        let metrics = containerd.ctr_ok(&["tasks", "metrics", &id]).stdout;
        let metric = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in ctr task metrics:\n{metrics}"))
        };
        assert!(metric("memory.usage_in_bytes") > 0, "{metrics}");
        assert_eq!(metric("memory.limit_in_bytes"), 64 << 20, "{metrics}");
        assert!(metric("cpuacct.usage") > 0, "{metrics}");
        let exec = containerd.ctr(
            &["tasks", "exec", "--exec-id", "second", &id, "/busy.wasm"],
            Duration::from_secs(30),
        );
        assert_ne!(exec.code, Some(0), "{exec:?}");
        assert!(exec.stderr.contains("not supported by berth"), "{exec:?}");
        containerd.ctr_ok(&["tasks", "kill", "--signal", signal, &id]);
        let run = wait_bounded(run, Duration::from_secs(30), &format!("ctr run {id}"));
        assert_eq!(run.code, Some(code), "{signal}: {run:?}");
    }
}

#[test]
fn a_memory_limit_ends_a_bomb_with_137_and_the_task_events_reach_containerd() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();
    let bomb = containerd.import_image(
        "shimtest/hog:v1",
        "FROM scratch\nCOPY hog.wasm /hog.wasm\nENTRYPOINT [\"/hog.wasm\"]\n",
    );
    let mut events = containerd
        .ctr_command(&["events"])
        .spawn()
        .expect("ctr events");
    let stdout = events.stdout.take().expect("events stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // `ctr events` subscribes in the background: make events of our own
    // (namespaces) until it shows one, so that none of the run is missed.
    let mut subscribed = false;
    for attempt in 0..100 {
        containerd.ctr_ok(&["namespaces", "create", &format!("sentinel-{attempt}")]);
        if lines
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|line| line.contains("/namespaces/create"))
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "ctr events showed no event within 100 attempts");
    let mut args = containerd.run_args(&bomb, "bomb-1", &fifo_dir);
    args.splice(2..2, ["--memory-limit", "16777216"]);
    let run = containerd.ctr(&args, Duration::from_secs(60));
    assert_eq!(run.code, Some(137), "{run:?}\n{}", containerd.log());

    // The delete event is the last one: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|line: &String| line.contains("/tasks/delete"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let seen = seen.join("\n");
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(
            seen.lines()
                .any(|line| line.contains(topic) && line.contains("bomb-1")),
            "no {topic} event for bomb-1 in:\n{seen}"
        );
    }
}

/// The PID column of `ctr tasks ls` for task `id`, once it is RUNNING.
fn running_pid(containerd: &Containerd, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = containerd.ctr_ok(&["tasks", "ls"]).stdout;
        let row = tasks.lines().find_map(|line| {
            let columns: Vec<_> = line.split_whitespace().collect();
            (columns.first() == Some(&id) && columns.get(2) == Some(&"RUNNING"))
                .then(|| columns[1].to_owned())
        });
        if let Some(pid) = row {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never ran: {tasks}\n{}",
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_shim_per_pod_a_placeholder_pause_container_and_a_bomb_that_ends_alone() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();
    let pause = containerd.import_image(
        "shimtest/pause:v1",
        "FROM scratch\nCOPY pause /pause\nCOPY hello.wasm /hello.wasm\n",
    );
    let busy = containerd.import_image(
        "shimtest/busy:v1",
        "FROM scratch\nCOPY busy.wasm /busy.wasm\nENTRYPOINT [\"/busy.wasm\"]\n",
    );
    let role = |kind: &str| format!("io.kubernetes.cri.container-type={kind}");
    let pod = "io.kubernetes.cri.sandbox-id=pod-1";
    // `flags` go before the image: `--detach`, or `--rm` and a limit.
    let in_pod = |flags: &[&str], image: &str, id: &str, kind: &str, extra: &[&str]| {
        let mut args = vec!["run".to_owned()];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        args.extend([
            "--snapshotter".to_owned(),
            "native".to_owned(),
            "--platform".to_owned(),
            "wasip1/wasm".to_owned(),
            "--fifo-dir".to_owned(),
            fifo_dir.clone(),
            "--runtime".to_owned(),
            RUNTIME.to_owned(),
            "--annotation".to_owned(),
            role(kind),
            "--annotation".to_owned(),
            pod.to_owned(),
            image.to_owned(),
            id.to_owned(),
        ]);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        containerd.ctr(&args, Duration::from_secs(60))
    };
    let detached = |image: &str, id: &str, kind: &str, extra: &[&str]| {
        in_pod(&["--detach"], image, id, kind, extra)
    };

    let sandbox = detached(&pause, "pod-1", "sandbox", &["/pause"]);
    assert_eq!(sandbox.code, Some(0), "{sandbox:?}\n{}", containerd.log());
    let shim = running_pid(&containerd, "pod-1");
    let work = detached(&busy, "pod-1-busy", "container", &[]);
    assert_eq!(work.code, Some(0), "{work:?}\n{}", containerd.log());
    assert_eq!(
        running_pid(&containerd, "pod-1-busy"),
        shim,
        "one shim per pod"
    );

    // A hostile neighbour (a memory bomb) ends alone: the pod's shim and
    // its other container keep running, and a new container still runs.
    let hog = containerd.import_image(
        "shimtest/hog:v1",
        "FROM scratch\nCOPY hog.wasm /hog.wasm\nENTRYPOINT [\"/hog.wasm\"]\n",
    );
    let bomb = in_pod(
        &["--rm", "--memory-limit", "16777216"],
        &hog,
        "pod-1-hog",
        "container",
        &[],
    );
    assert_eq!(bomb.code, Some(137), "{bomb:?}\n{}", containerd.log());
    assert_eq!(running_pid(&containerd, "pod-1-busy"), shim);
    let hello = containerd.import_image(
        "shimtest/hello:v1",
        "FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
    );
    let greeting = in_pod(
        &["--rm"],
        &hello,
        "pod-1-hello",
        "container",
        &["/hello.wasm", "after"],
    );
    assert_eq!(greeting.code, Some(0), "{greeting:?}\n{}", containerd.log());
    assert!(greeting.stdout.contains("arg[1]=after"), "{greeting:?}");

    // A native program in a workload's role is refused, naming runc.
    let native = detached(&pause, "pod-1-native", "container", &["/pause"]);
    assert_ne!(native.code, Some(0), "{native:?}");
    assert!(
        native.stderr.contains("WebAssembly only") && native.stderr.contains("runc"),
        "{native:?}"
    );
    let _ = containerd.ctr(
        &["containers", "delete", "pod-1-native"],
        Duration::from_secs(30),
    );

    for id in ["pod-1-busy", "pod-1"] {
        containerd.ctr_ok(&["tasks", "kill", "--signal", "KILL", id]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd
            .ctr_ok(&["tasks", "ls"])
            .stdout
            .lines()
            .any(|line| line.starts_with(id) && line.contains("STOPPED"))
        {
            assert!(Instant::now() < deadline, "{id} did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd.ctr_ok(&["tasks", "delete", id]);
        containerd.ctr_ok(&["containers", "delete", id]);
    }
    // With its last task deleted, the pod's shim exits.
    let proc = Path::new("/proc").join(&shim);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc.exists() {
        assert!(
            Instant::now() < deadline,
            "the shim {shim} outlived its pod"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `GET /` to `addr`; the response, if it answered.
fn get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn a_wasi_http_component_serves_on_berth_listen_and_term_drains_it() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();
    let image = containerd.import_image(
        "shimtest/http:v1",
        "FROM scratch\nCOPY http-hello.wasm /http.wasm\nENTRYPOINT [\"/http.wasm\"]\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let listen = format!("BERTH_LISTEN={addr}");
    let mut args = containerd.run_args(&image, "http-1", &fifo_dir);
    for arg in &mut args {
        if *arg == "wasip1/wasm" {
            *arg = "wasip2/wasm";
        }
    }
    args.splice(2..2, ["--env", listen.as_str()]);
    let run = containerd.ctr_command(&args).spawn().expect("ctr run");
    running_pid(&containerd, "http-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        if let Some(response) = get(&addr) {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered on {addr}\n{}",
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Hello from berth!"), "{response}");
    containerd.ctr_ok(&["tasks", "kill", "--signal", "TERM", "http-1"]);
    let run = wait_bounded(run, Duration::from_secs(30), "ctr run http-1");
    // A server stops gracefully: it drains and exits 0.
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("request GET /"), "{run:?}");
}

/// Sends task `id`'s shim the Update containerd forwards for `resources`
/// (the OCI LinuxResources, as JSON under containerd's type name) over the
/// shim's own socket: Debian's ctr 1.6 has no `tasks update` command.
fn update_task(
    containerd: &Containerd,
    id: &str,
    resources: serde_json::Value,
) -> Result<(), String> {
    use containerd_shim::protos::protobuf::MessageField;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use containerd_shim::protos::shim_async::TaskClient;
    use containerd_shim::protos::ttrpc::r#async::Client;
    let address_file = containerd
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join(id)
        .join("address");
    let address = std::fs::read_to_string(&address_file)
        .unwrap_or_else(|error| panic!("{}: {error}", address_file.display()));
    let request = containerd_shim::protos::api::UpdateTaskRequest {
        id: id.to_owned(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".to_owned(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        let client = Client::connect(address.trim())
            .await
            .map_err(|error| format!("cannot connect to the shim at {address}: {error}"))?;
        let context = containerd_shim::protos::ttrpc::context::with_timeout(10_000_000_000);
        TaskClient::new(client)
            .update(context, &request)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    })
}

/// The number on the line of `ctr tasks metrics ID` that starts with `name`.
fn metric(containerd: &Containerd, id: &str, name: &str) -> u64 {
    let metrics = containerd.ctr_ok(&["tasks", "metrics", id]).stdout;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in ctr tasks metrics:\n{metrics}"))
}

/// The time task `id` was throttled, from `ctr tasks metrics --format
/// json` (its table leaves it out; a zero is left out of the JSON).
fn throttled_nanos(containerd: &Containerd, id: &str) -> u64 {
    let json = containerd
        .ctr_ok(&["tasks", "metrics", "--format", "json", id])
        .stdout;
    let key = "\"throttled_time\":";
    json.find(key)
        .and_then(|at| {
            json[at + key.len()..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn an_update_changes_a_running_tasks_memory_cap_and_cpu_quota() {
    if skip_without_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let fifos = tempfile::tempdir().expect("fifo dir");
    let fifo_dir = fifos.path().display().to_string();
    let grow = containerd.import_image(
        "shimtest/grow:v1",
        "FROM scratch\nCOPY grow.wasm /grow.wasm\nENTRYPOINT [\"/grow.wasm\"]\n",
    );
    // Each run starts with a 2 MiB cap and grows to 1 MiB; `cap` is set
    // while it waits on stdin, then it reads `bytes` (1 MiB more each).
    let run = |id: &str, cap: Option<i64>, bytes: &str| {
        let mut args = containerd.run_args(&grow, id, &fifo_dir);
        args.splice(2..2, ["--memory-limit", "2097152"]);
        let mut run = containerd.ctr_command(&args);
        let mut run = run.stdin(Stdio::piped()).spawn().expect("ctr run");
        running_pid(&containerd, id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&containerd, id, "memory.usage_in_bytes") < 1 << 20 {
            assert!(Instant::now() < deadline, "{id} never grew to 1 MiB");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(cap) = cap {
            update_task(
                &containerd,
                id,
                serde_json::json!({"memory": {"limit": cap}}),
            )
            .expect("update");
            let limit = metric(&containerd, id, "memory.limit_in_bytes");
            assert_eq!(limit, u64::try_from(cap).unwrap_or(u64::MAX), "{id}");
        }
        {
            use std::io::Write;
            let mut stdin = run.stdin.take().expect("stdin");
            stdin.write_all(bytes.as_bytes()).expect("write stdin");
        }
        wait_bounded(run, Duration::from_secs(30), &format!("ctr run {id}"))
    };
    // Two more MiB do not fit the first cap...
    let capped = run("grow-capped", None, "ab");
    assert_eq!(capped.code, Some(137), "{capped:?}");
    // ...unless it is raised while the task runs...
    let raised = run("grow-raised", Some(8 << 20), "ab");
    assert_eq!(raised.code, Some(0), "{raised:?}\n{}", containerd.log());
    // ...and one more does not fit once it is lowered below what is used.
    let lowered = run("grow-lowered", Some(1 << 20), "a");
    assert_eq!(lowered.code, Some(137), "{lowered:?}");

    // A CPU quota set on a busy task throttles it.
    let busy = containerd.import_image(
        "shimtest/busy:v1",
        "FROM scratch\nCOPY busy.wasm /busy.wasm\nENTRYPOINT [\"/busy.wasm\"]\n",
    );
    let args = containerd.run_args(&busy, "busy-quota", &fifo_dir);
    let run = containerd.ctr_command(&args).spawn().expect("ctr run");
    running_pid(&containerd, "busy-quota");
    assert_eq!(throttled_nanos(&containerd, "busy-quota"), 0);
    update_task(
        &containerd,
        "busy-quota",
        serde_json::json!({"cpu": {"quota": 10000, "period": 100000}}),
    )
    .expect("update");
    let deadline = Instant::now() + Duration::from_secs(30);
    while throttled_nanos(&containerd, "busy-quota") == 0 {
        assert!(Instant::now() < deadline, "never throttled");
        std::thread::sleep(Duration::from_millis(50));
    }
    // What cannot be applied is refused, naming it.
    let error = update_task(
        &containerd,
        "busy-quota",
        serde_json::json!({"memory": {"limit": "lots"}}),
    )
    .expect_err("not a limit");
    assert!(error.contains("cannot read the resources"), "{error}");
    containerd.ctr_ok(&["tasks", "kill", "--signal", "KILL", "busy-quota"]);
    let run = wait_bounded(run, Duration::from_secs(30), "ctr run busy-quota");
    assert_eq!(run.code, Some(137), "{run:?}");
}
