//! What runs inside a sandbox: the WASI context built from a
//! [`SandboxSpec`] (deny by default, grant what it lists), the store that
//! carries the limits, the epoch callback that throttles, times out and
//! preempts guests, the linkers (once per engine) and the linked programs
//! (once per program), and the call of the entry point.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{
    Engine, ExternType, InstancePre, Store, StoreContextMut, UpdateDeadline, Val, ValType,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::RuntimeError;
use crate::http::HttpState;
use crate::limits::{CpuMeter, CpuThrottle, Limits, MemoryLimiter, Usage};
use crate::net::SocketGuard;
use crate::program::{Code, Program};
use crate::spec::{Entrypoint, Mount, SandboxSpec};
use crate::stdio::Stream;

/// The data every berth store carries: the WASI state and the limits.
pub(crate) struct GuestState<W> {
    pub(crate) wasi: W,
    memory: MemoryLimiter,
    throttle: Option<CpuThrottle>,
    /// Measures the CPU the guest uses (for its quota and its stats).
    meter: Option<Arc<CpuMeter>>,
    deadline: Option<Instant>,
    usage: Arc<Usage>,
}

impl<W> GuestState<W> {
    /// The size of the first refused memory or table growth, if any.
    pub(crate) fn memory_refused(&self) -> Option<u64> {
        self.memory.refused_request()
    }

    /// The memory cap in force (it may have changed while running).
    pub(crate) fn memory_limit(&self) -> Option<u64> {
        self.memory.limit()
    }

    /// The meter that charges this store's CPU, if it has one. The future
    /// that runs the guest must be wrapped in a [`crate::limits::Metered`]
    /// with it.
    pub(crate) fn cpu_meter(&self) -> Option<Arc<CpuMeter>> {
        self.meter.clone()
    }

    /// Time the guest has been held back by its CPU quota.
    pub(crate) fn throttled(&self) -> std::time::Duration {
        self.throttle
            .as_ref()
            .map_or(std::time::Duration::ZERO, CpuThrottle::throttled_time)
    }
}

/// WASI preview2 state: the context, the resource table and the network
/// policy's enforcement state.
pub(crate) struct P2State {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) net: Arc<SocketGuard>,
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
/// Takes the spec's stdio.
pub(crate) fn wasi_builder(spec: &mut SandboxSpec) -> Result<WasiCtxBuilder, RuntimeError> {
    let mut builder = WasiCtxBuilder::new();
    builder.arg(&spec.program_name);
    builder.args(&spec.args);
    if let Some(workdir) = &spec.workdir {
        builder.initial_cwd(workdir);
    }
    builder.envs(&spec.effective_env());
    grant_mounts(&mut builder, &spec.mounts)?;
    preopen_workdir(&mut builder, spec)?;
    std::mem::take(&mut spec.stdin).grant(&mut builder);
    std::mem::take(&mut spec.stdout)
        .into_shared()
        .grant(&mut builder, Stream::Stdout);
    std::mem::take(&mut spec.stderr)
        .into_shared()
        .grant(&mut builder, Stream::Stderr);
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

/// Creates a store with the memory limiter, CPU throttle, deadline and
/// epoch callback wired in; what it charges is reported to `usage`.
///
/// The program's instance footprint (`reserved` bytes) is charged up front;
/// when it alone is over the limit, [`GuestState::memory_refused`] says so
/// and the caller must not instantiate. `meter`, when given, measures the
/// guest's CPU (a quota creates one if not).
pub(crate) fn new_store<W: Send + 'static>(
    engine: &Engine,
    wasi: W,
    limits: &Limits,
    reserved: u64,
    usage: Arc<Usage>,
    meter: Option<Arc<CpuMeter>>,
) -> Store<GuestState<W>> {
    // A server's new requests take the quota set while it runs.
    let throttle = usage
        .live
        .cpus()
        .or(limits.cpus)
        .map(|cpus| CpuThrottle::new(cpus, Instant::now()))
        .filter(CpuThrottle::is_limiting);
    let meter = match (&throttle, meter) {
        (_, Some(meter)) => Some(meter),
        (Some(_), None) => Some(Arc::new(CpuMeter::new(limits.cpu_clock))),
        (None, None) => None,
    };
    let mut memory = MemoryLimiter::new(limits.memory_bytes).reporting_to(usage.clone());
    memory.reserve(reserved);
    let mut store = Store::new(
        engine,
        GuestState {
            wasi,
            memory,
            throttle,
            meter,
            deadline: deadline(limits),
            usage,
        },
    );
    store.limiter(|state| &mut state.memory);
    // Every guest looks at the epoch: besides quotas and timeouts, a kill
    // must be able to stop one that spins without calling the host.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch_tick);
    store
}

/// When a sandbox with these limits times out.
pub(crate) fn deadline(limits: &Limits) -> Option<Instant> {
    let timeout = limits.timeout?;
    Some(limits.started.unwrap_or_else(Instant::now) + timeout)
}

