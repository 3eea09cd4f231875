//! The daemon's HTTP API, shaped as Kubernetes' REST API: the same paths
//! (`/api/v1/namespaces/{ns}/pods`, `/apis/apps/v1/namespaces/{ns}/deployments`),
//! the same JSON (k8s-openapi's types), lists with a `resourceVersion`,
//! `?watch=true` streams, `?labelSelector=`, the `/scale` subresource, pod
//! logs, pod metrics and errors as `metav1.Status`.
//!
//! Two endpoints are berth's own: `POST /apis/berth.dev/v1/apply` applies a
//! set of objects in one transaction (all or nothing), and
//! `POST .../deployments/{name}/rollback` rolls a Deployment back to a
//! revision (the shape of the old `apps/v1beta1` DeploymentRollback).
//!
//! Every body is read whole (capped), parsed and validated before anything
//! is written, and writes to the database run off the async workers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_scheduler::k8s_openapi;
use berth_scheduler::kubelet::{Kubelet, LogsError};
use berth_scheduler::{Kind, Object, Store, columns, controller, manifest};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};

use super::discovery;
use super::patch;
use super::select::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::watch::{Start, WatchCache};

/// The largest request body read (as large as the largest manifest).
pub const MAX_BODY_BYTES: usize = manifest::MAX_MANIFEST_BYTES as usize;
/// The longest a watch stays open; clients watch again.
const MAX_WATCH: Duration = Duration::from_secs(30 * 60);
/// How often a followed log is polled for new lines.
const LOG_POLL: Duration = Duration::from_millis(250);
/// How long CPU use is sampled for pod metrics.
const METRICS_WINDOW: Duration = Duration::from_millis(250);

/// What the handlers share.
pub struct Api {
    store: Arc<Store>,
    kubelet: Kubelet,
    cache: Arc<WatchCache>,
    shutdown: watch::Receiver<bool>,
}

type Shared = Arc<Api>;
type ApiResult = Result<Response, ApiError>;

impl Api {
    /// The API over `store` and `kubelet`; streams end when `shutdown`
    /// turns true. Call inside a Tokio runtime.
    pub fn new(store: Arc<Store>, kubelet: Kubelet, shutdown: watch::Receiver<bool>) -> Api {
        let cache = WatchCache::start(&store);
        Api {
            store,
            kubelet,
            cache,
            shutdown,
        }
    }

    /// The routes.
    pub fn router(self) -> Router {
        let resource = get(get_object)
            .put(replace_object)
            .delete(delete_object)
            .patch(patch_object);
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/version", get(version))
            .route("/api", get(|| async { discovery::versions() }))
            .route("/apis", get(|| async { discovery::groups() }))
            .route("/api/v1", get(|| async { discovery::core() }))
            .route("/apis/apps/v1", get(|| async { discovery::apps() }))
            .route(
                "/apis/metrics.k8s.io/v1beta1",
                get(|| async { discovery::metrics() }),
            )
            .route(
                "/api/v1/namespaces",
                get(list_namespaces).post(create_namespace),
            )
            .route(
                "/api/v1/namespaces/{name}",
                get(get_namespace)
                    .put(replace_namespace)
                    .delete(delete_namespace)
                    .patch(patch_namespace),
            )
            .route(
                "/api/v1/namespaces/{ns}/{resource}",
                get(list_core_in).post(create_core),
            )
            .route(
                "/api/v1/namespaces/{ns}/{resource}/{name}",
                resource.clone(),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route("/api/v1/{resource}", get(list_core_all))
            .route(
                "/apis/apps/v1/namespaces/{ns}/{resource}",
                get(list_apps_in).post(create_apps),
            )
            .route("/apis/apps/v1/namespaces/{ns}/{resource}/{name}", resource)
            .route(
                "/apis/apps/v1/namespaces/{ns}/{resource}/{name}/{sub}",
                get(get_sub).put(put_sub).patch(patch_sub).post(post_sub),
            )
            .route("/apis/apps/v1/{resource}", get(list_apps_all))
            .route(
                "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
                get(metrics_in),
            )
            .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics_all))
            .route("/apis/berth.dev/v1/apply", post(apply))
            .fallback(|| async { ApiError::no_resource() })
            .method_not_allowed_fallback(|method: axum::http::Method| async move {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!(
                        "the server does not allow this method on the requested resource ({method})"
                    ),
                )
            })
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::new(self))
    }
}

// ---- paths to kinds ----

