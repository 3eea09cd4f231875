//! API discovery as the API server serves it (`/api`, `/apis`, and each
//! group version's resource list), so that clients such as kubectl can map
//! `deployments` or `deploy` to the paths this server has. It lists
//! exactly what [`super::api`] serves.

use axum::http::StatusCode;
use axum::response::Response;

use super::status::json_response;

const ALL_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn resource(
    name: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
    verbs: &[&str],
    short: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
        "shortNames": short,
    })
}

fn scale(name: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "singularName": "",
        "namespaced": true,
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    })
}

fn list(group_version: &str, resources: Vec<serde_json::Value>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }),
    )
}

/// `/api`: the core group's versions.
pub fn versions() -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({"kind": "APIVersions", "versions": ["v1"]}),
    )
}

/// `/apis`: the named groups.
pub fn groups() -> Response {
    let group = |name: &str, version: &str| {
        let version =
            serde_json::json!({"groupVersion": format!("{name}/{version}"), "version": version});
        serde_json::json!({"name": name, "versions": [version.clone()], "preferredVersion": version})
    };
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [group("apps", "v1"), group("metrics.k8s.io", "v1beta1")],
        }),
    )
}

/// `/api/v1`.
pub fn core() -> Response {
    list(
        "v1",
        vec![
            resource(
                "namespaces",
                "namespace",
                "Namespace",
                false,
                &ALL_VERBS,
                &["ns"],
            ),
            resource("pods", "pod", "Pod", true, &ALL_VERBS, &["po"]),
            resource("pods/log", "", "Pod", true, &["get"], &[]),
            resource("events", "event", "Event", true, &["list"], &["ev"]),
        ],
    )
}

/// `/apis/apps/v1`.
pub fn apps() -> Response {
    list(
        "apps/v1",
        vec![
            resource(
                "deployments",
                "deployment",
                "Deployment",
                true,
                &ALL_VERBS,
                &["deploy"],
            ),
            scale("deployments/scale"),
            resource(
                "replicasets",
                "replicaset",
                "ReplicaSet",
                true,
                &ALL_VERBS,
                &["rs"],
            ),
            scale("replicasets/scale"),
        ],
    )
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn metrics() -> Response {
    list(
        "metrics.k8s.io/v1beta1",
        vec![resource(
            "pods",
            "",
            "PodMetrics",
            true,
            &["get", "list"],
            &[],
        )],
    )
}
