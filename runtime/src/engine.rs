//! wasmtime engines and the epoch clock that preempts their guests.
//!
//! Engines are plain values owned by a [`crate::Runtime`]: this module only
//! knows how to configure them. Epoch interruption is always on, so that
//! CPU quotas, timeouts and kills can stop a guest at any loop back-edge;
//! an [`EpochClock`] advances the epoch of every engine of its runtime every
//! [`EPOCH_TICK`], on one thread that sleeps while no sandbox runs and ends
//! with the runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::{Config, Engine};

use crate::sizing::{
    MEMORIES_PER_INSTANCE, Machine, Reservation, TABLES_PER_INSTANCE, command_reservation,
    pool_layout,
};

/// How often the epoch advances. CPU throttling, timeouts and kills act at
/// this granularity: a busy guest runs at most this long between checks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime configuration every berth sandbox uses.
///
/// The compile cache key includes the engine's compatibility hash, so any
/// change here invalidates cached code instead of loading it wrongly.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
        // Guests get a generous but bounded stack: deep recursion traps with
        // "call stack exhausted" instead of taking the host down.
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    #[cfg(feature = "compiler")]
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

/// An engine and the sizing it was built with, which programs compiled
/// elsewhere for it (the compile child) and its handlers must follow.
pub(crate) struct BuiltEngine {
    pub(crate) engine: Engine,
    /// Reservations other than wasmtime's defaults, if the machine needed them.
    pub(crate) reservation: Option<Reservation>,
    /// Instances its pool holds at once (`None`: allocated on demand).
    pub(crate) pool_instances: Option<u32>,
}

/// The configuration for programs compiled for engines with `reservation`.
pub(crate) fn config_for(reservation: Option<Reservation>) -> Config {
    let mut config = engine_config();
    if let Some(reservation) = reservation {
        reservation.apply(&mut config);
    }
    config
}

/// An engine with on-demand allocation: for commands, which start one
/// instance each and should not pay for reserving a pool. Its memories
/// reserve wasmtime's default 4 GiB each unless `machine` cannot give that
/// to enough of them ([`crate::sizing::command_reservation`]).
pub(crate) fn command_engine(machine: &Machine) -> Result<BuiltEngine, crate::RuntimeError> {
    let reservation = command_reservation(machine);
    match reservation {
        Some(reservation) => tracing::info!(
            memory_reservation = reservation.memory,
            guard = reservation.guard,
            address_space = machine.address_space,
            "command engine: smaller memory reservations to fit this machine's address space"
        ),
        None => tracing::debug!("command engine: default memory reservations"),
    }
    let engine = Engine::new(&config_for(reservation))
        .map_err(|error| crate::RuntimeError::Engine(format!("{error:#}")))?;
    Ok(BuiltEngine {
        engine,
        reservation,
        pool_instances: None,
    })
}

/// Bytes of each pooled linear memory kept resident (reset in place rather
/// than unmapped) between instances. With PAGEMAP_SCAN this is a budget of
/// dirtied pages, not a prefix: a small handler dirties well under it and
/// never pays an madvise; a large one keeps at most this much per slot, so
/// a server's memory after a load peak stays near peak concurrency × 1 MiB.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// Bytes of each pooled table kept resident between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Sizing of a serving engine's instance pool: what the caller asks for.
///
/// A machine that cannot reserve it (a 39-bit address space, `ulimit -v`,
/// a device with 1 GiB of RAM) gets a pool that fits instead: smaller
/// per-memory reservations, fewer instances (a handler then lets no more
/// requests run at once than its pool holds) and, only when not even one
/// instance fits, a smaller maximum memory. The sizing chosen is logged at
/// info once per engine; see docs/edge.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolSizing {
    /// Requests that may hold an instance at once.
    pub concurrent_instances: u32,
    /// The largest linear memory one instance may have.
    pub max_memory_bytes: u64,
}

impl PoolSizing {
    /// Whether a pool of this sizing also serves `other`.
    pub fn covers(&self, other: &PoolSizing) -> bool {
        self.concurrent_instances >= other.concurrent_instances
            && self.max_memory_bytes >= other.max_memory_bytes
    }
}

