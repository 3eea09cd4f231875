//! `berth run`: run a WebAssembly file in a new sandbox with docker's flags
//! and exit codes, in the foreground or (`-d`) as a detached container.
//!
//! The flags become a `ContainerSpec`, which `berth_container::resolve`
//! turns into the program and its sandbox. A foreground run and a detached
//! container's supervisor then start it the same way
//! (`berth_container::launch`), so limits, serving and exit codes are
//! identical either way; only where stdin, stdout and stderr lead differs.
//!
//! Every berth option comes before FILE|IMAGE; everything after it belongs
//! to the program, unchanged, as with `docker run` and `wasmtime run`
//! (`berth run app.wasm -m 5` passes `-m 5` to the program).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_container::flags::{
    parse_env, parse_env_file, parse_mount, parse_outbound_rule, parse_port_mapping, parse_workdir,
};
use berth_container::resolve::{self, Resolved};
use berth_container::spec::{HttpSettings, LimitsSpec};
use berth_container::{ContainerSpec, PullPolicy, RestartPolicy, Target};
use berth_container::{LaunchSettings, Launched, Stdio, launch};
use berth_runtime::limits::CpuClock;
use berth_runtime::quantity::{parse_cpus, parse_duration, parse_memory};
use berth_runtime::{
    EngineChoice, ExitReason, ExitStatus, KillMode, OutboundRule, Output, PortMapping, Runtime,
    RuntimeConfig, Stdin, program,
};
use clap::Args;

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
    #[arg(long = "restart", value_name = "POLICY", default_value = "no", value_parser = parse_restart)]
    pub(crate) restart: RestartPolicy,

    /// When to pull IMAGE: missing (default), always or never.
    #[arg(long = "pull", value_name = "POLICY", default_value = "missing", value_parser = parse_pull)]
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
    parse_port_mapping(text).map_err(|error| error.to_string())
}

fn parse_outbound(text: &str) -> Result<OutboundRule, String> {
    parse_outbound_rule(text).map_err(|error| error.to_string())
}

fn parse_restart(text: &str) -> Result<RestartPolicy, String> {
    RestartPolicy::parse(text).map_err(|error| error.to_string())
}

fn parse_pull(text: &str) -> Result<PullPolicy, String> {
    PullPolicy::parse(text).map_err(|error| error.to_string())
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

    /// The container these flags describe. `-e KEY` and bare `KEY` lines
    /// of env files take their values from `lookup` (the CLI passes its own
    /// environment), volumes are checked and resolved, and with `absolute`
    /// a file target's path is made absolute, so that the spec means the
    /// same thing wherever and whenever it runs.
    pub(crate) fn to_spec(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
        absolute: bool,
    ) -> Result<ContainerSpec> {
        if self.max_concurrency == 0 {
            bail!("invalid --max-concurrency 0: expected at least 1");
        }
        let mut target = resolve::target_of(self.file(), self.pull);
        if absolute && let Target::File { path, .. } = &mut target {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
        }
        let mut env = Vec::new();
        for file in &self.env_file {
            env.extend(parse_env_file(file, &lookup)?);
        }
        for spec in &self.env {
            env.extend(parse_env(spec, &lookup)?);
        }
        let mounts = self
            .volume
            .iter()
            .map(|spec| parse_mount(spec))
            .collect::<Result<_, _>>()?;
        Ok(ContainerSpec {
            name: self.name.clone(),
            target,
            entrypoint: self.entrypoint.clone(),
            args: self.args().to_vec(),
            env,
            mounts,
            workdir: self.workdir.as_deref().map(parse_workdir).transpose()?,
            ports: self.publish.clone(),
            outbound: self.allow_outbound.clone(),
            limits: LimitsSpec {
                memory_bytes: self.memory,
                cpus: self.cpus,
                timeout: self.timeout,
            },
            http: HttpSettings {
                request_timeout: self.request_timeout,
                max_concurrency: self.max_concurrency,
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                stop_timeout: self.stop_timeout,
            },
            restart: self.restart,
            interactive: self.interactive,
            auto_remove: self.auto_remove,
        })
    }
}

/// The value of a variable in this process's environment: what `-e KEY`
/// passes on, read once, where the user typed it.
pub(crate) fn host_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
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
    run_foreground(&args.to_spec(host_env, false)?)
}

