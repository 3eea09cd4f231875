//! The resolver against an image store built in a temporary directory: a
//! spec becomes the program's file and the sandbox the image and the spec
//! describe together, with docker's precedence rules.

use std::path::{Path, PathBuf};

use berth_container::resolve::{self, Images, PullError, ResolveError};
use berth_container::spec::MountSpec;
use berth_container::{ContainerSpec, PullPolicy, Target, flags};
use berth_registry::Store;
use berth_registry::build::{self, BuildOptions};
use berth_registry::unpack::UnpackLimits;
use berth_runtime::Entrypoint;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A store holding `app:1`, built from a Dockerfile with ENV, WORKDIR,
/// EXPOSE, ENTRYPOINT and CMD, plus the directories the resolver uses.
struct Home {
    dir: tempfile::TempDir,
    store: Store,
    limits: UnpackLimits,
}

impl Home {
    fn new() -> TestResult<Home> {
        let dir = tempfile::tempdir()?;
        let context = dir.path().join("context");
        std::fs::create_dir_all(context.join("bin"))?;
        std::fs::write(context.join("bin/app.wasm"), example_wasm()?)?;
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\n\
             ENV GREETING=hi MODE=image\n\
             WORKDIR /app\n\
             COPY bin/app.wasm /app/app.wasm\n\
             EXPOSE 8080 53/udp\n\
             ENTRYPOINT [\"/app/app.wasm\"]\n\
             CMD [\"default\"]\n",
        )?;
        let store = Store::open(dir.path().join("images"))?;
        let mut options = BuildOptions::new(&context);
        options.tags = vec!["app:1".into()];
        build::build(&store, &options)?;
        Ok(Home {
            dir,
            store,
            limits: UnpackLimits::default(),
        })
    }

    fn scratch_dir(&self) -> PathBuf {
        self.dir.path().join("containers")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn resolve(&self, spec: &ContainerSpec) -> Result<resolve::Resolved, ResolveError> {
        let (rootfs_dir, scratch_dir) = (self.rootfs_dir(), self.scratch_dir());
        let images = Images {
            store: &self.store,
            rootfs_dir: &rootfs_dir,
            scratch_dir: &scratch_dir,
            unpack_limits: &self.limits,
        };
        resolve::resolve(
            spec,
            &images,
            &mut |image: &str| -> Result<String, PullError> {
                Err(format!("no registry in this test for {image}").into())
            },
        )
    }
}

fn example_wasm() -> TestResult<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm/hello.wasm");
    Ok(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)
}

fn image(reference: &str) -> ContainerSpec {
    ContainerSpec::new(Target::Image {
        reference: reference.into(),
        pull: PullPolicy::Never,
    })
}

