//! The node agent against a real store, a real runtime and real wasm: pods
//! admitted by their requests, run with their own addresses, restarted with
//! back-off, OOMKilled, stopped when deleted, their logs kept (this run's
//! and the previous one's), and the status kubelet would write.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_container::Backoff;
use berth_container::logs::LogFollower;
use berth_registry::build::{self, BuildOptions};
use berth_registry::unpack::UnpackLimits;
use berth_runtime::{Runtime, RuntimeConfig};
use berth_scheduler::k8s_openapi::api::core::v1::Pod;
use berth_scheduler::kubelet::{ImageSource, Kubelet, KubeletConfig, LogsError};
use berth_scheduler::{Kind, Object, Resources, Store};
use tokio::sync::watch;

const MI: u64 = 1024 * 1024;
/// How long any pod may take to get where a test expects it.
const WAIT: Duration = Duration::from_secs(60);

/// A store, an image store with the test images, and a running agent.
struct Node {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    kubelet: Kubelet,
    shutdown: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<()>,
}

fn guest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Builds `tag` into `images`: a scratch image running `program` (binary
/// or text) as `/app.wasm`.
fn build_image(images: &berth_registry::Store, context: &Path, tag: &str, program: &Path) {
    std::fs::create_dir_all(context).expect("context folder");
    let bytes = std::fs::read(program).unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    // Images hold binaries: text guests are converted first.
    let (binary, _) = berth_runtime::program::to_binary(&bytes, &program.display().to_string())
        .expect("a WebAssembly guest");
    std::fs::write(context.join("app.wasm"), &binary).expect("program");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY app.wasm /app.wasm\nENTRYPOINT [\"/app.wasm\"]\n",
    )
    .expect("Dockerfile");
    let mut options = BuildOptions::new(context);
    options.tags = vec![tag.to_owned()];
    build::build(images, &options).expect("build");
}

fn agent(dir: &Path, store: &Arc<Store>, allocatable: Resources) -> Kubelet {
    let images = berth_registry::Store::open(dir.join("images")).expect("image store");
    let config = KubeletConfig {
        pods_dir: dir.join("pods"),
        allocatable,
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(800),
            reset_after: Duration::from_secs(600),
        },
        distinct_addresses: cfg!(target_os = "linux"),
        default_grace_period: Duration::from_secs(2),
    };
    let source = ImageSource {
        store: images,
        rootfs_dir: dir.join("rootfs"),
        scratch_dir: dir.join("scratch"),
        unpack_limits: UnpackLimits::default(),
    };
    Kubelet::new(
        Arc::clone(store),
        Runtime::new(RuntimeConfig::default()),
        source,
        config,
    )
}

impl Node {
    fn start(allocatable: Resources) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let images = berth_registry::Store::open(dir.path().join("images")).expect("images");
            let context = dir.path().join("context");
            for (name, program) in [
                ("sleep", "tests/guests/sleep.wat"),
                ("crash", "tests/guests/crash.wat"),
                ("membomb", "../examples/wat/membomb.wat"),
                ("web", "../examples/wasm/http-hello.wasm"),
            ] {
                let tag = format!("{name}:1");
                build_image(&images, &context.join(name), &tag, &guest(program));
            }
        }
        let store = Arc::new(Store::open(&dir.path().join("state.redb")).expect("store"));
        Node::resume(dir, store, allocatable)
    }

    fn create(&self, yaml: &str) -> Pod {
        let mut created = None;
        for object in common::objects(yaml) {
            created = Some(self.store.create(object).expect("create"));
        }
        match created {
            Some(Object::Pod(pod)) => pod,
            other => panic!("expected a pod: {other:?}"),
        }
    }

    /// Waits (bounded) until pod `name` satisfies `ready`.
    async fn wait_pod(&self, name: &str, what: &str, ready: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + WAIT;
        loop {
            let pod = match self.store.get(Kind::Pod, "default", name) {
                Ok(Object::Pod(pod)) => Some(pod),
                _ => None,
            };
            if let Some(pod) = &pod
                && ready(pod)
            {
                return pod.clone();
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} is not {what} after {WAIT:?}: {}",
                pod.map(|p| serde_json::to_string_pretty(&p.status).unwrap_or_default())
                    .unwrap_or_else(|| "gone".to_owned())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the agent and starts another on the same store and folders,
    /// as a restarted daemon does.
    async fn restart(self) -> Node {
        let (dir, store) = self.stop().await;
        Node::resume(dir, store, plenty())
    }

    /// Starts an agent on the folders and store of a stopped one (or of a
    /// new node).
    fn resume(dir: tempfile::TempDir, store: Arc<Store>, allocatable: Resources) -> Node {
        let kubelet = agent(dir.path(), &store, allocatable);
        let (shutdown, stopped) = watch::channel(false);
        let running = kubelet.clone();
        let agent = tokio::spawn(async move { running.run(stopped).await });
        Node {
            dir,
            store,
            kubelet,
            shutdown,
            agent,
        }
    }

    async fn stop(self) -> (tempfile::TempDir, Arc<Store>) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(WAIT, self.agent)
            .await
            .expect("the agent stops")
            .expect("the agent does not panic");
        (self.dir, self.store)
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn running(pod: &Pod) -> bool {
    phase(pod) == "Running" && berth_scheduler::controller::pod_is_ready(pod)
}

fn container_status(pod: &Pod) -> &berth_scheduler::k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .expect("a container status")
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<(&'a str, Option<&'a str>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.message.as_deref()))
}

