//! Controllers: level-based reconcile loops that move observed state toward
//! desired state, as kube-controller-manager's do.
//!
//! - ReplicaSet: keeps `spec.replicas` pods that match its template, owned by
//!   it, and reports how many are ready.
//! - Deployment: keeps one ReplicaSet per pod template (named by the
//!   template's hash, its revision in an annotation), and moves replicas from
//!   old to new within `maxSurge` / `maxUnavailable`, or all at once for
//!   `Recreate`. A new template whose pods never become ready stalls the
//!   rollout and leaves the old pods serving.
//! - Garbage collection: objects whose controlling owner is gone are
//!   deleted (a deleted Deployment takes its ReplicaSets and their pods).
//!
//! Every reconcile reads what is stored and writes only differences, so
//! running one twice, or after a crash mid-way, converges to the same state.
//! [`run`] drives them from the store's watch stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::events::EventType;
use crate::object::{Kind, Object};
use crate::store::{self, EventKind, Store, StoreError, WatchEvent};

/// The component named in the deployment controller's events.
const DEPLOYMENT_CONTROLLER: &str = "deployment-controller";
/// The component named in the ReplicaSet controller's events.
const REPLICA_SET_CONTROLLER: &str = "replicaset-controller";

/// The ReplicaSet annotation that holds a Deployment revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The label that ties a ReplicaSet and its pods to one pod template.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// How many old ReplicaSets a Deployment keeps when it does not say.
pub const DEFAULT_REVISION_HISTORY: i32 = 10;

/// Kubernetes' alphabet for generated name suffixes (no vowels, no
/// look-alikes), so generated names never spell words.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn encode_suffix(mut value: u64, length: usize) -> String {
    let base = SUFFIX_ALPHABET.len() as u64;
    (0..length)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(value % base) as usize] as char;
            value /= base;
            c
        })
        .collect()
}

/// A random 5-character pod name suffix.
fn random_suffix() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[..8]);
    encode_suffix(u64::from_le_bytes(value), 5)
}

/// The stable hash of a pod template that names its ReplicaSet (FNV-1a over
/// the template's JSON, in the suffix alphabet, as Kubernetes does).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in json {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    encode_suffix(u64::from(hash), 10)
}

/// An owner reference that makes `owner` the controller of what carries it.
fn controller_ref(owner: &Object) -> OwnerReference {
    OwnerReference {
        api_version: owner.kind().api_version().to_owned(),
        kind: owner.kind().name().to_owned(),
        name: owner.name().to_owned(),
        uid: owner.metadata().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controlling owner of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

fn controlled_by(meta: &ObjectMeta, owner: &ObjectMeta) -> bool {
    controller_of(meta).is_some_and(|r| Some(&r.uid) == owner.uid.as_ref())
}

/// Whether `labels` carry every label of `selector`.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let wanted = selector.match_labels.as_ref();
    wanted.is_some_and(|w| !w.is_empty())
        && wanted
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A pod that counts toward its owner's replicas: not finished.
pub fn pod_is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod whose `Ready` condition is true.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn pods_of(store: &Store, set: &ReplicaSet) -> Result<Vec<Pod>, StoreError> {
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    let (pods, _) = store.list(Kind::Pod, Some(namespace))?;
    Ok(pods
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(pod) if controlled_by(&pod.metadata, &set.metadata) => Some(pod),
            _ => None,
        })
        .collect())
}

