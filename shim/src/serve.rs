//! The shim's server: the ttrpc task service on the socket containerd
//! chose, until containerd shuts the shim down.
//!
//! The `containerd-shim` crate's own server registers the task API under
//! its v3 name (`containerd.task.v3.Task`, containerd 2.x) only; containerd
//! 1.6 and 1.7 call the same messages as `containerd.task.v2.Task`. This
//! server registers both, so one binary serves every containerd from 1.6
//! on. Start and delete (short-lived invocations) stay the crate's.

use std::path::Path;
use std::sync::Arc;

use containerd_shim::Flags;
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::publisher::RemotePublisher;

use crate::service::Service;

/// The task API names containerd versions call the task service by.
const TASK_SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

/// Serves the task service on `flags.socket` until containerd shuts the
/// shim down.
pub async fn serve(flags: &Flags) -> Result<(), String> {
    if flags.socket.is_empty() {
        return Err("no -socket given: containerd starts the shim server with one".to_owned());
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|error| format!("cannot set up logging: {error}"))?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| "TTRPC_ADDRESS is not set: containerd sets it for its shims".to_owned())?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|error| format!("cannot connect to containerd at {ttrpc_address}: {error}"))?;
    let service = Service::new(&flags.namespace);
    service.set_publisher(publisher);

    let task: Arc<dyn Task + Send + Sync> = Arc::new(service.clone());
    let mut services = std::collections::HashMap::new();
    for name in TASK_SERVICES {
        let mut generated = create_task(task.clone());
        if let Some(methods) = generated.remove(TASK_SERVICES[1]) {
            services.insert(name.to_owned(), methods);
        }
    }
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    let listener = listen(Path::new(path))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server
        .start()
        .await
        .map_err(|error| format!("cannot serve on {path}: {error}"))?;
    release_stdout();
    log::info!("berth shim serving on {path}");
    service.shut_down().await;
    if let Err(error) = server.shutdown().await {
        log::warn!("shim server shutdown: {error}");
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Binds the socket, replacing a stale one (no server answers on it).
fn listen(path: &Path) -> Result<Listener, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|error| format!("cannot listen on {}: {error}", path.display()))?;
    Listener::try_from(listener)
        .map_err(|error| format!("cannot listen on {}: {error}", path.display()))
}

/// The `start` invocation that spawned this server reads its stdout until
/// it closes: pointing stdout at stderr (containerd's shim log) closes the
/// pipe, which tells it the server is up.
fn release_stdout() {
    // SAFETY: dup2 on the process's own standard descriptors; nothing else
    // holds a reference to descriptor 1 as a Rust object.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        log::warn!("cannot release stdout: {}", std::io::Error::last_os_error());
    }
}
