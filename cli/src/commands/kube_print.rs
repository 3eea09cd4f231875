//! kubectl's output for the kubectl-style commands: `get`'s tables (with
//! kubectl's columns and its derived pod STATUS), JSON, YAML and names,
//! `describe`'s prose with an events section, `rollout history` and
//! `top pods`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use berth_scheduler::k8s_openapi::api::apps::v1::ReplicaSet;
use berth_scheduler::k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use berth_scheduler::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use berth_scheduler::k8s_openapi::jiff;
use berth_scheduler::{Kind, Object};

use super::kube::Format;

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
fn now_seconds() -> i64 {
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

fn selector_text(labels: Option<&BTreeMap<String, String>>) -> String {
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

fn header(kind: Kind, wide: bool, namespace: bool) -> Vec<String> {
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
    if namespace {
        columns.insert(0, "NAMESPACE");
    }
    columns.into_iter().map(str::to_owned).collect()
}

fn row(object: &Object, wide: bool, namespace: bool, qualified: bool) -> Vec<String> {
    let meta = object.metadata();
    let name = if qualified {
        object.reference()
    } else {
        object.name().to_owned()
    };
    let created = age(meta.creation_timestamp.as_ref());
    let mut cells = match object {
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
    };
    if namespace {
        cells.insert(0, object.namespace().to_owned());
    }
    cells
}

fn list_value(objects: &[Object], single: bool) -> serde_json::Value {
    if single && objects.len() == 1 {
        return objects[0].to_json();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": objects.iter().map(Object::to_json).collect::<Vec<_>>(),
    })
}

/// `get`'s output for `objects` (names as `kind/name` when `qualified`,
/// as kubectl shows several types).
pub fn render(
    objects: &[Object],
    kind: Kind,
    format: Format,
    namespace: bool,
    single: bool,
    qualified: bool,
) -> Result<String> {
    Ok(match format {
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let mut rows = vec![header(kind, wide, namespace)];
            rows.extend(objects.iter().map(|o| row(o, wide, namespace, qualified)));
            super::table(&rows)
        }
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&list_value(objects, single))?;
            text.push('\n');
            text
        }
        Format::Yaml => serde_norway::to_string(&list_value(objects, single))?,
        Format::Name => objects
            .iter()
            .map(|o| format!("{}\n", o.reference()))
            .collect(),
    })
}

