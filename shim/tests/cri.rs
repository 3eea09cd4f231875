//! The Kubernetes path: a client speaking CRI gRPC (runtime.v1, as kubelet
//! does) to a private containerd (Debian's 1.6.20) whose CRI plugin has the
//! runtime handler `berth` (runtime type `io.containerd.berth.v1`).
//!
//! Pods use the host's network (no CNI plugin here), and the sandbox image
//! is a pause image built by the test (a native `/pause` entrypoint the
//! shim never executes) and imported into CRI's `k8s.io` namespace, so
//! nothing is pulled. Workloads are berth images, built and saved as
//! `berth build` and `berth save` do. Each test has its own containerd and
//! pod, and ends the pod as kubelet does (StopPodSandbox, RemovePodSandbox),
//! checking that the pod's shim process is gone.
//!
//! Skips (with a message) where containerd is not installed; needs root,
//! as containerd does.

#![cfg(target_os = "linux")]

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Containerd, PAUSE_STAND_IN, RUNTIME, get, skip_without_containerd};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStats, ContainerStatsRequest,
    ContainerStatus, ContainerStatusRequest, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI runtime handler pods name (a RuntimeClass's `handler`).
const HANDLER: &str = "berth";
/// The sandbox image, as CRI's config names it.
const PAUSE_IMAGE: &str = "docker.io/berthtest/pause:3.9";
/// The longest one CRI call may take.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// The CRI plugin's sections: the `berth` handler, the locally built
/// sandbox image, and every path containerd or runc would write under the
/// temp dir. Root here lacks CAP_SYS_RESOURCE, which runc's
/// oom_score_adj needs unless restricted.
fn cri_config(dir: &Path) -> String {
    write_cni_network(dir);
    let path = |name: &str| dir.join(name).display().to_string();
    format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {PAUSE_IMAGE:?}\n  \
         disable_tcp_service = true\n  stream_server_address = \"127.0.0.1\"\n  \
         stream_server_port = \"0\"\n  restrict_oom_score_adj = true\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {cni_bin:?}\n  conf_dir = {cni_conf:?}\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"native\"\n  \
         default_runtime_name = \"runc\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  \
         runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  \
         SystemdCgroup = false\n  Root = {runc:?}\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{HANDLER}]\n  \
         runtime_type = {RUNTIME:?}\n",
        cni_bin = path("cni/bin"),
        cni_conf = path("cni/net.d"),
        runc = path("runc"),
    )
}

/// Where Debian's `containernetworking-plugins` installs the CNI plugins.
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// Whether the CNI plugins a pod network needs here are installed (said
/// on stderr when not).
fn cni_installed() -> bool {
    let installed = ["loopback", "ptp", "host-local"]
        .iter()
        .all(|plugin| Path::new(CNI_PLUGINS).join(plugin).exists());
    if !installed {
        eprintln!(
            "skipping: the CNI plugins are not installed in {CNI_PLUGINS} (Debian package `containernetworking-plugins`)"
        );
    }
    installed
}

/// The pod network CRI sets up for pods not on the node's network: a
/// point-to-point veth per pod (CNI's `ptp`) with an address from a /24
/// of its own (per test process, so that concurrent runs do not collide),
/// its allocations kept under `dir`. Pods on the host's network never use
/// it.
fn write_cni_network(dir: &Path) {
    let bin = dir.join("cni/bin");
    let conf = dir.join("cni/net.d");
    std::fs::create_dir_all(&bin).expect("CNI bin dir");
    std::fs::create_dir_all(&conf).expect("CNI conf dir");
    for plugin in ["loopback", "ptp", "host-local"] {
        let installed = Path::new(CNI_PLUGINS).join(plugin);
        if installed.exists() {
            std::os::unix::fs::symlink(&installed, bin.join(plugin)).expect("link a CNI plugin");
        }
    }
    let subnet = format!("10.213.{}.0/24", std::process::id() % 250);
    let network = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "berth-test",
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "dataDir": dir.join("cni/ipam"),
            },
        }],
    });
    std::fs::write(conf.join("10-berth-test.conflist"), network.to_string()).expect("CNI config");
}

/// A node: containerd with CRI, and the clients kubelet would hold.
struct Node {
    containerd: Containerd,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    tokio: tokio::runtime::Runtime,
}

/// A pod run by [`Node::run_pod`].
struct Pod {
    id: String,
    config: PodSandboxConfig,
    log_dir: PathBuf,
}

