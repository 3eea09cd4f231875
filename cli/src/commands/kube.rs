//! The kubectl-style commands (`apply`, `create`, `get`, `describe`,
//! `delete`, `scale`, `rollout`, `logs POD`, `top pods`): each a client of
//! the daemon's API, with kubectl's flags, resource names and output.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_scheduler::k8s_openapi::api::apps::v1::Deployment;
use berth_scheduler::{Kind, Manifest, Object, controller, manifest};
use clap::{Args, Subcommand};
use hyper::Method;

use super::client::{Client, Connection, ServerError, encode};
use super::kube_print as print;

/// kubectl's exit code for a failed command.
const EXIT_FAILED: u8 = 1;

// ---- paths ----

/// The API path of `kind`'s objects in `namespace` (all when `None`).
pub fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    let prefix = match kind {
        Kind::Deployment | Kind::ReplicaSet => "/apis/apps/v1",
        Kind::Namespace | Kind::Pod => "/api/v1",
    };
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => format!("{prefix}/namespaces/{}/{}", encode(ns), kind.plural()),
        _ => format!("{prefix}/{}", kind.plural()),
    }
}

/// The API path of one object.
pub fn object_path(kind: Kind, namespace: &str, name: &str) -> String {
    format!(
        "{}/{}",
        collection_path(kind, Some(namespace)),
        encode(name)
    )
}

/// `deploy`, `deployment/web`, `deployments.apps/web` → kind and name.
fn resource(text: &str) -> Result<(Kind, Option<String>)> {
    let (kind_text, name) = match text.split_once('/') {
        Some((kind, name)) => (kind, Some(name.to_owned())),
        None => (text, None),
    };
    let kind_text = kind_text.strip_suffix(".apps").unwrap_or(kind_text);
    let kind = Kind::from_resource_name(kind_text).with_context(|| {
        format!(
            "the server doesn't have a resource type {kind_text:?}: berth serves pods (po), deployments (deploy), replicasets (rs) and namespaces (ns)"
        )
    })?;
    Ok((kind, name.filter(|n| !n.is_empty())))
}

/// `TYPE NAME` or `TYPE/NAME` → kind and name.
fn one_target(target: &str, name: Option<&str>) -> Result<(Kind, String)> {
    let (kind, inline) = resource(target)?;
    match (inline, name) {
        (Some(name), None) => Ok((kind, name)),
        (None, Some(name)) => Ok((kind, name.to_owned())),
        (Some(_), Some(extra)) => bail!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {extra:?} as well)"
        ),
        (None, None) => bail!("a name is required: {target}/NAME or {target} NAME"),
    }
}

fn object_from(kind: Kind, value: serde_json::Value) -> Result<Object> {
    Object::from_json(kind, value).with_context(|| format!("the daemon sent an unreadable {kind}"))
}

// ---- reading manifests ----

/// The manifests of every `-f` source (a file, a folder or `-`).
fn read_manifests(sources: &[String]) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for source in sources {
        if source == "-" {
            use std::io::Read;
            let mut text = String::new();
            std::io::stdin()
                .take(manifest::MAX_MANIFEST_BYTES + 1)
                .read_to_string(&mut text)
                .context("cannot read manifests from stdin")?;
            if text.len() as u64 > manifest::MAX_MANIFEST_BYTES {
                bail!("stdin: larger than 16 MiB");
            }
            manifests.extend(manifest::parse(&text, "-")?);
        } else {
            manifests.extend(manifest::read_path(Path::new(source))?);
        }
    }
    for manifest in &manifests {
        for warning in &manifest.warnings {
            eprintln!("Warning: {warning}");
        }
    }
    Ok(manifests)
}

/// Puts `-n` on the objects that have no namespace; refuses one whose own
/// namespace differs, as kubectl does.
fn place(manifests: &mut [Manifest], namespace: Option<&str>) -> Result<()> {
    let Some(namespace) = namespace else {
        return Ok(());
    };
    for manifest in manifests {
        if !manifest.object.kind().namespaced() {
            continue;
        }
        match manifest.object.metadata().namespace.as_deref() {
            Some(own) if own != namespace => bail!(
                "the namespace from the provided object {own:?} does not match the namespace {namespace:?}: you must pass '--namespace={own}' to perform this operation"
            ),
            _ => manifest.object.metadata_mut().namespace = Some(namespace.to_owned()),
        }
    }
    Ok(())
}

// ---- apply and create ----

