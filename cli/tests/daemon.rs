//! `berth daemon` and the kubectl-style commands, through the real binary:
//! a daemon per test with its own data directory and a short restart
//! back-off, stopped at the end. Objects, status codes, watches, errors,
//! the token on TCP and the socket's mode; and pods that run: serving on
//! their own addresses, scaling, rolling updates, crash back-off, admission
//! by memory, and convergence after the daemon is killed.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Berth, Run, Served, example, free_port};

/// How long a condition the controllers bring about may take.
const CONVERGE: Duration = Duration::from_secs(30);

/// The seed's Deployment.
fn web_yaml() -> String {
    example("deploy/web.yaml").display().to_string()
}

/// A daemon on its own data directory, with a short back-off.
struct Daemon {
    berth: Berth,
    served: Served,
    _config: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_configured("restartBackoff:\n  initial: 100ms\n  max: 1s\n", extra)
    }

    /// A daemon whose config file says `config`.
    fn start_with_config(config: &str) -> Daemon {
        Daemon::start_configured(config, &[])
    }

    fn start_configured(config_text: &str, extra: &[&str]) -> Daemon {
        let berth = Berth::new();
        let config_dir = tempfile::tempdir().expect("temp dir");
        let config = config_dir.path().join("daemon.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let config = config.display().to_string();
        let mut args = vec!["daemon", "--config", config.as_str()];
        args.extend(extra);
        let served = Served::spawn_until(berth.command(&args), "berth daemon started");
        Daemon {
            berth,
            served,
            _config: config_dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.berth.home.path().join("berth.sock")
    }

    fn run(&self, args: &[&str]) -> Run {
        self.berth.run(args)
    }

    /// `berth ARGS` that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, Some(0), "berth {args:?}: {run:?}");
        run.stdout
    }

    /// `berth get ARGS -o json` as JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("get -o json prints JSON")
    }

    fn items(&self, resource: &str) -> Vec<serde_json::Value> {
        self.json(&[resource])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits, bounded, until `check` holds.
    fn wait_until(&self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let started = Instant::now();
        while !check(self) {
            assert!(
                started.elapsed() < CONVERGE,
                "{what} within {CONVERGE:?}; daemon log: {}",
                self.served.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A request over the socket: status and body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let stream = std::os::unix::net::UnixStream::connect(self.socket()).expect("connect");
        exchange(stream, method, path, &[], body)
    }

    /// Sends SIGTERM and waits, bounded, for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.served.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.served.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon did not stop on SIGTERM: {}",
                self.served.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP/1.1 exchange with `Connection: close`, for checking status
/// codes and bodies exactly as a foreign client would see them.
fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    // A server that refuses a body may answer and close before reading
    // all of it: the answer is what counts.
    let _ = stream.write_all(request.as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = answer.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        code,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        },
    )
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a `metav1.Status` failure of `code` and `reason`.
fn expect_status(answer: &(u16, String), code: u16, reason: &str) -> serde_json::Value {
    assert_eq!(answer.0, code, "{}", answer.1);
    let status = json(&answer.1);
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["apiVersion"], "v1", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], reason, "{status}");
    assert_eq!(status["code"], code, "{status}");
    status
}

