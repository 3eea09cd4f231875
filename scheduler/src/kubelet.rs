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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_container::Backoff;
use berth_runtime::Runtime;

use crate::quantity::Resources;
use crate::store::Store;

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

/// The node agent. Cheap to clone: clones share one agent.
#[derive(Debug, Clone)]
pub struct Kubelet {
    #[allow(dead_code)]
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    #[allow(dead_code)]
    store: Arc<Store>,
    #[allow(dead_code)]
    runtime: Runtime,
    #[allow(dead_code)]
    images: ImageSource,
    #[allow(dead_code)]
    config: KubeletConfig,
}

impl Kubelet {
    /// An agent for the pods of `store`, running them in `runtime`.
    pub fn new(
        store: Arc<Store>,
        runtime: Runtime,
        images: ImageSource,
        config: KubeletConfig,
    ) -> Kubelet {
        Kubelet {
            inner: Arc::new(Inner {
                store,
                runtime,
                images,
                config,
            }),
        }
    }
}

// Placeholders until the node agent lands: they keep the API server's
// contract compiling and answer as an agent with no pods would.
impl Kubelet {
    /// Runs the store's pods until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
    }

    /// The log folder of a pod's container (this run's, or the previous
    /// run's), for `berth_container::logs::LogFollower::open`.
    pub fn log_path(
        &self,
        _ns: &str,
        pod: &str,
        _container: Option<&str>,
        _previous: bool,
    ) -> Result<PathBuf, LogsError> {
        Err(LogsError::PodNotFound {
            name: pod.to_owned(),
        })
    }

    /// What the pods of `ns` (all when `None`) use now.
    pub fn usage(&self, _ns: Option<&str>) -> Vec<PodUsage> {
        Vec::new()
    }
}
