//! berth's desired state, Kubernetes style: the objects (Namespace, Pod,
//! ReplicaSet, Deployment as `k8s-openapi` types), manifests read from YAML,
//! their validation, the store that keeps them (redb), the controllers
//! that keep ReplicaSets and Deployments converged, and placement of pods by
//! their resource requests.
//!
//! This crate has no HTTP and no command line: `berth daemon` serves it over
//! its API, and the commands are clients of that API.

pub mod columns;
pub mod controller;
pub mod events;
pub mod kubelet;
pub mod manifest;
pub mod object;
pub mod placement;
pub mod podspec;
pub mod quantity;
pub mod store;
pub mod validate;

pub use events::{EventType, Events};
pub use manifest::{Manifest, ManifestError};
pub use object::{Kind, Object};
pub use placement::{Node, Unschedulable};
pub use quantity::Resources;
pub use store::{Applied, EventKind, PodStatusUpdate, Store, StoreError, WatchEvent};
pub use validate::FieldError;

/// The Kubernetes types berth speaks, re-exported so that front doors use
/// the same version.
pub use k8s_openapi;
