//! Helpers shared by the CLI integration tests: locating the `berth`
//! binary and the examples, running berth with a private `BERTH_HOME` and a
//! bounded wait, collecting its output, free ports, and long-running
//! servers that are killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The berth binary under test.
pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// A prebuilt example, e.g. `example("wasm/hello.wasm")`.
pub fn example(relative: &str) -> PathBuf {
    repo_root().join("examples").join(relative)
}

/// A berth invocation with its own data directory.
pub struct Berth {
    pub home: tempfile::TempDir,
}

/// What a finished berth process did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Berth {
    pub fn new() -> Self {
        Berth {
            home: tempfile::tempdir().expect("temp BERTH_HOME"),
        }
    }

    /// A command for `berth ARGS` with this home and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(berth_bin());
        command
            .args(args)
            .env("BERTH_HOME", self.home.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `berth ARGS` with empty stdin, killing it after `limit`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.command(args), None, Duration::from_secs(60))
    }

    /// Runs a prepared command, feeding `stdin` if given, with a time limit.
    pub fn run_with(&self, mut command: Command, stdin: Option<&[u8]>, limit: Duration) -> Run {
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("spawn berth");
        if let Some(bytes) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(bytes).expect("write stdin");
        }
        let mut stdout = child.stdout.take().expect("stdout pipe");
        let mut stderr = child.stderr.take().expect("stderr pipe");
        let out_reader = std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stdout.read_to_end(&mut buffer);
            buffer
        });
        let err_reader = std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stderr.read_to_end(&mut buffer);
            buffer
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("berth {command:?} did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = started.elapsed();
        let stdout = out_reader.join().expect("stdout reader");
        let stderr = err_reader.join().expect("stderr reader");
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
        }
    }
}

impl Run {
    /// Asserts berth's error for a published `port` held by this process:
    /// the port is named and, on Linux, so is the holder.
    pub fn expect_port_in_use(&self, port: u16) -> &Self {
        self.expect_berth_error(&format!("port {port} is already in use"));
        #[cfg(target_os = "linux")]
        assert!(
            self.stderr
                .contains(&format!("(pid {})", std::process::id())),
            "the holder (this test process) is not named: {}",
            self.stderr
        );
        self
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts berth's own error contract: exit 125, one line on stderr
    /// starting with "berth: ", nothing on stdout.
    pub fn expect_berth_error(&self, mentions: &str) -> &Self {
        self.expect_code(125);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(lines[0].starts_with("berth: "), "{}", self.stderr);
        assert!(
            lines[0].contains(mentions),
            "stderr should mention {mentions:?}:\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        self
    }
}

/// A port on 127.0.0.1 that this process listens on while the listener
/// lives: for port-in-use errors.
pub fn held_port() -> (TcpListener, u16) {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    (holder, port)
}

/// Every file and directory below `root` (not `root` itself), without
/// following symlinks; empty if `root` does not exist.
pub fn entries_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, and that
/// no other test of this binary was given: the kernel may hand a port it
/// just released to the next `bind(0)`, and two tests running in parallel
/// must never start servers on one port (the second one's readiness probe
/// would reach the first one's server).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("free port");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port that was not given out already in 100 tries");
}

/// How long a served app may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A long-running berth process (a server), killed on drop; its stdout
/// and stderr lines are collected in one log.
pub struct Served {
    pub child: Child,
    /// The host port it serves on (0 when not waited for).
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Spawns `command` (which serves on `port`) and waits, bounded, until
    /// the port accepts connections.
    pub fn spawn(command: Command, port: u16) -> Served {
        Served::spawn_within(command, port, START_LIMIT)
    }

    /// [`Served::spawn`] with a longer bound, for components that take
    /// long to compile on a cold cache (an embedded interpreter).
    pub fn spawn_within(command: Command, port: u16, limit: Duration) -> Served {
        let mut served = Served::launch(command, port);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            served.wait_step(started, limit, "the server did not start");
        }
        served
    }

    /// Spawns `command` and waits, bounded, until its log contains `needle`.
    pub fn spawn_until(command: Command, needle: &str) -> Served {
        let mut served = Served::launch(command, 0);
        let started = Instant::now();
        while !served.log().contains(needle) {
            served.wait_step(started, START_LIMIT, &format!("no {needle:?} in the log"));
        }
        served
    }

    fn launch(mut command: Command, port: u16) -> Served {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn berth");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect_lines(stdout, log.clone());
        collect_lines(stderr, log.clone());
        Served { child, port, log }
    }

    /// One step of a bounded wait: fails after `limit` or when berth exited.
    fn wait_step(&mut self, started: Instant, limit: Duration, what: &str) {
        assert!(started.elapsed() < limit, "{what}: {}", self.log());
        if let Ok(Some(status)) = self.child.try_wait() {
            // Let the readers catch up with the last lines.
            std::thread::sleep(Duration::from_millis(50));
            panic!("berth exited early with {status}: {}", self.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// The log once it contains `needle` (the log is read by other
    /// threads, so it may lag), or as it is after 10 s.
    pub fn log_containing(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) || started.elapsed() > Duration::from_secs(10) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends the lines of `stream` to `log` on a thread of their own.
fn collect_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut log) = log.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}
