//! The desired-state store: bookkeeping as the API server does it, all or
//! nothing applies, optimistic concurrency, durability and watch order.

mod common;

use berth_scheduler::{Applied, EventKind, Kind, Object, Store, StoreError};
use common::{WEB, objects};

#[test]
fn apply_creates_then_reports_unchanged_then_configured_with_bookkeeping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    let mut watch = store.watch();

    let applied = store.apply(objects(WEB)).expect("applies");
    assert_eq!(applied[0].1, Applied::Created);
    let created = applied[0].0.clone();
    let meta = created.metadata();
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.resource_version.as_deref(), Some("1"));
    assert_eq!(meta.uid.as_deref().map(str::len), Some(36));
    assert!(meta.creation_timestamp.is_some());

    let again = store.apply(objects(WEB)).expect("applies");
    assert_eq!(again[0].1, Applied::Unchanged);
    assert_eq!(again[0].0.metadata().resource_version.as_deref(), Some("1"));

    // A label changes metadata only: configured, same generation.
    let relabelled = WEB.replace(
        "metadata: {name: web}",
        "metadata: {name: web, labels: {tier: front}}",
    );
    let configured = store.apply(objects(&relabelled)).expect("applies");
    assert_eq!(configured[0].1, Applied::Configured);
    assert_eq!(configured[0].0.metadata().generation, Some(1));
    // A spec change bumps the generation; uid and creation time stay.
    let scaled = relabelled.replace("replicas: 2", "replicas: 5");
    let configured = store.apply(objects(&scaled)).expect("applies");
    assert_eq!(configured[0].0.metadata().generation, Some(2));
    assert_eq!(configured[0].0.metadata().uid, created.metadata().uid);
    assert_eq!(
        configured[0].0.metadata().resource_version.as_deref(),
        Some("3")
    );

    let kinds: Vec<EventKind> = std::iter::from_fn(|| watch.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::Added, EventKind::Modified, EventKind::Modified]
    );
}

#[test]
fn a_refused_object_leaves_the_whole_set_unapplied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    let set = format!(
        "{WEB}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: missing}}\nspec: {{containers: [{{name: a, image: b}}]}}\n"
    );
    let error = store.apply(objects(&set)).expect_err("namespace missing");
    assert!(
        matches!(error, StoreError::NamespaceNotFound(ref n) if n == "missing"),
        "{error}"
    );
    let (deployments, version) = store.list(Kind::Deployment, None).expect("lists");
    assert!(deployments.is_empty(), "the first object was rolled back");
    assert_eq!(version, 0);

    // Changing an immutable field is refused and changes nothing.
    store.apply(objects(WEB)).expect("applies");
    let moved = WEB
        .replace("{matchLabels: {app: web}}", "{matchLabels: {app: web2}}")
        .replace("{labels: {app: web}}", "{labels: {app: web2}}");
    let error = store.apply(objects(&moved)).expect_err("immutable");
    assert!(
        error
            .to_string()
            .contains("spec.selector: field is immutable"),
        "{error}"
    );
    assert_eq!(store.resource_version().expect("version"), 1);
}

#[test]
fn create_refuses_existing_objects_and_replace_refuses_stale_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("opens");
    let web = objects(WEB).remove(0);
    let stored = store.create(web.clone()).expect("creates");
    let error = store.create(web).expect_err("exists");
    assert!(
        error
            .to_string()
            .contains("deployment.apps/web already exists"),
        "{error}"
    );

    let mut first = stored.clone();
    let mut second = stored;
    if let Object::Deployment(d) = &mut first {
        d.spec.replicas = Some(3);
    }
    if let Object::Deployment(d) = &mut second {
        d.spec.replicas = Some(4);
    }
    let replaced = store.replace(first).expect("current version");
    assert_eq!(replaced.metadata().generation, Some(2));
    let error = store.replace(second).expect_err("stale");
    assert!(matches!(error, StoreError::Conflict { .. }), "{error}");
}

