//! Serving wasi:http/proxy components: a hyper HTTP/1.1 and h2c server on a
//! host port that runs a fresh instance of the component for every request.
//!
//! The component is linked once ([`ProxyPre`]); each request gets its own
//! store with the per-request memory limit, CPU quota and a deadline, so one
//! request's trap, OOM or runaway loop never affects another or the server.
//! Components built by ordinary toolchains also import `wasi:cli` (env,
//! stdio, exit) and `wasi:filesystem`: the full WASI p2 set is linked, with
//! env and mounts from the [`ServeConfig`] and stdout/stderr to the host's,
//! so such components run unchanged. Outgoing HTTP is denied unless the
//! authority is in [`ServeConfig::allow_outbound`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub use crate::net::OutboundRule;

use crate::RuntimeError;
use crate::limits::Limits;
use crate::net::NetError;
use crate::program::Program;
use crate::quantity::format_bytes;
use crate::sandbox::{GuestState, grant_mounts, new_store};
use crate::spec::Mount;

/// The export that marks a component as a wasi:http proxy.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Whether `bytes` are a component exporting `wasi:http/incoming-handler`,
/// told from its export names without compiling it (so the caller can pick
/// the serving engine before compiling).
pub fn exports_http_handler(bytes: &[u8]) -> bool {
    crate::program::component_exports(bytes, INCOMING_HANDLER)
}

/// Whether `component` exports `wasi:http/incoming-handler` (any 0.2.x).
pub fn is_http_proxy(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with(INCOMING_HANDLER))
}

/// How to serve a component.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Per-request limits (memory, CPU). `timeout` is ignored: see
    /// `request_timeout`.
    pub limits: Limits,
    /// A request whose response has not started by then gets 504.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait (up to `request_timeout`), then 503.
    pub max_concurrency: usize,
    /// Environment of every instance; later duplicates override earlier
    /// ones.
    pub env: Vec<(String, String)>,
    /// Directories every instance sees.
    pub mounts: Vec<Mount>,
    /// Hosts the guest may call.
    pub allow_outbound: Vec<OutboundRule>,
    /// How long a graceful stop waits for in-flight requests.
    pub grace_period: Duration,
}

/// Per-request WASI and HTTP state.
pub(crate) struct HttpState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
}

impl WasiView for GuestState<HttpState> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for GuestState<HttpState> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// Denies outgoing requests unless their authority is allowed.
struct OutboundHooks {
    allow: Arc<Vec<OutboundRule>>,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        if !self.allow.iter().any(|rule| rule.allows(&host, port)) {
            tracing::info!(
                host,
                port,
                "outbound HTTP request denied (not in --allow-outbound)"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

/// Resources one request may hold at once (fields, bodies, streams,
/// pollables, outgoing requests). A handler uses a few dozen; each entry is
/// a small host object, except fields, which are bounded by
/// [`MAX_FIELDS_BYTES`].
pub const MAX_REQUEST_RESOURCES: usize = 1024;

/// Bytes of headers (or trailers) one fields resource may hold, counted as
/// wasmtime counts them (their in-memory size). wasmtime's default is
/// 128 KiB; proxies commonly cap request headers at 8 to 16 KiB.
pub const MAX_FIELDS_BYTES: usize = 64 << 10;

/// A running server's shared state.
struct Server {
    engine: &'static Engine,
    pre: ProxyPre<GuestState<HttpState>>,
    /// Host bytes each request's instances take, charged to its limit.
    footprint: u64,
    config: ServeConfig,
    allow: Arc<Vec<OutboundRule>>,
    permits: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Links `component` for serving; fails if it is not a wasi:http proxy or
/// imports something berth does not provide.
fn prepare(
    engine: &'static Engine,
    component: &Component,
    origin: &str,
) -> Result<ProxyPre<GuestState<HttpState>>, RuntimeError> {
    let link_error = |error: wasmtime::Error| RuntimeError::link(origin, &error);
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_error)?;
    let pre = linker.instantiate_pre(component).map_err(link_error)?;
    ProxyPre::new(pre).map_err(|error| RuntimeError::Entrypoint {
        origin: origin.to_owned(),
        reason: format!("does not export wasi:http/incoming-handler: {error:#}"),
    })
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The component cannot be served.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The listening socket could not be opened (e.g. the port is in use).
    #[error(transparent)]
    Listen(#[from] NetError),
}

/// A bound server, ready to run.
pub struct Listening {
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
}

impl Listening {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits up
    /// to the grace period for in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Listening { server, listener } = self;
        // HTTP/1.1, and HTTP/2 over cleartext for clients that open with
        // the HTTP/2 preface (h2c with prior knowledge).
        let protocols = Arc::new(hyper_util::server::conn::auto::Builder::new(
            hyper_util::rt::TokioExecutor::new(),
        ));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = server.clone();
                    let protocols = protocols.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let server = server.clone();
                            async move { Ok::<_, Infallible>(server.handle(request).await) }
                        });
                        if let Err(error) = protocols
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        let grace = server.config.grace_period;
        let wait = async {
            while server.in_flight.load(Ordering::SeqCst) > 0 {
                let notified = server.drained.notified();
                if server.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                in_flight = server.in_flight.load(Ordering::SeqCst),
                "grace period over; stopping with requests still in flight"
            );
        }
    }
}

/// Links the component and binds the port.
pub async fn bind(
    engine: &'static Engine,
    program: &Program,
    origin: &str,
    mut config: ServeConfig,
) -> Result<Listening, ServeError> {
    let Some(component) = program.component() else {
        return Err(RuntimeError::Entrypoint {
            origin: origin.to_owned(),
            reason: "is a core module; only components can serve wasi:http".into(),
        }
        .into());
    };
    let pre = prepare(engine, component, origin)?;
    let footprint = program.footprint().bytes;
    if let Some(limit) = config.limits.memory_bytes
        && footprint > limit
    {
        return Err(RuntimeError::Entrypoint {
            origin: origin.to_owned(),
            reason: format!(
                "needs about {} of host memory for its instances, over the memory limit of {} per request",
                format_bytes(footprint),
                format_bytes(limit)
            ),
        }
        .into());
    }
    // Merged once here rather than per request.
    config.env = crate::spec::merge_env(&config.env);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| NetError::listen(config.listen, &error))?;
    let permits = tokio::sync::Semaphore::new(config.max_concurrency.max(1));
    let allow = Arc::new(config.allow_outbound.clone());
    Ok(Listening {
        server: Arc::new(Server {
            engine,
            pre,
            footprint,
            config,
            allow,
            permits,
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
        }),
        listener,
    })
}

