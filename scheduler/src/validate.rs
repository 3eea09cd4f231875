//! Checks an object's values before it is stored: names, selectors,
//! containers, resources, ports, volumes and strategies. Each refusal names
//! the field (`spec.template.spec.containers[0].resources.limits.memory`) and
//! what is accepted. Kubernetes fields berth does not act on and that change
//! no outcome (probes, security contexts, node selectors) become warnings;
//! those whose absence would change what runs (init containers, env from
//! secrets, selector expressions) are refused.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::{Kind, Object};
use crate::quantity;

/// A field with an invalid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct FieldError {
    /// The field's path, as kubectl prints it.
    pub field: String,
    /// What is wrong, and what is accepted.
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks `object`; adds warnings for ignored fields.
pub fn object(object: &Object, warnings: &mut Vec<String>) -> Result<(), FieldError> {
    metadata(object.metadata(), object.kind())?;
    match object {
        Object::Namespace(_) => Ok(()),
        Object::Pod(pod) => {
            let spec = pod
                .spec
                .as_ref()
                .ok_or_else(|| refuse("spec", "required"))?;
            pod_spec(spec, "spec", false, warnings)
        }
        Object::ReplicaSet(set) => {
            let spec = &set.spec;
            replicas(spec.replicas, "spec.replicas")?;
            let template = spec
                .template
                .as_ref()
                .ok_or_else(|| refuse("spec.template", "required"))?;
            selector_and_template(&spec.selector, template, warnings)
        }
        Object::Deployment(deployment) => {
            let spec = &deployment.spec;
            replicas(spec.replicas, "spec.replicas")?;
            if let Some(limit) = spec.revision_history_limit
                && limit < 0
            {
                return Err(refuse(
                    "spec.revisionHistoryLimit",
                    format!("must be 0 or more, got {limit}"),
                ));
            }
            if let Some(strategy) = &spec.strategy {
                match strategy.type_.as_deref() {
                    None | Some("RollingUpdate") => {
                        if let Some(rolling) = &strategy.rolling_update {
                            let surge = surge_or_unavailable(
                                rolling.max_surge.as_ref(),
                                "spec.strategy.rollingUpdate.maxSurge",
                            )?;
                            let unavailable = surge_or_unavailable(
                                rolling.max_unavailable.as_ref(),
                                "spec.strategy.rollingUpdate.maxUnavailable",
                            )?;
                            if surge == Some(0) && unavailable == Some(0) {
                                return Err(refuse(
                                    "spec.strategy.rollingUpdate.maxUnavailable",
                                    "may not be 0 when maxSurge is 0",
                                ));
                            }
                        }
                    }
                    Some("Recreate") => {
                        if strategy.rolling_update.is_some() {
                            return Err(refuse(
                                "spec.strategy.rollingUpdate",
                                "may not be specified when strategy type is Recreate",
                            ));
                        }
                    }
                    Some(other) => {
                        return Err(refuse(
                            "spec.strategy.type",
                            format!("unsupported value {other:?}: RollingUpdate or Recreate"),
                        ));
                    }
                }
            }
            selector_and_template(&spec.selector, &spec.template, warnings)
        }
    }
}

fn metadata(meta: &ObjectMeta, kind: Kind) -> Result<(), FieldError> {
    let name = meta.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err(refuse(
            "metadata.name",
            "required (generateName is not supported)",
        ));
    }
    let longest = if kind == Kind::Namespace { 63 } else { 253 };
    dns_name(name, longest, kind != Kind::Namespace)
        .map_err(|message| refuse("metadata.name", message))?;
    if let Some(namespace) = &meta.namespace {
        if !kind.namespaced() {
            return Err(refuse(
                "metadata.namespace",
                "a Namespace is not itself namespaced",
            ));
        }
        dns_name(namespace, 63, false).map_err(|message| refuse("metadata.namespace", message))?;
    }
    for (field, map) in [("metadata.labels", &meta.labels)] {
        for (key, value) in map.iter().flatten() {
            label(key, value).map_err(|message| refuse(format!("{field}.{key}"), message))?;
        }
    }
    Ok(())
}

