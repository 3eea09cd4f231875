//! Serving wasi:http/proxy components, in two parts:
//!
//! - an [`HttpHandler`] turns one request into a response by running a fresh
//!   instance of the component, with no socket of its own, so that anything
//!   that holds requests (a listener, a Service, a shim) can route to it;
//! - an [`HttpListener`] is a hyper HTTP/1.1 and h2c server on a host port
//!   that hands its requests to a handler, started as a [`SandboxHandle`]:
//!   a graceful kill stops accepting, closes idle keep-alive connections and
//!   drains the requests in flight within the grace period.
//!
//! The component is linked once per program; each request gets its own
//! store with the per-request memory limit, CPU quota and a deadline, so one
//! request's trap, OOM or runaway loop never affects another or the server.
//! Components built by ordinary toolchains also import `wasi:cli` (env,
//! stdio, exit) and `wasi:filesystem`: the full WASI p2 set is linked, with
//! env, mounts and stdio from the [`HandlerConfig`], so such components run
//! unchanged. Outgoing HTTP is denied unless the authority is in
//! [`HandlerConfig::allow_outbound`].
//!
//! Clients cannot hold the server's sockets hostage: a connection must send
//! its first request header within [`ListenerConfig::header_timeout`] (an
//! HTTP/1.1 connection every request header), one with no request in
//! progress for [`ListenerConfig::idle_timeout`] is closed, and past
//! [`ListenerConfig::max_connections`] open connections new ones are refused
//! while the open ones are served on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

pub use crate::net::OutboundRule;

use crate::engine::ClockHold;
use crate::handle::{ExitReason, ExitStatus, KillMode, SandboxHandle, TaskSide};
use crate::limits::{Limits, Usage};
use crate::net::NetError;
use crate::program::Program;
use crate::quantity::format_bytes;
use crate::sandbox::{GuestState, grant_mounts, new_store};
use crate::spec::Mount;
use crate::stdio::{Output, SharedOutput, Stream};
use crate::{Runtime, RuntimeError};

/// How long a new connection may take to send its first request header (and
/// an HTTP/1.1 connection each request header): nginx's
/// `client_header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection may stay open with no request in progress: nginx's
/// `keepalive_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// The longest header or idle timeout honoured; longer ones are cut to it.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most connections a server keeps open when file descriptors allow.
pub const MAX_CONNECTIONS_CEILING: usize = 10_000;

/// The default cap on open connections for a process that may open
/// `fd_limit` files (its soft `RLIMIT_NOFILE`, when known).
///
/// Each connection holds one descriptor, and a request needs more of its
/// own (the directories mounted into its instance, its outgoing
/// connections), so connections get at most half of the limit: a flood of
/// clients then meets a clean refusal instead of starving the requests
/// already accepted. [`MAX_CONNECTIONS_CEILING`] bounds the memory that
/// idle connections hold (hyper's buffers, a task each: tens of KiB).
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    let by_fds = fd_limit.map_or(MAX_CONNECTIONS_CEILING, |limit| {
        usize::try_from(limit / 2).unwrap_or(usize::MAX)
    });
    by_fds.clamp(1, MAX_CONNECTIONS_CEILING)
}

/// What a refused connection is told, in HTTP/1.1 (the common client).
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 39\r\nconnection: close\r\n\r\nserver busy: too many open connections\n";

/// The export that marks a component as a wasi:http proxy.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Whether `bytes` are a component exporting `wasi:http/incoming-handler`,
/// told from its export names without compiling it (so the caller can pick
/// the serving engine before compiling).
pub fn exports_http_handler(bytes: &[u8]) -> bool {
    crate::program::component_exports(bytes, INCOMING_HANDLER)
}

