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

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Containerd, RUNTIME, get, skip_without_containerd, wait_bounded};

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
        .join(containerd.namespace())
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