fn names(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

#[test]
fn apply_of_the_seed_deployment_makes_a_replicaset_and_two_pods() {
    let daemon = Daemon::start();
    assert_eq!(
        daemon.ok(&["apply", "-f", &web_yaml()]),
        "deployment.apps/web created\n"
    );
    daemon.wait_until("2 pods", |d| d.items("pods").len() == 2);
    let deployment = daemon.json(&["deployment", "web"]);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["generation"], 1);
    assert!(deployment["metadata"]["uid"].is_string());
    assert!(deployment["metadata"]["creationTimestamp"].is_string());
    let sets = daemon.items("rs");
    assert_eq!(sets.len(), 1, "{sets:?}");
    let set = &sets[0];
    assert_eq!(
        set["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        set["metadata"]["ownerReferences"][0]["uid"],
        deployment["metadata"]["uid"]
    );
    for pod in daemon.items("po") {
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["uid"], set["metadata"]["uid"],
            "{pod}"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "0.5Gi"
        );
    }
    // The same manifest again changes nothing.
    assert_eq!(
        daemon.ok(&["apply", "-f", &web_yaml()]),
        "deployment.apps/web unchanged\n"
    );
    // kubectl's tables.
    let table = daemon.ok(&["get", "deploy"]);
    assert!(
        table.starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/2"),
        "{table}"
    );
    let table = daemon.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        table.starts_with("NAME") && table.contains("STATUS") && table.contains("IP"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    let table = daemon.ok(&["get", "replicasets", "-l", "app=web"]);
    assert!(table.contains("DESIRED   CURRENT   READY"), "{table}");
    let none = daemon.run(&["get", "pods", "-l", "app=other"]);
    assert_eq!(none.stdout, "");
    assert!(
        none.stderr
            .contains("No resources found in default namespace."),
        "{none:?}"
    );
    let several = daemon.ok(&["get", "deploy,rs"]);
    assert!(
        several.contains("\ndeployment.apps/web ") && several.contains("\nreplicaset.apps/web-"),
        "{several}"
    );
    let missing = daemon.run(&["get", "deploy", "web", "nope"]);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stdout.contains("web"), "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{missing:?}"
    );
    let yaml = daemon.ok(&["get", "deploy/web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment"), "{yaml}");
    let described = daemon.ok(&["describe", "deployment", "web"]);
    for part in [
        "Name:",
        "Replicas:",
        "2 desired",
        "NewReplicaSet:",
        "Events:",
    ] {
        assert!(described.contains(part), "{part}: {described}");
    }
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn scale_moves_the_pods_from_2_to_5_to_1() {
    let daemon = Daemon::start();
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 pods", |d| d.items("pods").len() == 2);
    assert_eq!(
        daemon.ok(&["scale", "deployment/web", "--replicas", "5"]),
        "deployment.apps/web scaled\n"
    );
    daemon.wait_until("5 pods", |d| d.items("pods").len() == 5);
    assert_eq!(daemon.json(&["deploy", "web"])["spec"]["replicas"], 5);
    daemon.ok(&["scale", "deployment", "web", "--replicas", "1"]);
    daemon.wait_until("1 pod", |d| d.items("pods").len() == 1);
    let sets = daemon.items("rs");
    assert_eq!(sets[0]["spec"]["replicas"], 1);
    let refused = daemon.run(&["scale", "deploy/web", "--replicas", "-1"]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("--replicas -1"), "{refused:?}");
    let missing = daemon.run(&["scale", "deploy/nope", "--replicas", "1"]);
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{missing:?}"
    );
}

#[test]
fn a_template_change_is_revision_2_and_undo_goes_back() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 pods", |d| d.items("pods").len() == 2);
    let v2 = std::fs::read_to_string(web_yaml())
        .expect("seed")
        .replace("image: web:1.0", "image: web:2.0");
    let v2 = write(dir.path(), "web-v2.yaml", &v2);
    assert_eq!(
        daemon.ok(&["apply", "-f", &v2]),
        "deployment.apps/web configured\n"
    );
    daemon.wait_until("a second ReplicaSet", |d| d.items("rs").len() == 2);
    let deployment = daemon.json(&["deploy", "web"]);
    assert_eq!(deployment["metadata"]["generation"], 2);
    let history = daemon.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("REVISION") && history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let revision = daemon.ok(&["rollout", "history", "deploy/web", "--revision", "2"]);
    assert!(revision.contains("web:2.0"), "{revision}");
    // The new pods never become ready (no image runs here), so the
    // rollout is not complete.
    let status = daemon.run(&["rollout", "status", "deploy/web", "--timeout", "1s"]);
    assert_ne!(status.code, Some(0), "{status:?}");
    assert!(status.stderr.contains("timed out"), "{status:?}");
    assert!(
        status.stdout.contains("Waiting for deployment"),
        "{status:?}"
    );
    assert_eq!(
        daemon.ok(&["rollout", "undo", "deployment/web"]),
        "deployment.apps/web rolled back\n"
    );
    let deployment = daemon.json(&["deploy", "web"]);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.0"
    );
    daemon.wait_until("revision 1 becomes revision 3", |d| {
        d.ok(&["rollout", "history", "deploy/web"])
            .lines()
            .any(|l| l.starts_with("3 "))
    });
    let bad = daemon.run(&["rollout", "undo", "deploy/web", "--to-revision", "9"]);
    assert!(bad.stderr.contains("revision 9"), "{bad:?}");
}