fn core_kind(resource: &str) -> Result<Kind, ApiError> {
    match resource {
        "pods" => Ok(Kind::Pod),
        _ => Err(ApiError::no_resource()),
    }
}

fn apps_kind(resource: &str) -> Result<Kind, ApiError> {
    match resource {
        "deployments" => Ok(Kind::Deployment),
        "replicasets" => Ok(Kind::ReplicaSet),
        _ => Err(ApiError::no_resource()),
    }
}

/// Which group a path was under, to map `{resource}` to a kind.
fn kind_for(uri_path: &str, resource: &str) -> Result<Kind, ApiError> {
    if uri_path.starts_with("/apis/apps/v1/") {
        apps_kind(resource)
    } else {
        core_kind(resource)
    }
}

// ---- shared helpers ----

/// A query string, refused as a `Status` when it cannot be read.
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                ApiError::bad_request(format!("query string: {}", rejection.body_text()))
            })
    }
}

/// Runs store work off the async workers (redb writes fsync).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::internal(format!("request handler failed: {error}")))?
}

fn object_response(code: StatusCode, object: &Object, warnings: &[String]) -> Response {
    let mut response = json_response(code, &object.to_json());
    add_warnings(response.headers_mut(), warnings);
    response
}

/// Warnings as the API server sends them: `Warning: 299 - "text"`.
fn add_warnings(headers: &mut HeaderMap, warnings: &[String]) {
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, value);
        }
    }
}

fn body_text(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<String, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "RequestEntityTooLarge"
            } else {
                "BadRequest"
            },
            format!(
                "request body: {} (at most {} MiB)",
                rejection.body_text(),
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        )
    })?;
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("request body: not UTF-8 text"))
}

/// One object of `kind` from a request body, validated, with warnings.
fn one_object(text: &str, kind: Kind) -> Result<(Object, Vec<String>), ApiError> {
    let mut manifests = manifest::parse(text, "request body")?;
    if manifests.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "request body: expected one {kind}, found {} objects",
            manifests.len()
        )));
    }
    let manifest = manifests.remove(0);
    if manifest.object.kind() != kind {
        return Err(ApiError::bad_request(format!(
            "request body: a {} sent to the {} endpoint",
            manifest.object.kind(),
            kind.plural()
        )));
    }
    Ok((manifest.object, manifest.warnings))
}

/// Puts the path's namespace on the object; refuses a different one.
fn place(object: &mut Object, namespace: &str) -> Result<(), ApiError> {
    if !object.kind().namespaced() {
        return Ok(());
    }
    match object.metadata().namespace.as_deref() {
        Some(given) if given != namespace => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({given:?}) does not match the namespace sent on the request ({namespace:?})"
        ))),
        _ => {
            object.metadata_mut().namespace = Some(namespace.to_owned());
            Ok(())
        }
    }
}

fn check_name(object: &Object, name: &str) -> Result<(), ApiError> {
    if object.name() != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({:?}) does not match the name on the URL ({name:?})",
            object.name()
        )));
    }
    Ok(())
}

/// The `default` namespace exists even when nobody stored it.
fn default_namespace() -> Object {
    Object::Namespace(k8s_openapi::api::core::v1::Namespace {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("default".to_owned()),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// A namespace as shown: `status.phase` is `Active` when unset.
fn shown(object: Object) -> Object {
    match object {
        Object::Namespace(mut namespace) => {
            let status = namespace.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Active".to_owned());
            Object::Namespace(namespace)
        }
        other => other,
    }
}

// ---- list and watch ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
    field_selector: Option<String>,
    watch: Option<String>,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
}

struct Filter {
    kind: Kind,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(kind: Kind, namespace: Option<String>, query: &ListQuery) -> Result<Filter, ApiError> {
        Ok(Filter {
            kind,
            namespace,
            labels: LabelSelector::parse(query.label_selector.as_deref().unwrap_or(""))
                .map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(query.field_selector.as_deref().unwrap_or(""))
                .map_err(ApiError::bad_request)?,
        })
    }

    fn matches(&self, object: &Object) -> bool {
        object.kind() == self.kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| !self.kind.namespaced() || object.namespace() == ns)
            && self.labels.matches(object.metadata().labels.as_ref())
            // Serializing the object is the costly part: only when asked.
            && (self.fields.is_empty() || self.fields.matches(&object.to_json()))
    }
}

fn is_true(flag: Option<&str>) -> bool {
    matches!(flag, Some("true" | "1"))
}

async fn list(
    api: Shared,
    kind: Kind,
    namespace: Option<String>,
    query: ListQuery,
    headers: &HeaderMap,
) -> ApiResult {
    let filter = Filter::new(kind, namespace.clone(), &query)?;
    let table = wants_table(headers);
    if is_true(query.watch.as_deref()) {
        return watch_stream(api, filter, &query, table).await;
    }
    let store = Arc::clone(&api.store);
    let (mut objects, version) =
        blocking(move || Ok(store.list(kind, namespace.as_deref())?)).await?;
    if kind == Kind::Namespace && !objects.iter().any(|o| o.name() == "default") {
        objects.insert(0, default_namespace());
        objects.sort_by(|a, b| a.name().cmp(b.name()));
    }
    let objects: Vec<Object> = objects
        .into_iter()
        .map(shown)
        .filter(|o| filter.matches(o))
        .collect();
    if table {
        return Ok(json_response(
            StatusCode::OK,
            &table_of(&objects, kind, Some(version)),
        ));
    }
    let items: Vec<serde_json::Value> = objects.iter().map(Object::to_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.name()),
            "metadata": {"resourceVersion": version.to_string()},
            "items": items,
        }),
    ))
}

