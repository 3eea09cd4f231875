//! From an OCI bundle (the `config.json` containerd writes, and the root
//! filesystem it mounts) to a [`ContainerSpec`] berth's container library
//! resolves and launches.
//!
//! The program is `process.args[0]`: an absolute path to a `.wasm` inside
//! the root filesystem (`PATH#EXPORT` calls an export), resolved as an
//! image's ENTRYPOINT is. The root filesystem is granted at `/`, read-only
//! unless `root.readonly` is `false` (containerd and CRI write the field
//! only when it is true, so their containers get a read-only root);
//! bind mounts of directories become grants (of single files, which WASI
//! cannot grant, are refused, except the ones CRI adds to every
//! container, see [`RUNTIME_FILES`]); `process.env` and
//! `process.cwd` apply, a wasi:http component is served on `BERTH_LISTEN`
//! from its environment (default `0.0.0.0:8080`), in the network namespace
//! `linux.namespaces` names (a pod's, under CRI) or else the shim's own,
//! `linux.resources.memory.limit` is the memory cap and
//! `cpu.quota / cpu.period` the CPU quota, and the same fields of a task
//! Update change them while the task runs ([`limits_update`]). Everything
//! else in the spec
//! (other namespaces, capabilities, device rules) concerns Linux
//! processes, which berth does not start.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_container::resolve::ProgramOutside;
use berth_container::spec::{MountSpec, Target};
use berth_container::{ContainerSpec, FlagError};
use berth_runtime::PortMapping;
use berth_runtime::spec::normalize_guest_path;
use oci_spec::runtime::Spec;

/// Why a bundle cannot run under berth.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// `config.json` is missing or not an OCI runtime spec.
    #[error("cannot read the bundle's config.json at {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `process.args` is empty.
    #[error("the bundle's config.json has no process.args: berth needs a .wasm path to run")]
    NoProgram,
    /// The program is not an absolute path.
    #[error("the entrypoint {0:?} is not an absolute path inside the image")]
    RelativeProgram(String),
    /// The program is not in the root filesystem.
    #[error("the entrypoint {program} does not exist in the container's root filesystem")]
    MissingProgram {
        /// The program's path inside the root filesystem.
        program: String,
    },
    /// The program's symlinks lead out of the root filesystem.
    #[error(
        "the entrypoint {program} leads out of the container's root filesystem (a symlink to {target}); berth runs only programs inside it"
    )]
    ProgramOutsideRootfs {
        /// The program's path inside the root filesystem.
        program: String,
        /// Where its symlinks lead on the host.
        target: String,
    },
    /// The program is a native executable.
    #[error(
        "{program} is a native executable: berth runs WebAssembly only; run native containers with runc's RuntimeClass (runtime io.containerd.runc.v2)"
    )]
    Native {
        /// The program's path inside the root filesystem.
        program: String,
    },
    /// `BERTH_LISTEN` is not an address.
    #[error("BERTH_LISTEN={0:?} is not an address to serve on: give IP:PORT, e.g. 0.0.0.0:8080")]
    Listen(String),
    /// The program cannot be read.
    #[error("cannot read the entrypoint {program}: {error}")]
    Read {
        /// The program's path inside the root filesystem.
        program: String,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A bind mount's source is a single file: WASI grants directories.
    #[error(
        "cannot grant the bind mount of the file {host} at {guest}: berth grants directories only (WASI has no file grants); bind the directory that holds it instead"
    )]
    FileMount {
        /// The file on the host.
        host: String,
        /// Where the spec mounts it.
        guest: String,
    },
    /// A bind mount's source cannot be used.
    #[error("cannot grant the bind mount of {host} at {guest}: {error}")]
    MountSource {
        /// The source on the host.
        host: String,
        /// Where the spec mounts it.
        guest: String,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A task Update's resources are not Linux resources in JSON.
    #[error(
        "cannot read the resources of the update ({type_url}): {message}; berth takes the OCI runtime spec's LinuxResources"
    )]
    Resources {
        /// The type the update says it carries.
        type_url: String,
        /// What went wrong.
        message: String,
    },
    /// A setting of the spec cannot be used.
    #[error(transparent)]
    Flag(#[from] FlagError),
}

/// Files CRI and kubelet bind into every container: a resolver's
/// configuration and the hosts file (a guest resolves no names through
/// them), the pod's hostname, and where kubelet reads a termination
/// message. WASI cannot grant single files, and refusing these would
/// refuse every pod, so they are left out.
pub const RUNTIME_FILES: [&str; 4] = [
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
];

