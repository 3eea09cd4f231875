//! Build → push → delete locally → pull, against a real Distribution
//! registry, for all three image formats; and the same with htpasswd auth.

mod common;

use berth_registry::auth::{self, Credentials};
use berth_registry::client::{self, Auth, RemoteOptions};
use berth_registry::image::{self, ImageFormat, WasmSource};
use berth_registry::{RegistryError, unpack};
use common::*;

const P1_DOCKERFILE: &str = "FROM scratch\nCOPY hello.wasm /app/hello.wasm\nENV GREETING=hi\nWORKDIR /app\nENTRYPOINT [\"/app/hello.wasm\"]\nCMD [\"world\"]\nEXPOSE 8080\n";
const P2_DOCKERFILE: &str =
    "FROM scratch\nCOPY hello-p2.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n";

async fn roundtrip(
    reg: &Registry,
    format: ImageFormat,
    wasm_name: &str,
    dockerfile: &str,
    os: &str,
) -> TestResult {
    let wasm = example_wasm(wasm_name)?;
    let (dir, store) = store()?;
    let tag = format!("{}/berth/{}:v1", reg.host(), format.name());
    let built = build_image(&store, dockerfile, &[(wasm_name, &wasm)], &tag, format)?;
    assert_eq!(built.os, os);
    let opts = RemoteOptions::default();
    let pushed = client::push(&store, &tag, None, &opts).await?;
    assert_eq!(pushed.digest, built.digest);
    assert!(pushed.uploaded >= 2, "{pushed:?}");

    // A second push uploads nothing: the registry has every blob.
    let again = client::push(&store, &tag, None, &opts).await?;
    assert_eq!(again.uploaded, 0, "{again:?}");

    store.remove(&tag)?;
    let pruned = store.prune()?;
    assert!(pruned.freed_bytes > 0);
    assert!(matches!(
        store.resolve(&tag),
        Err(RegistryError::ImageNotFound(_))
    ));

    let pulled = client::pull(&store, &tag, &opts).await?;
    assert_eq!(pulled.digest, built.digest);
    let (digest, _) = store.resolve(&tag)?;
    assert_eq!(digest, built.digest);

    let rc = image::run_config(&store, &tag)?;
    assert_eq!(rc.format, format);
    assert_eq!(rc.os, os);
    let root = unpack::rootfs(&store, &tag, &dir.path().join("rootfs"))?;
    let file = root.join(rc.wasm_path().trim_start_matches('/'));
    assert_eq!(std::fs::read(&file)?, wasm, "{}", file.display());
    match format {
        ImageFormat::Image => {
            assert_eq!(rc.wasm, WasmSource::Path("/app/hello.wasm".into()));
            assert_eq!(rc.env, vec!["GREETING=hi".to_string()]);
            assert_eq!(rc.cmd, vec!["world".to_string()]);
            assert_eq!(rc.workdir.as_deref(), Some("/app"));
            assert_eq!(rc.exposed_ports, vec!["8080/tcp".to_string()]);
        }
        ImageFormat::Artifact | ImageFormat::ComponentLayer => {
            assert!(matches!(rc.wasm, WasmSource::Blob { .. }));
            assert_eq!(rc.entrypoint[0], "/app.wasm");
        }
    }
    Ok(())
}

#[tokio::test]
async fn push_pull_roundtrip_all_formats() -> TestResult {
    let reg = Registry::start(None)?;
    roundtrip(
        &reg,
        ImageFormat::Image,
        "hello.wasm",
        P1_DOCKERFILE,
        "wasip1",
    )
    .await?;
    roundtrip(
        &reg,
        ImageFormat::Artifact,
        "hello-p2.wasm",
        P2_DOCKERFILE,
        "wasip2",
    )
    .await?;
    roundtrip(
        &reg,
        ImageFormat::ComponentLayer,
        "hello-p2.wasm",
        P2_DOCKERFILE,
        "wasip2",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn htpasswd_login_push_pull() -> TestResult {
    let reg = Registry::start(Some(("alice", "s3cret")))?;
    let wasm = example_wasm("hello.wasm")?;
    let (dir, store) = store()?;
    let tag = format!("{}/team/app:v1", reg.host());
    let built = build_image(
        &store,
        P1_DOCKERFILE,
        &[("hello.wasm", &wasm)],
        &tag,
        ImageFormat::Image,
    )?;

    let anonymous = client::push(&store, &tag, None, &RemoteOptions::default()).await;
    assert!(
        anonymous.is_err(),
        "anonymous push to an htpasswd registry must fail"
    );

    let auth_file = dir.path().join("auth.json");
    let wrong = Credentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = auth::login(&auth_file, &reg.host(), &wrong, None).await;
    assert!(matches!(err, Err(RegistryError::Auth { .. })), "{err:?}");
    assert!(
        !auth_file.exists(),
        "failed login must not store credentials"
    );

    let right = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    auth::login(&auth_file, &reg.host(), &right, None).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&auth_file)?.permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        auth::credentials_for(&auth_file, &reg.host())?,
        Some(right.clone())
    );

    let opts = RemoteOptions {
        auth: Auth::FromFiles(auth_file.clone()),
        ..RemoteOptions::default()
    };
    let pushed = client::push(&store, &tag, None, &opts).await?;
    assert_eq!(pushed.digest, built.digest);

    let (_dir2, fresh) = common::store()?;
    let pulled = client::pull(&fresh, &tag, &opts).await?;
    assert_eq!(pulled.digest, built.digest);

    let basic = RemoteOptions {
        auth: Auth::Basic(right),
        ..RemoteOptions::default()
    };
    let (_dir3, fresh) = common::store()?;
    client::pull(&fresh, &tag, &basic).await?;

    assert!(auth::logout(&auth_file, &reg.host())?);
    assert_eq!(auth::credentials_for(&auth_file, &reg.host())?, None);
    Ok(())
}
