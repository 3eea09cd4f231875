//! Starting sandboxes and looking after them: [`Runtime::start`] returns a
//! [`SandboxHandle`] at once, while the guest runs as a task of the caller's
//! tokio runtime. The handle waits for the end ([`ExitStatus`], with a typed
//! [`ExitReason`] and docker's exit codes: 137 for OOM-kill, timeout and
//! SIGKILL, 143 for SIGTERM, 134 for a trap), kills (even a guest that spins
//! without a quota or timeout stops within an epoch tick or two), and reads
//! what the sandbox uses ([`SandboxStats`]).
//!
//! A panic in host code that serves one sandbox ends that sandbox only, as
//! a trap: the process and every other sandbox go on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiView};

use crate::limits::{CpuMeter, Limits, Metered, Usage};
use crate::net::NetError;
use crate::program::{Code, Program};
use crate::quantity::format_bytes;
use crate::sandbox::{
    EntryError, GuestState, MAX_COMMAND_RESOURCES, P2State, call_module_entry, deadline, new_store,
    out_of_memory, wasi_builder,
};
use crate::signal::{EndSignal, KillSignal};
use crate::spec::{Entrypoint, SandboxSpec};
use crate::{Runtime, RuntimeError};

/// Exit code docker reports for a container killed by SIGKILL (OOM, timeout).
pub const EXIT_KILLED: i32 = 137;
/// Exit code docker reports for a container stopped by SIGTERM.
pub const EXIT_TERMINATED: i32 = 143;
/// Exit code docker reports for a container that aborted (SIGABRT); berth
/// uses it for a wasm trap.
pub const EXIT_TRAPPED: i32 = 134;

/// How to stop a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KillMode {
    /// SIGTERM: a command stops at once (exit 143); a server stops
    /// accepting and finishes its in-flight requests within its grace
    /// period (exit 0).
    Graceful,
    /// SIGKILL: stop now, whatever the guest is doing (exit 137).
    Immediate,
}