/// What containerd asks to run, as berth runs it.
#[derive(Debug)]
pub struct Bundle {
    /// The container, with its program as a file target inside the root
    /// filesystem.
    pub spec: ContainerSpec,
    /// The program's path inside the container, for messages.
    pub program: String,
    /// The network namespace file the spec puts the container in, if it
    /// names one: where a served port is bound.
    pub netns: Option<PathBuf>,
    /// The pod the container belongs to, if CRI says.
    pub pod: Option<String>,
}

/// Where a wasi:http component is served unless its environment's
/// `BERTH_LISTEN` says otherwise: the conventional container port, on every
/// address of the container's network namespace.
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// CRI's annotation naming a container's role: `sandbox` for the pod's
/// pause container, `container` for a workload.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod a container belongs to.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a bundle asks the shim to run.
#[derive(Debug)]
pub enum Role {
    /// A pod's sandbox (pause) container: a native placeholder, served as
    /// a task that runs until it is killed; `netns` is the pod's network
    /// namespace file, unless the pod uses the node's network.
    PodSandbox {
        /// The pod's network namespace file.
        netns: Option<PathBuf>,
    },
    /// A WebAssembly container.
    Container(Box<Bundle>),
}

/// Reads `bundle/config.json`.
pub fn read_spec(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|error| BundleError::Config {
        path: path.clone(),
        message: error.to_string(),
    })
}

/// Reads `bundle/config.json`; `rootfs` is where the root filesystem is
/// on the host (see [`crate::rootfs`]).
pub fn load(bundle: &Path, rootfs: &Path) -> Result<Role, BundleError> {
    let spec = read_spec(bundle)?;
    if annotation(&spec, CONTAINER_TYPE) == Some("sandbox") {
        return Ok(Role::PodSandbox {
            netns: network_namespace(&spec),
        });
    }
    from_spec(&spec, rootfs).map(|bundle| Role::Container(Box::new(bundle)))
}

/// The network namespace file `spec` joins (`linux.namespaces` of type
/// `network` with a path), as CRI gives a pod's containers. A network
/// namespace without a path (a new, empty one) is not made: such a
/// container serves in the shim's own namespace.
pub fn network_namespace(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        })
        .and_then(|ns| ns.path().clone())
        .filter(|path| !path.as_os_str().is_empty())
}

/// The pod `spec`'s container belongs to, if CRI says.
pub fn pod_id(spec: &Spec) -> Option<&str> {
    annotation(spec, SANDBOX_ID).filter(|id| !id.is_empty())
}

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

