//! `berth daemon`: desired state (the scheduler's redb store), the
//! controllers, the node agent running pods in one in-process runtime, and
//! the API server in front of them, in the foreground until SIGTERM or
//! Ctrl-C.
//!
//! The API is served on a unix socket in berth's data directory
//! (`$BERTH_HOME/berth.sock`, mode 0600: whoever can open it is the
//! owner), and, with `--listen 127.0.0.1:PORT --token-file FILE`, on a
//! loopback TCP port to clients that send the token as a bearer token.
//! One daemon per data directory: a second one is refused while the first
//! holds its lock.

pub mod api;
pub mod config;
pub mod discovery;
pub mod patch;
pub mod select;
pub mod status;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_scheduler::Store;
use berth_scheduler::kubelet::{ImageSource, Kubelet, KubeletConfig};
use clap::Args;

use config::DaemonConfig;
use status::ApiError;

// Flags of `berth daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Also serve the API on this loopback TCP address (with --token-file).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// A file holding the bearer token TCP clients must send.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// A YAML file overriding the node's allocatable resources and the
    /// restart back-off.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// How long pods and streams get to stop after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The shortest token accepted, so that a guessable one is refused.
const MIN_TOKEN_LEN: usize = 16;

/// Runs the daemon until SIGTERM or Ctrl-C.
pub fn daemon_command(args: DaemonArgs) -> Result<u8> {
    let config = match &args.config {
        Some(path) => DaemonConfig::read(path)?,
        None => DaemonConfig::defaults(),
    };
    let tcp = match (&args.listen, &args.token_file) {
        (Some(listen), Some(token_file)) => Some((loopback(listen)?, read_token(token_file)?)),
        (Some(_), None) => bail!(
            "--listen needs --token-file FILE: the API controls every pod, so a TCP client must present a bearer token"
        ),
        (None, Some(_)) => bail!("--token-file is only used with --listen ADDR:PORT"),
        (None, None) => None,
    };
    raise_open_files_limit();
    let home = crate::home::berth_home()?;
    let dir = crate::home::daemon_dir()?;
    let lock = hold_lock(&dir.join("daemon.lock"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(&home, &dir, config, tcp));
    drop(lock);
    result.map(|()| 0)
}

/// Raises this process's soft limit on open files to its hard limit, as
/// containerd does: every idle pod holds its log open, and a server pod
/// its listening socket, so thousands of pods need thousands of files.
#[cfg(unix)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given; setrlimit only
    // reads it.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
            && {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            }
    };
    if raised {
        tracing::debug!(
            limit = limit.rlim_cur,
            "open-files limit raised to its hard limit"
        );
    }
}

#[cfg(not(unix))]
fn raise_open_files_limit() {}

