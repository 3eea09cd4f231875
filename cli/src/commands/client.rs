//! The kubectl-style commands' HTTP client for the daemon's API: over the
//! daemon's unix socket by default, or over TCP to `--server URL` (or
//! `BERTH_SERVER`) with the bearer token of `--token-file` (or
//! `BERTH_TOKEN_FILE`). Server errors come back as Kubernetes `Status`
//! objects and read as kubectl prints them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// How long connecting to the daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plain (not streaming) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response read whole.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

// Where the daemon is (flags shared by the kubectl-style commands).
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The daemon's API: http://127.0.0.1:PORT, or unix:///PATH (default:
    /// the socket in berth's data directory).
    #[arg(long, env = "BERTH_SERVER", value_name = "URL")]
    server: Option<String>,
    /// A file holding the bearer token for a TCP server.
    #[arg(long, env = "BERTH_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(authority) => write!(f, "http://{authority}"),
        }
    }
}

/// An error the server sent as a `Status`, printed as kubectl prints it.
#[derive(Debug, thiserror::Error)]
#[error("Error from server ({reason}): {message}")]
pub struct ServerError {
    /// The HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Invalid`...
    pub reason: String,
    /// The server's message.
    pub message: String,
}

/// A connection to the daemon's API. Each request opens its own
/// connection (they are local and cheap).
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for the daemon `connection` names.
    pub fn new(connection: &Connection) -> Result<Client> {
        let endpoint = match connection.server.as_deref().filter(|s| !s.is_empty()) {
            None => Endpoint::Unix(crate::home::socket_path()?),
            Some(url) => {
                if let Some(path) = url.strip_prefix("unix://") {
                    Endpoint::Unix(PathBuf::from(path))
                } else if let Some(rest) = url.strip_prefix("http://") {
                    let authority = rest.split('/').next().unwrap_or_default();
                    if authority.is_empty() {
                        bail!("--server {url:?}: expected http://HOST:PORT");
                    }
                    Endpoint::Tcp(authority.to_owned())
                } else {
                    bail!(
                        "--server {url:?}: expected http://HOST:PORT or unix:///PATH (the daemon serves plain HTTP on loopback)"
                    );
                }
            }
        };
        let token = match &connection.token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?;
                Some(text.trim().to_owned())
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Client {
            endpoint,
            token,
            runtime,
        })
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the berth daemon at {}: {error}: start it with `berth daemon`",
            self.endpoint
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response<Incoming>> {
        let connect = async {
            match &self.endpoint {
                #[cfg(unix)]
                Endpoint::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    handshake(stream).await
                }
                #[cfg(not(unix))]
                Endpoint::Unix(_) => Err(std::io::Error::other(
                    "unix sockets are not available here: use --server http://127.0.0.1:PORT",
                )),
                Endpoint::Tcp(authority) => {
                    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                    handshake(stream).await
                }
            }
        };
        let mut sender = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(sender)) => sender,
            Ok(Err(error)) => return Err(self.unreachable(error)),
            Err(_) => return Err(self.unreachable("timed out")),
        };
        let host = match &self.endpoint {
            Endpoint::Tcp(authority) => authority.clone(),
            Endpoint::Unix(_) => "localhost".to_owned(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let request = request
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(bytes)))
            .with_context(|| format!("cannot build a request for {path}"))?;
        sender
            .send_request(request)
            .await
            .map_err(|error| self.unreachable(error))
    }

    /// Sends a request and reads the whole answer; a `Status` error
    /// becomes a [`ServerError`].
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<serde_json::Value> {
        self.runtime.block_on(async {
            let work = async {
                let response = self.send(method, path, body).await?;
                let status = response.status();
                let bytes = read_capped(response.into_body()).await?;
                decode(status, &bytes)
            };
            tokio::time::timeout(REQUEST_TIMEOUT, work)
                .await
                .map_err(|_| anyhow::anyhow!("the daemon did not answer {path} in time"))?
        })
    }

    /// GET as JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.call(Method::GET, path, None)
    }

    /// Sends JSON.
    pub fn send_json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.call(
            method,
            path,
            Some((content_type, value.to_string().into_bytes())),
        )
    }

    /// Streams the answer's body to `chunk` until it ends or `chunk`
    /// returns false.
    pub fn stream(&self, path: &str, mut chunk: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        self.runtime.block_on(async {
            let response = self.send(Method::GET, path, None).await?;
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let bytes = read_capped(body).await?;
                decode(status, &bytes)?;
                return Ok(());
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.context("the daemon's stream broke off")?;
                if let Some(data) = frame.data_ref()
                    && !chunk(data)?
                {
                    return Ok(());
                }
            }
            Ok(())
        })
    }

    /// Streams newline-delimited JSON values to `each`.
    pub fn stream_json(
        &self,
        path: &str,
        mut each: impl FnMut(serde_json::Value) -> Result<bool>,
    ) -> Result<()> {
        let mut pending: Vec<u8> = Vec::new();
        self.stream(path, |data| {
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value = serde_json::from_slice(&line)
                    .context("the daemon sent a watch event that is not JSON")?;
                if !each(value)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }
}

async fn handshake<S>(
    stream: S,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn read_capped(mut body: Incoming) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the daemon's answer broke off")?;
        if let Some(data) = frame.data_ref() {
            bytes.extend_from_slice(data);
            if bytes.len() > MAX_RESPONSE_BYTES {
                bail!("the daemon's answer is larger than 64 MiB");
            }
        }
    }
    Ok(bytes)
}

fn decode(status: StatusCode, bytes: &[u8]) -> Result<serde_json::Value> {
    let value: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    if status.is_success() {
        return value.with_context(|| format!("the daemon answered {status} with no JSON"));
    }
    match value {
        Some(status_object) if status_object["kind"] == "Status" => Err(ServerError {
            code: status.as_u16(),
            reason: status_object["reason"]
                .as_str()
                .unwrap_or("Unknown")
                .to_owned(),
            message: status_object["message"].as_str().unwrap_or("").to_owned(),
        }
        .into()),
        _ => Err(ServerError {
            code: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Unknown").to_owned(),
            message: String::from_utf8_lossy(bytes).trim().to_owned(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_selectors_for_queries() {
        assert_eq!(encode("app=web,tier!=db"), "app%3Dweb%2Ctier%21%3Ddb");
        assert_eq!(encode("web-1.a"), "web-1.a");
    }

    #[test]
    fn status_errors_read_as_kubectls() {
        let body = br#"{"kind":"Status","reason":"AlreadyExists","message":"deployments.apps \"web\" already exists","code":409}"#;
        let error = decode(StatusCode::CONFLICT, body).expect_err("409");
        assert_eq!(
            error.to_string(),
            "Error from server (AlreadyExists): deployments.apps \"web\" already exists"
        );
    }
}