// Flags of `berth apply` and `berth create`.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// A manifest file, a folder of them, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
    /// The namespace of objects that name none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// `berth apply -f`: every object of the invocation in one transaction.
pub fn apply_command(args: ManifestArgs) -> Result<u8> {
    let mut manifests = read_manifests(&args.files)?;
    place(&mut manifests, args.namespace.as_deref())?;
    let client = Client::new(&args.connection)?;
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": manifests.iter().map(|m| m.object.to_json()).collect::<Vec<_>>(),
    });
    let answer = client.send_json(
        Method::POST,
        "/apis/berth.dev/v1/apply",
        "application/json",
        &list,
    )?;
    for result in answer["results"].as_array().into_iter().flatten() {
        println!(
            "{} {}",
            result["reference"].as_str().unwrap_or_default(),
            result["result"].as_str().unwrap_or_default()
        );
    }
    Ok(0)
}

/// `berth create -f`: creates each object; one that exists is an error.
pub fn create_command(args: ManifestArgs) -> Result<u8> {
    let mut manifests = read_manifests(&args.files)?;
    place(&mut manifests, args.namespace.as_deref())?;
    // Namespaces before what lives in them, whatever the order given.
    manifests.sort_by_key(|m| m.object.kind() != Kind::Namespace);
    let client = Client::new(&args.connection)?;
    let mut code = 0;
    for manifest in &manifests {
        let object = &manifest.object;
        let path = collection_path(object.kind(), Some(object.namespace()));
        match client.send_json(Method::POST, &path, "application/json", &object.to_json()) {
            Ok(_) => println!("{} created", object.reference()),
            Err(error) if error.downcast_ref::<ServerError>().is_some() => {
                eprintln!("{error}");
                code = EXIT_FAILED;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(code)
}

// ---- get ----

// Flags of `berth get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// pods (po), deployments (deploy), replicasets (rs) or namespaces
    /// (ns); or TYPE/NAME.
    #[arg(value_name = "TYPE")]
    resource: String,
    /// Only these objects.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only objects whose labels match (key=value,key!=value,...).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    /// wide, json, yaml or name.
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    output: Option<String>,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    connection: Connection,
}

/// The output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// kubectl's table.
    Table,
    /// The table with more columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `kind/name`.
    Name,
}

fn format(text: Option<&str>) -> Result<Format> {
    Ok(match text {
        None => Format::Table,
        Some("wide") => Format::Wide,
        Some("json") => Format::Json,
        Some("yaml") => Format::Yaml,
        Some("name") => Format::Name,
        Some(other) => bail!(
            "unable to match a printer suitable for the output format {other:?}: accepted are wide, json, yaml and name"
        ),
    })
}

fn namespace_of(namespace: &Option<String>) -> String {
    namespace.clone().unwrap_or_else(|| "default".to_owned())
}

/// A list's objects and version, or the named objects (errors for the
/// missing ones printed, and flagged).
fn fetch(
    client: &Client,
    kind: Kind,
    names: &[String],
    namespace: &str,
    scope: Option<&str>,
    selector: Option<&str>,
) -> Result<(Vec<Object>, Option<String>, bool)> {
    if names.is_empty() {
        let mut path = collection_path(kind, scope);
        if let Some(selector) = selector {
            path.push_str(&format!("?labelSelector={}", encode(selector)));
        }
        let list = client.get(&path)?;
        let version = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_owned();
        let objects = list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|item| object_from(kind, item))
            .collect::<Result<Vec<_>>>()?;
        return Ok((objects, Some(version), false));
    }
    let mut objects = Vec::new();
    let mut failed = false;
    for name in names {
        let path = if kind.namespaced() {
            object_path(kind, namespace, name)
        } else {
            format!("/api/v1/namespaces/{}", encode(name))
        };
        match client.get(&path) {
            Ok(value) => objects.push(object_from(kind, value)?),
            Err(error) if error.downcast_ref::<ServerError>().is_some() => {
                eprintln!("{error}");
                failed = true;
            }
            Err(error) => return Err(error),
        }
    }
    Ok((objects, None, failed))
}