#[test]
fn create_refuses_an_existing_object() {
    let daemon = Daemon::start();
    assert_eq!(
        daemon.ok(&["create", "-f", &web_yaml()]),
        "deployment.apps/web created\n"
    );
    let again = daemon.run(&["create", "-f", &web_yaml()]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert_eq!(
        again.stderr.trim(),
        "Error from server (AlreadyExists): deployments.apps \"web\" already exists"
    );
    let deleted = daemon.ok(&["delete", "-f", &web_yaml()]);
    assert_eq!(deleted, "deployment.apps \"web\" deleted\n");
    daemon.wait_until("its pods go with it", |d| d.items("pods").is_empty());
    let gone = daemon.run(&["delete", "deploy", "web"]);
    assert!(gone.stderr.contains("(NotFound)"), "{gone:?}");
    assert_eq!(
        daemon
            .run(&["delete", "deploy", "web", "--ignore-not-found"])
            .code,
        Some(0)
    );
}

#[test]
fn bad_manifests_are_refused_by_field_and_change_nothing() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 pods", |d| d.items("pods").len() == 2);
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let before = json(&daemon.request("GET", path, None).1);
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let good_other = seed.replace("name: web", "name: other");
    let cases = [
        (
            "replicas.yaml",
            format!(
                "{good_other}---\n{}",
                seed.replace("replicas: 2", "replicas: -1")
            ),
            "spec.replicas",
        ),
        (
            "memory.yaml",
            format!(
                "{good_other}---\n{}",
                seed.replace("memory: 0.5Gi", "memory: lots")
            ),
            "resources.limits.memory",
        ),
        (
            "kind.yaml",
            format!(
                "{good_other}---\n{}",
                seed.replace("kind: Deployment", "kind: Gizmo")
            ),
            "Gizmo",
        ),
        ("syntax.yaml", format!("{good_other}---\nspec: [\n"), "YAML"),
    ];
    for (name, text, field) in &cases {
        let file = write(dir.path(), name, text);
        let run = daemon.run(&["apply", "-f", &file]);
        assert_ne!(run.code, Some(0), "{name}: {run:?}");
        assert!(run.stderr.contains(field), "{name}: {field}: {run:?}");
        let create = daemon.run(&["create", "-f", &file]);
        assert!(create.stderr.contains(field), "{name}: {create:?}");
    }
    // The same bodies sent to the API directly are refused there too.
    let invalid = daemon.request("POST", "/apis/berth.dev/v1/apply", Some(&cases[0].1));
    let status = expect_status(&invalid, 422, "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");
    let invalid = daemon.request(
        "POST",
        path,
        Some(
            &seed
                .replace("name: web", "name: third")
                .replace("memory: 0.5Gi", "memory: lots"),
        ),
    );
    let status = expect_status(&invalid, 422, "Invalid");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.template.spec.containers[0].resources.limits.memory"),
        "{status}"
    );
    let unknown = daemon.request("POST", "/apis/berth.dev/v1/apply", Some(&cases[2].1));
    expect_status(&unknown, 400, "BadRequest");
    let syntax = daemon.request("POST", path, Some("{not json"));
    expect_status(&syntax, 400, "BadRequest");
    let negative = daemon.request(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        Some(r#"{"spec":{"replicas":-1}}"#),
    );
    let status = expect_status(&negative, 422, "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");
    // Nothing changed: the same Deployments, same specs, same generations.
    // (The store-wide resourceVersion moves on as the node agent writes the
    // pods' statuses, and so may the Deployment's status.)
    let after = json(&daemon.request("GET", path, None).1);
    assert_eq!(names(before["items"].as_array().expect("items")), ["web"]);
    let desired = |list: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["metadata"]["generation"].clone(), d["spec"].clone()))
            .collect()
    };
    assert_eq!(
        names(after["items"].as_array().expect("items")),
        names(before["items"].as_array().expect("items"))
    );
    assert_eq!(desired(&after), desired(&before));
}

#[test]
fn unknown_fields_are_warnings_as_kubectls_are() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let file = write(
        dir.path(),
        "typo.yaml",
        &seed.replace("replicas: 2", "replicas: 2\n  replica: 3"),
    );
    let run = daemon.run(&["apply", "-f", &file]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("Warning: unknown field \"spec.replica\""),
        "{run:?}"
    );
    assert_eq!(run.stdout, "deployment.apps/web created\n");
}

#[test]
fn status_errors_have_the_api_servers_shape() {
    let daemon = Daemon::start();
    daemon.ok(&["apply", "-f", &web_yaml()]);
    let missing = daemon.request("GET", "/api/v1/namespaces/default/pods/nope", None);
    let status = expect_status(&missing, 404, "NotFound");
    assert_eq!(status["message"], "pods \"nope\" not found");
    expect_status(
        &daemon.request("GET", "/api/v1/gizmos", None),
        404,
        "NotFound",
    );
    expect_status(
        &daemon.request("GET", "/apis/apps/v1/namespaces/default/pods", None),
        404,
        "NotFound",
    );
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let exists = daemon.request(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&seed),
    );
    let status = expect_status(&exists, 409, "AlreadyExists");
    assert_eq!(status["message"], "deployments.apps \"web\" already exists");
    // A PUT based on an old resourceVersion is a conflict.
    let current = json(
        &daemon
            .request(
                "GET",
                "/apis/apps/v1/namespaces/default/deployments/web",
                None,
            )
            .1,
    );
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = "1".into();
    stale["spec"]["replicas"] = 3.into();
    let conflict = daemon.request(
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web",
        Some(&stale.to_string()),
    );
    expect_status(&conflict, 409, "Conflict");
    let too_big = "x".repeat(17 * 1024 * 1024);
    let refused = daemon.request(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(&too_big),
    );
    expect_status(&refused, 413, "RequestEntityTooLarge");
    expect_status(
        &daemon.request(
            "DELETE",
            "/apis/apps/v1/namespaces/default/deployments",
            None,
        ),
        405,
        "MethodNotAllowed",
    );
    expect_status(
        &daemon.request(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments?watch=true&timeoutSeconds=soon",
            None,
        ),
        400,
        "BadRequest",
    );
    let version = json(&daemon.request("GET", "/version", None).1);
    assert_eq!(version["major"], "1");
    assert_eq!(
        daemon.request("GET", "/healthz", None),
        (200, "ok".to_owned())
    );
}

