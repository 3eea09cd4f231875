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
