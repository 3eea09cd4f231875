//! Controllers against a real store, with a stand-in node that marks pods
//! ready (or, for a broken image, never): replicas, scaling, rolling updates
//! that stall on pods that never start, undo, Recreate, and cascading
//! deletion.

use berth_scheduler::controller::{self, TEMPLATE_HASH_LABEL};
use berth_scheduler::k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use berth_scheduler::{Kind, Object, Store};

mod common;

use common::{WEB, objects};

fn apply(store: &Store, text: &str) {
    store.apply(objects(text)).expect("applies");
}

/// Marks every pod whose image `starts` ready, as a node would once its
/// program runs.
fn node_pass(store: &Store, starts: &dyn Fn(&str) -> bool) {
    for object in store.list(Kind::Pod, None).expect("pods").0 {
        let Object::Pod(mut pod) = object else {
            continue;
        };
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone())
            .unwrap_or_default();
        let ready = starts(&image);
        if controller::pod_is_ready(&pod) == ready && pod.status.is_some() {
            continue;
        }
        pod.status = Some(PodStatus {
            phase: Some(if ready { "Running" } else { "Pending" }.to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        store.replace(Object::Pod(pod)).expect("status");
    }
}

/// Runs controllers and the node until nothing changes (bounded).
fn converge(store: &Store, starts: &dyn Fn(&str) -> bool) {
    for _ in 0..100 {
        let before = store.resource_version().expect("version");
        controller::resync(store);
        node_pass(store, starts);
        if store.resource_version().expect("version") == before {
            return;
        }
    }
    panic!("did not converge in 100 passes");
}

fn pods(store: &Store) -> Vec<Pod> {
    store
        .list(Kind::Pod, Some("default"))
        .expect("pods")
        .0
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn images(store: &Store) -> Vec<String> {
    let mut images: Vec<String> = pods(store)
        .iter()
        .map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers[0].image.clone())
                .unwrap_or_default()
        })
        .collect();
    images.sort();
    images
}

fn deployment(store: &Store) -> berth_scheduler::k8s_openapi::api::apps::v1::Deployment {
    match store
        .get(Kind::Deployment, "default", "web")
        .expect("deployment")
    {
        Object::Deployment(d) => d,
        other => panic!("{other:?}"),
    }
}

fn all_start(_: &str) -> bool {
    true
}

#[test]
fn a_deployment_gets_its_replicas_and_scales_up_and_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    apply(&store, WEB);
    converge(&store, &all_start);
    let running = pods(&store);
    assert_eq!(running.len(), 2);
    for pod in &running {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        assert!(name.starts_with("web-"), "{name}");
        assert!(
            pod.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(TEMPLATE_HASH_LABEL))
        );
    }
    let (sentence, done) = controller::rollout_status(&deployment(&store));
    assert!(done, "{sentence}");
    assert_eq!(sentence, "deployment \"web\" successfully rolled out");

    for (replicas, expected) in [(5, 5), (1, 1), (0, 0), (2, 2)] {
        apply(
            &store,
            &WEB.replace("replicas: 2", &format!("replicas: {replicas}")),
        );
        converge(&store, &all_start);
        assert_eq!(pods(&store).len(), expected, "scaled to {replicas}");
        let status = deployment(&store).status.expect("status");
        assert_eq!(status.available_replicas, Some(expected as i32));
    }

    // What happened is told in events, as `describe` shows them.
    let uid = deployment(&store).metadata.uid.expect("uid");
    let told: Vec<String> = store
        .events()
        .list(Some("default"), Some(&uid))
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    let set = store
        .list(Kind::ReplicaSet, Some("default"))
        .expect("sets")
        .0;
    let set_name = set[0].name().to_owned();
    for expected in [
        format!("ScalingReplicaSet Scaled up replica set {set_name} from 0 to 2"),
        format!("ScalingReplicaSet Scaled up replica set {set_name} from 2 to 5"),
        format!("ScalingReplicaSet Scaled down replica set {set_name} from 5 to 1"),
    ] {
        assert!(told.contains(&expected), "{expected:?} not in {told:?}");
    }
    let set_uid = set[0].metadata().uid.clone().expect("uid");
    let of_set = store.events().list(Some("default"), Some(&set_uid));
    assert!(
        of_set
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulCreate")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("Created pod: web-"))),
        "{of_set:?}"
    );
    assert!(
        of_set
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete")),
        "{of_set:?}"
    );
}

