//! `berth run`: run a WebAssembly file in a new sandbox with docker's flags
//! and exit codes, in the foreground or (`-d`) as a detached container.
//!
//! A detached container's supervisor runs the same foreground code in a
//! child process (`berth __run ID`, which reads the recorded run request),
//! so limits, serving and exit codes are identical either way; only where
//! stdin, stdout and stderr lead differs.
//!
//! Every berth option comes before FILE|IMAGE; everything after it belongs
//! to the program, unchanged, as with `docker run` and `wasmtime run`
//! (`berth run app.wasm -m 5` passes `-m 5` to the program).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_registry::RegistryError;
use berth_registry::unpack::UnpackLimits;
use berth_runtime::limits::CpuClock;
use berth_runtime::quantity::{parse_cpus, parse_duration, parse_memory};
use berth_runtime::spec::{normalize_guest_path, parse_env, parse_env_file};
use berth_runtime::{
    Entrypoint, Limits, Mount, NetworkPolicy, OutboundRule, Output, PortMapping, SandboxSpec,
    Stdin, program, shared_engine,
};
use clap::Args;

use crate::containers::RestartPolicy;

// Flags of `berth run`.
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

    /// Publish a port: [HOSTIP:]HOSTPORT:CONTAINERPORT (HOSTIP defaults to
    /// 0.0.0.0, as docker). Serves a wasi:http component on HOSTPORT; a
    /// wasi:sockets program listening on CONTAINERPORT is reachable there.
    #[arg(short = 'p', long = "publish", value_name = "[HOSTIP:]HOSTPORT:CONTAINERPORT", value_parser = parse_publish)]
    publish: Vec<PortMapping>,

    /// HTTP: answer 504 and stop the instance when a request takes longer.
    #[arg(long = "request-timeout", value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    request_timeout: Duration,

    /// HTTP: requests handled at once; more wait, then get 503.
    #[arg(long = "max-concurrency", value_name = "N", default_value_t = 1000)]
    max_concurrency: usize,

    /// HTTP: close a connection that has not sent a whole request header
    /// this long after opening (HTTP/1.1: after it waits for a request).
    #[arg(long = "header-timeout", value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    header_timeout: Duration,

    /// HTTP: close a connection with no request in progress for this long.
    #[arg(long = "idle-timeout", value_name = "DURATION", value_parser = parse_duration, default_value = "75s")]
    idle_timeout: Duration,

    /// HTTP: connections open at once; more get 503 and are closed
    /// [default: 10000, or half the open-files limit if lower].
    #[arg(long = "max-connections", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Allow outgoing HTTP requests and connections to HOST[:PORT];
    /// repeatable (default: none).
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]", value_parser = parse_outbound)]
    allow_outbound: Vec<OutboundRule>,

    /// HTTP: how long a stop waits for in-flight requests.
    #[arg(long = "stop-timeout", value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    stop_timeout: Duration,

    /// Keep stdin attached (it always is for a foreground run; with -d the
    /// program's stdin stays open instead of reading end of file).
    #[arg(short = 'i', long = "interactive")]
    pub(crate) interactive: bool,

    /// Run in the background as a container and print its ID.
    #[arg(short = 'd', long = "detach")]
    pub(crate) detach: bool,

    /// Name the container (with -d; default berth-SHORTID).
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Remove the container when it exits (with -d).
    #[arg(long = "rm")]
    pub(crate) auto_remove: bool,

    /// Restart policy (with -d): no, on-failure[:N] or always.
    #[arg(long = "restart", value_name = "POLICY", default_value = "no", value_parser = RestartPolicy::parse)]
    pub(crate) restart: RestartPolicy,

    /// Created once the program is loaded (and, when serving, the port is
    /// bound): how a container's supervisor learns that it started.
    #[arg(skip)]
    started_file: Option<PathBuf>,

    /// When to pull IMAGE: missing (default), always or never.
    #[arg(long = "pull", value_name = "POLICY", default_value = "missing")]
    pull: PullPolicy,

    /// Override the image's ENTRYPOINT (the wasm path inside the image).
    #[arg(long = "entrypoint", value_name = "PATH")]
    entrypoint: Option<String>,

    /// The program (a .wasm module or component, .wat text, or an image
    /// name), then its arguments. FILE#NAME calls the export NAME of a core
    /// module with ARGS as its parameters. Everything after FILE|IMAGE goes
    /// to the program unchanged, even words that look like berth options.
    // One list, so that the parser stops looking for options at FILE|IMAGE.
    #[arg(
        value_names = ["FILE|IMAGE", "ARGS"],
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    program: Vec<String>,
}