#[test]
fn list_and_watch_follow_kubernetes() {
    let daemon = Daemon::start();
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 pods", |d| d.items("pods").len() == 2);
    let list = json(
        &daemon
            .request(
                "GET",
                "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
                None,
            )
            .1,
    );
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let all = json(&daemon.request("GET", "/api/v1/pods", None).1);
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    let bad = daemon.request(
        "GET",
        "/api/v1/namespaces/default/pods?labelSelector=app%20in%20web",
        None,
    );
    expect_status(&bad, 400, "BadRequest");
    // A watch without a version starts with the objects as ADDED.
    let (code, body) = daemon.request(
        "GET",
        "/apis/apps/v1/namespaces/default/deployments?watch=true&timeoutSeconds=1",
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<serde_json::Value> = body.lines().map(json).collect();
    assert_eq!(events[0]["type"], "ADDED", "{body}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "web");
    // A watch from a list's version sees what changed after it.
    let version = json(
        &daemon
            .request("GET", "/apis/apps/v1/namespaces/default/deployments", None)
            .1,
    )["metadata"]["resourceVersion"]
        .as_str()
        .expect("version")
        .to_owned();
    daemon.ok(&["scale", "deploy/web", "--replicas", "3"]);
    let (code, body) = daemon.request(
        "GET",
        &format!(
            "/apis/apps/v1/namespaces/default/deployments?watch=true&resourceVersion={version}&timeoutSeconds=1"
        ),
        None,
    );
    assert_eq!(code, 200);
    let events: Vec<serde_json::Value> = body.lines().map(json).collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "MODIFIED" && e["object"]["spec"]["replicas"] == 3),
        "{body}"
    );
    assert!(events.iter().all(|e| e["type"] != "ADDED"), "{body}");
    // Events of an object, by field selector.
    let events = json(
        &daemon
            .request("GET", "/api/v1/namespaces/default/events", None)
            .1,
    );
    assert_eq!(events["kind"], "EventList");
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let daemon = Daemon::start();
    daemon.ok(&["apply", "-f", &web_yaml()]);
    let watch = Served::spawn_until(daemon.berth.command(&["get", "deploy", "-w"]), "web");
    daemon.ok(&["scale", "deploy/web", "--replicas", "4"]);
    let log = watch.log_containing("/4");
    assert!(log.starts_with("NAME"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("web") && l.contains("/4")),
        "{log}"
    );
    // Stopping the daemon ends its open watches, and the watch command.
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let mut watch = watch;
    let started = Instant::now();
    while watch.child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "get -w did not end with the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_tcp_api_wants_the_token() {
    let port = free_port();
    let tokens = tempfile::tempdir().expect("temp dir");
    let token = "s3cret-token-of-the-daemon";
    let token_file = write(tokens.path(), "token", &format!("{token}\n"));
    let wrong_file = write(tokens.path(), "wrong", "not-the-token-at-all\n");
    for file in [&token_file, &wrong_file] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with(&["--listen", &listen, "--token-file", &token_file]);
    let tcp = || std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let status = expect_status(
        &exchange(tcp(), "GET", path, &[], None),
        401,
        "Unauthorized",
    );
    assert_eq!(status["message"], "Unauthorized");
    let wrong = exchange(
        tcp(),
        "GET",
        path,
        &[("Authorization", "Bearer s3cret-token-of-the-daemoN")],
        None,
    );
    expect_status(&wrong, 401, "Unauthorized");
    let bearer = format!("Bearer {token}");
    let (code, body) = exchange(tcp(), "GET", path, &[("Authorization", &bearer)], None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["kind"], "DeploymentList");

    let server = format!("http://{listen}");
    let applied = daemon.run(&[
        "apply",
        "-f",
        &web_yaml(),
        "--server",
        &server,
        "--token-file",
        &token_file,
    ]);
    assert_eq!(
        applied.stdout, "deployment.apps/web created\n",
        "{applied:?}"
    );
    let mut command = daemon.berth.command(&["get", "deploy"]);
    command
        .env("BERTH_SERVER", &server)
        .env("BERTH_TOKEN_FILE", &wrong_file);
    let refused = daemon
        .berth
        .run_with(command, None, Duration::from_secs(60));
    assert!(
        refused.stderr.contains("Error from server (Unauthorized)"),
        "{refused:?}"
    );
    let unauthenticated = daemon.run(&["get", "deploy", "--server", &server]);
    assert!(
        unauthenticated.stderr.contains("(Unauthorized)"),
        "{unauthenticated:?}"
    );
}

