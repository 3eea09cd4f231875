//! Running one program in one sandbox: building the WASI context from a
//! [`SandboxSpec`], wiring the limits into the store, calling the entry
//! point and turning the outcome into an [`ExitStatus`] with docker's exit
//! codes (137 for OOM-kill and timeout, 134 for a trap).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreContextMut, UpdateDeadline, Val, ValType};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::RuntimeError;
use crate::engine::ensure_epoch_ticker;
use crate::limits::{CpuMeter, CpuThrottle, Limits, MemoryLimiter, Metered};
use crate::net::{NetError, SocketGuard};
use crate::program::{Code, Program};
use crate::quantity::format_bytes;
use crate::spec::{Entrypoint, Mount, Output, SandboxSpec, Stdin};

/// Exit code docker reports for a container killed by SIGKILL (OOM, timeout).
pub const EXIT_KILLED: i32 = 137;
/// Exit code docker reports for a container that aborted (SIGABRT); berth
/// uses it for a wasm trap.
pub const EXIT_TRAPPED: i32 = 134;

/// Why a sandbox stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    /// The guest returned or called `exit`/`proc_exit`.
    Exited,
    /// The guest hit its memory limit and then trapped or aborted.
    OomKilled {
        /// The memory limit in bytes.
        limit: u64,
        /// Total bytes the refused request would have needed.
        requested: u64,
    },
    /// The wall-clock timeout was reached.
    TimedOut {
        /// The configured timeout.
        after: Duration,
    },
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow…).
    Trapped {
        /// The trap and its wasm backtrace.
        message: String,
    },
}

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitStatus {
    /// The process exit code a front door should use.
    pub code: i32,
    /// Why it ended.
    pub reason: ExitReason,
    /// Values returned by an [`Entrypoint::Export`] call, formatted.
    pub returned: Vec<String>,
    /// Time the guest spent throttled by its CPU quota.
    pub throttled: Duration,
}

impl ExitStatus {
    fn exited(code: i32) -> Self {
        ExitStatus {
            code,
            reason: ExitReason::Exited,
            returned: Vec::new(),
            throttled: Duration::ZERO,
        }
    }

    /// A one-line explanation for abnormal endings (None for a plain exit).
    pub fn describe(&self) -> Option<String> {
        match &self.reason {
            ExitReason::Exited => None,
            ExitReason::OomKilled { limit, requested } => Some(format!(
                "OOMKilled: the memory limit of {} was reached (the guest needed {}); exit code {}",
                format_bytes(*limit),
                format_bytes(*requested),
                self.code
            )),
            ExitReason::TimedOut { after } => Some(format!(
                "killed: the timeout of {} was reached; exit code {}",
                humanize(*after),
                self.code
            )),
            ExitReason::Trapped { message } => Some(format!(
                "the guest trapped; exit code {}\n{message}",
                self.code
            )),
        }
    }
}