/// `berth get TYPE,TYPE...`: a table per type, names as `kind/name`.
fn get_several(args: &GetArgs, format: Format) -> Result<u8> {
    if args.watch {
        bail!("you may only specify a single resource type with --watch");
    }
    let kinds = args
        .resource
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| match resource(t)? {
            (kind, None) => Ok(kind),
            (_, Some(_)) => bail!("TYPE/NAME cannot be combined with other types: {t}"),
        })
        .collect::<Result<Vec<_>>>()?;
    let namespace = namespace_of(&args.namespace);
    let scope = (!args.all_namespaces).then_some(namespace.as_str());
    let client = Client::new(&args.connection)?;
    let mut all = Vec::new();
    let mut text = String::new();
    let mut failed = false;
    for kind in kinds {
        let (objects, _, missing) = fetch(
            &client,
            kind,
            &args.names,
            &namespace,
            scope,
            args.selector.as_deref(),
        )?;
        failed |= missing;
        if matches!(format, Format::Table | Format::Wide) && !objects.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            let wide_namespace = args.all_namespaces && kind.namespaced();
            text.push_str(&print::render(
                &objects,
                kind,
                format,
                wide_namespace,
                false,
                true,
            )?);
        }
        all.extend(objects);
    }
    if !matches!(format, Format::Table | Format::Wide) {
        let kind = all.first().map(Object::kind).unwrap_or(Kind::Pod);
        text = print::render(&all, kind, format, false, false, true)?;
    } else if all.is_empty() {
        eprintln!("No resources found in {namespace} namespace.");
    }
    print!("{text}");
    Ok(if failed { EXIT_FAILED } else { 0 })
}

/// `berth get`.
pub fn get_command(args: GetArgs) -> Result<u8> {
    let format = format(args.output.as_deref())?;
    if args.resource.contains(',') {
        return get_several(&args, format);
    }
    let (kind, inline) = resource(&args.resource)?;
    let mut names = args.names.clone();
    names.extend(inline);
    let namespace = namespace_of(&args.namespace);
    let scope = (!args.all_namespaces).then_some(namespace.as_str());
    let client = Client::new(&args.connection)?;
    let wide_namespace = args.all_namespaces && kind.namespaced();
    let (objects, version, failed) = fetch(
        &client,
        kind,
        &names,
        &namespace,
        scope,
        args.selector.as_deref(),
    )?;
    if failed && objects.is_empty() {
        return Ok(EXIT_FAILED);
    }

    let single = names.len() == 1 && objects.len() == 1;
    if objects.is_empty() && matches!(format, Format::Table | Format::Wide) && !args.watch {
        if kind.namespaced() && !args.all_namespaces {
            eprintln!("No resources found in {namespace} namespace.");
        } else {
            eprintln!("No resources found");
        }
    } else {
        let mut out = std::io::stdout().lock();
        let text = print::render(&objects, kind, format, wide_namespace, single, false)?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    if !args.watch {
        return Ok(if failed { EXIT_FAILED } else { 0 });
    }
    let mut path = collection_path(kind, scope);
    let mut query = vec!["watch=true".to_owned()];
    if let Some(version) = &version {
        query.push(format!("resourceVersion={}", encode(version)));
    }
    if let Some(selector) = &args.selector {
        query.push(format!("labelSelector={}", encode(selector)));
    }
    if !names.is_empty() && names.len() == 1 {
        query.push(format!(
            "fieldSelector={}",
            encode(&format!("metadata.name={}", names[0]))
        ));
    }
    path.push('?');
    path.push_str(&query.join("&"));
    let widths = print::widths(&objects, kind, format, wide_namespace);
    client.stream_json(&path, |event| {
        if event["type"] == "ERROR" {
            bail!(
                "the watch ended: {}",
                event["object"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
            );
        }
        let object = object_from(kind, event["object"].clone())?;
        if !names.is_empty() && !names.iter().any(|n| n == object.name()) {
            return Ok(true);
        }
        let text = print::watch_row(&object, kind, format, wide_namespace, &widths)?;
        let mut out = std::io::stdout().lock();
        // A closed stdout (a pipe's reader gone) ends the watch.
        Ok(out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_ok())
    })?;
    Ok(0)
}

// ---- describe ----

// Flags of `berth describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// pod, deployment, replicaset or namespace; or TYPE/NAME.
    #[arg(value_name = "TYPE")]
    resource: String,
    /// The object (all of the type when omitted).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// `berth describe`: an object in prose, with its events.
pub fn describe_command(args: DescribeArgs) -> Result<u8> {
    let (kind, inline) = resource(&args.resource)?;
    let namespace = namespace_of(&args.namespace);
    let client = Client::new(&args.connection)?;
    let objects = match inline.or(args.name.clone()) {
        Some(name) => vec![object_from(
            kind,
            client.get(&object_path(kind, &namespace, &name))?,
        )?],
        None => {
            let list = client.get(&collection_path(kind, Some(&namespace)))?;
            list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|item| object_from(kind, item))
                .collect::<Result<Vec<_>>>()?
        }
    };
    let mut text = String::new();
    for (index, object) in objects.iter().enumerate() {
        if index > 0 {
            text.push_str("\n\n");
        }
        let uid = object.metadata().uid.clone().unwrap_or_default();
        let events_path = format!(
            "/api/v1/namespaces/{}/events?fieldSelector={}",
            encode(if kind.namespaced() {
                object.namespace()
            } else {
                "default"
            }),
            encode(&format!("involvedObject.uid={uid}"))
        );
        let events = client.get(&events_path)?;
        let related = match object {
            Object::Deployment(d) => replica_sets_of(&client, d)?,
            _ => Vec::new(),
        };
        text.push_str(&print::describe(object, &events, &related));
    }
    print!("{text}");
    Ok(0)
}

/// A Deployment's ReplicaSets, by owner, oldest revision first.
fn replica_sets_of(
    client: &Client,
    deployment: &Deployment,
) -> Result<Vec<(i64, berth_scheduler::k8s_openapi::api::apps::v1::ReplicaSet)>> {
    let namespace = deployment
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    let list = client.get(&collection_path(Kind::ReplicaSet, Some(namespace)))?;
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let mut sets = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        if let Object::ReplicaSet(set) = object_from(Kind::ReplicaSet, item.clone())?
            && controller::controller_of(&set.metadata).is_some_and(|owner| owner.uid == uid)
        {
            let revision = set
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(controller::REVISION_ANNOTATION))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            sets.push((revision, set));
        }
    }
    sets.sort_by_key(|(revision, _)| *revision);
    Ok(sets)
}