/// Holds the daemon's lock for the life of the process: a second daemon on
/// the same data directory is refused.
fn hold_lock(path: &Path) -> Result<std::fs::File> {
    let file = crate::supervisor::open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another berth daemon is running on this data directory (it holds {})",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The `--listen` address, loopback only.
fn loopback(text: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = text.parse().with_context(|| {
        format!("--listen {text:?}: expected ADDRESS:PORT, such as 127.0.0.1:6443")
    })?;
    if !addr.ip().is_loopback() {
        bail!(
            "--listen {text}: only loopback addresses (127.0.0.1, ::1) are served: the API speaks plain HTTP and controls every pod; reach it from elsewhere through an SSH tunnel or a TLS proxy"
        );
    }
    Ok(addr)
}

/// The bearer token: the file's content without surrounding whitespace.
fn read_token(path: &Path) -> Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the token file {} can be read by others (mode {mode:04o}): make it owner-only with `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the token file {} must hold one token of at least {MIN_TOKEN_LEN} characters without spaces",
            path.display()
        );
    }
    Ok(token.as_bytes().to_vec())
}

async fn serve(
    home: &Path,
    dir: &Path,
    config: DaemonConfig,
    tcp: Option<(SocketAddr, Vec<u8>)>,
) -> Result<()> {
    let state_path = dir.join("state.redb");
    let store = Arc::new(
        Store::open(&state_path)
            .with_context(|| format!("cannot open the state at {}", state_path.display()))?,
    );
    ensure_default_namespace(&store)?;
    let cache = crate::home::compile_cache(crate::home::compile_limits(None)?)?;
    let runtime = berth_runtime::Runtime::new(berth_runtime::RuntimeConfig {
        compile_cache: Some(cache),
    });
    let scratch_dir = dir.join("scratch");
    let pods_dir = dir.join("pods");
    for folder in [&scratch_dir, &pods_dir] {
        berth_fs::create_private_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let images = ImageSource {
        store: crate::home::open_store()?,
        rootfs_dir: crate::home::rootfs_cache_dir()?,
        scratch_dir,
        unpack_limits: crate::home::unpack_limits()?,
    };
    let kubelet = Kubelet::new(
        Arc::clone(&store),
        runtime,
        images,
        KubeletConfig {
            pods_dir,
            allocatable: config.allocatable,
            backoff: config.backoff,
            distinct_addresses: cfg!(target_os = "linux"),
            default_grace_period: Duration::from_secs(30),
        },
    );
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let router = api::Api::new(Arc::clone(&store), kubelet.clone(), stopping.clone()).router();

    let mut servers = tokio::task::JoinSet::new();
    #[cfg(unix)]
    {
        let socket = crate::home::socket_path()?;
        let listener = bind_socket(&socket)?;
        tracing::info!(socket = %socket.display(), "serving the API");
        let app = router.clone();
        let mut stopped = stopping.clone();
        servers.spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            let _ = std::fs::remove_file(&socket);
            result.context("the unix socket server failed")
        });
    }
    #[cfg(not(unix))]
    if tcp.is_none() {
        bail!(
            "on this system the daemon serves TCP only: start it with --listen 127.0.0.1:PORT --token-file FILE"
        );
    }
    if let Some((addr, token)) = tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %bound, "serving the API over TCP (bearer token required)");
        let app = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ));
        let mut stopped = stopping.clone();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .context("the TCP server failed")
        });
    }

    let controllers = tokio::spawn(berth_scheduler::controller::run(
        Arc::clone(&store),
        stopping.clone(),
    ));
    let agent = {
        let kubelet = kubelet.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move { kubelet.run(stopping).await })
    };
    tracing::info!(home = %home.display(), "berth daemon started");

    let outcome = tokio::select! {
        signal = stop_signal() => {
            tracing::info!(signal, "stopping");
            Ok(())
        }
        Some(ended) = servers.join_next() => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(error) => Err(anyhow::anyhow!("a server task failed: {error}")),
        },
    };
    let _ = stop.send(true);
    let finish = async {
        while servers.join_next().await.is_some() {}
        let _ = controllers.await;
        let _ = agent.await;
    };
    if tokio::time::timeout(STOP_WAIT, finish).await.is_err() {
        tracing::warn!("some pods or streams did not stop in time");
    }
    tracing::info!("berth daemon stopped");
    outcome
}

/// Stores the `default` namespace on first start, as the API server does.
fn ensure_default_namespace(store: &Store) -> Result<()> {
    use berth_scheduler::k8s_openapi::api::core::v1::Namespace;
    use berth_scheduler::{Kind, Object, StoreError};
    match store.get(Kind::Namespace, "", "default") {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => {
            let mut namespace = Namespace::default();
            namespace.metadata.name = Some("default".to_owned());
            store
                .apply(vec![Object::Namespace(namespace)])
                .context("cannot create the default namespace")?;
            Ok(())
        }
        Err(error) => Err(error).context("cannot read the state"),
    }
}

/// Waits for SIGTERM or Ctrl-C (SIGINT); names the one that came.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Binds the API socket, owner-only. The caller holds the daemon lock, so
/// a socket left at the path is a dead daemon's; it is removed only if it
/// is a socket and nobody answers on it.
#[cfg(unix)]
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another berth daemon answers at {}: stop it first",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: move it away to start the daemon",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect {}", path.display()));
        }
    }
    // The socket is created inside the owner-only data directory, so nobody
    // else can reach it in the moment before its own mode is narrowed.
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} owner-only", path.display()))?;
    Ok(listener)
}

/// Refuses TCP requests without the daemon's bearer token.
async fn require_token(
    State(token): State<Arc<Vec<u8>>>,
    request: Request,
    next: Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(given.ct_eq(token.as_slice())) {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized").into_response()
    }
}