#[test]
fn an_image_resolves_to_its_program_rootfs_and_private_tmp() -> TestResult {
    let home = Home::new()?;
    let resolved = home.resolve(&image("app:1"))?;
    assert_eq!(resolved.origin, "/app/app.wasm in app:1");
    assert_eq!(std::fs::read(&resolved.path)?, example_wasm()?);
    let sandbox = &resolved.sandbox;
    assert_eq!(sandbox.program_name, "/app/app.wasm");
    assert_eq!(sandbox.args, vec!["default"], "CMD gives the arguments");
    assert_eq!(sandbox.workdir.as_deref(), Some("/app"));
    assert_eq!(sandbox.entrypoint, Entrypoint::Command);
    assert_eq!(
        sandbox.env,
        vec![
            ("GREETING".to_owned(), "hi".to_owned()),
            ("MODE".to_owned(), "image".to_owned())
        ]
    );
    assert_eq!(sandbox.network.expose, vec![8080], "UDP is not exposed");
    let [root, tmp] = sandbox.mounts.as_slice() else {
        panic!("expected / and /tmp: {:?}", sandbox.mounts);
    };
    assert_eq!((root.guest.as_str(), root.read_only), ("/", true));
    assert!(root.host.starts_with(home.rootfs_dir()), "{root:?}");
    assert_eq!((tmp.guest.as_str(), tmp.read_only), ("/tmp", false));
    let scratch = resolved.scratch.as_ref().expect("a private /tmp");
    assert_eq!(tmp.host, scratch.path());
    assert!(scratch.path().starts_with(home.scratch_dir()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(scratch.path())?.permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the private /tmp is owner-only");
    }
    let scratch_path = scratch.path().to_path_buf();
    drop(resolved);
    assert!(!scratch_path.exists(), "the private /tmp goes with the run");
    Ok(())
}

#[test]
fn the_spec_overrides_the_image() -> TestResult {
    let home = Home::new()?;
    let data = tempfile::tempdir()?;
    let mut spec = image("app:1");
    spec.args = vec!["mine".into()];
    spec.env = vec![("MODE".into(), "spec".into()), ("EXTRA".into(), "1".into())];
    spec.workdir = Some("/tmp".into());
    spec.mounts = vec![flags::parse_mount(&format!(
        "{}:/data:ro",
        data.path().display()
    ))?];
    spec.ports = vec![flags::parse_port_mapping("127.0.0.1:9000:8080")?];
    spec.outbound = vec![flags::parse_outbound_rule("api.example.com:443")?];
    let resolved = home.resolve(&spec)?;
    let sandbox = &resolved.sandbox;
    assert_eq!(sandbox.args, vec!["mine"], "arguments replace CMD");
    assert_eq!(sandbox.workdir.as_deref(), Some("/tmp"));
    // Image ENV first, then the spec's: later duplicates win in the sandbox.
    let effective = sandbox.effective_env();
    assert!(
        effective.contains(&("MODE".into(), "spec".into())),
        "{effective:?}"
    );
    assert!(
        effective.contains(&("GREETING".into(), "hi".into())),
        "{effective:?}"
    );
    assert_eq!(sandbox.mounts.len(), 3, "{:?}", sandbox.mounts);
    assert_eq!(sandbox.mounts[2].guest, "/data");
    assert_eq!(sandbox.network.publish, spec.ports);
    assert_eq!(sandbox.network.outbound, spec.outbound);
    assert_eq!(sandbox.network.expose, vec![8080]);

    // --entrypoint replaces ENTRYPOINT and drops CMD.
    let mut spec = image("app:1");
    spec.entrypoint = Some("/app/app.wasm".into());
    assert!(home.resolve(&spec)?.sandbox.args.is_empty());
    Ok(())
}

#[test]
fn errors_name_the_image_and_what_to_do() -> TestResult {
    let home = Home::new()?;
    let missing = home.resolve(&image("absent:1")).expect_err("not local");
    assert_eq!(
        missing.to_string(),
        "image \"absent:1\" is not in the local store and --pull never was given; run `berth pull absent:1` or `berth images` to see what is there"
    );

    let mut pulled = image("absent:1");
    pulled.target = Target::Image {
        reference: "absent:1".into(),
        pull: PullPolicy::Missing,
    };
    let error = home.resolve(&pulled).expect_err("the pull fails");
    assert_eq!(
        error.to_string(),
        "\"absent:1\" is neither a file nor a local image, and pulling it failed"
    );
    let cause = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(
        cause.as_deref(),
        Some("no registry in this test for absent:1")
    );

    let mut spec = image("app:1");
    spec.entrypoint = Some("/app/none.wasm".into());
    assert_eq!(
        home.resolve(&spec).expect_err("no such file").to_string(),
        "the image's entrypoint /app/none.wasm does not exist in image \"app:1\""
    );
    spec.entrypoint = Some("app.wasm".into());
    assert_eq!(
        home.resolve(&spec).expect_err("relative").to_string(),
        "the image's entrypoint \"app.wasm\" is not an absolute path inside the image"
    );

    // A mount whose directory has gone since the spec was made.
    let data = tempfile::tempdir()?;
    let mut spec = image("app:1");
    spec.mounts = vec![MountSpec {
        host: data.path().join("gone"),
        guest: "/data".into(),
        read_only: false,
    }];
    let error = home.resolve(&spec).expect_err("gone");
    assert!(
        error.to_string().starts_with("invalid volume") && error.to_string().contains("gone"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_file_target_runs_as_it_is() -> TestResult {
    let spec = ContainerSpec {
        args: vec!["a".into()],
        env: vec![("A".into(), "1".into())],
        ..ContainerSpec::new(resolve::target_of("dir/calc.wasm#add", PullPolicy::Missing))
    };
    let resolved = resolve::resolve_file(&spec)?;
    assert_eq!(resolved.path, Path::new("dir/calc.wasm"));
    assert_eq!(resolved.origin, "dir/calc.wasm");
    assert_eq!(resolved.sandbox.program_name, "calc.wasm");
    assert_eq!(
        resolved.sandbox.entrypoint,
        Entrypoint::Export("add".into())
    );
    assert_eq!(resolved.sandbox.args, vec!["a"]);
    assert_eq!(resolved.sandbox.env, spec.env);
    assert!(resolved.sandbox.mounts.is_empty());
    assert!(resolved.scratch.is_none());
    assert!(matches!(
        resolve::target_of("nginx:latest", PullPolicy::Always),
        Target::Image {
            pull: PullPolicy::Always,
            ..
        }
    ));
    Ok(())
}

#[test]
fn local_images_show_what_they_run() -> TestResult {
    let home = Home::new()?;
    let mut spec = image("app:1");
    assert_eq!(
        resolve::local_image_argv(&home.store, &spec),
        Some(vec!["/app/app.wasm".to_owned(), "default".to_owned()])
    );
    spec.args = vec!["x".into()];
    assert_eq!(
        resolve::local_image_argv(&home.store, &spec),
        Some(vec!["/app/app.wasm".to_owned(), "x".to_owned()])
    );
    assert_eq!(
        resolve::local_image_argv(&home.store, &image("absent")),
        None
    );
    Ok(())
}
