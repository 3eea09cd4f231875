//! The process-wide wasmtime [`Engine`] and its epoch clock.
//!
//! One engine per process: compiled code, type registries and the signal
//! handlers are shared by every sandbox. Epoch interruption is always on so
//! that CPU quotas and timeouts can preempt a guest at any loop back-edge;
//! the epoch advances every [`EPOCH_TICK`] on a single background thread that
//! is started the first time a sandbox needs it and never stopped.

use std::sync::{Once, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

/// How often the epoch advances. CPU throttling and timeouts act at this
/// granularity: a busy guest runs at most this long between checks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
static TICKER: Once = Once::new();

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
        .cranelift_opt_level(OptLevel::Speed)
        // Guests get a generous but bounded stack: deep recursion traps with
        // "call stack exhausted" instead of taking the host down.
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    config
}

/// Returns the shared engine, creating it on first use.
pub fn shared_engine() -> Result<&'static Engine, crate::RuntimeError> {
    ENGINE
        .get_or_init(|| Engine::new(&engine_config()).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|reason| crate::RuntimeError::Engine(reason.clone()))
}

/// Starts the epoch ticker thread for `engine` if it is not running yet.
///
/// Only needed by sandboxes with a CPU quota or a timeout; a guest without
/// either never looks at the epoch.
pub(crate) fn ensure_epoch_ticker(engine: &'static Engine) {
    TICKER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start the epoch thread; CPU quotas and timeouts will not preempt guests");
        }
    });
}

/// Bytes of each pooled linear memory kept resident (reset in place rather
/// than unmapped) between instances. With PAGEMAP_SCAN this is a budget of
/// dirtied pages, not a prefix: a small handler dirties well under it and
/// never pays an madvise; a large one keeps at most this much per slot, so
/// a server's memory after a load peak stays near peak concurrency × 1 MiB.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;

/// Bytes of each pooled table kept resident between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Sizing of the serving engine's instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Requests that may hold an instance at once.
    pub concurrent_instances: u32,
    /// The largest linear memory one instance may have.
    pub max_memory_bytes: u64,
}

/// An engine for serving: the pooling allocator makes instantiation a
/// matter of handing out pre-reserved slots, which is what makes a fresh
/// instance per request cheap.
///
/// The pool reserves address space up front. If this machine cannot give
/// it (small machines, 39-bit address spaces, `ulimit -v`), berth logs why
/// and falls back to on-demand allocation instead of refusing to start.
pub fn serving_engine(sizing: PoolSizing) -> Result<&'static Engine, crate::RuntimeError> {
    static SERVING: OnceLock<&'static Engine> = OnceLock::new();
    if let Some(engine) = SERVING.get() {
        return Ok(engine);
    }
    let instances = sizing.concurrent_instances.clamp(1, 10_000);
    // Components are made of several core instances (the program, its libc
    // adapter, shims), each with a memory or table or two.
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(sizing.max_memory_bytes).unwrap_or(usize::MAX));
    // A slot's memory is reset when its instance ends. By default that is
    // an madvise per slot, which unmaps the pages: every request then
    // page-faults its heap back in and the unmapping costs TLB shootdowns
    // across cores. Keeping up to 1 MiB resident and resetting it in place
    // (only the pages actually dirtied, where the kernel offers PAGEMAP_SCAN,
    // Linux 6.7+) roughly doubles requests per second for a small handler;
    // see docs/benchmarks.md.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = engine_config();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine: &'static Engine = match Engine::new(&config) {
        Ok(engine) => Box::leak(Box::new(engine)),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                instances,
                "cannot reserve the instance pool; falling back to on-demand allocation"
            );
            shared_engine()?
        }
    };
    Ok(SERVING.get_or_init(|| engine))
}
