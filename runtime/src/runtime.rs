//! [`Runtime`]: the one value that owns everything sandboxes share: the
//! engines, the epoch clock that preempts their guests, the compile cache
//! and the in-memory program cache.
//!
//! A front door (the CLI, the daemon, the containerd shim) creates one at
//! start-up and clones it freely; nothing below it is a process global.
//! Two runtimes in one process never share an engine, a clock or a cache
//! entry, and each keeps every limit of its sandboxes working.
//!
//! Programs are cached by the digest of their WebAssembly and the engine
//! they are compiled for: however many sandboxes run a program, its machine
//! code is in memory once, and it is linked ([`wasmtime::InstancePre`]) once.
//! The cache holds programs weakly: one is freed when no caller and no
//! sandbox uses it any more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::RuntimeError;
use crate::cache::CompileCache;
use crate::engine::{
    BuiltEngine, ClockHold, EpochClock, PoolSizing, command_engine, serving_engine,
};
use crate::precompiled::{Precompiled, engine_key_for, host_target, looks_like_code, pick};
use crate::program::{Code, ProgramInner, WasmKind, to_binary};
use crate::sizing::{Machine, Reservation};
use crate::{Program, program};

/// Which engine a program is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EngineChoice {
    /// On-demand allocation: commands, socket apps, anything started once.
    #[default]
    Command,
    /// A pooling engine for serving many short-lived instances (wasi:http).
    Serving(PoolSizing),
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled code is kept between processes; `None` compiles in
    /// memory every time a program is first loaded.
    pub compile_cache: Option<CompileCache>,
}

/// The sandbox runtime: engines, epoch clock, compile and program caches.
/// Cheap to clone; every clone is the same runtime.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("compile_cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

pub(crate) struct RuntimeInner {
    command: OnceLock<Arc<EngineSlot>>,
    serving: Mutex<Vec<(PoolSizing, Arc<EngineSlot>)>>,
    clock: EpochClock,
    cache: Option<CompileCache>,
    programs: Mutex<HashMap<ProgramKey, Weak<ProgramInner>>>,
    next_engine: AtomicU64,
}

