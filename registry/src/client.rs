//! The registry client: pull, push and credential checks over the OCI
//! distribution API (oci-client does the HTTP and the bearer-token dance).
//!
//! Pull writes every blob through [`crate::store::BlobWriter`], so bytes are
//! hashed while they stream and a blob becomes visible only if it matches
//! its digest; the manifest is named in the index last, so an interrupted
//! or failed pull leaves no image (at most unreferenced blobs that the
//! next pull reuses or `prune` removes). Transient failures (5xx,
//! connection errors, truncated bodies) are retried with exponential
//! backoff, [`MAX_TRIES`] times at most. Progress goes to a [`Progress`]
//! callback; this module never draws anything.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use crate::auth::{self, Credentials};
use crate::digest;
use crate::error::{RegistryError, Result};
use crate::image::{Index, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST, Manifest};
use crate::reference::Reference;
use crate::store::Store;

/// Attempts per request before giving up.
pub const MAX_TRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Blobs above this size are uploaded from their file in chunks.
const STREAM_THRESHOLD: u64 = 8 << 20;
const UPLOAD_CHUNK: usize = 4 << 20;
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Receives progress events; the CLI implements it with progress bars.
/// Every method has an empty default.
pub trait Progress: Send + Sync {
    /// A blob transfer starts (`size` bytes).
    fn blob_started(&self, _digest: &str, _size: u64) {}
    /// `done` bytes of the blob have been transferred so far.
    fn blob_progress(&self, _digest: &str, _done: u64) {}
    /// The blob is complete; `skipped` if it was already there.
    fn blob_done(&self, _digest: &str, _skipped: bool) {}
    /// A transient failure; the request will be retried after `delay`.
    fn retrying(&self, _what: &str, _attempt: u32, _delay: Duration, _error: &str) {}
}

/// How to authenticate.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    Anonymous,
    /// User name and password (or token as password).
    Basic(Credentials),
    /// A bearer token.
    Bearer(String),
    /// Look the registry up in berth's auth file (this path), then in docker's
    /// config.json; anonymous if neither has it.
    FromFiles(PathBuf),
}

/// Options shared by pull and push.
#[derive(Clone, Default)]
pub struct RemoteOptions {
    /// `Some(true)`: plain HTTP; `Some(false)`: HTTPS; `None`: HTTP for
    /// loopback registries (localhost, 127.0.0.1, ::1), HTTPS otherwise.
    pub plain_http: Option<bool>,
    /// Credentials.
    pub auth: Auth,
    /// Progress callback.
    pub progress: Option<Arc<dyn Progress>>,
}

/// Options of [`pull`].
pub type PullOptions = RemoteOptions;
/// Options of [`push`].
pub type PushOptions = RemoteOptions;

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteOptions")
            .field("plain_http", &self.plain_http)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The normalized reference pulled.
    pub reference: Reference,
    /// The manifest digest stored.
    pub digest: String,
    /// Blobs downloaded (others were already present).
    pub downloaded: usize,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// Where it went.
    pub reference: Reference,
    /// The manifest digest.
    pub digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
}

struct Remote {
    client: Client,
    auth: RegistryAuth,
    target: oci_client::Reference,
    reference: Reference,
    progress: Option<Arc<dyn Progress>>,
}