fn text_response(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text.to_owned()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight<'a>(&'a Server);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl Server {
    fn new_store(&self) -> Result<Store<GuestState<HttpState>>, String> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .inherit_stdout()
            .inherit_stderr()
            .envs(&self.config.env);
        grant_mounts(&mut builder, &self.config.mounts).map_err(|error| error.to_string())?;
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_REQUEST_RESOURCES);
        let state = HttpState {
            ctx: builder.build(),
            http,
            table,
            hooks: OutboundHooks {
                allow: self.allow.clone(),
            },
        };
        let limits = Limits {
            timeout: Some(self.config.request_timeout),
            ..self.config.limits.clone()
        };
        Ok(new_store(self.engine, state, &limits, self.footprint))
    }

    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<HyperOutgoingBody> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self);
        let timeout = self.config.request_timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.permits.acquire()).await else {
            return text_response(503, "server busy: too many requests in progress\n");
        };
        let mut store = match self.new_store() {
            Ok(store) => store,
            Err(reason) => {
                tracing::error!(%reason, "cannot prepare a sandbox for the request");
                return text_response(500, "internal server error\n");
            }
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let request = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let outparam = store.data_mut().http().new_response_outparam(sender)?;
            Ok((request, outparam))
        })();
        let (guest_request, outparam) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                tracing::warn!(%error, "rejected request");
                return text_response(400, "bad request\n");
            }
        };
        let pre = self.pre.clone();
        let limit = self.config.limits.memory_bytes;
        let meter = store.data().cpu_meter();
        let guest = async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, guest_request, outparam)
                    .await
            }
            .await;
            if result.is_ok()
                && let (Some(requested), Some(limit)) = (store.data().memory_refused(), limit)
            {
                tracing::warn!(
                    "request hit its memory limit of {} (a growth to {} was refused)",
                    format_bytes(limit),
                    format_bytes(requested)
                );
            }
            result.map_err(|error| (error, store.data().memory_refused()))
        };
        let guest = crate::limits::Metered::new(guest, meter);
        // The guest runs inline on this connection's task until it sets the
        // response; only a guest still running then (streaming its body) is
        // moved to a task of its own. That saves a spawn and a cross-thread
        // wake-up for the common handler that finishes at once.
        let mut guest = Box::pin(guest);
        let mut receiver = receiver;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut finished = None;
        let response = loop {
            tokio::select! {
                biased;
                response = &mut receiver => break Some(response),
                result = &mut guest, if finished.is_none() => finished = Some(result),
                () = tokio::time::sleep_until(deadline) => break None,
            }
        };
        match response {
            Some(Ok(Ok(response))) => {
                if finished.is_none() {
                    tokio::spawn(async move {
                        if tokio::time::timeout_at(deadline, guest).await.is_err() {
                            tracing::warn!(
                                "response body timed out after {timeout:?}; instance stopped"
                            );
                        }
                    });
                }
                response
            }
            Some(Ok(Err(code))) => {
                tracing::warn!(?code, "the component answered with an error");
                text_response(500, &format!("component error: {code:?}\n"))
            }
            Some(Err(_)) => {
                // The guest finished (or died) without setting a response.
                let result = match finished {
                    Some(result) => result,
                    None => guest.await,
                };
                match result {
                    Err((error, refused)) => {
                        match (refused, limit) {
                            (Some(requested), Some(limit)) => tracing::error!(
                                "request OOMKilled: the memory limit of {} was reached (needed {})",
                                format_bytes(limit),
                                format_bytes(requested)
                            ),
                            _ => tracing::error!("request trapped: {error:?}"),
                        }
                        text_response(500, "internal server error\n")
                    }
                    Ok(()) => text_response(500, "the component did not set a response\n"),
                }
            }
            None => {
                drop(guest);
                tracing::warn!("request timed out after {timeout:?}; instance stopped");
                text_response(504, "request timed out\n")
            }
        }
    }
}