/// The container `spec` describes, with its root filesystem at `rootfs`.
pub fn from_spec(spec: &Spec, rootfs: &Path) -> Result<Bundle, BundleError> {
    let process = spec.process().as_ref().ok_or(BundleError::NoProgram)?;
    let args = process.args().as_deref().unwrap_or_default();
    let (program, args) = args.split_first().ok_or(BundleError::NoProgram)?;
    let (program, export) = split_export(program, rootfs);
    let guest = normalize_guest_path(&program)
        .filter(|_| program.starts_with('/'))
        .ok_or_else(|| BundleError::RelativeProgram(program.clone()))?;
    let host = match berth_container::resolve::program_in_rootfs(rootfs, &guest) {
        Ok(host) => host,
        Err(ProgramOutside::Missing) => return Err(BundleError::MissingProgram { program: guest }),
        Err(ProgramOutside::Escapes(target)) => {
            return Err(BundleError::ProgramOutsideRootfs {
                program: guest,
                target: target.display().to_string(),
            });
        }
    };
    if is_elf(&host) {
        return Err(BundleError::Native { program: guest });
    }

    let bytes = std::fs::read(&host).map_err(|error| BundleError::Read {
        program: guest.clone(),
        error,
    })?;
    let serves_http = berth_runtime::http::exports_http_handler(&bytes);
    drop(bytes);

    let mut container = ContainerSpec::new(Target::File { path: host, export });
    container.args = args.to_vec();
    container.env = process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let cwd = process.cwd().to_string_lossy();
    if cwd != "/" && !cwd.is_empty() {
        container.workdir = Some(cwd.into_owned());
    }
    if serves_http {
        let listen = container
            .env
            .iter()
            .rev()
            .find(|(key, _)| key == "BERTH_LISTEN")
            .map_or(DEFAULT_LISTEN, |(_, value)| value.as_str());
        let host: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| BundleError::Listen(listen.to_owned()))?;
        container.ports.push(PortMapping {
            host,
            container_port: host.port(),
        });
    }
    container.mounts.push(MountSpec {
        host: rootfs.to_path_buf(),
        guest: "/".to_owned(),
        read_only: spec.root().as_ref().and_then(|root| root.readonly()) != Some(false),
    });
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        let options = mount.options().as_deref().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount.source().as_ref().filter(|_| is_bind) else {
            continue;
        };
        let guest = mount.destination().to_string_lossy();
        if guest == "/" {
            continue;
        }
        let metadata = std::fs::metadata(source).map_err(|error| BundleError::MountSource {
            host: source.display().to_string(),
            guest: guest.clone().into_owned(),
            error,
        })?;
        if !metadata.is_dir() {
            if RUNTIME_FILES.contains(&guest.as_ref()) {
                continue;
            }
            return Err(BundleError::FileMount {
                host: source.display().to_string(),
                guest: guest.into_owned(),
            });
        }
        container.mounts.push(MountSpec {
            host: source.clone(),
            guest: guest.into_owned(),
            read_only: options.iter().any(|o| o == "ro"),
        });
    }

    let resources = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.resources().as_ref());
    if let Some(resources) = resources {
        container.limits.memory_bytes = resources
            .memory()
            .as_ref()
            .and_then(|memory| memory.limit())
            .and_then(|limit| u64::try_from(limit).ok())
            .filter(|limit| *limit > 0);
        container.limits.cpus = resources.cpu().as_ref().and_then(|cpu| {
            let quota = cpu.quota().filter(|quota| *quota > 0)?;
            let period = cpu.period().filter(|period| *period > 0)?;
            Some(quota as f64 / period as f64)
        });
    }
    Ok(Bundle {
        spec: container,
        program: guest,
        netns: network_namespace(spec),
        pod: pod_id(spec).map(str::to_owned),
    })
}

/// containerd's type for the resources of a task Update: the OCI runtime
/// spec's `LinuxResources`, encoded as JSON.
const LINUX_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The cgroup CPU period when a spec gives none (`cpu.cfs_period_us`).
const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// New limits for a running task, as [`berth_runtime::SandboxHandle::update_limits`]
/// takes them: `None` keeps a limit, `u64::MAX` and a quota of a whole
/// core or more lift one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsUpdate {
    /// The new memory cap in bytes.
    pub memory_bytes: Option<u64>,
    /// The new CPU quota in cores.
    pub cpus: Option<f64>,
}

/// The limits a task Update's `resources` (type `type_url`) ask for. As
/// runc reads them: a memory limit or CPU quota of -1 lifts it, 0 or none
/// keeps it; a quota without a period is over `period`, the task's own
/// (from its bundle), else the cgroup default of 100 ms.
pub fn limits_update(
    type_url: &str,
    resources: &[u8],
    period: Option<u64>,
) -> Result<LimitsUpdate, BundleError> {
    let refused = |message: String| BundleError::Resources {
        type_url: type_url.to_owned(),
        message,
    };
    if type_url.trim_start_matches('/') != LINUX_RESOURCES {
        return Err(refused(format!("expected {LINUX_RESOURCES}")));
    }
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_slice(resources).map_err(|error| refused(error.to_string()))?;
    let memory_bytes = resources
        .memory()
        .as_ref()
        .and_then(|memory| memory.limit())
        .and_then(|limit| match limit {
            -1 => Some(u64::MAX),
            limit => u64::try_from(limit).ok().filter(|limit| *limit > 0),
        });
    let cpus = resources.cpu().as_ref().and_then(|cpu| {
        let quota = cpu.quota()?;
        if quota == -1 {
            return Some(f64::INFINITY);
        }
        let quota = u64::try_from(quota).ok().filter(|quota| *quota > 0)?;
        let period = cpu
            .period()
            .or(period)
            .filter(|period| *period > 0)
            .unwrap_or(DEFAULT_CPU_PERIOD);
        Some(quota as f64 / period as f64)
    });
    Ok(LimitsUpdate { memory_bytes, cpus })
}

/// The CPU period `spec` sets, if any.
pub fn cpu_period(spec: &Spec) -> Option<u64> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.resources().as_ref())
        .and_then(|resources| resources.cpu().as_ref())
        .and_then(|cpu| cpu.period())
}

