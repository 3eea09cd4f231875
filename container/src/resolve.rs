//! From a [`ContainerSpec`] to what the runtime runs: the program's file
//! and a [`SandboxSpec`].
//!
//! A file target runs as it is. An image target is found in the local
//! store (or pulled, as its [`PullPolicy`] says), its layers are unpacked
//! once (verified, cached) and mounted read-only at `/`, the container gets
//! a private writable `/tmp`, and the image's ENV, WORKDIR, ENTRYPOINT,
//! CMD and EXPOSE apply as docker applies them; the spec's settings
//! override them. Limits and stdio are left to the caller, which owns the
//! process the sandbox runs in.

use std::path::{Path, PathBuf};

use berth_registry::unpack::UnpackLimits;
use berth_registry::{RegistryError, RunConfig, Store};
use berth_runtime::spec::normalize_guest_path;
use berth_runtime::{Entrypoint, Mount, NetworkPolicy, SandboxSpec};

use crate::flags::{self, FlagError};
use crate::spec::{ContainerSpec, PullPolicy, Target};

/// Why a spec cannot be turned into a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The image store failed (unreadable, unknown image, bad layers...).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A setting (a mount, an image's EXPOSE) cannot be used.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// The image is not local and the pull policy forbids pulling it.
    #[error(
        "image {image:?} is not in the local store and --pull never was given; run `berth pull {image}` or `berth images` to see what is there"
    )]
    NotLocal {
        /// The image as named.
        image: String,
    },
    /// Pulling the image failed.
    #[error("{image:?} is neither a file nor a local image, and pulling it failed")]
    Pull {
        /// The image as named.
        image: String,
        /// Why the pull failed.
        #[source]
        source: PullError,
    },
    /// The image names no program and none was given.
    #[error("image {image:?} has no ENTRYPOINT or CMD: give the wasm path with --entrypoint PATH")]
    NoProgram {
        /// The image as named.
        image: String,
    },
    /// The image's program path is not an absolute guest path.
    #[error("the image's entrypoint {program:?} is not an absolute path inside the image")]
    RelativeEntrypoint {
        /// The path as the image (or `--entrypoint`) gives it.
        program: String,
    },
    /// The image's program is not in its root filesystem.
    #[error("the image's entrypoint {program} does not exist in image {image:?}")]
    MissingEntrypoint {
        /// The program's path inside the image.
        program: String,
        /// The image as named.
        image: String,
    },
    /// The image's program is a symlink that leads out of the image.
    #[error(
        "the image's entrypoint {program} in image {image:?} leads out of the image (a symlink to {target}); berth runs only programs inside the image"
    )]
    EntrypointOutsideImage {
        /// The program's path inside the image.
        program: String,
        /// The image as named.
        image: String,
        /// Where the symlinks lead on the host.
        target: String,
    },
    /// The container's private `/tmp` cannot be created.
    #[error("cannot create a private /tmp in {}: {error}", dir.display())]
    Scratch {
        /// Where it was to be created.
        dir: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A newly pulled or loaded image was refused for its content and
    /// removed from the store again.
    #[error("{image} was removed from the local store")]
    Refused {
        /// The image as named.
        image: String,
        /// Why it was refused.
        #[source]
        source: RegistryError,
    },
}

/// Why a pull failed, as the front door that pulled reports it.
pub type PullError = Box<dyn std::error::Error + Send + Sync>;

/// Pulls an image into the store for [`resolve`]; returns its manifest
/// digest. Front doors report progress their own way.
pub type Pull<'a> = dyn FnMut(&str) -> Result<String, PullError> + 'a;

/// What the resolver reads and writes for image targets: all of it belongs
/// to the front door, which opens it once.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    /// The local image store.
    pub store: &'a Store,
    /// Where unpacked root filesystems are cached.
    pub rootfs_dir: &'a Path,
    /// Where containers' private `/tmp` directories are made (owner-only).
    pub scratch_dir: &'a Path,
    /// Caps on unpacking one image.
    pub unpack_limits: &'a UnpackLimits,
}

/// A spec resolved to a program and a sandbox.
#[derive(Debug)]
pub struct Resolved {
    /// The program's file on the host.
    pub path: PathBuf,
    /// How messages name the program: the file as given, or
    /// `/app/x.wasm in IMAGE`.
    pub origin: String,
    /// Program name, arguments, environment (the image's ENV first), mounts,
    /// working directory, entry point and network policy; limits and stdio
    /// are the caller's.
    pub sandbox: SandboxSpec,
    /// The container's private `/tmp` (image targets), removed when dropped
    /// or closed.
    pub scratch: Option<tempfile::TempDir>,
    /// Code precompiled for this machine's target that the image carries
    /// (digest-verified), tried before compiling; empty for files.
    pub precompiled: Vec<berth_runtime::Precompiled>,
}