/// Called by wasmtime at each epoch tick while the guest runs wasm: pause it
/// when it is over its CPU quota, otherwise yield, so that timers (the
/// timeout), kills and other sandboxes on the same thread get their turn.
fn on_epoch_tick<W>(
    mut context: StoreContextMut<'_, GuestState<W>>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = context.data_mut();
    let now = Instant::now();
    if state.deadline.is_some_and(|deadline| now >= deadline) {
        return Ok(UpdateDeadline::Yield(1));
    }
    if let (Some(cpus), Some(meter)) = (state.usage.live.cpus(), &state.meter) {
        CpuThrottle::retune(&mut state.throttle, cpus, now, || meter.used_in_poll());
    }
    let used = match &state.meter {
        Some(meter) if state.throttle.is_some() => meter.used_in_poll(),
        _ => return Ok(UpdateDeadline::Yield(1)),
    };
    if let Some(pause) = state
        .throttle
        .as_mut()
        .and_then(|throttle| throttle.on_tick(now, used))
    {
        Usage::add(&state.usage.throttled_nanos, pause);
        return Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::time::sleep(pause)),
        ));
    }
    Ok(UpdateDeadline::Yield(1))
}

/// Resources (open files, streams, sockets, pollables…) a WASI command
/// may hold at once: like a process's open-file limit. Each entry is a
/// small host object, so this bounds the table at a few megabytes.
pub const MAX_COMMAND_RESOURCES: usize = 16_384;

/// The error a sandbox ends with when its program's instances alone do
/// not fit in its memory limit (reported as OOM-killed, like a module
/// whose initial memory does not fit).
pub(crate) fn out_of_memory() -> wasmtime::Error {
    wasmtime::Error::msg("the program's instances do not fit in the memory limit")
}

/// The linkers of one engine, built on first use: defining the ~50 WASI
/// preview1 functions (or the preview2 interfaces) is most of the cost of
/// linking a program, and the result depends only on the engine.
#[derive(Default)]
pub(crate) struct Linkers {
    p1: OnceLock<Result<wasmtime::Linker<GuestState<WasiP1Ctx>>, String>>,
    p2: OnceLock<Result<wasmtime::component::Linker<GuestState<P2State>>, String>>,
    http: OnceLock<Result<wasmtime::component::Linker<GuestState<HttpState>>, String>>,
}

