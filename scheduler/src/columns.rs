//! kubectl's table columns for each kind, as the API server's printers
//! derive them: NAME READY STATUS RESTARTS AGE for pods (STATUS derived
//! from the containers' waiting and terminated reasons), NAME READY
//! UP-TO-DATE AVAILABLE AGE for Deployments, NAME DESIRED CURRENT READY AGE
//! for ReplicaSets, NAME STATUS AGE for Namespaces, and the `-o wide`
//! columns. The commands print them; the API serves them as a
//! `meta.k8s.io/v1 Table` to clients that ask (kubectl).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::object::{Kind, Object};

/// kubectl's human durations (`5s`, `3m20s`, `4h`, `2d3h`, `40d`).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rest = s % 60;
        if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let rest = m % 60;
        if rest == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rest}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        let rest = h % 24;
        if rest == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rest}h")
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// Seconds since the epoch, now.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn age(time: Option<&Time>) -> String {
    match time {
        None => "<unknown>".to_owned(),
        Some(Time(at)) => {
            let seconds = now_seconds() - at.as_second();
            human_duration(seconds)
        }
    }
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

/// A pod's STATUS column, derived as kubectl derives it: the pod's reason
/// or phase, overridden by a container's waiting or terminated reason
/// (CrashLoopBackOff, OOMKilled, Error), and Terminating while deleted.
pub fn pod_status(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .or(status.phase.clone())
        .unwrap_or_else(|| "Pending".to_owned());
    for container in status.container_statuses.iter().flatten().rev() {
        let Some(state) = &container.state else {
            continue;
        };
        if let Some(waiting) = &state.waiting
            && let Some(why) = waiting.reason.as_deref().filter(|r| !r.is_empty())
        {
            reason = why.to_owned();
        } else if let Some(terminated) = &state.terminated {
            reason = match terminated.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(why) => why.to_owned(),
                None if terminated.signal.unwrap_or(0) != 0 => {
                    format!("Signal:{}", terminated.signal.unwrap_or(0))
                }
                None => format!("ExitCode:{}", terminated.exit_code),
            };
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".to_owned();
    }
    reason
}

fn pod_ready(pod: &Pod) -> String {
    let total = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().filter(|c| c.ready).count())
        .unwrap_or(0);
    format!("{ready}/{total}")
}

fn pod_restarts(pod: &Pod) -> String {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let last = statuses
        .iter()
        .filter_map(|c| {
            c.last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
        })
        .map(|t| t.0)
        .max();
    match last {
        Some(at) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now_seconds() - at.as_second())
        ),
        _ => restarts.to_string(),
    }
}

/// `k=v,k2=v2`, or `<none>`.
pub fn selector_text(labels: Option<&BTreeMap<String, String>>) -> String {
    none_if_empty(
        labels
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn template_columns(template: Option<&PodTemplateSpec>) -> (String, String) {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    (
        containers
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        containers
            .iter()
            .map(|c| c.image.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The column names of `kind`'s table (`wide` adds kubectl's `-o wide`
/// columns).
pub fn header(kind: Kind, wide: bool) -> Vec<String> {
    let mut columns: Vec<&str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
    };
    if wide {
        match kind {
            Kind::Pod => columns.extend(["IP", "NODE"]),
            Kind::Deployment | Kind::ReplicaSet => {
                columns.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
            }
            Kind::Namespace => {}
        }
    }
    columns.into_iter().map(str::to_owned).collect()
}

/// The cells of `object`'s row, under [`header`]'s columns.
pub fn cells(object: &Object, wide: bool) -> Vec<String> {
    let meta = object.metadata();
    let name = object.name().to_owned();
    let created = age(meta.creation_timestamp.as_ref());
    match object {
        Object::Pod(pod) => {
            let mut cells = vec![
                name,
                pod_ready(pod),
                pod_status(pod),
                pod_restarts(pod),
                created,
            ];
            if wide {
                let status = pod.status.clone().unwrap_or_default();
                cells.push(status.pod_ip.unwrap_or_else(|| "<none>".to_owned()));
                cells.push(
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_else(|| "<none>".to_owned()),
                );
            }
            cells
        }
        Object::Deployment(d) => {
            let status = d.status.clone().unwrap_or_default();
            let mut cells = vec![
                name,
                format!(
                    "{}/{}",
                    status.ready_replicas.unwrap_or(0),
                    d.spec.replicas.unwrap_or(1)
                ),
                status.updated_replicas.unwrap_or(0).to_string(),
                status.available_replicas.unwrap_or(0).to_string(),
                created,
            ];
            if wide {
                let (names, images) = template_columns(Some(&d.spec.template));
                cells.extend([
                    names,
                    images,
                    selector_text(d.spec.selector.match_labels.as_ref()),
                ]);
            }
            cells
        }
        Object::ReplicaSet(r) => {
            let status = r.status.clone().unwrap_or_default();
            let mut cells = vec![
                name,
                r.spec.replicas.unwrap_or(1).to_string(),
                status.replicas.to_string(),
                status.ready_replicas.unwrap_or(0).to_string(),
                created,
            ];
            if wide {
                let (names, images) = template_columns(r.spec.template.as_ref());
                cells.extend([
                    names,
                    images,
                    selector_text(r.spec.selector.match_labels.as_ref()),
                ]);
            }
            cells
        }
        Object::Namespace(n) => vec![
            name,
            n.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Active".to_owned()),
            created,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodSpec, PodStatus,
    };

    #[test]
    fn durations_read_as_kubectls() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }

    fn pod_with(state: ContainerState, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".to_owned(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "web".to_owned(),
                    state: Some(state),
                    restart_count: 3,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn pod_status_is_derived_as_kubectl_derives_it() {
        let crash = pod_with(
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".to_owned()),
                    message: None,
                }),
                ..ContainerState::default()
            },
            "Running",
        );
        assert_eq!(pod_status(&crash), "CrashLoopBackOff");
        assert_eq!(pod_ready(&crash), "0/1");
        assert_eq!(pod_restarts(&crash), "3");
        let oom = pod_with(
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some("OOMKilled".to_owned()),
                    exit_code: 137,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
            "Running",
        );
        assert_eq!(pod_status(&oom), "OOMKilled");
        assert_eq!(pod_status(&Pod::default()), "Pending");
    }
}
