//! The node agent: runs the store's pods as sandboxes of one in-process
//! [`Runtime`], as kubelet runs a node's pods. It admits each pod by its
//! resource requests ([`crate::placement`]), gives it an address
//! ([`crate::podspec::AddressPool`]), starts its containers through the
//! core library (resolve, launch, supervise), restarts them per
//! `restartPolicy` with back-off, and writes what it observes into the
//! pod's `status` (phase, conditions, `podIP`, container states, restart
//! counts, CrashLoopBackOff and OOMKilled). It keeps each container's logs
//! (this run's and the previous run's) and reports what each pod uses.
//!
//! One pod's failure, a panic in its host code included, is that pod's:
//! it is shown in the pod's status and never stops the agent.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use berth_container::logs::{LOG_MAX_BYTES, LogPumps, LogStream, LogWriter, write_lines};
use berth_container::resolve::{self, Images, PullError, ResolveError};
use berth_container::{
    Backoff, ContainerSpec, Ended, Event, LaunchSettings, Launched, Supervisor, Target, launch,
};
use berth_runtime::limits::CpuClock;
use berth_runtime::{ExitReason, ExitStatus, KillMode, Runtime, SandboxHandle};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;

use crate::events::EventType;
use crate::object::{Kind, Object};
use crate::placement::Node;
use crate::podspec::{self, AddressPool, VolumeDirs};
use crate::quantity::Resources;
use crate::store::{self, EventKind, PodStatusUpdate, Store, WatchEvent};

/// How the node agent runs pods.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Where pods' logs and `emptyDir` volumes live (one folder per pod).
    pub pods_dir: PathBuf,
    /// What the node gives to pods (the machine's, unless configured).
    pub allocatable: Resources,
    /// Delays between restarts of a crashing container
    /// ([`Backoff::KUBELET`] unless configured).
    pub backoff: Backoff,
    /// A distinct loopback address per pod (Linux), else 127.0.0.1 shared.
    pub distinct_addresses: bool,
    /// Grace period when a pod does not set `terminationGracePeriodSeconds`.
    pub default_grace_period: Duration,
}

/// Where images come from: the local store and its caches, owned by the
/// node agent (opened once by the front door).
#[derive(Debug)]
pub struct ImageSource {
    /// The local image store.
    pub store: berth_registry::Store,
    /// Where unpacked root filesystems are cached.
    pub rootfs_dir: PathBuf,
    /// Where containers' private `/tmp` directories are made (owner-only).
    pub scratch_dir: PathBuf,
    /// Caps on unpacking one image.
    pub unpack_limits: berth_registry::unpack::UnpackLimits,
}

/// What one pod's containers use now.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Per running container.
    pub containers: Vec<ContainerUsage>,
}

/// What one container uses now.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    /// The container's name.
    pub name: String,
    /// Bytes charged to its memory limit.
    pub memory_bytes: u64,
    /// CPU time used since it started.
    pub cpu_time: Duration,
}

/// Why a pod's logs cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// No such pod (on this node).
    #[error("pods {name:?} not found")]
    PodNotFound {
        /// The pod's name.
        name: String,
    },
    /// The pod has several containers and none was named, or the named
    /// one is not the pod's.
    #[error("{0}")]
    Container(String),
    /// `--previous` for a container that has not restarted.
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
}

/// The node's name, as events and `get pods -o wide` show it.
pub const NODE_NAME: &str = "berth";

/// The node's address (`status.hostIP`).
const HOST_IP: &str = "127.0.0.1";

/// The longest message kept in a terminated state, as kubelet's
/// termination messages.
const MAX_MESSAGE_BYTES: usize = 4096;

/// How long stopping every pod at shutdown waits for them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The node agent. Cheap to clone: clones share one agent.
#[derive(Debug, Clone)]
pub struct Kubelet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    runtime: Runtime,
    images: ImageSource,
    config: KubeletConfig,
    state: Mutex<State>,
    /// Wakes the status writer: some pod's status changed.
    changed: Notify,
}

/// What the agent knows of its pods. Every pod is keyed by its uid: a pod
/// deleted and created again under its name is another pod.
#[derive(Debug)]
struct State {
    node: Node,
    addresses: AddressPool,
    pods: HashMap<String, PodEntry>,
    /// `NAMESPACE/NAME` to the uid of the newest pod of that name.
    names: HashMap<String, String>,
    /// Pods waiting for room, oldest first.
    pending: Vec<String>,
    /// Pods whose status must be written.
    dirty: HashSet<String>,
    /// Counts pods as they arrive, to order pods created in one second.
    serial: u64,
    /// Set at shutdown: nothing is started or written any more.
    shutting_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for room on the node.
    Pending,
    /// Admitted: its task runs its containers.
    Running,
    /// Its containers ended for good (or it had finished before the agent
    /// started); it holds no place.
    Finished,
}

#[derive(Debug)]
struct PodEntry {
    namespace: String,
    name: String,
    /// The pod as it was when it arrived (its spec cannot change).
    object: Arc<Object>,
    dir: PathBuf,
    order: (i64, u64),
    requests: Resources,
    stage: Stage,
    /// Why it does not fit, while pending.
    unschedulable: Option<String>,
    /// The address it had before the agent restarted.
    preferred_ip: Option<Ipv4Addr>,
    ip: Option<Ipv4Addr>,
    start_time: Option<Time>,
    containers: Vec<ContainerEntry>,
    /// The conditions last written, for their transition times.
    conditions: Vec<PodCondition>,
    /// A failure of the pod as a whole (`reason`, `message`).
    failure: Option<(String, String)>,
    stop: Option<Arc<watch::Sender<Option<KillMode>>>>,
    deleting: bool,
    /// Whether the pod is still stored (marked for deletion), to be
    /// removed once it stopped.
    remove_object: bool,
}

