//! Manifests as users write them: the example Deployment verbatim,
//! multi-document files, folders, and input written to break the reader.

use berth_scheduler::manifest::{self, ManifestError};
use berth_scheduler::{Kind, Object, validate};

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/deploy")
        .join(name)
}

#[test]
fn the_example_deployment_reads_verbatim() {
    let manifests = manifest::read_path(&example("web.yaml")).expect("valid");
    assert_eq!(manifests.len(), 1);
    let manifest = &manifests[0];
    assert!(manifest.warnings.is_empty(), "{:?}", manifest.warnings);
    let Object::Deployment(deployment) = &manifest.object else {
        panic!("a Deployment, got {:?}", manifest.object.kind());
    };
    assert_eq!(manifest.object.name(), "web");
    assert_eq!(manifest.object.namespace(), "default");
    assert_eq!(deployment.spec.replicas, Some(2));
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    let requests = validate::pod_requests(pod);
    // Requests default to limits: 0.5Gi and 200m.
    assert_eq!(requests.memory_bytes, 512 * 1024 * 1024);
    assert_eq!(requests.cpu_millis, 200);
}

#[test]
fn multi_document_files_and_lists_read_in_order() {
    let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
# a comment-only document and an empty one are skipped
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: one, namespace: shop}
    spec: {containers: [{name: app, image: hello.wasm}]}
  - apiVersion: apps/v1
    kind: ReplicaSet
    metadata: {name: two, namespace: shop}
    spec:
      replicas: 3
      selector: {matchLabels: {app: two}}
      template:
        metadata: {labels: {app: two}}
        spec: {containers: [{name: app, image: hello.wasm}]}
";
    let manifests = manifest::parse(text, "shop.yaml").expect("valid");
    let kinds: Vec<Kind> = manifests.iter().map(|m| m.object.kind()).collect();
    assert_eq!(kinds, [Kind::Namespace, Kind::Pod, Kind::ReplicaSet]);
    assert_eq!(manifests[1].object.namespace(), "shop");
    assert_eq!(manifests[0].object.namespace(), "");
}

#[test]
fn unknown_fields_warn_like_kubectl_and_ignored_fields_say_so() {
    let text = "\
apiVersion: v1
kind: Pod
metadata: {name: p, colour: blue}
spec:
  containers:
    - name: app
      image: hello.wasm
      imagePullPolcy: Always
      livenessProbe: {tcpSocket: {port: 8080}}
";
    let manifests = manifest::parse(text, "pod.yaml").expect("valid, with warnings");
    let warnings = &manifests[0].warnings;
    assert!(
        warnings.contains(&"unknown field \"metadata.colour\"".to_owned()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&"unknown field \"spec.containers[0].imagePullPolcy\"".to_owned()),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == "spec.containers[0].livenessProbe is ignored by berth"),
        "{warnings:?}"
    );
}

/// Each case: a manifest an attacker or a typo would produce, and words the
/// error must contain (the field and what is accepted).
#[test]
fn bad_manifests_are_refused_naming_the_field() {
    let deployment = |spec_tail: &str, container_tail: &str| {
        format!(
            "\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: web:1.0
{container_tail}
{spec_tail}"
        )
    };
    let cases: Vec<(String, &[&str])> = vec![
        (
            deployment("  replicas: -1", ""),
            &["spec.replicas", "0 or more", "-1"],
        ),
        (
            deployment("", "          resources: {limits: {memory: lots}}"),
            &["resources.limits.memory", "\"lots\"", "Mi"],
        ),
        (
            deployment("", "          resources: {limits: {nvidia.com/gpu: 1}}"),
            &["nvidia.com/gpu", "memory or cpu"],
        ),
        (
            deployment("", "          ports: [{containerPort: 70000}]"),
            &["ports[0].containerPort", "65535"],
        ),
        (
            deployment("", "          imagePullPolicy: Sometimes"),
            &["imagePullPolicy", "IfNotPresent"],
        ),
        (
            deployment("  strategy: {type: BlueGreen}", ""),
            &["spec.strategy.type", "Recreate"],
        ),
        (
            deployment(
                "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}",
                "",
            ),
            &["maxUnavailable", "maxSurge is 0"],
        ),
        (
            deployment("", "          env: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]"),
            &["env[0].valueFrom", "not supported"],
        ),
        (
            deployment("", "          volumeMounts: [{name: data, mountPath: /data}]"),
            &["volumeMounts[0].name", "\"data\""],
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: other}}\n    spec: {containers: [{name: web, image: w}]}\n".to_owned(),
            &["selector", "does not match"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Not_A_Name}\nspec: {containers: [{name: a, image: b}]}\n".to_owned(),
            &["metadata.name", "Not_A_Name", "lower-case"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n".to_owned(),
            &["spec.containers", "at least one"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}], volumes: [{name: v, nfs: {server: x, path: /}}]}\n".to_owned(),
            &["volumes[0].nfs", "hostPath or emptyDir"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}], volumes: [{name: v, hostPath: {path: relative}}]}\n".to_owned(),
            &["hostPath.path", "absolute"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b, ports: [{containerPort: \"eighty\"}]}]}\n".to_owned(),
            &["invalid type", "eighty"],
        ),
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n".to_owned(),
            &["unsupported kind \"Job\"", "apps/v1 Deployment"],
        ),
        (
            "kind: Pod\nmetadata: {name: p}\n".to_owned(),
            &["unsupported kind \"Pod\"", "apiVersion \"\""],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p\n".to_owned(),
            &["not valid YAML", "line"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n".to_owned(),
            &["document 2", "pod/p", "document 1"],
        ),
        ("# nothing here\n".to_owned(), &["no objects"]),
        // A billion-laughs alias bomb is refused by the YAML reader.
        (
            "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n".to_owned(),
            &["not valid YAML"],
        ),
    ];
    for (text, words) in cases {
        let error = manifest::parse(&text, "bad.yaml").expect_err(&text);
        let message = error.to_string();
        for word in words {
            assert!(message.contains(word), "{message:?} lacks {word:?}\n{text}");
        }
        assert!(message.starts_with("bad.yaml"), "{message}");
    }
}

#[test]
fn folders_read_yaml_and_json_files_in_name_order_and_refuse_empty_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"a","image":"x"}]}}"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
    let manifests = manifest::read_path(dir.path()).expect("valid");
    let names: Vec<&str> = manifests.iter().map(|m| m.object.name()).collect();
    assert_eq!(names, ["a", "b"]);
    let empty = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        manifest::read_path(empty.path()),
        Err(ManifestError::Empty { .. })
    ));
    let missing = manifest::read_path(&dir.path().join("missing.yaml")).expect_err("missing");
    assert!(missing.to_string().contains("missing.yaml"), "{missing}");
}
