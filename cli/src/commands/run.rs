//! `berth run`: run a WebAssembly file in a new sandbox, in the foreground,
//! with docker's flags and exit codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_runtime::quantity::{parse_cpus, parse_duration, parse_memory};
use berth_runtime::spec::{normalize_guest_path, parse_env, parse_env_file};
use berth_runtime::{
    CompileCache, Entrypoint, Limits, Mount, Output, SandboxSpec, Stdin, program, shared_engine,
};
use clap::Args;

/// Flags of `berth run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,

    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,

    /// Mount a host directory: HOST:GUEST, or HOST:GUEST:ro for read-only.
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    volume: Vec<String>,

    /// Working directory inside the sandbox (absolute guest path).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,

    /// Memory limit: linear memories plus tables (64Mi, 0.5Gi, 512M, bytes).
    #[arg(short = 'm', long = "memory", value_name = "SIZE", value_parser = parse_memory)]
    memory: Option<u64>,

    /// CPU quota in cores (0.25 or 250m); a busy guest is throttled, never killed.
    #[arg(long = "cpus", value_name = "CPUS", value_parser = parse_cpus)]
    cpus: Option<f64>,

    /// Kill the guest after this long (500ms, 30s, 5m); exit code 137.
    #[arg(long = "timeout", value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Keep stdin attached (it always is for a foreground run; accepted for
    /// docker compatibility).
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,

    /// The program: a .wasm module or component, or .wat text. FILE#NAME
    /// calls the export NAME of a core module with ARGS as its parameters.
    #[arg(value_name = "FILE")]
    file: String,

    /// Arguments passed to the program.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// Runs the program and returns the exit code to use.
pub fn run(args: RunArgs) -> Result<u8> {
    let _ = args.interactive;
    let (path, entrypoint) = split_entrypoint(&args.file);
    let program_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.file.clone());

    let mounts = args
        .volume
        .iter()
        .map(|spec| Mount::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(parse_env_file(file)?);
    }
    for spec in &args.env {
        env.extend(parse_env(spec)?);
    }
    let workdir = match &args.workdir {
        Some(dir) => Some(normalize_guest_path(dir).with_context(|| {
            format!(
                "invalid workdir {dir:?}: expected an absolute guest path without '..', e.g. /app"
            )
        })?),
        None => None,
    };

    let engine = shared_engine()?;
    let cache = CompileCache::new(crate::home::compile_cache_dir()?);
    let program = program::load_file(engine, &path, Some(&cache))?;

    let spec = SandboxSpec {
        program_name,
        args: args.args,
        env,
        mounts,
        workdir,
        limits: Limits {
            memory_bytes: args.memory,
            cpus: args.cpus,
            timeout: args.timeout,
        },
        entrypoint,
        stdin: Stdin::Inherit,
        stdout: Output::Inherit,
        stderr: Output::Inherit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = runtime.block_on(berth_runtime::run(engine, &program, spec))?;
    for value in &status.returned {
        println!("{value}");
    }
    if let Some(description) = status.describe() {
        eprintln!("berth: {description}");
    }
    tracing::debug!(
        code = status.code,
        throttled_ms = status.throttled.as_millis() as u64,
        "guest finished"
    );
    // Exit codes are 0..=255 on every platform berth supports; WASI exit
    // codes outside that range wrap as they would for a native process.
    let code = (status.code & 0xff) as u8;
    // Leave without dropping the runtime: a worker blocked reading an
    // inherited stdin would otherwise keep the process alive.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code));
}

/// Splits `FILE#NAME` into the file and an export entry point, unless a
/// file with the whole name exists.
fn split_entrypoint(file: &str) -> (PathBuf, Entrypoint) {
    if !Path::new(file).exists()
        && let Some((path, export)) = file.rsplit_once('#')
        && !export.is_empty()
    {
        return (PathBuf::from(path), Entrypoint::Export(export.to_owned()));
    }
    (PathBuf::from(file), Entrypoint::Command)
}
