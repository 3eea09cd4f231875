//! The containerd task service: containerd's requests over ttrpc, answered
//! with berth's container library. Each task is one in-process sandbox of
//! the shim's [`Runtime`]; no process is started per container, so every
//! task reports the shim's own pid.
//!
//! Lifecycle: Create reads the bundle and opens the stdio FIFOs containerd
//! made; Start launches the sandbox and a watcher that records its exit and
//! publishes `/tasks/exit` (and `/tasks/oom`); Stats reports the sandbox's
//! usage as cgroup metrics; Kill maps SIGKILL to an immediate stop (137) and
//! SIGTERM/SIGINT to a graceful one (143 for a command); Delete forgets the
//! task, and Shutdown ends the shim once no task is left.
//!
//! Containers of one pod (CRI's `io.kubernetes.cri.sandbox-id`) share one
//! shim process; the pod's pause container is a placeholder task that runs
//! until it is killed, and holds the pod's network namespace: a served
//! container listens there (see [`crate::netns`]). CloseIO has nothing to do (stdin ends when containerd
//! closes its FIFO). Update changes a task's memory cap and CPU quota,
//! live once it runs. Exec, Pause, Resume and Checkpoint answer that berth
//! does not support them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use async_trait::async_trait;
use berth_container::launch::{LaunchSettings, Launched, Stdio};
use berth_container::resolve::resolve_file;
use berth_runtime::limits::CpuClock;
use berth_runtime::{
    CompileCache, EXIT_KILLED, EXIT_TERMINATED, ExitStatus, KillMode, Output, Runtime,
    RuntimeConfig, Stdin,
};
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::event::Event;
use containerd_shim::protos::api;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Context, DeleteResponse, Flags, StartOpts, TtrpcResult};
use tokio::sync::watch;

use crate::bundle;
use crate::rootfs::Rootfs;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.berth.v1";

/// The node's berth data directory, unless `BERTH_SHIM_DATA_DIR` (in
/// containerd's environment, which its shims inherit) names another.
const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

/// The compile cache every shim on the node shares (entries are written
/// whole and renamed into place, so concurrent shims are safe), created
/// owner-only: the cache refuses a directory others can write.
fn compile_cache_dir() -> PathBuf {
    let data = std::env::var_os("BERTH_SHIM_DATA_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
    let dir = data.join("cache").join("compiled");
    // Failing here only means programs are compiled in memory.
    if let Err(error) = berth_fs::create_private_dir_all(&dir) {
        log::warn!("cannot create the compile cache {}: {error}", dir.display());
    }
    dir
}

/// Connections a wasi:http server keeps open when the spec does not say.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How a task ended, as containerd is told.
#[derive(Debug, Clone)]
struct Exit {
    code: u32,
    at: Timestamp,
}

/// A task between Create and Start: what Start launches.
struct Prepared {
    spec: berth_container::ContainerSpec,
    resolved: berth_container::Resolved,
    stdio: Stdio,
}

/// One task.
struct TaskEntry {
    bundle: PathBuf,
    stdin: String,
    stdout: String,
    stderr: String,
    rootfs: Rootfs,
    /// The memory cap, reported as the limit in metrics.
    memory_limit: Option<u64>,
    prepared: Option<Prepared>,
    /// A pod's pause container: a task with no sandbox behind it.
    placeholder: bool,
    /// The network namespace file the task serves in (a placeholder's: its
    /// pod's); none: the shim's own.
    netns: Option<PathBuf>,
    /// Whether Start was called.
    started: bool,
    /// The running sandbox (and its private `/tmp`), once started.
    launched: Option<Launched>,
    exit: watch::Sender<Option<Exit>>,
}

impl TaskEntry {
    fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }
}

/// The shim: one per container (or per pod), serving its tasks.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    runtime: Runtime,
    tasks: Mutex<HashMap<String, TaskEntry>>,
    exit: ExitSignal,
    /// Set once the ttrpc server is about to serve.
    publisher: OnceLock<RemotePublisher>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn pid() -> u32 {
    std::process::id()
}

