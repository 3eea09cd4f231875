//! The file record store: names, references, states, removal, owner-only
//! files, and records written by an older berth.

use std::path::PathBuf;

use berth_container::records::{
    CONFIG_FILE, ContainerRecord, FORMAT_VERSION, FileRecords, RecordError, RecordStore,
};
use berth_container::{ContainerSpec, ContainerState, ExitReason, RestartPolicy, Status, Target};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: Some(name.to_owned()),
        env: vec![("TOKEN".into(), "secret".into())],
        restart: RestartPolicy::Always,
        ..ContainerSpec::new(Target::File {
            path: PathBuf::from("/apps/app.wasm"),
            export: None,
        })
    }
}

#[test]
fn records_reserve_names_and_resolve_references() -> TestResult {
    let temp = tempfile::tempdir()?;
    let store = FileRecords::open(temp.path().join("containers"))?;
    let web = store.create(&ContainerRecord::new(store.new_id(), spec("web")))?;
    let error = store
        .create(&ContainerRecord::new(store.new_id(), spec("web")))
        .expect_err("duplicate name");
    assert!(matches!(error, RecordError::NameInUse { .. }), "{error}");
    assert!(error.to_string().contains("already in use"), "{error}");
    assert_eq!(store.list()?.len(), 1, "the refused container left nothing");

    assert_eq!(store.resolve("web")?.id(), web.id());
    assert_eq!(store.resolve(web.id())?.record.name, "web");
    assert_eq!(store.resolve(&web.id()[..6])?.record.name, "web");
    assert_eq!(
        store.resolve("nothing").expect_err("missing").to_string(),
        "no such container: nothing"
    );
    // The stored spec is the spec.
    assert_eq!(store.load(web.id())?.record.spec, spec("web"));
    assert_eq!(store.load(web.id())?.record.version, FORMAT_VERSION);

    let unnamed = store.create(&ContainerRecord::new(
        store.new_id(),
        ContainerSpec {
            name: None,
            ..spec("x")
        },
    ))?;
    assert_eq!(unnamed.record.name, format!("berth-{}", unnamed.short_id()));

    let mut state = ContainerState {
        status: Status::Exited,
        restart_count: 2,
        ..ContainerState::default()
    };
    state.set_exit(137, Some(ExitReason::OomKilled));
    store.write_state(web.id(), &state)?;
    assert_eq!(store.read_state(web.id())?, Some(state.clone()));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.dir(web.id()).join("state.json"))?)?;
    assert_eq!(on_disk["oom_killed"], true);
    assert_eq!(on_disk["exit_reason"]["kind"], "oom_killed");

    store.remove(&web)?;
    assert_eq!(store.read_state(web.id())?, None);
    assert_eq!(store.list()?.len(), 1);
    assert!(
        store
            .create(&ContainerRecord::new(store.new_id(), spec("web")))
            .is_ok(),
        "the name is free again"
    );
    Ok(())
}

#[test]
fn invalid_names_are_refused_before_anything_is_written() -> TestResult {
    let temp = tempfile::tempdir()?;
    let store = FileRecords::open(temp.path().to_path_buf())?;
    let mut record = ContainerRecord::new(store.new_id(), spec("web"));
    record.name = "../escape".into();
    let error = store.create(&record).expect_err("invalid name");
    assert!(
        error
            .to_string()
            .starts_with("invalid container name \"../escape\""),
        "{error}"
    );
    assert!(!store.dir(&record.id).exists());
    Ok(())
}

#[cfg(unix)]
#[test]
fn records_are_owner_only() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir()?;
    let store = FileRecords::open(temp.path().join("containers"))?;
    let web = store.create(&ContainerRecord::new(store.new_id(), spec("web")))?;
    store.write_state(web.id(), &ContainerState::default())?;
    let dir = store.dir(web.id());
    for (path, expected) in [
        (dir.clone(), 0o700),
        (dir.join(CONFIG_FILE), 0o600),
        (dir.join("state.json"), 0o600),
        (store.root().join("names"), 0o700),
        (store.root().join("names/web"), 0o600),
    ] {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, expected, "{}", path.display());
    }
    Ok(())
}

#[test]
fn a_version_1_record_is_listed_and_removable_but_not_run() -> TestResult {
    let temp = tempfile::tempdir()?;
    let store = FileRecords::open(temp.path().to_path_buf())?;
    let id = store.new_id();
    let dir = store.dir(&id);
    std::fs::create_dir(&dir)?;
    let old = serde_json::json!({
        "version": 1,
        "id": id,
        "name": "legacy",
        "created": "2026-01-01T00:00:00.000000000Z",
        "argv": ["--env=A=1", "app.wasm", "x"],
        "cwd": "/home/user",
        "image": "app.wasm",
        "command": ["x"],
        "ports": [],
        "restart": "always",
        "auto_remove": false,
        "interactive": false
    });
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&old)?)?;
    let container = store.resolve("legacy")?;
    assert_eq!(container.record.version, 1);
    assert_eq!(container.record.spec.args, vec!["x"]);
    assert_eq!(container.record.spec.restart, RestartPolicy::Always);
    let error = container.record.runnable_spec().expect_err("outdated");
    assert_eq!(
        error.to_string(),
        "container legacy was created by an older berth (record format 1); remove it with `berth rm legacy` and run it again"
    );
    store.remove(&container)?;
    assert!(store.list()?.is_empty());

    // A damaged record is reported with its path, not a panic.
    let id = store.new_id();
    std::fs::create_dir(store.dir(&id))?;
    std::fs::write(store.dir(&id).join(CONFIG_FILE), b"{\"version\": 2}")?;
    let error = store.load(&id).expect_err("damaged");
    assert!(
        error.to_string().contains("is not a container record"),
        "{error}"
    );
    Ok(())
}