/// The outcome of a CRI call within [`CALL_LIMIT`].
type Reply<T> = Result<T, tonic::Status>;

impl Node {
    /// Starts containerd with CRI, and imports the sandbox image.
    fn start() -> Node {
        let containerd = Containerd::start_with_cri(&cri_config);
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = containerd.socket();
        let channel = tokio
            .block_on(
                Endpoint::from_static("http://[::]:0").connect_with_connector(tower::service_fn(
                    move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    },
                )),
            )
            .expect("connect to containerd's socket");
        let node = Node {
            containerd,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            tokio,
        };
        // CRI initializes after containerd answers: wait until it does.
        node.until("CRI answers Status", || {
            node.rpc(|mut c| async move { c.status(StatusRequest::default()).await })
                .ok()
        });
        let pause = import_pause_image(&node.containerd);
        assert_eq!(pause, PAUSE_IMAGE);
        node.wait_for_image(&pause);
        node
    }

    /// Calls the runtime service, bounded by [`CALL_LIMIT`].
    fn rpc<T, F, Fut>(&self, call: F) -> Reply<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Reply<tonic::Response<T>>>,
    {
        self.bounded(call(self.runtime.clone()))
    }

    fn bounded<T>(&self, call: impl Future<Output = Reply<tonic::Response<T>>>) -> Reply<T> {
        self.tokio
            .block_on(async { tokio::time::timeout(CALL_LIMIT, call).await })
            .unwrap_or_else(|_| panic!("a CRI call took over {CALL_LIMIT:?}"))
            .map(tonic::Response::into_inner)
    }

    /// Polls `check` until it gives a value, for at most 30 s.
    fn until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "not within 30 s: {what}\ncontainerd log:\n{}",
                self.containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until CRI's image store knows `image` (it learns of imports
    /// from containerd's events), as kubelet's pull would.
    fn wait_for_image(&self, image: &str) {
        self.until(&format!("CRI knows the image {image}"), || {
            let request = ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                verbose: false,
            };
            let mut images = self.images.clone();
            self.bounded(async move { images.image_status(request).await })
                .ok()
                .and_then(|status| status.image)
        });
    }

    /// Builds and imports a berth image for CRI.
    fn import_image(&self, name: &str, dockerfile: &str) -> String {
        let image = self.containerd.import_image(name, dockerfile);
        self.wait_for_image(&image);
        image
    }

    /// RunPodSandbox with the `berth` handler, on the host's network.
    fn run_pod(&self, name: &str) -> Pod {
        self.run_pod_on(name, NamespaceMode::Node)
    }

    /// RunPodSandbox with the `berth` handler; `network` is `Node` for the
    /// host's network, `Pod` for a network namespace of its own.
    fn run_pod_on(&self, name: &str, network: NamespaceMode) -> Pod {
        let log_dir = self.containerd.dir.path().join("pods").join(name);
        std::fs::create_dir_all(&log_dir).expect("pod log dir");
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network.into(),
                        pid: NamespaceMode::Container.into(),
                        ipc: NamespaceMode::Pod.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: HANDLER.to_owned(),
        };
        let id = self
            .rpc(|mut c| async move { c.run_pod_sandbox(request).await })
            .unwrap_or_else(|error| {
                panic!(
                    "RunPodSandbox: {error}\ncontainerd log:\n{}",
                    self.containerd.log()
                )
            })
            .pod_sandbox_id;
        Pod {
            id,
            config,
            log_dir,
        }
    }

    /// The address CRI gave `pod` on the pod network.
    fn pod_ip(&self, pod: &Pod) -> String {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        };
        self.rpc(|mut c| async move { c.pod_sandbox_status(request).await })
            .unwrap_or_else(|error| panic!("PodSandboxStatus: {error}"))
            .status
            .and_then(|status| status.network)
            .map(|network| network.ip)
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| panic!("pod {} has no address", pod.id))
    }

    /// The network namespace file CRI made for `pod` (from its sandbox's
    /// runtime spec, in PodSandboxStatus's verbose info).
    fn pod_netns(&self, pod: &Pod) -> PathBuf {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: true,
        };
        let info = self
            .rpc(|mut c| async move { c.pod_sandbox_status(request).await })
            .unwrap_or_else(|error| panic!("PodSandboxStatus: {error}"))
            .info;
        let info: serde_json::Value =
            serde_json::from_str(info.get("info").map_or("{}", String::as_str)).expect("info");
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|namespace| namespace["type"] == "network")
            .and_then(|namespace| namespace["path"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("pod {} has no network namespace: {info}", pod.id))
    }

    /// CreateContainer and StartContainer of `config` in `pod`.
    fn start_container(&self, pod: &Pod, config: ContainerConfig) -> String {
        let log_file = pod.log_dir.join(&config.log_path);
        if let Some(parent) = log_file.parent() {
            std::fs::create_dir_all(parent).expect("container log dir");
        }
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let id = self
            .rpc(|mut c| async move { c.create_container(request).await })
            .unwrap_or_else(|error| {
                panic!(
                    "CreateContainer: {error}\ncontainerd log:\n{}",
                    self.containerd.log()
                )
            })
            .container_id;
        let request = StartContainerRequest {
            container_id: id.clone(),
        };
        self.rpc(|mut c| async move { c.start_container(request).await })
            .unwrap_or_else(|error| {
                panic!(
                    "StartContainer: {error}\ncontainerd log:\n{}",
                    self.containerd.log()
                )
            });
        id
    }

    fn status(&self, id: &str) -> ContainerStatus {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.rpc(|mut c| async move { c.container_status(request).await })
            .unwrap_or_else(|error| panic!("ContainerStatus {id}: {error}"))
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {id} has no status"))
    }

    /// The status of container `id` once it has exited.
    fn exited(&self, id: &str) -> ContainerStatus {
        self.until(&format!("container {id} exits"), || {
            let status = self.status(id);
            (status.state() == ContainerState::ContainerExited).then_some(status)
        })
    }

    /// Waits until container `id` runs.
    fn running(&self, id: &str) {
        self.until(&format!("container {id} runs"), || {
            (self.status(id).state() == ContainerState::ContainerRunning).then_some(())
        });
    }

    /// StopContainer as kubelet does: TERM, then KILL after `grace`.
    fn stop_container(&self, id: &str, grace: i64) {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace,
        };
        self.rpc(|mut c| async move { c.stop_container(request).await })
            .unwrap_or_else(|error| panic!("StopContainer {id}: {error}"));
    }

    fn stats(&self, id: &str) -> ContainerStats {
        let request = ContainerStatsRequest {
            container_id: id.to_owned(),
        };
        self.rpc(|mut c| async move { c.container_stats(request).await })
            .unwrap_or_else(|error| panic!("ContainerStats {id}: {error}"))
            .stats
            .unwrap_or_else(|| panic!("ContainerStats {id} has no stats"))
    }

    /// The CRI log file `log_path` of `pod`, once `done` accepts it.
    fn log(&self, pod: &Pod, log_path: &str, done: impl Fn(&str) -> bool) -> String {
        let path = pod.log_dir.join(log_path);
        self.until(&format!("{} holds the output", path.display()), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|text| done(text))
        })
    }

    /// Ends `pod` as kubelet does (StopPodSandbox, RemovePodSandbox), then
    /// checks that its shim process and socket are gone and that CRI lists
    /// no container and no pod.
    fn remove_pod(&self, pod: Pod) {
        let shims = self.containerd.shims();
        assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        self.rpc(|mut c| async move { c.stop_pod_sandbox(stop).await })
            .unwrap_or_else(|error| panic!("StopPodSandbox: {error}"));
        let remove = RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        self.rpc(|mut c| async move { c.remove_pod_sandbox(remove).await })
            .unwrap_or_else(|error| panic!("RemovePodSandbox: {error}"));
        self.until("the pod's shim process exits", || {
            self.containerd.shims().is_empty().then_some(())
        });
        for (pid, socket) in shims {
            if let Some(socket) = socket {
                assert!(
                    !Path::new(&socket).exists(),
                    "the shim {pid} left its socket {socket}"
                );
            }
        }
        let containers = self
            .rpc(|mut c| async move { c.list_containers(ListContainersRequest::default()).await })
            .expect("ListContainers")
            .containers;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let pods = self
            .rpc(|mut c| async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await })
            .expect("ListPodSandbox")
            .items;
        assert!(pods.is_empty(), "pods left: {pods:?}");
    }
}

