//! Benchmark: in-process instantiate-to-exit latency of a WASI command.
//!
//! Loads the program once (through the compile cache), then creates a fresh
//! sandbox and runs it to exit N times, printing p50, p99 and the mean.
//! Usage: `cargo run --release -p berth-runtime --example instantiate -- FILE [N]`

use std::time::{Duration, Instant};

use berth_runtime::{CompileCache, EngineChoice, Output, Runtime, RuntimeConfig, SandboxSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: instantiate FILE [N]")?;
    let iterations: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(2000);
    let cache_dir = tempfile::tempdir()?;
    let berth = Runtime::new(RuntimeConfig {
        compile_cache: Some(CompileCache::new(cache_dir.path())),
    });
    let program = berth.load(&std::fs::read(&file)?, &file, EngineChoice::Command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples: Vec<Duration> = Vec::with_capacity(iterations);
    for round in 0..iterations + iterations / 10 {
        let spec = SandboxSpec {
            program_name: "bench".into(),
            stdout: Output::Null,
            stderr: Output::Null,
            ..SandboxSpec::default()
        };
        let started = Instant::now();
        let status = runtime.block_on(berth.run(&program, spec))?;
        let elapsed = started.elapsed();
        if status.code != 0 {
            return Err(format!("guest exited {}", status.code).into());
        }
        // The first tenth warms caches and is not counted.
        if round >= iterations / 10 {
            samples.push(elapsed);
        }
    }
    samples.sort();
    let percentile = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{file}: {} runs, p50 {:?}, p99 {:?}, mean {:?}",
        samples.len(),
        percentile(0.50),
        percentile(0.99),
        mean
    );
    Ok(())
}