/// The target a command-line FILE|IMAGE argument names: a file when it
/// looks like one (see [`is_file_target`]), with `FILE#NAME` calling an
/// export, else an image pulled as `pull` says.
pub fn target_of(argument: &str, pull: PullPolicy) -> Target {
    if is_file_target(argument) {
        let (path, entrypoint) = split_entrypoint(argument);
        Target::File {
            path,
            export: match entrypoint {
                Entrypoint::Export(name) => Some(name),
                Entrypoint::Command => None,
            },
        }
    } else {
        Target::Image {
            reference: argument.to_owned(),
            pull,
        }
    }
}

/// Whether `argument` names a file on disk (rather than an image): it
/// exists, ends in `.wasm` or `.wat`, is a path, or names an export.
pub fn is_file_target(argument: &str) -> bool {
    let (path, _) = split_entrypoint(argument);
    path.exists()
        || argument.ends_with(".wasm")
        || argument.ends_with(".wat")
        || argument.starts_with('.')
        || argument.starts_with('/')
        || argument.contains('\\')
        || argument.contains('#')
}

/// Splits `FILE#NAME` into the file and an export entry point, unless a
/// file with the whole name exists.
fn split_entrypoint(argument: &str) -> (PathBuf, Entrypoint) {
    if !Path::new(argument).exists()
        && let Some((path, export)) = argument.rsplit_once('#')
        && !export.is_empty()
    {
        return (PathBuf::from(path), Entrypoint::Export(export.to_owned()));
    }
    (PathBuf::from(argument), Entrypoint::Command)
}

/// Resolves `spec`: [`resolve_file`] for a file target, [`resolve_image`]
/// for an image target.
pub fn resolve(
    spec: &ContainerSpec,
    images: &Images<'_>,
    pull: &mut Pull<'_>,
) -> Result<Resolved, ResolveError> {
    match spec.target {
        Target::File { .. } => resolve_file(spec),
        Target::Image { .. } => resolve_image(spec, images, pull),
    }
}

/// Resolves a spec with a file target; no image store is involved. (An
/// image target's reference is taken as a file name here: use
/// [`resolve_image`] for it.)
pub fn resolve_file(spec: &ContainerSpec) -> Result<Resolved, ResolveError> {
    let (path, export) = match &spec.target {
        Target::File { path, export } => (path.clone(), export.clone()),
        Target::Image { reference, .. } => (PathBuf::from(reference), None),
    };
    let program_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let sandbox = SandboxSpec {
        program_name,
        args: spec.args.clone(),
        entrypoint: export.map_or(Entrypoint::Command, Entrypoint::Export),
        ..SandboxSpec::default()
    };
    finish(
        spec,
        Resolved {
            origin: path.display().to_string(),
            path,
            sandbox,
            scratch: None,
            precompiled: Vec::new(),
        },
    )
}

/// Resolves a spec with an image target: finds (or pulls) the image,
/// unpacks it, and applies its configuration under the spec's settings.
pub fn resolve_image(
    spec: &ContainerSpec,
    images: &Images<'_>,
    pull: &mut Pull<'_>,
) -> Result<Resolved, ResolveError> {
    let (image, policy) = match &spec.target {
        Target::Image { reference, pull } => (reference.as_str(), *pull),
        Target::File { .. } => return resolve_file(spec),
    };
    let store = images.store;
    let found = match policy {
        PullPolicy::Always => None,
        PullPolicy::Missing | PullPolicy::Never => store.resolve(image).ok(),
    };
    let (digest, manifest) = match found {
        Some(found) => found,
        None if policy == PullPolicy::Never => {
            return Err(ResolveError::NotLocal {
                image: image.to_owned(),
            });
        }
        None => {
            let digest = pull(image).map_err(|source| ResolveError::Pull {
                image: image.to_owned(),
                source,
            })?;
            store.resolve(&digest)?
        }
    };
    let found = image_program(
        images,
        &digest,
        &manifest,
        image,
        spec.entrypoint.as_deref(),
        &spec.args,
    )?
    .ok_or_else(|| ResolveError::NoProgram {
        image: image.to_owned(),
    })?;

    berth_fs::create_private_dir_all(images.scratch_dir).map_err(|error| {
        ResolveError::Scratch {
            dir: images.scratch_dir.to_path_buf(),
            error,
        }
    })?;
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("tmp-");
    #[cfg(unix)]
    scratch.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let scratch =
        scratch
            .tempdir_in(images.scratch_dir)
            .map_err(|error| ResolveError::Scratch {
                dir: images.scratch_dir.to_path_buf(),
                error,
            })?;
    let mounts = vec![
        Mount {
            host: found.rootfs,
            guest: "/".into(),
            read_only: true,
        },
        Mount {
            host: scratch.path().to_path_buf(),
            guest: "/tmp".into(),
            read_only: false,
        },
    ];
    let mut expose = Vec::new();
    for spec in &found.config.exposed_ports {
        expose.extend(flags::parse_exposed_port(spec)?);
    }
    let env = found
        .config
        .env
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let sandbox = SandboxSpec {
        program_name: found.guest_program.clone(),
        args: found.guest_args,
        env,
        mounts,
        workdir: found.config.workdir.clone(),
        network: NetworkPolicy {
            expose,
            ..NetworkPolicy::default()
        },
        ..SandboxSpec::default()
    };
    finish(
        spec,
        Resolved {
            origin: image_origin(&found.guest_program, image),
            path: found.path,
            sandbox,
            scratch: Some(scratch),
            precompiled: precompiled_for_host(store, &digest)?,
        },
    )
}