#[test]
fn state_survives_reopening_and_deletes_are_watched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).expect("opens");
        store
            .apply(objects(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}",
                WEB.replace(
                    "metadata: {name: web}",
                    "metadata: {name: web, namespace: shop}"
                )
            )))
            .expect("applies");
    }
    let store = Store::open(&path).expect("reopens");
    let (in_shop, version) = store.list(Kind::Deployment, Some("shop")).expect("lists");
    assert_eq!(in_shop.len(), 1);
    assert_eq!(version, 2);
    assert!(
        store
            .list(Kind::Deployment, Some("default"))
            .expect("lists")
            .0
            .is_empty()
    );
    assert_eq!(store.list(Kind::Namespace, None).expect("lists").0.len(), 1);

    let mut watch = store.watch();
    let deleted = store
        .delete(Kind::Deployment, "shop", "web")
        .expect("deletes");
    assert_eq!(deleted.metadata().resource_version.as_deref(), Some("3"));
    let event = watch.try_recv().expect("an event");
    assert_eq!(event.kind, EventKind::Deleted);
    assert!(matches!(
        store.get(Kind::Deployment, "shop", "web"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(Kind::Deployment, "shop", "web"),
        Err(StoreError::NotFound { .. })
    ));
}

/// A state file that is not a database, and a database with a planted
/// record that is not an object: each read fails with a message, nothing
/// panics, and a planted record is never taken for the object.
#[test]
fn a_corrupt_state_file_or_a_planted_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).expect("write");
    let error = Store::open(&garbage).expect_err("not a database");
    assert!(error.to_string().contains("garbage.redb"), "{error}");

    let path = dir.path().join("state.redb");
    drop(Store::open(&path).expect("opens"));
    {
        let db = redb::Database::create(&path).expect("opens");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("objects"))
                .expect("table");
            table
                .insert(
                    "Deployment/default/web",
                    b"{\"kind\": \"Deployment\", \"spec\": 7}".as_slice(),
                )
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = Store::open(&path).expect("reopens");
    let error = store
        .get(Kind::Deployment, "default", "web")
        .expect_err("planted");
    assert!(
        error.to_string().contains("unreadable Deployment"),
        "{error}"
    );
    assert!(store.list(Kind::Deployment, None).is_err());
    assert!(
        store.apply(objects(WEB)).is_err(),
        "an apply over it is refused too"
    );
}

#[test]
fn pod_statuses_are_written_together_and_only_for_the_same_pod() {
    use berth_scheduler::PodStatusUpdate;
    use berth_scheduler::k8s_openapi::api::core::v1::PodStatus;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    let store = Store::open(&path).expect("opens");
    let pod = |name: &str| {
        objects(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: 'x:1'}}]}}\n"
        ))
    };
    let a = store.create(pod("a").remove(0)).expect("a");
    store.create(pod("b").remove(0)).expect("b");
    let uid = |o: &Object| o.metadata().uid.clone().expect("uid");
    let running = PodStatus {
        phase: Some("Running".to_owned()),
        ..PodStatus::default()
    };
    let update = |name: &str, uid: String| PodStatusUpdate {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        uid,
        status: running.clone(),
    };
    let mut watch = store.watch();
    let written = store
        .write_pod_statuses(vec![
            update("a", uid(&a)),
            update("b", "another pod's uid".to_owned()),
            update("gone", "uid".to_owned()),
        ])
        .expect("writes");
    assert_eq!(written, 1, "only the pod with that uid");
    let event = watch.try_recv().expect("a watch event");
    assert_eq!(
        (event.kind, event.object.name()),
        (EventKind::Modified, "a")
    );
    let phase = |name: &str| match store.get(Kind::Pod, "default", name) {
        Ok(Object::Pod(pod)) => pod.status.and_then(|s| s.phase),
        other => panic!("{other:?}"),
    };
    assert_eq!(phase("a").as_deref(), Some("Running"));
    assert_eq!(phase("b"), None);
    let stored = store.get(Kind::Pod, "default", "a").expect("a");
    assert_eq!(stored.metadata().generation, Some(1), "status is not spec");
    // The same status again changes nothing.
    assert_eq!(
        store
            .write_pod_statuses(vec![update("a", uid(&a))])
            .expect("writes"),
        0
    );
    // Nothing was lost by the process: a reopened store has it.
    drop(store);
    let store = Store::open(&path).expect("reopens");
    match store.get(Kind::Pod, "default", "a") {
        Ok(Object::Pod(pod)) => {
            assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
        }
        other => panic!("{other:?}"),
    }
}