#[derive(Debug)]
struct ContainerEntry {
    name: String,
    image: String,
    image_id: Option<String>,
    state: ContainerState,
    last_state: Option<ContainerStateTerminated>,
    ready: bool,
    started: bool,
    restart_count: i32,
    /// Restarts counted before the agent (re)started.
    restarts_before: i32,
    /// The running sandbox, for stats and for stopping it.
    handle: Option<SandboxHandle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..ContainerState::default()
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        ..PodCondition::default()
    }
}

/// A duration as Go prints it, as kubelet's messages show it (`10s`,
/// `1m20s`, `5m0s`, `100ms`).
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    let fraction = duration.subsec_millis();
    let secs = if fraction == 0 {
        format!("{}s", seconds % 60)
    } else {
        let fraction = format!("{fraction:03}");
        format!("{}.{}s", seconds % 60, fraction.trim_end_matches('0'))
    };
    match (seconds / 3600, (seconds / 60) % 60) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// An error with its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A panic's message.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The terminated state of a run that ended with `status`.
fn terminated(status: &ExitStatus, started_at: Option<Time>) -> ContainerStateTerminated {
    let (reason, message) = match &status.reason {
        ExitReason::OomKilled { .. } => ("OOMKilled", None),
        ExitReason::Exited if status.code == 0 => ("Completed", None),
        ExitReason::Exited | ExitReason::Killed { .. } => ("Error", None),
        ExitReason::TimedOut { .. } | ExitReason::Trapped { .. } => ("Error", status.describe()),
    };
    ContainerStateTerminated {
        exit_code: status.code,
        reason: Some(reason.to_owned()),
        message: message.map(|m| truncate(m, MAX_MESSAGE_BYTES)),
        started_at,
        finished_at: Some(store::now()),
        ..ContainerStateTerminated::default()
    }
}

/// The pod's phase from its containers, as kubelet decides it.
fn phase_of(containers: &[ContainerEntry], policy: Option<&str>) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in containers {
        if container.state.running.is_some() {
            running += 1;
        } else if let Some(done) = &container.state.terminated {
            stopped += 1;
            if done.exit_code == 0 {
                succeeded += 1;
            }
        } else if container.last_state.is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            Some("Never") if stopped == succeeded => "Succeeded",
            Some("Never") => "Failed",
            Some("OnFailure") if stopped == succeeded => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

impl PodEntry {
    fn pod(&self) -> Option<&Pod> {
        match &*self.object {
            Object::Pod(pod) => Some(pod),
            _ => None,
        }
    }

    /// The pod's status as the agent sees it now.
    fn status(&mut self) -> PodStatus {
        let policy = self
            .pod()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.restart_policy.clone());
        let admitted = self.stage != Stage::Pending;
        let phase = match (&self.failure, self.stage) {
            (Some(_), _) => "Failed",
            (None, Stage::Pending) => "Pending",
            (None, _) => phase_of(&self.containers, policy.as_deref()),
        };
        let mut conditions = Vec::new();
        if admitted {
            let unready: Vec<&str> = self
                .containers
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.as_str())
                .collect();
            let ready = unready.is_empty() && phase == "Running";
            let (reason, message) = if ready {
                (None, None)
            } else if phase == "Succeeded" || phase == "Failed" {
                (Some("PodCompleted"), None)
            } else {
                (
                    Some("ContainersNotReady"),
                    Some(format!(
                        "containers with unready status: [{}]",
                        unready.join(" ")
                    )),
                )
            };
            conditions.push(condition("PodScheduled", true, None, None));
            conditions.push(condition("Initialized", true, None, None));
            conditions.push(condition("ContainersReady", ready, reason, message.clone()));
            conditions.push(condition("Ready", ready, reason, message));
        } else {
            conditions.push(condition(
                "PodScheduled",
                false,
                Some("Unschedulable"),
                self.unschedulable.clone(),
            ));
        }
        let now = store::now();
        for next in &mut conditions {
            let kept = self
                .conditions
                .iter()
                .find(|c| c.type_ == next.type_ && c.status == next.status)
                .and_then(|c| c.last_transition_time.clone());
            next.last_transition_time = Some(kept.unwrap_or_else(|| now.clone()));
        }
        self.conditions = conditions.clone();
        let container_statuses = admitted.then(|| {
            self.containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone().unwrap_or_default(),
                    ready: c.ready,
                    started: Some(c.started),
                    restart_count: c.restart_count,
                    state: Some(c.state.clone()),
                    last_state: c.last_state.clone().map(|t| ContainerState {
                        terminated: Some(t),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
                .collect()
        });
        let ip = self.ip.map(|ip| ip.to_string());
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(conditions),
            host_ip: admitted.then(|| HOST_IP.to_owned()),
            host_ips: admitted.then(|| {
                vec![HostIP {
                    ip: HOST_IP.to_owned(),
                }]
            }),
            pod_ip: ip.clone(),
            pod_ips: ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.clone(),
            container_statuses,
            reason: self.failure.as_ref().map(|(reason, _)| reason.clone()),
            message: self.failure.as_ref().map(|(_, message)| message.clone()),
            ..PodStatus::default()
        }
    }
}

/// Why a run could not start, as kubelet names it in the container's
/// waiting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartFailure {
    /// The image is not local and may not be pulled.
    NeverPull,
    /// The image could not be pulled.
    Pull,
    /// Anything else: the program, its mounts, its port, its log.
    Create,
}