/// Whether the client asked for a `meta.k8s.io/v1 Table` (kubectl does,
/// to print the server's columns).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("as=Table"))
}

/// Objects as a `meta.k8s.io/v1 Table`: kubectl's columns (the `-o wide`
/// ones at priority 1) and each object's metadata.
fn table_of(objects: &[Object], kind: Kind, version: Option<u64>) -> serde_json::Value {
    let narrow = columns::header(kind, false).len();
    let definitions: Vec<serde_json::Value> = columns::header(kind, true)
        .into_iter()
        .enumerate()
        .map(|(index, name)| {
            serde_json::json!({
                "name": name,
                "type": "string",
                "format": if index == 0 { "name" } else { "" },
                "description": "",
                "priority": i32::from(index >= narrow),
            })
        })
        .collect();
    let rows: Vec<serde_json::Value> = objects
        .iter()
        .map(|object| {
            serde_json::json!({
                "cells": columns::cells(object, true),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.to_json()["metadata"],
                },
            })
        })
        .collect();
    serde_json::json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": version.map(|v| v.to_string()).unwrap_or_default()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn watch_line(kind: &str, object: &serde_json::Value) -> Bytes {
    let mut line = serde_json::json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired_line(message: &str) -> Bytes {
    watch_line(
        "ERROR",
        &ApiError::new(StatusCode::GONE, "Expired", message).to_json(),
    )
}

