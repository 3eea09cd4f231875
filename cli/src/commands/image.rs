//! Image commands: `build`, `images`, `tag`, `rmi`, `inspect`, `save`,
//! `load`, `image prune`, `pull`, `push`, `login`, `logout`. Each parses
//! flags and calls `berth-registry`; nothing here knows image formats.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_registry::auth::{self, Credentials};
use berth_registry::build::{BuildOptions, build};
use berth_registry::client::{self, Auth, RemoteOptions};
use berth_registry::{ImageFormat, Reference, archive};
use clap::{Args, Subcommand};

use crate::home;

// `berth build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally tag the image (NAME[:TAG]); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Set a build-time variable declared with ARG.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Output format: `image` (OCI image with tar layers), `artifact` (CNCF
    /// wasm artifact: one application/wasm layer) or `component-layer` (OCI
    /// image whose wasm is a component layer).
    #[arg(long = "format", value_name = "FORMAT", default_value = "image")]
    format: String,
    /// Also compile the program ahead of time for TARGET (a target triple,
    /// e.g. aarch64-unknown-linux-gnu) and attach the code to the image, for
    /// a berth without the compiler; repeatable.
    #[arg(long = "precompile", value_name = "TARGET")]
    precompile: Vec<String>,
    /// Print only the image digest.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    context: PathBuf,
}

// `berth images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show digests.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Show digests.
    #[arg(long = "digests")]
    digests: bool,
}

// `berth tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The existing image (name or digest).
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The new name (NAME[:TAG]).
    #[arg(value_name = "TARGET")]
    target: String,
}

// `berth rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to untag (names or digests); blobs go with `berth image prune`.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

// `berth inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Containers (ID, short ID or name) or images to inspect.
    #[arg(value_name = "CONTAINER|IMAGE", required = true)]
    images: Vec<String>,
}

// `berth save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file (an OCI image-layout tar).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    output: PathBuf,
    /// Images to save.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

// `berth load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this tar file.
    #[arg(short = 'i', long = "input", value_name = "FILE", required = true)]
    input: PathBuf,
}

// Flags shared by commands that talk to a registry.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Use plain HTTP (automatic for localhost and 127.0.0.1).
    #[arg(long = "plain-http")]
    plain_http: bool,
    /// Don't show progress bars.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

// `berth pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The image reference (REGISTRY/REPO[:TAG|@DIGEST]).
    #[arg(value_name = "IMAGE")]
    image: String,
}

// `berth push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The local image, named with its registry (REGISTRY/REPO[:TAG]).
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Push under this name instead.
    #[arg(value_name = "DESTINATION")]
    destination: Option<String>,
}

// `berth login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short = 'u', long = "username")]
    username: Option<String>,
    /// Password (prefer --password-stdin: this one shows in the process list).
    #[arg(short = 'p', long = "password")]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Use plain HTTP (automatic for localhost and 127.0.0.1).
    #[arg(long = "plain-http")]
    plain_http: bool,
    /// The registry (host[:port]).
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

// `berth logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (host[:port]).
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

/// `berth image …`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove image names.
    Rm(RmiArgs),
    /// Show images as JSON.
    Inspect(InspectArgs),
    /// Delete blobs that no image uses.
    Prune,
    /// Compile an image's program ahead of time for a target and attach the
    /// code to the image (for a berth without the compiler).
    Precompile(PrecompileArgs),
}

