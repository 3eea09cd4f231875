//! CRI start latency as kubelet sees it: RunPodSandbox with a runtime
//! handler, then CreateContainer and StartContainer of one container, until
//! ContainerStatus says Running; `--runs` times, one pod after another
//! (each stopped and removed before the next, untimed). Prints p50 and p99
//! of the whole and of each call. `bench/shim.sh cri` runs it for the
//! `berth` and `runc` handlers of one containerd.
//!
//! ```text
//! cri_latency --address SOCK --handler berth --image IMAGE [--runs 100]
//!     --logs DIR [-- PROGRAM ARGS...]
//! ```
//!
//! Pods use the node's network (no CNI plugin needed); the container runs
//! the image's entrypoint, or `PROGRAM ARGS...`, which should run until it
//! is stopped.

#[cfg(target_os = "linux")]
mod bench {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    use k8s_cri::v1::{
        ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
        CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
        NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
        RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
        StopPodSandboxRequest,
    };
    use tonic::transport::{Channel, Endpoint, Uri};

    /// How long a container may take to show Running.
    const RUNNING_LIMIT: Duration = Duration::from_secs(60);

    struct Options {
        address: PathBuf,
        handler: String,
        image: String,
        runs: usize,
        logs: PathBuf,
        command: Vec<String>,
    }

    fn options() -> anyhow::Result<Options> {
        let mut args = std::env::args().skip(1);
        let (mut address, mut handler, mut image, mut logs) = (None, None, None, None);
        let mut runs = 100usize;
        let mut command = Vec::new();
        while let Some(flag) = args.next() {
            if flag == "--" {
                command = args.by_ref().collect();
                break;
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--address" => address = Some(PathBuf::from(value)),
                "--handler" => handler = Some(value),
                "--image" => image = Some(value),
                "--runs" => runs = value.parse().context("--runs takes a count")?,
                "--logs" => logs = Some(PathBuf::from(value)),
                other => bail!(
                    "unknown option {other}: give --address, --handler, --image, --runs, --logs, then -- PROGRAM ARGS"
                ),
            }
        }
        if runs == 0 {
            bail!("--runs must be at least 1");
        }
        Ok(Options {
            address: address.context("--address SOCKET (containerd's) is required")?,
            handler: handler.context("--handler NAME (a CRI runtime handler) is required")?,
            image: image.context("--image NAME (in containerd's k8s.io namespace) is required")?,
            runs,
            logs: logs.context("--logs DIR (for the pods' log directories) is required")?,
            command,
        })
    }

    async fn connect(socket: PathBuf) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        let channel = Endpoint::from_static("http://[::]:0")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .context("cannot connect to containerd")?;
        Ok(RuntimeServiceClient::new(channel))
    }

    /// What one pod's start took: RunPodSandbox, CreateContainer,
    /// StartContainer, and the whole until Running.
    #[derive(Clone, Copy)]
    struct Sample {
        run_pod: Duration,
        create: Duration,
        start: Duration,
        total: Duration,
    }

    async fn one_pod(
        options: &Options,
        client: &mut RuntimeServiceClient<Channel>,
        n: usize,
    ) -> anyhow::Result<Sample> {
        let name = format!("lat-{}-{n}", options.handler);
        let log_dir = options.logs.join(&name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("uid-{name}-{}", std::process::id()),
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            // No hostname: a pod on the node's network shares its UTS
            // namespace, where runc refuses to set one.
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node.into(),
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
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "main".to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: options.image.clone(),
                ..Default::default()
            }),
            command: options.command.first().cloned().into_iter().collect(),
            args: options.command.iter().skip(1).cloned().collect(),
            log_path: "main/0.log".to_owned(),
            ..Default::default()
        };
        std::fs::create_dir_all(log_dir.join("main"))?;

        let began = Instant::now();
        let pod = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: options.handler.clone(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        let run_pod = began.elapsed();
        let id = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container),
                sandbox_config: Some(config),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        let create = began.elapsed() - run_pod;
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .context("StartContainer")?;
        let start = began.elapsed() - run_pod - create;
        loop {
            let state = client
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .context("ContainerStatus")?
                .into_inner()
                .status
                .map(|status| status.state());
            match state {
                Some(ContainerState::ContainerRunning) => break,
                Some(ContainerState::ContainerExited) => {
                    bail!("container {id} exited instead of running")
                }
                _ if began.elapsed() > RUNNING_LIMIT => {
                    bail!("container {id} not running within {RUNNING_LIMIT:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        let total = began.elapsed();
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .context("StopPodSandbox")?;
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(Sample {
            run_pod,
            create,
            start,
            total,
        })
    }

    /// One part of a [`Sample`].
    type Part = fn(&Sample) -> Duration;

    fn percentiles(samples: &[Sample], part: Part) -> (f64, f64) {
        let mut values: Vec<Duration> = samples.iter().map(part).collect();
        values.sort();
        let at = |q: f64| {
            let index = ((values.len() as f64 - 1.0) * q).round() as usize;
            values[index].as_secs_f64() * 1e3
        };
        (at(0.5), at(0.99))
    }

    pub async fn main() -> anyhow::Result<()> {
        let options = options()?;
        let mut client = connect(options.address.clone()).await?;
        let mut samples = Vec::with_capacity(options.runs);
        for n in 0..options.runs {
            samples.push(one_pod(&options, &mut client, n).await?);
        }
        let parts: [(&str, Part); 4] = [
            ("RunPodSandbox -> Running", |s| s.total),
            ("RunPodSandbox", |s| s.run_pod),
            ("CreateContainer", |s| s.create),
            ("StartContainer", |s| s.start),
        ];
        for (what, part) in parts {
            let (p50, p99) = percentiles(&samples, part);
            println!(
                "{}: {what}: p50 {p50:.1} ms, p99 {p99:.1} ms ({} pods)",
                options.handler, options.runs
            );
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() {
    if let Err(error) = bench::main().await {
        eprintln!("cri_latency: {error:#}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("cri_latency runs on Linux only");
    std::process::exit(1);
}