/// "2s", "1.5s" or "250ms", for messages.
pub(crate) fn humanize(duration: Duration) -> String {
    if duration.as_millis() < 1000 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// The data every berth store carries: the WASI state and the limits.
pub(crate) struct GuestState<W> {
    pub(crate) wasi: W,
    memory: MemoryLimiter,
    throttle: Option<(CpuThrottle, Arc<CpuMeter>)>,
    deadline: Option<Instant>,
}

impl<W> GuestState<W> {
    /// The size of the first refused memory or table growth, if any.
    pub(crate) fn memory_refused(&self) -> Option<u64> {
        self.memory.refused_request()
    }

    /// The meter that charges this store's CPU quota, if it has one. The
    /// future that runs the guest must be wrapped in a [`Metered`] with it.
    pub(crate) fn cpu_meter(&self) -> Option<Arc<CpuMeter>> {
        self.throttle.as_ref().map(|(_, meter)| meter.clone())
    }
}

/// WASI preview2 state: the context, the resource table and the network
/// policy's enforcement state.
pub(crate) struct P2State {
    ctx: WasiCtx,
    table: ResourceTable,
    pub(crate) net: std::sync::Arc<SocketGuard>,
}

impl WasiView for GuestState<P2State> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// The WASI permissions a mount grants.
fn perms_of(mount: &Mount) -> FsPerms {
    if mount.read_only {
        FsPerms::ReadOnly
    } else {
        FsPerms::ReadWrite
    }
}

/// Preopens each mount, read-only ones with read-only permissions.
pub(crate) fn grant_mounts(
    builder: &mut WasiCtxBuilder,
    mounts: &[Mount],
) -> Result<(), RuntimeError> {
    for mount in mounts {
        builder
            .preopened_dir(&mount.host, &mount.guest, perms_of(mount))
            .map_err(|error| RuntimeError::Volume {
                spec: format!("{}:{}", mount.host.display(), mount.guest),
                reason: format!("cannot open the host directory: {error:#}"),
            })?;
    }
    Ok(())
}

/// Builds the WASI context: deny by default, grant what the spec lists.
fn wasi_builder(spec: &mut SandboxSpec) -> Result<WasiCtxBuilder, RuntimeError> {
    let mut builder = WasiCtxBuilder::new();
    builder.arg(&spec.program_name);
    builder.args(&spec.args);
    if let Some(workdir) = &spec.workdir {
        builder.initial_cwd(workdir);
    }
    builder.envs(&spec.effective_env());
    grant_mounts(&mut builder, &spec.mounts)?;
    preopen_workdir(&mut builder, spec)?;
    match std::mem::take(&mut spec.stdin) {
        Stdin::Inherit => {
            builder.inherit_stdin();
        }
        Stdin::Null => {}
        Stdin::Bytes(bytes) => {
            builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes));
        }
    }
    match std::mem::take(&mut spec.stdout) {
        Output::Inherit => {
            builder.inherit_stdout();
        }
        Output::Null => {}
        Output::File(file) => {
            builder.stdout(wasmtime_wasi::cli::OutputFile::new(file));
        }
    }
    match std::mem::take(&mut spec.stderr) {
        Output::Inherit => {
            builder.inherit_stderr();
        }
        Output::Null => {}
        Output::File(file) => {
            builder.stderr(wasmtime_wasi::cli::OutputFile::new(file));
        }
    }
    Ok(builder)
}

/// Offers the working directory under the preopen name ".": WASI preview1
/// has no working directory, and libc resolves relative paths against that
/// preopen.
///
/// The directory is opened beneath the directory of the mount that covers
/// it, with sandboxed lookup: the rest of the path may name symlinks that a
/// guest planted in an earlier run, and following them on the host could
/// leave the mount. It gets exactly that mount's permissions. A working
/// directory that does not exist gets no "." preopen (a read-only root
/// cannot create it); one that cannot be opened inside its mount is an
/// error.
fn preopen_workdir(builder: &mut WasiCtxBuilder, spec: &SandboxSpec) -> Result<(), RuntimeError> {
    let Some(workdir) = &spec.workdir else {
        return Ok(());
    };
    let Some((mount, rest)) = spec.mount_for(workdir) else {
        return Ok(());
    };
    let refuse = |reason: String| RuntimeError::Workdir {
        workdir: workdir.clone(),
        reason,
    };
    let perms = perms_of(mount);
    if rest.is_empty() {
        builder
            .preopened_dir(&mount.host, ".", perms)
            .map_err(|error| refuse(format!("cannot open {}: {error:#}", mount.host.display())))?;
        return Ok(());
    }
    let base =
        cap_primitives::fs::open_ambient_dir(&mount.host, cap_primitives::ambient_authority())
            .map_err(|error| refuse(format!("cannot open {}: {error}", mount.host.display())))?;
    let dir = match cap_primitives::fs::open_dir(&base, std::path::Path::new(&rest)) {
        Ok(dir) => dir,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            let hint = if error.kind() == std::io::ErrorKind::PermissionDenied {
                "; a working directory must stay inside its mount, and symlinks that lead out of it are refused"
            } else {
                ""
            };
            return Err(refuse(format!(
                "cannot open it inside the mount at {}: {error}{hint}",
                mount.guest
            )));
        }
    };
    preopen_opened_dir(builder, &dir, mount, &rest, perms)
        .map_err(|reason| refuse(format!("cannot offer it to the guest: {reason}")))
}