// `berth image precompile`.
#[derive(Debug, Args)]
pub struct PrecompileArgs {
    /// The target triple to compile for (e.g. aarch64-unknown-linux-gnu);
    /// repeatable.
    #[arg(long = "target", value_name = "TARGET", required = true)]
    targets: Vec<String>,
    /// The image (name or digest).
    #[arg(value_name = "IMAGE")]
    image: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn human_size(bytes: u64) -> String {
    berth_runtime::quantity::format_bytes(bytes)
}

/// Runs `berth build`.
pub fn build_command(args: BuildArgs) -> Result<u8> {
    // A target berth cannot compile for fails before anything is built.
    for target in &args.precompile {
        berth_runtime::precompiled::check_target(target)?;
    }
    if !cfg!(feature = "compiler") && !args.precompile.is_empty() {
        crate::commands::run::attach_precompiled("", &args.precompile, true)?;
    }
    let store = home::open_store()?;
    let mut options = BuildOptions::new(&args.context);
    options.dockerfile = args.file;
    options.tags = args.tags;
    options.format = ImageFormat::parse(&args.format)?;
    let mut build_args = BTreeMap::new();
    for spec in &args.build_args {
        // A bare KEY passes this environment's value, as with `run -e`.
        match berth_container::flags::parse_env(spec, crate::commands::run::host_env) {
            Ok(Some((key, value))) => {
                build_args.insert(key, value);
            }
            Ok(None) => {}
            Err(_) => bail!("invalid --build-arg {spec:?}: expected KEY=VALUE"),
        }
    }
    options.build_args = build_args;
    let outcome = build(&store, &options)?;
    for note in &outcome.notes {
        eprintln!("berth: note: {note}");
    }
    let image = outcome
        .tags
        .first()
        .map(|tag| tag.short())
        .unwrap_or_else(|| outcome.digest.clone());
    crate::commands::run::precompile_image(&image);
    crate::commands::run::attach_precompiled(&outcome.digest, &args.precompile, args.quiet)?;
    if args.quiet {
        println!("{}", outcome.digest);
    } else {
        println!(
            "built {} ({}, {})",
            outcome.digest,
            outcome.format.name(),
            outcome.os
        );
        for tag in &outcome.tags {
            println!("tagged {}", tag.short());
        }
    }
    Ok(0)
}

/// Runs `berth images`.
pub fn images_command(args: ImagesArgs) -> Result<u8> {
    let store = home::open_store()?;
    let images = store.images()?;
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for image in &images {
            if seen.insert(image.digest.clone()) {
                println!("{}", short_digest(&image.digest));
            }
        }
        return Ok(0);
    }
    let mut rows = vec![vec![
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        if args.digests { "DIGEST" } else { "IMAGE ID" }.to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    for image in &images {
        let (repository, tag) = match &image.name {
            Some(name) => (name.short_name(), name.tag().unwrap_or("<none>").to_owned()),
            None => ("<none>".to_owned(), "<none>".to_owned()),
        };
        rows.push(vec![
            repository,
            tag,
            if args.digests {
                image.digest.clone()
            } else {
                short_digest(&image.digest).to_owned()
            },
            image.created.clone().unwrap_or_else(|| "-".into()),
            human_size(image.size),
        ]);
    }
    print!("{}", crate::commands::table(&rows));
    Ok(0)
}

/// Runs `berth tag`.
pub fn tag_command(args: TagArgs) -> Result<u8> {
    home::open_store()?.tag_image(&args.source, &args.target)?;
    Ok(0)
}

/// Runs `berth rmi`.
pub fn rmi_command(args: RmiArgs) -> Result<u8> {
    let store = home::open_store()?;
    for image in &args.images {
        let removed = store.remove(image)?;
        for name in &removed.untagged {
            println!("Untagged: {name}");
        }
    }
    Ok(0)
}

/// Runs `berth inspect`: manifest, config and run configuration as JSON.
pub fn inspect_command(args: InspectArgs) -> Result<u8> {
    let store = home::open_store()?;
    let mut out = Vec::new();
    for image in &args.images {
        // Containers first, as docker does.
        if let Some(container) = crate::commands::container::inspect_container(image)? {
            out.push(container);
            continue;
        }
        let inspected = berth_registry::image::inspect(&store, image)?;
        let precompiled: Vec<serde_json::Value> =
            berth_registry::precompiled::list(&store, &inspected.digest, None)?
                .into_iter()
                .map(|attached| {
                    serde_json::json!({
                        "Target": attached.info.target,
                        "Engine": attached.info.engine,
                        "Source": attached.info.source,
                        "WasmtimeCompatibilityHash": attached.info.compatibility_hash,
                        "Digest": attached.manifest,
                        "Size": attached.code.size,
                    })
                })
                .collect();
        let run = &inspected.run_config;
        let names: Vec<String> = inspected
            .names
            .iter()
            .map(|name| Reference::parse(name).map_or_else(|_| name.clone(), |name| name.short()))
            .collect();
        out.push(serde_json::json!({
            "Id": inspected.digest,
            "RepoTags": names,
            "Format": run.format.name(),
            "Os": run.os,
            "Architecture": "wasm",
            "Size": inspected.manifest.content_size(),
            "Config": {
                "Entrypoint": run.entrypoint,
                "Cmd": run.cmd,
                "Env": run.env,
                "WorkingDir": run.workdir,
                "ExposedPorts": run.exposed_ports,
                "Labels": run.labels,
            },
            "Manifest": serde_json::to_value(&inspected.manifest)?,
            "ImageConfig": inspected.config,
            "Precompiled": precompiled,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// Runs `berth save`.
pub fn save_command(args: SaveArgs) -> Result<u8> {
    let store = home::open_store()?;
    let images: Vec<&str> = args.images.iter().map(String::as_str).collect();
    archive::save(&store, &images, &args.output)?;
    Ok(0)
}

/// Runs `berth load`.
pub fn load_command(args: LoadArgs) -> Result<u8> {
    let store = home::open_store()?;
    let outcome = archive::load(&store, &args.input)?;
    for (name, digest) in &outcome.images {
        let image = name
            .as_ref()
            .map_or_else(|| digest.clone(), |name| name.short());
        crate::commands::run::verify_new_image(&image)?;
        crate::commands::run::precompile_image(&image);
        match name {
            Some(name) => println!("Loaded image: {}", name.short()),
            None => println!("Loaded image ID: {digest}"),
        }
    }
    Ok(0)
}

/// Runs `berth image prune`.
pub fn prune_command() -> Result<u8> {
    let store = home::open_store()?;
    let pruned = store.prune()?;
    for digest in &pruned.deleted {
        println!("deleted: {digest}");
    }
    println!("Total reclaimed space: {}", human_size(pruned.freed_bytes));
    Ok(0)
}

/// Runs `berth image SUBCOMMAND`.
pub fn image_command(command: ImageCommand) -> Result<u8> {
    match command {
        ImageCommand::Ls(args) => images_command(args),
        ImageCommand::Rm(args) => rmi_command(args),
        ImageCommand::Inspect(args) => inspect_command(args),
        ImageCommand::Prune => prune_command(),
        ImageCommand::Precompile(args) => {
            for target in &args.targets {
                berth_runtime::precompiled::check_target(target)?;
            }
            crate::commands::run::attach_precompiled(&args.image, &args.targets, false)?;
            Ok(0)
        }
    }
}

/// Options for talking to a registry, with credentials from berth's auth
/// file (then docker's config.json).
pub fn remote_options(plain_http: bool, quiet: bool) -> Result<RemoteOptions> {
    Ok(RemoteOptions {
        plain_http: plain_http.then_some(true),
        auth: Auth::FromFiles(home::auth_file()?),
        progress: crate::commands::progress::for_terminal(quiet),
    })
}

/// Pulls `image` into the store and returns its digest.
pub fn pull_image(image: &str, plain_http: bool, quiet: bool) -> Result<String> {
    let store = home::open_store()?;
    let options = remote_options(plain_http, quiet)?;
    let outcome = runtime()?.block_on(client::pull(&store, image, &options))?;
    Ok(outcome.digest)
}

/// Runs `berth pull`.
pub fn pull_command(args: PullArgs) -> Result<u8> {
    let digest = pull_image(&args.image, args.remote.plain_http, args.remote.quiet)?;
    crate::commands::run::verify_new_image(&args.image)?;
    crate::commands::run::precompile_image(&args.image);
    println!("Digest: {digest}");
    Ok(0)
}

/// Runs `berth push`.
pub fn push_command(args: PushArgs) -> Result<u8> {
    let store = home::open_store()?;
    let options = remote_options(args.remote.plain_http, args.remote.quiet)?;
    let outcome = runtime()?.block_on(client::push(
        &store,
        &args.image,
        args.destination.as_deref(),
        &options,
    ))?;
    println!(
        "{}: digest: {} ({} uploaded, {} already present)",
        outcome.reference.short(),
        outcome.digest,
        outcome.uploaded,
        outcome.skipped
    );
    Ok(0)
}

/// Runs `berth login`.
pub fn login_command(args: LoginArgs) -> Result<u8> {
    let username = match args.username {
        Some(username) => username,
        None => bail!("berth login needs -u USER (and --password-stdin or -p PASSWORD)"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(password), false) => password,
        (None, true) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from stdin")?;
            password.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => bail!("no password given: use --password-stdin (or -p PASSWORD)"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let credentials = Credentials { username, password };
    runtime()?.block_on(auth::login(
        &home::auth_file()?,
        &args.registry,
        &credentials,
        args.plain_http.then_some(true),
    ))?;
    println!("Login Succeeded");
    Ok(0)
}

/// Runs `berth logout`.
pub fn logout_command(args: LogoutArgs) -> Result<u8> {
    if auth::logout(&home::auth_file()?, &args.registry)? {
        println!("Removed login credentials for {}", args.registry);
    } else {
        println!("Not logged in to {}", args.registry);
    }
    Ok(0)
}