/// A pause image as a node's sandbox image is: linux/amd64, a native
/// `/pause` entrypoint (a stand-in: the shim never executes it), saved as
/// an OCI image-layout tar and imported; returns the name containerd gives.
fn import_pause_image(containerd: &Containerd) -> String {
    let work = tempfile::tempdir().expect("pause image dir");
    let store = berth_registry::Store::open(work.path().join("store")).expect("store");
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(PAUSE_STAND_IN.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, "pause", PAUSE_STAND_IN)
        .expect("layer");
    let layer = layer.into_inner().expect("layer");
    let layer_digest = store.put_blob_bytes(&layer).expect("layer blob");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/pause"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let config = serde_json::to_vec(&config).expect("config");
    let config_digest = store.put_blob_bytes(&config).expect("config blob");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest");
    let digest = store.put_manifest(&manifest).expect("manifest blob");
    let name = berth_registry::Reference::parse(PAUSE_IMAGE).expect("pause image name");
    store.tag(&name, &digest).expect("tag");
    let tar = work.path().join("pause.tar");
    berth_registry::archive::save(&store, &[PAUSE_IMAGE], &tar).expect("save");
    containerd.import_archive(&tar, PAUSE_IMAGE)
}

/// A container of `image` named `name`, its log at `NAME/0.log` as
/// kubelet names it.
fn container(name: &str, image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// A container named `name` running `command` (program and arguments) of
/// the [`TOOLS`] image `tools`, with kubelet's resources for a memory
/// limit of `memory_bytes` and a CPU quota of `cpu_quota` per 100 ms
/// (0: none).
fn tool(
    name: &str,
    tools: &str,
    command: &[&str],
    memory_bytes: i64,
    cpu_quota: i64,
) -> ContainerConfig {
    let (program, args) = command.split_first().expect("a program");
    ContainerConfig {
        command: vec![(*program).to_owned()],
        args: strings(args),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_bytes,
                cpu_period: if cpu_quota > 0 { 100_000 } else { 0 },
                cpu_quota,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container(name, tools)
    }
}

/// A node with the [`TOOLS`] image, and a pod named `pod` on it.
fn node_with_tools(pod: &str) -> (Node, String, Pod) {
    let node = Node::start();
    let tools = node.import_image("critest/tools:v1", TOOLS);
    let pod = node.run_pod(pod);
    (node, tools, pod)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

/// The core-module examples, with hello as the entrypoint.
const TOOLS: &str = "FROM scratch\nCOPY hello.wasm /hello.wasm\nCOPY exitcode.wasm /exitcode.wasm\n\
                     COPY busy.wasm /busy.wasm\nCOPY hog.wasm /hog.wasm\nENV GREETING=hi\n\
                     ENTRYPOINT [\"/hello.wasm\"]\n";

#[test]
fn a_pod_runs_commands_to_their_exit_codes_with_cri_logs_and_leaves_nothing_behind() {
    if skip_without_containerd() {
        return;
    }
    let (node, tools, pod) = node_with_tools("commands");

    let mut hello = container("hello", &tools);
    hello.args = strings(&["one", "two"]);
    hello.envs = vec![KeyValue {
        key: "FROM_POD".to_owned(),
        value: "yes".to_owned(),
    }];
    let hello_log = hello.log_path.clone();
    let hello = node.start_container(&pod, hello);
    let failing = tool("failing", &tools, &["/exitcode.wasm", "3"], 0, 0);
    let failing = node.start_container(&pod, failing);

    let status = node.exited(&hello);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    let status = node.exited(&failing);
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"));

    // Each line of the guest's output, in CRI's format:
    // `<RFC 3339 time> stdout F <line>`.
    let log = node.log(&pod, &hello_log, |log| log.contains("FROM_POD"));
    let lines: Vec<(&str, &str, &str, &str)> = log
        .lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let mut next = || fields.next().unwrap_or_default();
            (next(), next(), next(), next())
        })
        .collect();
    for (time, stream, tag, _) in &lines {
        assert!(
            time.len() > 20 && time.contains('T') && (time.ends_with('Z') || time.contains('+')),
            "not an RFC 3339 time: {time:?} in\n{log}"
        );
        assert_eq!((*stream, *tag), ("stdout", "F"), "{log}");
    }
    let texts: Vec<&str> = lines.iter().map(|(_, _, _, text)| *text).collect();
    for expected in [
        "arg[1]=one",
        "arg[2]=two",
        "env GREETING=hi",
        "env FROM_POD=yes",
    ] {
        assert!(texts.contains(&expected), "no {expected:?} line in\n{log}");
    }

    node.remove_pod(pod);
}