/// A newline-delimited stream of `{"type":..,"object":..}`: the current
/// objects as ADDED (no `resourceVersion` given, or 0), or the changes
/// after the given version; then changes as they happen.
async fn watch_stream(api: Shared, filter: Filter, query: &ListQuery, table: bool) -> ApiResult {
    let kind = filter.kind;
    let render = move |object: &Object| {
        if table {
            table_of(std::slice::from_ref(object), kind, None)
        } else {
            object.to_json()
        }
    };
    let requested: Option<u64> = match query.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion {text:?} is not a number"))
        })?),
    };
    let limit = query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let (initial, mut live, after) = match requested {
        None => {
            let live = api.cache.subscribe();
            let store = Arc::clone(&api.store);
            let kind = filter.kind;
            let namespace = filter.namespace.clone();
            let (objects, version) =
                blocking(move || Ok(store.list(kind, namespace.as_deref())?)).await?;
            let lines: Vec<Bytes> = objects
                .into_iter()
                .filter(|o| filter.matches(o))
                .map(|o| watch_line("ADDED", &render(&o)))
                .collect();
            (lines, live, version)
        }
        Some(version) => match api.cache.resume(version) {
            Start::Expired => {
                let message = format!("too old resource version: {version}");
                (
                    vec![expired_line(&message)],
                    broadcast::channel(1).1,
                    u64::MAX,
                )
            }
            Start::Resume(kept, live) => {
                let lines = kept
                    .iter()
                    .filter(|c| filter.matches(&c.event.object))
                    .map(|c| watch_line(c.event.kind.as_str(), &render(&c.event.object)))
                    .collect();
                (lines, live, version)
            }
        },
    };
    let mut shutdown = api.shutdown.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if after == u64::MAX {
            return;
        }
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            let change = tokio::select! {
                change = live.recv() => change,
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
                _ = &mut deadline => return,
            };
            let (line, end) = match change {
                Ok(change) if change.version > after && filter.matches(&change.event.object) => (
                    watch_line(change.event.kind.as_str(), &render(&change.event.object)),
                    false,
                ),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    (expired_line("the watch fell behind; list again"), true)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(line).await.is_err() || end {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn list_namespaces(
    State(api): State<Shared>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    list(api, Kind::Namespace, None, query, &headers).await
}

async fn list_core_in(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path((ns, resource)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    if resource == "events" {
        return events(api, Some(ns), query);
    }
    list(api, core_kind(&resource)?, Some(ns), query, &headers).await
}

async fn list_core_all(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path(resource): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    if resource == "events" {
        return events(api, None, query);
    }
    list(api, core_kind(&resource)?, None, query, &headers).await
}

async fn list_apps_in(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path((ns, resource)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    list(api, apps_kind(&resource)?, Some(ns), query, &headers).await
}

async fn list_apps_all(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path(resource): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    list(api, apps_kind(&resource)?, None, query, &headers).await
}

// ---- events ----

fn events(api: Shared, namespace: Option<String>, query: ListQuery) -> ApiResult {
    if is_true(query.watch.as_deref()) {
        return Err(ApiError::bad_request(
            "watching events is not supported: list them",
        ));
    }
    let fields = FieldSelector::parse(query.field_selector.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let items: Vec<serde_json::Value> = api
        .store
        .events()
        .list(namespace.as_deref(), None)
        .into_iter()
        .filter(|e| labels.matches(e.metadata.labels.as_ref()))
        .filter_map(|event| serde_json::to_value(event).ok())
        .filter(|value| fields.matches(value))
        .map(|mut value| {
            value["apiVersion"] = "v1".into();
            value["kind"] = "Event".into();
            value
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "EventList",
            "metadata": {"resourceVersion": api.store.resource_version().unwrap_or(0).to_string()},
            "items": items,
        }),
    ))
}

// ---- one object ----

async fn get_namespace(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let store = Arc::clone(&api.store);
    let found = blocking(move || match store.get(Kind::Namespace, "", &name) {
        Err(berth_scheduler::StoreError::NotFound { .. }) if name == "default" => {
            Ok(default_namespace())
        }
        other => Ok(other?),
    })
    .await?;
    let found = shown(found);
    if wants_table(&headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table_of(&[found], Kind::Namespace, None),
        ));
    }
    Ok(object_response(StatusCode::OK, &found, &[]))
}

async fn get_object(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> ApiResult {
    let kind = kind_for(uri.path(), &resource)?;
    let store = Arc::clone(&api.store);
    let found = blocking(move || Ok(store.get(kind, &ns, &name)?)).await?;
    if wants_table(&headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table_of(&[found], kind, None),
        ));
    }
    Ok(object_response(StatusCode::OK, &found, &[]))
}

async fn create_namespace(
    State(api): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let (object, warnings) = one_object(&body_text(body)?, Kind::Namespace)?;
    create(api, object, warnings).await
}