/// Why a sandbox stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    /// The guest returned or called `exit`/`proc_exit` (or a server
    /// drained and stopped).
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
    /// The guest trapped (unreachable, out-of-bounds access, stack
    /// overflow…), or host code serving it failed.
    Trapped {
        /// The trap and its wasm backtrace.
        message: String,
    },
    /// [`SandboxHandle::kill`] stopped it.
    Killed {
        /// How it was asked to stop.
        mode: KillMode,
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
    /// A plain exit with `code`.
    pub fn exited(code: i32) -> Self {
        ExitStatus {
            code,
            reason: ExitReason::Exited,
            returned: Vec::new(),
            throttled: Duration::ZERO,
        }
    }

    fn ended(code: i32, reason: ExitReason) -> Self {
        ExitStatus {
            code,
            reason,
            returned: Vec::new(),
            throttled: Duration::ZERO,
        }
    }

    /// Whether it was stopped for exceeding its memory limit.
    pub fn oom_killed(&self) -> bool {
        matches!(self.reason, ExitReason::OomKilled { .. })
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
            ExitReason::Killed { mode } => Some(format!(
                "{}; exit code {}",
                match mode {
                    KillMode::Graceful => "stopped",
                    KillMode::Immediate => "killed",
                },
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

/// What a sandbox uses, read while it runs (or after).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Bytes charged to its memory limit now: linear memories, tables and
    /// the host memory of its instances (for a server, of the requests in
    /// flight).
    pub memory_bytes: u64,
    /// The most bytes charged at once.
    pub peak_memory_bytes: u64,
    /// CPU time its guest and the host calls it made used: read from the
    /// thread CPU clock for a sandbox with a CPU quota; for one without, the
    /// time spent running it (the same unless the machine runs more threads
    /// than it has cores).
    pub cpu_time: Duration,
    /// Time its CPU quota held it back.
    pub throttled: Duration,
}

/// What the task running a sandbox and its handles share.
pub(crate) struct Shared {
    kill: KillSignal,
    end: EndSignal,
    pub(crate) usage: Arc<Usage>,
    /// The meter of a single sandbox's polls (servers add each request's
    /// CPU to `usage` instead).
    meter: Option<Arc<CpuMeter>>,
}

/// A running (or finished) sandbox. Clones refer to the same sandbox;
/// dropping every handle leaves the sandbox running to its end.
#[derive(Clone)]
pub struct SandboxHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("status", &self.try_wait())
            .finish_non_exhaustive()
    }
}

/// The task's side of a handle: where it learns of kills and reports the
/// end. Dropped without [`TaskSide::finish`] (its tokio runtime shut down
/// under it), it reports the sandbox lost.
pub(crate) struct TaskSide {
    shared: Arc<Shared>,
}

impl TaskSide {
    /// Reports how the sandbox ended.
    pub(crate) fn finish(self, status: ExitStatus) {
        // Only the task sets the status; dropping `self` wakes the waiters.
        self.shared.end.set_if_unset(|| status);
    }

    /// Resolves when a kill is asked for, with the strongest mode asked;
    /// never when every handle is gone.
    pub(crate) async fn killed(&self) -> KillMode {
        self.killed_at_least(KillMode::Graceful).await
    }

    /// Resolves once a kill at least as strong as `least` is asked for.
    pub(crate) async fn killed_at_least(&self, least: KillMode) -> KillMode {
        self.shared.kill.at_least(least).await
    }
}

impl Drop for TaskSide {
    fn drop(&mut self) {
        self.shared.end.set_if_unset(lost);
        self.shared.end.wake();
    }
}

impl SandboxHandle {
    /// A handle and the task side that goes with it.
    pub(crate) fn pair(usage: Arc<Usage>, meter: Option<Arc<CpuMeter>>) -> (Self, TaskSide) {
        let shared = Arc::new(Shared {
            kill: KillSignal::new(),
            end: EndSignal::new(),
            usage,
            meter,
        });
        (
            SandboxHandle {
                shared: shared.clone(),
            },
            TaskSide { shared },
        )
    }

    /// Waits for the sandbox to end and says how it ended.
    pub async fn wait(&self) -> ExitStatus {
        self.shared.end.wait().await
    }

    /// How the sandbox ended, if it has.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.shared.end.get().cloned()
    }

    /// Asks the sandbox to stop. Asking again with [`KillMode::Immediate`]
    /// turns a graceful stop into an immediate one.
    pub fn kill(&self, mode: KillMode) {
        self.shared.kill.ask(mode);
    }

    /// Changes the sandbox's limits while it runs, as writing a cgroup's
    /// `memory.max` or `cpu.max` does; `None` keeps a limit as it is. They
    /// apply from the guest's next memory growth and next epoch tick.
    ///
    /// `memory_bytes` is the new cap (`u64::MAX`: none). A cap below what
    /// the sandbox already uses takes nothing back, since linear memory
    /// cannot shrink: the guest keeps what it has and every further growth
    /// is refused (OOM-killed if the guest then fails), as with
    /// `memory.max` when nothing can be reclaimed. Compare it with
    /// [`SandboxStats::memory_bytes`] to tell. `cpus` is the new quota in
    /// cores; a whole core or more lifts it (a guest runs on one thread).
    /// A server applies both to each request, as it does the limits it was
    /// started with; its requests' memories stay within the instance pool
    /// it reserved at the start.
    pub fn update_limits(
        &self,
        memory_bytes: Option<u64>,
        cpus: Option<f64>,
    ) -> Result<(), RuntimeError> {
        if memory_bytes == Some(0) {
            return Err(RuntimeError::Limit {
                limit: "memory limit 0".to_owned(),
                reason: "give at least one byte".to_owned(),
            });
        }
        if let Some(cpus) = cpus.filter(|cpus| cpus.is_nan() || *cpus <= 0.0) {
            return Err(RuntimeError::Limit {
                limit: format!("CPU quota {cpus}"),
                reason: "give a positive number of cores, e.g. 0.5 for half a core".to_owned(),
            });
        }
        let live = &self.shared.usage.live;
        if let Some(bytes) = memory_bytes {
            live.set_memory(bytes);
        }
        if let Some(cpus) = cpus {
            if cpus < 1.0
                && let Some(meter) = &self.shared.meter
            {
                meter.make_precise();
            }
            live.set_cpus(cpus);
        }
        Ok(())
    }

    /// What the sandbox uses now.
    pub fn stats(&self) -> SandboxStats {
        let usage = &self.shared.usage;
        let polls = self
            .shared
            .meter
            .as_ref()
            .map_or(Duration::ZERO, |m| m.used());
        SandboxStats {
            memory_bytes: usage.memory.load(Ordering::Relaxed),
            peak_memory_bytes: usage.peak_memory.load(Ordering::Relaxed),
            cpu_time: polls + Duration::from_nanos(usage.cpu_nanos.load(Ordering::Relaxed)),
            throttled: Duration::from_nanos(usage.throttled_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The status of a sandbox whose task vanished without reporting.
fn lost() -> ExitStatus {
    ExitStatus::ended(
        EXIT_KILLED,
        ExitReason::Killed {
            mode: KillMode::Immediate,
        },
    )
}

/// How a guest's run ended, before it is turned into an [`ExitStatus`].
enum Outcome {
    Finished(wasmtime::Result<Vec<String>>),
    TimedOut,
    Killed(KillMode),
    Panicked(String),
}

/// How one kind of guest is entered once its store exists.
trait Guest<W>: Send + 'static {
    fn enter<'a>(
        self,
        store: &'a mut Store<GuestState<W>>,
    ) -> Pin<Box<dyn Future<Output = wasmtime::Result<Vec<String>>> + Send + 'a>>;
}

/// A guest holds its program, whose linked form it borrows (cloning one
/// is several reference counts shared by every sandbox of the program).
struct ModuleGuest {
    program: Program,
    entrypoint: Entrypoint,
    args: Vec<String>,
    origin: String,
}

impl Guest<WasiP1Ctx> for ModuleGuest {
    fn enter<'a>(
        self,
        store: &'a mut Store<GuestState<WasiP1Ctx>>,
    ) -> Pin<Box<dyn Future<Output = wasmtime::Result<Vec<String>>> + Send + 'a>> {
        Box::pin(async move {
            let pre = self.program.module_pre(&self.origin)?;
            let instance = pre.instantiate_async(&mut *store).await?;
            call_module_entry(store, &instance, &self.entrypoint, &self.args, &self.origin).await
        })
    }
}