fn log_lines(dir: &Path) -> Vec<String> {
    let (_, entries) = LogFollower::open(dir).expect("log");
    entries.into_iter().map(|e| e.line).collect()
}

fn event_reasons(store: &Store, pod: &Pod) -> Vec<String> {
    store
        .events()
        .list(Some("default"), pod.metadata.uid.as_deref())
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

fn plenty() -> Resources {
    Resources {
        memory_bytes: 4096 * MI,
        cpu_millis: 4000,
    }
}

async fn http_get(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: pod\r\nconnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        std::io::Result::Ok(response)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("an answer in time")
        .unwrap_or_else(|e| panic!("GET http://{address}/: {e}"))
}

const WEB: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:1
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: 8080}]
        resources: {limits: {memory: 64Mi, cpu: 200m}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_replicas_run_on_their_own_addresses_and_answer_http() {
    let node = Node::start(plenty());
    let (stop_controllers, controllers_stopped) = watch::channel(false);
    let controllers = tokio::spawn(berth_scheduler::controller::run(
        Arc::clone(&node.store),
        controllers_stopped,
    ));
    node.store.apply(common::objects(WEB)).expect("apply");

    let deadline = Instant::now() + WAIT;
    let pods = loop {
        let (pods, _) = node.store.list(Kind::Pod, Some("default")).expect("list");
        let pods: Vec<Pod> = pods
            .into_iter()
            .filter_map(|o| match o {
                Object::Pod(pod) => Some(pod),
                _ => None,
            })
            .collect();
        if pods.len() == 2 && pods.iter().all(running) {
            break pods;
        }
        assert!(Instant::now() < deadline, "replicas not running: {pods:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ips: Vec<String> = pods.iter().map(pod_ip).collect();
    if cfg!(target_os = "linux") {
        assert_ne!(ips[0], ips[1], "each replica has its own address");
    }
    for (pod, ip) in pods.iter().zip(&ips) {
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(status.start_time.is_some());
        for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(pod, type_).map(|c| c.0), Some("True"), "{type_}");
        }
        let container = container_status(pod);
        assert!(container.ready && container.started == Some(true));
        assert!(container.image_id.starts_with("sha256:"), "{container:?}");
        assert!(
            container
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .is_some(),
            "{container:?}"
        );
        let response = http_get(&format!("{ip}:8080")).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("Hello from berth!"), "{response}");
        let reasons = event_reasons(&node.store, pod);
        for reason in ["Scheduled", "Pulled", "Created", "Started"] {
            assert!(
                reasons.iter().any(|r| r == reason),
                "{reason} in {reasons:?}"
            );
        }
    }
    // The ReplicaSet counts them ready.
    let deadline = Instant::now() + WAIT;
    loop {
        let (sets, _) = node
            .store
            .list(Kind::ReplicaSet, Some("default"))
            .expect("list");
        let ready = sets.iter().find_map(|o| match o {
            Object::ReplicaSet(set) => set.status.as_ref().and_then(|s| s.ready_replicas),
            _ => None,
        });
        if ready == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "readyReplicas is {ready:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = node.kubelet.usage(Some("default"));
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage.iter().all(|p| p.containers.len() == 1));
    stop_controllers.send_replace(true);
    let _ = tokio::time::timeout(WAIT, controllers).await;
    node.stop().await;
}

