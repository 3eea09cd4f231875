//! The desired-state store: Kubernetes objects in an embedded redb
//! database, written in transactions that are durable when they return, with
//! the API server's bookkeeping (`uid`, `resourceVersion`,
//! `creationTimestamp`, `generation`) and a watch stream of changes.
//!
//! `resourceVersion` is one counter for the whole store, so that a list and a
//! watch agree on order. `generation` counts changes of `spec` only; `status`
//! is written apart from `spec` and never by an apply. A set of objects is
//! applied in one transaction: either every object changes or none does.
//!
//! Pods' `status` is observed state, not desired state: the node agent
//! writes it with [`Store::write_pod_statuses`], whose commits skip the
//! fsync (see there). Everything else is durable when its call returns.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use crate::object::{Kind, Object};

/// Objects by `KIND/NAMESPACE/NAME`, as Kubernetes JSON.
const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
/// Store-wide counters (`resourceVersion`).
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");
const RESOURCE_VERSION: &str = "resourceVersion";

/// How many changes a watcher may lag behind before it must list again.
const WATCH_BUFFER: usize = 4096;

/// Status writes committed without an fsync before one is made durable:
/// redb reuses the pages that non-durable commits free only after a
/// durable one, so this bounds how much the file can grow meanwhile.
const UNSYNCED_STATUS_WRITES: u32 = 256;

/// What went wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of an object that exists.
    #[error("{reference} already exists")]
    AlreadyExists {
        /// `kind/name`.
        reference: String,
    },
    /// The object does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Its kind.
        kind: Kind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A write based on an older `resourceVersion` than the stored one.
    #[error(
        "{reference} was changed by someone else (resourceVersion {expected} is stale, now {actual}): read it again and retry"
    )]
    Conflict {
        /// `kind/name`.
        reference: String,
        /// The version the writer read.
        expected: String,
        /// The version stored.
        actual: String,
    },
    /// A change to a field that may not change once the object exists.
    #[error("{reference}: {field}: field is immutable")]
    Immutable {
        /// `kind/name`.
        reference: String,
        /// The field.
        field: &'static str,
    },
    /// The object's namespace does not exist.
    #[error("namespace {0:?} not found: create it first")]
    NamespaceNotFound(String),
    /// The database failed or holds something unreadable.
    #[error("state database: {0}")]
    Database(String),
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

macro_rules! db {
    ($e:expr) => {
        $e.map_err(|e| StoreError::from(redb::Error::from(e)))
    };
}

/// What an apply did to one object, as kubectl reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and was the same.
    Unchanged,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        })
    }
}

/// A change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: EventKind,
    /// The object after the change (for a deletion, its last state).
    pub object: Object,
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventKind {
    /// The name Kubernetes' watch JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// A pod's observed state, as the node agent writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodStatusUpdate {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid: a pod deleted and created again under the same name
    /// is another pod, whose status this is not.
    pub uid: String,
    /// Its new status.
    pub status: k8s_openapi::api::core::v1::PodStatus,
}

/// The store. Cheap to share behind an `Arc`; writes are serialized by the
/// database.
pub struct Store {
    db: redb::Database,
    events: broadcast::Sender<WatchEvent>,
    recorded: crate::events::Events,
    unsynced: AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.name())
}

fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{}/{namespace}/", kind.name()),
        None => format!("{}/", kind.name()),
    }
}

/// `spec` of an object as JSON, to tell whether it changed.
fn spec_of(object: &Object) -> serde_json::Value {
    object
        .to_json()
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn decode(bytes: &[u8], kind: Kind) -> Result<Object, StoreError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Database(format!("unreadable {kind}: {e}")))?;
    Object::from_json(kind, value)
        .map_err(|e| StoreError::Database(format!("unreadable {kind}: {e}")))
}

fn encode(object: &Object) -> Vec<u8> {
    // Serializing k8s-openapi types to JSON cannot fail (string keys only).
    serde_json::to_vec(&object.to_json()).unwrap_or_default()
}

