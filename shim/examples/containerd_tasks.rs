//! Tasks per second through containerd's own API, without `ctr`: creates a
//! container and its task, starts it, waits for its exit and deletes both,
//! `--tasks` times, `--in-flight` at once, and prints the rate and the
//! per-task latency. `bench/shim.sh tasks` runs it against berth's shim and
//! runc's in the same containerd.
//!
//! ```text
//! containerd_tasks --address SOCK --namespace NS --runtime io.containerd.berth.v1 \
//!     --spec spec.json --rootfs DIR [--tasks 500] [--in-flight 1] [--prefix P]
//!     [--pod ID --anchor-spec pause.json]
//! ```
//!
//! Every task gets the OCI spec in `--spec` (as `ctr oci spec` writes it,
//! with the program in `process.args` and `root.path` = `rootfs`) and the
//! directory `--rootfs` as its root filesystem, bind-mounted (what the
//! `native` snapshotter hands a runtime), with no stdio: what is measured
//! is containerd's container and task bookkeeping and the runtime's own
//! create, start, exit and delete. `--pod ID` adds CRI's sandbox-id
//! annotation, so that a runtime that groups a pod's containers in one
//! shim (berth and runc both do) serves every task from one shim; the
//! pod's sandbox container, from `--anchor-spec` (a program that runs
//! until killed), is started first and keeps that shim alive between
//! tasks, as a pod's pause container does.

#[cfg(target_os = "linux")]
mod bench {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use containerd_client::services::v1::container::Runtime;
    use containerd_client::services::v1::containers_client::ContainersClient;
    use containerd_client::services::v1::tasks_client::TasksClient;
    use containerd_client::services::v1::{
        Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
        DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
    };
    use containerd_client::tonic::Request;
    use containerd_client::tonic::transport::Channel;
    use containerd_client::types::Mount;

    /// containerd's type for an OCI runtime spec in a container record.
    const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

    struct Options {
        address: String,
        namespace: String,
        runtime: String,
        spec: serde_json::Value,
        rootfs: String,
        tasks: usize,
        in_flight: usize,
        prefix: String,
        /// The pod's sandbox container's spec, with `--pod`.
        anchor: Option<serde_json::Value>,
    }

