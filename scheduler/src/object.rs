//! The Kubernetes objects berth keeps as desired state, one enum over
//! `k8s-openapi`'s own types so that JSON in and out is exactly Kubernetes'.

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The kinds berth understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `v1 Namespace`.
    Namespace,
    /// `v1 Pod`.
    Pod,
    /// `apps/v1 ReplicaSet`.
    ReplicaSet,
    /// `apps/v1 Deployment`.
    Deployment,
}

impl Kind {
    /// Every kind, in the order objects of a manifest are applied (a
    /// namespace before what lives in it).
    pub const ALL: [Kind; 4] = [
        Kind::Namespace,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Pod,
    ];

    /// The `apiVersion` of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace => Namespace::API_VERSION,
            Kind::Pod => Pod::API_VERSION,
            Kind::ReplicaSet => ReplicaSet::API_VERSION,
            Kind::Deployment => Deployment::API_VERSION,
        }
    }

    /// The `kind` field's value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => Namespace::KIND,
            Kind::Pod => Pod::KIND,
            Kind::ReplicaSet => ReplicaSet::KIND,
            Kind::Deployment => Deployment::KIND,
        }
    }

    /// The lower-case plural of the API paths (`pods`, `deployments`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => Namespace::URL_PATH_SEGMENT,
            Kind::Pod => Pod::URL_PATH_SEGMENT,
            Kind::ReplicaSet => ReplicaSet::URL_PATH_SEGMENT,
            Kind::Deployment => Deployment::URL_PATH_SEGMENT,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// The kind of an `apiVersion` and `kind` pair, if berth supports it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.name() == kind)
    }

    /// The kind a command-line resource name means, as kubectl reads it
    /// (`pods`, `pod`, `po`, `deployments`, `deploy`, `rs`, `ns`...).
    pub fn from_resource_name(name: &str) -> Option<Kind> {
        match name.to_ascii_lowercase().as_str() {
            "namespace" | "namespaces" | "ns" => Some(Kind::Namespace),
            "pod" | "pods" | "po" => Some(Kind::Pod),
            "replicaset" | "replicasets" | "rs" => Some(Kind::ReplicaSet),
            "deployment" | "deployments" | "deploy" => Some(Kind::Deployment),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One object of a supported kind.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A pod.
    Pod(Pod),
    /// A replica set.
    ReplicaSet(ReplicaSet),
    /// A deployment.
    Deployment(Deployment),
}

impl Object {
    /// This object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Deployment(_) => Kind::Deployment,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
        }
    }

    /// The object's metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
        }
    }

    /// `metadata.name`, or "" when it has none.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace` (`default` when unset for a namespaced kind; ""
    /// for a namespace itself).
    pub fn namespace(&self) -> &str {
        if !self.kind().namespaced() {
            return "";
        }
        self.metadata().namespace.as_deref().unwrap_or("default")
    }

    /// The object as Kubernetes JSON (with `apiVersion` and `kind`).
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::Pod(o) => serde_json::to_value(o),
            Object::ReplicaSet(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
        };
        // k8s-openapi's types serialize to JSON without failing: their
        // fields are strings, numbers, maps with string keys and lists.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Reads an object of `kind` from Kubernetes JSON.
    pub fn from_json(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(serde_json::from_value(value)?),
            Kind::Pod => Object::Pod(serde_json::from_value(value)?),
            Kind::ReplicaSet => Object::ReplicaSet(serde_json::from_value(value)?),
            Kind::Deployment => Object::Deployment(serde_json::from_value(value)?),
        })
    }

    /// `kind/name` as kubectl prints it (`deployment.apps/web`).
    pub fn reference(&self) -> String {
        let group = match self.kind() {
            Kind::ReplicaSet | Kind::Deployment => ".apps",
            Kind::Namespace | Kind::Pod => "",
        };
        format!(
            "{}{group}/{}",
            self.kind().name().to_ascii_lowercase(),
            self.name()
        )
    }
}