#[test]
fn a_memory_bomb_over_its_cri_memory_limit_ends_137_oomkilled() {
    if skip_without_containerd() {
        return;
    }
    let (node, tools, pod) = node_with_tools("bomb");
    let bomb = tool("bomb", &tools, &["/hog.wasm", "256"], 16 << 20, 0);
    let bomb = node.start_container(&pod, bomb);
    let status = node.exited(&bomb);
    assert_eq!(status.exit_code, 137, "{status:?}");
    // CRI takes the reason from the shim's /tasks/oom event, which the
    // shim publishes before the exit.
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    node.remove_pod(pod);
}

#[test]
fn container_stats_report_a_running_guests_memory_and_cpu_and_stop_ends_it() {
    if skip_without_containerd() {
        return;
    }
    let (node, tools, pod) = node_with_tools("stats");
    // What kubelet asks for `limits: {memory: 0.5Gi, cpu: 200m}`.
    let busy = tool("busy", &tools, &["/busy.wasm"], 512 << 20, 20_000);
    let busy = node.start_container(&pod, busy);
    node.running(&busy);
    // CPU time accrues while the guest spins: poll until it shows.
    let stats = node.until("ContainerStats shows CPU time", || {
        let stats = node.stats(&busy);
        stats
            .cpu
            .as_ref()
            .and_then(|cpu| cpu.usage_core_nano_seconds.as_ref())
            .is_some_and(|usage| usage.value > 0)
            .then_some(stats)
    });
    assert_eq!(
        stats.attributes.as_ref().map(|a| a.id.as_str()),
        Some(busy.as_str())
    );
    let memory = stats.memory.as_ref().expect("memory stats");
    let working_set = memory.working_set_bytes.as_ref().map_or(0, |v| v.value);
    let usage = memory.usage_bytes.as_ref().map_or(0, |v| v.value);
    assert!(working_set > 0, "{stats:?}");
    assert!(usage >= working_set, "{stats:?}");
    assert!(usage < 512 << 20, "more than the limit: {stats:?}");
    assert!(memory.timestamp > 0, "{stats:?}");
    // kubelet stops a container with TERM and a grace period: a command
    // stops at once, as a process killed by TERM.
    node.stop_container(&busy, 10);
    let status = node.exited(&busy);
    assert_eq!(status.exit_code, 143, "{status:?}");
    node.remove_pod(pod);
}