const CRASH: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers: [{name: crash, image: 'crash:1', imagePullPolicy: IfNotPresent}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_and_keeps_its_previous_log() {
    let node = Node::start(plenty());
    let created = node.create(CRASH);
    let uid = created.metadata.uid.clone().expect("uid");
    let pod = node
        .wait_pod("crash", "in CrashLoopBackOff after two restarts", |pod| {
            pod.status.is_some()
                && container_status(pod).restart_count >= 2
                && container_status(pod)
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
        .await;
    // As kubelet: a container waiting to restart keeps the pod Running.
    assert_eq!(phase(&pod), "Running");
    assert_eq!(condition(&pod, "Ready").map(|c| c.0), Some("False"));
    let container = container_status(&pod);
    assert!(!container.ready);
    let waiting = container
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting");
    let message = waiting.message.as_deref().unwrap_or_default();
    assert!(message.starts_with("back-off "), "{message}");
    assert!(
        message.ends_with(&format!(
            "restarting failed container=crash pod=crash_default({uid})"
        )),
        "{message}"
    );
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert!(last.started_at.is_some() && last.finished_at.is_some());
    assert!(
        event_reasons(&node.store, &pod)
            .iter()
            .any(|r| r == "BackOff")
    );

    let current = node
        .kubelet
        .log_path("default", "crash", None, false)
        .expect("current log");
    let previous = node
        .kubelet
        .log_path("default", "crash", Some("crash"), true)
        .expect("previous log");
    assert_ne!(current, previous);
    assert_eq!(log_lines(&previous), vec!["crashing"]);
    assert!(
        matches!(
            node.kubelet
                .log_path("default", "crash", Some("other"), false),
            Err(LogsError::Container(_))
        ),
        "an unknown container is refused"
    );
    assert!(matches!(
        node.kubelet.log_path("default", "nope", None, false),
        Err(LogsError::PodNotFound { .. })
    ));

    // A restarted agent counts on from the restarts it was told of: its
    // first status of the pod does not start again from 0.
    let (dir, store) = node.stop().await;
    let pod = match store.get(Kind::Pod, "default", "crash") {
        Ok(Object::Pod(pod)) => pod,
        other => panic!("{other:?}"),
    };
    let restarts = container_status(&pod).restart_count;
    assert!(restarts >= 2);
    let mut changes = store.watch();
    let node = Node::resume(dir, store, plenty());
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match changes.recv().await {
                Ok(change) if change.object.name() == "crash" => match change.object {
                    Object::Pod(pod) => break pod,
                    _ => continue,
                },
                Ok(_) => continue,
                Err(error) => panic!("watch: {error}"),
            }
        }
    })
    .await
    .expect("a status from the new agent");
    assert!(
        container_status(&first).restart_count >= restarts,
        "{:?}",
        first.status
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_memory_limit_is_oomkilled() {
    let node = Node::start(plenty());
    node.create(
        "\
apiVersion: v1
kind: Pod
metadata: {name: bomb}
spec:
  restartPolicy: Never
  containers:
  - {name: bomb, image: 'membomb:1', resources: {limits: {memory: 32Mi}}}
",
    );
    let pod = node
        .wait_pod("bomb", "Failed", |pod| phase(pod) == "Failed")
        .await;
    let container = container_status(&pod);
    let terminated = container
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(terminated.exit_code, 137);
    assert_eq!(container.restart_count, 0, "restartPolicy Never");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_waits_with_the_pull_error() {
    let node = Node::start(plenty());
    let absent = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: \
             [{{name: app, image: 'absent:1', imagePullPolicy: {policy}}}]\n"
        )
    };
    node.create(&absent("never", "Never"));
    node.create(&absent("pull", "IfNotPresent"));
    let reason = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| {
                c.first()?
                    .state
                    .as_ref()?
                    .waiting
                    .as_ref()
                    .and_then(|w| Some((w.reason.clone()?, w.message.clone()?)))
            })
    };
    let never = node
        .wait_pod("never", "ErrImageNeverPull", |pod| {
            reason(pod).is_some_and(|(r, _)| r == "ErrImageNeverPull")
        })
        .await;
    assert_eq!(
        reason(&never).map(|(_, m)| m).as_deref(),
        Some("Container image \"absent:1\" is not present with pull policy of Never")
    );
    assert_eq!(phase(&never), "Pending");
    let pull = node
        .wait_pod("pull", "in ImagePullBackOff", |pod| {
            reason(pod).is_some_and(|(r, _)| r == "ImagePullBackOff")
        })
        .await;
    assert_eq!(phase(&pull), "Pending");
    let reasons = event_reasons(&node.store, &pull);
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    node.stop().await;
}