/// How a handler runs each request's instance.
#[derive(Debug)]
pub struct HandlerConfig {
    /// Per-request limits (memory, CPU). `timeout` is ignored: see
    /// `request_timeout`.
    pub limits: Limits,
    /// A request whose response has not started by then gets 504.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait (up to `request_timeout`), then 503.
    /// At most the instances the program's serving pool holds, which a small
    /// machine may size below this (see [`crate::PoolSizing`]).
    pub max_concurrency: usize,
    /// Environment of every instance; later duplicates override earlier
    /// ones.
    pub env: Vec<(String, String)>,
    /// Directories every instance sees.
    pub mounts: Vec<Mount>,
    /// Hosts the guest may call.
    pub allow_outbound: Vec<OutboundRule>,
    /// Where every instance's stdout goes.
    pub stdout: Output,
    /// Where every instance's stderr goes.
    pub stderr: Output,
}

impl Default for HandlerConfig {
    /// No limits, 30 s per request, 1,000 at once, nothing granted, output
    /// discarded.
    fn default() -> Self {
        HandlerConfig {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(30),
            max_concurrency: 1000,
            env: Vec::new(),
            mounts: Vec::new(),
            allow_outbound: Vec::new(),
            stdout: Output::Null,
            stderr: Output::Null,
        }
    }
}

/// How a listener accepts and keeps connections.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How long a graceful stop waits for in-flight requests.
    pub grace_period: Duration,
    /// A new connection must send its first request header within this,
    /// and an HTTP/1.1 connection each request header from the moment the
    /// server waits for it (so it also bounds an idle HTTP/1.1 keep-alive).
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is closed
    /// (gracefully: a response still streaming is finished first).
    pub idle_timeout: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

/// Per-request WASI and HTTP state.
pub struct HttpState {
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

/// Runs each request it is given in a fresh instance of one component.
/// Cheap to clone; clones share the concurrency limit and counts.
#[derive(Clone)]
pub struct HttpHandler {
    inner: Arc<HandlerInner>,
}

struct HandlerInner {
    engine: Engine,
    pre: ProxyPre<GuestState<HttpState>>,
    /// Host bytes each request's instances take, charged to its limit.
    footprint: u64,
    limits: Limits,
    request_timeout: Duration,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    allow: Arc<Vec<OutboundRule>>,
    stdout: SharedOutput,
    stderr: SharedOutput,
    permits: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    usage: Arc<Usage>,
    /// Keeps the runtime's epoch clock (request deadlines, quotas) going.
    _clock: ClockHold,
    _program: Program,
    _runtime: Runtime,
}

impl Runtime {
    /// A handler that serves requests with `program`, a wasi:http proxy
    /// component; `origin` names it in messages.
    ///
    /// Must be called within a tokio runtime when stdout or stderr is a
    /// file or writer (their writer task starts here).
    pub fn http_handler(
        &self,
        program: &Program,
        origin: &str,
        config: HandlerConfig,
    ) -> Result<HttpHandler, RuntimeError> {
        let pre = program.proxy_pre(origin)?.clone();
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
            });
        }
        Ok(HttpHandler {
            inner: Arc::new(HandlerInner {
                engine: program.inner.slot.engine.clone(),
                pre,
                footprint,
                limits: config.limits,
                request_timeout: config.request_timeout,
                // Merged once here rather than per request.
                env: crate::spec::merge_env(&config.env),
                mounts: config.mounts,
                allow: Arc::new(config.allow_outbound),
                stdout: config.stdout.into_shared(),
                stderr: config.stderr.into_shared(),
                // A pool sized down for a small machine holds fewer
                // instances than asked: requests beyond it wait for a slot
                // instead of failing to instantiate.
                permits: tokio::sync::Semaphore::new(
                    program
                        .inner
                        .slot
                        .pool_instances
                        .map_or(config.max_concurrency, |slots| {
                            config.max_concurrency.min(slots as usize)
                        })
                        .max(1),
                ),
                in_flight: AtomicUsize::new(0),
                usage: Arc::new(Usage::default()),
                _clock: self.hold_clock(),
                _program: program.clone(),
                _runtime: self.clone(),
            }),
        })
    }
}

