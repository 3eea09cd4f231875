//! Compiling under limits: a deadline and a memory ceiling for Cranelift.
//!
//! Compile time and memory grow faster than the size of the input (a few
//! kilobytes of nested loops can take seconds and hundreds of megabytes),
//! and a compiler running in the caller's process cannot be stopped. So a
//! front door can have programs compiled in a child process instead
//! ([`CompileIsolation::Child`]): its own executable, started with the
//! arguments it chose, whose entry point calls [`child_main`]. The child
//! caps its own data segment ([`CompileLimits::memory_bytes`], unix only)
//! and is killed at [`CompileLimits::deadline`]; it returns the serialized
//! code, which the parent loads (checking wasmtime's header and engine
//! compatibility) and stores in the compile cache only when it succeeded.
//! [`CompileIsolation::InProcess`] compiles in the caller, without limits
//! (tests and embedders that trust their inputs).
//!
//! The protocol between parent and child is private to this module: the
//! child reads a header and the WebAssembly binary on stdin and writes the
//! compiled artifact on stdout.

// Without the compiler no child is ever started; the types stay so that
// front doors configure both builds alike.
#![cfg_attr(not(feature = "compiler"), allow(dead_code))]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::RuntimeError;
use crate::program::WasmKind;
use crate::quantity::format_bytes;
use crate::sizing::Reservation;

/// How long and how much memory compiling one program may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time after which the compiler is killed.
    pub deadline: Duration,
    /// Ceiling of the compiler process's data segment (heap and private
    /// mappings), in bytes. Enforced on unix only (`RLIMIT_DATA`);
    /// elsewhere only the deadline applies.
    pub memory_bytes: u64,
}

impl CompileLimits {
    /// The defaults for compiling outside a run (`build`, `pull`, `load`),
    /// and for a run without a timeout: 180 s and 2 GiB. The largest
    /// example, a 13 MB ComponentizeJS component, takes about 12 s in a
    /// release build (50 s in a debug build on a busy 2-core machine) and
    /// 390 MB.
    pub const DEFAULT: CompileLimits = CompileLimits {
        deadline: Duration::from_secs(180),
        memory_bytes: 2 << 30,
    };
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits::DEFAULT
    }
}

/// A child process that compiles: `program` started with `args`, which
/// must call [`child_main`] and exit with the code it returns.
#[derive(Debug, Clone)]
pub struct ChildCompiler {
    /// The executable (usually the front door's own binary).
    pub program: PathBuf,
    /// Arguments that select its compile entry point (e.g. a hidden
    /// subcommand).
    pub args: Vec<OsString>,
    /// The limits the child runs under.
    pub limits: CompileLimits,
}

/// Where programs are compiled.
#[derive(Debug, Clone, Default)]
pub enum CompileIsolation {
    /// In the calling process, without limits.
    #[default]
    InProcess,
    /// In a child process, under limits.
    Child(ChildCompiler),
}

const REQUEST_MAGIC: &[u8; 8] = b"BERTHCC2";
/// The request header: magic, kind, memory ceiling, and the engine's
/// memory reservation and guard (so the child compiles for the same
/// engine settings as the parent's).
const HEADER_LEN: usize = REQUEST_MAGIC.len() + 1 + 3 * 8;
/// Child exit code: the input is not valid WebAssembly (reason on stderr).
const EXIT_INVALID: i32 = 3;
/// Child exit code: the request was malformed or the engine failed.
const EXIT_FAILED: i32 = 4;
/// How much of the child's stderr is kept for messages.
const STDERR_KEPT: u64 = 16 << 10;

/// Why a child compile did not produce code.
#[derive(Debug)]
pub(crate) enum ChildFailure {
    /// The input does not validate; wasmtime's reason.
    Invalid(String),
    /// A limit stopped the compiler.
    Limit(RuntimeError),
    /// Anything else (cannot spawn, crashed).
    Failed(RuntimeError),
}

