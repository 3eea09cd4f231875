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

use berth_scheduler::columns::{self, human_duration, now_seconds, pod_status, selector_text};

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

/// The header, with NAMESPACE first when listing several namespaces.
fn header(kind: Kind, wide: bool, namespace: bool) -> Vec<String> {
    let mut columns = columns::header(kind, wide);
    if namespace {
        columns.insert(0, "NAMESPACE".to_owned());
    }
    columns
}

/// A row, its name as `kind/name` when `qualified`.
fn row(object: &Object, wide: bool, namespace: bool, qualified: bool) -> Vec<String> {
    let mut cells = columns::cells(object, wide);
    if qualified && let Some(name) = cells.first_mut() {
        *name = object.reference();
    }
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