impl StartFailure {
    fn reason(self) -> &'static str {
        match self {
            StartFailure::NeverPull => "ErrImageNeverPull",
            StartFailure::Pull => "ErrImagePull",
            StartFailure::Create => "CreateContainerError",
        }
    }
}

/// What one run of a container holds besides its sandbox.
struct RunResources {
    log: Arc<Mutex<LogWriter>>,
    pumps: LogPumps,
    scratch: Option<tempfile::TempDir>,
}

impl RunResources {
    /// Lets the log pumps drain, then removes the run's `/tmp` (off the
    /// async workers: it may hold many files).
    async fn finish(self) {
        self.pumps.finish().await;
        if let Some(scratch) = self.scratch {
            let removed = tokio::task::spawn_blocking(move || scratch.close()).await;
            if let Ok(Err(error)) = removed {
                tracing::warn!(%error, "cannot remove a container's /tmp");
            }
        }
    }
}

/// What a run needs from the file system, made off the async workers.
struct Prepared {
    resolved: resolve::Resolved,
    log: LogWriter,
    image_id: Option<String>,
}

/// The folder of a container's logs: `current` for this run, `previous`
/// for the one before.
fn container_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join(container)
}

const CURRENT_LOG: &str = "current";
const PREVIOUS_LOG: &str = "previous";

/// Makes `dir` owner-only, moving an existing log folder of an earlier run
/// to `previous` (dropping the one before), and opens its log.
fn open_run_log(dir: &Path) -> std::io::Result<LogWriter> {
    let current = dir.join(CURRENT_LOG);
    let previous = dir.join(PREVIOUS_LOG);
    berth_fs::create_private_dir_all(dir)?;
    if current.exists() {
        match std::fs::remove_dir_all(&previous) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        std::fs::rename(&current, &previous)?;
    }
    berth_fs::create_private_dir_all(&current)?;
    LogWriter::open(&current, LOG_MAX_BYTES)
}

impl Kubelet {
    /// An agent for the pods of `store`, running them in `runtime`.
    pub fn new(
        store: Arc<Store>,
        runtime: Runtime,
        images: ImageSource,
        config: KubeletConfig,
    ) -> Kubelet {
        let state = State {
            node: Node::new(config.allocatable),
            addresses: AddressPool::new(config.distinct_addresses),
            pods: HashMap::new(),
            names: HashMap::new(),
            pending: Vec::new(),
            dirty: HashSet::new(),
            serial: 0,
            shutting_down: false,
        };
        Kubelet {
            inner: Arc::new(Inner {
                store,
                runtime,
                images,
                config,
                state: Mutex::new(state),
                changed: Notify::new(),
            }),
        }
    }

    /// Runs the store's pods until `shutdown` turns true (or its sender is
    /// dropped): lists them, then follows the store's changes (listing
    /// again if it falls behind). At shutdown every pod's sandboxes are
    /// stopped at once, and their status is left as it was: the next start
    /// of the agent re-creates the pods from the store.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.inner.store.watch();
        let mut tasks = JoinSet::new();
        let mut task_pods: HashMap<tokio::task::Id, String> = HashMap::new();
        let writer = tokio::spawn(self.clone().write_statuses());
        self.resync(&mut tasks, &mut task_pods, true).await;
        loop {
            tokio::select! {
                // A dropped sender stops the agent too.
                () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
                change = changes.recv() => match change {
                    Ok(change) => self.on_change(change, &mut tasks, &mut task_pods),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.resync(&mut tasks, &mut task_pods, false).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(ended) = tasks.join_next_with_id() => {
                    self.on_task_end(ended, &mut tasks, &mut task_pods);
                }
            }
        }
        self.stop_all(&mut tasks).await;
        writer.abort();
    }

