//! `berth build`: turns a Dockerfile and its context into an image in the
//! store, reproducibly.
//!
//! A wasm image has no shell and no package manager, so only instructions
//! that place files or set metadata make sense: `FROM scratch` or a berth
//! image already in the store, `COPY`/`ADD`, `ENV`, `ARG`, `WORKDIR`,
//! `ENTRYPOINT`, `CMD`, `EXPOSE`, `LABEL`, `MAINTAINER`. Instructions that
//! need to execute something inside the image (`RUN`, …) fail with the line
//! number and what to do instead.
//!
//! Reproducible by construction: each `COPY`/`ADD` makes one tar layer with
//! entries sorted, uid/gid 0, mtime `SOURCE_DATE_EPOCH` (else 0), no user
//! names, gzip with a fixed level and header; JSON is written with sorted
//! maps. Unchanged inputs give identical digests.
//!
//! Files are read into memory while a layer is assembled: right for wasm
//! images (megabytes), not meant for multi-gigabyte contexts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use globset::GlobBuilder;

use crate::digest;
use crate::dockerfile::{self, Dockerfile, Instruction};
use crate::error::{RegistryError, Result};
use crate::image::{
    self, ContainerConfig, DEFAULT_WASM_PATH, Descriptor, ImageConfig, ImageFormat,
    MEDIA_COMPONENT_LAYER, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
    MEDIA_WASM_CONFIG, MEDIA_WASM_LAYER, Manifest, RootFs, WasmConfig,
};
use crate::reference::Reference;
use crate::store::Store;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (default: `Dockerfile` in the context).
    pub dockerfile: Option<PathBuf>,
    /// Names to tag the result with (`hello`, `127.0.0.1:5000/app:v1`).
    pub tags: Vec<String>,
    /// `--build-arg KEY=VALUE` values.
    pub build_args: BTreeMap<String, String>,
    /// The output format.
    pub format: ImageFormat,
    /// Timestamp for files and `created` (seconds since the epoch); `None`
    /// reads `SOURCE_DATE_EPOCH`, else 0.
    pub source_date_epoch: Option<u64>,
}

impl BuildOptions {
    /// Options for building `context` with its `Dockerfile` as an `image`.
    pub fn new(context: impl Into<PathBuf>) -> Self {
        BuildOptions {
            context: context.into(),
            dockerfile: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            format: ImageFormat::Image,
            source_date_epoch: None,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The manifest digest.
    pub digest: String,
    /// The names it was tagged with.
    pub tags: Vec<Reference>,
    /// The format written.
    pub format: ImageFormat,
    /// `wasip1` or `wasip2`.
    pub os: String,
    /// Things the user should know (ignored flags, unused build args).
    pub notes: Vec<String>,
}

/// A file tree: paths relative to `/`, without leading slash.
pub(crate) type Tree = BTreeMap<String, Node>;

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
    /// A whiteout: hides the path from lower layers.
    Whiteout,
    /// An opaque-directory marker: hides the directory's lower contents.
    Opaque,
}

/// Builds the Dockerfile of `opts.context` into `store`.
pub fn build(store: &Store, opts: &BuildOptions) -> Result<BuildOutcome> {
    let dockerfile_path = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let text = fs::read_to_string(&dockerfile_path)
        .map_err(|e| RegistryError::io("cannot read Dockerfile", &dockerfile_path, e))?;
    let df = dockerfile::parse(&text, &dockerfile_path.display().to_string())?;
    let tags = opts
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>>>()?;
    let epoch = opts.source_date_epoch.unwrap_or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    let context = Context::open(&opts.context)?;
    let mut b = Builder {
        store,
        df: &df,
        context,
        opts,
        epoch,
        meta_args: BTreeMap::new(),
        args: BTreeMap::new(),
        used_args: BTreeSet::new(),
        env: Vec::new(),
        config: ContainerConfig::default(),
        base_layers: Vec::new(),
        base_diff_ids: Vec::new(),
        base_os: None,
        merged: Tree::new(),
        layers: Vec::new(),
        notes: Vec::new(),
        from_seen: false,
        cmd_set: false,
    };
    for ins in &df.instructions {
        b.step(ins)?;
    }
    if !b.from_seen {
        return Err(RegistryError::Build(format!(
            "{} has no FROM instruction; start it with `FROM scratch`",
            df.file
        )));
    }
    for arg in opts.build_args.keys() {
        if !b.used_args.contains(arg) {
            b.notes.push(format!(
                "build argument {arg:?} was not consumed: no ARG {arg} in the Dockerfile"
            ));
        }
    }
    let (digest, os) = b.finish()?;
    for tag in &tags {
        store.tag(tag, &digest)?;
    }
    if tags.is_empty() {
        store.keep(&digest)?;
    }
    Ok(BuildOutcome {
        digest,
        tags,
        format: opts.format,
        os,
        notes: b.notes,
    })
}

struct Builder<'a> {
    store: &'a Store,
    df: &'a Dockerfile,
    context: Context,
    opts: &'a BuildOptions,
    epoch: u64,
    meta_args: BTreeMap<String, Option<String>>,
    args: BTreeMap<String, Option<String>>,
    used_args: BTreeSet<String>,
    env: Vec<(String, String)>,
    config: ContainerConfig,
    base_layers: Vec<Descriptor>,
    base_diff_ids: Vec<String>,
    base_os: Option<String>,
    /// Every file of the image (base layers and new ones), for checks.
    merged: Tree,
    /// The new layers, one per COPY/ADD.
    layers: Vec<Tree>,
    notes: Vec<String>,
    from_seen: bool,
    /// CMD appeared in this Dockerfile (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl Builder<'_> {
    fn err(&self, ins: &Instruction, message: impl Into<String>) -> RegistryError {
        self.df.error(ins.line, message)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        let scope = if self.from_seen {
            &self.args
        } else {
            &self.meta_args
        };
        scope.get(name).cloned().flatten()
    }

