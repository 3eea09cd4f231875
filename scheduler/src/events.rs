//! Events: what controllers and the node agent did and why (`Scheduled`,
//! `Started`, `BackOff`, `ScalingReplicaSet`, `FailedScheduling`...), as
//! Kubernetes `v1 Event` objects that `describe` shows.
//!
//! Like the API server's (kept one hour), events are not desired state:
//! they live in memory, in a bounded ring, and a daemon restart starts
//! afresh. A repeat of the same event on the same object bumps its `count`
//! and `lastTimestamp` instead of adding one, as kubelet's recorder does.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::object::Object;

/// How many events are kept, all objects together; the oldest go first.
pub const MAX_EVENTS: usize = 4096;

/// Whether an event is routine or a warning (Kubernetes' two types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The recorder and the ring of recent events. Shared by reference.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    serial: u64,
}

impl Events {
    /// An empty recorder.
    pub fn new() -> Events {
        Events::default()
    }

    /// Records that `component` (`deployment-controller`, `kubelet`...)
    /// did `reason` to `object`, saying `message`.
    pub fn record(
        &self,
        object: &Object,
        kind: EventType,
        component: &str,
        reason: &str,
        message: &str,
    ) {
        let involved = reference(object);
        let now = crate::store::now();
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(same) = ring.events.iter_mut().rev().find(|e| {
            e.involved_object.uid == involved.uid
                && e.reason.as_deref() == Some(reason)
                && e.message.as_deref() == Some(message)
        }) {
            same.count = Some(same.count.unwrap_or(1).saturating_add(1));
            same.last_timestamp = Some(now);
            return;
        }
        ring.serial += 1;
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or_default(),
            ring.serial
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(object.namespace().to_owned()),
                ..ObjectMeta::default()
            },
            involved_object: involved,
            type_: Some(kind.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            source: Some(EventSource {
                component: Some(component.to_owned()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            ..Event::default()
        };
        if ring.events.len() == MAX_EVENTS {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
    }

    /// The kept events, oldest first: of `namespace` (all when `None`),
    /// and about the object with uid `involved_uid` when given.
    pub fn list(&self, namespace: Option<&str>, involved_uid: Option<&str>) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.events
            .iter()
            .filter(|e| namespace.is_none_or(|ns| e.metadata.namespace.as_deref() == Some(ns)))
            .filter(|e| {
                involved_uid.is_none_or(|uid| e.involved_object.uid.as_deref() == Some(uid))
            })
            .cloned()
            .collect()
    }
}

fn reference(object: &Object) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(object.kind().api_version().to_owned()),
        kind: Some(object.kind().name().to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, uid: &str) -> Object {
        Object::Pod(Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                uid: Some(uid.to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    #[test]
    fn repeats_are_counted_and_listed_per_object() {
        let events = Events::new();
        let a = pod("a", "uid-a");
        let b = pod("b", "uid-b");
        events.record(&a, EventType::Warning, "kubelet", "BackOff", "back-off");
        events.record(&a, EventType::Warning, "kubelet", "BackOff", "back-off");
        events.record(&b, EventType::Normal, "kubelet", "Started", "started");
        let of_a = events.list(Some("default"), Some("uid-a"));
        assert_eq!(of_a.len(), 1);
        assert_eq!(of_a[0].count, Some(2));
        assert_eq!(of_a[0].type_.as_deref(), Some("Warning"));
        assert_eq!(events.list(None, None).len(), 2);
        assert!(events.list(Some("other"), None).is_empty());
    }

    #[test]
    fn the_ring_is_bounded() {
        let events = Events::new();
        let a = pod("a", "uid-a");
        for n in 0..MAX_EVENTS + 10 {
            events.record(&a, EventType::Normal, "kubelet", "Pulled", &n.to_string());
        }
        let all = events.list(None, None);
        assert_eq!(all.len(), MAX_EVENTS);
        assert_eq!(all[0].message.as_deref(), Some("10"));
    }
}