#[test]
fn listen_is_refused_without_a_token_or_off_loopback() {
    let berth = Berth::new();
    let tokens = tempfile::tempdir().expect("temp dir");
    let run = berth.run(&["daemon", "--listen", "127.0.0.1:0"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--token-file"), "{run:?}");
    let token = write(tokens.path(), "token", "a-long-enough-token-value");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let run = berth.run(&["daemon", "--listen", "0.0.0.0:0", "--token-file", &token]);
    assert!(run.stderr.contains("only loopback"), "{run:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let run = berth.run(&["daemon", "--listen", "127.0.0.1:0", "--token-file", &token]);
    assert!(run.stderr.contains("chmod 600"), "{run:?}");
    let config = write(tokens.path(), "bad.yaml", "allocatable:\n  memroy: 1Gi\n");
    let run = berth.run(&["daemon", "--config", &config]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("memroy"), "{run:?}");
}

#[test]
fn the_socket_is_owner_only_and_one_daemon_serves_a_home() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start();
    let mode = std::fs::metadata(daemon.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let second = daemon.run(&["daemon"]);
    assert_ne!(second.code, Some(0));
    assert!(
        second.stderr.contains("another berth daemon is running"),
        "{second:?}"
    );
    let socket = daemon.socket();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket is removed on a clean stop");
    // Something that is not a socket at its path is never removed.
    let berth = Berth::new();
    let planted = berth.home.path().join("berth.sock");
    std::fs::write(&planted, "mine").expect("plant a file");
    let run = berth.run(&["daemon"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("is not a socket"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&planted).expect("kept"), "mine");
}

#[test]
fn without_a_daemon_the_commands_say_how_to_start_one() {
    let berth = Berth::new();
    let run = berth.run(&["get", "pods"]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("cannot reach the berth daemon at")
            && run.stderr.contains("start it with `berth daemon`"),
        "{run:?}"
    );
    let run = berth.run(&["apply", "-f", &web_yaml()]);
    assert!(run.stderr.contains("berth daemon"), "{run:?}");
}

#[test]
fn apply_reads_stdin_and_puts_namespaces_first() {
    let daemon = Daemon::start();
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let text = format!(
        "{}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
        seed.replace("  name: web\n", "  name: web\n  namespace: shop\n")
    );
    let run = daemon.berth.run_with(
        daemon.berth.command(&["apply", "-f", "-"]),
        Some(text.as_bytes()),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "namespace/shop created\ndeployment.apps/web created\n"
    );
    let listed = daemon.json(&["deploy", "-n", "shop"]);
    assert_eq!(names(listed["items"].as_array().expect("items")), ["web"]);
}

#[test]
fn namespaces_hold_objects_apart() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = daemon.run(&["apply", "-f", &web_yaml(), "-n", "team"]);
    assert!(
        missing.stderr.contains("namespaces \"team\" not found"),
        "{missing:?}"
    );
    let namespace = write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
    );
    daemon.ok(&["apply", "-f", &namespace]);
    daemon.ok(&["apply", "-f", &web_yaml(), "-n", "team"]);
    daemon.wait_until("pods in team", |d| {
        d.json(&["pods", "-n", "team"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    });
    assert!(daemon.items("pods").is_empty());
    let all = daemon.ok(&["get", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME"), "{all}");
    let spaces = daemon.ok(&["get", "ns"]);
    assert!(
        spaces.contains("default") && spaces.contains("team"),
        "{spaces}"
    );
    daemon.ok(&["delete", "ns", "team"]);
    daemon.wait_until("team's pods gone", |d| {
        d.json(&["pods", "-A"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
}

impl Daemon {
    /// Kills the daemon with SIGKILL (its socket stays behind) and starts
    /// it again on the same data directory.
    fn kill_and_restart(self) -> Daemon {
        let Daemon {
            berth,
            mut served,
            _config,
        } = self;
        let _ = served.child.kill();
        let _ = served.child.wait();
        drop(served);
        let config = _config.path().join("daemon.yaml").display().to_string();
        let served = Served::spawn_until(
            berth.command(&["daemon", "--config", &config]),
            "berth daemon started",
        );
        Daemon {
            berth,
            served,
            _config,
        }
    }
}

#[test]
fn desired_state_survives_sigkill_and_an_apply_is_all_or_nothing() {
    let mut daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.ok(&["scale", "deploy/web", "--replicas", "3"]);
    daemon.wait_until("3 pods", |d| d.items("pods").len() == 3);
    let pods_before = names(&daemon.items("pods"));
    daemon = daemon.kill_and_restart();
    assert_eq!(daemon.json(&["deploy", "web"])["spec"]["replicas"], 3);
    assert_eq!(names(&daemon.items("pods")), pods_before);

    // Twenty Deployments in one file, the daemon killed while applying:
    // after a restart there are all of them or none.
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let many: Vec<String> = (0..20)
        .map(|n| {
            seed.replace("name: web", &format!("name: app{n}"))
                .replace("replicas: 2", "replicas: 1")
        })
        .collect();
    let file = write(dir.path(), "many.yaml", &many.join("---\n"));
    for delay_ms in [0u64, 20, 60] {
        let mut apply = daemon.berth.command(&["apply", "-f", &file]);
        apply
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut apply = apply.spawn().expect("spawn apply");
        std::thread::sleep(Duration::from_millis(delay_ms));
        daemon = daemon.kill_and_restart();
        let _ = apply.kill();
        let _ = apply.wait();
        let count = daemon
            .items("deploy")
            .iter()
            .filter(|d| d["metadata"]["name"] != "web")
            .count();
        assert!(
            count == 0 || count == 20,
            "after {delay_ms} ms: {count} of 20"
        );
        daemon.ok(&["apply", "-f", &file]);
        daemon.wait_until("each app has its pod", |d| d.items("pods").len() == 23);
        daemon.ok(&["delete", "-f", &file]);
        daemon.wait_until("the apps' pods are gone", |d| d.items("pods").len() == 3);
    }
}

/// Forwards TCP connections on a loopback port to the daemon's socket, so
/// that a client without unix-socket support (kubectl) reaches the API as
/// the socket's owner would. Lives as long as the test process.
fn socket_on_tcp(socket: PathBuf) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::os::unix::net::UnixStream::connect(&socket) else {
                return;
            };
            let (Ok(mut client_read), Ok(mut server_read)) =
                (client.try_clone(), server.try_clone())
            else {
                return;
            };
            let (mut client_write, mut server_write) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_read, &mut server_write);
                let _ = server_write.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_read, &mut client_write);
                let _ = client_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn real_kubectl_drives_the_api() {
    let Some(kubectl) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    }) else {
        eprintln!("skipped: no kubectl on PATH");
        return;
    };
    let daemon = Daemon::start();
    let port = socket_on_tcp(daemon.socket());
    let kube = tempfile::tempdir().expect("temp dir");
    let kubectl = |args: &[&str]| {
        let mut command = std::process::Command::new(&kubectl);
        command
            .args(["--server", &format!("http://127.0.0.1:{port}")])
            .args(args)
            .env("KUBECONFIG", kube.path().join("none"))
            .env("HOME", kube.path());
        daemon
            .berth
            .run_with(command, None, Duration::from_secs(60))
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // kubectl validates against the server's OpenAPI schema, which berth
    // does not serve: the daemon validates every object itself.
    let applied = kubectl(&["apply", "--validate=false", "-f", &web_yaml()]);
    assert_eq!(
        applied.stdout, "deployment.apps/web created\n",
        "{applied:?}"
    );
    let v2 = std::fs::read_to_string(web_yaml())
        .expect("seed")
        .replace("image: web:1.0", "image: web:2.0");
    let v2 = write(dir.path(), "web-v2.yaml", &v2);
    let applied = kubectl(&["apply", "--validate=false", "-f", &v2]);
    assert_eq!(
        applied.stdout, "deployment.apps/web configured\n",
        "{applied:?}"
    );
    // kubectl apply sends a strategic merge patch of the image alone: the
    // container keeps its ports and limits.
    let deployment = daemon.json(&["deploy", "web"]);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "web:2.0", "{container}");
    assert_eq!(container["ports"][0]["containerPort"], 8080, "{container}");
    assert_eq!(
        container["resources"]["limits"]["cpu"], "200m",
        "{container}"
    );
    // The daemon renders kubectl's columns as a server-side Table.
    let table = kubectl(&["get", "deployments"]);
    assert!(
        table
            .stdout
            .starts_with("NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/2"),
        "{table:?}"
    );
    let listed = kubectl(&["get", "deployments", "-o", "json"]);
    assert_eq!(json(&listed.stdout)["items"][0]["metadata"]["name"], "web");
    let scaled = kubectl(&["scale", "deployment/web", "--replicas=3"]);
    assert_eq!(scaled.stdout, "deployment.apps/web scaled\n", "{scaled:?}");
    assert_eq!(daemon.json(&["deploy", "web"])["spec"]["replicas"], 3);
    daemon.wait_until("two revisions", |d| d.items("rs").len() == 2);
    let undone = kubectl(&["rollout", "undo", "deployment/web"]);
    assert_eq!(
        undone.stdout, "deployment.apps/web rolled back\n",
        "{undone:?}"
    );
    assert_eq!(
        daemon.json(&["deploy", "web"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1.0"
    );
    let missing = kubectl(&["delete", "pod", "nope"]);
    assert!(
        missing
            .stderr
            .contains("Error from server (NotFound): pods \"nope\" not found"),
        "{missing:?}"
    );
    let created = kubectl(&["create", "--validate=false", "-f", &web_yaml()]);
    assert!(
        created.stderr.contains("(AlreadyExists)") && created.stderr.contains("already exists"),
        "{created:?}"
    );
    let resources = kubectl(&["api-resources"]);
    assert!(
        resources
            .stdout
            .lines()
            .any(|l| l.starts_with("deployments") && l.contains("deploy")),
        "{resources:?}"
    );
    let deleted = kubectl(&["delete", "deployment", "web"]);
    assert_eq!(
        deleted.stdout, "deployment.apps \"web\" deleted\n",
        "{deleted:?}"
    );
}

// Pods that run: the node agent starts them as sandboxes of the daemon.

/// Builds an image named `tag` in the daemon's home: the example program
/// `program` as its entry point, with port 8080 exposed when `serves`.
fn build_image(daemon: &Daemon, tag: &str, program: &str, serves: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        example(&format!("wasm/{program}")),
        dir.path().join(program),
    )
    .expect("copy the program");
    let expose = if serves { "EXPOSE 8080\n" } else { "" };
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY {program} /app/{program}\n{expose}ENTRYPOINT [\"/app/{program}\"]\n"
        ),
    )
    .expect("write the Dockerfile");
    daemon.ok(&["build", "-t", tag, &dir.path().display().to_string()]);
}

/// Pods whose containers all run and are ready.
fn running(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .items("pods")
        .into_iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|c| c["ready"] == true))
        })
        .collect()
}

/// Images of the running pods, sorted.
fn running_images(daemon: &Daemon) -> Vec<String> {
    let mut images: Vec<String> = running(daemon)
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    images.sort();
    images
}

/// `GET path` from a pod's address, port 8080: status and body, or `None`
/// when nothing answers.
fn get_from(ip: &str, path: &str) -> Option<(u16, String)> {
    let address: std::net::SocketAddr = format!("{ip}:8080").parse().ok()?;
    let stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    Some(exchange(stream, "GET", path, &[], None))
}

fn pod_ips(pods: &[serde_json::Value]) -> Vec<String> {
    let mut ips: Vec<String> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_owned())
        .collect();
    ips.sort();
    ips
}

#[test]
#[cfg(target_os = "linux")]
fn the_seed_deployment_runs_pods_that_answer_on_their_own_addresses() {
    let daemon = Daemon::start();
    build_image(&daemon, "web:1.0", "http-hello.wasm", true);
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 running pods", |d| running(d).len() == 2);
    let ips = pod_ips(&running(&daemon));
    assert_ne!(ips[0], ips[1], "each pod has its own address");
    for ip in &ips {
        let (code, body) = get_from(ip, "/").expect("the pod answers");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("Hello from berth"), "{body}");
    }
    let wide = daemon.ok(&["get", "pods", "-o", "wide"]);
    for ip in &ips {
        assert!(wide.contains(ip.as_str()), "{wide}");
    }
    assert!(wide.contains("Running"), "{wide}");
    let ready = daemon.ok(&["get", "deploy", "web"]);
    assert!(ready.contains("2/2"), "{ready}");

    daemon.ok(&["scale", "deployment/web", "--replicas", "5"]);
    daemon.wait_until("5 running pods", |d| running(d).len() == 5);
    let five = pod_ips(&running(&daemon));
    let mut distinct = five.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{five:?}");
    daemon.ok(&["scale", "deployment/web", "--replicas", "1"]);
    daemon.wait_until("1 pod", |d| {
        d.items("pods").len() == 1 && running(d).len() == 1
    });
    let kept = pod_ips(&running(&daemon));
    for ip in five.iter().filter(|ip| !kept.contains(ip)) {
        assert!(
            get_from(ip, "/").is_none(),
            "a removed pod's address {ip} still answers"
        );
    }
    let top = daemon.ok(&["top", "pods"]);
    assert!(top.starts_with("NAME"), "{top}");
    assert!(top.contains("web-"), "{top}");
    let described = daemon.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("from 5 to 1"),
        "{described}"
    );
}