fn sleeper(name: &str, memory: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: scratch, emptyDir: {{}}}}]
  containers:
  - name: app
    image: 'sleep:1'
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    resources: {{limits: {{memory: {memory}}}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_does_not_fit_waits_until_a_deletion_makes_room() {
    let node = Node::start(Resources {
        memory_bytes: 100 * MI,
        cpu_millis: 4000,
    });
    node.create(&sleeper("first", "64Mi"));
    let first = node.wait_pod("first", "Running", running).await;
    let first_ip = pod_ip(&first);
    let current = node
        .kubelet
        .log_path("default", "first", None, false)
        .expect("log path");
    let deadline = Instant::now() + WAIT;
    while log_lines(&current).is_empty() {
        assert!(Instant::now() < deadline, "no log in {}", current.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log_lines(&current), vec!["ready"]);
    assert!(matches!(
        node.kubelet.log_path("default", "first", None, true),
        Err(LogsError::NoPrevious { .. })
    ));
    let usage = node.kubelet.usage(None);
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert!(
        usage[0].containers[0].memory_bytes >= 64 * 1024,
        "{usage:?}"
    );
    let pod_dir = current
        .parent()
        .and_then(Path::parent)
        .expect("pod folder")
        .to_path_buf();
    assert!(pod_dir.join(".volumes").is_dir(), "the emptyDir was made");

    node.create(&sleeper("second", "64Mi"));
    let second = node
        .wait_pod("second", "Unschedulable", |pod| {
            condition(pod, "PodScheduled").is_some_and(|c| c.0 == "False")
        })
        .await;
    assert_eq!(phase(&second), "Pending");
    assert_eq!(
        condition(&second, "PodScheduled").and_then(|c| c.1),
        Some("0/1 nodes are available: 1 Insufficient memory.")
    );
    assert!(
        event_reasons(&node.store, &second)
            .iter()
            .any(|r| r == "FailedScheduling")
    );

    node.store
        .delete(Kind::Pod, "default", "first")
        .expect("delete");
    let second = node.wait_pod("second", "Running", running).await;
    if cfg!(target_os = "linux") {
        assert_eq!(
            pod_ip(&second),
            first_ip,
            "the deleted pod's address was freed"
        );
    }
    let deadline = Instant::now() + WAIT;
    while pod_dir.exists() {
        assert!(Instant::now() < deadline, "{} is left", pod_dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let usage = node.kubelet.usage(None);
    assert_eq!(
        usage.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["second"]
    );
    assert!(
        event_reasons(&node.store, &first)
            .iter()
            .any(|r| r == "Killing")
    );

    // Another agent on the same store (the daemon restarted) runs the pod
    // again, on the address it had.
    let node = node.restart().await;
    let again = node
        .wait_pod("second", "running again", |pod| {
            running(pod) && node.kubelet.usage(None).len() == 1
        })
        .await;
    assert_eq!(pod_ip(&again), pod_ip(&second));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_marked_for_deletion_is_stopped_then_removed() {
    let node = Node::start(plenty());
    node.create(&sleeper("marked", "16Mi"));
    let pod = node.wait_pod("marked", "Running", running).await;
    let mut marked = pod.clone();
    marked.metadata.deletion_timestamp = Some(berth_scheduler::store::now());
    marked.metadata.deletion_grace_period_seconds = Some(1);
    node.store
        .replace(Object::Pod(marked))
        .expect("mark for deletion");
    let deadline = Instant::now() + WAIT;
    while node.store.get(Kind::Pod, "default", "marked").is_ok() {
        assert!(Instant::now() < deadline, "the marked pod is still stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(node.kubelet.usage(None).is_empty());
    assert!(
        event_reasons(&node.store, &pod)
            .iter()
            .any(|r| r == "Killing")
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_two_containers_runs_both_and_names_them_for_logs() {
    let node = Node::start(plenty());
    node.create(
        "\
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  containers:
  - {name: a, image: 'sleep:1'}
  - {name: b, image: 'sleep:1'}
",
    );
    let pod = node.wait_pod("pair", "Running", running).await;
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .expect("container statuses");
    assert_eq!(
        statuses
            .iter()
            .map(|c| (c.name.as_str(), c.ready))
            .collect::<Vec<_>>(),
        [("a", true), ("b", true)]
    );
    match node.kubelet.log_path("default", "pair", None, false) {
        Err(LogsError::Container(message)) => assert_eq!(
            message,
            "a container name must be specified for pod pair, choose one of: [a b]"
        ),
        other => panic!("{other:?}"),
    }
    let a = node
        .kubelet
        .log_path("default", "pair", Some("a"), false)
        .expect("a's log");
    let b = node
        .kubelet
        .log_path("default", "pair", Some("b"), false)
        .expect("b's log");
    assert_ne!(a, b);
    let usage = node.kubelet.usage(Some("default"));
    assert_eq!(usage.len(), 1);
    assert_eq!(
        usage[0]
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(node.kubelet.usage(Some("other")).is_empty());
    node.stop().await;
}