/// A DNS-1123 label (`dots` false) or subdomain (`dots` true).
fn dns_name(name: &str, longest: usize, dots: bool) -> Result<(), String> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    };
    let ok = name.len() <= longest
        && if dots {
            name.split('.').all(valid_part)
        } else {
            valid_part(name)
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid value {name:?}: lower-case letters, digits and '-'{}, starting and ending with a letter or digit, at most {longest} characters",
            if dots { " (and '.' between parts)" } else { "" }
        ))
    }
}

fn label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = |text: &str, empty_ok: bool| {
        (empty_ok && text.is_empty())
            || (!text.is_empty()
                && text.len() <= 63
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && text.as_bytes()[0].is_ascii_alphanumeric()
                && text.as_bytes()[text.len() - 1].is_ascii_alphanumeric())
    };
    if (!prefix.is_empty() && dns_name(prefix, 253, true).is_err()) || !name_ok(name, false) {
        return Err(format!(
            "invalid label key {key:?}: an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'"
        ));
    }
    if !name_ok(value, true) {
        return Err(format!(
            "invalid label value {value:?}: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn replicas(replicas: Option<i32>, field: &str) -> Result<(), FieldError> {
    match replicas {
        Some(n) if n < 0 => Err(refuse(field, format!("must be 0 or more, got {n}"))),
        _ => Ok(()),
    }
}

/// `maxSurge` / `maxUnavailable`: a count or a percentage. Returns the count
/// when it is a plain zero-or-more number or `0%`, to catch both being zero.
fn surge_or_unavailable(
    value: Option<&IntOrString>,
    field: &str,
) -> Result<Option<i64>, FieldError> {
    match value {
        None => Ok(None),
        Some(IntOrString::Int(n)) if *n >= 0 => Ok(Some(i64::from(*n))),
        Some(IntOrString::Int(n)) => Err(refuse(field, format!("must be 0 or more, got {n}"))),
        Some(IntOrString::String(text)) => match text
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(percent) if percent <= 100 => Ok((percent == 0).then_some(0)),
            _ => Err(refuse(
                field,
                format!("invalid value {text:?}: a number such as 1, or a percentage such as 25%"),
            )),
        },
    }
}

fn selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    warnings: &mut Vec<String>,
) -> Result<(), FieldError> {
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(refuse(
            "spec.selector.matchExpressions",
            "not supported by berth: use spec.selector.matchLabels",
        ));
    }
    let wanted = selector.match_labels.clone().unwrap_or_default();
    if wanted.is_empty() {
        return Err(refuse(
            "spec.selector.matchLabels",
            "required, and not empty",
        ));
    }
    for (key, value) in &wanted {
        label(key, value)
            .map_err(|message| refuse(format!("spec.selector.matchLabels.{key}"), message))?;
    }
    let labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (key, value) in &labels {
        label(key, value)
            .map_err(|message| refuse(format!("spec.template.metadata.labels.{key}"), message))?;
    }
    if !wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Err(refuse(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ));
    }
    let spec = template
        .spec
        .as_ref()
        .ok_or_else(|| refuse("spec.template.spec", "required"))?;
    pod_spec(spec, "spec.template.spec", true, warnings)
}