#[test]
#[cfg(target_os = "linux")]
fn a_rolling_update_serves_the_new_version_and_undo_the_old() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    build_image(&daemon, "web:1.0", "http-hello.wasm", true);
    build_image(&daemon, "web:2.0", "http-json.wasm", true);
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("v1 runs", |d| running_images(d) == ["web:1.0", "web:1.0"]);
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let v2 = write(dir.path(), "v2.yaml", &seed.replace("web:1.0", "web:2.0"));
    daemon.ok(&["apply", "-f", &v2]);
    let status = daemon.ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    daemon.wait_until("only v2 runs", |d| {
        running_images(d) == ["web:2.0", "web:2.0"] && d.items("pods").len() == 2
    });
    for ip in pod_ips(&running(&daemon)) {
        let (code, body) = get_from(&ip, "/health").expect("v2 answers");
        assert_eq!(code, 200, "{body}");
        assert!(!body.contains("Hello from berth"), "{body}");
    }
    let history = daemon.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    daemon.ok(&["rollout", "undo", "deployment/web"]);
    daemon.wait_until("v1 runs again", |d| {
        running_images(d) == ["web:1.0", "web:1.0"] && d.items("pods").len() == 2
    });
    for ip in pod_ips(&running(&daemon)) {
        let (_, body) = get_from(&ip, "/").expect("v1 answers");
        assert!(body.contains("Hello from berth"), "{body}");
    }
}

