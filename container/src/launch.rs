//! Starting a resolved container in a [`Runtime`]: the engine is chosen
//! from the program's exports, the program is loaded (once per runtime) and
//! started as a command sandbox or, for a wasi:http component with a
//! published port, as a server of its own. Either way the caller gets a
//! [`SandboxHandle`], so that waiting, stopping and supervising work the
//! same for both.

use std::net::SocketAddr;
use std::time::Instant;

use berth_runtime::http::{HandlerConfig, HttpListener, ListenerConfig};
use berth_runtime::limits::CpuClock;
use berth_runtime::net::NetError;
use berth_runtime::{
    EngineChoice, Limits, Output, PoolSizing, Runtime, RuntimeError, SandboxHandle, Stdin,
};

use crate::resolve::Resolved;
use crate::spec::ContainerSpec;

/// Where a container's standard streams lead.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Its stdin (a server's requests never read it).
    pub stdin: Stdin,
    /// Its stdout.
    pub stdout: Output,
    /// Its stderr.
    pub stderr: Output,
}

/// What the front door decides about every launch.
#[derive(Debug, Clone, Copy)]
pub struct LaunchSettings {
    /// When the run began, if before the launch (so that `--timeout` counts
    /// resolving and compiling too).
    pub started: Option<Instant>,
    /// Whose CPU time a quota charges: [`CpuClock::Process`] for a process
    /// that runs this one container.
    pub cpu_clock: CpuClock,
    /// Connections a server keeps open when the spec does not say.
    pub default_max_connections: usize,
}

/// A started container.
#[derive(Debug)]
pub struct Launched {
    /// The running sandbox (or server).
    pub handle: SandboxHandle,
    /// Where a server listens, if the container is one.
    pub serving: Option<Serving>,
    /// The container's private `/tmp`, removed when this is dropped: keep
    /// it until the handle says the container ended.
    pub scratch: Option<tempfile::TempDir>,
}

/// Where a served wasi:http component listens.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The bound host address.
    pub addr: SocketAddr,
    /// The container port it stands for.
    pub container_port: u16,
    /// The program's name, for messages.
    pub program_name: String,
}

/// Why a container could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program cannot be loaded, linked or started.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The published port cannot be bound.
    #[error(transparent)]
    Listen(#[from] NetError),
    /// A wasi:http component's ports are not one published port.
    #[error("{0}")]
    Ports(String),
}

/// The largest linear memory a serving pool reserves per instance when the
/// spec sets no memory limit.
const UNLIMITED_POOL_MEMORY: u64 = 4 << 30;

/// Starts `resolved` (resolved from `spec`) in `runtime`, with `stdio`.
/// Must be called within a tokio runtime.
pub async fn launch(
    runtime: &Runtime,
    spec: &ContainerSpec,
    resolved: Resolved,
    stdio: Stdio,
    settings: &LaunchSettings,
) -> Result<Launched, LaunchError> {
    launch_on(runtime, spec, resolved, stdio, settings, None).await
}

/// As [`launch`], but a wasi:http component is served on `listener` (a
/// socket the caller bound and listens on for the spec's published port,
/// e.g. inside another network namespace) when one is given, rather than
/// on a socket bound here. A program that is not served drops it.
pub async fn launch_on(
    runtime: &Runtime,
    spec: &ContainerSpec,
    resolved: Resolved,
    stdio: Stdio,
    settings: &LaunchSettings,
    listener: Option<std::net::TcpListener>,
) -> Result<Launched, LaunchError> {
    let Resolved {
        path,
        origin,
        sandbox: mut sandbox_spec,
        scratch,
        precompiled,
    } = resolved;
    let bytes = berth_runtime::program::read_file(&path)?;
    // Only a wasi:http component served on a published port gets the
    // pooling engine; reserving the pool costs a few milliseconds of
    // start-up that socket apps and commands do not need.
    let choice = if !spec.ports.is_empty() && berth_runtime::http::exports_http_handler(&bytes) {
        EngineChoice::Serving(PoolSizing {
            concurrent_instances: u32::try_from(spec.http.max_concurrency).unwrap_or(u32::MAX),
            max_memory_bytes: spec.limits.memory_bytes.unwrap_or(UNLIMITED_POOL_MEMORY),
        })
    } else {
        EngineChoice::Command
    };
    let program = runtime.load_precompiled(&bytes, &origin, choice, &precompiled)?;
    if program.is_http_proxy() {
        let [publish] = spec.ports.as_slice() else {
            return Err(LaunchError::Ports(if spec.ports.is_empty() {
                format!(
                    "{} is a wasi:http component: publish a port to serve it, e.g. -p 8080:8080",
                    spec.target_name()
                )
            } else {
                "a wasi:http component serves one port; give -p once".to_owned()
            }));
        };
        let http = &spec.http;
        let program_name = sandbox_spec.program_name;
        let handler = runtime.http_handler(
            &program,
            &program_name,
            HandlerConfig {
                limits: Limits {
                    memory_bytes: spec.limits.memory_bytes,
                    cpus: spec.limits.cpus,
                    ..Limits::default()
                },
                request_timeout: http.request_timeout,
                max_concurrency: http.max_concurrency,
                env: sandbox_spec.env,
                mounts: sandbox_spec.mounts,
                allow_outbound: spec.outbound.clone(),
                stdout: stdio.stdout,
                stderr: stdio.stderr,
            },
        )?;
        let config = ListenerConfig {
            listen: publish.host,
            grace_period: http.stop_timeout,
            header_timeout: http.header_timeout,
            idle_timeout: http.idle_timeout,
            max_connections: http
                .max_connections
                .map_or(settings.default_max_connections, |max| {
                    usize::try_from(max).unwrap_or(usize::MAX)
                }),
        };
        let listener = match listener {
            Some(listener) => HttpListener::from_std(listener, config)?,
            None => HttpListener::bind(config).await?,
        };
        let addr = listener
            .local_addr()
            .map_err(|error| NetError::listen(publish.host, &error))?;
        return Ok(Launched {
            handle: listener.serve(handler),
            serving: Some(Serving {
                addr,
                container_port: publish.container_port,
                program_name,
            }),
            scratch,
        });
    }
    sandbox_spec.limits = Limits {
        memory_bytes: spec.limits.memory_bytes,
        cpus: spec.limits.cpus,
        timeout: spec.limits.timeout,
        started: settings.started,
        cpu_clock: settings.cpu_clock,
    };
    sandbox_spec.stdin = stdio.stdin;
    sandbox_spec.stdout = stdio.stdout;
    sandbox_spec.stderr = stdio.stderr;
    Ok(Launched {
        handle: runtime.start(&program, sandbox_spec)?,
        serving: None,
        scratch,
    })
}