/// Splits `PATH#EXPORT` into the path and the export, unless the whole
/// name exists in the root filesystem.
fn split_export(program: &str, rootfs: &Path) -> (String, Option<String>) {
    if let Some((path, export)) = program.rsplit_once('#')
        && !export.is_empty()
        && !rootfs.join(program.trim_start_matches('/')).exists()
    {
        return (path.to_owned(), Some(export.to_owned()));
    }
    (program.to_owned(), None)
}

/// Whether `path` starts with the ELF magic number.
fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).expect("spec")
    }

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("rootfs");
        std::fs::create_dir_all(dir.path().join("app")).expect("mkdir");
        std::fs::write(dir.path().join("app/hello.wasm"), b"\0asm\x01\0\0\0").expect("write");
        std::fs::write(dir.path().join("app/native"), b"\x7fELF\x02\x01\x01").expect("write");
        dir
    }

    #[test]
    fn process_resources_and_binds_become_the_container() {
        let root = rootfs();
        let data = tempfile::tempdir().expect("data");
        let bundle = from_spec(
            &spec(serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs"},
                "process": {
                    "user": {"uid": 0, "gid": 0},
                    "args": ["/app/hello.wasm#run", "one"],
                    "env": ["A=1", "PATH=/bin"],
                    "cwd": "/app",
                },
                "mounts": [
                    {"destination": "/proc", "type": "proc", "source": "proc"},
                    {"destination": "/data", "type": "bind", "source": data.path(), "options": ["rbind", "ro"]},
                ],
                "linux": {"resources": {
                    "memory": {"limit": 67108864},
                    "cpu": {"quota": 50000, "period": 100000},
                }},
            })),
            root.path(),
        )
        .expect("bundle");
        assert_eq!(bundle.program, "/app/hello.wasm");
        let Target::File { path, export } = &bundle.spec.target else {
            panic!("not a file target: {:?}", bundle.spec.target);
        };
        assert_eq!(path, &root.path().join("app/hello.wasm"));
        assert_eq!(export.as_deref(), Some("run"));
        assert_eq!(bundle.spec.args, ["one"]);
        assert_eq!(
            bundle.spec.env,
            [("A".into(), "1".into()), ("PATH".into(), "/bin".into())]
        );
        assert_eq!(bundle.spec.workdir.as_deref(), Some("/app"));
        assert_eq!(bundle.spec.limits.memory_bytes, Some(64 << 20));
        assert_eq!(bundle.spec.limits.cpus, Some(0.5));
        let mounts: Vec<_> = bundle
            .spec
            .mounts
            .iter()
            .map(|m| (m.host.clone(), m.guest.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                (root.path().to_path_buf(), "/", true),
                (data.path().to_path_buf(), "/data", true)
            ]
        );
    }

    /// The spec of `/app/hello.wasm` with `root` and `mounts`.
    fn with_root_and_mounts(root: serde_json::Value, mounts: serde_json::Value) -> Spec {
        spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": root,
            "process": {"args": ["/app/hello.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "mounts": mounts,
        }))
    }

    #[test]
    fn the_root_filesystem_is_read_only_unless_the_spec_says_false() {
        let root = rootfs();
        for (readonly, expected) in [
            (serde_json::json!(null), true),
            (serde_json::json!(true), true),
            (serde_json::json!(false), false),
        ] {
            let mut root_field = serde_json::json!({"path": "rootfs"});
            if !readonly.is_null() {
                root_field["readonly"] = readonly.clone();
            }
            let bundle = from_spec(
                &with_root_and_mounts(root_field, serde_json::json!([])),
                root.path(),
            )
            .expect("bundle");
            let mount = &bundle.spec.mounts[0];
            assert_eq!(mount.guest, "/");
            assert_eq!(mount.read_only, expected, "readonly: {readonly}");
        }
    }

    #[test]
    fn a_file_bind_is_refused_naming_it_unless_cri_adds_it_to_every_container() {
        let root = rootfs();
        let host = tempfile::tempdir().expect("host dir");
        let file = host.path().join("app.toml");
        std::fs::write(&file, "x = 1\n").expect("write");
        let bind = |source: &Path, destination: &str| serde_json::json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "ro"]});
        let load = |mounts: serde_json::Value| {
            from_spec(
                &with_root_and_mounts(serde_json::json!({"path": "rootfs"}), mounts),
                root.path(),
            )
        };

        let error = load(serde_json::json!([bind(&file, "/etc/app.toml")]))
            .expect_err("a file bind")
            .to_string();
        assert!(
            error.contains(&file.display().to_string())
                && error.contains("/etc/app.toml")
                && error.contains("directories only"),
            "{error}"
        );

        let missing = host.path().join("missing");
        let error = load(serde_json::json!([bind(&missing, "/data")]))
            .expect_err("a missing source")
            .to_string();
        assert!(
            error.contains(&missing.display().to_string()) && error.contains("/data"),
            "{error}"
        );

        // CRI's own files are left out; directories beside them granted.
        let mut mounts: Vec<_> = RUNTIME_FILES
            .iter()
            .map(|guest| bind(&file, guest))
            .collect();
        mounts.push(bind(host.path(), "/config"));
        let bundle = load(serde_json::Value::Array(mounts)).expect("CRI's files");
        let guests: Vec<_> = bundle
            .spec
            .mounts
            .iter()
            .map(|m| m.guest.as_str())
            .collect();
        assert_eq!(guests, ["/", "/config"]);
    }

    #[test]
    fn an_update_changes_the_limits_it_names_and_lifts_those_at_minus_one() {
        let update = |json: serde_json::Value, period: Option<u64>| {
            limits_update(LINUX_RESOURCES, json.to_string().as_bytes(), period).expect("update")
        };
        assert_eq!(
            update(
                serde_json::json!({"memory": {"limit": 33554432}, "cpu": {"quota": 20000, "period": 100000}}),
                None
            ),
            LimitsUpdate {
                memory_bytes: Some(32 << 20),
                cpus: Some(0.2)
            }
        );
        // Only the quota: over the task's own period, else 100 ms.
        assert_eq!(
            update(serde_json::json!({"cpu": {"quota": 25000}}), Some(50_000)).cpus,
            Some(0.5)
        );
        assert_eq!(
            update(serde_json::json!({"cpu": {"quota": 25000}}), None).cpus,
            Some(0.25)
        );
        assert_eq!(
            update(
                serde_json::json!({"memory": {"limit": -1}, "cpu": {"quota": -1}}),
                None
            ),
            LimitsUpdate {
                memory_bytes: Some(u64::MAX),
                cpus: Some(f64::INFINITY)
            }
        );
        assert_eq!(
            update(
                serde_json::json!({"memory": {"limit": 0}, "pids": {"limit": 5}}),
                None
            ),
            LimitsUpdate {
                memory_bytes: None,
                cpus: None
            }
        );
        let error = limits_update(
            "types.containerd.io/opencontainers/runtime-spec/1/WindowsResources",
            b"{}",
            None,
        )
        .expect_err("not Linux resources")
        .to_string();
        assert!(
            error.contains("WindowsResources") && error.contains("LinuxResources"),
            "{error}"
        );
        let error = limits_update(LINUX_RESOURCES, b"{\"memory\": 5", None)
            .expect_err("not JSON")
            .to_string();
        assert!(error.contains("cannot read the resources"), "{error}");
    }

    #[test]
    fn programs_that_cannot_run_are_refused_with_the_reason() {
        let root = rootfs();
        let run = |args: serde_json::Value| {
            from_spec(
                &spec(serde_json::json!({
                    "ociVersion": "1.0.2",
                    "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}},
                })),
                root.path(),
            )
            .expect_err("refused")
            .to_string()
        };
        assert!(run(serde_json::json!([])).contains("no process.args"));
        assert!(run(serde_json::json!(["app/hello.wasm"])).contains("not an absolute path"));
        assert!(run(serde_json::json!(["/app/missing.wasm"])).contains("does not exist"));
        let native = run(serde_json::json!(["/app/native"]));
        assert!(
            native.contains("WebAssembly only") && native.contains("runc"),
            "{native}"
        );
        // A hostile image's program that points at a host file (here a
        // real wasm program outside the root filesystem) is never read.
        let outside = tempfile::tempdir().expect("tempdir");
        let host_program = outside.path().join("host.wasm");
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/hello.wasm"),
            &host_program,
        )
        .expect("copy");
        std::os::unix::fs::symlink(&host_program, root.path().join("app/escape.wasm"))
            .expect("symlink");
        std::os::unix::fs::symlink("../../../../../../..", root.path().join("app/up"))
            .expect("symlink");
        let escape = run(serde_json::json!(["/app/escape.wasm"]));
        assert!(escape.contains("leads out of"), "{escape}");
        let relative = format!("/app/up{}", host_program.display());
        let escape = run(serde_json::json!([relative]));
        assert!(escape.contains("leads out of"), "{escape}");
    }
}