/// The column widths of a table, so that watched rows line up with it.
pub fn widths(objects: &[Object], kind: Kind, format: Format, namespace: bool) -> Vec<usize> {
    let wide = format == Format::Wide;
    let mut rows = vec![header(kind, wide, namespace)];
    rows.extend(objects.iter().map(|o| row(o, wide, namespace, false)));
    let mut widths = vec![0; rows[0].len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

/// One watched change: a row lined up with the table, or the object.
pub fn watch_row(
    object: &Object,
    kind: Kind,
    format: Format,
    namespace: bool,
    widths: &[usize],
) -> Result<String> {
    Ok(match format {
        Format::Table | Format::Wide => {
            let cells = row(object, format == Format::Wide, namespace, false);
            let mut line = String::new();
            for (index, cell) in cells.iter().enumerate() {
                line.push_str(cell);
                if index + 1 < cells.len() {
                    let width = widths.get(index).copied().unwrap_or(0);
                    let pad = width.saturating_sub(cell.chars().count()) + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            format!("{}\n", line.trim_end())
        }
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&object.to_json())?),
        Format::Yaml => format!("---\n{}", serde_norway::to_string(&object.to_json())?),
        Format::Name => {
            let _ = kind;
            format!("{}\n", object.reference())
        }
    })
}

// ---- describe ----

fn map_lines(out: &mut String, title: &str, map: Option<&BTreeMap<String, String>>) {
    let entries: Vec<_> = map.into_iter().flatten().collect();
    if entries.is_empty() {
        let _ = writeln!(out, "{title:<20}<none>");
        return;
    }
    for (index, (k, v)) in entries.iter().enumerate() {
        let label = if index == 0 { title } else { "" };
        let _ = writeln!(out, "{label:<20}{k}={v}");
    }
}

fn meta_lines(out: &mut String, meta: &ObjectMeta, namespaced: bool) {
    let _ = writeln!(out, "{:<20}{}", "Name:", meta.name.as_deref().unwrap_or(""));
    if namespaced {
        let _ = writeln!(
            out,
            "{:<20}{}",
            "Namespace:",
            meta.namespace.as_deref().unwrap_or("default")
        );
    }
    if let Some(Time(at)) = &meta.creation_timestamp {
        let _ = writeln!(out, "{:<20}{at}", "CreationTimestamp:");
    }
    map_lines(out, "Labels:", meta.labels.as_ref());
    map_lines(out, "Annotations:", meta.annotations.as_ref());
}

fn template_lines(out: &mut String, template: Option<&PodTemplateSpec>, indent: &str) {
    let Some(template) = template else {
        return;
    };
    let _ = writeln!(out, "{indent}Containers:");
    for container in template.spec.iter().flat_map(|s| &s.containers) {
        let _ = writeln!(out, "{indent}  {}:", container.name);
        let _ = writeln!(
            out,
            "{indent}    Image:      {}",
            container.image.as_deref().unwrap_or("<none>")
        );
        let ports: Vec<String> = container
            .ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.as_deref().unwrap_or("TCP")
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{indent}    Port:       {}",
            none_if_empty(ports.join(", "))
        );
        if let Some(resources) = &container.resources {
            for (title, map) in [
                ("Limits", &resources.limits),
                ("Requests", &resources.requests),
            ] {
                if let Some(map) = map {
                    let _ = writeln!(out, "{indent}    {title}:");
                    for (k, v) in map {
                        let _ = writeln!(out, "{indent}      {k}: {}", v.0);
                    }
                }
            }
        }
        if let Some(command) = &container.command {
            let _ = writeln!(out, "{indent}    Command:    {}", command.join(" "));
        }
        if let Some(args) = &container.args {
            let _ = writeln!(out, "{indent}    Args:       {}", args.join(" "));
        }
        let env: Vec<String> = container
            .env
            .iter()
            .flatten()
            .map(|e| format!("{}={}", e.name, e.value.as_deref().unwrap_or("")))
            .collect();
        if !env.is_empty() {
            let _ = writeln!(out, "{indent}    Environment:");
            for pair in env {
                let _ = writeln!(out, "{indent}      {pair}");
            }
        }
    }
}

fn events_lines(out: &mut String, events: &serde_json::Value) {
    let items = events["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push_str("Events:             <none>\n");
        return;
    }
    out.push_str("Events:\n");
    let mut rows = vec![
        ["Type", "Reason", "Age", "From", "Message"]
            .map(str::to_owned)
            .to_vec(),
        ["----", "------", "----", "----", "-------"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for event in items {
        let text = |pointer: &str| {
            event
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let when = |pointer: &str| {
            event
                .pointer(pointer)
                .and_then(|v| v.as_str())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        };
        let count = event["count"].as_i64().unwrap_or(1);
        let last = when("/lastTimestamp");
        let first = when("/firstTimestamp");
        let now = now_seconds();
        let age = match (last, first) {
            (Some(last), Some(first)) if count > 1 => format!(
                "{} (x{count} over {})",
                human_duration(now - last.as_second()),
                human_duration(now - first.as_second())
            ),
            (Some(last), _) => human_duration(now - last.as_second()),
            _ => "<unknown>".to_owned(),
        };
        rows.push(vec![
            text("/type"),
            text("/reason"),
            age,
            text("/source/component"),
            text("/message"),
        ]);
    }
    for line in super::table(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn describe_pod(out: &mut String, pod: &Pod) {
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<20}{}",
        "Node:",
        spec.node_name.as_deref().unwrap_or("<none>")
    );
    let _ = writeln!(out, "{:<20}{}", "Status:", pod_status(pod));
    let _ = writeln!(
        out,
        "{:<20}{}",
        "IP:",
        status.pod_ip.as_deref().unwrap_or("<none>")
    );
    if let Some(owner) = berth_scheduler::controller::controller_of(&pod.metadata) {
        let _ = writeln!(out, "{:<20}{}/{}", "Controlled By:", owner.kind, owner.name);
    }
    out.push_str("Containers:\n");
    for container in &spec.containers {
        let _ = writeln!(out, "  {}:", container.name);
        let _ = writeln!(
            out,
            "    Image:          {}",
            container.image.as_deref().unwrap_or("<none>")
        );
        let observed = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == container.name);
        if let Some(observed) = observed {
            let state = observed.state.clone().unwrap_or_default();
            if let Some(running) = state.running {
                let _ = writeln!(out, "    State:          Running");
                if let Some(Time(at)) = running.started_at {
                    let _ = writeln!(out, "      Started:      {at}");
                }
            } else if let Some(waiting) = state.waiting {
                let _ = writeln!(out, "    State:          Waiting");
                let _ = writeln!(
                    out,
                    "      Reason:       {}",
                    waiting.reason.unwrap_or_default()
                );
            } else if let Some(done) = state.terminated {
                let _ = writeln!(out, "    State:          Terminated");
                let _ = writeln!(
                    out,
                    "      Reason:       {}",
                    done.reason.unwrap_or_default()
                );
                let _ = writeln!(out, "      Exit Code:    {}", done.exit_code);
            }
            if let Some(done) = observed
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
            {
                let _ = writeln!(out, "    Last State:     Terminated");
                let _ = writeln!(
                    out,
                    "      Reason:       {}",
                    done.reason.as_deref().unwrap_or("")
                );
                let _ = writeln!(out, "      Exit Code:    {}", done.exit_code);
            }
            let _ = writeln!(out, "    Ready:          {}", observed.ready);
            let _ = writeln!(out, "    Restart Count:  {}", observed.restart_count);
        }
        if let Some(resources) = &container.resources {
            for (title, map) in [
                ("Limits", &resources.limits),
                ("Requests", &resources.requests),
            ] {
                if let Some(map) = map {
                    let _ = writeln!(out, "    {title}:");
                    for (k, v) in map {
                        let _ = writeln!(out, "      {k}: {}", v.0);
                    }
                }
            }
        }
    }
    let conditions = status.conditions.unwrap_or_default();
    if !conditions.is_empty() {
        out.push_str("Conditions:\n  Type           Status\n");
        for condition in conditions {
            let _ = writeln!(out, "  {:<15}{}", condition.type_, condition.status);
        }
    }
}

/// `describe`'s text for one object, with its events and (for a
/// Deployment) its ReplicaSets by revision.
pub fn describe(object: &Object, events: &serde_json::Value, sets: &[(i64, ReplicaSet)]) -> String {
    let mut out = String::new();
    meta_lines(&mut out, object.metadata(), object.kind().namespaced());
    match object {
        Object::Pod(pod) => describe_pod(&mut out, pod),
        Object::Deployment(d) => {
            let status = d.status.clone().unwrap_or_default();
            let desired = d.spec.replicas.unwrap_or(1);
            let total = status.replicas.unwrap_or(0);
            let available = status.available_replicas.unwrap_or(0);
            let _ = writeln!(
                out,
                "{:<20}{}",
                "Selector:",
                selector_text(d.spec.selector.match_labels.as_ref())
            );
            let _ = writeln!(
                out,
                "{:<20}{desired} desired | {} updated | {total} total | {available} available | {} unavailable",
                "Replicas:",
                status.updated_replicas.unwrap_or(0),
                status.unavailable_replicas.unwrap_or(0)
            );
            let strategy = d.spec.strategy.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<20}{}",
                "StrategyType:",
                strategy.type_.as_deref().unwrap_or("RollingUpdate")
            );
            if let Some(rolling) = strategy.rolling_update {
                let show = |v: Option<
                    berth_scheduler::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
                >,
                            default: &str| {
                    match v {
                    Some(berth_scheduler::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n.to_string(),
                    Some(berth_scheduler::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
                    None => default.to_owned(),
                }
                };
                let _ = writeln!(
                    out,
                    "RollingUpdateStrategy:  {} max unavailable, {} max surge",
                    show(rolling.max_unavailable, "25%"),
                    show(rolling.max_surge, "25%")
                );
            }
            out.push_str("Pod Template:\n");
            map_lines(
                &mut out,
                "  Labels:",
                d.spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.as_ref()),
            );
            template_lines(&mut out, Some(&d.spec.template), "  ");
            if let Some(conditions) = &status.conditions {
                out.push_str("Conditions:\n  Type           Status  Reason\n");
                for c in conditions {
                    let _ = writeln!(
                        out,
                        "  {:<15}{:<8}{}",
                        c.type_.as_deref().unwrap_or(""),
                        c.status.as_deref().unwrap_or(""),
                        c.reason.as_deref().unwrap_or("")
                    );
                }
            }
            let newest = sets.last();
            let old: Vec<String> = sets
                .iter()
                .rev()
                .skip(1)
                .filter(|(_, s)| s.spec.replicas.unwrap_or(0) > 0)
                .map(|(_, s)| {
                    format!(
                        "{} ({}/{} replicas created)",
                        s.metadata.name.as_deref().unwrap_or(""),
                        s.status.as_ref().map(|s| s.replicas).unwrap_or(0),
                        s.spec.replicas.unwrap_or(0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<20}{}",
                "OldReplicaSets:",
                none_if_empty(old.join(", "))
            );
            let _ = writeln!(
                out,
                "{:<20}{}",
                "NewReplicaSet:",
                newest
                    .map(|(_, s)| format!(
                        "{} ({}/{} replicas created)",
                        s.metadata.name.as_deref().unwrap_or(""),
                        s.status.as_ref().map(|s| s.replicas).unwrap_or(0),
                        s.spec.replicas.unwrap_or(0)
                    ))
                    .unwrap_or_else(|| "<none>".to_owned())
            );
        }
        Object::ReplicaSet(r) => {
            let status = r.status.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<20}{}",
                "Selector:",
                selector_text(r.spec.selector.match_labels.as_ref())
            );
            if let Some(owner) = berth_scheduler::controller::controller_of(&r.metadata) {
                let _ = writeln!(out, "{:<20}{}/{}", "Controlled By:", owner.kind, owner.name);
            }
            let _ = writeln!(
                out,
                "{:<20}{} current / {} desired",
                "Replicas:",
                status.replicas,
                r.spec.replicas.unwrap_or(1)
            );
            let _ = writeln!(
                out,
                "{:<20}{} Ready / {} Available",
                "Pods Status:",
                status.ready_replicas.unwrap_or(0),
                status.available_replicas.unwrap_or(0)
            );
            out.push_str("Pod Template:\n");
            map_lines(
                &mut out,
                "  Labels:",
                r.spec
                    .template
                    .as_ref()
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            );
            template_lines(&mut out, r.spec.template.as_ref(), "  ");
        }
        Object::Namespace(n) => {
            let _ = writeln!(
                out,
                "{:<20}{}",
                "Status:",
                n.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Active".to_owned())
            );
        }
    }
    events_lines(&mut out, events);
    out
}

// ---- rollout history, top ----

/// `rollout history`'s table, or one revision's pod template.
pub fn history(name: &str, sets: &[(i64, ReplicaSet)], revision: Option<i64>) -> Result<String> {
    let mut out = String::new();
    if let Some(wanted) = revision {
        let Some((_, set)) = sets.iter().find(|(r, _)| *r == wanted) else {
            anyhow::bail!("unable to find the specified revision {wanted}");
        };
        let _ = writeln!(out, "deployment.apps/{name} with revision #{wanted}");
        out.push_str("Pod Template:\n");
        map_lines(
            &mut out,
            "  Labels:",
            set.spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref()),
        );
        template_lines(&mut out, set.spec.template.as_ref(), "  ");
        return Ok(out);
    }
    let _ = writeln!(out, "deployment.apps/{name}");
    let mut rows = vec![vec!["REVISION".to_owned(), "CHANGE-CAUSE".to_owned()]];
    for (revision, set) in sets {
        let cause = set
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/change-cause"))
            .cloned()
            .unwrap_or_else(|| "<none>".to_owned());
        rows.push(vec![revision.to_string(), cause]);
    }
    out.push_str(&super::table(&rows));
    out.push('\n');
    Ok(out)
}

/// A quantity of metrics.k8s.io (`12345n`, `250m`, `1`; `1024Ki`, `3Mi`)
/// as a number of the unit asked (nanocores or bytes).
fn metric(text: &str, nano: bool) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(0.0);
    let scale = match unit {
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => 1.0,
    };
    if nano {
        value * scale * 1e9
    } else {
        value * scale
    }
}