// ---- delete ----

// Flags of `berth delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete the objects of these manifests (a file, folder or -).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    files: Vec<String>,
    /// TYPE NAME..., or TYPE/NAME...
    #[arg(value_name = "TYPE")]
    targets: Vec<String>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Ignore objects that do not exist.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `berth delete`.
pub fn delete_command(args: DeleteArgs) -> Result<u8> {
    let namespace = namespace_of(&args.namespace);
    let mut doomed: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.targets.is_empty() {
            bail!("give either -f FILE or TYPE NAME, not both");
        }
        let mut manifests = read_manifests(&args.files)?;
        place(&mut manifests, args.namespace.as_deref())?;
        for manifest in manifests {
            let object = manifest.object;
            doomed.push((
                object.kind(),
                object.namespace().to_owned(),
                object.name().to_owned(),
            ));
        }
    } else {
        let Some(first) = args.targets.first() else {
            bail!("say what to delete: -f FILE, TYPE NAME or TYPE/NAME");
        };
        if first.contains('/') {
            for target in &args.targets {
                let (kind, name) = one_target(target, None)?;
                doomed.push((kind, namespace.clone(), name));
            }
        } else {
            let (kind, _) = resource(first)?;
            if args.targets.len() < 2 {
                bail!("a name is required: berth delete {first} NAME");
            }
            for name in &args.targets[1..] {
                doomed.push((kind, namespace.clone(), name.clone()));
            }
        }
    }
    let client = Client::new(&args.connection)?;
    let mut code = 0;
    for (kind, ns, name) in doomed {
        let ns = if kind.namespaced() { ns } else { String::new() };
        let path = if kind.namespaced() {
            object_path(kind, &ns, &name)
        } else {
            format!("/api/v1/namespaces/{}", encode(&name))
        };
        match client.call(Method::DELETE, &path, None) {
            Ok(_) => println!("{} {name:?} deleted", reference_kind(kind)),
            Err(error) => match error.downcast_ref::<ServerError>() {
                Some(server) if server.code == 404 && args.ignore_not_found => {}
                Some(_) => {
                    eprintln!("{error}");
                    code = EXIT_FAILED;
                }
                None => return Err(error),
            },
        }
    }
    Ok(code)
}

/// `deployment.apps`, `pod`: the kind as kubectl names it in messages.
fn reference_kind(kind: Kind) -> String {
    match kind {
        Kind::Deployment | Kind::ReplicaSet => {
            format!("{}.apps", kind.name().to_ascii_lowercase())
        }
        Kind::Namespace | Kind::Pod => kind.name().to_ascii_lowercase(),
    }
}

// ---- scale ----

// Flags of `berth scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// deployment/NAME or replicaset/NAME (or TYPE NAME).
    #[arg(value_name = "TYPE")]
    target: String,
    /// The name, when TYPE is given alone.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The number of replicas wanted.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    replicas: i64,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// `berth scale`.