/// Makes the ReplicaSet's pods number `spec.replicas`, and reports them in
/// its status. A missing ReplicaSet is not an error (it was deleted).
pub fn reconcile_replica_set(store: &Store, namespace: &str, name: &str) -> Result<(), StoreError> {
    let set = match store.get(Kind::ReplicaSet, namespace, name) {
        Ok(Object::ReplicaSet(set)) => set,
        Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    let want = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
    let all = pods_of(store, &set)?;
    let taken: BTreeSet<String> = all.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let mut pods: Vec<Pod> = all.into_iter().filter(pod_is_active).collect();
    if pods.len() < want {
        let owner = Object::ReplicaSet(set.clone());
        for pod in create_pods(store, &owner, &set, want - pods.len(), &taken)? {
            store.events().record(
                &owner,
                EventType::Normal,
                REPLICA_SET_CONTROLLER,
                "SuccessfulCreate",
                &format!(
                    "Created pod: {}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
            );
            pods.push(pod);
        }
    } else if pods.len() > want {
        // Remove the least useful first: not ready before ready, newest
        // before oldest (as the ReplicaSet controller ranks them).
        pods.sort_by_key(|pod| {
            (
                pod_is_ready(pod),
                std::cmp::Reverse(
                    pod.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                ),
            )
        });
        let owner = Object::ReplicaSet(set.clone());
        for pod in pods.drain(..pods.len() - want) {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            delete_if_present(store, Kind::Pod, namespace, name)?;
            store.events().record(
                &owner,
                EventType::Normal,
                REPLICA_SET_CONTROLLER,
                "SuccessfulDelete",
                &format!("Deleted pod: {name}"),
            );
        }
    }
    let ready = pods.iter().filter(|p| pod_is_ready(p)).count() as i32;
    let status = ReplicaSetStatus {
        replicas: pods.len() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        fully_labeled_replicas: Some(pods.len() as i32),
        observed_generation: set.metadata.generation,
        ..Default::default()
    };
    if set.status.as_ref() != Some(&status) {
        let mut updated = set;
        updated.status = Some(status);
        write_status(store, Object::ReplicaSet(updated))?;
    }
    Ok(())
}

/// Creates `count` pods from the set's template in one transaction (one
/// durable write however many: a scale to a thousand is one commit). Their
/// random names differ from each other and from `taken` (the set's pods):
/// with thousands of pods, a five-letter suffix drawn blindly would collide
/// within the batch more often than not.
fn create_pods(
    store: &Store,
    owner: &Object,
    set: &ReplicaSet,
    count: usize,
    taken: &BTreeSet<String>,
) -> Result<Vec<Pod>, StoreError> {
    // Names are drawn from 27^5 (14 million): stay far below, so that the
    // draw below always ends quickly.
    if count.saturating_add(taken.len()) > 1_000_000 {
        return Err(StoreError::Database(format!(
            "{} asks for {count} more pods: at most a million per ReplicaSet",
            owner.reference()
        )));
    }
    let template = set.spec.template.clone().unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    for _ in 0..8 {
        let mut names = BTreeSet::new();
        while names.len() < count {
            let name = format!("{}-{}", owner.name(), random_suffix());
            if !taken.contains(&name) {
                names.insert(name);
            }
        }
        let pods = names
            .into_iter()
            .map(|name| {
                Object::Pod(Pod {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: set.metadata.namespace.clone(),
                        labels: template_meta.labels.clone(),
                        annotations: template_meta.annotations.clone(),
                        owner_references: Some(vec![controller_ref(owner)]),
                        ..Default::default()
                    },
                    spec: template.spec.clone(),
                    status: None,
                })
            })
            .collect();
        match store.create_all(pods) {
            Ok(created) => {
                return Ok(created
                    .into_iter()
                    .filter_map(|o| match o {
                        Object::Pod(pod) => Some(pod),
                        _ => None,
                    })
                    .collect());
            }
            // A random name taken (or drawn twice): draw again.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Database(format!(
        "no free pod names for {} after 8 tries",
        owner.reference()
    )))
}