fn parse_publish(text: &str) -> Result<PortMapping, String> {
    PortMapping::parse(text).map_err(|error| error.to_string())
}

fn parse_outbound(text: &str) -> Result<OutboundRule, String> {
    OutboundRule::parse(text).map_err(|error| error.to_string())
}

/// When `berth run IMAGE` pulls, as docker's `--pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not in the local store.
    Missing,
    /// Always pull (and fail if the registry cannot be reached).
    Always,
    /// Never pull: use the local store only.
    Never,
}

/// What to run, resolved from the command line and (for images) the
/// image's configuration.
struct Resolved {
    path: PathBuf,
    /// How messages name the program: the file as given, or its path in
    /// the image.
    origin: String,
    entrypoint: Entrypoint,
    program_name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    workdir: Option<String>,
    /// Ports the image EXPOSEs.
    expose: Vec<u16>,
    /// The container's private /tmp; removed when the run ends.
    scratch: Option<tempfile::TempDir>,
}

/// Whether `file` names a file on disk (rather than an image).
fn is_file_target(file: &str) -> bool {
    let (path, _) = split_entrypoint(file);
    path.exists()
        || file.ends_with(".wasm")
        || file.ends_with(".wat")
        || file.starts_with('.')
        || file.starts_with('/')
        || file.contains('\\')
        || file.contains('#')
}

impl RunArgs {
    /// The FILE|IMAGE argument.
    pub(crate) fn file(&self) -> &str {
        self.program.first().map_or("", String::as_str)
    }

    /// The arguments after FILE|IMAGE.
    pub(crate) fn args(&self) -> &[String] {
        self.program.get(1..).unwrap_or_default()
    }

    /// Published ports, as docker's PORTS column shows them.
    pub(crate) fn ports(&self) -> Vec<String> {
        self.publish.iter().map(PortMapping::describe).collect()
    }
}

/// Runs the program and returns the exit code to use.
pub fn run(args: RunArgs) -> Result<u8> {
    if args.detach {
        return crate::commands::container::run_detached(args);
    }
    if args.name.is_some() || args.restart != RestartPolicy::No {
        bail!(
            "--name and --restart apply to containers run in the background: add -d (a foreground run keeps no record)"
        );
    }
    run_foreground(args)
}

/// Runs a container's program in the foreground for its supervisor:
/// `argv` is the recorded run request (the `berth run` arguments after
/// `run`), and `started_file` is created once the program started.
pub(crate) fn run_recorded(argv: &[String], started_file: PathBuf) -> Result<u8> {
    use clap::FromArgMatches;
    let command = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
    let invalid = |error: clap::Error| {
        anyhow::anyhow!(
            "the container's recorded run request is invalid: {}",
            error.kind()
        )
    };
    let matches = command.try_get_matches_from(argv).map_err(invalid)?;
    let mut args = RunArgs::from_arg_matches(&matches).map_err(invalid)?;
    args.started_file = Some(started_file);
    run_foreground(args)
}