impl Remote {
    fn new(reference: Reference, opts: &RemoteOptions) -> Result<Remote> {
        let client = make_client(uses_plain_http(&reference, opts.plain_http));
        let auth = match &opts.auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            Auth::Bearer(t) => RegistryAuth::Bearer(t.clone()),
            Auth::FromFiles(path) => match auth::credentials_for(path, reference.registry())? {
                Some(c) => RegistryAuth::Basic(c.username, c.password),
                None => RegistryAuth::Anonymous,
            },
        };
        let target = match (reference.tag(), reference.digest()) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                d.to_string(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                reference.registry().to_string(),
                reference.repository().to_string(),
                t.to_string(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                reference.registry().to_string(),
                reference.repository().to_string(),
                crate::reference::DEFAULT_TAG.to_string(),
            ),
        };
        Ok(Remote {
            client,
            auth,
            target,
            reference,
            progress: opts.progress.clone(),
        })
    }

    async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) if attempt >= MAX_TRIES => {
                    return Err(RegistryError::Remote {
                        registry: self.reference.registry().to_string(),
                        reason: format!("{what} failed after {MAX_TRIES} attempts: {e}"),
                    });
                }
                Err(Attempt::Retry(e)) => {
                    tracing::debug!(what, attempt, error = %e, "retrying");
                    if let Some(p) = &self.progress {
                        p.retrying(what, attempt, delay, &e.to_string());
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// One attempt's failure: worth retrying or not.
enum Attempt {
    Retry(RegistryError),
    Fatal(RegistryError),
}

fn classify(registry: &str, e: OciDistributionError) -> Attempt {
    let retry = match &e {
        OciDistributionError::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.is_body() || r.is_request() || r.is_decode()
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        OciDistributionError::IoError(_) => true,
        _ => false,
    };
    let err = convert(registry, e);
    if retry {
        Attempt::Retry(err)
    } else {
        Attempt::Fatal(err)
    }
}

fn convert(registry: &str, e: OciDistributionError) -> RegistryError {
    match e {
        OciDistributionError::AuthenticationFailure(reason) => RegistryError::Auth {
            registry: registry.to_string(),
            reason,
        },
        OciDistributionError::UnauthorizedError { url } => RegistryError::Auth {
            registry: registry.to_string(),
            reason: format!("not authorized for {url}"),
        },
        other => RegistryError::Remote {
            registry: registry.to_string(),
            reason: other.to_string(),
        },
    }
}

/// Whether `reference`'s registry is reached over plain HTTP: as asked, or
/// by default only for loopback registries ([`Reference::is_loopback`]).
fn uses_plain_http(reference: &Reference, plain_http: Option<bool>) -> bool {
    plain_http.unwrap_or_else(|| reference.is_loopback())
}

fn make_client(plain_http: bool) -> Client {
    Client::new(client_config(plain_http))
}

fn client_config(plain_http: bool) -> ClientConfig {
    ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    }
}

fn descriptor(d: &crate::image::Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// Pulls `reference` into `store` and names it there. Every blob is
/// verified against its digest while it streams; on any failure the store
/// gains no image.
pub async fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<PullOutcome> {
    let reference = Reference::parse(reference)?;
    let remote = Remote::new(reference.clone(), opts)?;
    let registry = reference.registry().to_string();
    let accepted = [
        MEDIA_MANIFEST,
        MEDIA_DOCKER_MANIFEST,
        MEDIA_INDEX,
        DOCKER_MANIFEST_LIST,
    ];
    let (mut bytes, _) = remote
        .retry("fetching the manifest", || async {
            remote
                .client
                .pull_manifest_raw(&remote.target, &remote.auth, &accepted)
                .await
                .map_err(|e| classify(&registry, e))
        })
        .await?;
    let mut digest = digest::of(&bytes);
    if let Some(pinned) = reference.digest()
        && pinned != digest
    {
        return Err(RegistryError::DigestMismatch {
            what: format!("manifest of {}", reference.short()),
            expected: pinned.to_string(),
            actual: digest,
        });
    }
    // An index: pick the wasm entry (or the only one) and fetch it by digest.
    let probe: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::json(format!("manifest of {}", reference.short()), e))?;
    if probe.get("manifests").is_some() {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::json(format!("index of {}", reference.short()), e))?;
        let pick = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .and_then(|p| p.get("architecture"))
                    .and_then(|a| a.as_str())
                    == Some("wasm")
            })
            .or(if index.manifests.len() == 1 {
                index.manifests.first()
            } else {
                None
            })
            .ok_or_else(|| RegistryError::Unsupported {
                image: reference.short(),
                reason: "it is a multi-platform index without a wasm entry".into(),
            })?
            .digest
            .clone();
        let by_digest = oci_client::Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            pick.clone(),
        );
        let (b, _) = remote
            .retry("fetching the manifest", || async {
                remote
                    .client
                    .pull_manifest_raw(&by_digest, &remote.auth, &accepted)
                    .await
                    .map_err(|e| classify(&registry, e))
            })
            .await?;
        bytes = b;
        digest = digest::of(&bytes);
        if digest != pick {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest of {}", reference.short()),
                expected: pick,
                actual: digest,
            });
        }
    }
    let manifest = Manifest::from_slice(&bytes, &format!("manifest of {}", reference.short()))?;
    let mut downloaded = 0;
    for blob in manifest.blobs() {
        if store.has_blob(&blob.digest) {
            if let Some(p) = &remote.progress {
                p.blob_done(&blob.digest, true);
            }
            continue;
        }
        digest::hex_part(&blob.digest)?;
        remote
            .retry(&format!("downloading {}", blob.digest), || {
                fetch_blob(&remote, store, blob)
            })
            .await?;
        downloaded += 1;
    }
    let stored = store.put_manifest(&bytes)?;
    store.tag(&reference, &stored)?;
    Ok(PullOutcome {
        reference,
        digest: stored,
        downloaded,
    })
}