    /// The folder [`berth_container::logs::LogFollower::open`] reads for
    /// the logs of `container` (which may be left out for a pod of one
    /// container) in pod `namespace/pod`: of its current run, or of the run
    /// before with `previous`.
    pub fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<PathBuf, LogsError> {
        let state = lock(&self.inner.state);
        let entry = state
            .names
            .get(&format!("{namespace}/{pod}"))
            .and_then(|uid| state.pods.get(uid))
            .ok_or_else(|| LogsError::PodNotFound {
                name: pod.to_owned(),
            })?;
        let names: Vec<&str> = entry.containers.iter().map(|c| c.name.as_str()).collect();
        let name = match (container, names.as_slice()) {
            (Some(name), _) if names.contains(&name) => name,
            (Some(name), _) => {
                return Err(LogsError::Container(format!(
                    "container {name} is not valid for pod {pod}"
                )));
            }
            (None, [only]) => only,
            (None, _) => {
                return Err(LogsError::Container(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
        };
        let dir = container_dir(&entry.dir, name);
        let name = name.to_owned();
        drop(state);
        if previous {
            let dir = dir.join(PREVIOUS_LOG);
            if !dir.is_dir() {
                return Err(LogsError::NoPrevious {
                    pod: pod.to_owned(),
                    container: name,
                });
            }
            return Ok(dir);
        }
        Ok(dir.join(CURRENT_LOG))
    }

    /// What each running pod (of `namespace`, or of all) uses now, in
    /// namespace and name order.
    pub fn usage(&self, namespace: Option<&str>) -> Vec<PodUsage> {
        let state = lock(&self.inner.state);
        let mut usage: Vec<PodUsage> = state
            .pods
            .values()
            .filter(|p| p.stage == Stage::Running && !p.deleting)
            .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
            .map(|p| PodUsage {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                containers: p
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let stats = c.handle.as_ref()?.stats();
                        Some(ContainerUsage {
                            name: c.name.clone(),
                            memory_bytes: stats.memory_bytes,
                            cpu_time: stats.cpu_time,
                        })
                    })
                    .collect(),
            })
            .collect();
        usage.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        usage
    }

    /// Brings the agent in line with the store's pods: new ones are added,
    /// gone ones stopped. At start-up (`first`), folders of pods that no
    /// longer exist are removed.
    async fn resync(
        &self,
        tasks: &mut JoinSet<()>,
        task_pods: &mut HashMap<tokio::task::Id, String>,
        first: bool,
    ) {
        let store = Arc::clone(&self.inner.store);
        let listed = tokio::task::spawn_blocking(move || store.list(Kind::Pod, None)).await;
        let pods = match listed {
            Ok(Ok((pods, _))) => pods,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot list pods");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list pods");
                return;
            }
        };
        let present: HashSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata().uid.clone())
            .collect();
        let gone: Vec<String> = lock(&self.inner.state)
            .pods
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.delete(&uid, None);
        }
        if first {
            let keep: HashSet<String> = pods.iter().map(pod_dir_name).collect();
            let dir = self.inner.config.pods_dir.clone();
            let _ = tokio::task::spawn_blocking(move || remove_orphans(&dir, &keep)).await;
        }
        for pod in pods {
            let _ = self.add(pod);
        }
        self.admit_pending(tasks, task_pods);
    }

    fn on_change(
        &self,
        change: WatchEvent,
        tasks: &mut JoinSet<()>,
        task_pods: &mut HashMap<tokio::task::Id, String>,
    ) {
        if change.object.kind() != Kind::Pod {
            return;
        }
        match change.kind {
            EventKind::Added | EventKind::Modified => {
                // Most changes are status writes of known pods: only a new
                // pod asks for a place.
                if self.add(change.object) {
                    self.admit_pending(tasks, task_pods);
                }
            }
            EventKind::Deleted => {
                if let Some(uid) = change.object.metadata().uid.clone() {
                    self.delete(&uid, None);
                    self.admit_pending(tasks, task_pods);
                }
            }
        }
    }

    /// Takes on a pod the agent does not know yet (a known one only
    /// matters if it is being deleted); whether it now waits for a place.
    fn add(&self, object: Object) -> bool {
        let Object::Pod(pod) = &object else {
            return false;
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut state = lock(&self.inner.state);
        if state.shutting_down {
            return false;
        }
        if state.pods.contains_key(&uid) {
            drop(state);
            if deleting {
                self.delete(&uid, Some(&pod.metadata));
            }
            return false;
        }
        if deleting {
            // Marked for deletion before this agent ran it: nothing to stop.
            drop(state);
            self.remove_object(object.namespace().to_owned(), object.name().to_owned());
            return false;
        }
        let status = pod.status.as_ref();
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let preferred_ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        // Restarts and the last ended run carry over a restart of the agent.
        let before = |name: &str| {
            status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|all| all.iter().find(|c| c.name == name))
        };
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                let before = before(&c.name);
                let restarts = before.map_or(0, |b| b.restart_count);
                ContainerEntry {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: None,
                    state: waiting("ContainerCreating", None),
                    last_state: before
                        .and_then(|b| b.last_state.as_ref())
                        .and_then(|s| s.terminated.clone()),
                    ready: false,
                    started: false,
                    restart_count: restarts,
                    restarts_before: restarts,
                    handle: None,
                }
            })
            .collect();
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        state.serial += 1;
        let order = (created, state.serial);
        let namespace = object.namespace().to_owned();
        let name = object.name().to_owned();
        let entry = PodEntry {
            dir: self.inner.config.pods_dir.join(pod_dir_name(&object)),
            requests: pod
                .spec
                .as_ref()
                .map(crate::validate::pod_requests)
                .unwrap_or_default(),
            stage: if finished {
                Stage::Finished
            } else {
                Stage::Pending
            },
            unschedulable: None,
            preferred_ip,
            ip: None,
            start_time: status.and_then(|s| s.start_time.clone()),
            containers,
            conditions: status
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
            failure: None,
            stop: None,
            deleting: false,
            remove_object: false,
            namespace: namespace.clone(),
            name: name.clone(),
            order,
            object: Arc::new(object),
        };
        state
            .names
            .insert(format!("{namespace}/{name}"), uid.clone());
        state.pods.insert(uid.clone(), entry);
        if !finished {
            let at = state
                .pending
                .iter()
                .position(|other| state.pods.get(other).is_some_and(|o| o.order > order))
                .unwrap_or(state.pending.len());
            state.pending.insert(at, uid);
        }
        !finished
    }

    /// Admits waiting pods, oldest first, while they fit; the others are
    /// told why not (once per reason).
    fn admit_pending(
        &self,
        tasks: &mut JoinSet<()>,
        task_pods: &mut HashMap<tokio::task::Id, String>,
    ) {
        let events = self.inner.store.events();
        let mut state = lock(&self.inner.state);
        if state.shutting_down {
            return;
        }
        let waiting = state.pending.clone();
        let mut admitted = Vec::new();
        for uid in waiting {
            let state = &mut *state;
            let Some(entry) = state.pods.get_mut(&uid) else {
                continue;
            };
            if let Err(refused) = state.node.admit(&uid, entry.requests) {
                let message = refused.to_string();
                if entry.unschedulable.as_deref() != Some(message.as_str()) {
                    events.record(
                        &entry.object,
                        EventType::Warning,
                        "default-scheduler",
                        "FailedScheduling",
                        &message,
                    );
                    entry.unschedulable = Some(message);
                    state.dirty.insert(uid.clone());
                }
                continue;
            }
            let Some(ip) = state.addresses.assign(&uid, entry.preferred_ip) else {
                state.node.release(&uid);
                entry.stage = Stage::Finished;
                entry.failure = Some((
                    "UnexpectedAdmissionError".to_owned(),
                    "no pod address is left on this node".to_owned(),
                ));
                state.dirty.insert(uid.clone());
                admitted.push(uid);
                continue;
            };
            events.record(
                &entry.object,
                EventType::Normal,
                "default-scheduler",
                "Scheduled",
                &format!(
                    "Successfully assigned {}/{} to {NODE_NAME}",
                    entry.namespace, entry.name
                ),
            );
            entry.stage = Stage::Running;
            entry.unschedulable = None;
            entry.ip = Some(ip);
            entry.start_time = Some(store::now());
            let (stop, stopped) = watch::channel(None);
            entry.stop = Some(Arc::new(stop));
            let task = tasks.spawn(self.clone().run_pod(
                uid.clone(),
                Arc::clone(&entry.object),
                ip,
                stopped,
            ));
            task_pods.insert(task.id(), uid.clone());
            state.dirty.insert(uid.clone());
            admitted.push(uid);
        }
        state.pending.retain(|uid| !admitted.contains(uid));
        drop(state);
        self.inner.changed.notify_one();
    }

    /// Stops and forgets pod `uid`: gracefully, then at once after its
    /// grace period. Its place and address are released when its task
    /// ends. `marked` is the metadata of a pod marked for deletion
    /// (`deletionTimestamp`) but still stored: it is removed from the store
    /// once it stopped, as kubelet confirms a graceful deletion.
    fn delete(&self, uid: &str, marked: Option<&ObjectMeta>) {
        let mut state = lock(&self.inner.state);
        let Some(entry) = state.pods.get_mut(uid) else {
            return;
        };
        if entry.deleting {
            return;
        }
        entry.deleting = true;
        entry.remove_object = marked.is_some();
        let key = format!("{}/{}", entry.namespace, entry.name);
        match entry.stage {
            Stage::Running => {
                let seconds = marked
                    .and_then(|m| m.deletion_grace_period_seconds)
                    .or_else(|| {
                        entry
                            .pod()
                            .and_then(|p| p.spec.as_ref())
                            .and_then(|s| s.termination_grace_period_seconds)
                    });
                let grace = seconds.map_or(self.inner.config.default_grace_period, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
                for container in &entry.containers {
                    if container.handle.is_some() {
                        self.inner.store.events().record(
                            &entry.object,
                            EventType::Normal,
                            "kubelet",
                            "Killing",
                            &format!("Stopping container {}", container.name),
                        );
                    }
                }
                if let Some(stop) = entry.stop.clone() {
                    stop.send_replace(Some(if grace.is_zero() {
                        KillMode::Immediate
                    } else {
                        KillMode::Graceful
                    }));
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        stop.send_replace(Some(KillMode::Immediate));
                    });
                }
            }
            Stage::Pending | Stage::Finished => {
                let dir = entry.dir.clone();
                let stage = entry.stage;
                if marked.is_some() {
                    self.remove_object(entry.namespace.clone(), entry.name.clone());
                }
                state.pods.remove(uid);
                state.pending.retain(|p| p != uid);
                state.dirty.remove(uid);
                if state.names.get(&key).map(String::as_str) == Some(uid) {
                    state.names.remove(&key);
                }
                if stage == Stage::Finished {
                    drop(state);
                    remove_pod_dir(dir);
                }
            }
        }
    }

    /// Removes a pod marked for deletion from the store (off the async
    /// workers).
    fn remove_object(&self, namespace: String, name: String) {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || match store.delete(Kind::Pod, &namespace, &name) {
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, "cannot remove pod {namespace}/{name}"),
        });
    }

    /// A pod's task ended: its containers are done for good, it was
    /// stopped, or its host code panicked (the pod fails; the agent goes
    /// on). Its place and address go back to the node.
    fn on_task_end(
        &self,
        ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        tasks: &mut JoinSet<()>,
        task_pods: &mut HashMap<tokio::task::Id, String>,
    ) {
        let (id, panic) = match ended {
            Ok((id, ())) => (id, None),
            Err(error) => {
                let id = error.id();
                let message = if error.is_panic() {
                    panic_message(&*error.into_panic())
                } else {
                    "the pod's task was cancelled".to_owned()
                };
                (id, Some(message))
            }
        };
        let Some(uid) = task_pods.remove(&id) else {
            return;
        };
        self.finish_pod(&uid, panic);
        self.admit_pending(tasks, task_pods);
    }

    /// Releases the place and address of pod `uid`, whose task ended, and
    /// records how it ended; a deleted pod is forgotten and its folder
    /// removed.
    fn finish_pod(&self, uid: &str, panic: Option<String>) {
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        state.node.release(uid);
        state.addresses.release(uid);
        let Some(entry) = state.pods.get_mut(uid) else {
            return;
        };
        entry.stage = Stage::Finished;
        entry.stop = None;
        for container in &mut entry.containers {
            // A panic left its sandboxes without their supervisor.
            if let Some(handle) = container.handle.take() {
                handle.kill(KillMode::Immediate);
            }
            container.ready = false;
        }
        if let Some(message) = panic {
            tracing::error!(pod = %format!("{}/{}", entry.namespace, entry.name), %message, "a pod's host code failed");
            let message = format!("host code failed: {message}");
            for container in &mut entry.containers {
                if container.state.terminated.is_none() {
                    container.state = ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: berth_runtime::EXIT_TRAPPED,
                            reason: Some("Error".to_owned()),
                            message: Some(message.clone()),
                            finished_at: Some(store::now()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    };
                }
            }
            entry.failure = Some(("Error".to_owned(), message));
        }
        if entry.deleting {
            let dir = entry.dir.clone();
            let key = format!("{}/{}", entry.namespace, entry.name);
            let marked = entry.remove_object;
            let (namespace, name) = (entry.namespace.clone(), entry.name.clone());
            state.pods.remove(uid);
            state.dirty.remove(uid);
            if state.names.get(&key).map(String::as_str) == Some(uid) {
                state.names.remove(&key);
            }
            remove_pod_dir(dir);
            if marked {
                // A graceful deletion: the pod goes once it stopped.
                self.remove_object(namespace, name);
            }
        } else {
            state.dirty.insert(uid.to_owned());
            self.inner.changed.notify_one();
        }
    }

    /// At shutdown: stops every sandbox at once and waits (bounded) for the
    /// pods' tasks.
    async fn stop_all(&self, tasks: &mut JoinSet<()>) {
        {
            let mut state = lock(&self.inner.state);
            state.shutting_down = true;
            for entry in state.pods.values() {
                if let Some(stop) = &entry.stop {
                    stop.send_replace(Some(KillMode::Immediate));
                }
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_WAIT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some pods did not stop in time");
            tasks.abort_all();
        }
    }

    /// Writes changed statuses, many pods per transaction: while one write
    /// is on its way, further changes gather for the next.
    async fn write_statuses(self) {
        loop {
            self.inner.changed.notified().await;
            let updates: Vec<PodStatusUpdate> = {
                let mut state = lock(&self.inner.state);
                if state.shutting_down {
                    return;
                }
                let state = &mut *state;
                let dirty: Vec<String> = state.dirty.drain().collect();
                dirty
                    .into_iter()
                    .filter_map(|uid| {
                        let entry = state.pods.get_mut(&uid)?;
                        (!entry.deleting).then(|| PodStatusUpdate {
                            namespace: entry.namespace.clone(),
                            name: entry.name.clone(),
                            uid,
                            status: entry.status(),
                        })
                    })
                    .collect()
            };
            if updates.is_empty() {
                continue;
            }
            let store = Arc::clone(&self.inner.store);
            match tokio::task::spawn_blocking(move || store.write_pod_statuses(updates)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot write pod statuses"),
                Err(error) => tracing::warn!(%error, "cannot write pod statuses"),
            }
        }
    }

    /// Changes what the agent knows of pod `uid` and has its status
    /// written.
    fn update(&self, uid: &str, change: impl FnOnce(&mut PodEntry)) {
        let mut state = lock(&self.inner.state);
        let Some(entry) = state.pods.get_mut(uid) else {
            return;
        };
        change(entry);
        if !entry.deleting {
            state.dirty.insert(uid.to_owned());
            drop(state);
            self.inner.changed.notify_one();
        }
    }

    fn update_container(&self, uid: &str, index: usize, change: impl FnOnce(&mut ContainerEntry)) {
        self.update(uid, |entry| {
            if let Some(container) = entry.containers.get_mut(index) {
                change(container);
            }
        });
    }

    fn event(&self, pod: &Object, kind: EventType, reason: &str, message: &str) {
        self.inner
            .store
            .events()
            .record(pod, kind, "kubelet", reason, message);
    }
}