/// `top pods`' table: CPU in millicores, memory in MiB, per pod.
pub fn top(items: &[serde_json::Value], namespace: bool) -> String {
    let mut rows = Vec::new();
    let mut head = vec![
        "NAME".to_owned(),
        "CPU(cores)".to_owned(),
        "MEMORY(bytes)".to_owned(),
    ];
    if namespace {
        head.insert(0, "NAMESPACE".to_owned());
    }
    rows.push(head);
    for item in items {
        let containers = item["containers"].as_array().cloned().unwrap_or_default();
        let cpu: f64 = containers
            .iter()
            .map(|c| metric(c["usage"]["cpu"].as_str().unwrap_or("0"), true))
            .sum();
        let memory: f64 = containers
            .iter()
            .map(|c| metric(c["usage"]["memory"].as_str().unwrap_or("0"), false))
            .sum();
        let mut row = vec![
            item["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            format!("{}m", (cpu / 1e6).round() as u64),
            format!("{}Mi", (memory / (1024.0 * 1024.0)).round() as u64),
        ];
        if namespace {
            row.insert(
                0,
                item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        rows.push(row);
    }
    super::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scheduler::k8s_openapi::api::core::v1::{
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

    #[test]
    fn top_sums_containers_in_kubectls_units() {
        let items = vec![serde_json::json!({
            "metadata": {"name": "web-1"},
            "containers": [
                {"usage": {"cpu": "1500000n", "memory": "2048Ki"}},
                {"usage": {"cpu": "500000n", "memory": "1Mi"}},
            ],
        })];
        assert_eq!(
            top(&items, false),
            "NAME    CPU(cores)   MEMORY(bytes)\nweb-1   2m           3Mi\n"
        );
    }
}