async fn create_core(
    State(api): State<Shared>,
    Path((ns, resource)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = core_kind(&resource)?;
    let (mut object, warnings) = one_object(&body_text(body)?, kind)?;
    place(&mut object, &ns)?;
    create(api, object, warnings).await
}

async fn create_apps(
    State(api): State<Shared>,
    Path((ns, resource)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = apps_kind(&resource)?;
    let (mut object, warnings) = one_object(&body_text(body)?, kind)?;
    place(&mut object, &ns)?;
    create(api, object, warnings).await
}

async fn create(api: Shared, object: Object, warnings: Vec<String>) -> ApiResult {
    let store = Arc::clone(&api.store);
    let created = blocking(move || Ok(store.create(object)?)).await?;
    Ok(object_response(
        StatusCode::CREATED,
        &shown(created),
        &warnings,
    ))
}

async fn replace_namespace(
    State(api): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let (object, warnings) = one_object(&body_text(body)?, Kind::Namespace)?;
    check_name(&object, &name)?;
    replace(api, object, warnings).await
}

async fn replace_object(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    Path((ns, resource, name)): Path<(String, String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = kind_for(uri.path(), &resource)?;
    let (mut object, warnings) = one_object(&body_text(body)?, kind)?;
    place(&mut object, &ns)?;
    check_name(&object, &name)?;
    replace(api, object, warnings).await
}

/// A PUT: the object's metadata and spec replace the stored ones (its
/// `resourceVersion`, when given, must be the stored one); `status` is the
/// controllers' and is kept.
async fn replace(api: Shared, object: Object, warnings: Vec<String>) -> ApiResult {
    let store = Arc::clone(&api.store);
    let replaced = blocking(move || {
        let current = store.get(object.kind(), object.namespace(), object.name())?;
        let mut next = object.to_json();
        if let Some(status) = current.to_json().get("status") {
            next["status"] = status.clone();
        } else if let Some(map) = next.as_object_mut() {
            map.remove("status");
        }
        let next = Object::from_json(object.kind(), next)
            .map_err(|error| ApiError::internal(error.to_string()))?;
        Ok(store.replace(next)?)
    })
    .await?;
    Ok(object_response(StatusCode::OK, &shown(replaced), &warnings))
}

async fn delete_namespace(State(api): State<Shared>, Path(name): Path<String>) -> ApiResult {
    if name == "default" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "namespaces \"default\" is forbidden: this namespace may not be deleted",
        ));
    }
    let store = Arc::clone(&api.store);
    let deleted = blocking(move || {
        let namespace = store.get(Kind::Namespace, "", &name)?;
        // What lives in the namespace goes with it, owners first so that
        // controllers do not re-create what is being removed.
        for kind in [Kind::Deployment, Kind::ReplicaSet, Kind::Pod] {
            for object in store.list(kind, Some(&name))?.0 {
                match store.delete(kind, &name, object.name()) {
                    Ok(_) | Err(berth_scheduler::StoreError::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        store.delete(Kind::Namespace, "", &name)?;
        Ok(namespace)
    })
    .await?;
    Ok(object_response(StatusCode::OK, &shown(deleted), &[]))
}

async fn delete_object(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> ApiResult {
    let kind = kind_for(uri.path(), &resource)?;
    let store = Arc::clone(&api.store);
    let deleted = blocking(move || Ok(store.delete(kind, &ns, &name)?)).await?;
    Ok(object_response(StatusCode::OK, &deleted, &[]))
}

// ---- patch ----

/// A PATCH body: its format (by `Content-Type`) and the patch.
fn patch_body(
    headers: &HeaderMap,
    text: &str,
) -> Result<(patch::Format, serde_json::Value), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/merge-patch+json");
    let format = patch::Format::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}): accepted are application/merge-patch+json, application/strategic-merge-patch+json and application/json-patch+json"
            ),
        )
    })?;
    let body: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| ApiError::bad_request(format!("request body: not JSON: {error}")))?;
    let shape_ok = match format {
        patch::Format::Json => body.is_array(),
        patch::Format::Merge | patch::Format::Strategic => body.is_object(),
    };
    if !shape_ok {
        return Err(ApiError::bad_request(
            "request body: a JSON patch is a list of operations; a merge patch is an object",
        ));
    }
    Ok((format, body))
}

/// Whether a patch names the `resourceVersion` it was made against.
fn pins_version(format: patch::Format, body: &serde_json::Value) -> bool {
    match format {
        patch::Format::Json => body
            .as_array()
            .into_iter()
            .flatten()
            .any(|op| op["path"] == "/metadata/resourceVersion"),
        patch::Format::Merge | patch::Format::Strategic => {
            body.pointer("/metadata/resourceVersion").is_some()
        }
    }
}

fn patch_failed(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("the patch cannot be applied: {message}"),
    )
}

/// How many times a patch is retried when a controller wrote in between.
const PATCH_ATTEMPTS: usize = 8;

