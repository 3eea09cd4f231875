//! What the scheduler's tests share: a two-replica Deployment and reading
//! manifest text into objects.
// Each test binary uses only part of this.
#![allow(dead_code)]

use berth_scheduler::{Object, manifest};

/// A Deployment of two `web:1.0` replicas in `default`.
pub const WEB: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: 'web:1.0'}]}
";

/// The objects of valid manifest `text`.
pub fn objects(text: &str) -> Vec<Object> {
    manifest::parse(text, "test.yaml")
        .expect("valid manifests")
        .into_iter()
        .map(|m| m.object)
        .collect()
}