fn not_found(id: &str) -> ttrpc::Error {
    status(ttrpc::Code::NOT_FOUND, format!("task {id} not found"))
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn unsupported(what: &str) -> ttrpc::Error {
    status(
        ttrpc::Code::UNIMPLEMENTED,
        format!(
            "{what} is not supported by berth: its tasks are WebAssembly sandboxes, not Linux processes"
        ),
    )
}

impl Service {
    /// A shim serving containerd namespace `namespace`, with no task yet.
    pub fn new(namespace: &str) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                runtime: Runtime::new(RuntimeConfig {
                    compile_cache: Some(CompileCache::new(compile_cache_dir())),
                }),
                tasks: Mutex::new(HashMap::new()),
                exit: ExitSignal::default(),
                publisher: OnceLock::new(),
            }),
        }
    }

    /// Where events go; set once, before the server serves.
    pub fn set_publisher(&self, publisher: RemotePublisher) {
        if self.inner.publisher.set(publisher).is_err() {
            log::warn!("the event publisher was already set");
        }
    }

    /// Resolves once containerd has shut the shim down.
    pub async fn shut_down(&self) {
        self.inner.exit.wait().await;
    }

    async fn publish(&self, event: impl Event + 'static) {
        let Some(publisher) = self.inner.publisher.get() else {
            return;
        };
        let topic = event.topic();
        if let Err(error) = publisher
            .publish(
                Context::default(),
                &topic,
                &self.inner.namespace,
                Box::new(event),
            )
            .await
        {
            log::warn!("cannot publish {topic}: {error}");
        }
    }

    /// Records `exit` for task `id` and tells containerd.
    async fn record_exit(&self, id: &str, exit: Exit, oom: bool) {
        let known = |tasks: &HashMap<String, TaskEntry>| {
            tasks.get(id).is_some_and(|task| task.exited().is_none())
        };
        // The OOM event goes out before the exit becomes visible (as the
        // kernel's OOM notice precedes a runc task's exit): CRI takes a
        // container's reason, OOMKilled, from it, and kubelet may read the
        // status as soon as Wait returns.
        if oom && known(&lock(&self.inner.tasks)) {
            self.publish(TaskOOM {
                container_id: id.to_owned(),
                ..Default::default()
            })
            .await;
        }
        {
            let tasks = lock(&self.inner.tasks);
            if !known(&tasks) {
                return;
            }
            if let Some(task) = tasks.get(id) {
                task.exit.send_replace(Some(exit.clone()));
            }
        }
        self.publish(TaskExit {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid: pid(),
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
        .await;
    }

    /// Prepares task `req.id`; what it mounted is unmounted again if that
    /// fails.
    fn create_task(&self, req: &api::CreateTaskRequest) -> Result<TaskEntry, String> {
        let bundle_dir = PathBuf::from(&req.bundle);
        let rootfs = Rootfs::prepare(&bundle_dir, &req.rootfs)?;
        let mounted = rootfs.clone();
        self.prepare_task(req, bundle_dir, rootfs)
            .inspect_err(|_| mounted.unmount())
    }

    fn prepare_task(
        &self,
        req: &api::CreateTaskRequest,
        bundle_dir: PathBuf,
        rootfs: Rootfs,
    ) -> Result<TaskEntry, String> {
        let role = bundle::load(&bundle_dir, rootfs.path()).map_err(|e| e.to_string())?;
        let bundle = match role {
            bundle::Role::Container(bundle) => *bundle,
            bundle::Role::PodSandbox { netns } => {
                return Ok(TaskEntry {
                    netns,
                    bundle: bundle_dir,
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    rootfs,
                    memory_limit: None,
                    prepared: None,
                    placeholder: true,
                    started: false,
                    launched: None,
                    exit: watch::channel(None).0,
                });
            }
        };
        // CRI points a pod's containers at the network namespace of the
        // pod's sandbox task's pid, which for a berth pod is this shim's
        // own: the pod's namespace is the one its placeholder was given.
        let netns = match bundle.netns {
            Some(path) if crate::netns::is_own(&path) => bundle.pod.as_deref().and_then(|pod| {
                lock(&self.inner.tasks)
                    .get(pod)
                    .filter(|task| task.placeholder)
                    .and_then(|task| task.netns.clone())
            }),
            other => other,
        };
        let mut resolved = resolve_file(&bundle.spec).map_err(|e| e.to_string())?;
        resolved.sandbox.program_name = bundle.program.clone();
        resolved.origin = format!("{} in container {}", bundle.program, req.id);
        let stdio = Stdio {
            stdin: open(&req.stdin, Stdin::fifo, Stdin::Null)?,
            stdout: open(&req.stdout, Output::fifo, Output::Null)?,
            stderr: open(&req.stderr, Output::fifo, Output::Null)?,
        };
        Ok(TaskEntry {
            bundle: bundle_dir,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            rootfs,
            memory_limit: bundle.spec.limits.memory_bytes,
            prepared: Some(Prepared {
                spec: bundle.spec,
                resolved,
                stdio,
            }),
            placeholder: false,
            netns,
            started: false,
            launched: None,
            exit: watch::channel(None).0,
        })
    }

    /// Waits until task `id` has exited.
    async fn wait_exit(&self, id: &str) -> Result<Exit, ttrpc::Error> {
        let mut exit = {
            let tasks = lock(&self.inner.tasks);
            tasks.get(id).ok_or_else(|| not_found(id))?.exit.subscribe()
        };
        let exit = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| not_found(id))?
            .clone();
        exit.ok_or_else(|| not_found(id))
    }
}