/// The programs image `digest` carries precompiled for this machine's
/// target, their code read and checked against its digest.
pub fn precompiled_for_host(
    store: &Store,
    digest: &str,
) -> Result<Vec<berth_runtime::Precompiled>, ResolveError> {
    let target = berth_runtime::precompiled::host_target();
    berth_registry::precompiled::list(store, digest, Some(&target))?
        .into_iter()
        .map(|attached| {
            let code = berth_registry::precompiled::read_code(store, &attached)?;
            let info = attached.info;
            Ok(berth_runtime::Precompiled {
                target: info.target,
                engine: info.engine,
                source: info.source,
                compatibility_hash: info.compatibility_hash,
                code,
            })
        })
        .collect()
}

/// Applies the spec's own settings over what the target gave: its mounts
/// after the image's, its environment after the image's ENV, its working
/// directory instead of WORKDIR, its published ports and outbound rules.
fn finish(spec: &ContainerSpec, mut resolved: Resolved) -> Result<Resolved, ResolveError> {
    let sandbox = &mut resolved.sandbox;
    for mount in &spec.mounts {
        sandbox.mounts.push(mount.to_mount()?);
    }
    sandbox.env.extend(spec.env.iter().cloned());
    if let Some(dir) = &spec.workdir {
        sandbox.workdir = Some(flags::parse_workdir(dir)?);
    }
    sandbox.network.publish = spec.ports.clone();
    sandbox.network.outbound = spec.outbound.clone();
    Ok(resolved)
}

/// The program an image runs, found in its unpacked root filesystem.
struct ImageProgram {
    config: RunConfig,
    rootfs: PathBuf,
    /// The program's absolute path inside the image.
    guest_program: String,
    /// The program's file on the host.
    path: PathBuf,
    /// Arguments after the program.
    guest_args: Vec<String>,
}

