//! A pod's containers as berth containers: Kubernetes' container fields
//! translated to [`ContainerSpec`]s that the core library resolves and runs,
//! and the address each pod is reached at.
//!
//! - `image` and `imagePullPolicy` become an image target and its pull
//!   policy; `command` replaces the image's entry point (its first word is
//!   the program inside the image) and `args` its arguments, as in
//!   Kubernetes.
//! - `env` (plain values), `workingDir`, `resources.limits` (memory cap,
//!   CPU throttle) and `restartPolicy` carry over.
//! - `volumeMounts` of `hostPath` volumes mount the host directory;
//!   `emptyDir` volumes mount a directory the caller makes for the pod.
//! - Each `containerPort` is served on the pod's own address, port kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use berth_container::spec::{
    ContainerSpec, LimitsSpec, MountSpec, PullPolicy, RestartPolicy, Target,
};
use berth_runtime::PortMapping;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::quantity;

/// Why a pod's containers cannot be made into berth containers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PodSpecError {
    /// The field, as kubectl names it.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where a pod's volumes live on the host.
#[derive(Debug, Clone)]
pub struct VolumeDirs {
    /// The folder under which each pod's `emptyDir` volumes are made
    /// (`ROOT/POD_UID/VOLUME`).
    pub empty_dir_root: PathBuf,
}

impl VolumeDirs {
    /// The host folder of `volume`, an `emptyDir` of the pod with `uid`.
    pub fn empty_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.empty_dir_root.join(uid).join(volume)
    }
}

/// Each container of `pod`, by name, as a berth container reached at
/// `address`. `emptyDir` folders must exist before the containers start
/// (see [`VolumeDirs::empty_dir`]).
pub fn containers(
    pod: &Pod,
    address: IpAddr,
    dirs: &VolumeDirs,
) -> Result<Vec<(String, ContainerSpec)>, PodSpecError> {
    let refuse = |field: String, message: String| PodSpecError { field, message };
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| refuse("spec".to_owned(), "required".to_owned()))?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut volumes: BTreeMap<&str, (PathBuf, bool)> = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let source = match (&volume.host_path, &volume.empty_dir) {
            (Some(host), _) => (PathBuf::from(&host.path), false),
            (None, Some(_)) => (dirs.empty_dir(uid, &volume.name), true),
            (None, None) => {
                return Err(refuse(
                    format!("spec.volumes[{}]", volume.name),
                    "only hostPath and emptyDir volumes are supported".to_owned(),
                ));
            }
        };
        volumes.insert(volume.name.as_str(), source);
    }
    let restart = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure { max: None },
        Some("Never") => RestartPolicy::No,
        Some(other) => {
            return Err(refuse(
                "spec.restartPolicy".to_owned(),
                format!("unsupported value {other:?}"),
            ));
        }
    };
    spec.containers
        .iter()
        .enumerate()
        .map(|(index, container)| {
            let at = format!("spec.containers[{index}]");
            let mut translated = container_spec(container, &at, address, &volumes)?;
            translated.restart = restart;
            Ok((container.name.clone(), translated))
        })
        .collect()
}

fn container_spec(
    container: &Container,
    at: &str,
    address: IpAddr,
    volumes: &BTreeMap<&str, (PathBuf, bool)>,
) -> Result<ContainerSpec, PodSpecError> {
    let refuse = |field: &str, message: String| PodSpecError {
        field: format!("{at}.{field}"),
        message,
    };
    let image = container
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| refuse("image", "required".to_owned()))?;
    let pull = match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::Missing,
        // Kubernetes' default: Always for `:latest` or no tag, else IfNotPresent.
        None if image_is_latest(&image) => PullPolicy::Always,
        None => PullPolicy::Missing,
        Some(other) => {
            return Err(refuse(
                "imagePullPolicy",
                format!("unsupported value {other:?}: Always, IfNotPresent or Never"),
            ));
        }
    };
    let mut spec = ContainerSpec::new(Target::Image {
        reference: image,
        pull,
    });
    let command = container.command.clone().unwrap_or_default();
    let mut args = Vec::new();
    if let Some((program, rest)) = command.split_first() {
        if !program.starts_with('/') {
            return Err(refuse(
                "command[0]",
                format!("{program:?}: give the program's absolute path inside the image"),
            ));
        }
        spec.entrypoint = Some(program.clone());
        args.extend(rest.iter().cloned());
    }
    args.extend(container.args.iter().flatten().cloned());
    spec.args = args;
    spec.env = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect();
    spec.workdir = container.working_dir.clone();
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let Some((host, _)) = volumes.get(mount.name.as_str()) else {
            return Err(refuse(
                &format!("volumeMounts[{index}].name"),
                format!("volume {:?} is not defined", mount.name),
            ));
        };
        spec.mounts.push(MountSpec {
            host: host.clone(),
            guest: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false),
        });
    }
    for (index, port) in container.ports.iter().flatten().enumerate() {
        let container_port = u16::try_from(port.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                refuse(
                    &format!("ports[{index}].containerPort"),
                    format!("must be between 1 and 65535, got {}", port.container_port),
                )
            })?;
        spec.ports.push(PortMapping {
            host: SocketAddr::new(address, container_port),
            container_port,
        });
    }
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |name: &str| limits.and_then(|l| l.get(name)).map(|q| q.0.clone());
    spec.limits = LimitsSpec {
        memory_bytes: limit("memory")
            .map(|q| quantity::memory_bytes(&q))
            .transpose()
            .map_err(|e| refuse("resources.limits.memory", e.to_string()))?,
        cpus: limit("cpu")
            .map(|q| quantity::cpu_millis(&q))
            .transpose()
            .map_err(|e| refuse("resources.limits.cpu", e.to_string()))?
            .map(|millis| millis as f64 / 1000.0),
        timeout: None,
    };
    Ok(spec)
}

fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// Gives each pod an address of its own.
///
/// On Linux every address of 127.0.0.0/8 is the loopback interface, so each
/// pod gets one (from 127.1.0.1 up; 127.0.0.0/16 is left to the host) and
/// keeps its containerPorts: two replicas serving 8080 never clash. Other
/// systems only answer on 127.0.0.1, where pods share the address and port
/// clashes are refused when a container binds.
#[derive(Debug, Clone)]
pub struct AddressPool {
    distinct: bool,
    next: u32,
    free: Vec<Ipv4Addr>,
    taken: BTreeMap<String, Ipv4Addr>,
}

/// The first address handed out on Linux: 127.1.0.1.
const FIRST: u32 = u32::from_be_bytes([127, 1, 0, 1]);
/// The last: 127.255.255.254.
const LAST: u32 = u32::from_be_bytes([127, 255, 255, 254]);

impl AddressPool {
    /// A pool as this system allows: distinct loopback addresses on Linux.
    pub fn for_this_system() -> AddressPool {
        AddressPool::new(cfg!(target_os = "linux"))
    }

    /// A pool with distinct addresses per pod (`distinct`) or one shared
    /// 127.0.0.1.
    pub fn new(distinct: bool) -> AddressPool {
        AddressPool {
            distinct,
            next: FIRST,
            free: Vec::new(),
            taken: BTreeMap::new(),
        }
    }

    /// The address of pod `key` (`NAMESPACE/NAME`), assigning one if it has
    /// none. `preferred` (the address a pod had before a restart of the
    /// daemon) is kept when it is free.
    pub fn assign(&mut self, key: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if !self.distinct {
            return Some(Ipv4Addr::LOCALHOST);
        }
        if let Some(address) = self.taken.get(key) {
            return Some(*address);
        }
        let in_use = |pool: &AddressPool, a: &Ipv4Addr| pool.taken.values().any(|t| t == a);
        let address = match preferred {
            Some(a) if (FIRST..=LAST).contains(&u32::from(a)) && !in_use(self, &a) => {
                self.free.retain(|f| *f != a);
                if u32::from(a) >= self.next {
                    // Skipped over; the addresses between stay assignable.
                    for skipped in self.next..u32::from(a) {
                        self.free.push(Ipv4Addr::from(skipped));
                    }
                    self.next = u32::from(a) + 1;
                }
                a
            }
            _ => loop {
                if let Some(a) = self.free.pop() {
                    if !in_use(self, &a) {
                        break a;
                    }
                    continue;
                }
                if self.next > LAST {
                    return None;
                }
                let a = Ipv4Addr::from(self.next);
                self.next += 1;
                if !in_use(self, &a) {
                    break a;
                }
            },
        };
        self.taken.insert(key.to_owned(), address);
        Some(address)
    }

    /// Gives back the address of pod `key`.
    pub fn release(&mut self, key: &str) {
        if let Some(address) = self.taken.remove(key) {
            self.free.push(address);
        }
    }
}

/// The emptyDir folders of a pod, created owner-only.
pub fn make_empty_dirs(pod: &Pod, dirs: &VolumeDirs) -> std::io::Result<Vec<PathBuf>> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut made = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if volume.empty_dir.is_some() {
            let dir = dirs.empty_dir(uid, &volume.name);
            berth_fs::create_private_dir_all(&dir)?;
            made.push(dir);
        }
    }
    Ok(made)
}

/// Removes the emptyDir folders of the pod with `uid`.
pub fn remove_empty_dirs(uid: &str, dirs: &VolumeDirs) -> std::io::Result<()> {
    let root: &Path = &dirs.empty_dir_root.join(uid);
    match std::fs::remove_dir_all(root) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