/// Creates the started file, if one was asked for.
fn notify_started(args: &RunArgs) -> Result<()> {
    if let Some(path) = &args.started_file {
        crate::home::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(())
}

/// Runs the program in this process, with this process's stdin, stdout
/// and stderr, and returns (or exits with) its exit code.
fn run_foreground(args: RunArgs) -> Result<u8> {
    // --timeout counts from here: compiling is part of the run.
    let started = std::time::Instant::now();
    let resolved = if is_file_target(args.file()) {
        let (path, entrypoint) = split_entrypoint(args.file());
        let program_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| args.file().to_owned());
        Resolved {
            origin: path.display().to_string(),
            path,
            entrypoint,
            program_name,
            args: args.args().to_vec(),
            env: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            expose: Vec::new(),
            scratch: None,
        }
    } else {
        resolve_image(&args)?
    };
    let mut env = resolved.env.clone();
    let mut mounts = resolved.mounts.clone();
    for spec in &args.volume {
        mounts.push(Mount::parse(spec)?);
    }
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
        None => resolved.workdir.clone(),
    };

    // Only a wasi:http component served on a published port gets the
    // pooling engine; reserving the pool costs a few milliseconds of start-up
    // that socket apps and commands do not need.
    let bytes = program::read_file(&resolved.path)?;
    let engine = if !args.publish.is_empty() && berth_runtime::http::exports_http_handler(&bytes) {
        berth_runtime::engine::serving_engine(berth_runtime::engine::PoolSizing {
            concurrent_instances: u32::try_from(args.max_concurrency).unwrap_or(u32::MAX),
            max_memory_bytes: args.memory.unwrap_or(4 << 30),
        })?
    } else {
        shared_engine()?
    };
    // The compile starts a few milliseconds into the run, so its deadline
    // falls just after the run's; the sandbox then gets what is left.
    let cache = crate::home::compile_cache(crate::home::compile_limits(args.timeout)?)?;
    let program = program::load_bytes(engine, &bytes, &resolved.origin, Some(&cache))?;
    if let Some(component) = program.component()
        && berth_runtime::http::is_http_proxy(engine, component)
    {
        return serve(&args, engine, &program, &resolved, env, mounts);
    }
    let spec = SandboxSpec {
        program_name: resolved.program_name.clone(),
        args: resolved.args.clone(),
        env,
        mounts,
        workdir,
        limits: Limits {
            memory_bytes: args.memory,
            cpus: args.cpus,
            timeout: args.timeout,
            started: Some(started),
            // This process runs this one sandbox: its whole CPU time,
            // file work on tokio's blocking threads included, is the
            // sandbox's.
            cpu_clock: CpuClock::Process,
        },
        entrypoint: resolved.entrypoint.clone(),
        stdin: Stdin::Inherit,
        stdout: Output::Inherit,
        stderr: Output::Inherit,
        network: NetworkPolicy {
            publish: args.publish.clone(),
            expose: resolved.expose.clone(),
            outbound: args.allow_outbound.clone(),
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    notify_started(&args)?;
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
    if let Some(scratch) = resolved.scratch
        && let Err(error) = scratch.close()
    {
        tracing::warn!(%error, "cannot remove the container's /tmp");
    }
    std::process::exit(i32::from(code));
}

/// The program an image runs, found in its unpacked root filesystem.
struct ImageProgram {
    config: berth_registry::RunConfig,
    rootfs: PathBuf,
    /// The program's absolute path inside the image.
    guest_program: String,
    /// The program's file on the host.
    path: PathBuf,
    /// Arguments after the program.
    guest_args: Vec<String>,
}

/// Unpacks image `digest` (once, cached) and finds the program its
/// ENTRYPOINT and CMD name (or `entrypoint`, which replaces both), with
/// `args` replacing CMD as docker does. `None` when the image names no
/// program.
fn image_program(
    store: &berth_registry::Store,
    digest: &str,
    manifest: &berth_registry::image::Manifest,
    image: &str,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Option<ImageProgram>> {
    let config = berth_registry::image::run_config_of(store, digest, manifest)?;
    let argv = image_argv(&config, entrypoint, args);
    let Some((program, guest_args)) = argv.split_first() else {
        return Ok(None);
    };
    let guest_program = normalize_guest_path(program).with_context(|| {
        format!("the image's entrypoint {program:?} is not an absolute path inside the image")
    })?;
    let rootfs = berth_registry::unpack::rootfs_of(
        store,
        digest,
        manifest,
        &crate::home::rootfs_cache_dir()?,
        &unpack_limits()?,
    )?;
    let path = rootfs.join(guest_program.trim_start_matches('/'));
    if !path.is_file() {
        bail!("the image's entrypoint {guest_program} does not exist in image {image:?}");
    }
    Ok(Some(ImageProgram {
        config,
        rootfs,
        guest_program,
        path,
        guest_args: guest_args.to_vec(),
    }))
}

/// For `berth run IMAGE` with IMAGE in the local store: the program and
/// arguments it will run (ENTRYPOINT, then ARGS or CMD; `--entrypoint`
/// replacing both), as `berth ps` shows them. `None` for files, images not
/// pulled yet, or anything unreadable.
pub(crate) fn local_image_argv(args: &RunArgs) -> Option<Vec<String>> {
    if is_file_target(args.file()) {
        return None;
    }
    let store = crate::home::open_store().ok()?;
    let (digest, manifest) = store.resolve(args.file()).ok()?;
    let config = berth_registry::image::run_config_of(&store, &digest, &manifest).ok()?;
    Some(image_argv(&config, args.entrypoint.as_deref(), args.args()))
        .filter(|argv| !argv.is_empty())
}

/// What an image runs, as docker decides it: ENTRYPOINT then ARGS, or CMD
/// when there are no ARGS; `--entrypoint` replaces ENTRYPOINT and drops CMD.
fn image_argv(
    config: &berth_registry::RunConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Vec<String> {
    match entrypoint {
        Some(path) => berth_registry::RunConfig {
            entrypoint: vec![path.to_owned()],
            cmd: Vec::new(),
            ..config.clone()
        }
        .argv(args),
        None => config.argv(args),
    }
}

/// How messages name a program inside an image: `/app/x.wasm in IMAGE`.
fn image_origin(guest_program: &str, image: &str) -> String {
    format!("{guest_program} in {image}")
}

/// The unpack limits: the defaults, or the `BERTH_UNPACK_MAX_*`
/// environment variables.
fn unpack_limits() -> Result<UnpackLimits> {
    Ok(UnpackLimits::from_settings(|name| {
        std::env::var(name).ok()
    })?)
}

/// Unpacks a newly pulled or loaded image, which checks every layer against
/// the diff_id its config claims and against the unpack limits. An image
/// refused for its content is removed from the store again, so that nothing
/// runs it; other failures (a full disk, a format berth cannot unpack) are
/// only warned about, as `berth run` reports them again.
pub(crate) fn verify_new_image(image: &str) -> Result<()> {
    let store = crate::home::open_store()?;
    let (digest, manifest) = store.resolve(image)?;
    let unpacked = berth_registry::unpack::rootfs_of(
        &store,
        &digest,
        &manifest,
        &crate::home::rootfs_cache_dir()?,
        &unpack_limits()?,
    );
    match unpacked {
        Ok(_) => Ok(()),
        Err(
            error @ (RegistryError::DiffIdMismatch { .. }
            | RegistryError::UnpackLimit { .. }
            | RegistryError::UnsafeEntry { .. }),
        ) => {
            if let Err(removal) = store.remove(image) {
                tracing::warn!(%removal, image, "cannot remove a refused image");
            }
            Err(anyhow::Error::new(error)
                .context(format!("{image} was removed from the local store")))
        }
        Err(error) => {
            eprintln!("berth: warning: cannot unpack {image}: {error}");
            Ok(())
        }
    }
}

/// Compiles the program of local image `image` into the compile cache, so
/// that its first `berth run` starts without compiling (large components
/// take seconds to compile). Failing only warns: the image is stored either
/// way, and `berth run` reports the same error when it runs it.
pub(crate) fn precompile_image(image: &str) {
    let precompile = || -> Result<()> {
        let store = crate::home::open_store()?;
        let (digest, manifest) = store.resolve(image)?;
        if let Some(found) = image_program(&store, &digest, &manifest, image, None, &[])? {
            let cache = crate::home::compile_cache(crate::home::compile_limits(None)?)?;
            let bytes = program::read_file(&found.path)?;
            let origin = image_origin(&found.guest_program, image);
            program::load_bytes(shared_engine()?, &bytes, &origin, Some(&cache))?;
        }
        Ok(())
    };
    if let Err(error) = precompile() {
        eprintln!("berth: warning: cannot precompile {image}: {error:#}");
    }
}

/// Resolves `berth run IMAGE`: finds or pulls the image, unpacks its
/// layers (once, cached) to mount read-only at `/`, gives the container a
/// private writable `/tmp`, and applies ENV, WORKDIR, ENTRYPOINT and CMD
/// as docker does (command-line flags override them).
fn resolve_image(args: &RunArgs) -> Result<Resolved> {
    let store = crate::home::open_store()?;
    let image = args.file();
    let found = match args.pull {
        PullPolicy::Always => None,
        PullPolicy::Missing | PullPolicy::Never => store.resolve(image).ok(),
    };
    let (digest, manifest) = match found {
        Some(found) => found,
        None if args.pull == PullPolicy::Never => {
            bail!(
                "image {image:?} is not in the local store and --pull never was given; run `berth pull {image}` or `berth images` to see what is there"
            )
        }
        None => {
            let digest =
                crate::commands::image::pull_image(image, false, false).with_context(|| {
                    format!("{image:?} is neither a file nor a local image, and pulling it failed")
                })?;
            store.resolve(&digest)?
        }
    };
    let ImageProgram {
        config,
        rootfs,
        guest_program,
        path,
        guest_args,
    } = image_program(
        &store,
        &digest,
        &manifest,
        image,
        args.entrypoint.as_deref(),
        args.args(),
    )?
    .with_context(|| {
        format!(
            "image {image:?} has no ENTRYPOINT or CMD: give the wasm path with --entrypoint PATH"
        )
    })?;

    let containers = crate::home::containers_dir()?;
    crate::home::create_private_dir_all(&containers)
        .with_context(|| format!("cannot create {}", containers.display()))?;
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("tmp-");
    #[cfg(unix)]
    scratch.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let scratch = scratch
        .tempdir_in(&containers)
        .with_context(|| format!("cannot create a private /tmp in {}", containers.display()))?;
    let mounts = vec![
        Mount {
            host: rootfs,
            guest: "/".into(),
            read_only: true,
        },
        Mount {
            host: scratch.path().to_path_buf(),
            guest: "/tmp".into(),
            read_only: false,
        },
    ];
    let mut expose = Vec::new();
    for spec in &config.exposed_ports {
        expose.extend(NetworkPolicy::parse_exposed(spec)?);
    }
    let mut env = Vec::new();
    for pair in &config.env {
        if let Some((key, value)) = pair.split_once('=') {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(Resolved {
        origin: image_origin(&guest_program, image),
        path,
        entrypoint: Entrypoint::Command,
        program_name: guest_program,
        args: guest_args,
        env,
        mounts,
        workdir: config.workdir.clone(),
        expose,
        scratch: Some(scratch),
    })
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

/// Serves a wasi:http component on the published port until SIGTERM or
/// Ctrl-C, then drains in-flight requests.
fn serve(
    args: &RunArgs,
    engine: &'static berth_runtime::wasmtime::Engine,
    program: &berth_runtime::Program,
    resolved: &Resolved,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
) -> Result<u8> {
    let [publish] = args.publish.as_slice() else {
        if args.publish.is_empty() {
            bail!(
                "{} is a wasi:http component: publish a port to serve it, e.g. -p 8080:8080",
                args.file()
            );
        }
        bail!("a wasi:http component serves one port; give -p once");
    };
    let config = berth_runtime::http::ServeConfig {
        listen: publish.host,
        limits: Limits {
            memory_bytes: args.memory,
            cpus: args.cpus,
            ..Limits::default()
        },
        request_timeout: args.request_timeout,
        max_concurrency: args.max_concurrency,
        env,
        mounts,
        allow_outbound: args.allow_outbound.clone(),
        grace_period: args.stop_timeout,
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections.map_or_else(
            || berth_runtime::http::default_max_connections(open_files_limit()),
            |max| usize::try_from(max).unwrap_or(usize::MAX),
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listening =
            berth_runtime::http::bind(engine, program, &resolved.program_name, config).await?;
        let addr = listening
            .local_addr()
            .context("cannot read the bound address")?;
        notify_started(args)?;
        eprintln!(
            "berth: serving {} on http://{addr} (container port {})",
            resolved.program_name, publish.container_port
        );
        listening.run(shutdown_signal()).await;
        eprintln!("berth: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    if let Some(scratch) = &resolved.scratch {
        let _ = std::fs::remove_dir_all(scratch.path());
    }
    Ok(0)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// This process's soft limit on open files, when the OS tells it.
#[cfg(unix)]
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // rlim_t is u64 on most targets but not all.
    #[allow(clippy::useless_conversion)]
    let current = u64::from(limit.rlim_cur);
    (status == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

#[cfg(not(unix))]
fn open_files_limit() -> Option<u64> {
    None
}