struct CommandGuest {
    program: Program,
    origin: String,
}

impl Guest<P2State> for CommandGuest {
    fn enter<'a>(
        self,
        store: &'a mut Store<GuestState<P2State>>,
    ) -> Pin<Box<dyn Future<Output = wasmtime::Result<Vec<String>>> + Send + 'a>> {
        Box::pin(async move {
            let pre = self.program.command_pre(&self.origin)?;
            let command = pre.instantiate_async(&mut *store).await?;
            match command.wasi_cli_run().call_run(&mut *store).await? {
                Ok(()) => Ok(Vec::new()),
                Err(()) => Err(wasmtime::Error::new(I32Exit(1))),
            }
        })
    }
}

impl Runtime {
    /// Starts `program` in a new sandbox described by `spec` and returns
    /// its handle at once.
    ///
    /// Must be called within a tokio runtime: the guest runs as a task of
    /// it. Errors are berth's own failures found before the guest starts
    /// (bad mounts, unlinkable imports, a missing entry point); anything
    /// the guest does is reported by [`SandboxHandle::wait`].
    pub fn start(
        &self,
        program: &Program,
        mut spec: SandboxSpec,
    ) -> Result<SandboxHandle, RuntimeError> {
        let tokio =
            tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoAsyncRuntime)?;
        let limits = spec.limits.clone();
        let reserved = program.footprint().bytes;
        let engine = &program.inner.slot.engine;
        let usage = Arc::new(Usage::default());
        // A quota needs the thread's CPU clock; statistics alone make do
        // with the wall time of the sandbox's polls (see CpuMeter).
        let quota = limits.cpus.is_some_and(|cpus| cpus < 1.0);
        let meter = Arc::new(if quota {
            CpuMeter::new(limits.cpu_clock)
        } else {
            CpuMeter::estimating()
        });
        match program.code() {
            // Only an explicit `-p` is refused: an image's EXPOSE is metadata,
            // and a module that cannot listen simply never uses it.
            Code::Module(_) if !spec.network.publish.is_empty() => Err(NetError::CannotListen {
                origin: spec.program_name,
            }
            .into()),
            Code::Module(_) => {
                program.check_module_entry(&spec.entrypoint, &spec.args, &spec.program_name)?;
                program.module_pre(&spec.program_name)?;
                let mut wasi = wasi_builder(&mut spec)?.build_p1();
                wasi.ctx().table.set_max_capacity(MAX_COMMAND_RESOURCES);
                let store = new_store(
                    engine,
                    wasi,
                    &limits,
                    reserved,
                    usage.clone(),
                    Some(meter.clone()),
                );
                let guest = ModuleGuest {
                    program: program.clone(),
                    entrypoint: spec.entrypoint,
                    args: spec.args,
                    origin: spec.program_name,
                };
                Ok(self.spawn(&tokio, store, guest, limits, usage, meter))
            }
            Code::Component(_) => {
                if let Entrypoint::Export(name) = &spec.entrypoint {
                    return Err(RuntimeError::Entrypoint {
                        origin: spec.program_name,
                        reason: format!(
                            "is a component; calling the export {name:?} directly is only supported for core modules"
                        ),
                    });
                }
                program.command_pre(&spec.program_name)?;
                let mut builder = wasi_builder(&mut spec)?;
                spec.network.check_ports_free()?;
                let net = spec.network.grant(&mut builder);
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_COMMAND_RESOURCES);
                let state = P2State {
                    ctx: builder.build(),
                    table,
                    net,
                };
                let store = new_store(
                    engine,
                    state,
                    &limits,
                    reserved,
                    usage.clone(),
                    Some(meter.clone()),
                );
                Ok(self.spawn(
                    &tokio,
                    store,
                    CommandGuest {
                        program: program.clone(),
                        origin: spec.program_name,
                    },
                    limits,
                    usage,
                    meter,
                ))
            }
        }
    }

    /// Starts `program` as [`Runtime::start`] does and waits for its end.
    pub async fn run(
        &self,
        program: &Program,
        spec: SandboxSpec,
    ) -> Result<ExitStatus, RuntimeError> {
        Ok(self.start(program, spec)?.wait().await)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn<W: Send + 'static, G: Guest<W>>(
        &self,
        tokio: &tokio::runtime::Handle,
        store: Store<GuestState<W>>,
        guest: G,
        limits: Limits,
        usage: Arc<Usage>,
        meter: Arc<CpuMeter>,
    ) -> SandboxHandle {
        let (handle, task) = SandboxHandle::pair(usage, Some(meter));
        // The task keeps the runtime (and with it the epoch clock) alive for
        // as long as the guest runs; the guest holds its program.
        let runtime = self.clone();
        let hold = self.hold_clock();
        tokio.spawn(async move {
            let outcome = drive(store, guest, &limits, &task).await;
            task.finish(outcome);
            drop((hold, runtime));
        });
        handle
    }
}