#[test]
fn a_rolling_update_that_never_starts_stalls_and_keeps_the_old_pods_then_undo_restores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    apply(&store, WEB);
    converge(&store, &all_start);

    // v2's program never starts: the rollout adds one surge pod and stops.
    let broken = |image: &str| image != "web:2.0";
    apply(&store, &WEB.replace("web:1.0", "web:2.0"));
    converge(&store, &broken);
    assert_eq!(images(&store), ["web:1.0", "web:1.0", "web:2.0"]);
    let (sentence, done) = controller::rollout_status(&deployment(&store));
    assert!(!done);
    assert!(sentence.contains("1 out of 2 new replicas"), "{sentence}");

    // Once v2 starts, the rollout completes and v1 is gone.
    converge(&store, &all_start);
    assert_eq!(images(&store), ["web:2.0", "web:2.0"]);
    let history = controller::history(&store, "default", "web").expect("history");
    assert_eq!(history.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1, 2]);

    // Undo goes back to v1 as revision 3.
    let to = controller::rollback(&store, "default", "web", None).expect("undo");
    assert_eq!(to, 1);
    converge(&store, &all_start);
    assert_eq!(images(&store), ["web:1.0", "web:1.0"]);
    let history = controller::history(&store, "default", "web").expect("history");
    assert_eq!(history.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [2, 3]);
    assert!(controller::rollback(&store, "default", "web", Some(9)).is_err());
}

#[test]
fn surge_and_unavailability_bounds_hold_at_every_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    let four = WEB.replace("replicas: 2", "replicas: 4").replace(
        "  selector:",
        "  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n  selector:",
    );
    apply(&store, &four);
    converge(&store, &all_start);
    apply(&store, &four.replace("web:1.0", "web:2.0"));
    for _ in 0..100 {
        let before = store.resource_version().expect("version");
        controller::resync(&store);
        let all = pods(&store);
        assert!(
            all.len() <= 5,
            "more than replicas + maxSurge: {}",
            all.len()
        );
        let ready = all.iter().filter(|p| controller::pod_is_ready(p)).count();
        assert!(
            ready >= 3,
            "fewer than replicas - maxUnavailable ready: {ready}"
        );
        node_pass(&store, &all_start);
        if store.resource_version().expect("version") == before {
            break;
        }
    }
    assert_eq!(images(&store), ["web:2.0"; 4]);
}

#[test]
fn recreate_removes_old_pods_before_starting_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    let recreate = WEB.replace("  selector:", "  strategy: {type: Recreate}\n  selector:");
    apply(&store, &recreate);
    converge(&store, &all_start);
    apply(&store, &recreate.replace("web:1.0", "web:2.0"));
    for _ in 0..100 {
        let before = store.resource_version().expect("version");
        controller::resync(&store);
        let now = images(&store);
        assert!(
            !(now.contains(&"web:1.0".to_owned()) && now.contains(&"web:2.0".to_owned())),
            "old and new together: {now:?}"
        );
        node_pass(&store, &all_start);
        if store.resource_version().expect("version") == before {
            break;
        }
    }
    assert_eq!(images(&store), ["web:2.0", "web:2.0"]);
}

#[test]
fn deleting_a_deployment_takes_its_replica_sets_and_pods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    apply(&store, WEB);
    converge(&store, &all_start);
    store
        .delete(Kind::Deployment, "default", "web")
        .expect("deletes");
    converge(&store, &all_start);
    assert!(pods(&store).is_empty());
    assert!(
        store
            .list(Kind::ReplicaSet, None)
            .expect("sets")
            .0
            .is_empty()
    );
}