/// Unpacks image `digest` (once, cached) and finds the program its
/// ENTRYPOINT and CMD name (or `entrypoint`, which replaces both), with
/// `args` replacing CMD as docker does. `None` when the image names no
/// program.
fn image_program(
    images: &Images<'_>,
    digest: &str,
    manifest: &berth_registry::image::Manifest,
    image: &str,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Option<ImageProgram>, ResolveError> {
    let config = berth_registry::image::run_config_of(images.store, digest, manifest)?;
    let argv = image_argv(&config, entrypoint, args);
    let Some((program, guest_args)) = argv.split_first() else {
        return Ok(None);
    };
    let guest_program =
        normalize_guest_path(program).ok_or_else(|| ResolveError::RelativeEntrypoint {
            program: program.clone(),
        })?;
    let rootfs = berth_registry::unpack::rootfs_of(
        images.store,
        digest,
        manifest,
        images.rootfs_dir,
        images.unpack_limits,
    )?;
    let path = match program_in_rootfs(&rootfs, &guest_program) {
        Ok(path) => path,
        Err(ProgramOutside::Missing) => {
            return Err(ResolveError::MissingEntrypoint {
                program: guest_program,
                image: image.to_owned(),
            });
        }
        Err(ProgramOutside::Escapes(target)) => {
            return Err(ResolveError::EntrypointOutsideImage {
                program: guest_program,
                image: image.to_owned(),
                target: target.display().to_string(),
            });
        }
    };
    Ok(Some(ImageProgram {
        config,
        rootfs,
        guest_program,
        path,
        guest_args: guest_args.to_vec(),
    }))
}

/// What an image runs, as docker decides it: ENTRYPOINT then ARGS, or CMD
/// when there are no ARGS; `--entrypoint` replaces ENTRYPOINT and drops CMD.
fn image_argv(config: &RunConfig, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
    match entrypoint {
        Some(path) => RunConfig {
            entrypoint: vec![path.to_owned()],
            cmd: Vec::new(),
            ..config.clone()
        }
        .argv(args),
        None => config.argv(args),
    }
}

/// How messages name a program inside an image: `/app/x.wasm in IMAGE`.
fn image_origin(guest_program: &str, image: &str) -> String {
    format!("{guest_program} in {image}")
}

/// For a spec whose image is in the local store: the program and
/// arguments it will run (ENTRYPOINT, then ARGS or CMD; the spec's
/// entrypoint replacing both), as `berth ps` shows them. `None` for files,
/// images not pulled yet, or anything unreadable.
pub fn local_image_argv(store: &Store, spec: &ContainerSpec) -> Option<Vec<String>> {
    let Target::Image { reference, .. } = &spec.target else {
        return None;
    };
    let (digest, manifest) = store.resolve(reference).ok()?;
    let config = berth_registry::image::run_config_of(store, &digest, &manifest).ok()?;
    Some(image_argv(&config, spec.entrypoint.as_deref(), &spec.args))
        .filter(|argv| !argv.is_empty())
}

/// The program image `image` runs by default, unpacked: its file on the
/// host and how messages name it. `None` when the image names no program.
pub fn image_default_program(
    images: &Images<'_>,
    image: &str,
) -> Result<Option<(PathBuf, String)>, ResolveError> {
    let (digest, manifest) = images.store.resolve(image)?;
    Ok(image_program(images, &digest, &manifest, image, None, &[])?
        .map(|found| (found.path, image_origin(&found.guest_program, image))))
}

/// What [`verify_new_image`] found.
#[derive(Debug)]
pub enum Verified {
    /// Every layer matched its diff_id and stayed within the limits.
    Ok,
    /// The image could not be unpacked for a reason that says nothing
    /// about its content (a full disk, a format berth cannot unpack); it
    /// stays in the store and running it reports the error again.
    Unchecked(RegistryError),
}

/// Unpacks a newly pulled or loaded image, which checks every layer
/// against the diff_id its config claims and against the unpack limits. An
/// image refused for its content is removed from the store again
/// ([`ResolveError::Refused`]), so that nothing runs it.
pub fn verify_new_image(images: &Images<'_>, image: &str) -> Result<Verified, ResolveError> {
    let store = images.store;
    let (digest, manifest) = store.resolve(image)?;
    let unpacked = berth_registry::unpack::rootfs_of(
        store,
        &digest,
        &manifest,
        images.rootfs_dir,
        images.unpack_limits,
    );
    match unpacked {
        Ok(_) => Ok(Verified::Ok),
        Err(
            error @ (RegistryError::DiffIdMismatch { .. }
            | RegistryError::UnpackLimit { .. }
            | RegistryError::UnsafeEntry { .. }),
        ) => {
            if let Err(removal) = store.remove(image) {
                tracing::warn!(%removal, image, "cannot remove a refused image");
            }
            Err(ResolveError::Refused {
                image: image.to_owned(),
                source: error,
            })
        }
        Err(error) => Ok(Verified::Unchecked(error)),
    }
}

/// Why [`program_in_rootfs`] found no program.
#[derive(Debug, PartialEq, Eq)]
pub enum ProgramOutside {
    /// No regular file at that path.
    Missing,
    /// The path's symlinks lead out of the root filesystem, to this host
    /// path.
    Escapes(PathBuf),
}

/// The host file of the program at absolute guest path `guest` in the root
/// filesystem `rootfs`: a regular file that its symlinks, resolved on the
/// host, leave inside `rootfs`.
///
/// An image is untrusted: its layers may hold `/app.wasm -> /etc/shadow`,
/// and the host must not read (or run) a file of its own because an image
/// names it. Root filesystems are never written by guests (they are granted
/// read-only), so what is checked here is what is read later.
pub fn program_in_rootfs(rootfs: &Path, guest: &str) -> Result<PathBuf, ProgramOutside> {
    let path = rootfs.join(guest.trim_start_matches('/'));
    let resolved = std::fs::canonicalize(&path).map_err(|_| ProgramOutside::Missing)?;
    let root = std::fs::canonicalize(rootfs).map_err(|_| ProgramOutside::Missing)?;
    if !resolved.starts_with(&root) {
        return Err(ProgramOutside::Escapes(resolved));
    }
    if !resolved.is_file() {
        return Err(ProgramOutside::Missing);
    }
    Ok(resolved)
}