fn built<L>(
    cell: &OnceLock<Result<L, String>>,
    build: impl FnOnce() -> wasmtime::Result<L>,
) -> Result<&L, String> {
    cell.get_or_init(|| build().map_err(|error| format!("{error:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// A program linked for one way of running it, or why it cannot be.
type Linked<T> = OnceLock<Result<T, RuntimeError>>;

/// A program linked for each way of running it, made on first use and
/// shared by every sandbox that runs it.
#[derive(Default)]
pub(crate) struct Prepared {
    module: Linked<InstancePre<GuestState<WasiP1Ctx>>>,
    command: Linked<CommandPre<GuestState<P2State>>>,
    proxy: Linked<ProxyPre<GuestState<HttpState>>>,
    /// Whether a core module has a `_start` to run as a command (checked
    /// once, not per sandbox: looking an export's type up takes the
    /// engine's type registry lock).
    module_start: OnceLock<Result<(), String>>,
}

/// A copy of a linking error for another caller (the original is cached).
fn again(error: &RuntimeError) -> RuntimeError {
    match error {
        RuntimeError::Entrypoint { origin, reason } => RuntimeError::Entrypoint {
            origin: origin.clone(),
            reason: reason.clone(),
        },
        RuntimeError::Link { origin, reason } => RuntimeError::Link {
            origin: origin.clone(),
            reason: reason.clone(),
        },
        other => RuntimeError::Link {
            origin: String::new(),
            reason: other.to_string(),
        },
    }
}

fn linked<T>(
    cell: &Linked<T>,
    link: impl FnOnce() -> Result<T, RuntimeError>,
) -> Result<&T, RuntimeError> {
    match cell.get_or_init(link) {
        Ok(linked) => Ok(linked),
        Err(error) => Err(again(error)),
    }
}

impl Program {
    /// The module linked against WASI preview1.
    pub(crate) fn module_pre(
        &self,
        origin: &str,
    ) -> Result<&InstancePre<GuestState<WasiP1Ctx>>, RuntimeError> {
        let Code::Module(module) = self.code() else {
            return Err(RuntimeError::Entrypoint {
                origin: origin.to_owned(),
                reason: "is not a core module".into(),
            });
        };
        let slot = &self.inner.slot;
        linked(&self.inner.prepared.module, || {
            let link_error = |reason: String| RuntimeError::Link {
                origin: origin.to_owned(),
                reason,
            };
            let linker = built(&slot.linkers.p1, || {
                let mut linker = wasmtime::Linker::new(&slot.engine);
                wasmtime_wasi::p1::add_to_linker_async(
                    &mut linker,
                    |state: &mut GuestState<WasiP1Ctx>| &mut state.wasi,
                )?;
                Ok(linker)
            })
            .map_err(link_error)?;
            linker
                .instantiate_pre(module)
                .map_err(|error| RuntimeError::link(origin, &error))
        })
    }

    /// The component linked as a WASI command.
    pub(crate) fn command_pre(
        &self,
        origin: &str,
    ) -> Result<&CommandPre<GuestState<P2State>>, RuntimeError> {
        let slot = &self.inner.slot;
        self.link_component(
            origin,
            &self.inner.prepared.command,
            &slot.linkers.p2,
            |linker| {
                wasmtime_wasi::p2::add_to_linker_async(linker)?;
                crate::net::add_port_rewrite(linker)
            },
            |pre| {
                CommandPre::new(pre).map_err(|error| {
                    format!(
                        "is not a WASI command component (it has no wasi:cli/run export): {error:#}"
                    )
                })
            },
        )
    }

    /// The component linked as a wasi:http proxy.
    pub(crate) fn proxy_pre(
        &self,
        origin: &str,
    ) -> Result<&ProxyPre<GuestState<HttpState>>, RuntimeError> {
        let slot = &self.inner.slot;
        self.link_component(
            origin,
            &self.inner.prepared.proxy,
            &slot.linkers.http,
            |linker| {
                wasmtime_wasi::p2::add_to_linker_async(linker)?;
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
            },
            |pre| {
                ProxyPre::new(pre).map_err(|error| {
                    format!("does not export wasi:http/incoming-handler: {error:#}")
                })
            },
        )
    }

    /// Links the component once, with the engine's linker made by `define`
    /// (once per engine), and wraps it as `wrap` says (the error naming
    /// the export it lacks).
    fn link_component<'a, S: 'static, T>(
        &'a self,
        origin: &str,
        cell: &'a Linked<T>,
        linker_cell: &OnceLock<Result<wasmtime::component::Linker<S>, String>>,
        define: impl FnOnce(&mut wasmtime::component::Linker<S>) -> wasmtime::Result<()>,
        wrap: impl FnOnce(wasmtime::component::InstancePre<S>) -> Result<T, String>,
    ) -> Result<&'a T, RuntimeError> {
        let Code::Component(component) = self.code() else {
            return Err(RuntimeError::Entrypoint {
                origin: origin.to_owned(),
                reason: "is a core module, not a component".into(),
            });
        };
        let engine = &self.inner.slot.engine;
        linked(cell, || {
            let linker = built(linker_cell, || {
                let mut linker = wasmtime::component::Linker::new(engine);
                define(&mut linker)?;
                Ok(linker)
            })
            .map_err(|reason| RuntimeError::Link {
                origin: origin.to_owned(),
                reason,
            })?;
            let pre = linker
                .instantiate_pre(component)
                .map_err(|error| RuntimeError::link(origin, &error))?;
            wrap(pre).map_err(|reason| RuntimeError::Entrypoint {
                origin: origin.to_owned(),
                reason,
            })
        })
    }

    /// Checks, before anything is instantiated, that a core module has the
    /// entry point `entrypoint` and that `args` fit its parameters.
    pub(crate) fn check_module_entry(
        &self,
        entrypoint: &Entrypoint,
        args: &[String],
        origin: &str,
    ) -> Result<(), RuntimeError> {
        let Code::Module(module) = self.code() else {
            return Ok(());
        };
        let function_exports = || {
            let names: Vec<&str> = module
                .exports()
                .filter(|export| matches!(export.ty(), ExternType::Func(_)))
                .map(|export| export.name())
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        match entrypoint {
            Entrypoint::Command => self
                .inner
                .prepared
                .module_start
                .get_or_init(|| match module.get_export("_start") {
                    Some(ExternType::Func(_)) => Ok(()),
                    _ => Err(format!(
                        "has no _start export, so it is not a WASI command; its function exports are: {}. Call one with FILE#NAME",
                        function_exports()
                    )),
                })
                .clone()
                .map_err(|reason| RuntimeError::Entry(format!("{origin} {reason}"))),
            Entrypoint::Export(name) => match module.get_export(name) {
                Some(ExternType::Func(ty)) => parse_params(&ty, args, name)
                    .map(|_| ())
                    .map_err(RuntimeError::Entry),
                _ => Err(RuntimeError::Entry(format!(
                    "{origin} has no function export {name:?}; its function exports are: {}",
                    function_exports()
                ))),
            },
        }
    }
}

/// Calls `_start` (after nothing) or a named export (after `_initialize`).
pub(crate) async fn call_module_entry<W: Send>(
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
pub(crate) struct EntryError(pub(crate) String);

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