fn delete_if_present(
    store: &Store,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    match store.delete(kind, namespace, name) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes a controller's change; whether it was written. A conflict means
/// someone wrote first, and the watch event of that write will bring the
/// controller back.
fn write_status(store: &Store, object: Object) -> Result<bool, StoreError> {
    match store.replace(object) {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// `maxSurge` or `maxUnavailable` as a count of `replicas`; percentages round
/// up for surge and down for unavailability, as Kubernetes rounds them.
fn resolve_fraction(
    value: Option<&IntOrString>,
    default_percent: i32,
    replicas: i32,
    round_up: bool,
) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(text)) => text
            .strip_suffix('%')
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let scaled = i64::from(replicas) * i64::from(percent);
    let count = if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    };
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// The ReplicaSets a Deployment controls, with their ready pod counts.
fn sets_of(store: &Store, deployment: &Deployment) -> Result<Vec<ReplicaSet>, StoreError> {
    let namespace = deployment
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    let (sets, _) = store.list(Kind::ReplicaSet, Some(namespace))?;
    Ok(sets
        .into_iter()
        .filter_map(|o| match o {
            Object::ReplicaSet(set) if controlled_by(&set.metadata, &deployment.metadata) => {
                Some(set)
            }
            _ => None,
        })
        .collect())
}

fn spec_replicas(set: &ReplicaSet) -> i32 {
    set.spec.replicas.unwrap_or(0)
}

fn ready_replicas(set: &ReplicaSet) -> i32 {
    set.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Sets a ReplicaSet's replicas for `deployment`, and tells it in an event
/// on the Deployment, as the deployment controller does.
fn scale_set(
    store: &Store,
    deployment: &Deployment,
    set: &ReplicaSet,
    replicas: i32,
) -> Result<(), StoreError> {
    let from = spec_replicas(set);
    if from == replicas {
        return Ok(());
    }
    let mut scaled = set.clone();
    scaled.spec.replicas = Some(replicas);
    if write_status(store, Object::ReplicaSet(scaled))? {
        let direction = if replicas > from { "up" } else { "down" };
        store.events().record(
            &Object::Deployment(deployment.clone()),
            EventType::Normal,
            DEPLOYMENT_CONTROLLER,
            "ScalingReplicaSet",
            &format!(
                "Scaled {direction} replica set {} from {from} to {replicas}",
                set.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    }
    Ok(())
}

/// Moves a Deployment toward its template and replica count.
pub fn reconcile_deployment(store: &Store, namespace: &str, name: &str) -> Result<(), StoreError> {
    let deployment = match store.get(Kind::Deployment, namespace, name) {
        Ok(Object::Deployment(deployment)) => deployment,
        Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    let owner = Object::Deployment(deployment.clone());
    let hash = template_hash(&deployment.spec.template);
    let mut sets = sets_of(store, &deployment)?;
    let newest_revision = sets
        .iter()
        .map(|s| revision_of(&s.metadata))
        .max()
        .unwrap_or(0);
    let replicas = deployment.spec.replicas.unwrap_or(1).max(0);
    let position = sets.iter().position(|s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
            == Some(&hash)
    });
    let new_set = match position {
        Some(index) => {
            let set = sets.remove(index);
            // Rolling back to an old template makes its set the newest revision.
            if revision_of(&set.metadata) < newest_revision {
                let mut bumped = set.clone();
                bumped
                    .metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(
                        REVISION_ANNOTATION.to_owned(),
                        (newest_revision + 1).to_string(),
                    );
                write_status(store, Object::ReplicaSet(bumped))?;
                return Ok(());
            }
            set
        }
        None => {
            let recreate = is_recreate(&deployment);
            let initial =
                if sets.is_empty() || !recreate && sets.iter().all(|s| spec_replicas(s) == 0) {
                    replicas
                } else {
                    0
                };
            let set = new_replica_set(&deployment, &owner, &hash, newest_revision + 1, initial);
            match store.create(Object::ReplicaSet(set)) {
                Ok(Object::ReplicaSet(created)) => {
                    if initial > 0 {
                        store.events().record(
                            &owner,
                            EventType::Normal,
                            DEPLOYMENT_CONTROLLER,
                            "ScalingReplicaSet",
                            &format!(
                                "Scaled up replica set {} from 0 to {initial}",
                                created.metadata.name.as_deref().unwrap_or_default()
                            ),
                        );
                    }
                    created
                }
                Ok(_) => return Ok(()),
                // Created by an earlier pass whose watch event is on its way.
                Err(StoreError::AlreadyExists { .. }) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    };
    let old_sets = sets;
    if is_recreate(&deployment) {
        let old_running = old_sets
            .iter()
            .any(|s| spec_replicas(s) > 0 || s.status.as_ref().is_some_and(|st| st.replicas > 0));
        for old in &old_sets {
            scale_set(store, &deployment, old, 0)?;
        }
        if !old_running {
            scale_set(store, &deployment, &new_set, replicas)?;
        }
    } else {
        roll(store, &deployment, replicas, &new_set, &old_sets)?;
    }
    prune_history(store, &deployment, &old_sets)?;
    report(store, deployment, &new_set, &old_sets, replicas)
}

fn is_recreate(deployment: &Deployment) -> bool {
    deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn new_replica_set(
    deployment: &Deployment,
    owner: &Object,
    hash: &str,
    revision: i64,
    replicas: i32,
) -> ReplicaSet {
    let mut template = deployment.spec.template.clone();
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut selector = deployment.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", owner.name())),
            namespace: deployment.metadata.namespace.clone(),
            labels: template_meta.labels.clone(),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_owned(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector,
            template: Some(template),
            min_ready_seconds: deployment.spec.min_ready_seconds,
        },
        status: None,
    }
}

/// One step of a rolling update: grow the new set within the surge, shrink
/// old sets within the unavailability budget.
fn roll(
    store: &Store,
    deployment: &Deployment,
    replicas: i32,
    new_set: &ReplicaSet,
    old_sets: &[ReplicaSet],
) -> Result<(), StoreError> {
    let rolling = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve_fraction(
        rolling.and_then(|r| r.max_surge.as_ref()),
        25,
        replicas,
        true,
    );
    let mut unavailable = resolve_fraction(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        25,
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let total: i32 = old_sets.iter().map(spec_replicas).sum::<i32>() + spec_replicas(new_set);
    // Scale the new set up within the surge (or down to the replica count).
    let mut new_replicas = spec_replicas(new_set);
    if new_replicas > replicas {
        new_replicas = replicas;
    } else if new_replicas < replicas {
        let room = (replicas + surge - total).max(0);
        new_replicas = replicas.min(new_replicas + room);
    }
    scale_set(store, deployment, new_set, new_replicas)?;
    // Scale old sets down, never below the available minimum.
    let min_available = replicas - unavailable;
    let available: i32 = old_sets.iter().map(ready_replicas).sum::<i32>() + ready_replicas(new_set);
    let new_unavailable = (new_replicas - ready_replicas(new_set)).max(0);
    // Old pods that are not ready serve no one: they go first, as far as the
    // total stays within bounds.
    let mut cleanup = (total - min_available - new_unavailable).max(0);
    let mut budget = (available - min_available).max(0);
    let mut oldest_first: Vec<&ReplicaSet> = old_sets.iter().collect();
    oldest_first.sort_by_key(|s| revision_of(&s.metadata));
    for old in oldest_first {
        let mut target = spec_replicas(old);
        let unhealthy = (target - ready_replicas(old)).max(0).min(cleanup);
        target -= unhealthy;
        cleanup -= unhealthy;
        let cut = target.min(budget);
        target -= cut;
        budget -= cut;
        scale_set(store, deployment, old, target)?;
    }
    Ok(())
}

/// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit`.
fn prune_history(
    store: &Store,
    deployment: &Deployment,
    old_sets: &[ReplicaSet],
) -> Result<(), StoreError> {
    let limit = usize::try_from(
        deployment
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY),
    )
    .unwrap_or(0);
    let mut empty: Vec<&ReplicaSet> = old_sets
        .iter()
        .filter(|s| spec_replicas(s) == 0 && s.status.as_ref().is_none_or(|st| st.replicas == 0))
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    empty.sort_by_key(|s| revision_of(&s.metadata));
    let namespace = deployment
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    for set in &empty[..empty.len() - limit] {
        delete_if_present(
            store,
            Kind::ReplicaSet,
            namespace,
            set.metadata.name.as_deref().unwrap_or(""),
        )?;
    }
    Ok(())
}

fn report(
    store: &Store,
    deployment: Deployment,
    new_set: &ReplicaSet,
    old_sets: &[ReplicaSet],
    replicas: i32,
) -> Result<(), StoreError> {
    let all = || old_sets.iter().chain(std::iter::once(new_set));
    let current: i32 = all()
        .map(|s| s.status.as_ref().map_or(0, |st| st.replicas))
        .sum();
    let ready: i32 = all().map(ready_replicas).sum();
    let updated = new_set.status.as_ref().map_or(0, |st| st.replicas);
    let new_ready = ready_replicas(new_set);
    let complete = updated == replicas && new_ready == replicas && current == replicas;
    let rolling = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let unavailable_allowed = if is_recreate(&deployment) {
        replicas
    } else {
        resolve_fraction(
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            25,
            replicas,
            false,
        )
    };
    let previous = deployment.status.clone().unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let old = previous
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(type_));
        let unchanged = old.is_some_and(|c| {
            c.status.as_deref() == Some(status) && c.reason.as_deref() == Some(reason)
        });
        DeploymentCondition {
            type_: Some(type_.to_owned()),
            status: Some(status.to_owned()),
            reason: Some(reason.to_owned()),
            message: Some(message),
            last_transition_time: if unchanged {
                old.and_then(|c| c.last_transition_time.clone())
            } else {
                Some(store::now())
            },
            last_update_time: if unchanged {
                old.and_then(|c| c.last_update_time.clone())
            } else {
                Some(store::now())
            },
        }
    };
    let new_name = new_set.metadata.name.clone().unwrap_or_default();
    let status = DeploymentStatus {
        replicas: Some(current),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        unavailable_replicas: Some((replicas - ready).max(0)),
        observed_generation: deployment.metadata.generation,
        conditions: Some(vec![
            condition(
                "Available",
                ready >= replicas - unavailable_allowed,
                if ready >= replicas - unavailable_allowed {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                if ready >= replicas - unavailable_allowed {
                    "Deployment has minimum availability.".to_owned()
                } else {
                    "Deployment does not have minimum availability.".to_owned()
                },
            ),
            condition(
                "Progressing",
                true,
                if complete {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                },
                if complete {
                    format!("ReplicaSet {new_name:?} has successfully progressed.")
                } else {
                    format!("ReplicaSet {new_name:?} is progressing.")
                },
            ),
        ]),
        ..Default::default()
    };
    if deployment.status.as_ref() != Some(&status) {
        let mut updated = deployment;
        updated.status = Some(status);
        write_status(store, Object::Deployment(updated))?;
    }
    Ok(())
}

/// Deletes ReplicaSets and pods whose controlling owner no longer exists.
pub fn collect_garbage(store: &Store) -> Result<usize, StoreError> {
    let mut deleted = 0;
    let (deployments, _) = store.list(Kind::Deployment, None)?;
    let (sets, _) = store.list(Kind::ReplicaSet, None)?;
    let live: BTreeSet<String> = deployments
        .iter()
        .chain(&sets)
        .filter_map(|o| o.metadata().uid.clone())
        .collect();
    let (pods, _) = store.list(Kind::Pod, None)?;
    for object in sets.iter().chain(&pods) {
        if let Some(owner) = controller_of(object.metadata())
            && !live.contains(&owner.uid)
        {
            delete_if_present(store, object.kind(), object.namespace(), object.name())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// A Deployment's revisions, oldest first: `(revision, ReplicaSet)`.
pub fn history(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<Vec<(i64, ReplicaSet)>, StoreError> {
    let Object::Deployment(deployment) = store.get(Kind::Deployment, namespace, name)? else {
        return Ok(Vec::new());
    };
    let mut revisions: Vec<(i64, ReplicaSet)> = sets_of(store, &deployment)?
        .into_iter()
        .map(|s| (revision_of(&s.metadata), s))
        .collect();
    revisions.sort_by_key(|(revision, _)| *revision);
    Ok(revisions)
}

/// Why a rollback could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// No such revision, or no previous one.
    #[error("{0}")]
    NoRevision(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rolls a Deployment back to `revision`, or to the one before the newest,
/// by copying that revision's pod template into the Deployment (as
/// `kubectl rollout undo` does). Returns the revision rolled back to.
pub fn rollback(
    store: &Store,
    namespace: &str,
    name: &str,
    revision: Option<i64>,
) -> Result<i64, RollbackError> {
    let Object::Deployment(mut deployment) = store.get(Kind::Deployment, namespace, name)? else {
        return Err(RollbackError::NoRevision(format!(
            "deployment {name:?} not found"
        )));
    };
    let revisions = history(store, namespace, name)?;
    let target = match revision {
        Some(wanted) => revisions.iter().find(|(r, _)| *r == wanted),
        None => revisions.iter().rev().nth(1),
    };
    let Some((number, set)) = target else {
        return Err(RollbackError::NoRevision(match revision {
            Some(wanted) => format!("unable to find the specified revision {wanted}"),
            None => "no rollout history found to roll back to".to_owned(),
        }));
    };
    let mut template = set.spec.template.clone().unwrap_or_default();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    deployment.spec.template = template;
    store.replace(Object::Deployment(deployment))?;
    Ok(*number)
}

/// `kubectl rollout status`'s sentence for a Deployment, and whether the
/// rollout is complete.
pub fn rollout_status(deployment: &Deployment) -> (String, bool) {
    let name = deployment.metadata.name.as_deref().unwrap_or("");
    let replicas = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation < deployment.metadata.generation {
        return (
            "Waiting for deployment spec update to be observed...".to_owned(),
            false,
        );
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < replicas {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {replicas} new replicas have been updated..."
            ),
            false,
        )
    } else if current > updated {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                current - updated
            ),
            false,
        )
    } else if available < updated {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        )
    } else {
        (format!("deployment {name:?} successfully rolled out"), true)
    }
}

/// Reconciles whatever events touch, until the store's watch ends or
/// `shutdown` fires. Starts with a full pass, and makes another whenever the
/// watch lagged (events were dropped).
///
/// Events that arrive while a pass runs are taken together: each object they
/// touch is reconciled once, however many events named it (a thousand pods
/// turning ready make one pass over their ReplicaSet, not a thousand), as
/// client-go's work queue folds repeated keys.
pub async fn run(store: Arc<Store>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut events = store.watch();
    resync(&store);
    loop {
        let mut work = Work::default();
        let first = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.changed() => return,
        };
        match first {
            Ok(event) => work.add(&event),
            Err(RecvError::Lagged(_)) => work.lagged = true,
            Err(RecvError::Closed) => return,
        }
        loop {
            match events.try_recv() {
                Ok(event) => work.add(&event),
                Err(TryRecvError::Lagged(_)) => work.lagged = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let store = Arc::clone(&store);
        // Reconciles write to redb (fsync): off the async workers.
        let _ = tokio::task::spawn_blocking(move || work.run(&store)).await;
    }
}

/// The objects a batch of events asks to reconcile, each once.
#[derive(Debug, Default)]
struct Work {
    replica_sets: BTreeSet<(String, String)>,
    deployments: BTreeSet<(String, String)>,
    deleted: bool,
    lagged: bool,
}

impl Work {
    fn add(&mut self, event: &WatchEvent) {
        let object = &event.object;
        let namespace = object.namespace().to_owned();
        let owner = controller_of(object.metadata()).map(|o| (namespace.clone(), o.name.clone()));
        match object.kind() {
            Kind::Deployment => {
                self.deployments
                    .insert((namespace, object.name().to_owned()));
            }
            Kind::ReplicaSet => {
                self.replica_sets
                    .insert((namespace, object.name().to_owned()));
                self.deployments.extend(owner);
            }
            Kind::Pod => self.replica_sets.extend(owner),
            Kind::Namespace => {}
        }
        if event.kind == EventKind::Deleted {
            self.deleted = true;
        }
    }

    fn run(self, store: &Store) {
        if self.lagged {
            resync(store);
            return;
        }
        let pass = || -> Result<(), StoreError> {
            for (namespace, name) in &self.replica_sets {
                reconcile_replica_set(store, namespace, name)?;
            }
            for (namespace, name) in &self.deployments {
                reconcile_deployment(store, namespace, name)?;
            }
            if self.deleted {
                // What a deleted object owned goes too.
                collect_garbage(store)?;
            }
            Ok(())
        };
        if let Err(error) = pass() {
            tracing::warn!(%error, "reconcile failed");
        }
    }
}

/// Reconciles every Deployment and ReplicaSet, and collects garbage.
pub fn resync(store: &Store) {
    let pass = || -> Result<(), StoreError> {
        collect_garbage(store)?;
        for object in store.list(Kind::Deployment, None)?.0 {
            reconcile_deployment(store, object.namespace(), object.name())?;
        }
        for object in store.list(Kind::ReplicaSet, None)?.0 {
            reconcile_replica_set(store, object.namespace(), object.name())?;
        }
        Ok(())
    };
    if let Err(error) = pass() {
        tracing::warn!(%error, "controller resync failed");
    }
}