#[test]
fn a_wasi_http_container_answers_on_its_port_in_a_host_network_pod() {
    if skip_without_containerd() {
        return;
    }
    let node = Node::start();
    let image = node.import_image(
        "critest/http:v1",
        "FROM scratch\nCOPY http-hello.wasm /http.wasm\nENTRYPOINT [\"/http.wasm\"]\n",
    );
    let pod = node.run_pod("web");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut web = container("web", &image);
    web.envs = vec![KeyValue {
        key: "BERTH_LISTEN".to_owned(),
        value: addr.clone(),
    }];
    let web_log = web.log_path.clone();
    let web = node.start_container(&pod, web);
    node.running(&web);
    let response = node.until(&format!("an answer on {addr}"), || get(&addr));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Hello from berth!"), "{response}");
    node.log(&pod, &web_log, |log| log.contains("stdout F request GET /"));
    // A server stops gracefully within its grace period: it drains and
    // exits 0.
    node.stop_container(&web, 10);
    let status = node.exited(&web);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (0, "Completed"),
        "{status:?}"
    );
    node.remove_pod(pod);
}

#[test]
fn a_wasi_http_container_serves_in_its_pods_network_namespace() {
    if skip_without_containerd() || !cni_installed() {
        return;
    }
    let node = Node::start();
    let image = node.import_image(
        "critest/http:v1",
        "FROM scratch\nCOPY http-hello.wasm /http.wasm\nENTRYPOINT [\"/http.wasm\"]\n",
    );
    let pod = node.run_pod_on("podnet", NamespaceMode::Pod);
    let _namespace = NetnsGuard(node.pod_netns(&pod));
    let ip = node.pod_ip(&pod);
    // The container port, as a Deployment's containerPort: the pod has the
    // port to itself, whatever the node's own sockets use.
    let web = node.start_container(&pod, container("web", &image));
    node.running(&web);
    // The pod's address is not the node's: it answers only from inside the
    // pod's namespace, through the pod's veth.
    let addr = format!("{ip}:8080");
    let response = node.until(&format!("an answer on {addr}"), || get(&addr));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Hello from berth!"), "{response}");
    // The node's namespace holds no listener of the shim on that port.
    let shims = node.containerd.shims();
    let [(shim, _)] = shims.as_slice() else {
        panic!("one shim per pod: {shims:?}");
    };
    assert!(
        !node_listener_is_the_shims(*shim, 8080),
        "the shim listens on 8080 in the node's namespace"
    );
    node.stop_container(&web, 10);
    let status = node.exited(&web);
    assert_eq!(status.exit_code, 0, "{status:?}");
    node.remove_pod(pod);
}

