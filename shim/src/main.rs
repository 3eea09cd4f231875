//! `containerd-shim-berth-v1`: berth's containerd shim (runtime type
//! `io.containerd.berth.v1`). containerd starts it per container and talks
//! to it over ttrpc; each task is a WebAssembly sandbox inside this
//! process, run by berth's container library. Linux only.

#[cfg(target_os = "linux")]
mod bundle;
#[cfg(target_os = "linux")]
mod metrics;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod rootfs;
#[cfg(target_os = "linux")]
mod serve;
#[cfg(target_os = "linux")]
mod service;

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if let Ok(flags) = containerd_shim::parse(&args[1..])
        && flags.action.is_empty()
        && !flags.info
        && !flags.version
    {
        if let Err(message) = serve::serve(&flags).await {
            eprintln!("{}: {message}", service::RUNTIME_ID);
            std::process::exit(1);
        }
        return;
    }
    let config = containerd_shim::Config {
        // berth starts no processes for its tasks; the only children are
        // ones the runtime waits for itself, which a reaper would steal.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<service::Service>(service::RUNTIME_ID, Some(config)).await;
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("containerd-shim-berth-v1 runs on Linux only");
    std::process::exit(1);
}