async fn fetch_blob(
    remote: &Remote,
    store: &Store,
    blob: &crate::image::Descriptor,
) -> Result<(), Attempt> {
    let registry = remote.reference.registry();
    let mut stream = remote
        .client
        .pull_blob_stream(&remote.target, &descriptor(blob))
        .await
        .map_err(|e| classify(registry, e))?;
    if let Some(p) = &remote.progress {
        p.blob_started(&blob.digest, blob.size);
    }
    let mut writer = store.blob_writer(&blob.digest).map_err(Attempt::Fatal)?;
    let mut done: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                // oci-client's own verification fails at the end of the stream;
                // report that as the digest mismatch it is.
                if done == blob.size {
                    let (actual, _) = writer.abandon();
                    if actual != blob.digest {
                        return Err(Attempt::Fatal(RegistryError::DigestMismatch {
                            what: format!("blob {} from {}", blob.digest, remote.reference.short()),
                            expected: blob.digest.clone(),
                            actual,
                        }));
                    }
                }
                return Err(Attempt::Retry(RegistryError::Remote {
                    registry: registry.to_string(),
                    reason: format!(
                        "download of {} interrupted after {done} bytes: {e}",
                        blob.digest
                    ),
                }));
            }
        };
        done += chunk.len() as u64;
        if done > blob.size {
            return Err(Attempt::Fatal(RegistryError::SizeMismatch {
                what: format!("blob {}", blob.digest),
                expected: blob.size,
                actual: done,
            }));
        }
        writer
            .write_all(&chunk)
            .map_err(|e| Attempt::Fatal(RegistryError::io("cannot write blob", store.root(), e)))?;
        if let Some(p) = &remote.progress {
            p.blob_progress(&blob.digest, done);
        }
    }
    if done != blob.size {
        return Err(Attempt::Retry(RegistryError::SizeMismatch {
            what: format!("blob {}", blob.digest),
            expected: blob.size,
            actual: done,
        }));
    }
    writer.commit().map_err(Attempt::Fatal)?;
    if let Some(p) = &remote.progress {
        p.blob_done(&blob.digest, false);
    }
    Ok(())
}

/// Pushes local image `image` to `destination` (default: `image` itself,
/// which must then name a registry). Blobs the registry already has are
/// not uploaded again.
pub async fn push(
    store: &Store,
    image: &str,
    destination: Option<&str>,
    opts: &PushOptions,
) -> Result<PushOutcome> {
    let (digest, manifest) = store.resolve(image)?;
    let reference = Reference::parse(destination.unwrap_or(image))?;
    let remote = Remote::new(reference.clone(), opts)?;
    let registry = reference.registry().to_string();
    remote
        .retry("authenticating", || async {
            remote
                .client
                .auth(&remote.target, &remote.auth, RegistryOperation::Push)
                .await
                .map(|_| ())
                .map_err(|e| classify(&registry, e))
        })
        .await?;
    let (mut uploaded, mut skipped) = (0, 0);
    for blob in manifest.blobs() {
        let exists = remote
            .retry(&format!("checking {}", blob.digest), || async {
                remote
                    .client
                    .blob_exists(&remote.target, &blob.digest)
                    .await
                    .map_err(|e| classify(&registry, e))
            })
            .await?;
        if exists {
            skipped += 1;
            if let Some(p) = &remote.progress {
                p.blob_done(&blob.digest, true);
            }
            continue;
        }
        if let Some(p) = &remote.progress {
            p.blob_started(&blob.digest, blob.size);
        }
        if blob.size > STREAM_THRESHOLD {
            remote
                .retry(&format!("uploading {}", blob.digest), || {
                    upload_streamed(&remote, store, blob)
                })
                .await?;
        } else {
            let data = bytes::Bytes::from(store.read_blob(&blob.digest)?);
            remote
                .retry(&format!("uploading {}", blob.digest), || {
                    let data = data.clone();
                    let remote = &remote;
                    let registry = &registry;
                    async move {
                        remote
                            .client
                            .push_blob(&remote.target, data, &blob.digest)
                            .await
                            .map_err(|e| classify(registry, e))
                    }
                })
                .await?;
        }
        uploaded += 1;
        if let Some(p) = &remote.progress {
            p.blob_progress(&blob.digest, blob.size);
            p.blob_done(&blob.digest, false);
        }
    }
    let body = bytes::Bytes::from(store.read_blob(&digest)?);
    let content_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| MEDIA_MANIFEST.to_string());
    let header = content_type
        .parse()
        .map_err(|_| RegistryError::Unsupported {
            image: image.to_string(),
            reason: format!("manifest media type {content_type:?} is not a valid header value"),
        })?;
    let manifest_target = remote.target.clone();
    remote
        .retry("uploading the manifest", || {
            let body = body.clone();
            let header = reqwest::header::HeaderValue::clone(&header);
            let target = &manifest_target;
            let remote = &remote;
            let registry = &registry;
            async move {
                remote
                    .client
                    .push_manifest_raw(target, body, header)
                    .await
                    .map_err(|e| classify(registry, e))
            }
        })
        .await?;
    Ok(PushOutcome {
        reference,
        digest,
        uploaded,
        skipped,
    })
}