async fn patch(
    api: Shared,
    kind: Kind,
    namespace: String,
    name: String,
    (format, body): (patch::Format, serde_json::Value),
) -> ApiResult {
    let pinned = pins_version(format, &body);
    let store = Arc::clone(&api.store);
    let (patched, warnings) = blocking(move || {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = store.get(kind, &namespace, &name)?;
            let current_json = current.to_json();
            let mut value = current_json.clone();
            patch::apply(format, &mut value, &body).map_err(patch_failed)?;
            // `status` is the controllers': a patch of the object leaves it.
            match current_json.get("status") {
                Some(status) => value["status"] = status.clone(),
                None => {
                    if let Some(map) = value.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            let (object, warnings) = one_object(&value.to_string(), kind)?;
            check_name(&object, &name)?;
            match store.replace(object) {
                Ok(stored) => return Ok((stored, warnings)),
                Err(berth_scheduler::StoreError::Conflict { .. })
                    if !pinned && attempt < PATCH_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
    })
    .await?;
    Ok(object_response(StatusCode::OK, &shown(patched), &warnings))
}

async fn patch_namespace(
    State(api): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let body = patch_body(&headers, &body_text(body)?)?;
    patch(api, Kind::Namespace, String::new(), name, body).await
}

async fn patch_object(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = kind_for(uri.path(), &resource)?;
    let body = patch_body(&headers, &body_text(body)?)?;
    patch(api, kind, ns, name, body).await
}

// ---- scale and rollback ----

fn scale_of(object: &Object) -> serde_json::Value {
    let (replicas, current, selector) = match object {
        Object::Deployment(d) => (
            d.spec.replicas.unwrap_or(1),
            d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            d.spec.selector.match_labels.clone(),
        ),
        Object::ReplicaSet(r) => (
            r.spec.replicas.unwrap_or(1),
            r.status.as_ref().map(|s| s.replicas).unwrap_or(0),
            r.spec.selector.match_labels.clone(),
        ),
        _ => (0, 0, None),
    };
    let selector: Vec<String> = selector
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let meta = object.metadata();
    serde_json::json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "creationTimestamp": meta.creation_timestamp,
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": current, "selector": selector.join(",")},
    })
}

fn sub_kind(uri: &axum::http::Uri, resource: &str, sub: &str) -> Result<Kind, ApiError> {
    let kind = kind_for(uri.path(), resource)?;
    match (kind, sub) {
        (Kind::Deployment | Kind::ReplicaSet, "scale") => Ok(kind),
        (Kind::Deployment, "rollback") => Ok(kind),
        _ => Err(ApiError::no_resource()),
    }
}

async fn get_sub(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    Path((ns, resource, name, sub)): Path<(String, String, String, String)>,
) -> ApiResult {
    let kind = sub_kind(&uri, &resource, &sub)?;
    if sub != "scale" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "rollback accepts POST only",
        ));
    }
    let store = Arc::clone(&api.store);
    let found = blocking(move || Ok(store.get(kind, &ns, &name)?)).await?;
    Ok(json_response(StatusCode::OK, &scale_of(&found)))
}

/// `spec.replicas` of a Scale, checked.
fn replicas_of(scale: &serde_json::Value) -> Result<i32, ApiError> {
    let invalid = |message: String| ApiError {
        code: StatusCode::UNPROCESSABLE_ENTITY,
        reason: "Invalid",
        message: format!("spec.replicas: Invalid value: {message}"),
        field: Some("spec.replicas".to_owned()),
    };
    let value = scale
        .pointer("/spec/replicas")
        .ok_or_else(|| invalid("required".to_owned()))?;
    let replicas = value
        .as_i64()
        .ok_or_else(|| invalid(format!("{value}: must be a whole number")))?;
    i32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| invalid(format!("{replicas}: must be greater than or equal to 0")))
}

async fn set_replicas(
    api: Shared,
    kind: Kind,
    namespace: String,
    name: String,
    replicas: i32,
    version: Option<String>,
) -> ApiResult {
    let store = Arc::clone(&api.store);
    let scaled = blocking(move || {
        for attempt in 1.. {
            let mut object = store.get(kind, &namespace, &name)?;
            if let Some(version) = &version {
                object.metadata_mut().resource_version = Some(version.clone());
            }
            match &mut object {
                Object::Deployment(d) => d.spec.replicas = Some(replicas),
                Object::ReplicaSet(r) => r.spec.replicas = Some(replicas),
                _ => return Err(ApiError::no_resource()),
            }
            match store.replace(object) {
                Ok(stored) => return Ok(stored),
                Err(berth_scheduler::StoreError::Conflict { .. })
                    if version.is_none() && attempt < PATCH_ATTEMPTS => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(ApiError::internal("unreachable"))
    })
    .await?;
    Ok(json_response(StatusCode::OK, &scale_of(&scaled)))
}

fn json_body(text: &str) -> Result<serde_json::Value, ApiError> {
    // YAML is a superset of JSON: accept either, as the API server does.
    let yaml: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|error| ApiError::bad_request(format!("request body: {error}")))?;
    serde_json::to_value(yaml)
        .map_err(|error| ApiError::bad_request(format!("request body: {error}")))
}

async fn put_sub(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    Path((ns, resource, name, sub)): Path<(String, String, String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = sub_kind(&uri, &resource, &sub)?;
    if sub != "scale" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "rollback accepts POST only",
        ));
    }
    let scale = json_body(&body_text(body)?)?;
    let replicas = replicas_of(&scale)?;
    let version = scale
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    set_replicas(api, kind, ns, name, replicas, version).await
}