fn pod_spec(
    spec: &PodSpec,
    at: &str,
    in_template: bool,
    warnings: &mut Vec<String>,
) -> Result<(), FieldError> {
    if spec.containers.is_empty() {
        return Err(refuse(
            format!("{at}.containers"),
            "required: at least one container",
        ));
    }
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(refuse(
            format!("{at}.initContainers"),
            "not supported by berth",
        ));
    }
    match spec.restart_policy.as_deref() {
        None | Some("Always") => {}
        Some("OnFailure" | "Never") if !in_template => {}
        Some(other) => {
            return Err(refuse(
                format!("{at}.restartPolicy"),
                if in_template {
                    format!("unsupported value {other:?}: only \"Always\" is allowed in a template")
                } else {
                    format!("unsupported value {other:?}: Always, OnFailure or Never")
                },
            ));
        }
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        return Err(refuse(
            format!("{at}.terminationGracePeriodSeconds"),
            format!("must be 0 or more, got {grace}"),
        ));
    }
    let mut volumes = BTreeSet::new();
    for (index, volume) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("{at}.volumes[{index}]");
        dns_name(&volume.name, 63, false).map_err(|m| refuse(format!("{field}.name"), m))?;
        if !volumes.insert(volume.name.as_str()) {
            return Err(refuse(
                format!("{field}.name"),
                format!("duplicate volume {:?}", volume.name),
            ));
        }
        // Only hostPath and emptyDir are supported; a volume with any other
        // source (or none) serializes with only its name plus that source.
        let sources = serde_json::to_value(volume)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let other: Vec<&String> = sources
            .keys()
            .filter(|k| !matches!(k.as_str(), "name" | "hostPath" | "emptyDir"))
            .collect();
        if let Some(source) = other.first() {
            return Err(refuse(
                format!("{field}.{source}"),
                "not supported by berth: hostPath or emptyDir",
            ));
        }
        match (&volume.host_path, &volume.empty_dir) {
            (Some(host), None) => {
                if !host.path.starts_with('/') && !is_windows_absolute(&host.path) {
                    return Err(refuse(
                        format!("{field}.hostPath.path"),
                        format!("must be an absolute path, got {:?}", host.path),
                    ));
                }
            }
            (None, Some(dir)) => {
                if let Some(limit) = &dir.size_limit {
                    quantity::memory_bytes(&limit.0).map_err(|e| {
                        refuse(format!("{field}.emptyDir.sizeLimit"), e.to_string())
                    })?;
                }
            }
            _ => {
                return Err(refuse(
                    field,
                    "exactly one volume source is required: hostPath or emptyDir",
                ));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (index, container) in spec.containers.iter().enumerate() {
        let field = format!("{at}.containers[{index}]");
        if !names.insert(container.name.as_str()) {
            return Err(refuse(
                format!("{field}.name"),
                format!("duplicate container {:?}", container.name),
            ));
        }
        container_spec(container, &field, &volumes, warnings)?;
    }
    for (field, set) in [
        ("nodeSelector", spec.node_selector.is_some()),
        ("affinity", spec.affinity.is_some()),
        ("tolerations", spec.tolerations.is_some()),
        ("securityContext", spec.security_context.is_some()),
        ("serviceAccountName", spec.service_account_name.is_some()),
    ] {
        if set {
            warnings.push(format!("{at}.{field} is ignored by berth"));
        }
    }
    Ok(())
}

fn is_windows_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes[2], b'\\' | b'/')
}