/// Preopens the already opened directory `dir` as ".".
///
/// wasmtime-wasi takes preopens by host path only. The kernel resolves
/// `/proc/self/fd/N` (`/dev/fd/N` on other unixes) to the very directory
/// that descriptor N refers to, without looking any name up again, so no
/// guest can swap a path component between the sandboxed open and this one.
#[cfg(unix)]
fn preopen_opened_dir(
    builder: &mut WasiCtxBuilder,
    dir: &std::fs::File,
    _mount: &Mount,
    _rest: &str,
    perms: FsPerms,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fd_dir = if cfg!(any(target_os = "linux", target_os = "android")) {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let path = format!("{fd_dir}/{}", dir.as_raw_fd());
    builder
        .preopened_dir(&path, ".", perms)
        .map(|_| ())
        .map_err(|error| format!("cannot reopen it through {path}: {error:#}"))
}

/// Preopens the working directory found at `rest` beneath `mount` as ".".
///
/// Without descriptor paths, the directory is reopened by host path, and
/// only when no component below the mount is a symlink or junction: a
/// guest able to create one between the check and the open could still
/// redirect it (a documented gap; creating symlinks on Windows needs a
/// privilege that ordinary accounts lack).
#[cfg(not(unix))]
fn preopen_opened_dir(
    builder: &mut WasiCtxBuilder,
    _dir: &std::fs::File,
    mount: &Mount,
    rest: &str,
    perms: FsPerms,
) -> Result<(), String> {
    let mut path = mount.host.clone();
    for part in rest.split('/') {
        path.push(part);
        let metadata = std::fs::symlink_metadata(&path)
            .map_err(|error| format!("cannot inspect {}: {error}", path.display()))?;
        if metadata.file_type().is_symlink() {
            return Err(format!(
                "{} is a symlink, which a working directory may not pass through here",
                path.display()
            ));
        }
    }
    builder
        .preopened_dir(&path, ".", perms)
        .map(|_| ())
        .map_err(|error| format!("cannot open {}: {error:#}", path.display()))
}

/// Creates a store with the memory limiter, CPU throttle and deadline wired in.
///
/// The program's instance footprint (`reserved` bytes) is charged up front;
/// when it alone is over the limit, [`GuestState::memory_refused`] says so
/// and the caller must not instantiate.
pub(crate) fn new_store<W: Send + 'static>(
    engine: &'static Engine,
    wasi: W,
    limits: &Limits,
    reserved: u64,
) -> Store<GuestState<W>> {
    let throttle = limits
        .cpus
        .map(|cpus| CpuThrottle::new(cpus, Instant::now()))
        .filter(CpuThrottle::is_limiting)
        .map(|throttle| (throttle, Arc::new(CpuMeter::new(limits.cpu_clock))));
    let needs_epoch = throttle.is_some() || limits.timeout.is_some();
    let mut memory = MemoryLimiter::new(limits.memory_bytes);
    memory.reserve(reserved);
    let mut store = Store::new(
        engine,
        GuestState {
            wasi,
            memory,
            throttle,
            deadline: deadline(limits),
        },
    );
    store.limiter(|state| &mut state.memory);
    if !needs_epoch {
        // Epoch interruption is compiled into every module; a sandbox that
        // does not use it gets a deadline that is never reached.
        store.set_epoch_deadline(u64::MAX / 2);
        return store;
    }
    ensure_epoch_ticker(engine);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch_tick);
    store
}

/// When a sandbox with these limits times out.
fn deadline(limits: &Limits) -> Option<Instant> {
    let timeout = limits.timeout?;
    Some(limits.started.unwrap_or_else(Instant::now) + timeout)
}