/// Runs the program in this process, with this process's stdin, stdout
/// and stderr, and returns (or exits with) its exit code.
fn run_foreground(spec: &ContainerSpec) -> Result<u8> {
    // --timeout counts from here: compiling is part of the run.
    let started = std::time::Instant::now();
    let resolved = resolve_spec(spec)?;
    // The compile starts a few milliseconds into the run, so its deadline
    // falls just after the run's; the sandbox then gets what is left.
    let cache = crate::home::compile_cache(crate::home::compile_limits(spec.limits.timeout)?)?;
    let runtime = Runtime::new(RuntimeConfig {
        compile_cache: Some(cache),
    });
    let settings = LaunchSettings {
        started: Some(started),
        // This process runs this one sandbox: its whole CPU time, file
        // work on tokio's blocking threads included, is the sandbox's.
        cpu_clock: CpuClock::Process,
        default_max_connections: berth_runtime::http::default_max_connections(open_files_limit()),
    };
    let stdio = Stdio {
        stdin: Stdin::Inherit,
        stdout: Output::Inherit,
        stderr: Output::Inherit,
    };
    // A server needs worker threads. A command shares this one thread with
    // the signal and timer driver and yields to it every epoch tick;
    // checking the driver at every yield (rather than every 61st) is what
    // lets Ctrl-C and --timeout act within a tick or two of a busy guest.
    let tokio = if spec.ports.is_empty() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .event_interval(1)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let (status, scratch) = tokio.block_on(async {
        let launched = launch(&runtime, spec, resolved, stdio, &settings)
            .await
            .map_err(|error| explain_launch_error(spec, error))?;
        let Launched {
            handle,
            serving,
            scratch,
        } = launched;
        if let Some(serving) = &serving {
            eprintln!(
                "berth: serving {} on http://{} (container port {})",
                serving.program_name, serving.addr, serving.container_port
            );
        }
        let status = tokio::select! {
            status = handle.wait() => status,
            signal = stop_signal() => {
                if serving.is_some() {
                    // Drain the requests in flight; a second signal stops
                    // at once.
                    handle.kill(KillMode::Graceful);
                    tokio::select! {
                        _ = handle.wait() => {}
                        _ = stop_signal() => handle.kill(KillMode::Immediate),
                    }
                    handle.wait().await;
                    eprintln!("berth: stopped");
                    ExitStatus::exited(0)
                } else {
                    // Ctrl-C stops the guest at once, whatever it is doing;
                    // SIGTERM (docker stop) too, as for a native process
                    // without a handler.
                    handle.kill(KillMode::Immediate);
                    ExitStatus { code: signal.exit_code(), ..handle.wait().await }
                }
            }
        };
        Ok::<_, anyhow::Error>((status, scratch))
    })?;
    for value in &status.returned {
        println!("{value}");
    }
    if let Some(description) = status.describe()
        && !matches!(status.reason, ExitReason::Killed { .. })
    {
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
    if let Some(scratch) = scratch
        && let Err(error) = scratch.close()
    {
        tracing::warn!(%error, "cannot remove the container's /tmp");
    }
    std::process::exit(i32::from(code));
}

/// Resolves `spec` against this user's image store (pulling a missing
/// image as its pull policy says).
pub(crate) fn resolve_spec(spec: &ContainerSpec) -> Result<Resolved> {
    Ok(match &spec.target {
        Target::File { path, .. } if !cfg!(feature = "compiler") => bail!(
            "cannot run {}: this berth was built without the compiler, so it runs only images that carry their program precompiled for {} (berth build --precompile {1}); run WebAssembly files with the full berth",
            path.display(),
            berth_runtime::precompiled::host_target()
        ),
        Target::File { .. } => resolve::resolve_file(spec)?,
        Target::Image { .. } => {
            let home = ImageHome::open()?;
            resolve::resolve_image(spec, &home.images(), &mut |image: &str| {
                crate::commands::image::pull_image(image, false, false).map_err(Into::into)
            })?
        }
    })
}

/// What the CLI's resolver reads for images: the local store, the rootfs
/// cache, the scratch directory and the unpack limits, opened once.
struct ImageHome {
    store: berth_registry::Store,
    rootfs_dir: PathBuf,
    scratch_dir: PathBuf,
    unpack_limits: berth_registry::unpack::UnpackLimits,
}

impl ImageHome {
    fn open() -> Result<ImageHome> {
        Ok(ImageHome {
            store: crate::home::open_store()?,
            rootfs_dir: crate::home::rootfs_cache_dir()?,
            scratch_dir: crate::home::containers_dir()?,
            unpack_limits: crate::home::unpack_limits()?,
        })
    }

    fn images(&self) -> resolve::Images<'_> {
        resolve::Images {
            store: &self.store,
            rootfs_dir: &self.rootfs_dir,
            scratch_dir: &self.scratch_dir,
            unpack_limits: &self.unpack_limits,
        }
    }
}

/// For `berth run IMAGE` with IMAGE in the local store: the program and
/// arguments it will run, as `berth ps` shows them.
pub(crate) fn local_image_argv(spec: &ContainerSpec) -> Option<Vec<String>> {
    match spec.target {
        Target::Image { .. } => resolve::local_image_argv(&crate::home::open_store().ok()?, spec),
        Target::File { .. } => None,
    }
}