    fn read_json(path: &str) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("cannot read {path}"))?)
            .with_context(|| format!("{path} is not JSON"))
    }

    fn options() -> anyhow::Result<Options> {
        let mut args = std::env::args().skip(1);
        let (mut address, mut namespace, mut runtime, mut spec, mut rootfs) =
            (None, None, None, None, None);
        let (mut tasks, mut in_flight, mut pod, mut anchor) = (500usize, 1usize, None, None);
        let mut prefix = "bench".to_owned();
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--address" => address = Some(value),
                "--namespace" => namespace = Some(value),
                "--runtime" => runtime = Some(value),
                "--spec" => spec = Some(value),
                "--rootfs" => rootfs = Some(value),
                "--tasks" => tasks = value.parse().context("--tasks takes a count")?,
                "--in-flight" => in_flight = value.parse().context("--in-flight takes a count")?,
                "--pod" => pod = Some(value),
                "--anchor-spec" => anchor = Some(value),
                "--prefix" => prefix = value,
                other => bail!(
                    "unknown option {other}: give --address, --namespace, --runtime, --spec, --rootfs, --tasks, --in-flight, --prefix, --pod, --anchor-spec"
                ),
            }
        }
        let spec_path = spec.context("--spec FILE (an OCI runtime spec) is required")?;
        let mut spec = read_json(&spec_path)?;
        let anchor = match (pod, anchor) {
            (Some(pod), Some(anchor)) => {
                let mut anchor = read_json(&anchor)?;
                anchor["annotations"]["io.kubernetes.cri.sandbox-id"] = pod.clone().into();
                anchor["annotations"]["io.kubernetes.cri.container-type"] = "sandbox".into();
                spec["annotations"]["io.kubernetes.cri.sandbox-id"] = pod.into();
                spec["annotations"]["io.kubernetes.cri.container-type"] = "container".into();
                Some(anchor)
            }
            (None, None) => None,
            _ => bail!("--pod and --anchor-spec go together"),
        };
        if tasks == 0 || in_flight == 0 {
            bail!("--tasks and --in-flight must be at least 1");
        }
        Ok(Options {
            address: address.context("--address SOCKET (containerd's) is required")?,
            namespace: namespace.unwrap_or_else(|| "default".to_owned()),
            runtime: runtime.context("--runtime TYPE (e.g. io.containerd.runc.v2) is required")?,
            spec,
            rootfs: rootfs.context("--rootfs DIR is required")?,
            tasks,
            in_flight: in_flight.min(tasks),
            prefix,
            anchor,
        })
    }

    fn request<T>(options: &Options, message: T) -> anyhow::Result<Request<T>> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", options.namespace.parse()?);
        Ok(request)
    }

    /// One task's whole life; returns its exit status.
    async fn one_task(options: &Options, channel: &Channel, id: String) -> anyhow::Result<u32> {
        create(options, channel, &id, &options.spec).await?;
        let exit = wait_and_delete(options, channel, &id).await;
        let mut containers = ContainersClient::new(channel.clone());
        containers
            .delete(request(options, DeleteContainerRequest { id: id.clone() })?)
            .await
            .with_context(|| format!("delete container {id}"))?;
        exit
    }

    /// Creates container `id` with `spec`, and its task, and starts it.
    async fn create(
        options: &Options,
        channel: &Channel,
        id: &str,
        spec: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut containers = ContainersClient::new(channel.clone());
        let mut tasks = TasksClient::new(channel.clone());
        let id = id.to_owned();
        let spec = serde_json::to_vec(spec)?;
        let container = Container {
            id: id.clone(),
            image: String::new(),
            runtime: Some(Runtime {
                name: options.runtime.clone(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.to_owned(),
                value: spec,
            }),
            ..Default::default()
        };
        containers
            .create(request(
                options,
                CreateContainerRequest {
                    container: Some(container),
                },
            )?)
            .await
            .with_context(|| format!("create container {id}"))?;
        tasks
            .create(request(
                options,
                CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: vec![Mount {
                        r#type: "bind".to_owned(),
                        source: options.rootfs.clone(),
                        options: vec!["rbind".to_owned(), "rw".to_owned()],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )?)
            .await
            .with_context(|| format!("create task {id}"))?;
        tasks
            .start(request(
                options,
                StartRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
            )?)
            .await
            .with_context(|| format!("start task {id}"))?;
        Ok(())
    }

    /// Waits for task `id` to exit and deletes it; returns its exit status.
    async fn wait_and_delete(
        options: &Options,
        channel: &Channel,
        id: &str,
    ) -> anyhow::Result<u32> {
        let mut tasks = TasksClient::new(channel.clone());
        let id = id.to_owned();
        let exit = tasks
            .wait(request(
                options,
                WaitRequest {
                    container_id: id.clone(),
                    ..Default::default()
                },
            )?)
            .await
            .with_context(|| format!("wait for task {id}"))?
            .into_inner()
            .exit_status;
        tasks
            .delete(request(
                options,
                DeleteTaskRequest {
                    container_id: id.clone(),
                },
            )?)
            .await
            .with_context(|| format!("delete task {id}"))?;
        Ok(exit)
    }

    pub async fn main() -> anyhow::Result<()> {
        let options = Arc::new(options()?);
        let channel = containerd_client::connect(&options.address)
            .await
            .with_context(|| format!("cannot connect to containerd at {}", options.address))?;
        let anchor = format!("{}-{}-pod", options.prefix, std::process::id());
        if let Some(spec) = &options.anchor {
            create(&options, &channel, &anchor, spec).await?;
        }
        let result = run(&options, &channel).await;
        if options.anchor.is_some() {
            let mut tasks = TasksClient::new(channel.clone());
            tasks
                .kill(request(
                    &options,
                    KillRequest {
                        container_id: anchor.clone(),
                        signal: 9,
                        ..Default::default()
                    },
                )?)
                .await
                .with_context(|| format!("kill the pod's container {anchor}"))?;
            wait_and_delete(&options, &channel, &anchor).await?;
            let mut containers = ContainersClient::new(channel.clone());
            containers
                .delete(request(
                    &options,
                    DeleteContainerRequest { id: anchor.clone() },
                )?)
                .await
                .with_context(|| format!("delete container {anchor}"))?;
        }
        result
    }

    /// Runs the tasks and prints what they took.
    async fn run(options: &Arc<Options>, channel: &Channel) -> anyhow::Result<()> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..options.in_flight {
            let (options, channel, next) = (options.clone(), channel.clone(), next.clone());
            workers.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= options.tasks {
                        return anyhow::Ok(latencies);
                    }
                    let id = format!("{}-{}-{n}", options.prefix, std::process::id());
                    let began = Instant::now();
                    let exit = one_task(&options, &channel, id.clone()).await?;
                    if exit != 0 {
                        bail!("task {id} exited {exit}");
                    }
                    latencies.push(began.elapsed());
                }
            });
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(options.tasks);
        while let Some(worker) = workers.join_next().await {
            latencies.extend(worker.context("a worker panicked")??);
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index].as_secs_f64() * 1e3
        };
        println!(
            "{}{}: {} tasks, {} in flight, in {:.2} s: {:.1} tasks/s; per task p50 {:.1} ms, p99 {:.1} ms",
            options.runtime,
            if options.anchor.is_some() {
                " (one pod)"
            } else {
                ""
            },
            options.tasks,
            options.in_flight,
            elapsed.as_secs_f64(),
            options.tasks as f64 / elapsed.as_secs_f64(),
            at(0.5),
            at(0.99),
        );
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() {
    if let Err(error) = bench::main().await {
        eprintln!("containerd_tasks: {error:#}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("containerd_tasks runs on Linux only");
    std::process::exit(1);
}