#[test]
fn a_crashing_pod_restarts_with_back_off() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    build_image(&daemon, "crash:1", "exitcode.wasm", false);
    let pod = write(
        dir.path(),
        "crash.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n  containers:\n    - name: crash\n      image: crash:1\n      args: [\"3\"]\n",
    );
    daemon.ok(&["apply", "-f", &pod]);
    daemon.wait_until("two restarts", |d| {
        d.json(&["pod", "crash"])["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });
    let status = daemon.json(&["pod", "crash"])["status"]["containerStatuses"][0].clone();
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(
        status["lastState"]["terminated"]["reason"], "Error",
        "{status}"
    );
    daemon.wait_until("CrashLoopBackOff shown", |d| {
        d.ok(&["get", "pod", "crash"]).contains("CrashLoopBackOff")
    });
    let described = daemon.ok(&["describe", "pod", "crash"]);
    assert!(described.contains("BackOff"), "{described}");
}

#[test]
fn a_pod_that_does_not_fit_waits_until_a_scale_down_makes_room() {
    let daemon = Daemon::start_with_config(
        "allocatable:\n  memory: 1Gi\n  cpu: \"2\"\nrestartBackoff:\n  initial: 100ms\n  max: 1s\n",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    build_image(&daemon, "web:1.0", "http-hello.wasm", true);
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 running pods", |d| running(d).len() == 2);
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let extra = write(
        dir.path(),
        "extra.yaml",
        &seed
            .replace("name: web", "name: extra")
            .replace("app: web", "app: extra")
            .replace("replicas: 2", "replicas: 1"),
    );
    daemon.ok(&["apply", "-f", &extra]);
    daemon.wait_until("the extra pod is Pending for memory", |d| {
        d.json(&["pods", "-l", "app=extra"])["items"]
            .as_array()
            .and_then(|i| i.first().cloned())
            .is_some_and(|p| {
                p["status"]["phase"] == "Pending"
                    && p["status"]["conditions"]
                        .to_string()
                        .contains("Insufficient memory")
            })
    });
    let pending = daemon.ok(&["get", "pods", "-l", "app=extra"]);
    assert!(pending.contains("Pending"), "{pending}");
    daemon.ok(&["scale", "deployment/web", "--replicas", "1"]);
    daemon.wait_until("the extra pod runs", |d| {
        running(d)
            .iter()
            .any(|p| p["metadata"]["labels"]["app"] == "extra")
    });
}

#[test]
#[cfg(target_os = "linux")]
fn pods_converge_after_sigkill_mid_scale_and_mid_rollout() {
    let mut daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    build_image(&daemon, "web:1.0", "http-hello.wasm", true);
    build_image(&daemon, "web:2.0", "http-json.wasm", true);
    daemon.ok(&["apply", "-f", &web_yaml()]);
    daemon.wait_until("2 running pods", |d| running(d).len() == 2);
    let seed = std::fs::read_to_string(web_yaml()).expect("seed");
    let v2 = write(dir.path(), "v2.yaml", &seed.replace("web:1.0", "web:2.0"));
    let steps: [(&[&str], u64); 4] = [
        (&["scale", "deployment/web", "--replicas", "4"], 0),
        (&["apply", "-f", v2.as_str()], 15),
        (&["scale", "deployment/web", "--replicas", "3"], 40),
        (&["rollout", "undo", "deployment/web"], 5),
    ];
    for (args, delay_ms) in steps {
        let mut command = daemon.berth.command(args);
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut client = command.spawn().expect("spawn the client");
        std::thread::sleep(Duration::from_millis(delay_ms));
        daemon = daemon.kill_and_restart();
        let _ = client.kill();
        let _ = client.wait();
        // Whatever the kill interrupted, the pods converge to what is
        // stored: as many running pods as the Deployment wants, all of its
        // template's image, and nothing else.
        daemon.wait_until("pods converge after the restart", |d| {
            let deployment = d.json(&["deploy", "web"]);
            let want = deployment["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
            let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            d.items("pods").len() == want && running_images(d) == vec![image; want]
        });
        for ip in pod_ips(&running(&daemon)) {
            assert!(get_from(&ip, "/").is_some(), "{ip} does not answer");
        }
    }
}