/// Runs the guest until it ends, times out or is killed.
async fn drive<W: Send + 'static, G: Guest<W>>(
    mut store: Store<GuestState<W>>,
    guest: G,
    limits: &Limits,
    task: &TaskSide,
) -> ExitStatus {
    if store.data().memory_refused().is_some() {
        return finish(Outcome::Finished(Err(out_of_memory())), &store, limits);
    }
    let meter = store.data().cpu_meter();
    let outcome = {
        let run = Metered::new(CatchUnwind(guest.enter(&mut store)), meter);
        let run = with_timeout(deadline(limits), run);
        tokio::select! {
            biased;
            mode = task.killed() => Outcome::Killed(mode),
            result = run => match result {
                None => Outcome::TimedOut,
                Some(Err(panic)) => Outcome::Panicked(panic),
                Some(Ok(result)) => Outcome::Finished(result),
            },
        }
    };
    finish(outcome, &store, limits)
}

/// `None` when the deadline passed first.
pub(crate) async fn with_timeout<F: Future>(
    deadline: Option<std::time::Instant>,
    future: F,
) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
        None => Some(future.await),
    }
}

fn finish<W>(outcome: Outcome, store: &Store<GuestState<W>>, limits: &Limits) -> ExitStatus {
    let state = store.data();
    let mut status = match outcome {
        Outcome::TimedOut => ExitStatus::ended(
            EXIT_KILLED,
            ExitReason::TimedOut {
                after: limits.timeout.unwrap_or_default(),
            },
        ),
        Outcome::Killed(mode) => ExitStatus::ended(
            match mode {
                KillMode::Graceful => EXIT_TERMINATED,
                KillMode::Immediate => EXIT_KILLED,
            },
            ExitReason::Killed { mode },
        ),
        Outcome::Panicked(message) => ExitStatus::ended(
            EXIT_TRAPPED,
            ExitReason::Trapped {
                message: format!("host code serving the sandbox failed: {message}"),
            },
        ),
        Outcome::Finished(Ok(returned)) => ExitStatus {
            returned,
            ..ExitStatus::exited(0)
        },
        Outcome::Finished(Err(error)) => {
            if let Some(exit) = error.downcast_ref::<I32Exit>() {
                ExitStatus::exited(exit.0)
            } else if let (Some(requested), Some(limit)) =
                (state.memory_refused(), state.memory_limit())
            {
                ExitStatus::ended(EXIT_KILLED, ExitReason::OomKilled { limit, requested })
            } else if let Some(entry) = error.downcast_ref::<EntryError>() {
                ExitStatus::ended(
                    EXIT_TRAPPED,
                    ExitReason::Trapped {
                        message: entry.0.clone(),
                    },
                )
            } else {
                ExitStatus::ended(
                    EXIT_TRAPPED,
                    ExitReason::Trapped {
                        message: format!("{error:?}"),
                    },
                )
            }
        }
    };
    status.throttled = state.throttled();
    status
}

/// A future whose panics are caught and returned as their message.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

/// The message a panic carried.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