/// Called by wasmtime at each epoch tick while the guest runs wasm: pause it
/// when it is over its CPU quota, otherwise yield so timers (the timeout)
/// can fire.
fn on_epoch_tick<W>(
    mut context: StoreContextMut<'_, GuestState<W>>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = context.data_mut();
    let now = Instant::now();
    if state.deadline.is_some_and(|deadline| now >= deadline) {
        return Ok(UpdateDeadline::Yield(1));
    }
    if let Some(pause) = state
        .throttle
        .as_mut()
        .and_then(|(throttle, meter)| throttle.on_tick(now, meter.used_in_poll()))
    {
        return Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::time::sleep(pause)),
        ));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// Runs `program` in a new sandbox described by `spec`, to completion.
///
/// Must be called within a tokio runtime (timers drive the CPU quota and
/// timeout). Errors are berth's own failures (bad mounts, unlinkable
/// imports); anything the guest does is reported in the [`ExitStatus`].
pub async fn run(
    engine: &'static Engine,
    program: &Program,
    mut spec: SandboxSpec,
) -> Result<ExitStatus, RuntimeError> {
    let builder = wasi_builder(&mut spec)?;
    let origin = spec.program_name.clone();
    let limits = spec.limits.clone();
    let reserved = program.footprint().bytes;
    match program.code() {
        // Only an explicit `-p` is refused: an image's EXPOSE is metadata,
        // and a module that cannot listen simply never uses it.
        Code::Module(_) if !spec.network.publish.is_empty() => {
            Err(NetError::CannotListen { origin }.into())
        }
        Code::Module(module) => {
            let mut builder = builder;
            let mut wasi = builder.build_p1();
            wasi.ctx().table.set_max_capacity(MAX_COMMAND_RESOURCES);
            let mut store = new_store(engine, wasi, &limits, reserved);
            if store.data().memory_refused().is_some() {
                return finish(Some(Err(out_of_memory())), &mut store, &limits);
            }
            let linker = p1_linker(engine).map_err(|error| RuntimeError::link(&origin, &error))?;
            let pre = linker
                .instantiate_pre(module)
                .map_err(|error| RuntimeError::link(&origin, &error))?;
            let entrypoint = spec.entrypoint.clone();
            let args = spec.args.clone();
            let meter = store.data().cpu_meter();
            let guest = Metered::new(
                async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    call_module_entry(&mut store, &instance, &entrypoint, &args, &origin).await
                },
                meter,
            );
            let outcome = with_timeout(deadline(&limits), guest).await;
            finish(outcome, &mut store, &limits)
        }
        Code::Component(component) => {
            if let Entrypoint::Export(name) = &spec.entrypoint {
                return Err(RuntimeError::Entrypoint {
                    origin,
                    reason: format!(
                        "is a component; calling the export {name:?} directly is only supported for core modules"
                    ),
                });
            }
            let mut builder = builder;
            spec.network.check_ports_free()?;
            let net = spec.network.grant(&mut builder);
            let mut table = ResourceTable::new();
            table.set_max_capacity(MAX_COMMAND_RESOURCES);
            let state = P2State {
                ctx: builder.build(),
                table,
                net,
            };
            let mut store = new_store(engine, state, &limits, reserved);
            if store.data().memory_refused().is_some() {
                return finish(Some(Err(out_of_memory())), &mut store, &limits);
            }
            let linker = p2_linker(engine).map_err(|error| RuntimeError::link(&origin, &error))?;
            let pre = linker
                .instantiate_pre(component)
                .map_err(|error| RuntimeError::link(&origin, &error))?;
            let command_pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(
                |error| RuntimeError::Entrypoint {
                    origin: origin.clone(),
                    reason: format!(
                        "is not a WASI command component (it has no wasi:cli/run export): {error:#}"
                    ),
                },
            )?;
            let meter = store.data().cpu_meter();
            let guest = Metered::new(
                async {
                    let command = command_pre.instantiate_async(&mut store).await?;
                    match command.wasi_cli_run().call_run(&mut store).await? {
                        Ok(()) => Ok(Vec::new()),
                        Err(()) => Err(wasmtime::Error::new(I32Exit(1))),
                    }
                },
                meter,
            );
            let outcome = with_timeout(deadline(&limits), guest).await;
            finish(outcome, &mut store, &limits)
        }
    }
}

