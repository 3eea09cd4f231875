//! A host embedding berth: runs the program of one image of an OCI
//! image-layout folder in a sandbox with a memory limit, and prints what it
//! wrote. Usage: `embed LAYOUT IMAGE MEMORY [ARGS...]`, e.g.
//! `embed ./layout hello:v1 64Mi world`.

use berth_registry::{Store, image};
use berth_runtime::quantity::parse_memory;
use berth_runtime::{EngineChoice, Limits, Output, OutputRing, Runtime, SandboxSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [layout, name, memory, guest_args @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: embed LAYOUT IMAGE MEMORY [ARGS...], e.g. embed ./layout hello:v1 64Mi"
        );
    };
    let (wasm, config) = image::program(&Store::open(layout)?, name)?;
    let runtime = Runtime::default();
    let program = runtime.load(&wasm, name, EngineChoice::Command)?;
    let stdout = OutputRing::new(64 << 10);
    let sandbox = runtime.start(
        &program,
        SandboxSpec {
            program_name: name.clone(),
            args: config.argv(guest_args).into_iter().skip(1).collect(),
            limits: Limits {
                memory_bytes: Some(parse_memory(memory)?),
                ..Limits::default()
            },
            stdout: Output::Ring(stdout.clone()),
            stderr: Output::Inherit,
            ..SandboxSpec::default()
        },
    )?;
    let status = sandbox.wait().await;
    print!("{}", String::from_utf8_lossy(&stdout.contents()));
    println!("exit {}: {:?}", status.code, status.reason);
    std::process::exit(status.code)
}
