//! Build → push → delete locally → pull, against a real Distribution
//! registry, for all three image formats; and the same with htpasswd auth.

mod common;

use berth_registry::auth::{self, Credentials};
use berth_registry::client::{self, Auth, RemoteOptions};
use berth_registry::image::{self, ImageFormat, WasmSource};
use berth_registry::{RegistryError, unpack};
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// Counts progress events.
#[derive(Default)]
struct Counter {
    started: AtomicUsize,
    done: AtomicUsize,
    skipped: AtomicUsize,
    max_bytes: AtomicU64,
}

impl client::Progress for Counter {
    fn blob_started(&self, _digest: &str, _size: u64) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn blob_progress(&self, _digest: &str, done: u64) {
        self.max_bytes.fetch_max(done, Ordering::SeqCst);
    }
    fn blob_done(&self, _digest: &str, skipped: bool) {
        let counter = if skipped { &self.skipped } else { &self.done };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A large layer is uploaded in chunks from its file; progress is reported;
/// pushing under another name and pulling by digest work.
#[tokio::test]
async fn large_layer_progress_retag_and_pull_by_digest() -> TestResult {
    let reg = Registry::start(None)?;
    let wasm = example_wasm("hello.wasm")?;
    // 10 MiB of incompressible bytes: above the streaming threshold.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..10 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (_d, store) = store()?;
    let built = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm big.bin /\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm), ("big.bin", &big)],
        "local-big:1",
        ImageFormat::Image,
    )?;
    let counter = Arc::new(Counter::default());
    let opts = RemoteOptions {
        progress: Some(counter.clone()),
        ..RemoteOptions::default()
    };
    let dest = format!("{}/berth/big:v1", reg.host());
    let pushed = client::push(&store, "local-big:1", Some(&dest), &opts).await?;
    assert_eq!(pushed.digest, built.digest);
    assert_eq!(counter.started.load(Ordering::SeqCst), 2);
    assert_eq!(counter.done.load(Ordering::SeqCst), 2);
    assert!(counter.max_bytes.load(Ordering::SeqCst) > 10 << 20);

    let by_digest = format!("{}/berth/big@{}", reg.host(), built.digest);
    let (_d2, fresh) = common::store()?;
    let counter = Arc::new(Counter::default());
    let opts = RemoteOptions {
        progress: Some(counter.clone()),
        ..RemoteOptions::default()
    };
    let pulled = client::pull(&fresh, &by_digest, &opts).await?;
    assert_eq!(pulled.digest, built.digest);
    assert_eq!(counter.done.load(Ordering::SeqCst), 2);
    assert_eq!(fresh.resolve(&built.digest)?.0, built.digest);
    assert_eq!(fresh.resolve(&by_digest)?.0, built.digest);
    // A second pull downloads nothing.
    let again = client::pull(&fresh, &by_digest, &RemoteOptions::default()).await?;
    assert_eq!(again.downloaded, 0);
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