    fn words(&self, ins: &Instruction) -> Result<Vec<String>> {
        let lookup = |n: &str| self.lookup(n);
        dockerfile::words(&ins.args, Some(&lookup)).map_err(|e| self.err(ins, e))
    }

    fn exec_form(&self, ins: &Instruction) -> Result<Vec<String>> {
        if let Some(v) = dockerfile::json_form(&ins.args) {
            return Ok(v);
        }
        if ins.args.trim_start().starts_with('[') {
            // Docker would silently fall back to the shell form and fail at
            // run time; a wasm image has no shell, so say it now.
            return Err(self.err(
                ins,
                format!(
                    "{} {} looks like a JSON array but is not valid JSON; expected e.g. [\"/app.wasm\", \"arg\"]",
                    ins.keyword,
                    ins.args.trim()
                ),
            ));
        }
        // Shell form: docker would run `/bin/sh -c "…"`, but a wasm image has
        // no shell, so the words are the program and its arguments.
        dockerfile::words(&ins.args, None).map_err(|e| self.err(ins, e))
    }

    fn step(&mut self, ins: &Instruction) -> Result<()> {
        let kw = ins.keyword.as_str();
        if !self.from_seen && !matches!(kw, "FROM" | "ARG") {
            return Err(self.err(
                ins,
                format!(
                    "{kw} before FROM; the first instruction must be FROM (only ARG may precede it)"
                ),
            ));
        }
        match kw {
            "FROM" => self.from(ins),
            "ARG" => self.arg(ins),
            "ENV" => {
                for (k, v) in self.key_values(ins)? {
                    self.env.retain(|(key, _)| *key != k);
                    self.env.push((k, v));
                }
                Ok(())
            }
            "LABEL" => {
                for (k, v) in self.key_values(ins)? {
                    self.config.labels.get_or_insert_default().insert(k, v);
                }
                Ok(())
            }
            "MAINTAINER" => {
                let who = ins.args.trim().to_string();
                self.config.labels.get_or_insert_default().insert("maintainer".into(), who);
                Ok(())
            }
            "WORKDIR" => {
                let words = self.words(ins)?;
                let [dir] = words.as_slice() else {
                    return Err(self.err(ins, "WORKDIR takes exactly one path"));
                };
                let base = self.config.working_dir.clone().unwrap_or_else(|| "/".into());
                let dir = clean_join(&base, dir);
                // Like docker, create the directory (in its own layer) if the
                // image lacks it: the runtime's cwd must exist in the rootfs.
                if !dir.is_empty() && !matches!(self.merged.get(&dir), Some(Node::Dir)) {
                    let mut layer = Tree::from([(dir.clone(), Node::Dir)]);
                    add_parents(&mut layer);
                    apply_layer(&mut self.merged, &layer);
                    self.layers.push(layer);
                }
                self.config.working_dir = Some(format!("/{dir}"));
                Ok(())
            }
            "ENTRYPOINT" => {
                self.config.entrypoint = Some(self.exec_form(ins)?);
                // As in docker, ENTRYPOINT resets a CMD inherited from the base
                // image, but not one set earlier in this Dockerfile.
                if !self.cmd_set {
                    self.config.cmd = None;
                }
                Ok(())
            }
            "CMD" => {
                self.config.cmd = Some(self.exec_form(ins)?);
                self.cmd_set = true;
                Ok(())
            }
            "EXPOSE" => {
                for port in self.words(ins)? {
                    let (num, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                    let valid_num = num
                        .split_once('-')
                        .map_or(vec![num], |(a, b)| vec![a, b])
                        .iter()
                        .all(|n| n.parse::<u16>().is_ok());
                    if !valid_num || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(self.err(ins, format!("invalid port {port:?}: expected PORT[/tcp|udp|sctp], e.g. 8080 or 53/udp")));
                    }
                    self.config
                        .exposed_ports
                        .get_or_insert_default()
                        .insert(format!("{num}/{proto}"), serde_json::json!({}));
                }
                Ok(())
            }
            "COPY" | "ADD" => self.copy(ins),
            "RUN" => Err(self.err(ins, "RUN is not supported: a WebAssembly image has no Linux shell or programs to run at build time. Build the .wasm beforehand (e.g. `cargo build --target wasm32-wasip2`) and COPY it into the image")),
            "SHELL" => Err(self.err(ins, "SHELL is not supported: there is no shell inside a WebAssembly image; use the JSON form of ENTRYPOINT/CMD")),
            "HEALTHCHECK" => Err(self.err(ins, "HEALTHCHECK is not supported: a health check runs a command inside the container, and a WebAssembly image has no commands besides its program; let the orchestrator probe the program's port instead")),
            "USER" => Err(self.err(ins, "USER is not supported: WebAssembly programs have no Unix users; berth grants access per capability (volumes, env), so remove the line")),
            "VOLUME" => Err(self.err(ins, "VOLUME is not supported: berth mounts nothing implicitly; pass `-v HOST:GUEST` to `berth run` instead")),
            "STOPSIGNAL" => Err(self.err(ins, "STOPSIGNAL is not supported: WebAssembly programs do not receive signals; berth stops them by ending the sandbox")),
            "ONBUILD" => Err(self.err(ins, "ONBUILD is not supported: berth images carry no deferred build steps; repeat the instructions in the Dockerfile that needs them")),
            other => Err(self.err(ins, format!("unknown instruction {other}; supported: FROM, COPY, ADD, ENV, ARG, WORKDIR, ENTRYPOINT, CMD, EXPOSE, LABEL, MAINTAINER"))),
        }
    }