/// A bound listening socket, ready to serve a handler.
pub struct HttpListener {
    listener: tokio::net::TcpListener,
    config: ListenerConfig,
}

impl HttpListener {
    /// Binds `config.listen`.
    pub async fn bind(config: ListenerConfig) -> Result<Self, NetError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| NetError::listen(config.listen, &error))?;
        Ok(HttpListener::with(listener, config))
    }

    /// Serves on `listener`, a socket already bound (and listening) for
    /// `config.listen`: one bound where this process cannot bind itself,
    /// e.g. in another network namespace. Must be called within a tokio
    /// runtime.
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ListenerConfig,
    ) -> Result<Self, NetError> {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|error| NetError::listen(config.listen, &error))?;
        Ok(HttpListener::with(listener, config))
    }

    fn with(listener: tokio::net::TcpListener, mut config: ListenerConfig) -> Self {
        // Deadlines are computed by adding to the clock, which must not
        // overflow: a year is as good as never.
        config.header_timeout = config.header_timeout.min(LONGEST_TIMEOUT);
        config.idle_timeout = config.idle_timeout.min(LONGEST_TIMEOUT);
        HttpListener { listener, config }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `handler` on this socket, as a task of the current tokio
    /// runtime, until the returned handle is killed: gracefully, it stops
    /// accepting, closes idle connections and waits up to the grace period
    /// for requests in flight (exit 0); immediately, it drops every
    /// connection at once (exit 137).
    pub fn serve(self, handler: HttpHandler) -> SandboxHandle {
        let (handle, task) = SandboxHandle::pair(handler.inner.usage.clone(), None);
        tokio::spawn(async move {
            let status = accept_loop(self, handler, &task).await;
            task.finish(status);
        });
        handle
    }
}

