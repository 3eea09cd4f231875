//! Helpers shared by the CLI integration tests: locating the `berth`
//! binary and the examples, running berth with a private `BERTH_HOME` and a
//! bounded wait, and collecting its output.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