    fn from(&mut self, ins: &Instruction) -> Result<()> {
        if self.from_seen {
            return Err(self.err(ins, "a second FROM: multi-stage builds are not supported; build the .wasm outside and use a single FROM"));
        }
        if let Some((flag, _)) = ins.flags.first() {
            return Err(self.err(ins, format!("FROM --{flag} is not supported")));
        }
        let words = self.words(ins)?;
        let base = match words.as_slice() {
            [base] => base.clone(),
            [base, as_kw, _] if as_kw.eq_ignore_ascii_case("as") => base.clone(),
            _ => return Err(self.err(ins, "expected `FROM scratch` or `FROM IMAGE [AS NAME]`")),
        };
        self.from_seen = true;
        if base == "scratch" {
            return Ok(());
        }
        let (digest, manifest) = self
            .store
            .resolve(&base)
            .map_err(|e| self.err(ins, format!("base image {base:?}: {e}")))?;
        if manifest.format()? != ImageFormat::Image {
            return Err(self.err(
                ins,
                format!("base image {base:?} ({digest}) is a {} image; FROM needs an `image`-format berth image (tar layers)", manifest.format()?.name()),
            ));
        }
        let cfg: ImageConfig =
            serde_json::from_slice(&self.store.read_blob(&manifest.config.digest)?)
                .map_err(|e| RegistryError::json(format!("config of {base}"), e))?;
        if cfg.architecture != "wasm" {
            return Err(self.err(ins, format!("base image {base:?} has architecture {:?}; berth builds only on WebAssembly images or scratch", cfg.architecture)));
        }
        for layer in &manifest.layers {
            let reader = self.store.open_blob(&layer.digest)?;
            read_layer_into(&mut self.merged, reader, &layer.media_type, &layer.digest)?;
        }
        self.base_diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        self.base_layers = manifest.layers;
        self.base_os = Some(cfg.os);
        let cc = cfg.config.unwrap_or_default();
        for e in cc.env.clone().unwrap_or_default() {
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            self.env.push((k.to_string(), v.to_string()));
        }
        self.config = ContainerConfig { env: None, ..cc };
        Ok(())
    }