/// Uploads a large blob from its file in chunks instead of reading it
/// into memory first.
async fn upload_streamed(
    remote: &Remote,
    store: &Store,
    blob: &crate::image::Descriptor,
) -> Result<String, Attempt> {
    let file = store.open_blob(&blob.digest).map_err(Attempt::Fatal)?;
    let progress = remote.progress.clone();
    let digest = blob.digest.clone();
    let chunks = futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| {
        let progress = progress.clone();
        let digest = digest.clone();
        async move {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            match std::io::Read::read(&mut file, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    if let Some(p) = &progress {
                        p.blob_progress(&digest, sent);
                    }
                    Some((Ok(bytes::Bytes::from(buf)), (file, sent)))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), (file, sent))),
            }
        }
    });
    remote
        .client
        .push_blob_stream(&remote.target, chunks, &blob.digest)
        .await
        .map_err(|e| classify(remote.reference.registry(), e))
}

/// Checks `credentials` against `registry`: HTTP basic registries must
/// accept them on `/v2/`; token registries must issue a token for them.
pub async fn verify_credentials(
    registry: &str,
    credentials: &Credentials,
    plain_http: Option<bool>,
) -> Result<()> {
    let probe = Reference::parse(&format!("{registry}/berth/login-check"))?;
    let plain = uses_plain_http(&probe, plain_http);
    let scheme = if plain { "http" } else { "https" };
    let api_host = if registry == crate::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    };
    let url = format!("{scheme}://{api_host}/v2/");
    let remote_err = |reason: String| RegistryError::Remote {
        registry: registry.to_string(),
        reason,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| remote_err(e.to_string()))?;
    let anon = http
        .get(&url)
        .send()
        .await
        .map_err(|e| remote_err(format!("GET {url}: {e}")))?;
    let challenge = anon
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if anon.status().is_success() {
        return Ok(()); // No authentication required at all.
    }
    if challenge.starts_with("basic") {
        let res = http
            .get(&url)
            .basic_auth(&credentials.username, Some(&credentials.password))
            .send()
            .await
            .map_err(|e| remote_err(format!("GET {url}: {e}")))?;
        return if res.status().is_success() {
            Ok(())
        } else {
            Err(RegistryError::Auth {
                registry: registry.to_string(),
                reason: format!("the registry answered {}", res.status()),
            })
        };
    }
    let client = make_client(plain);
    let target = oci_client::Reference::with_tag(
        probe.registry().to_string(),
        probe.repository().to_string(),
        "latest".to_string(),
    );
    let auth = RegistryAuth::Basic(credentials.username.clone(), credentials.password.clone());
    client
        .auth(&target, &auth, RegistryOperation::Pull)
        .await
        .map(|_| ())
        .map_err(|e| match convert(registry, e) {
            RegistryError::Remote { reason, .. } => RegistryError::Auth {
                registry: registry.to_string(),
                reason,
            },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(registry: &str, plain_http: Option<bool>) -> ClientProtocol {
        let reference = Reference::parse(&format!("{registry}/app:v1")).expect("reference");
        client_config(uses_plain_http(&reference, plain_http)).protocol
    }

    #[test]
    fn names_that_look_like_loopback_get_https() {
        for registry in [
            "127.evil.example",
            "127.evil.example:5000",
            "localhost.evil.example",
        ] {
            assert_eq!(
                protocol(registry, None),
                ClientProtocol::Https,
                "{registry}"
            );
        }
        for registry in ["127.0.0.1:5000", "[::1]:5000", "localhost:5000"] {
            assert_eq!(protocol(registry, None), ClientProtocol::Http, "{registry}");
        }
        // An explicit choice wins either way.
        assert_eq!(
            protocol("127.evil.example", Some(true)),
            ClientProtocol::Http
        );
        assert_eq!(
            protocol("127.0.0.1:5000", Some(false)),
            ClientProtocol::Https
        );
    }
}
