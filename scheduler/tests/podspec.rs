//! Pods as berth containers: every Kubernetes field berth honours reaches
//! the container spec, and each replica gets an address of its own.

use std::net::{IpAddr, Ipv4Addr};

use berth_container::spec::{PullPolicy, RestartPolicy, Target};
use berth_scheduler::podspec::{self, AddressPool, VolumeDirs};
use berth_scheduler::{Object, manifest};

fn pod(text: &str) -> berth_scheduler::k8s_openapi::api::core::v1::Pod {
    match manifest::parse(text, "pod.yaml")
        .expect("valid")
        .remove(0)
        .object
    {
        Object::Pod(mut pod) => {
            pod.metadata.uid = Some("uid-1".to_owned());
            pod
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kubernetes_fields_become_the_container_spec() {
    let host = tempfile::tempdir().expect("temp dir");
    let pod = pod(&format!(
        "\
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  restartPolicy: OnFailure
  volumes:
    - {{name: data, hostPath: {{path: {host}}}}}
    - {{name: scratch, emptyDir: {{}}}}
  containers:
    - name: app
      image: web:1.0
      command: [/app/server.wasm, --verbose]
      args: [--port, '8080']
      workingDir: /app
      env: [{{name: MODE, value: prod}}, {{name: EMPTY}}]
      ports: [{{containerPort: 8080}}]
      resources: {{limits: {{memory: 0.5Gi, cpu: 200m}}}}
      volumeMounts:
        - {{name: data, mountPath: /data, readOnly: true}}
        - {{name: scratch, mountPath: /scratch}}
    - name: side
      image: registry.example/side
",
        host = host.path().display()
    ));
    let dirs = VolumeDirs {
        empty_dir_root: host.path().join("volumes"),
    };
    let address = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 7));
    let containers = podspec::containers(&pod, address, &dirs).expect("translates");
    assert_eq!(containers.len(), 2);
    let (name, app) = &containers[0];
    assert_eq!(name, "app");
    assert_eq!(
        app.target,
        Target::Image {
            reference: "web:1.0".to_owned(),
            pull: PullPolicy::Missing
        }
    );
    assert_eq!(app.entrypoint.as_deref(), Some("/app/server.wasm"));
    assert_eq!(app.args, ["--verbose", "--port", "8080"]);
    assert_eq!(app.workdir.as_deref(), Some("/app"));
    assert_eq!(
        app.env,
        [
            ("MODE".to_owned(), "prod".to_owned()),
            ("EMPTY".to_owned(), String::new())
        ]
    );
    assert_eq!(app.ports.len(), 1);
    assert_eq!(app.ports[0].host.to_string(), "127.1.0.7:8080");
    assert_eq!(app.ports[0].container_port, 8080);
    assert_eq!(app.limits.memory_bytes, Some(512 * 1024 * 1024));
    assert_eq!(app.limits.cpus, Some(0.2));
    assert_eq!(app.restart, RestartPolicy::OnFailure { max: None });
    assert_eq!(app.mounts[0].host, host.path());
    assert!(app.mounts[0].read_only);
    assert_eq!(app.mounts[1].host, dirs.empty_dir("uid-1", "scratch"));
    // No tag means :latest, which Kubernetes always pulls.
    let side = &containers[1].1;
    assert!(matches!(
        side.target,
        Target::Image {
            pull: PullPolicy::Always,
            ..
        }
    ));

    let made = podspec::make_empty_dirs(&pod, &dirs).expect("makes");
    assert_eq!(made, [dirs.empty_dir("uid-1", "scratch")]);
    assert!(made[0].is_dir());
    podspec::remove_empty_dirs("uid-1", &dirs).expect("removes");
    assert!(!made[0].exists());
}

#[test]
fn a_relative_command_is_refused_naming_the_field() {
    let pod = pod(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: i, command: [server.wasm]}]}\n",
    );
    let dirs = VolumeDirs {
        empty_dir_root: std::env::temp_dir(),
    };
    let error =
        podspec::containers(&pod, IpAddr::V4(Ipv4Addr::LOCALHOST), &dirs).expect_err("relative");
    assert!(
        error
            .to_string()
            .starts_with("spec.containers[0].command[0]"),
        "{error}"
    );
    assert!(error.to_string().contains("absolute"), "{error}");
}

#[test]
fn replicas_get_distinct_addresses_that_survive_a_restart_and_are_reused() {
    let mut pool = AddressPool::new(true);
    let a = pool.assign("default/web-a", None).expect("address");
    let b = pool.assign("default/web-b", None).expect("address");
    assert_ne!(a, b);
    assert_eq!(a, Ipv4Addr::new(127, 1, 0, 1));
    assert_eq!(
        pool.assign("default/web-a", None),
        Some(a),
        "stable per pod"
    );
    pool.release("default/web-a");
    assert_eq!(
        pool.assign("default/web-c", None),
        Some(a),
        "reused once free"
    );

    // After a restart, pods keep the addresses in their status.
    let mut restarted = AddressPool::new(true);
    let kept = Ipv4Addr::new(127, 1, 0, 9);
    assert_eq!(restarted.assign("default/old", Some(kept)), Some(kept));
    let fresh = restarted.assign("default/new", None).expect("address");
    assert_ne!(fresh, kept);
    // A preferred address in use, or outside the pool, is not handed out twice.
    let other = restarted
        .assign("default/other", Some(kept))
        .expect("address");
    assert_ne!(other, kept);
    let outside = restarted
        .assign("default/x", Some(Ipv4Addr::new(10, 0, 0, 1)))
        .expect("address");
    assert!(
        outside.octets()[0] == 127 && outside.octets()[1] >= 1,
        "{outside}"
    );

    let mut shared = AddressPool::new(false);
    assert_eq!(shared.assign("default/a", None), Some(Ipv4Addr::LOCALHOST));
    assert_eq!(shared.assign("default/b", None), Some(Ipv4Addr::LOCALHOST));
}

/// On Linux the whole of 127.0.0.0/8 answers: a listener on a pod's address
/// really binds, and two pods bind the same port.
#[cfg(target_os = "linux")]
#[test]
fn two_pod_addresses_bind_the_same_port() {
    let mut pool = AddressPool::for_this_system();
    let a = pool.assign("default/a", None).expect("address");
    let b = pool.assign("default/b", None).expect("address");
    let first = std::net::TcpListener::bind((a, 0)).expect("binds the first pod's address");
    let port = first.local_addr().expect("address").port();
    let _second = std::net::TcpListener::bind((b, port)).expect("same port, other pod");
}