    fn arg(&mut self, ins: &Instruction) -> Result<()> {
        let words = self.words(ins)?;
        if words.is_empty() {
            return Err(self.err(ins, "ARG needs a name: `ARG NAME` or `ARG NAME=default`"));
        }
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(ins, format!("invalid ARG name {name:?}")));
            }
            let given = self.opts.build_args.get(&name).cloned();
            if given.is_some() {
                self.used_args.insert(name.clone());
            }
            if self.from_seen {
                let inherited = self.meta_args.get(&name).cloned().flatten();
                self.args.insert(name, given.or(default).or(inherited));
            } else {
                self.meta_args.insert(name, given.or(default));
            }
        }
        Ok(())
    }

    fn key_values(&self, ins: &Instruction) -> Result<Vec<(String, String)>> {
        let words = self.words(ins)?;
        let Some(first) = words.first() else {
            return Err(self.err(ins, format!("{} needs KEY=VALUE", ins.keyword)));
        };
        if !first.contains('=') {
            // Legacy form `ENV KEY value with spaces`.
            let raw = ins.args.trim();
            let rest = raw
                .split_once(char::is_whitespace)
                .map(|(_, r)| r.trim())
                .unwrap_or("");
            if rest.is_empty() {
                return Err(self.err(
                    ins,
                    format!(
                        "{} {first}: missing value; write {first}=VALUE",
                        ins.keyword
                    ),
                ));
            }
            let lookup = |n: &str| self.lookup(n);
            let value = dockerfile::substitute(rest, &lookup).map_err(|e| self.err(ins, e))?;
            return Ok(vec![(first.clone(), value)]);
        }
        words
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(self.err(ins, format!("{:?} is not KEY=VALUE", w))),
            })
            .collect()
    }

    fn copy(&mut self, ins: &Instruction) -> Result<()> {
        let is_add = ins.keyword == "ADD";
        for (flag, value) in &ins.flags {
            match flag.as_str() {
                "chown" | "chmod" | "link" => self.notes.push(format!(
                    "line {}: {} --{flag}={value} ignored: files in berth images belong to uid 0 and keep their own modes",
                    ins.line, ins.keyword
                )),
                "from" => {
                    return Err(self.err(ins, "COPY --from is not supported: multi-stage builds are not supported; build the .wasm beforehand and COPY it from the context"));
                }
                other => return Err(self.err(ins, format!("{} --{other} is not supported", ins.keyword))),
            }
        }
        let mut words = match dockerfile::json_form(&ins.args) {
            // Docker substitutes variables in the JSON form of COPY/ADD too.
            Some(v) => {
                let lookup = |n: &str| self.lookup(n);
                v.iter()
                    .map(|w| dockerfile::substitute(w, &lookup).map_err(|e| self.err(ins, e)))
                    .collect::<Result<Vec<_>>>()?
            }
            None => self.words(ins)?,
        };
        if words.len() < 2 {
            return Err(self.err(
                ins,
                format!(
                    "{} needs at least one source and a destination",
                    ins.keyword
                ),
            ));
        }
        let dest_raw = words.pop().unwrap_or_default();
        let workdir = self
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest = clean_join(&workdir, &dest_raw);
        let mut layer = Tree::new();
        let mut sources = Vec::new();
        for src in &words {
            if src.contains("://") || src.starts_with("git@") {
                return Err(self.err(ins, format!("{} {src}: remote sources are not supported; download the file into the build context first", ins.keyword)));
            }
            let matched = self.context.matches(src).map_err(|e| self.err(ins, e))?;
            if matched.is_empty() {
                return Err(self.err(ins, format!("{} {src}: no such file or directory in the build context {} (or it is excluded by .dockerignore)", ins.keyword, self.context.root.display())));
            }
            sources.extend(matched);
        }
        let dest_is_dir =
            dest_raw.ends_with('/') || sources.len() > 1 || words.iter().any(|w| is_glob(w));
        for src in sources {
            let abs = self.context.root.join(&src);
            // A symlink is copied as a symlink, never followed: following it
            // could copy a host file from outside the build context.
            let meta = fs::symlink_metadata(&abs)
                .map_err(|e| RegistryError::io("cannot read", &abs, e))?;
            if meta.file_type().is_symlink() {
                let target =
                    fs::read_link(&abs).map_err(|e| RegistryError::io("cannot read", &abs, e))?;
                let name = src.rsplit('/').next().unwrap_or(&src).to_string();
                let at = if dest_is_dir || dest.is_empty() {
                    clean_join(&format!("/{dest}"), &name)
                } else {
                    dest.clone()
                };
                layer.insert(
                    at,
                    Node::Symlink(target.to_string_lossy().replace('\\', "/")),
                );
                continue;
            }
            if meta.is_dir() {
                self.context.copy_dir(&src, &dest, &mut layer)?;
                continue;
            }
            let data = fs::read(&abs).map_err(|e| RegistryError::io("cannot read", &abs, e))?;
            if is_add && is_tar(&data) {
                let media = if data.starts_with(&[0x1f, 0x8b]) {
                    MEDIA_LAYER_GZIP
                } else {
                    MEDIA_LAYER_TAR
                };
                let mut extracted = Tree::new();
                read_layer_into(&mut extracted, data.as_slice(), media, &src)?;
                for (path, node) in extracted {
                    layer.insert(clean_join(&format!("/{dest}"), &path), node);
                }
                continue;
            }
            let name = src.rsplit('/').next().unwrap_or(&src).to_string();
            let target = if dest_is_dir
                || (dest.is_empty())
                || matches!(self.merged.get(&dest), Some(Node::Dir))
            {
                clean_join(&format!("/{dest}"), &name)
            } else {
                dest.clone()
            };
            layer.insert(
                target,
                Node::File {
                    data,
                    mode: file_mode(&meta),
                },
            );
        }
        add_parents(&mut layer);
        apply_layer(&mut self.merged, &layer);
        self.layers.push(layer);
        Ok(())
    }

    /// Writes config, layers and manifest; returns (manifest digest, os).
    fn finish(&mut self) -> Result<(String, String)> {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.config.env = (!env.is_empty()).then_some(env);
        let created = rfc3339(self.epoch);
        let author = self
            .config
            .labels
            .as_ref()
            .and_then(|l| l.get("maintainer"))
            .cloned();
        let wasm_files: Vec<&String> = self
            .merged
            .iter()
            .filter(|(p, n)| p.ends_with(".wasm") && matches!(n, Node::File { .. }))
            .map(|(p, _)| p)
            .collect();
        let mut entry = self
            .config
            .entrypoint
            .as_ref()
            .filter(|e| !e.is_empty())
            .or(self.config.cmd.as_ref())
            .and_then(|v| v.first())
            .cloned();
        if entry.is_none()
            && let [only] = wasm_files.as_slice()
        {
            self.notes
                .push(format!("no ENTRYPOINT: using the only .wasm file, /{only}"));
            self.config.entrypoint = Some(vec![format!("/{only}")]);
            entry = Some(format!("/{only}"));
        }
        let Some(entry) = entry else {
            return Err(RegistryError::Build(format!(
                "{}: no ENTRYPOINT or CMD, and the image holds {} .wasm files; add ENTRYPOINT [\"/path/to/app.wasm\"]",
                self.df.file,
                wasm_files.len()
            )));
        };
        let workdir = self
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let entry_path = clean_join(&workdir, &entry);
        let wasm = match self.merged.get(&entry_path) {
            Some(Node::File { data, .. }) => data.clone(),
            _ => {
                return Err(RegistryError::Build(format!(
                    "{}: the entrypoint {entry:?} (/{entry_path}) is not a file in the image; COPY the .wasm there or fix ENTRYPOINT",
                    self.df.file
                )));
            }
        };
        let os = image::wasi_version(&wasm).map(str::to_string).ok_or_else(|| {
            RegistryError::Build(format!(
                "{}: the entrypoint /{entry_path} is not a WebAssembly module or component (bad header)",
                self.df.file
            ))
        })?;
        let (config_bytes, config_media, layers) = match self.opts.format {
            ImageFormat::Image => {
                let mut layers = self.base_layers.clone();
                let mut diff_ids = self.base_diff_ids.clone();
                for tree in &self.layers {
                    let tar = tar_bytes(tree, self.epoch)?;
                    diff_ids.push(digest::of(&tar));
                    let gz = gzip(&tar)?;
                    let d = self.store.put_blob_bytes(&gz)?;
                    layers.push(Descriptor::new(MEDIA_LAYER_GZIP, d, gz.len() as u64));
                }
                let cfg = ImageConfig {
                    created: Some(created),
                    author,
                    architecture: "wasm".into(),
                    os: os.clone(),
                    config: Some(self.config.clone()),
                    rootfs: Some(RootFs {
                        kind: "layers".into(),
                        diff_ids,
                    }),
                };
                (to_json(&cfg)?, MEDIA_CONFIG, layers)
            }
            format @ (ImageFormat::Artifact | ImageFormat::ComponentLayer) => {
                if wasm_files.len() != 1 {
                    return Err(RegistryError::Build(format!(
                        "--format {} needs exactly one .wasm file in the image (the entrypoint), found {}: {}",
                        format.name(),
                        wasm_files.len(),
                        wasm_files
                            .iter()
                            .map(|p| format!("/{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let d = self.store.put_blob_bytes(&wasm)?;
                if format == ImageFormat::Artifact {
                    if self.config.env.is_some()
                        || self.config.cmd.is_some()
                        || self.config.exposed_ports.is_some()
                    {
                        self.notes.push("--format artifact keeps only the wasm: ENV, CMD and EXPOSE are not recorded (the CNCF wasm config has no place for them); use --format image to keep them".into());
                    }
                    let cfg = WasmConfig {
                        created: Some(created),
                        author,
                        architecture: "wasm".into(),
                        os: os.clone(),
                        layer_digests: vec![d.clone()],
                        component: None,
                    };
                    let layer = Descriptor::new(MEDIA_WASM_LAYER, d, wasm.len() as u64);
                    (to_json(&cfg)?, MEDIA_WASM_CONFIG, vec![layer])
                } else {
                    let mut cc = self.config.clone();
                    let mut ep = cc.entrypoint.clone().or(cc.cmd.clone()).unwrap_or_default();
                    if ep.is_empty() {
                        ep.push(DEFAULT_WASM_PATH.into());
                    } else {
                        ep[0] = DEFAULT_WASM_PATH.into();
                    }
                    if cc.entrypoint.is_none() {
                        cc.cmd = None;
                    }
                    cc.entrypoint = Some(ep);
                    let cfg = ImageConfig {
                        created: Some(created),
                        author,
                        architecture: "wasm".into(),
                        os: os.clone(),
                        config: Some(cc),
                        rootfs: Some(RootFs {
                            kind: "layers".into(),
                            diff_ids: vec![d.clone()],
                        }),
                    };
                    let layer = Descriptor::new(MEDIA_COMPONENT_LAYER, d, wasm.len() as u64);
                    (to_json(&cfg)?, MEDIA_CONFIG, vec![layer])
                }
            }
        };
        if let Some(base_os) = &self.base_os
            && !base_os.is_empty()
            && *base_os != os
        {
            self.notes.push(format!(
                "the base image is {base_os}, the entrypoint is {os}; the image is marked {os}"
            ));
        }
        let config_digest = self.store.put_blob_bytes(&config_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::new(config_media, config_digest, config_bytes.len() as u64),
            layers,
            annotations: None,
        };
        let digest = self.store.put_manifest(&to_json(&manifest)?)?;
        Ok((digest, os))
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| RegistryError::json("generated JSON", e))
}

/// The build context: the directory and what `.dockerignore` leaves of it.
struct Context {
    root: PathBuf,
    /// Every path (files, dirs, symlinks) not excluded, relative, `/`-separated, sorted.
    paths: BTreeSet<String>,
}

impl Context {
    fn open(root: &Path) -> Result<Context> {
        let ignore = DockerIgnore::load(root)?;
        let mut paths = BTreeSet::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            let entries = fs::read_dir(&dir)
                .map_err(|e| RegistryError::io("cannot read build context", &dir, e))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| RegistryError::io("cannot read build context", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if ignore.excluded(&path) && !(is_dir && ignore.has_negations) {
                    continue;
                }
                if is_dir {
                    stack.push(path.clone());
                }
                if !ignore.excluded(&path) {
                    paths.insert(path);
                }
            }
        }
        Ok(Context {
            root: root.to_path_buf(),
            paths,
        })
    }

    /// Context paths matching source `src` (a path or a glob).
    fn matches(&self, src: &str) -> Result<Vec<String>, String> {
        let cleaned = clean_join("/", src);
        if src.split(['/', '\\']).filter(|c| *c == "..").count() > 0 && escapes(src) {
            return Err(format!("{src}: forbidden path outside the build context"));
        }
        if cleaned.is_empty() {
            return Ok(vec![String::new()]);
        }
        if !is_glob(src) {
            return Ok(if self.paths.contains(&cleaned) {
                vec![cleaned]
            } else {
                Vec::new()
            });
        }
        let glob = GlobBuilder::new(&cleaned)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("bad pattern {src:?}: {e}"))?
            .compile_matcher();
        Ok(self
            .paths
            .iter()
            .filter(|p| glob.is_match(p))
            .cloned()
            .collect())
    }

    /// Copies the contents of context directory `src` to `dest` in `layer`.
    fn copy_dir(&self, src: &str, dest: &str, layer: &mut Tree) -> Result<()> {
        let prefix = if src.is_empty() {
            String::new()
        } else {
            format!("{src}/")
        };
        layer.insert(dest.to_string(), Node::Dir);
        for path in self
            .paths
            .iter()
            .filter(|p| p.starts_with(&prefix) && !prefix.is_empty() || src.is_empty())
        {
            let rel = &path[prefix.len()..];
            let target = clean_join(&format!("/{dest}"), rel);
            let abs = self.root.join(path);
            let meta = fs::symlink_metadata(&abs)
                .map_err(|e| RegistryError::io("cannot read", &abs, e))?;
            let node = if meta.file_type().is_symlink() {
                let t =
                    fs::read_link(&abs).map_err(|e| RegistryError::io("cannot read", &abs, e))?;
                Node::Symlink(t.to_string_lossy().replace('\\', "/"))
            } else if meta.is_dir() {
                Node::Dir
            } else {
                let data = fs::read(&abs).map_err(|e| RegistryError::io("cannot read", &abs, e))?;
                Node::File {
                    data,
                    mode: file_mode(&meta),
                }
            };
            layer.insert(target, node);
        }
        Ok(())
    }
}

/// `.dockerignore`: Go-style globs with `**`, `!` re-includes, last match wins;
/// a pattern matching a directory excludes everything under it.
struct DockerIgnore {
    rules: Vec<(globset::GlobMatcher, bool)>,
    has_negations: bool,
}

impl DockerIgnore {
    fn load(root: &Path) -> Result<DockerIgnore> {
        let path = root.join(".dockerignore");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(RegistryError::io("cannot read", &path, e)),
        };
        let mut rules = Vec::new();
        let mut has_negations = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            has_negations |= negate;
            let pat = clean_join("/", pat);
            if pat.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    RegistryError::Build(format!("{}: bad pattern {line:?}: {e}", path.display()))
                })?;
            rules.push((glob.compile_matcher(), negate));
        }
        Ok(DockerIgnore {
            rules,
            has_negations,
        })
    }

    fn excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        for (glob, negate) in &self.rules {
            // A pattern also matches everything below a matching directory.
            let mut hit = glob.is_match(path);
            let mut p = path;
            while !hit && let Some((parent, _)) = p.rsplit_once('/') {
                hit = glob.is_match(parent);
                p = parent;
            }
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn escapes(path: &str) -> bool {
    let mut depth: i64 = 0;
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Joins `path` onto absolute `base` and normalizes lexically (`..` stops
/// at `/`); returns the result without leading slash.
pub(crate) fn clean_join(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

#[cfg(unix)]
fn file_mode(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

#[cfg(not(unix))]
fn file_mode(_meta: &fs::Metadata) -> u32 {
    0o644
}

fn is_tar(data: &[u8]) -> bool {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut head = [0u8; 512];
        let mut gz = flate2::read::GzDecoder::new(data);
        let mut n = 0;
        while n < head.len() {
            match gz.read(&mut head[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        return n >= 262 && &head[257..262] == b"ustar";
    }
    data.len() >= 262 && &data[257..262] == b"ustar"
}

/// Adds the missing parent directories of every entry.
fn add_parents(tree: &mut Tree) {
    let mut parents = Vec::new();
    for path in tree.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            parents.push(parent.to_string());
            p = parent;
        }
    }
    for p in parents {
        tree.entry(p).or_insert(Node::Dir);
    }
    tree.remove("");
}

/// Applies `layer` on top of `merged`, honouring whiteouts.
pub(crate) fn apply_layer(merged: &mut Tree, layer: &Tree) {
    for (path, node) in layer {
        match node {
            Node::Whiteout => {
                let prefix = format!("{path}/");
                merged.retain(|p, _| p != path && !p.starts_with(&prefix));
            }
            Node::Opaque => {
                let prefix = format!("{path}/");
                merged.retain(|p, _| !p.starts_with(&prefix));
            }
            _ => {
                if !matches!(node, Node::Dir) {
                    let prefix = format!("{path}/");
                    merged.retain(|p, _| !p.starts_with(&prefix));
                }
                merged.insert(path.clone(), node.clone());
            }
        }
    }
}

/// Reads a tar layer (gzip or not, judged by `media_type`) into `tree`,
/// applying it over what is there. Paths are normalized; `..` escapes,
/// devices and hard links outside the layer are refused.
pub(crate) fn read_layer_into(
    tree: &mut Tree,
    reader: impl Read,
    media_type: &str,
    what: &str,
) -> Result<()> {
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut layer = Tree::new();
    let mut archive = tar::Archive::new(reader);
    let io_err = |e| RegistryError::io("cannot read layer", what, e);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| RegistryError::UnsafeEntry {
            layer: what.to_string(),
            entry: raw.clone(),
            reason: reason.to_string(),
        };
        if escapes(raw.trim_start_matches('/')) {
            return Err(refuse("the path leaves the image root through `..`"));
        }
        let path = clean_join("/", &raw);
        if path.is_empty() {
            continue;
        }
        let (dir, name) = path
            .rsplit_once('/')
            .map_or(("", path.as_str()), |(d, n)| (d, n));
        if name == ".wh..wh..opq" {
            layer.insert(dir.to_string(), Node::Opaque);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if matches!(hidden, "" | "." | "..") {
                return Err(refuse(
                    "a whiteout must name a file (`.wh.NAME`), not `.` or `..`",
                ));
            }
            let p = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            layer.insert(p, Node::Whiteout);
            continue;
        }
        let kind = entry.header().entry_type();
        let node = match kind {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(io_err)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                Node::File { data, mode }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Node::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if escapes(target.trim_start_matches('/')) {
                    return Err(refuse("the hard link points outside the image root"));
                }
                match layer.get(&clean_join("/", &target)) {
                    Some(n @ Node::File { .. }) => n.clone(),
                    _ => {
                        return Err(refuse(
                            "the hard link's target is not an earlier file of the same layer",
                        ));
                    }
                }
            }
            other if crate::unpack::is_metadata_entry(other) => continue,
            _ => return Err(refuse(crate::unpack::SPECIAL_FILES_REFUSED)),
        };
        layer.insert(path, node);
    }
    apply_layer(tree, &layer);
    Ok(())
}

/// Serializes `tree` as a reproducible tar.
pub(crate) fn tar_bytes(tree: &Tree, mtime: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let err = |e| RegistryError::io("cannot write layer", "tar", e);
    for (path, node) in tree {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        match node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(err)?;
            }
            Node::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder
                    .append_data(&mut h, path, data.as_slice())
                    .map_err(err)?;
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, path, target).map_err(err)?;
            }
            Node::Whiteout | Node::Opaque => {
                let (dir, name) = path
                    .rsplit_once('/')
                    .map_or(("", path.as_str()), |(d, n)| (d, n));
                let wh = if matches!(node, Node::Opaque) {
                    ".wh..wh..opq".to_string()
                } else {
                    format!(".wh.{name}")
                };
                let p = if matches!(node, Node::Opaque) {
                    format!("{path}/{wh}")
                } else if dir.is_empty() {
                    wh
                } else {
                    format!("{dir}/{wh}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                builder
                    .append_data(&mut h, p, std::io::empty())
                    .map_err(err)?;
            }
        }
    }
    builder.into_inner().map_err(err)
}

/// gzip with fixed settings: level 6, mtime 0, no file name.
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(6));
    gz.write_all(data)
        .and_then(|()| gz.finish())
        .map_err(|e| RegistryError::io("cannot compress layer", "gzip", e))
}

/// `secs` since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub(crate) fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn joins() {
        assert_eq!(clean_join("/app", "x/../y"), "app/y");
        assert_eq!(clean_join("/app", "/abs"), "abs");
        assert_eq!(clean_join("/", "../../etc"), "etc");
        assert!(escapes("../x"));
        assert!(!escapes("a/../b"));
    }
}
