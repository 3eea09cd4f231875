//! Pulls that must fail cleanly: a blob corrupted in the registry's storage,
//! and a connection cut halfway through a layer. Neither may leave an image
//! (or a visible partial blob) in the store, and a later good pull works.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_registry::RegistryError;
use berth_registry::client::{self, RemoteOptions};
use berth_registry::image::ImageFormat;
use common::*;

const DOCKERFILE: &str =
    "FROM scratch\nCOPY hello-p2.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n";

fn tmp_files(store: &berth_registry::Store) -> TestResult<usize> {
    Ok(std::fs::read_dir(store.root().join("tmp"))?.count())
}

/// A fresh store holding hello-p2 built as `format`, tagged
/// `REGISTRY/berth/NAME:v1` and pushed to `reg`; returns the store (with
/// its directory), the tag and the build.
async fn pushed_hello(
    reg: &Registry,
    name: &str,
    format: ImageFormat,
) -> TestResult<(
    tempfile::TempDir,
    berth_registry::Store,
    String,
    berth_registry::build::BuildOutcome,
)> {
    let wasm = example_wasm("hello-p2.wasm")?;
    let (dir, store) = store()?;
    let tag = format!("{}/berth/{name}:v1", reg.host());
    let built = build_image(
        &store,
        DOCKERFILE,
        &[("hello-p2.wasm", &wasm)],
        &tag,
        format,
    )?;
    client::push(&store, &tag, None, &RemoteOptions::default()).await?;
    Ok((dir, store, tag, built))
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_nothing_stored() -> TestResult {
    let reg = Registry::start(None)?;
    let (_d, store, tag, built) = pushed_hello(&reg, "corrupt", ImageFormat::Artifact).await?;
    let (_, manifest) = store.resolve(&built.digest)?;
    let layer = manifest.layers[0].digest.clone();

    // Same length, one byte flipped: only the digest can tell.
    let data_path = reg.blob_data_path(&layer);
    let mut data = std::fs::read(&data_path)?;
    data[100] ^= 0xff;
    std::fs::write(&data_path, &data)?;

    let (_d2, fresh) = common::store()?;
    let err = client::pull(&fresh, &tag, &RemoteOptions::default()).await;
    match err {
        Err(RegistryError::DigestMismatch { expected, .. }) => assert_eq!(expected, layer),
        other => return Err(format!("expected a digest mismatch, got {other:?}").into()),
    }
    assert!(fresh.images()?.is_empty());
    assert!(!fresh.has_blob(&layer));
    assert_eq!(tmp_files(&fresh)?, 0);
    Ok(())
}

/// A TCP proxy to `upstream` that cuts each new connection after `limit`
/// bytes from the server while `cuts_left` is non-zero (decrementing it;
/// `usize::MAX` cuts forever).
fn cutting_proxy(upstream: u16, limit: usize, cuts_left: Arc<AtomicUsize>) -> TestResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for client in listener.incoming().take(500) {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let cut = cuts_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                    0 => None,
                    usize::MAX => Some(usize::MAX),
                    n => Some(n - 1),
                })
                .is_ok();
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = server.set_read_timeout(Some(Duration::from_secs(30)));
            std::thread::spawn(move || pipe(client, s2, usize::MAX));
            std::thread::spawn(move || pipe(server, c2, if cut { limit } else { usize::MAX }));
        }
    });
    Ok(port)
}

fn pipe(mut from: TcpStream, mut to: TcpStream, limit: usize) {
    let mut buf = [0u8; 1024];
    let mut sent = 0usize;
    // Bounded: at most 1 GiB or until either side closes.
    for _ in 0..(1 << 20) {
        let want = buf.len().min(limit - sent);
        if want == 0 {
            break;
        }
        match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[tokio::test]
async fn interrupted_pull_leaves_no_image_and_next_pull_works() -> TestResult {
    let reg = Registry::start(None)?;
    let (_d, store, _tag, built) = pushed_hello(&reg, "cut", ImageFormat::Image).await?;
    let (_, manifest) = store.resolve(&built.digest)?;
    let layer = manifest.layers[0].clone();
    assert!(
        layer.size > 16 * 1024,
        "the layer must be bigger than the cut-off"
    );

    let cuts = Arc::new(AtomicUsize::new(usize::MAX));
    let proxy = cutting_proxy(reg.port, 8 * 1024, cuts.clone())?;
    let via_proxy = format!("127.0.0.1:{proxy}/berth/cut:v1");

    let (_d2, fresh) = common::store()?;
    let err = client::pull(&fresh, &via_proxy, &RemoteOptions::default()).await;
    assert!(
        err.is_err(),
        "a pull through a cutting proxy must fail: {err:?}"
    );
    assert!(
        fresh.images()?.is_empty(),
        "no image after an interrupted pull"
    );
    assert!(
        fresh.has_blob(&manifest.config.digest),
        "the cut must happen in the layer, after the manifest and config"
    );
    assert!(!fresh.has_blob(&layer.digest), "no partial layer visible");
    assert_eq!(tmp_files(&fresh)?, 0, "temp files cleaned up");

    cuts.store(0, Ordering::SeqCst);
    let pulled = client::pull(&fresh, &via_proxy, &RemoteOptions::default()).await?;
    assert_eq!(pulled.digest, built.digest);
    assert!(fresh.has_blob(&layer.digest));
    Ok(())
}

#[tokio::test]
async fn transient_cuts_are_retried() -> TestResult {
    let reg = Registry::start(None)?;
    let (_d, _store, _tag, built) = pushed_hello(&reg, "flaky", ImageFormat::Image).await?;

    // The first two connections die mid-transfer; the retries get through.
    let cuts = Arc::new(AtomicUsize::new(2));
    let proxy = cutting_proxy(reg.port, 8 * 1024, cuts.clone())?;
    let (_d2, fresh) = common::store()?;
    let pulled = client::pull(
        &fresh,
        &format!("127.0.0.1:{proxy}/berth/flaky:v1"),
        &RemoteOptions::default(),
    )
    .await?;
    assert_eq!(pulled.digest, built.digest);
    assert_eq!(cuts.load(Ordering::SeqCst), 0, "both cuts happened");
    Ok(())
}
