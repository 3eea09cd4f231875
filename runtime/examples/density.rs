//! Benchmark: many idle sandboxes in one process.
//!
//! Starts N sandboxes of one small preview1 module (one page of linear
//! memory) that writes one byte to stdout and then blocks reading stdin,
//! each with its own in-memory pipe as stdin whose writer is kept open.
//! Reports how long it took until all of them were blocked, and the
//! process's resident memory (VmRSS) per sandbox at 1k, 5k and 10k (and at
//! N). Then closes every stdin, checks that every sandbox exits 0, and
//! reports how long that took and the memory left.
//!
//! Usage: `cargo run --release -p berth-runtime --example density -- [N]`
//! (default 10000).

use std::time::{Duration, Instant};

use berth_runtime::{
    EngineChoice, Output, OutputRing, Runtime, RuntimeConfig, SandboxHandle, SandboxSpec, Stdin,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Writes one byte to stdout (to say it got there), then reads stdin until
/// it ends.
const IDLE: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "r")
  (func (export "_start")
    ;; one iovec at 0: the byte at 64
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; one iovec at 16: 8 bytes at 128
    (i32.store (i32.const 16) (i32.const 128))
    (i32.store (i32.const 20) (i32.const 8))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))))"#;

/// Counts at which the resident memory is reported (those up to N).
const CHECKPOINTS: [usize; 3] = [1_000, 5_000, 10_000];

/// The process's resident memory, in KiB.
fn rss_kib() -> Result<u64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// Waits until the guests have written `count` bytes in all, i.e. until
/// `count` sandboxes have reached their read of stdin.
async fn all_blocked(ring: &OutputRing, count: usize) -> Result<(), Error> {
    let patience = Instant::now();
    while ring.total_written() < count as u64 {
        if patience.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "only {} of {count} sandboxes reached their read of stdin in 120 s",
                ring.total_written()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("N must be a number of sandboxes, not {arg:?}"))?,
        None => 10_000,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runtime = Runtime::new(RuntimeConfig::default());
    let program = runtime.load(IDLE.as_bytes(), "idle.wat", EngineChoice::Command)?;
    let ring = OutputRing::new(16);
    tokio.block_on(async {
        // One sandbox started and ended first, so that the baseline has the
        // engine's and the program's one-off costs in it.
        let warm = SandboxSpec {
            program_name: "idle".into(),
            stdout: Output::Ring(ring.clone()),
            ..SandboxSpec::default()
        };
        runtime.start(&program, warm)?.wait().await;
        let ring = OutputRing::new(16);
        let baseline = rss_kib()?;
        println!("N = {count}; baseline RSS {baseline} KiB (runtime, engine, program)");
        println!("| sandboxes | created in | per sandbox | RSS | RSS per sandbox |");
        println!("|---:|---:|---:|---:|---:|");
        let mut writers = Vec::with_capacity(count);
        let mut handles: Vec<SandboxHandle> = Vec::with_capacity(count);
        let started = Instant::now();
        let mut checkpoints: Vec<usize> = CHECKPOINTS
            .iter()
            .copied()
            .filter(|&checkpoint| checkpoint < count)
            .collect();
        checkpoints.push(count);
        let mut paused = Duration::ZERO;
        for checkpoint in checkpoints {
            while handles.len() < checkpoint {
                let (reader, writer) = tokio::io::duplex(64);
                let spec = SandboxSpec {
                    program_name: "idle".into(),
                    stdin: Stdin::Reader(Box::new(reader)),
                    stdout: Output::Ring(ring.clone()),
                    ..SandboxSpec::default()
                };
                handles.push(runtime.start(&program, spec)?);
                writers.push(writer);
            }
            all_blocked(&ring, checkpoint).await?;
            let created = started.elapsed() - paused;
            let pause = Instant::now();
            let rss = rss_kib()?;
            println!(
                "| {checkpoint} | {:.0} ms | {:.1} µs | {:.1} MiB | {:.0} KiB |",
                created.as_secs_f64() * 1e3,
                created.as_secs_f64() * 1e6 / checkpoint as f64,
                rss as f64 / 1024.0,
                rss.saturating_sub(baseline) as f64 / checkpoint as f64,
            );
            if let Some(exited) = handles.iter().find_map(SandboxHandle::try_wait) {
                return Err(format!("a sandbox ended before its stdin did: {exited:?}").into());
            }
            paused += pause.elapsed();
        }

        let released = Instant::now();
        drop(writers);
        let mut failed = 0usize;
        for handle in &handles {
            let status = tokio::time::timeout(Duration::from_secs(120), handle.wait())
                .await
                .map_err(|_| "a sandbox did not exit within 120 s of its stdin closing")?;
            if status.code != 0 {
                failed += 1;
            }
        }
        let took = released.elapsed();
        drop(handles);
        if failed > 0 {
            return Err(format!("{failed} of {count} sandboxes did not exit 0").into());
        }
        println!(
            "released: all {count} exited 0 within {:.0} ms of their stdin closing; RSS then {:.1} MiB",
            took.as_secs_f64() * 1e3,
            rss_kib()? as f64 / 1024.0
        );
        Ok(())
    })
}