async fn patch_sub(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Path((ns, resource, name, sub)): Path<(String, String, String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let kind = sub_kind(&uri, &resource, &sub)?;
    if sub != "scale" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "rollback accepts POST only",
        ));
    }
    let patch = patch_body(&headers, &body_text(body)?)?;
    let store = Arc::clone(&api.store);
    let (lookup_ns, lookup_name) = (ns.clone(), name.clone());
    let current = blocking(move || Ok(store.get(kind, &lookup_ns, &lookup_name)?)).await?;
    let mut scale = scale_of(&current);
    let (format, body) = patch;
    patch::apply(format, &mut scale, &body).map_err(patch_failed)?;
    let replicas = replicas_of(&scale)?;
    let version = pins_version(format, &body)
        .then(|| {
            scale
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .flatten();
    set_replicas(api, kind, ns, name, replicas, version).await
}

async fn post_sub(
    State(api): State<Shared>,
    uri: axum::http::Uri,
    Path((ns, resource, name, sub)): Path<(String, String, String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    sub_kind(&uri, &resource, &sub)?;
    if sub != "rollback" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "scale accepts GET, PUT and PATCH",
        ));
    }
    let text = body_text(body)?;
    let request = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        json_body(&text)?
    };
    let revision = match request.pointer("/rollbackTo/revision") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match value.as_i64() {
            Some(0) => None,
            Some(revision) if revision > 0 => Some(revision),
            _ => {
                return Err(ApiError {
                    code: StatusCode::UNPROCESSABLE_ENTITY,
                    reason: "Invalid",
                    message: format!(
                        "rollbackTo.revision: Invalid value: {value}: must be a positive whole number"
                    ),
                    field: Some("rollbackTo.revision".to_owned()),
                });
            }
        },
    };
    let store = Arc::clone(&api.store);
    let (lookup_ns, lookup_name) = (ns.clone(), name.clone());
    let revision = blocking(move || {
        store.get(Kind::Deployment, &lookup_ns, &lookup_name)?;
        controller::rollback(&store, &lookup_ns, &lookup_name, revision).map_err(
            |error| match error {
                controller::RollbackError::Store(error) => error.into(),
                controller::RollbackError::NoRevision(message) => ApiError::bad_request(message),
            },
        )
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "message": format!("deployment.apps/{name} rolled back to revision {revision}"),
            "details": {"name": name, "group": "apps", "kind": "deployments"},
            "code": 200,
        }),
    ))
}

// ---- apply ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyQuery {
    namespace: Option<String>,
}

/// Applies every object of the body (YAML or JSON; one object, several
/// documents or a `v1 List`) in one transaction: all or nothing.
async fn apply(
    State(api): State<Shared>,
    ApiQuery(query): ApiQuery<ApplyQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let text = body_text(body)?;
    let manifests = manifest::parse(&text, "request body")?;
    let mut warnings = Vec::new();
    let mut objects = Vec::new();
    for mut manifest in manifests {
        if let Some(namespace) = &query.namespace
            && manifest.object.kind().namespaced()
        {
            place(&mut manifest.object, namespace)?;
        }
        warnings.extend(
            manifest
                .warnings
                .iter()
                .map(|w| format!("{}: {w}", manifest.object.reference())),
        );
        objects.push(manifest.object);
    }
    // Namespaces before what lives in them, whatever the order given.
    objects.sort_by_key(|o| o.kind() != Kind::Namespace);
    let store = Arc::clone(&api.store);
    let applied = blocking(move || Ok(store.apply(objects)?)).await?;
    let results: Vec<serde_json::Value> = applied
        .iter()
        .map(|(object, outcome)| {
            serde_json::json!({
                "reference": object.reference(),
                "result": outcome.to_string(),
                "object": object.to_json(),
            })
        })
        .collect();
    let mut response = json_response(
        StatusCode::OK,
        &serde_json::json!({
            "apiVersion": "berth.dev/v1",
            "kind": "ApplyResult",
            "results": results,
            "warnings": warnings,
        }),
    );
    add_warnings(response.headers_mut(), &warnings);
    Ok(response)
}

// ---- logs ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    container: Option<String>,
    follow: Option<String>,
    previous: Option<String>,
    tail_lines: Option<usize>,
}