/// Accepts connections until a kill, then stops as the kill says.
async fn accept_loop(listening: HttpListener, handler: HttpHandler, task: &TaskSide) -> ExitStatus {
    let HttpListener { listener, config } = listening;
    let config = Arc::new(config);
    // HTTP/1.1, and HTTP/2 over cleartext for clients that open with
    // the HTTP/2 preface (h2c with prior knowledge).
    let mut protocols =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    protocols
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let protocols = Arc::new(protocols);
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    // Tells every connection that the server is stopping.
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut open = tokio::task::JoinSet::new();
    // Counts of the current burst of refusals and accept failures, so
    // that each burst is logged once rather than once per connection.
    let mut refused = 0u64;
    let mut accept_failures = 0u32;
    let mode = loop {
        while open.try_join_next().is_some() {}
        let accepted = tokio::select! {
            mode = task.killed() => break mode,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we took its connection.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                // Out of file descriptors (EMFILE) or memory: the
                // connection stays queued and the listener readable, so
                // retrying at once would spin. Back off, up to 1.28 s,
                // until accepting works again.
                if accept_failures == 0 {
                    tracing::warn!(%error, "cannot accept connections; retrying with back-off");
                }
                accept_failures = accept_failures.saturating_add(1);
                let pause = Duration::from_millis(10 << accept_failures.min(7));
                tokio::select! {
                    mode = task.killed() => break mode,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if accept_failures > 0 {
            tracing::info!(failures = accept_failures, "accepting connections again");
            accept_failures = 0;
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if refused == 0 {
                tracing::warn!(
                    max_connections = config.max_connections,
                    "connection limit reached; refusing new connections until some close"
                );
            }
            refused += 1;
            // Best effort, without waiting: the client learns why.
            let _ = stream.try_write(REFUSED_RESPONSE);
            continue;
        };
        if refused > 0 {
            tracing::info!(refused, "below the connection limit again");
            refused = 0;
        }
        let _ = stream.set_nodelay(true);
        open.spawn(serve_connection(
            handler.clone(),
            config.clone(),
            protocols.clone(),
            stream,
            peer,
            permit,
            closing.subscribe(),
        ));
    };
    drop(listener);
    if mode == KillMode::Immediate {
        open.abort_all();
        return killed_status();
    }
    // Idle connections close now; busy ones once their response is out.
    closing.send_replace(true);
    // Each connection ends once its last response is out (an idle one at
    // once): waiting for them, not only for the handler's in-flight count,
    // lets a response body still streaming finish within the grace period.
    let drained = {
        let drain = async { while open.join_next().await.is_some() {} };
        tokio::select! {
            result = tokio::time::timeout(config.grace_period, drain) => result.is_ok(),
            // A second, immediate kill cuts the grace period short.
            _ = task.killed_at_least(KillMode::Immediate) => false,
        }
    };
    open.abort_all();
    if drained {
        return ExitStatus::exited(0);
    }
    tracing::warn!(
        in_flight = handler.inner.in_flight.load(Ordering::SeqCst),
        "stopping with requests still in flight"
    );
    // As a process that outlived its grace period: killed.
    killed_status()
}

/// How a server that was stopped at once (or outlived its grace period)
/// ended: as a process killed with SIGKILL.
fn killed_status() -> ExitStatus {
    ExitStatus {
        code: crate::handle::EXIT_KILLED,
        reason: ExitReason::Killed {
            mode: KillMode::Immediate,
        },
        returned: Vec::new(),
        throttled: Duration::ZERO,
    }
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

/// What the idle watchdog of one connection knows of its requests.
struct Activity {
    opened: tokio::time::Instant,
    /// Requests whose handler is running.
    active: AtomicUsize,
    /// When the last request's handler returned, in nanoseconds after
    /// `opened`; 0 until one has.
    last_end: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: tokio::time::Instant::now(),
            active: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
        }
    }

    /// Resolves when the connection has been idle too long: no request
    /// started within `header_timeout` of opening ([`Expiry::NoRequest`]),
    /// or none in progress for `idle_timeout` since the last one.
    async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Expiry {
        // Neither expiry can come sooner.
        let mut deadline = self.opened + header_timeout.min(idle_timeout);
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = tokio::time::Instant::now();
            if self.active.load(Ordering::Acquire) > 0 {
                deadline = now + idle_timeout;
                continue;
            }
            let (expiry, expires) = match self.last_end.load(Ordering::Acquire) {
                0 => (Expiry::NoRequest, self.opened + header_timeout),
                ended => (
                    Expiry::Idle,
                    self.opened + Duration::from_nanos(ended) + idle_timeout,
                ),
            };
            if now >= expires {
                return expiry;
            }
            deadline = expires;
        }
    }
}

/// Why a connection's watchdog closes it.
#[derive(Debug, PartialEq, Eq)]
enum Expiry {
    /// It never sent a whole request header: there is nothing to finish.
    NoRequest,
    /// Its requests are done; a response may still be streaming.
    Idle,
}