impl Store {
    /// Opens the store at `path`, creating it if needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        let txn = db!(db.begin_write())?;
        {
            db!(txn.open_table(OBJECTS))?;
            db!(txn.open_table(COUNTERS))?;
        }
        db!(txn.commit())?;
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Ok(Store {
            db,
            events,
            recorded: crate::events::Events::new(),
            unsynced: AtomicU32::new(0),
        })
    }

    /// A stream of every change committed from now on. A receiver that lags
    /// more than a few thousand changes gets `Lagged` and must list again.
    pub fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.events.subscribe()
    }

    /// The recent events (in memory, not in the database: see
    /// [`crate::events`]).
    pub fn events(&self) -> &crate::events::Events {
        &self.recorded
    }

    /// The newest `resourceVersion` (0 for an empty store).
    pub fn resource_version(&self) -> Result<u64, StoreError> {
        let txn = db!(self.db.begin_read())?;
        let counters = db!(txn.open_table(COUNTERS))?;
        Ok(db!(counters.get(RESOURCE_VERSION))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object, StoreError> {
        let txn = db!(self.db.begin_read())?;
        let table = db!(txn.open_table(OBJECTS))?;
        match db!(table.get(key(kind, namespace, name).as_str()))? {
            Some(bytes) => decode(bytes.value(), kind),
            None => Err(StoreError::NotFound {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    /// Every object of `kind`, in one namespace or in all, in name order,
    /// with the `resourceVersion` the list is consistent with.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Object>, u64), StoreError> {
        let txn = db!(self.db.begin_read())?;
        let table = db!(txn.open_table(OBJECTS))?;
        let counters = db!(txn.open_table(COUNTERS))?;
        let version = db!(counters.get(RESOURCE_VERSION))?
            .map(|v| v.value())
            .unwrap_or(0);
        let prefix = kind_prefix(kind, if kind.namespaced() { namespace } else { None });
        let mut objects = Vec::new();
        for entry in db!(table.range(prefix.as_str()..))? {
            let (stored_key, bytes) = db!(entry)?;
            if !stored_key.value().starts_with(&prefix) {
                break;
            }
            objects.push(decode(bytes.value(), kind)?);
        }
        Ok((objects, version))
    }

    /// Creates `object`; refuses one that exists.
    pub fn create(&self, object: Object) -> Result<Object, StoreError> {
        let mut changes = Vec::new();
        let created = self.write(|txn| {
            if exists(txn, &object)? {
                return Err(StoreError::AlreadyExists {
                    reference: object.reference(),
                });
            }
            let (stored, _) = put_desired(txn, object.clone(), &mut changes)?;
            Ok(stored)
        })?;
        self.publish(changes);
        Ok(created)
    }

    /// Creates every object in one transaction; if any exists, none is
    /// created ([`StoreError::AlreadyExists`] names it).
    pub fn create_all(&self, objects: Vec<Object>) -> Result<Vec<Object>, StoreError> {
        let mut changes = Vec::new();
        let created = self.write(|txn| {
            let mut created = Vec::with_capacity(objects.len());
            for object in objects {
                if exists(txn, &object)? {
                    return Err(StoreError::AlreadyExists {
                        reference: object.reference(),
                    });
                }
                created.push(put_desired(txn, object, &mut changes)?.0);
            }
            Ok(created)
        })?;
        self.publish(changes);
        Ok(created)
    }

    /// Creates or updates every object, in one transaction: if any is
    /// refused, none changes. `metadata` and `spec` come from the objects;
    /// the stored `status` and the bookkeeping fields are kept.
    pub fn apply(&self, objects: Vec<Object>) -> Result<Vec<(Object, Applied)>, StoreError> {
        let mut changes = Vec::new();
        let applied = self.write(|txn| {
            let mut applied = Vec::new();
            for object in objects {
                applied.push(put_desired(txn, object, &mut changes)?);
            }
            Ok(applied)
        })?;
        self.publish(changes);
        Ok(applied)
    }

    /// Replaces an object as a controller does: metadata, spec and status,
    /// if its `resourceVersion` is still the stored one (optimistic
    /// concurrency). A stale version is a [`StoreError::Conflict`].
    pub fn replace(&self, object: Object) -> Result<Object, StoreError> {
        let mut changes = Vec::new();
        let replaced = self.write(|txn| {
            let current = get_in(txn, object.kind(), object.namespace(), object.name())?;
            check_version(&current, &object)?;
            let mut next = object.clone();
            let spec_changed = spec_of(&current) != spec_of(&next);
            keep_bookkeeping(&current, &mut next, spec_changed);
            if next == current {
                return Ok(current);
            }
            store_in(txn, &mut next)?;
            changes.push(WatchEvent {
                kind: EventKind::Modified,
                object: next.clone(),
            });
            Ok(next)
        })?;
        self.publish(changes);
        Ok(replaced)
    }

    /// Deletes an object and returns its last state.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object, StoreError> {
        let mut changes = Vec::new();
        let deleted = self.write(|txn| {
            let mut object = get_in(txn, kind, namespace, name)?;
            {
                let mut table = db!(txn.open_table(OBJECTS))?;
                db!(table.remove(key(kind, namespace, name).as_str()))?;
            }
            let version = next_version(txn)?;
            object.metadata_mut().resource_version = Some(version.to_string());
            changes.push(WatchEvent {
                kind: EventKind::Deleted,
                object: object.clone(),
            });
            Ok(object)
        })?;
        self.publish(changes);
        Ok(deleted)
    }

    /// Sets the `status` of pods, as the API server's status subresource
    /// does (only `status` changes, whatever the pod's `resourceVersion`),
    /// in one transaction; returns how many pods changed. A pod that no
    /// longer exists, or exists with another uid, is skipped, and so is a
    /// status that did not change.
    ///
    /// The commit is not made durable (no fsync): status is observed state,
    /// which the node agent writes often and can always recompute. After the
    /// process is killed or the machine loses power, the store may hold an
    /// older status (the next durable write, a desired-state change or every
    /// few hundred status writes, makes everything before it durable; so
    /// does closing the store); the agent rewrites every pod's status when
    /// it starts. Desired state is never lost this way: its writes are
    /// durable.
    pub fn write_pod_statuses(&self, updates: Vec<PodStatusUpdate>) -> Result<usize, StoreError> {
        let durable = self.unsynced.fetch_add(1, Ordering::Relaxed) + 1 >= UNSYNCED_STATUS_WRITES;
        if durable {
            self.unsynced.store(0, Ordering::Relaxed);
        }
        let mut changes = Vec::new();
        let mut txn = db!(self.db.begin_write())?;
        if !durable {
            db!(txn.set_durability(redb::Durability::None))?;
        }
        let work = |txn: &redb::WriteTransaction| -> Result<(), StoreError> {
            for update in updates {
                let current = match get_in(txn, Kind::Pod, &update.namespace, &update.name) {
                    Ok(current) => current,
                    Err(StoreError::NotFound { .. }) => continue,
                    Err(error) => return Err(error),
                };
                let Object::Pod(mut pod) = current else {
                    continue;
                };
                if pod.metadata.uid.as_deref() != Some(update.uid.as_str())
                    || pod.status.as_ref() == Some(&update.status)
                {
                    continue;
                }
                pod.status = Some(update.status);
                let mut next = Object::Pod(pod);
                store_in(txn, &mut next)?;
                changes.push(WatchEvent {
                    kind: EventKind::Modified,
                    object: next,
                });
            }
            Ok(())
        };
        match work(&txn) {
            Ok(()) => db!(txn.commit())?,
            Err(error) => {
                let _ = txn.abort();
                return Err(error);
            }
        }
        let changed = changes.len();
        self.publish(changes);
        Ok(changed)
    }

    fn write<T>(
        &self,
        work: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = db!(self.db.begin_write())?;
        match work(&txn) {
            Ok(value) => {
                db!(txn.commit())?;
                Ok(value)
            }
            Err(error) => {
                // Nothing of a refused write is kept.
                let _ = txn.abort();
                Err(error)
            }
        }
    }

    fn publish(&self, changes: Vec<WatchEvent>) {
        for change in changes {
            // No watcher is not an error.
            let _ = self.events.send(change);
        }
    }
}

fn exists(txn: &redb::WriteTransaction, object: &Object) -> Result<bool, StoreError> {
    let table = db!(txn.open_table(OBJECTS))?;
    Ok(db!(table.get(key(object.kind(), object.namespace(), object.name()).as_str()))?.is_some())
}

fn get_in(
    txn: &redb::WriteTransaction,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Object, StoreError> {
    let table = db!(txn.open_table(OBJECTS))?;
    let found = db!(table.get(key(kind, namespace, name).as_str()))?;
    match found {
        Some(bytes) => decode(bytes.value(), kind),
        None => Err(StoreError::NotFound {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
    }
}

fn next_version(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut counters = db!(txn.open_table(COUNTERS))?;
    let next = db!(counters.get(RESOURCE_VERSION))?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    db!(counters.insert(RESOURCE_VERSION, next))?;
    Ok(next)
}

fn store_in(txn: &redb::WriteTransaction, object: &mut Object) -> Result<(), StoreError> {
    let version = next_version(txn)?;
    object.metadata_mut().resource_version = Some(version.to_string());
    let mut table = db!(txn.open_table(OBJECTS))?;
    db!(table.insert(
        key(object.kind(), object.namespace(), object.name()).as_str(),
        encode(object).as_slice()
    ))?;
    Ok(())
}

fn check_version(current: &Object, given: &Object) -> Result<(), StoreError> {
    let actual = current
        .metadata()
        .resource_version
        .clone()
        .unwrap_or_default();
    match &given.metadata().resource_version {
        Some(expected) if *expected != actual => Err(StoreError::Conflict {
            reference: given.reference(),
            expected: expected.clone(),
            actual,
        }),
        _ => Ok(()),
    }
}

/// Carries the server-owned fields of `current` over to `next`, bumping the
/// generation when the spec changed.
fn keep_bookkeeping(current: &Object, next: &mut Object, spec_changed: bool) {
    let meta = current.metadata();
    let generation = meta.generation.unwrap_or(1) + i64::from(spec_changed);
    let next_meta = next.metadata_mut();
    next_meta.uid = meta.uid.clone();
    next_meta.creation_timestamp = meta.creation_timestamp.clone();
    next_meta.resource_version = meta.resource_version.clone();
    next_meta.generation = Some(generation);
    if next_meta.namespace.is_none() && current.kind().namespaced() {
        next_meta.namespace = meta.namespace.clone();
    }
}

/// The status of `object`, to carry over an apply.
fn copy_status(from: &Object, to: &mut Object) {
    match (from, to) {
        (Object::Namespace(a), Object::Namespace(b)) => b.status = a.status.clone(),
        (Object::Pod(a), Object::Pod(b)) => b.status = a.status.clone(),
        (Object::ReplicaSet(a), Object::ReplicaSet(b)) => b.status = a.status.clone(),
        (Object::Deployment(a), Object::Deployment(b)) => b.status = a.status.clone(),
        _ => {}
    }
}

/// Creates or updates `object`'s desired state inside `txn`.
fn put_desired(
    txn: &redb::WriteTransaction,
    mut object: Object,
    changes: &mut Vec<WatchEvent>,
) -> Result<(Object, Applied), StoreError> {
    let kind = object.kind();
    if kind.namespaced() {
        let namespace = object.namespace().to_owned();
        object.metadata_mut().namespace = Some(namespace.clone());
        if namespace != "default" && get_in(txn, Kind::Namespace, "", &namespace).is_err() {
            return Err(StoreError::NamespaceNotFound(namespace));
        }
    }
    match get_in(txn, kind, object.namespace(), object.name()) {
        Err(StoreError::NotFound { .. }) => {
            let meta = object.metadata_mut();
            meta.uid = Some(uuid::Uuid::new_v4().to_string());
            meta.creation_timestamp = Some(now());
            meta.generation = Some(1);
            meta.resource_version = None;
            store_in(txn, &mut object)?;
            changes.push(WatchEvent {
                kind: EventKind::Added,
                object: object.clone(),
            });
            Ok((object, Applied::Created))
        }
        Err(error) => Err(error),
        Ok(current) => {
            immutable_fields(&current, &object)?;
            let spec_changed = spec_of(&current) != spec_of(&object);
            keep_bookkeeping(&current, &mut object, spec_changed);
            copy_status(&current, &mut object);
            if object == current {
                return Ok((current, Applied::Unchanged));
            }
            store_in(txn, &mut object)?;
            changes.push(WatchEvent {
                kind: EventKind::Modified,
                object: object.clone(),
            });
            Ok((object, Applied::Configured))
        }
    }
}

/// The current time at the API server's precision (whole seconds).
pub fn now() -> Time {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(seconds, 0)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Fields Kubernetes refuses to change on an existing object.
fn immutable_fields(current: &Object, next: &Object) -> Result<(), StoreError> {
    let immutable = |field| StoreError::Immutable {
        reference: next.reference(),
        field,
    };
    match (current, next) {
        (Object::Deployment(a), Object::Deployment(b)) if a.spec.selector != b.spec.selector => {
            Err(immutable("spec.selector"))
        }
        (Object::ReplicaSet(a), Object::ReplicaSet(b)) if a.spec.selector != b.spec.selector => {
            Err(immutable("spec.selector"))
        }
        (Object::Pod(a), Object::Pod(b)) => {
            // A pod's containers and volumes are fixed once it exists; only
            // metadata may change (as for Kubernetes, apart from images).
            let containers = |pod: &k8s_openapi::api::core::v1::Pod| {
                pod.spec
                    .as_ref()
                    .map(|s| (s.containers.clone(), s.volumes.clone()))
            };
            if containers(a) != containers(b) {
                Err(immutable("spec"))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}