fn logs_error(error: LogsError) -> ApiError {
    match error {
        LogsError::PodNotFound { name } => ApiError::not_found(Kind::Pod, &name),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn lines_of(entries: &[berth_container::logs::LogEntry]) -> Bytes {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&entry.line);
        text.push('\n');
    }
    Bytes::from(text)
}

async fn pod_log(
    State(api): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult {
    let follow = is_true(query.follow.as_deref());
    let previous = is_true(query.previous.as_deref());
    let store = Arc::clone(&api.store);
    let kubelet = api.kubelet.clone();
    let (pod_ns, pod_name, container) = (ns.clone(), name.clone(), query.container.clone());
    let (follower, entries) = blocking(move || {
        store.get(Kind::Pod, &pod_ns, &pod_name)?;
        let dir = kubelet
            .log_path(&pod_ns, &pod_name, container.as_deref(), previous)
            .map_err(logs_error)?;
        berth_container::logs::LogFollower::open(&dir)
            .map_err(|error| ApiError::internal(format!("cannot read the log: {error}")))
    })
    .await?;
    let skip = entries
        .len()
        .saturating_sub(query.tail_lines.unwrap_or(usize::MAX));
    let first = lines_of(&entries[skip..]);
    if !follow || previous {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], first).into_response());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = api.shutdown.clone();
    let store = Arc::clone(&api.store);
    tokio::spawn(async move {
        let mut follower = follower;
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_POLL) => {}
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
            let (store, pod_ns, pod_name) = (Arc::clone(&store), ns.clone(), name.clone());
            let polled = tokio::task::spawn_blocking(move || {
                let entries = follower.poll();
                // The stream ends with the pod, or when it has finished.
                let live = match store.get(Kind::Pod, &pod_ns, &pod_name) {
                    Ok(Object::Pod(pod)) => controller::pod_is_active(&pod),
                    _ => false,
                };
                (follower, entries, live)
            })
            .await;
            let Ok((back, entries, live)) = polled else {
                return;
            };
            follower = back;
            let entries = entries.unwrap_or_default();
            if !entries.is_empty() && tx.send(lines_of(&entries)).await.is_err() {
                return;
            }
            if !live {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

// ---- metrics ----

async fn metrics_in(State(api): State<Shared>, Path(ns): Path<String>) -> ApiResult {
    metrics(api, Some(ns)).await
}

async fn metrics_all(State(api): State<Shared>) -> ApiResult {
    metrics(api, None).await
}

/// PodMetrics: memory now, and CPU as the rate over a short window.
async fn metrics(api: Shared, namespace: Option<String>) -> ApiResult {
    let before = api.kubelet.usage(namespace.as_deref());
    tokio::time::sleep(METRICS_WINDOW).await;
    let after = api.kubelet.usage(namespace.as_deref());
    let timestamp = berth_scheduler::store::now();
    let window = format!("{}ms", METRICS_WINDOW.as_millis());
    let items: Vec<serde_json::Value> = after
        .iter()
        .map(|pod| {
            let earlier = before
                .iter()
                .find(|p| p.namespace == pod.namespace && p.name == pod.name);
            let containers: Vec<serde_json::Value> = pod
                .containers
                .iter()
                .map(|c| {
                    let used_before = earlier
                        .and_then(|p| p.containers.iter().find(|b| b.name == c.name))
                        .map(|b| b.cpu_time)
                        .unwrap_or(c.cpu_time);
                    let nanos = c.cpu_time.saturating_sub(used_before).as_nanos() * 1_000_000_000
                        / METRICS_WINDOW.as_nanos().max(1);
                    serde_json::json!({
                        "name": c.name,
                        "usage": {
                            "cpu": format!("{nanos}n"),
                            "memory": format!("{}Ki", c.memory_bytes.div_ceil(1024)),
                        },
                    })
                })
                .collect();
            serde_json::json!({
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "timestamp": timestamp,
                "window": window,
                "containers": containers,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "PodMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        }),
    ))
}

// ---- version ----

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "major": "1",
            "minor": "34",
            "gitVersion": format!("v1.34.0+berth-{}", env!("CARGO_PKG_VERSION")),
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_replicas_are_checked() {
        assert_eq!(
            replicas_of(&serde_json::json!({"spec": {"replicas": 3}})).expect("3"),
            3
        );
        let error = replicas_of(&serde_json::json!({"spec": {"replicas": -1}})).expect_err("-1");
        assert_eq!(error.field.as_deref(), Some("spec.replicas"));
        assert!(replicas_of(&serde_json::json!({"spec": {"replicas": "x"}})).is_err());
    }
}