pub fn scale_command(args: ScaleArgs) -> Result<u8> {
    let (kind, name) = one_target(&args.target, args.name.as_deref())?;
    if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
        bail!("cannot scale a {kind}: deployments and replicasets scale");
    }
    if args.replicas < 0 {
        bail!(
            "--replicas {}: the number of replicas must be 0 or more",
            args.replicas
        );
    }
    let namespace = namespace_of(&args.namespace);
    let client = Client::new(&args.connection)?;
    client.send_json(
        Method::PATCH,
        &format!("{}/scale", object_path(kind, &namespace, &name)),
        "application/merge-patch+json",
        &serde_json::json!({"spec": {"replicas": args.replicas}}),
    )?;
    println!("{}/{name} scaled", reference_kind(kind));
    Ok(0)
}

// ---- rollout ----

// Subcommands of `berth rollout`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until a Deployment's rollout completes.
    Status(RolloutStatusArgs),
    /// List a Deployment's revisions.
    History(RolloutHistoryArgs),
    /// Roll a Deployment back to its previous (or a given) revision.
    Undo(RolloutUndoArgs),
}

// Flags of `berth rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// deployment/NAME (or deployment NAME).
    #[arg(value_name = "TYPE")]
    target: String,
    /// The name, when TYPE is given alone.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Give up after this long (such as 30s or 5m; default: wait forever).
    #[arg(long, value_name = "DURATION", value_parser = berth_runtime::quantity::parse_duration)]
    timeout: Option<Duration>,
    /// Wait for the rollout (`--watch=false` reports once).
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    watch: bool,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

// Flags of `berth rollout history`.
#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    /// deployment/NAME (or deployment NAME).
    #[arg(value_name = "TYPE")]
    target: String,
    /// The name, when TYPE is given alone.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Show this revision's pod template.
    #[arg(long, value_name = "N")]
    revision: Option<i64>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