/// Opens one of containerd's stdio FIFOs, or `none` when it gave no path.
fn open<T>(
    path: &str,
    fifo: impl FnOnce(&Path) -> std::io::Result<T>,
    none: T,
) -> Result<T, String> {
    if path.is_empty() {
        return Ok(none);
    }
    fifo(Path::new(path)).map_err(|error| format!("cannot open the stdio FIFO {path}: {error}"))
}

/// Whether a shim answers on the socket at `address` (`unix://PATH`).
fn serving(address: &str) -> bool {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

fn exit_code(status: &ExitStatus) -> u32 {
    u32::try_from(status.code).unwrap_or(EXIT_KILLED as u32)
}

#[async_trait]
impl Shim for Service {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service::new(&args.namespace)
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // Containers of one pod share one shim process: containerd starts
        // the shim in the bundle's directory.
        let grouping = bundle::read_spec(Path::new("."))
            .ok()
            .and_then(|spec| bundle::pod_id(&spec).map(str::to_owned))
            .unwrap_or_else(|| opts.id.clone());
        let legacy = opts.containerd_version.is_empty();
        // A pod's later containers join the shim already serving it, as
        // runc's shim does: no second server process is started only to
        // find the socket taken.
        let existing = opts.socket_address(&grouping);
        let address = if grouping != opts.id && serving(&existing) {
            existing
        } else {
            spawn(opts, &grouping, Vec::new()).await?
        };
        if let Err(error) = std::fs::write("address", &address) {
            log::warn!("cannot write the shim address to the bundle: {error}");
        }
        if legacy {
            // containerd before 2.3 passes no version; those before 2.0
            // read the reply as a bare socket address (the JSON reply the
            // library writes would be taken as the address itself), and
            // later ones accept a bare address too.
            use std::io::Write;
            let mut stdout = std::io::stdout();
            let written = stdout
                .write_all(address.as_bytes())
                .and_then(|()| stdout.flush());
            std::process::exit(if written.is_ok() { 0 } else { 1 });
        }
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        // containerd calls this when the shim is gone without deleting its
        // task (it crashed or was killed): the sandbox died with it.
        let bundle = std::env::current_dir().unwrap_or_default();
        Rootfs::release(&bundle);
        Ok(DeleteResponse {
            pid: pid(),
            exit_status: EXIT_KILLED as u32,
            exited_at: MessageField::some(now()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.inner.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        self.set_publisher(publisher);
        self.clone()
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if req.terminal {
            return Err(unsupported("a terminal (-t)"));
        }
        if !req.checkpoint.is_empty() {
            return Err(unsupported("restoring a checkpoint"));
        }
        if lock(&self.inner.tasks).contains_key(&req.id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("task {} already exists", req.id),
            ));
        }
        let task = self
            .create_task(&req)
            .map_err(|message| status(ttrpc::Code::FAILED_PRECONDITION, message))?;
        lock(&self.inner.tasks).insert(req.id.clone(), task);
        self.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid: pid(),
            ..Default::default()
        })
        .await;
        Ok(api::CreateTaskResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            return Err(unsupported("exec"));
        }
        let placeholder = {
            let mut tasks = lock(&self.inner.tasks);
            let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
            let placeholder = task.placeholder && !task.started && task.exited().is_none();
            task.started |= placeholder;
            placeholder
        };
        if placeholder {
            self.publish(TaskStart {
                container_id: req.id.clone(),
                pid: pid(),
                ..Default::default()
            })
            .await;
            return Ok(api::StartResponse {
                pid: pid(),
                ..Default::default()
            });
        }
        let (prepared, netns) = {
            let mut tasks = lock(&self.inner.tasks);
            let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
            let prepared = task.prepared.take().ok_or_else(|| {
                status(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("task {} was already started", req.id),
                )
            })?;
            (prepared, task.netns.clone())
        };
        let listener = match (netns, prepared.spec.ports.as_slice()) {
            (Some(netns), [port]) => Some(
                crate::netns::listen_in(&netns, port.host)
                    .await
                    .map_err(|error| status(ttrpc::Code::FAILED_PRECONDITION, error.to_string()))?,
            ),
            _ => None,
        };
        let settings = LaunchSettings {
            started: None,
            cpu_clock: CpuClock::Sandbox,
            default_max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        let launched = berth_container::launch_on(
            &self.inner.runtime,
            &prepared.spec,
            prepared.resolved,
            prepared.stdio,
            &settings,
            listener,
        )
        .await
        .map_err(|error| status(ttrpc::Code::FAILED_PRECONDITION, error.to_string()))?;
        let handle = launched.handle.clone();
        {
            let mut tasks = lock(&self.inner.tasks);
            let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
            task.started = true;
            task.launched = Some(launched);
        }
        self.publish(TaskStart {
            container_id: req.id.clone(),
            pid: pid(),
            ..Default::default()
        })
        .await;
        let service = self.clone();
        let id = req.id.clone();
        tokio::spawn(async move {
            let status = handle.wait().await;
            if let Some(reason) = status.describe() {
                log::info!("task {id}: {reason}");
            }
            let exit = Exit {
                code: exit_code(&status),
                at: now(),
            };
            service.record_exit(&id, exit, status.oom_killed()).await;
        });
        Ok(api::StartResponse {
            pid: pid(),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let tasks = lock(&self.inner.tasks);
        let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let exit = task.exited();
        let state = match (&exit, task.started) {
            (Some(_), _) => api::Status::STOPPED,
            (None, true) => api::Status::RUNNING,
            (None, false) => api::Status::CREATED,
        };
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: task.bundle.display().to_string(),
            pid: pid(),
            status: state.into(),
            stdin: task.stdin.clone(),
            stdout: task.stdout.clone(),
            stderr: task.stderr.clone(),
            terminal: false,
            exit_status: exit.as_ref().map_or(0, |exit| exit.code),
            exited_at: exit.map(|exit| exit.at).into(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        if !req.exec_id.is_empty() {
            return Err(unsupported("exec"));
        }
        let exit = self.wait_exit(&req.id).await?;
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        if !req.exec_id.is_empty() {
            return Err(unsupported("exec"));
        }
        let mode = match req.signal {
            9 => KillMode::Immediate,
            2 | 15 => KillMode::Graceful,
            signal => {
                return Err(status(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!(
                        "signal {signal} is not supported by berth: SIGTERM (15) or SIGINT (2) stop a task gracefully, SIGKILL (9) at once"
                    ),
                ));
            }
        };
        let no_sandbox = {
            let tasks = lock(&self.inner.tasks);
            let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            match &task.launched {
                Some(launched) => {
                    launched.handle.kill(mode);
                    false
                }
                None => task.exited().is_none(),
            }
        };
        if no_sandbox {
            // A created task (or a pod's placeholder) has no guest: it ends
            // as a process killed by the signal would.
            let code = match mode {
                KillMode::Immediate => EXIT_KILLED,
                KillMode::Graceful => EXIT_TERMINATED,
            };
            lock(&self.inner.tasks)
                .get_mut(&req.id)
                .map(|task| task.prepared.take());
            let exit = Exit {
                code: code as u32,
                at: now(),
            };
            self.record_exit(&req.id, exit, false).await;
        }
        Ok(api::Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return Err(unsupported("exec"));
        }
        let task = {
            let mut tasks = lock(&self.inner.tasks);
            let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            if task.started && task.exited().is_none() {
                return Err(status(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("task {} is running: kill it first", req.id),
                ));
            }
            tasks.remove(&req.id).ok_or_else(|| not_found(&req.id))?
        };
        let exit = task.exited().unwrap_or(Exit { code: 0, at: now() });
        task.rootfs.unmount();
        self.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: pid(),
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        })
        .await;
        Ok(api::DeleteResponse {
            pid: pid(),
            exit_status: exit.code,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        if !lock(&self.inner.tasks).contains_key(&req.id) {
            return Err(not_found(&req.id));
        }
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::types::task::ProcessInfo {
                pid: pid(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: pid(),
            task_pid: pid(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if lock(&self.inner.tasks).is_empty() {
            self.inner.exit.signal();
        }
        Ok(api::Empty::default())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (stats, limit) = {
            let tasks = lock(&self.inner.tasks);
            let task = tasks.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            let stats = task
                .launched
                .as_ref()
                .map(|launched| launched.handle.stats())
                .unwrap_or_default();
            (stats, task.memory_limit)
        };
        Ok(api::StatsResponse {
            stats: MessageField::some(crate::metrics::cgroup_metrics(&stats, limit)),
            ..Default::default()
        })
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        // The guest reads stdin from containerd's FIFO, and sees its end
        // when containerd closes the writing side: nothing to do here.
        if !lock(&self.inner.tasks).contains_key(&req.id) {
            return Err(not_found(&req.id));
        }
        Ok(api::Empty::default())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let bundle_dir = lock(&self.inner.tasks)
            .get(&req.id)
            .ok_or_else(|| not_found(&req.id))?
            .bundle
            .clone();
        let period = bundle::read_spec(&bundle_dir)
            .ok()
            .and_then(|spec| bundle::cpu_period(&spec));
        let resources = req.resources.as_ref().ok_or_else(|| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                "the update names no resources to change",
            )
        })?;
        let update = bundle::limits_update(&resources.type_url, &resources.value, period)
            .map_err(|error| status(ttrpc::Code::INVALID_ARGUMENT, error.to_string()))?;
        let mut tasks = lock(&self.inner.tasks);
        let task = tasks.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if let Some(launched) = &task.launched {
            let handle = &launched.handle;
            handle
                .update_limits(update.memory_bytes, update.cpus)
                .map_err(|error| status(ttrpc::Code::INVALID_ARGUMENT, error.to_string()))?;
            let used = handle.stats().memory_bytes;
            if let Some(cap) = update.memory_bytes.filter(|cap| *cap < used) {
                log::warn!(
                    "task {}: memory cap lowered to {cap} bytes, below the {used} it uses: it keeps what it has and every further growth is refused",
                    req.id
                );
            }
        } else if let Some(prepared) = &mut task.prepared {
            let limits = &mut prepared.spec.limits;
            if let Some(bytes) = update.memory_bytes {
                limits.memory_bytes = Some(bytes).filter(|bytes| *bytes != u64::MAX);
            }
            if let Some(cpus) = update.cpus {
                limits.cpus = Some(cpus).filter(|cpus| cpus.is_finite());
            }
        }
        // A pod's placeholder has no limits to change.
        if let Some(bytes) = update.memory_bytes {
            task.memory_limit = Some(bytes).filter(|bytes| *bytes != u64::MAX);
        }
        Ok(api::Empty::default())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unsupported("exec"))
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(unsupported("pause"))
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unsupported("resume"))
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unsupported("checkpoint"))
    }
}