/// `NAMESPACE_NAME_UID`, the pod's folder name (as kubelet's log folders).
fn pod_dir_name(pod: &Object) -> String {
    format!(
        "{}_{}_{}",
        pod.namespace(),
        pod.name(),
        pod.metadata().uid.as_deref().unwrap_or_default()
    )
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(%error, dir = %dir.display(), "cannot remove a pod's folder");
        }
        _ => {}
    }
}

fn remove_pod_dir(dir: PathBuf) {
    tokio::task::spawn_blocking(move || remove_dir(&dir));
}

/// Removes the folders of pods that are gone (deleted while the agent was
/// not running).
fn remove_orphans(pods_dir: &Path, keep: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dir(&entry.path());
        }
    }
}

/// What every container of one pod shares.
struct PodRun {
    uid: String,
    object: Arc<Object>,
    dir: PathBuf,
}

impl Kubelet {
    /// Runs an admitted pod: makes its folders, translates its containers
    /// and runs them all until they end for good or `stop` asks.
    async fn run_pod(
        self,
        uid: String,
        object: Arc<Object>,
        ip: Ipv4Addr,
        stop: watch::Receiver<Option<KillMode>>,
    ) {
        let Object::Pod(pod) = &*object else {
            return;
        };
        let dir = self.inner.config.pods_dir.join(pod_dir_name(&object));
        let volumes = VolumeDirs {
            empty_dir_root: dir.join(".volumes"),
        };
        let made = {
            let (dir, volumes, pod) = (dir.clone(), volumes.clone(), pod.clone());
            tokio::task::spawn_blocking(move || {
                berth_fs::create_private_dir_all(&dir)?;
                podspec::make_empty_dirs(&pod, &volumes)
            })
            .await
        };
        let failed = match made {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("cannot make the pod's volumes: {error}")),
            Err(error) => Some(format!("cannot make the pod's volumes: {error}")),
        };
        if let Some(message) = failed {
            self.event(&object, EventType::Warning, "FailedMount", &message);
            self.update(&uid, |entry| {
                entry.failure = Some(("FailedMount".to_owned(), message))
            });
            return;
        }
        let specs = match podspec::containers(pod, IpAddr::V4(ip), &volumes) {
            Ok(specs) => specs,
            Err(error) => {
                let message = error.to_string();
                self.event(&object, EventType::Warning, "Failed", &message);
                self.update(&uid, |entry| {
                    entry.failure = Some(("CreateContainerConfigError".to_owned(), message));
                });
                return;
            }
        };
        let run = PodRun { uid, object, dir };
        let mut containers: Vec<_> = specs
            .into_iter()
            .enumerate()
            .map(|(index, (name, spec))| {
                Some(Box::pin(self.run_container(
                    &run,
                    index,
                    name,
                    spec,
                    stop.clone(),
                )))
            })
            .collect();
        // All containers at once, in this one task: a panic in any of them
        // is the pod's, and the agent sees it as the task's.
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in &mut containers {
                if let Some(container) = slot {
                    if container.as_mut().poll(cx).is_ready() {
                        *slot = None;
                    } else {
                        pending = true;
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
    }

    /// Runs one container under the pod's restart policy, with back-off,
    /// keeping its status and its logs.
    async fn run_container(
        &self,
        run: &PodRun,
        index: usize,
        name: String,
        spec: ContainerSpec,
        mut stop: watch::Receiver<Option<KillMode>>,
    ) {
        let inner = &self.inner;
        let supervisor = Supervisor {
            policy: spec.restart,
            backoff: inner.config.backoff,
        };
        let image = match &spec.target {
            Target::Image { reference, .. } => reference.clone(),
            Target::File { path, .. } => path.display().to_string(),
        };
        let log_dir = container_dir(&run.dir, &name);
        let spec = Arc::new(spec);
        let current: Mutex<Option<RunResources>> = Mutex::new(None);
        let failure: Mutex<Option<StartFailure>> = Mutex::new(None);
        let pod_label = format!(
            "{}_{}({})",
            run.object.name(),
            run.object.namespace(),
            run.uid
        );
        // Copied into each run's future, which borrows them.
        // Whether a run started: the image's id is looked up once.
        let started = AtomicBool::new(false);
        let (current, failure, spec, image, log_dir, name, started) =
            (&current, &failure, &spec, &image, &log_dir, &name, &started);
        let mut attempts = 0u32;
        loop {
            let start = move || async move {
                let previous = lock(current).take();
                if let Some(previous) = previous {
                    previous.finish().await;
                }
                let prepared = {
                    let (kubelet, spec, log_dir) =
                        (self.clone(), Arc::clone(spec), log_dir.clone());
                    let first = !started.load(Ordering::Relaxed);
                    tokio::task::spawn_blocking(move || kubelet.prepare(&spec, &log_dir, first))
                        .await
                };
                let prepared = match prepared {
                    Ok(Ok(prepared)) => prepared,
                    Ok(Err((kind, message))) => {
                        *lock(failure) = Some(kind);
                        return Err(message);
                    }
                    Err(error) => {
                        *lock(failure) = Some(StartFailure::Create);
                        return Err(error.to_string());
                    }
                };
                let Prepared {
                    resolved,
                    log,
                    image_id,
                } = prepared;
                if let Some(image_id) = image_id {
                    self.update_container(&run.uid, index, |c| c.image_id = Some(image_id));
                }
                self.event(
                    &run.object,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image {image:?} already present on machine"),
                );
                let log = Arc::new(Mutex::new(log));
                let (pumps, stdout, stderr) = LogPumps::start(&log);
                let stdio = berth_container::Stdio {
                    stdin: berth_runtime::Stdin::Null,
                    stdout,
                    stderr,
                };
                let settings = LaunchSettings {
                    started: None,
                    // Pods share this process: each sandbox's quota charges
                    // its own threads' time.
                    cpu_clock: CpuClock::Sandbox,
                    default_max_connections: berth_runtime::http::default_max_connections(None),
                };
                let launched = {
                    let (runtime, spec) = (inner.runtime.clone(), Arc::clone(spec));
                    let handle = tokio::runtime::Handle::current();
                    // Loading may compile the program: off the async workers.
                    tokio::task::spawn_blocking(move || -> Result<Launched, String> {
                        handle
                            .block_on(launch(&runtime, &spec, resolved, stdio, &settings))
                            .map_err(|error| error_chain(&error))
                    })
                    .await
                    .unwrap_or_else(|error| Err(error.to_string()))
                };
                let launched = match launched {
                    Ok(launched) => launched,
                    Err(message) => {
                        pumps.finish().await;
                        *lock(failure) = Some(StartFailure::Create);
                        return Err(message);
                    }
                };
                self.event(
                    &run.object,
                    EventType::Normal,
                    "Created",
                    &format!("Created container {name}"),
                );
                if let Some(serving) = &launched.serving {
                    write_lines(
                        &log,
                        LogStream::Stderr,
                        &[format!(
                            "berth: serving {} on http://{} (container port {})",
                            serving.program_name, serving.addr, serving.container_port
                        )],
                    );
                }
                started.store(true, Ordering::Relaxed);
                let handle = launched.handle;
                let running = handle.clone();
                self.update_container(&run.uid, index, |c| c.handle = Some(running));
                *lock(current) = Some(RunResources {
                    log,
                    pumps,
                    scratch: launched.scratch,
                });
                Ok::<SandboxHandle, String>(handle)
            };
            let on_event = |event: Event<'_>| match event {
                Event::Started => {
                    self.update_container(&run.uid, index, |c| {
                        c.state = ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: Some(store::now()),
                            }),
                            ..ContainerState::default()
                        };
                        c.ready = true;
                        c.started = true;
                    });
                    self.event(
                        &run.object,
                        EventType::Normal,
                        "Started",
                        &format!("Started container {name}"),
                    );
                }
                Event::FailedToStart { error } => {
                    let kind = lock(failure).unwrap_or(StartFailure::Create);
                    let message = match kind {
                        StartFailure::Pull | StartFailure::NeverPull => {
                            format!("Failed to pull image {image:?}: {error}")
                        }
                        StartFailure::Create => format!("Error: {error}"),
                    };
                    self.event(&run.object, EventType::Warning, "Failed", &message);
                    self.update_container(&run.uid, index, |c| {
                        c.state = waiting(kind.reason(), Some(error.to_owned()));
                        c.ready = false;
                    });
                }
                Event::Exited { status } => {
                    if let Some(description) = status.describe()
                        && !matches!(status.reason, ExitReason::Killed { .. })
                        && let Some(run) = &*lock(current)
                    {
                        write_lines(
                            &run.log,
                            LogStream::Stderr,
                            &[format!("berth: {description}")],
                        );
                    }
                    self.update_container(&run.uid, index, |c| {
                        let started_at = c.state.running.take().and_then(|r| r.started_at);
                        c.state = ContainerState {
                            terminated: Some(terminated(status, started_at)),
                            ..ContainerState::default()
                        };
                        c.ready = false;
                        c.handle = None;
                    });
                }
                Event::Restarting { delay, restarts } => {
                    let message = format!(
                        "back-off {} restarting failed container={name} pod={pod_label}",
                        go_duration(delay)
                    );
                    self.update_container(&run.uid, index, |c| {
                        c.last_state = c.state.terminated.take();
                        c.restart_count = c
                            .restarts_before
                            .saturating_add(i32::try_from(restarts).unwrap_or(i32::MAX));
                        c.state = waiting("CrashLoopBackOff", Some(message));
                    });
                    self.event(
                        &run.object,
                        EventType::Warning,
                        "BackOff",
                        &format!("Back-off restarting failed container {name} in pod {pod_label}"),
                    );
                }
            };
            let ended = supervisor.run(start, &mut stop, on_event).await;
            let Ended::FailedToStart(_) = ended else {
                break;
            };
            // The first run could not start (kubelet retries pulls and
            // creates with the same back-off as restarts).
            attempts = attempts.saturating_add(1);
            let delay = inner.config.backoff.delay(attempts);
            if lock(failure).is_some_and(|f| f == StartFailure::Pull) {
                let message = format!("Back-off pulling image {image:?}");
                self.event(&run.object, EventType::Normal, "BackOff", &message);
                self.update_container(&run.uid, index, |c| {
                    c.state = waiting("ImagePullBackOff", Some(message));
                });
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(Option::is_some) => break,
            }
        }
        let last = lock(current).take();
        if let Some(last) = last {
            last.finish().await;
        }
    }

    /// The file-system half of starting a run (blocking): the log folders
    /// and the image (whose id is looked up on the `first` start only).
    fn prepare(
        &self,
        spec: &ContainerSpec,
        log_dir: &Path,
        first: bool,
    ) -> Result<Prepared, (StartFailure, String)> {
        let images = &self.inner.images;
        let log = open_run_log(log_dir).map_err(|error| {
            (
                StartFailure::Create,
                format!("cannot open the log in {}: {error}", log_dir.display()),
            )
        })?;
        let resolver = Images {
            store: &images.store,
            rootfs_dir: &images.rootfs_dir,
            scratch_dir: &images.scratch_dir,
            unpack_limits: &images.unpack_limits,
        };
        let mut pull = |image: &str| -> Result<String, PullError> {
            Err(format!(
                "the node agent does not pull images: put {image} in the local store first (`berth pull {image}` or `berth build -t {image}`)"
            )
            .into())
        };
        let resolved = resolve::resolve(spec, &resolver, &mut pull).map_err(|error| {
            let kind = match &error {
                ResolveError::NotLocal { .. } => StartFailure::NeverPull,
                ResolveError::Pull { .. } | ResolveError::Refused { .. } => StartFailure::Pull,
                _ => StartFailure::Create,
            };
            let message = match (&error, &spec.target) {
                (ResolveError::NotLocal { .. }, Target::Image { reference, .. }) => format!(
                    "Container image {reference:?} is not present with pull policy of Never"
                ),
                _ => error_chain(&error),
            };
            (kind, message)
        })?;
        let image_id = match &spec.target {
            Target::Image { reference, .. } if first => images
                .store
                .resolve(reference)
                .ok()
                .map(|(digest, _)| digest),
            _ => None,
        };
        Ok(Prepared {
            resolved,
            log,
            image_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
    }

    fn container(state: ContainerState, restarted: bool) -> ContainerEntry {
        ContainerEntry {
            name: "c".to_owned(),
            image: "i".to_owned(),
            image_id: None,
            state,
            last_state: restarted.then(ContainerStateTerminated::default),
            ready: false,
            started: false,
            restart_count: 0,
            restarts_before: 0,
            handle: None,
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn the_phase_follows_the_containers_as_kubelet_decides_it() {
        let creating = || container(waiting("ContainerCreating", None), false);
        let backing_off = || container(waiting("CrashLoopBackOff", None), true);
        let running = || {
            container(
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                },
                false,
            )
        };
        assert_eq!(phase_of(&[creating(), running()], None), "Pending");
        assert_eq!(phase_of(&[running(), backing_off()], None), "Running");
        assert_eq!(phase_of(&[backing_off()], Some("Always")), "Running");
        assert_eq!(
            phase_of(&[container(exited(0), false)], Some("Never")),
            "Succeeded"
        );
        assert_eq!(
            phase_of(&[container(exited(1), false)], Some("Never")),
            "Failed"
        );
        assert_eq!(
            phase_of(&[container(exited(1), false)], Some("OnFailure")),
            "Running"
        );
        assert_eq!(
            phase_of(&[container(exited(0), false)], Some("OnFailure")),
            "Succeeded"
        );
    }
}