/// Resources (open files, streams, sockets, pollables…) a WASI command
/// may hold at once: like a process's open-file limit. Each entry is a
/// small host object, so this bounds the table at a few megabytes.
pub const MAX_COMMAND_RESOURCES: usize = 16_384;

/// The error a sandbox ends with when its program's instances alone do
/// not fit in its memory limit (reported as OOM-killed, like a module
/// whose initial memory does not fit).
fn out_of_memory() -> wasmtime::Error {
    wasmtime::Error::msg("the program's instances do not fit in the memory limit")
}

/// Linkers are built once per engine: defining the ~50 WASI preview1
/// functions (or the preview2 interfaces) is most of the cost of starting a
/// sandbox, and the result depends only on the engine.
type LinkerCache<L> = std::sync::Mutex<Vec<(usize, std::sync::Arc<L>)>>;

fn cached_linker<L>(
    cache: &'static std::sync::OnceLock<LinkerCache<L>>,
    engine: &'static Engine,
    build: impl FnOnce() -> wasmtime::Result<L>,
) -> wasmtime::Result<std::sync::Arc<L>> {
    let key = std::ptr::from_ref(engine) as usize;
    let cache = cache.get_or_init(Default::default);
    if let Ok(entries) = cache.lock()
        && let Some((_, linker)) = entries.iter().find(|(engine, _)| *engine == key)
    {
        return Ok(linker.clone());
    }
    let linker = std::sync::Arc::new(build()?);
    if let Ok(mut entries) = cache.lock() {
        entries.push((key, linker.clone()));
    }
    Ok(linker)
}

fn p1_linker(
    engine: &'static Engine,
) -> wasmtime::Result<std::sync::Arc<wasmtime::Linker<GuestState<WasiP1Ctx>>>> {
    static CACHE: std::sync::OnceLock<LinkerCache<wasmtime::Linker<GuestState<WasiP1Ctx>>>> =
        std::sync::OnceLock::new();
    cached_linker(&CACHE, engine, || {
        let mut linker = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(
            &mut linker,
            |state: &mut GuestState<WasiP1Ctx>| &mut state.wasi,
        )?;
        Ok(linker)
    })
}

fn p2_linker(
    engine: &'static Engine,
) -> wasmtime::Result<std::sync::Arc<wasmtime::component::Linker<GuestState<P2State>>>> {
    static CACHE: std::sync::OnceLock<
        LinkerCache<wasmtime::component::Linker<GuestState<P2State>>>,
    > = std::sync::OnceLock::new();
    cached_linker(&CACHE, engine, || {
        let mut linker = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::net::add_port_rewrite(&mut linker)?;
        Ok(linker)
    })
}

/// `None` when the deadline passed first.
async fn with_timeout<F: std::future::Future>(
    deadline: Option<Instant>,
    future: F,
) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
        None => Some(future.await),
    }
}

fn finish<W>(
    outcome: Option<wasmtime::Result<Vec<String>>>,
    store: &mut Store<GuestState<W>>,
    limits: &Limits,
) -> Result<ExitStatus, RuntimeError> {
    let state = store.data();
    let throttled = state
        .throttle
        .as_ref()
        .map_or(Duration::ZERO, |(throttle, _)| throttle.throttled_time());
    let mut status = match outcome {
        None => ExitStatus {
            code: EXIT_KILLED,
            reason: ExitReason::TimedOut {
                after: limits.timeout.unwrap_or_default(),
            },
            returned: Vec::new(),
            throttled,
        },
        Some(Ok(returned)) => ExitStatus {
            returned,
            ..ExitStatus::exited(0)
        },
        Some(Err(error)) => {
            if let Some(entry) = error.downcast_ref::<EntryError>() {
                return Err(RuntimeError::Entry(entry.0.clone()));
            }
            if let Some(exit) = error.downcast_ref::<I32Exit>() {
                ExitStatus::exited(exit.0)
            } else if let (Some(requested), Some(limit)) =
                (state.memory.refused_request(), limits.memory_bytes)
            {
                ExitStatus {
                    code: EXIT_KILLED,
                    reason: ExitReason::OomKilled { limit, requested },
                    returned: Vec::new(),
                    throttled,
                }
            } else {
                ExitStatus {
                    code: EXIT_TRAPPED,
                    reason: ExitReason::Trapped {
                        message: format!("{error:?}"),
                    },
                    returned: Vec::new(),
                    throttled,
                }
            }
        }
    };
    status.throttled = throttled;
    Ok(status)
}