/// Marks a request of a connection as running until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.active.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.last_end.store(elapsed.max(1), Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight<'a>(&'a HandlerInner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one accepted connection until the client closes it, it errs,
/// it stays idle too long or the server closes; `permit` holds its place
/// under the connection cap.
async fn serve_connection(
    handler: HttpHandler,
    config: Arc<ListenerConfig>,
    protocols: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let (header_timeout, idle_timeout) = (config.header_timeout, config.idle_timeout);
    let finish_within = handler.inner.request_timeout;
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        let busy = Busy::new(&requests);
        async move {
            let response = handler.handle(request).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let connection = protocols.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let expired = activity.expired(header_timeout, idle_timeout);
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
            // Idle keep-alive connections close at once; a request in
            // progress finishes first (the grace period bounds it).
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
        expiry = expired => {
            tracing::debug!(%peer, ?expiry, "closing an idle connection");
            if expiry == Expiry::NoRequest {
                return;
            }
            // Lets a response still streaming finish (its instance's
            // deadline bounds it), then closes; an HTTP/2 client that
            // does not take part in the shutdown is cut off then too.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(finish_within, connection.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
    drop(permit);
}

impl HttpHandler {
    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    fn new_store(&self) -> Result<Store<GuestState<HttpState>>, String> {
        let inner = &*self.inner;
        let mut builder = WasiCtxBuilder::new();
        builder.envs(&inner.env);
        inner.stdout.grant(&mut builder, Stream::Stdout);
        inner.stderr.grant(&mut builder, Stream::Stderr);
        grant_mounts(&mut builder, &inner.mounts).map_err(|error| error.to_string())?;
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_REQUEST_RESOURCES);
        let state = HttpState {
            ctx: builder.build(),
            http,
            table,
            hooks: OutboundHooks {
                allow: inner.allow.clone(),
            },
        };
        let limits = Limits {
            timeout: Some(inner.request_timeout),
            ..inner.limits.clone()
        };
        Ok(new_store(
            &inner.engine,
            state,
            &limits,
            inner.footprint,
            inner.usage.clone(),
            None,
        ))
    }

    /// Answers `request` with a fresh instance of the component: its
    /// response, or 503 when too many requests are in progress, 504 when it
    /// takes longer than the request timeout, 500 when the instance fails.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &*self.inner;
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(inner);
        let timeout = inner.request_timeout;
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, inner.permits.acquire()).await else {
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
        let pre = inner.pre.clone();
        let meter = store.data().cpu_meter();
        let usage = inner.usage.clone();
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
                && let (Some(requested), Some(limit)) =
                    (store.data().memory_refused(), store.data().memory_limit())
            {
                tracing::warn!(
                    "request hit its memory limit of {} (a growth to {} was refused)",
                    format_bytes(limit),
                    format_bytes(requested)
                );
            }
            if let Some(meter) = store.data().cpu_meter() {
                Usage::add(&usage.cpu_nanos, meter.used_in_poll());
            }
            let oom = store
                .data()
                .memory_refused()
                .zip(store.data().memory_limit());
            result.map_err(|error| (error, oom))
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
                    Err((error, oom)) => {
                        match oom {
                            Some((requested, limit)) => tracing::error!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_leaves_half_the_descriptors_for_requests() {
        assert_eq!(default_max_connections(None), MAX_CONNECTIONS_CEILING);
        assert_eq!(default_max_connections(Some(1024)), 512);
        assert_eq!(
            default_max_connections(Some(1 << 20)),
            MAX_CONNECTIONS_CEILING
        );
        assert_eq!(default_max_connections(Some(1)), 1);
    }

    #[tokio::test]
    async fn a_connection_expires_only_when_no_request_runs() {
        let (header, idle) = (Duration::from_millis(200), Duration::from_millis(300));
        let bound = Duration::from_secs(10);
        // No request at all: the header timeout.
        let activity = Arc::new(Activity::new());
        let started = tokio::time::Instant::now();
        assert_eq!(activity.expired(header, idle).await, Expiry::NoRequest);
        assert!((header..header + bound).contains(&started.elapsed()));

        // A request running past both timeouts keeps it open; the idle
        // timeout counts from its end.
        let activity = Arc::new(Activity::new());
        let busy = Busy::new(&activity);
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.expired(header, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!watchdog.is_finished());
        let ended = tokio::time::Instant::now();
        drop(busy);
        assert_eq!(watchdog.await.expect("watchdog"), Expiry::Idle);
        assert!((idle..idle + bound).contains(&ended.elapsed()));

        // After a request, the idle timeout counts even when it is the
        // shorter.
        let (header, idle) = (Duration::from_secs(60), Duration::from_millis(300));
        let activity = Arc::new(Activity::new());
        let ended = tokio::time::Instant::now();
        drop(Busy::new(&activity));
        assert_eq!(activity.expired(header, idle).await, Expiry::Idle);
        assert!((idle..idle + bound).contains(&ended.elapsed()));
    }
}
