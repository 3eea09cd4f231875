//! Benchmark: in-process start-to-exit latency of WASI commands, berth
//! against the engine's floor, in the same run.
//!
//! berth: the program is loaded once ([`Runtime::load`]), then each sample
//! is `Runtime::start(..)` + `SandboxHandle::wait()` with stdout and stderr
//! discarded: a WASI context, a store with its limits, a task, the run to
//! exit and the exit status.
//!
//! The floor: the least a wasmtime host can do for the same work, written
//! against wasmtime and wasmtime-wasi directly: the same engine settings
//! (so the machine code is the same), a pooling allocator, one reused
//! `InstancePre`, and per sample a WASI context writing to a sink, a store,
//! instantiation and the call of the entry point.
//!
//! Sequential samples run on a current-thread tokio runtime. Concurrent
//! samples keep K sandboxes in flight on a 2-worker multi-thread runtime
//! (K client tasks, each starting one sandbox after another) and report the
//! per-sandbox start-to-exit latency and the throughput.
//!
//! Usage: `cargo run --release -p berth-runtime --example instantiate -- [--only HOST] [RUNS] [FILE...]`
//! (default: 5000 runs each of `examples/wasm/hello.wasm` and
//! `examples/wasm/hello-p2.wasm`; `--only` keeps the hosts whose label
//! contains HOST, for profiling one of them; ratios are then to the first
//! host kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::wasmtime::component::ResourceTable;
use berth_runtime::wasmtime::{
    Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig, Store,
};
use berth_runtime::{
    EngineChoice, Output, PoolSizing, Program, Runtime, RuntimeConfig, SandboxSpec,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Sandboxes in flight at once in the concurrent rounds.
const IN_FLIGHT: [usize; 3] = [2, 8, 64];

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1).peekable();
    let only = if args.peek().map(String::as_str) == Some("--only") {
        args.next();
        Some(
            args.next()
                .ok_or("--only needs a host name, e.g. --only berth")?,
        )
    } else {
        None
    };
    let runs: usize = match args.peek().map(|arg| arg.parse::<usize>()) {
        Some(Ok(runs)) => {
            args.next();
            runs
        }
        _ => 5000,
    };
    let mut files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm");
        files = vec![examples.join("hello.wasm"), examples.join("hello-p2.wasm")];
    }
    println!(
        "| program | host | in flight | runs | p50 | p99 | mean | sandboxes/s | p50 ÷ floor | p99 ÷ floor |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for file in &files {
        bench_file(file, runs, only.as_deref())?;
    }
    Ok(())
}

/// What one round measured.
struct Round {
    runs: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
    per_second: f64,
}

impl Round {
    fn of(mut samples: Vec<Duration>, wall: Duration) -> Round {
        samples.sort();
        let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        Round {
            runs: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            mean: samples.iter().sum::<Duration>() / samples.len() as u32,
            per_second: samples.len() as f64 / wall.as_secs_f64(),
        }
    }
}

fn micros(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 100.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{micros:.0} µs")
    }
}

/// The hosts measured for each program.
#[derive(Clone)]
enum Host {
    Floor(Arc<Floor>),
    Berth { runtime: Runtime, program: Program },
}

impl Host {
    /// Starts one sandbox and waits for its end.
    async fn run_once(&self) -> Result<(), Error> {
        match self {
            // Like berth, the floor runs each sandbox as a task of its own
            // (what lets a host run many at once and wait for any).
            Host::Floor(floor) => {
                let floor = floor.clone();
                tokio::spawn(async move { floor.run_once().await }).await?
            }
            Host::Berth { runtime, program } => {
                let spec = SandboxSpec {
                    program_name: "hello".into(),
                    stdout: Output::Null,
                    stderr: Output::Null,
                    ..SandboxSpec::default()
                };
                let status = runtime.start(program, spec)?.wait().await;
                if status.code != 0 {
                    return Err(
                        format!("the guest exited {}: {:?}", status.code, status.reason).into(),
                    );
                }
                Ok(())
            }
        }
    }
}

/// Rounds each measurement is split into, alternating between the hosts,
/// so that a change in the machine's load touches every host alike.
const CHUNKS: usize = 10;

fn bench_file(file: &Path, runs: usize, only: Option<&str>) -> Result<(), Error> {
    let bytes = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let pooling = Host::Floor(Arc::new(Floor::new(&bytes, true)?));
    let on_demand = Host::Floor(Arc::new(Floor::new(&bytes, false)?));
    let runtime = Runtime::new(RuntimeConfig::default());
    let command = Host::Berth {
        program: runtime.load(&bytes, &name, EngineChoice::Command)?,
        runtime: runtime.clone(),
    };
    let serving = Host::Berth {
        program: runtime.load(&bytes, &name, EngineChoice::Serving(POOL))?,
        runtime,
    };
    let hosts: Vec<(&str, Host)> = [
        ("floor: wasmtime, pooling", pooling),
        ("floor: wasmtime, on-demand", on_demand),
        ("berth, pooling engine", serving),
        ("berth, command engine (on-demand)", command),
    ]
    .into_iter()
    .filter(|(label, _)| only.is_none_or(|only| label.contains(only)))
    .collect();
    let row = |host: &str, in_flight: usize, round: &Round, floor: &Round| {
        println!(
            "| `{name}` | {host} | {in_flight} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            round.runs,
            micros(round.p50),
            micros(round.p99),
            micros(round.mean),
            round.per_second,
            round.p50.as_secs_f64() / floor.p50.as_secs_f64(),
            round.p99.as_secs_f64() / floor.p99.as_secs_f64(),
        );
    };
    let report = |in_flight: usize, rounds: &[Round]| {
        for ((label, _), round) in hosts.iter().zip(rounds) {
            row(label, in_flight, round, &rounds[0]);
        }
    };

    let sequential = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rounds = sequential.block_on(interleaved(&hosts, runs, 1))?;
    report(1, &rounds);
    drop(sequential);

    let concurrent = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for in_flight in IN_FLIGHT {
        let rounds = concurrent.block_on(interleaved(&hosts, runs, in_flight))?;
        report(in_flight, &rounds);
    }
    Ok(())
}