/// Compiles `binary` in a child process under `child.limits` and returns
/// the serialized code, compiled for an engine with `reservation`. The
/// caller must still load it with its engine.
pub(crate) fn compile_in_child(
    child: &ChildCompiler,
    reservation: Option<Reservation>,
    binary: &[u8],
    kind: WasmKind,
    origin: &str,
) -> Result<Vec<u8>, ChildFailure> {
    let limits = child.limits;
    let failed = |reason: String| {
        ChildFailure::Failed(RuntimeError::Compiler {
            origin: origin.to_owned(),
            reason,
        })
    };
    let started = Instant::now();
    let mut process = Command::new(&child.program)
        .args(&child.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            failed(format!(
                "cannot start the compiler process {}: {error}",
                child.program.display()
            ))
        })?;
    let mut request = Vec::with_capacity(HEADER_LEN);
    request.extend_from_slice(REQUEST_MAGIC);
    request.push(match kind {
        WasmKind::Module => 0,
        WasmKind::Component => 1,
    });
    request.extend_from_slice(&limits.memory_bytes.to_le_bytes());
    // Zero for wasmtime's defaults: no real reservation is empty.
    let (memory, guard) = reservation.map_or((0, 0), |r| (r.memory, r.guard));
    request.extend_from_slice(&memory.to_le_bytes());
    request.extend_from_slice(&guard.to_le_bytes());
    // Written from a thread: a child that dies (or blocks) before reading
    // everything must not hang the parent past the deadline.
    let stdin = process.stdin.take();
    let payload = binary.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that exits early closes the pipe; its exit status
            // says why, so the write error itself is not interesting.
            let _ = stdin
                .write_all(&request)
                .and_then(|()| stdin.write_all(&payload));
        }
    });
    let stdout = process.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut output);
        }
        output
    });
    let stderr = process.stderr.take();
    let error_reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(STDERR_KEPT).read_to_end(&mut output);
        }
        String::from_utf8_lossy(&output).trim().to_owned()
    });
    // Polling rather than a blocking wait keeps the child owned here, so
    // the kill below can never reach a reused process ID.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match process.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= limits.deadline => {
                let _ = process.kill();
                let _ = process.wait();
                break None;
            }
            Ok(None) => {
                std::thread::sleep(pause.min(limits.deadline.saturating_sub(started.elapsed())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(error) => {
                let _ = process.kill();
                let _ = process.wait();
                return Err(failed(format!(
                    "cannot wait for the compiler process: {error}"
                )));
            }
        }
    };
    let _ = writer.join();
    let output = reader.join().unwrap_or_default();
    let stderr = error_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(ChildFailure::Limit(RuntimeError::CompileLimit {
            origin: origin.to_owned(),
            limit: format!(
                "compile time limit of {}",
                crate::handle::humanize(limits.deadline)
            ),
        }));
    };
    // Out of memory shows as an abort ("memory allocation of N bytes
    // failed") or, where wasmtime itself sees the failed mapping, as an
    // error it reports.
    let out_of_memory = [
        "memory allocation",
        "out of memory",
        "Cannot allocate memory",
    ]
    .iter()
    .any(|sign| stderr.contains(sign));
    match status.code() {
        Some(0) => Ok(output),
        _ if out_of_memory => Err(ChildFailure::Limit(RuntimeError::CompileLimit {
            origin: origin.to_owned(),
            limit: format!(
                "compile memory limit of {}",
                format_bytes(limits.memory_bytes)
            ),
        })),
        Some(EXIT_INVALID) => Err(ChildFailure::Invalid(stderr)),
        _ => Err(failed(format!(
            "the compiler process failed ({status}){}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        ))),
    }
}

/// The compile child's entry point: reads a request on stdin, compiles it
/// with berth's engine configuration and writes the serialized code on
/// stdout. Returns the process exit code. A front door's hidden subcommand
/// calls this and exits with the result; nothing else should.
pub fn child_main() -> i32 {
    let mut header = [0u8; HEADER_LEN];
    let mut stdin = std::io::stdin().lock();
    if stdin.read_exact(&mut header).is_err() || &header[..REQUEST_MAGIC.len()] != REQUEST_MAGIC {
        eprintln!("not a berth compile request: this entry point is started by berth itself");
        return EXIT_FAILED;
    }
    let kind = header[REQUEST_MAGIC.len()];
    let field = |index: usize| {
        let start = REQUEST_MAGIC.len() + 1 + index * 8;
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[start..start + 8]);
        u64::from_le_bytes(bytes)
    };
    let memory_bytes = field(0);
    let reservation = match field(1) {
        0 => None,
        memory => Some(Reservation {
            memory,
            guard: field(2),
        }),
    };
    // The ceiling is set before reading the input, so everything the
    // compiler does from here on counts against it.
    if let Err(error) = limit_data_segment(memory_bytes) {
        eprintln!("cannot set the compile memory limit: {error}");
        return EXIT_FAILED;
    }
    let mut binary = Vec::new();
    if let Err(error) = stdin.read_to_end(&mut binary) {
        eprintln!("cannot read the program to compile: {error}");
        return EXIT_FAILED;
    }
    compile_request(kind, reservation, &binary)
}

/// Compiles the request read by [`child_main`] and writes the code on stdout.
#[cfg(feature = "compiler")]
fn compile_request(kind: u8, reservation: Option<Reservation>, binary: &[u8]) -> i32 {
    let engine = match wasmtime::Engine::new(&crate::engine::config_for(reservation)) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("cannot create the WebAssembly engine: {error:#}");
            return EXIT_FAILED;
        }
    };
    let compiled = match kind {
        0 => engine.precompile_module(binary),
        1 => engine.precompile_component(binary),
        other => {
            eprintln!("unknown program kind {other} in the compile request");
            return EXIT_FAILED;
        }
    };
    match compiled {
        Ok(code) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&code).and_then(|()| stdout.flush()) {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("cannot hand back the compiled code: {error}");
                    EXIT_FAILED
                }
            }
        }
        Err(error) => {
            eprintln!("{error:#}");
            EXIT_INVALID
        }
    }
}

/// A build without the compiler cannot serve compile requests.
#[cfg(not(feature = "compiler"))]
fn compile_request(_kind: u8, _reservation: Option<Reservation>, _binary: &[u8]) -> i32 {
    eprintln!("this build of berth has no compiler");
    EXIT_FAILED
}

/// Caps this process's data segment (heap and private writable mappings).
#[cfg(unix)]
fn limit_data_segment(bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    if bytes == 0 {
        return Ok(());
    }
    let current = getrlimit(Resource::Data);
    // Never raise a ceiling someone else set.
    let ceiling = match current.maximum {
        Some(maximum) => bytes.min(maximum),
        None => bytes,
    };
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(ceiling),
            maximum: current.maximum,
        },
    )
    .map_err(std::io::Error::from)
}

/// No data-segment limit on this platform: only the deadline applies.
#[cfg(not(unix))]
fn limit_data_segment(_bytes: u64) -> std::io::Result<()> {
    Ok(())
}