/// Calls `_start` (after nothing) or a named export (after `_initialize`).
async fn call_module_entry<W: Send>(
    store: &mut Store<GuestState<W>>,
    instance: &wasmtime::Instance,
    entrypoint: &Entrypoint,
    args: &[String],
    origin: &str,
) -> wasmtime::Result<Vec<String>> {
    match entrypoint {
        Entrypoint::Command => {
            let Some(start) = instance.get_func(&mut *store, "_start") else {
                let names = function_exports(instance, &mut *store);
                return Err(wasmtime::Error::new(EntryError(format!(
                    "{origin} has no _start export, so it is not a WASI command; its function exports are: {names}. Call one with FILE#NAME"
                ))));
            };
            start.call_async(&mut *store, &[], &mut []).await?;
            Ok(Vec::new())
        }
        Entrypoint::Export(name) => {
            if let Some(init) = instance.get_func(&mut *store, "_initialize") {
                init.call_async(&mut *store, &[], &mut []).await?;
            }
            let Some(func) = instance.get_func(&mut *store, name) else {
                let names = function_exports(instance, &mut *store);
                return Err(wasmtime::Error::new(EntryError(format!(
                    "{origin} has no function export {name:?}; its function exports are: {names}"
                ))));
            };
            let ty = func.ty(&*store);
            let params = parse_params(&ty, args, name)
                .map_err(|message| wasmtime::Error::new(EntryError(message)))?;
            let mut results = vec![Val::I32(0); ty.results().len()];
            func.call_async(&mut *store, &params, &mut results).await?;
            Ok(results.iter().map(format_val).collect())
        }
    }
}

/// The names of an instance's function exports, for error messages.
fn function_exports<W>(instance: &wasmtime::Instance, store: &mut Store<GuestState<W>>) -> String {
    let names: Vec<String> = instance
        .exports(&mut *store)
        .filter(|export| export.clone().into_func().is_some())
        .map(|export| export.name().to_owned())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// An entry point problem found after instantiation (reported as a berth
/// error, exit 125, not as a guest trap).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EntryError(pub String);

fn parse_params(ty: &wasmtime::FuncType, args: &[String], name: &str) -> Result<Vec<Val>, String> {
    let params: Vec<ValType> = ty.params().collect();
    if params.len() != args.len() {
        return Err(format!(
            "export {name:?} takes {} argument(s) ({}), but {} were given",
            params.len(),
            params
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            args.len()
        ));
    }
    params
        .iter()
        .zip(args)
        .map(|(param, arg)| {
            let bad = || format!("argument {arg:?} is not a valid {param} for export {name:?}");
            Ok(match param {
                ValType::I32 => Val::I32(arg.parse::<i32>().or_else(|_| arg.parse::<u32>().map(|v| v as i32)).map_err(|_| bad())?),
                ValType::I64 => Val::I64(arg.parse::<i64>().or_else(|_| arg.parse::<u64>().map(|v| v as i64)).map_err(|_| bad())?),
                ValType::F32 => Val::F32(arg.parse::<f32>().map_err(|_| bad())?.to_bits()),
                ValType::F64 => Val::F64(arg.parse::<f64>().map_err(|_| bad())?.to_bits()),
                other => return Err(format!("export {name:?} takes a {other} parameter, which cannot be given on the command line")),
            })
        })
        .collect()
}

fn format_val(val: &Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(bits) => f32::from_bits(*bits).to_string(),
        Val::F64(bits) => f64::from_bits(*bits).to_string(),
        Val::V128(v) => format!("{:#034x}", v.as_u128()),
        other => format!("{other:?}"),
    }
}