/// Deletes a pod's network namespace (and with it the pod's veth) if the
/// test fails before the pod is removed as kubelet removes it.
struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(name) = self.0.file_name()
        {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete"])
                .arg(name)
                .status();
        }
    }
}

/// The (port, socket inode) of each listening socket in a
/// `/proc/PID/net/tcp` table (state 0A is LISTEN).
fn listeners(table: &str) -> Vec<(u16, String)> {
    std::fs::read_to_string(table)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1)?.rsplit_once(':')?.1;
            (fields.get(3) == Some(&"0A"))
                .then(|| {
                    Some((
                        u16::from_str_radix(port, 16).ok()?,
                        (*fields.get(9)?).to_owned(),
                    ))
                })
                .flatten()
        })
        .collect()
}

/// Whether a socket listening on `port` in the node's namespace belongs
/// to process `pid`.
fn node_listener_is_the_shims(pid: i32, port: u16) -> bool {
    let inodes: Vec<String> = listeners(&format!("/proc/{pid}/net/tcp"))
        .into_iter()
        .filter(|(listened, _)| *listened == port)
        .map(|(_, inode)| format!("socket:[{inode}]"))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|link| inodes.iter().any(|inode| link == Path::new(inode)))
}

/// The stdin FIFO CRI made for container `id` (under containerd's state
/// dir, which the test owns).
fn stdin_fifo(node: &Node, id: &str) -> PathBuf {
    let name = format!("{id}-stdin");
    let mut pending = vec![node.containerd.dir.path().join("state")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy() == name {
                return path;
            }
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(path);
            }
        }
    }
    panic!("no stdin FIFO {name} under containerd's state dir");
}

#[test]
fn update_container_resources_changes_a_running_sandboxs_memory_cap() {
    if skip_without_containerd() {
        return;
    }
    let node = Node::start();
    let grow = node.import_image(
        "critest/grow:v1",
        "FROM scratch\nCOPY grow.wasm /grow.wasm\nENTRYPOINT [\"/grow.wasm\"]\n",
    );
    let pod = node.run_pod("update");
    // Grows to 1 MiB, then by 1 MiB per byte on stdin; capped at 2 MiB.
    let mut config = tool("grow", &grow, &["/grow.wasm"], 2 << 20, 0);
    config.stdin = true;
    let id = node.start_container(&pod, config);
    node.running(&id);
    let memory = |id: &str| {
        node.stats(id)
            .memory
            .and_then(|memory| memory.usage_bytes)
            .map_or(0, |usage| usage.value)
    };
    node.until("the guest grows to 1 MiB", || {
        (memory(&id) >= 1 << 20).then_some(())
    });
    let update = |bytes: i64| {
        let request = UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        node.rpc(|mut c| async move { c.update_container_resources(request).await })
            .unwrap_or_else(|error| panic!("UpdateContainerResources: {error}"));
    };
    let mut stdin = std::fs::OpenOptions::new()
        .write(true)
        .open(stdin_fifo(&node, &id))
        .expect("open the container's stdin");
    let mut feed = |bytes: &[u8]| {
        use std::io::Write;
        stdin.write_all(bytes).expect("write stdin");
    };

    // Raised to 8 MiB while it runs: two more MiB (3 in all, over the
    // first cap) fit, and it keeps running.
    update(8 << 20);
    feed(b"ab");
    node.until("the guest grows to 3 MiB", || {
        (memory(&id) >= 3 << 20).then_some(())
    });
    assert_eq!(node.status(&id).state(), ContainerState::ContainerRunning);

    // Lowered to 3 MiB: one more does not fit.
    update(3 << 20);
    feed(b"c");
    let status = node.exited(&id);
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled"),
        "{status:?}"
    );
    node.remove_pod(pod);
}