// Flags of `berth rollout undo`.
#[derive(Debug, Args)]
pub struct RolloutUndoArgs {
    /// deployment/NAME (or deployment NAME).
    #[arg(value_name = "TYPE")]
    target: String,
    /// The name, when TYPE is given alone.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The revision to go back to (default: the previous one).
    #[arg(long, value_name = "N")]
    to_revision: Option<i64>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

fn deployment_target(target: &str, name: Option<&str>) -> Result<String> {
    let (kind, name) = one_target(target, name)?;
    if kind != Kind::Deployment {
        bail!("rollout works on deployments, not on a {kind}");
    }
    Ok(name)
}

/// `berth rollout`.
pub fn rollout_command(command: RolloutCommand) -> Result<u8> {
    match command {
        RolloutCommand::Status(args) => rollout_status(args),
        RolloutCommand::History(args) => rollout_history(args),
        RolloutCommand::Undo(args) => rollout_undo(args),
    }
}

/// How often `rollout status` looks again.
const STATUS_POLL: Duration = Duration::from_millis(200);

fn rollout_status(args: RolloutStatusArgs) -> Result<u8> {
    let name = deployment_target(&args.target, args.name.as_deref())?;
    let namespace = namespace_of(&args.namespace);
    let client = Client::new(&args.connection)?;
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut last = String::new();
    loop {
        let value = client.get(&object_path(Kind::Deployment, &namespace, &name))?;
        let Object::Deployment(deployment) = object_from(Kind::Deployment, value)? else {
            bail!("the daemon sent something other than a Deployment");
        };
        let (message, done) = controller::rollout_status(&deployment);
        if message != last {
            println!("{message}");
            last = message;
        }
        if done {
            return Ok(0);
        }
        if !args.watch {
            return Ok(0);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("timed out waiting for the condition");
        }
        std::thread::sleep(STATUS_POLL);
    }
}

fn rollout_history(args: RolloutHistoryArgs) -> Result<u8> {
    let name = deployment_target(&args.target, args.name.as_deref())?;
    let namespace = namespace_of(&args.namespace);
    let client = Client::new(&args.connection)?;
    let value = client.get(&object_path(Kind::Deployment, &namespace, &name))?;
    let Object::Deployment(deployment) = object_from(Kind::Deployment, value)? else {
        bail!("the daemon sent something other than a Deployment");
    };
    let sets = replica_sets_of(&client, &deployment)?;
    print!("{}", print::history(&name, &sets, args.revision)?);
    Ok(0)
}

fn rollout_undo(args: RolloutUndoArgs) -> Result<u8> {
    let name = deployment_target(&args.target, args.name.as_deref())?;
    let namespace = namespace_of(&args.namespace);
    let client = Client::new(&args.connection)?;
    client.send_json(
        Method::POST,
        &format!(
            "{}/rollback",
            object_path(Kind::Deployment, &namespace, &name)
        ),
        "application/json",
        &serde_json::json!({
            "apiVersion": "apps/v1beta1",
            "kind": "DeploymentRollback",
            "name": name,
            "rollbackTo": {"revision": args.to_revision.unwrap_or(0)},
        }),
    )?;
    println!("deployment.apps/{name} rolled back");
    Ok(0)
}

// ---- logs and top ----

/// What `berth logs` asks of a pod.
#[derive(Debug, Clone, Default)]
pub struct PodLogs {
    /// The pod.
    pub pod: String,
    /// Its namespace.
    pub namespace: Option<String>,
    /// The container, when the pod has several.
    pub container: Option<String>,
    /// Keep printing new lines.
    pub follow: bool,
    /// The previous run's log.
    pub previous: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// `berth logs POD`: a pod's log from the daemon.
pub fn pod_logs(request: PodLogs, connection: &Connection) -> Result<u8> {
    let namespace = namespace_of(&request.namespace);
    let pod = request.pod.strip_prefix("pod/").unwrap_or(&request.pod);
    let pod = pod.strip_prefix("pods/").unwrap_or(pod);
    let mut query = Vec::new();
    if let Some(container) = &request.container {
        query.push(format!("container={}", encode(container)));
    }
    if request.follow {
        query.push("follow=true".to_owned());
    }
    if request.previous {
        query.push("previous=true".to_owned());
    }
    if let Some(tail) = request.tail {
        query.push(format!("tailLines={tail}"));
    }
    let mut path = format!("{}/log", object_path(Kind::Pod, &namespace, pod));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let client = Client::new(connection)?;
    client.stream(&path, |data| {
        let mut out = std::io::stdout().lock();
        Ok(out.write_all(data).and_then(|()| out.flush()).is_ok())
    })?;
    Ok(0)
}

// Flags of `berth top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// pods (the only resource measured).
    #[arg(value_name = "TYPE")]
    resource: String,
    /// Only this pod.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `berth top pods`: memory and CPU used per pod.
pub fn top_command(args: TopArgs) -> Result<u8> {
    if resource(&args.resource)?.0 != Kind::Pod {
        bail!("berth top measures pods: berth top pods");
    }
    let namespace = namespace_of(&args.namespace);
    let path = if args.all_namespaces {
        "/apis/metrics.k8s.io/v1beta1/pods".to_owned()
    } else {
        format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods",
            encode(&namespace)
        )
    };
    let client = Client::new(&args.connection)?;
    let list = client.get(&path)?;
    let mut items: Vec<serde_json::Value> = list["items"].as_array().cloned().unwrap_or_default();
    if let Some(name) = &args.name {
        items.retain(|item| item["metadata"]["name"] == name.as_str());
        if items.is_empty() {
            bail!("Metrics not available for pod {namespace}/{name}");
        }
    }
    if items.is_empty() {
        eprintln!("No resources found in {namespace} namespace.");
        return Ok(0);
    }
    print!("{}", print::top(&items, args.all_namespaces));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_read_as_kubectls() {
        for (text, kind, name) in [
            ("po", Kind::Pod, None),
            ("deploy/web", Kind::Deployment, Some("web")),
            ("deployments.apps/web", Kind::Deployment, Some("web")),
            ("rs", Kind::ReplicaSet, None),
            ("ns", Kind::Namespace, None),
        ] {
            let (k, n) = resource(text).expect(text);
            assert_eq!((k, n.as_deref()), (kind, name), "{text}");
        }
        let error = resource("services").expect_err("unknown");
        assert!(error.to_string().contains("services"), "{error}");
    }

    #[test]
    fn api_paths_follow_kubernetes() {
        assert_eq!(
            collection_path(Kind::Deployment, Some("default")),
            "/apis/apps/v1/namespaces/default/deployments"
        );
        assert_eq!(collection_path(Kind::Pod, None), "/api/v1/pods");
        assert_eq!(
            object_path(Kind::Pod, "default", "web-1"),
            "/api/v1/namespaces/default/pods/web-1"
        );
        assert_eq!(
            collection_path(Kind::Namespace, Some("x")),
            "/api/v1/namespaces"
        );
    }
}