fn container_spec(
    container: &Container,
    at: &str,
    volumes: &BTreeSet<&str>,
    warnings: &mut Vec<String>,
) -> Result<(), FieldError> {
    dns_name(&container.name, 63, false).map_err(|m| refuse(format!("{at}.name"), m))?;
    if container
        .image
        .as_deref()
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        return Err(refuse(format!("{at}.image"), "required"));
    }
    match container.image_pull_policy.as_deref() {
        None | Some("Always" | "IfNotPresent" | "Never") => {}
        Some(other) => {
            return Err(refuse(
                format!("{at}.imagePullPolicy"),
                format!("unsupported value {other:?}: Always, IfNotPresent or Never"),
            ));
        }
    }
    for (index, var) in container.env.iter().flatten().enumerate() {
        if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
            return Err(refuse(
                format!("{at}.env[{index}].name"),
                format!("invalid value {:?}: a non-empty name without '='", var.name),
            ));
        }
        if var.value_from.is_some() {
            return Err(refuse(
                format!("{at}.env[{index}].valueFrom"),
                "not supported by berth: give the value",
            ));
        }
    }
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(refuse(format!("{at}.envFrom"), "not supported by berth"));
    }
    for (index, port) in container.ports.iter().flatten().enumerate() {
        let field = format!("{at}.ports[{index}]");
        if !(1..=65535).contains(&port.container_port) {
            return Err(refuse(
                format!("{field}.containerPort"),
                format!("must be between 1 and 65535, got {}", port.container_port),
            ));
        }
        match port.protocol.as_deref() {
            None | Some("TCP") => {}
            Some(other) => {
                return Err(refuse(
                    format!("{field}.protocol"),
                    format!("unsupported value {other:?}: berth serves TCP"),
                ));
            }
        }
        if port.host_port.is_some() {
            warnings.push(format!("{field}.hostPort is ignored by berth"));
        }
    }
    if let Some(resources) = &container.resources {
        let mut amounts = BTreeMap::new();
        for (which, map) in [
            ("limits", &resources.limits),
            ("requests", &resources.requests),
        ] {
            for (name, value) in map.iter().flatten() {
                let field = format!("{at}.resources.{which}.{name}");
                let amount = match name.as_str() {
                    "memory" => quantity::memory_bytes(&value.0),
                    "cpu" => quantity::cpu_millis(&value.0),
                    other => {
                        return Err(refuse(
                            field,
                            format!("unsupported resource {other:?}: memory or cpu"),
                        ));
                    }
                }
                .map_err(|e| refuse(&field, e.to_string()))?;
                if amount == 0 && which == "limits" {
                    return Err(refuse(field, "a limit must be more than 0"));
                }
                amounts.insert((which, name.as_str()), amount);
            }
        }
        for name in ["memory", "cpu"] {
            if let (Some(limit), Some(request)) = (
                amounts.get(&("limits", name)),
                amounts.get(&("requests", name)),
            ) && request > limit
            {
                return Err(refuse(
                    format!("{at}.resources.requests.{name}"),
                    "must be less than or equal to the limit",
                ));
            }
        }
    }
    for (index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{at}.volumeMounts[{index}]");
        if !volumes.contains(mount.name.as_str()) {
            return Err(refuse(
                format!("{field}.name"),
                format!("volume {:?} is not defined in volumes", mount.name),
            ));
        }
        if !mount.mount_path.starts_with('/') {
            return Err(refuse(
                format!("{field}.mountPath"),
                format!("must be an absolute path, got {:?}", mount.mount_path),
            ));
        }
        if mount.sub_path.is_some() || mount.sub_path_expr.is_some() {
            return Err(refuse(format!("{field}.subPath"), "not supported by berth"));
        }
    }
    for (field, set) in [
        ("livenessProbe", container.liveness_probe.is_some()),
        ("readinessProbe", container.readiness_probe.is_some()),
        ("startupProbe", container.startup_probe.is_some()),
        ("securityContext", container.security_context.is_some()),
        ("lifecycle", container.lifecycle.is_some()),
    ] {
        if set {
            warnings.push(format!("{at}.{field} is ignored by berth"));
        }
    }
    Ok(())
}

/// What one container asks for: its requests, each defaulting to its limit
/// as in Kubernetes.
pub fn container_requests(container: &Container) -> quantity::Resources {
    let read = |name: &str| {
        let resources = container.resources.as_ref();
        let pick = |map: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| { map.and_then(|m| m.get(name)).map(|q| q.0.clone()) };
        pick(resources.and_then(|r| r.requests.as_ref()))
            .or_else(|| pick(resources.and_then(|r| r.limits.as_ref())))
    };
    quantity::Resources {
        memory_bytes: read("memory")
            .and_then(|q| quantity::memory_bytes(&q).ok())
            .unwrap_or(0),
        cpu_millis: read("cpu")
            .and_then(|q| quantity::cpu_millis(&q).ok())
            .unwrap_or(0),
    }
}

/// What a pod asks for: the sum of its containers' requests.
pub fn pod_requests(spec: &PodSpec) -> quantity::Resources {
    spec.containers
        .iter()
        .map(container_requests)
        .fold(quantity::Resources::default(), quantity::Resources::plus)
}