/// An engine for serving: the pooling allocator makes instantiation a
/// matter of handing out pre-reserved slots, which is what makes a fresh
/// instance per request cheap.
///
/// The pool reserves address space up front, sized by
/// [`crate::sizing::pool_layout`] to what `machine` can give (39-bit
/// address spaces, `ulimit -v`, 1 GiB devices); the sizing is logged at
/// info. If even that cannot be reserved, berth logs why and falls back to
/// on-demand allocation instead of refusing to start.
pub(crate) fn serving_engine(
    sizing: PoolSizing,
    machine: &Machine,
) -> Result<BuiltEngine, crate::RuntimeError> {
    let Some(layout) = pool_layout(sizing, machine, KEEP_RESIDENT_MEMORY as u64) else {
        tracing::warn!(
            address_space = machine.address_space,
            "no room for an instance pool in this process's address space; allocating on demand"
        );
        return command_engine(machine);
    };
    tracing::info!(
        instances = layout.instances,
        requested_instances = sizing.concurrent_instances,
        max_memory = layout.max_memory,
        reservations = if layout.reservation.is_some() {
            "reduced"
        } else {
            "default"
        },
        // Absent for wasmtime's defaults (4 GiB and 32 MiB).
        memory_reservation = layout.reservation.map(|r| r.memory),
        guard = layout.reservation.map(|r| r.guard),
        keep_resident = layout.keep_resident,
        reserved = layout.reserved,
        address_space = machine.address_space,
        memory = machine.memory,
        "serving pool sized"
    );
    let instances = layout.instances;
    // Components are made of several core instances (the program, its libc
    // adapter, shims), each with a memory or table or two.
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(MEMORIES_PER_INSTANCE as u32))
        .total_tables(instances.saturating_mul(TABLES_PER_INSTANCE as u32))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(layout.max_memory).unwrap_or(usize::MAX));
    // A slot's memory is reset when its instance ends. By default that is
    // an madvise per slot, which unmaps the pages: every request then
    // page-faults its heap back in and the unmapping costs TLB shootdowns
    // across cores. Keeping up to 1 MiB resident and resetting it in place
    // (only the pages actually dirtied, where the kernel offers PAGEMAP_SCAN,
    // Linux 6.7+) roughly doubles requests per second for a small handler;
    // see docs/benchmarks.md.
    pool.linear_memory_keep_resident(
        usize::try_from(layout.keep_resident).unwrap_or(KEEP_RESIDENT_MEMORY),
    )
    .table_keep_resident(KEEP_RESIDENT_TABLE)
    .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = config_for(layout.reservation);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(BuiltEngine {
            engine,
            reservation: layout.reservation,
            pool_instances: Some(instances),
        }),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                instances,
                "cannot reserve the instance pool; falling back to on-demand allocation"
            );
            command_engine(machine)
        }
    }
}

/// Advances the epoch of a set of engines every [`EPOCH_TICK`] while any
/// sandbox uses it ([`EpochClock::hold`]). Its thread starts on first use
/// and ends when the clock is dropped.
pub(crate) struct EpochClock {
    shared: Arc<ClockShared>,
}

struct ClockShared {
    state: Mutex<ClockState>,
    wake: Condvar,
    /// Sandboxes (or servers) running now: an atomic, so that only the
    /// first of a busy period takes the lock (to start or wake the thread).
    users: AtomicUsize,
}

#[derive(Default)]
struct ClockState {
    engines: Vec<Engine>,
    started: bool,
    stopped: bool,
    /// The thread waits for a user (and must be woken for one).
    asleep: bool,
}

fn lock(shared: &ClockShared) -> MutexGuard<'_, ClockState> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EpochClock {
    pub(crate) fn new() -> Self {
        EpochClock {
            shared: Arc::new(ClockShared {
                state: Mutex::new(ClockState::default()),
                wake: Condvar::new(),
                users: AtomicUsize::new(0),
            }),
        }
    }

    /// Adds `engine` to the engines this clock advances.
    pub(crate) fn add(&self, engine: &Engine) {
        lock(&self.shared).engines.push(engine.clone());
    }

    /// Keeps the clock ticking until the returned guard is dropped.
    pub(crate) fn hold(&self) -> ClockHold {
        let hold = ClockHold {
            shared: self.shared.clone(),
        };
        // The thread sleeps only once it has seen no users under the lock,
        // so whoever ends a spell of none takes the lock after counting
        // itself: the thread then either sees it or is asleep to be woken.
        if self.shared.users.fetch_add(1, Ordering::SeqCst) > 0 {
            return hold;
        }
        let mut state = lock(&self.shared);
        // Waking the thread is a futex call: make it only when the thread
        // is asleep, not on every sandbox's start.
        let asleep = state.asleep;
        if !state.started {
            state.started = true;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("berth-epoch".into())
                .spawn(move || tick(&shared));
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start the epoch thread; CPU quotas, timeouts and kills will not preempt guests");
            }
        }
        drop(state);
        if asleep {
            self.shared.wake.notify_all();
        }
        hold
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        lock(&self.shared).stopped = true;
        self.shared.wake.notify_all();
    }
}

/// The clock thread: tick while someone holds the clock, sleep otherwise.
fn tick(shared: &ClockShared) {
    let mut state = lock(shared);
    loop {
        while shared.users.load(Ordering::SeqCst) == 0 && !state.stopped {
            state.asleep = true;
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.asleep = false;
        }
        if state.stopped {
            // The engines are released with the state's last reference.
            state.engines.clear();
            return;
        }
        drop(state);
        std::thread::sleep(EPOCH_TICK);
        state = lock(shared);
        for engine in &state.engines {
            engine.increment_epoch();
        }
    }
}

/// Keeps an [`EpochClock`] ticking while it lives.
pub(crate) struct ClockHold {
    shared: Arc<ClockShared>,
}

impl Drop for ClockHold {
    fn drop(&mut self) {
        self.shared.users.fetch_sub(1, Ordering::SeqCst);
    }
}