/// An engine and what is built once per engine.
pub(crate) struct EngineSlot {
    pub(crate) engine: Engine,
    /// Its reservations, when not wasmtime's defaults: code compiled for
    /// it elsewhere (in the compile child) must be compiled for them.
    pub(crate) reservation: Option<Reservation>,
    /// Instances its pool holds at once; `None` for on-demand allocation.
    pub(crate) pool_instances: Option<u32>,
    /// Distinguishes the engines of one runtime in program cache keys.
    id: u64,
    pub(crate) linkers: crate::sandbox::Linkers,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProgramKey {
    engine: u64,
    kind: WasmKind,
    digest: [u8; 32],
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Runtime {
    /// A runtime that compiles in memory, without a compile cache.
    fn default() -> Self {
        Runtime::new(RuntimeConfig::default())
    }
}

impl Runtime {
    /// A runtime with these settings. Engines are created when first used.
    pub fn new(config: RuntimeConfig) -> Self {
        Runtime {
            inner: Arc::new(RuntimeInner {
                command: OnceLock::new(),
                serving: Mutex::new(Vec::new()),
                clock: EpochClock::new(),
                cache: config.compile_cache,
                programs: Mutex::new(HashMap::new()),
                next_engine: AtomicU64::new(0),
            }),
        }
    }

    /// The compile cache, if this runtime has one.
    pub fn compile_cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    fn new_slot(&self, built: BuiltEngine) -> Arc<EngineSlot> {
        self.inner.clock.add(&built.engine);
        Arc::new(EngineSlot {
            linkers: crate::sandbox::Linkers::default(),
            id: self.inner.next_engine.fetch_add(1, Ordering::Relaxed),
            engine: built.engine,
            reservation: built.reservation,
            pool_instances: built.pool_instances,
        })
    }

    /// The engine `choice` names, created on first use.
    ///
    /// Serving engines are kept per pool size: a request for a pool that no
    /// existing one covers creates a new one (a later server's larger
    /// memory limit is never silently capped by an earlier, smaller pool).
    /// Each new engine is sized to what the machine offers at that moment
    /// ([`crate::sizing`]).
    pub(crate) fn slot(&self, choice: EngineChoice) -> Result<Arc<EngineSlot>, RuntimeError> {
        match choice {
            EngineChoice::Command => {
                if let Some(slot) = self.inner.command.get() {
                    return Ok(slot.clone());
                }
                let slot = self.new_slot(command_engine(&Machine::probe_limit())?);
                Ok(self.inner.command.get_or_init(|| slot).clone())
            }
            EngineChoice::Serving(sizing) => {
                let mut pools = lock(&self.inner.serving);
                if let Some((_, slot)) = pools.iter().find(|(pool, _)| pool.covers(&sizing)) {
                    return Ok(slot.clone());
                }
                let slot = self.new_slot(serving_engine(sizing, &Machine::probe())?);
                pools.push((sizing, slot.clone()));
                Ok(slot)
            }
        }
    }

    /// The wasmtime engine `choice` names (for hosts that need wasmtime's
    /// own types, e.g. to inspect a component).
    pub fn engine(&self, choice: EngineChoice) -> Result<Engine, RuntimeError> {
        Ok(self.slot(choice)?.engine.clone())
    }

    /// Classifies `bytes` (a module, a component or WebAssembly text) and
    /// returns the program compiled for `choice`'s engine: from memory if
    /// this runtime already has it, else from the compile cache, else
    /// compiled. `origin` names the program in messages. A runtime built
    /// without the `compiler` feature cannot compile: it refuses with
    /// [`RuntimeError::NotPrecompiled`] (see [`Runtime::load_precompiled`]).
    pub fn load(
        &self,
        bytes: &[u8],
        origin: &str,
        choice: EngineChoice,
    ) -> Result<Program, RuntimeError> {
        self.load_precompiled(bytes, origin, choice, &[])
    }

    /// As [`Runtime::load`], but first looks among `precompiled` (code an
    /// image carries, [`crate::precompiled`]) for code made for this
    /// machine's target and `choice`'s engine from exactly `bytes`, and
    /// loads that instead of compiling. Candidates for other targets,
    /// engines or programs are ignored; a matching candidate that is not
    /// wasmtime's code, or that wasmtime refuses, is an error
    /// ([`RuntimeError::Precompiled`]), never compiled around. Without a
    /// matching candidate, a runtime without the compiler refuses with
    /// [`RuntimeError::NotPrecompiled`], naming its target and engine key.
    ///
    /// The caller vouches for the integrity of each candidate's code (an
    /// image store verifies blobs against their digests): deserializing
    /// machine code trusts it.
    pub fn load_precompiled(
        &self,
        bytes: &[u8],
        origin: &str,
        choice: EngineChoice,
        precompiled: &[Precompiled],
    ) -> Result<Program, RuntimeError> {
        let (binary, kind) = to_binary(bytes, origin)?;
        let slot = self.slot(choice)?;
        let key = ProgramKey {
            engine: slot.id,
            kind,
            digest: Sha256::digest(&binary).into(),
        };
        if let Some(program) = lock(&self.inner.programs).get(&key).and_then(Weak::upgrade) {
            return Ok(Program { inner: program });
        }
        let target = host_target();
        let engine_key = engine_key_for(&target, slot.reservation);
        let code = match pick(precompiled, &target, &engine_key, &key.digest) {
            Some(candidate) => {
                if !looks_like_code(&candidate.code) {
                    return Err(RuntimeError::Precompiled {
                        origin: origin.to_owned(),
                        reason: format!(
                            "the code for {target} is not wasmtime's (it has no ELF header)"
                        ),
                    });
                }
                let code = program::deserialize(&slot.engine, &candidate.code, kind).map_err(
                    |reason| RuntimeError::Precompiled {
                        origin: origin.to_owned(),
                        reason,
                    },
                )?;
                tracing::debug!(origin, target, "precompiled program loaded");
                code
            }
            None => self.compile(
                &slot,
                &binary,
                &key.digest,
                kind,
                origin,
                target,
                engine_key,
            )?,
        };
        let program = Arc::new(ProgramInner::new(code, &binary, slot));
        let mut programs = lock(&self.inner.programs);
        programs.retain(|_, program| program.strong_count() > 0);
        // Two loads may race; the first one stored wins, so that both
        // callers share one copy.
        if let Some(existing) = programs.get(&key).and_then(Weak::upgrade) {
            return Ok(Program { inner: existing });
        }
        programs.insert(key, Arc::downgrade(&program));
        Ok(Program { inner: program })
    }

    /// Compiles `binary` for `slot`'s engine, through the compile cache if
    /// this runtime has one.
    #[cfg(feature = "compiler")]
    #[allow(clippy::too_many_arguments)]
    fn compile(
        &self,
        slot: &EngineSlot,
        binary: &[u8],
        digest: &[u8; 32],
        kind: WasmKind,
        origin: &str,
        _target: String,
        _engine_key: String,
    ) -> Result<Code, RuntimeError> {
        Ok(match &self.inner.cache {
            Some(cache) => {
                let (code, outcome) = cache.load_or_compile(
                    &slot.engine,
                    slot.reservation,
                    binary,
                    digest,
                    kind,
                    origin,
                )?;
                tracing::debug!(origin, ?outcome, "program loaded");
                code
            }
            None => program::compile(&slot.engine, binary, kind, origin)?,
        })
    }

    /// Without the compiler, only precompiled code runs.
    #[cfg(not(feature = "compiler"))]
    #[allow(clippy::too_many_arguments)]
    fn compile(
        &self,
        _slot: &EngineSlot,
        _binary: &[u8],
        _digest: &[u8; 32],
        _kind: WasmKind,
        origin: &str,
        target: String,
        engine_key: String,
    ) -> Result<Code, RuntimeError> {
        Err(RuntimeError::NotPrecompiled {
            origin: origin.to_owned(),
            target,
            engine: engine_key,
        })
    }

    /// Keeps the epoch clock running for a sandbox until the hold drops.
    pub(crate) fn hold_clock(&self) -> ClockHold {
        self.inner.clock.hold()
    }

    /// Programs in the in-memory cache now (each in memory once).
    pub fn cached_programs(&self) -> usize {
        lock(&self.inner.programs)
            .values()
            .filter(|program| program.strong_count() > 0)
            .count()
    }
}