/// Measures every host with `in_flight` sandboxes at once, `runs` samples
/// each, in [`CHUNKS`] alternating rounds after a warm-up of a tenth.
async fn interleaved(
    hosts: &[(&str, Host)],
    runs: usize,
    in_flight: usize,
) -> Result<Vec<Round>, Error> {
    let chunk = runs.div_ceil(CHUNKS);
    let mut samples = vec![Vec::with_capacity(runs); hosts.len()];
    let mut walls = vec![Duration::ZERO; hosts.len()];
    for (_, host) in hosts {
        measure(host, (runs / 10).max(in_flight), in_flight).await?;
    }
    for _ in 0..CHUNKS {
        for (index, (_, host)) in hosts.iter().enumerate() {
            let (taken, wall) = measure(host, chunk, in_flight).await?;
            samples[index].extend(taken);
            walls[index] += wall;
        }
    }
    Ok(samples
        .into_iter()
        .zip(walls)
        .map(|(samples, wall)| Round::of(samples, wall))
        .collect())
}

/// `in_flight` client tasks, each starting sandboxes one after another,
/// `runs` in all; the start-to-exit time of each and the wall time.
async fn measure(
    host: &Host,
    runs: usize,
    in_flight: usize,
) -> Result<(Vec<Duration>, Duration), Error> {
    let per_client = runs.div_ceil(in_flight);
    let started = Instant::now();
    let clients: Vec<_> = (0..in_flight)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let started = Instant::now();
                    host.run_once().await?;
                    samples.push(started.elapsed());
                }
                Ok::<_, Error>(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(per_client * in_flight);
    for client in clients {
        samples.extend(client.await??);
    }
    Ok((samples, started.elapsed()))
}

/// The pool of berth's pooling engine and of the pooling floor.
const POOL: PoolSizing = PoolSizing {
    concurrent_instances: 128,
    max_memory_bytes: 64 << 20,
};

/// The floor: a minimal wasmtime host, one reused `InstancePre`.
struct Floor {
    engine: Engine,
    pre: FloorPre,
}

enum FloorPre {
    Module(InstancePre<WasiP1Ctx>),
    Component(CommandPre<FloorP2>),
}

/// A preview2 store's data: the WASI context and its resource table.
struct FloorP2 {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for FloorP2 {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Floor {
    /// The floor for `bytes`, with a pooling allocator sized and tuned as
    /// berth's pooling engine for [`POOL`] (`runtime/src/engine.rs`), or
    /// with on-demand allocation.
    fn new(bytes: &[u8], pooling: bool) -> Result<Floor, Error> {
        let mut config = berth_runtime::engine_config();
        if pooling {
            let instances = POOL.concurrent_instances;
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(instances)
                .total_core_instances(instances * 8)
                .total_memories(instances * 2)
                .total_tables(instances * 4)
                .total_stacks(instances)
                .max_memory_size(POOL.max_memory_bytes as usize)
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10)
                .pagemap_scan(berth_runtime::wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let (binary, kind) = berth_runtime::program::to_binary(bytes, "floor")?;
        let bytes = &*binary;
        let pre = if kind == berth_runtime::WasmKind::Component {
            let component = berth_runtime::wasmtime::component::Component::new(&engine, bytes)?;
            let mut linker = berth_runtime::wasmtime::component::Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            FloorPre::Component(CommandPre::new(linker.instantiate_pre(&component)?)?)
        } else {
            let module = berth_runtime::wasmtime::Module::new(&engine, bytes)?;
            let mut linker = Linker::new(&engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |ctx: &mut WasiP1Ctx| ctx)?;
            FloorPre::Module(linker.instantiate_pre(&module)?)
        };
        Ok(Floor { engine, pre })
    }

    fn wasi() -> WasiCtxBuilder {
        let mut builder = WasiCtxBuilder::new();
        builder
            .arg("hello")
            .stdout(tokio::io::empty())
            .stderr(tokio::io::empty());
        builder
    }

    async fn run_once(&self) -> Result<(), Error> {
        match &self.pre {
            FloorPre::Module(pre) => {
                let mut store = Store::new(&self.engine, Self::wasi().build_p1());
                // The engine checks the epoch (as berth's does); nothing
                // advances it here, so this deadline is never reached.
                store.set_epoch_deadline(1);
                let instance = pre.instantiate_async(&mut store).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                match start.call_async(&mut store, ()).await {
                    Ok(()) => Ok(()),
                    Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                        Some(wasmtime_wasi::I32Exit(0)) => Ok(()),
                        _ => Err(error.into()),
                    },
                }
            }
            FloorPre::Component(pre) => {
                let state = FloorP2 {
                    ctx: Self::wasi().build(),
                    table: ResourceTable::new(),
                };
                let mut store = Store::new(&self.engine, state);
                store.set_epoch_deadline(1);
                let command = pre.instantiate_async(&mut store).await?;
                command
                    .wasi_cli_run()
                    .call_run(&mut store)
                    .await?
                    .map_err(|()| "the guest exited 1".into())
            }
        }
    }
}