/// Unpacks a newly pulled or loaded image, which checks every layer against
/// the diff_id its config claims and against the unpack limits. An image
/// refused for its content is removed from the store again, so that nothing
/// runs it; other failures (a full disk, a format berth cannot unpack) are
/// only warned about, as `berth run` reports them again.
pub(crate) fn verify_new_image(image: &str) -> Result<()> {
    let home = ImageHome::open()?;
    if let resolve::Verified::Unchecked(error) = resolve::verify_new_image(&home.images(), image)? {
        eprintln!("berth: warning: cannot unpack {image}: {error}");
    }
    Ok(())
}

/// `error` from launching `spec`, with what to do about a program not
/// precompiled for this machine (a berth without the compiler).
pub(crate) fn explain_launch_error(
    spec: &ContainerSpec,
    error: berth_container::LaunchError,
) -> anyhow::Error {
    use berth_container::LaunchError;
    use berth_runtime::RuntimeError;
    match (&error, &spec.target) {
        (
            LaunchError::Runtime(RuntimeError::NotPrecompiled { target, engine, .. }),
            Target::Image { reference, .. },
        ) => anyhow::anyhow!(
            "image {reference} has no program precompiled for {target} (engine {engine}), and this berth has no compiler; build it with berth build --precompile {target} (or add it: berth image precompile {reference} --target {target})"
        ),
        _ => error.into(),
    }
}

/// Compiles the program of image `image` ahead of time for each of
/// `targets` and attaches the code to the image (the image itself, and its
/// digest, stay as they are). Replaces code attached before for the same
/// target and engine.
#[cfg(feature = "compiler")]
pub(crate) fn attach_precompiled(image: &str, targets: &[String], quiet: bool) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let home = ImageHome::open()?;
    let (digest, _) = home.store.resolve(image)?;
    let Some((path, origin)) = resolve::image_default_program(&home.images(), image)? else {
        bail!("image {image} names no program (no ENTRYPOINT or CMD): nothing to precompile");
    };
    let bytes = program::read_file(&path)?;
    for target in targets {
        let code = berth_runtime::precompiled::precompile(&bytes, &origin, target)?;
        let info = berth_registry::precompiled::PrecompiledInfo {
            target: code.target,
            engine: code.engine,
            source: code.source,
            compatibility_hash: code.compatibility_hash,
        };
        berth_registry::precompiled::attach(&home.store, &digest, &info, &code.code)?;
        if !quiet {
            println!(
                "precompiled {image} for {target} ({}, engine {})",
                berth_runtime::quantity::format_bytes(code.code.len() as u64),
                info.engine
            );
        }
    }
    Ok(())
}

/// A berth without the compiler cannot precompile.
#[cfg(not(feature = "compiler"))]
pub(crate) fn attach_precompiled(_image: &str, targets: &[String], _quiet: bool) -> Result<()> {
    if let Some(target) = targets.first() {
        bail!(
            "cannot precompile for {target}: this berth was built without the compiler; precompile with the full berth"
        );
    }
    Ok(())
}

/// Compiles the program of local image `image` into the compile cache, so
/// that its first `berth run` starts without compiling (large components
/// take seconds to compile). Failing only warns: the image is stored either
/// way, and `berth run` reports the same error when it runs it. A berth
/// without the compiler has nothing to do here.
pub(crate) fn precompile_image(image: &str) {
    if !cfg!(feature = "compiler") {
        return;
    }
    let precompile = || -> Result<()> {
        let home = ImageHome::open()?;
        if let Some((path, origin)) = resolve::image_default_program(&home.images(), image)? {
            let cache = crate::home::compile_cache(crate::home::compile_limits(None)?)?;
            let bytes = program::read_file(&path)?;
            Runtime::new(RuntimeConfig {
                compile_cache: Some(cache),
            })
            .load(&bytes, &origin, EngineChoice::Command)?;
        }
        Ok(())
    };
    if let Err(error) = precompile() {
        eprintln!("berth: warning: cannot precompile {image}: {error:#}");
    }
}

/// A signal that asks berth to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// Ctrl-C.
    Interrupt,
    /// `kill`, `docker stop`.
    #[cfg_attr(not(unix), allow(dead_code))]
    Terminate,
}

impl StopSignal {
    /// The exit code of a process that this signal ended: 128 + its number.
    fn exit_code(self) -> i32 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT), saying which.
pub(crate) async fn stop_signal() -> StopSignal {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return StopSignal::Interrupt;
                }
            };
        tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}

/// This process's soft limit on open files, when the OS tells it.
#[cfg(unix)]
pub(crate) fn open_files_limit() -> Option<u64> {
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
pub(crate) fn open_files_limit() -> Option<u64> {
    None
}
