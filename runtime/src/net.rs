//! Network access of sandboxes: which ports a guest may listen on, where
//! they land on the host, and where the guest may connect.
//!
//! Nothing is reachable by default. A [`NetworkPolicy`] grants:
//!
//! - **Listening** on the ports it publishes ([`PortMapping`], `-p
//!   [HOSTIP:]HOSTPORT:CONTAINERPORT`) or exposes (an image's `EXPOSE`). When
//!   the guest binds container port C, berth binds the host socket to the
//!   published HOSTIP:HOSTPORT directly, so clients reach the guest with no
//!   proxy in between. An exposed but unpublished port binds 127.0.0.1 on an
//!   ephemeral port: the guest works, nothing outside the host reaches it.
//!   Any other bind (and listening on an ephemeral port) is refused with
//!   `access-denied`.
//! - **Outgoing** TCP connections and UDP datagrams to the hosts of its
//!   [`OutboundRule`]s. Rules naming a host are resolved on the host and
//!   compared by IP. UDP replies are accepted only from allowed peers.
//! - **Name lookups** (`wasi:sockets/ip-name-lookup`) of exactly the host
//!   names the outbound rules name, and of literal IP addresses. Any other
//!   name is refused with `permanent-resolver-failure` before a query leaves
//!   the host, so a guest cannot smuggle data out in the names it looks up
//!   (`secret.attacker.example`). A name that does not exist gives
//!   `name-unresolvable`, which tells the two apart.
//!
//! wasmtime-wasi's socket address check can only allow or deny an address,
//! so the port rewrite redefines `[method]tcp-socket.start-bind` (and
//! `local-address`, so the guest sees the port it asked for) in the linker,
//! calling through to wasmtime-wasi's own implementation with the host
//! address; the address check then enforces the rest of the policy. Name
//! lookups are all-or-nothing in wasmtime-wasi, so `resolve-addresses` is
//! redefined the same way, to call through only for the names allowed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::{Network, SocketError, TcpSocket};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};

use crate::sandbox::{GuestState, P2State};

/// The `wasi:sockets/tcp` interface wasmtime-wasi 48 defines. Components
/// importing any earlier 0.2.x version resolve to it (the linker matches
/// semver-compatible names), so redefining functions here covers them all.
const TCP_INTERFACE: &str = "wasi:sockets/tcp@0.2.12";

/// The `wasi:sockets/ip-name-lookup` interface of wasmtime-wasi 48 (see
/// [`TCP_INTERFACE`] for the versions it covers).
const IP_NAME_LOOKUP_INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// How long a resolved outbound host name is trusted.
const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// Why a network setting is invalid or cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A host address cannot be listened on (e.g. the port is in use).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The host address.
        addr: SocketAddr,
        /// Why, naming the port and, when known, the process holding it.
        reason: String,
    },
    /// Ports were published for a program that cannot listen.
    #[error(
        "{origin} is a WASI preview1 module, which cannot listen on a port: -p needs a wasi:http or wasi:sockets component"
    )]
    CannotListen {
        /// Where the program came from.
        origin: String,
    },
}

impl NetError {
    /// The error for failing to listen on `addr`: a port in use names the
    /// port and, on Linux, the process holding it.
    pub fn listen(addr: SocketAddr, error: &std::io::Error) -> Self {
        let reason = if error.kind() == std::io::ErrorKind::AddrInUse {
            port_in_use(addr.port())
        } else {
            error.to_string()
        };
        NetError::Listen { addr, reason }
    }
}

/// `port N is already in use by NAME (pid P)` (or "by another process").
fn port_in_use(port: u16) -> String {
    match port_holder(port) {
        Some(holder) => format!("port {port} is already in use by {holder}"),
        None => format!("port {port} is already in use by another process"),
    }
}

/// A published port: the guest's `container_port` is reachable at `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Where the port is reachable on the host (port 0: an ephemeral port).
    pub host: SocketAddr,
    /// The port the guest listens on.
    pub container_port: u16,
}

impl PortMapping {
    /// As docker's PORTS column shows it: `127.0.0.1:8080->8080/tcp`.
    pub fn describe(&self) -> String {
        format!("{}->{}/tcp", self.host, self.container_port)
    }
}

/// A host (and optionally port) the guest may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    /// Host name or IP (without brackets), lower case.
    pub host: String,
    /// Port; `None` allows any port.
    pub port: Option<u16>,
}

impl OutboundRule {
    /// Whether the rule allows `host` (a name or IP, as written in a URL)
    /// on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.host
            .eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']'))
            && self.allows_port(port)
    }

    /// Whether the rule names `host` (a name as a resolver takes it: any
    /// case, optionally with the root's trailing dot).
    fn names(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.host.eq_ignore_ascii_case(host)
    }

    fn allows_port(&self, port: u16) -> bool {
        self.port.is_none_or(|allowed| allowed == port)
    }
}

/// What a sandbox may do on the network. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Published ports; the first mapping of a container port wins.
    pub publish: Vec<PortMapping>,
    /// Exposed container ports (an image's `EXPOSE`): the guest may listen
    /// on them; unless published they bind 127.0.0.1 on an ephemeral port.
    pub expose: Vec<u16>,
    /// Where the guest may connect or send datagrams.
    pub outbound: Vec<OutboundRule>,
}

impl NetworkPolicy {
    /// Whether the guest may listen on any port.
    pub fn listens(&self) -> bool {
        !self.publish.is_empty() || !self.expose.is_empty()
    }

    /// Where a guest bind of `container_port` goes on the host, if the
    /// guest may listen on it.
    pub fn host_address(&self, container_port: u16) -> Option<SocketAddr> {
        if let Some(mapping) = self
            .publish
            .iter()
            .find(|mapping| mapping.container_port == container_port)
        {
            return Some(mapping.host);
        }
        self.expose
            .contains(&container_port)
            .then_some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
    }

    /// Fails with a [`NetError::Listen`] naming the port when a published
    /// host address cannot be bound (typically: another process holds it),
    /// so the error comes from berth before the guest starts.
    pub fn check_ports_free(&self) -> Result<(), NetError> {
        for mapping in &self.publish {
            if mapping.host.port() != 0 {
                std::net::TcpListener::bind(mapping.host)
                    .map_err(|error| NetError::listen(mapping.host, &error))?;
            }
        }
        Ok(())
    }

    /// Grants the policy in a WASI context; the returned guard enforces it
    /// and must be stored with the context (see [`add_port_rewrite`]).
    pub(crate) fn grant(&self, builder: &mut WasiCtxBuilder) -> Arc<SocketGuard> {
        let guard = Arc::new(SocketGuard {
            policy: self.clone(),
            bound: Mutex::default(),
            resolved: Mutex::default(),
        });
        let outbound = !self.outbound.is_empty();
        builder
            .allow_tcp(self.listens() || outbound)
            .allow_udp(outbound)
            .allow_ip_name_lookup(outbound);
        let check = guard.clone();
        builder.socket_addr_check(move |addr, usage| {
            let guard = check.clone();
            Box::pin(async move { guard.allows(addr, usage).await })
        });
        guard
    }
}

/// Per-sandbox enforcement state shared by the address check and the
/// rewritten bind.
pub(crate) struct SocketGuard {
    policy: NetworkPolicy,
    /// Host addresses bound for guest binds of granted ports, with the
    /// address the guest asked for.
    bound: Mutex<Vec<(SocketAddr, SocketAddr)>>,
    /// Outbound host names resolved recently.
    resolved: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl SocketGuard {
    /// Where the guest's bind of `requested` goes on the host, for a socket
    /// of the given family; `Err` when the policy refuses it.
    fn bind_target(&self, requested: SocketAddr, ipv6: bool) -> Result<SocketAddr, ErrorCode> {
        // An ephemeral port serves a client; listening on it is refused by
        // the address check.
        if requested.port() == 0 {
            return Ok(requested);
        }
        let Some(host) = self.policy.host_address(requested.port()) else {
            tracing::warn!(
                "the guest may not listen on port {}: publish it with -p (or EXPOSE it in the image)",
                requested.port()
            );
            return Err(ErrorCode::AccessDenied);
        };
        let ip = match (host.ip(), ipv6) {
            (IpAddr::V4(_), false) | (IpAddr::V6(_), true) => host.ip(),
            (ip, true) if ip.is_unspecified() => Ipv6Addr::UNSPECIFIED.into(),
            (ip, false) if ip.is_unspecified() => Ipv4Addr::UNSPECIFIED.into(),
            (ip, true) if ip.is_loopback() => Ipv6Addr::LOCALHOST.into(),
            (ip, false) if ip.is_loopback() => Ipv4Addr::LOCALHOST.into(),
            (ip, _) => {
                tracing::warn!(
                    "container port {} is published on {ip}, which an IPv{} socket cannot bind",
                    requested.port(),
                    if ipv6 { 6 } else { 4 }
                );
                return Err(ErrorCode::AddressNotBindable);
            }
        };
        Ok(SocketAddr::new(ip, host.port()))
    }

    /// Whether the guest may look up `name`: a literal IP address (nothing
    /// is queried) or a host name an outbound rule names.
    fn may_resolve(&self, name: &str) -> bool {
        name.parse::<IpAddr>().is_ok()
            || self
                .policy
                .outbound
                .iter()
                .any(|rule| rule.host.parse::<IpAddr>().is_err() && rule.names(name))
    }

    fn record_bind(&self, actual: SocketAddr, requested: SocketAddr) {
        if let Ok(mut bound) = self.bound.lock() {
            bound.retain(|(existing, _)| *existing != actual);
            bound.push((actual, requested));
        }
    }

    /// The guest's view of a local address: the container port instead of
    /// the host port for sockets of rewritten binds.
    fn guest_view(&self, actual: SocketAddr) -> SocketAddr {
        let Ok(bound) = self.bound.lock() else {
            return actual;
        };
        if let Some((_, requested)) = bound.iter().find(|(host, _)| *host == actual) {
            return *requested;
        }
        // A connection accepted by a listener bound to a wildcard address.
        bound
            .iter()
            .find(|(host, _)| host.port() == actual.port() && host.ip().is_unspecified())
            .map_or(actual, |(_, requested)| {
                SocketAddr::new(actual.ip(), requested.port())
            })
    }

    async fn allows(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        let allowed = match usage {
            // Explicit binds come through `bind_target`; what reaches the
            // check is a host address of the policy or an ephemeral port.
            SocketAddrUse::TcpBind => {
                addr.port() == 0
                    || self
                        .policy
                        .publish
                        .iter()
                        .any(|mapping| mapping.host.port() == addr.port())
            }
            SocketAddrUse::TcpListen => self
                .bound
                .lock()
                .is_ok_and(|bound| bound.iter().any(|(host, _)| *host == addr)),
            SocketAddrUse::TcpAccept => true,
            SocketAddrUse::UdpBind => !self.policy.outbound.is_empty() && addr.port() == 0,
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                self.outbound_allows(addr).await
            }
        };
        if !allowed {
            tracing::info!(%addr, ?usage, "socket use denied by the network policy");
        }
        allowed
    }

    /// Whether an outbound rule covers `addr`.
    async fn outbound_allows(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        for rule in &self.policy.outbound {
            if !rule.allows_port(addr.port()) {
                continue;
            }
            let matches = match rule.host.parse::<IpAddr>() {
                Ok(allowed) => allowed.to_canonical() == ip,
                Err(_) => self.resolve(&rule.host).await.contains(&ip),
            };
            if matches {
                return true;
            }
        }
        false
    }

    /// The IPs of `host`, cached for [`RESOLVE_TTL`]; empty if it does not
    /// resolve.
    async fn resolve(&self, host: &str) -> Vec<IpAddr> {
        if let Ok(cache) = self.resolved.lock()
            && let Some((at, ips)) = cache.get(host)
            && at.elapsed() < RESOLVE_TTL
        {
            return ips.clone();
        }
        let name = host.to_owned();
        let ips: Vec<IpAddr> = tokio::task::spawn_blocking(move || {
            std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
                .map(|addrs| addrs.map(|addr| addr.ip().to_canonical()).collect())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        if let Ok(mut cache) = self.resolved.lock() {
            cache.insert(host.to_owned(), (Instant::now(), ips.clone()));
        }
        ips
    }
}

/// Redefines `[method]tcp-socket.start-bind` and `local-address` of
/// `wasi:sockets/tcp` so that guest binds follow the sandbox's
/// [`NetworkPolicy`]: a granted container port binds its host address, any
/// other port is refused. Redefines `resolve-addresses` of
/// `wasi:sockets/ip-name-lookup` so that only the names the policy allows
/// are looked up.
pub(crate) fn add_port_rewrite(linker: &mut Linker<GuestState<P2State>>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut tcp = linker.instance(TCP_INTERFACE)?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: StoreContextMut<'_, GuestState<P2State>>,
         (this, network, requested): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let state = store.data_mut();
                let guard = state.wasi.net.clone();
                let mut sockets = state.sockets();
                let socket = this.rep();
                let family = sockets.address_family(Resource::new_borrow(socket))?;
                let requested = SocketAddr::from(requested);
                let target = match guard.bind_target(requested, family == IpAddressFamily::Ipv6) {
                    Ok(target) => target,
                    Err(code) => return Ok((Err(code),)),
                };
                if let Err(error) = sockets.start_bind(this, network, target.into()).await {
                    let code = error_code(error)?;
                    if matches!(code, ErrorCode::AddressInUse) && target.port() != 0 {
                        tracing::warn!(
                            "container port {} cannot be published on {target}: {}",
                            requested.port(),
                            port_in_use(target.port())
                        );
                    }
                    return Ok((Err(code),));
                }
                if requested.port() != 0 {
                    match sockets.local_address(Resource::new_borrow(socket)) {
                        Ok(actual) => guard.record_bind(actual.into(), requested),
                        Err(error) => return Ok((Err(error_code(error)?),)),
                    }
                }
                Ok((Ok(()),))
            })
        },
    )?;
    tcp.func_wrap(
        "[method]tcp-socket.local-address",
        |mut store: StoreContextMut<'_, GuestState<P2State>>, (this,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let guard = state.wasi.net.clone();
            Ok((match state.sockets().local_address(this) {
                Ok(actual) => Ok(IpSocketAddress::from(guard.guest_view(actual.into()))),
                Err(error) => Err(error_code(error)?),
            },))
        },
    )?;
    let mut lookup = linker.instance(IP_NAME_LOOKUP_INTERFACE)?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, GuestState<P2State>>,
         (network, name): (Resource<Network>, String)| {
            let state = store.data_mut();
            if !state.wasi.net.may_resolve(&name) {
                tracing::info!(
                    name,
                    "name lookup denied: only the hosts of --allow-outbound rules resolve"
                );
                return Ok((Err(ErrorCode::PermanentResolverFailure),));
            }
            Ok((
                match ip_name_lookup::Host::resolve_addresses(&mut state.sockets(), network, name) {
                    Ok(stream) => Ok(stream),
                    Err(error) => Err(error_code(error)?),
                },
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The guest-visible error code of a socket error (other errors trap).
fn error_code(error: SocketError) -> wasmtime::Result<ErrorCode> {
    error.downcast()
}

/// Who listens on TCP `port`, as `NAME (pid N)`, when the OS tells us.
///
/// Linux only: the listening socket's inode comes from /proc/net/tcp{,6}
/// and is matched against every process's open file descriptors we may
/// read. Elsewhere, or without permission, the message names only the port.
#[cfg(target_os = "linux")]
fn port_holder(port: u16) -> Option<String> {
    const LISTEN: &str = "0A";
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit_once(':')?.1;
                (u16::from_str_radix(local_port, 16).ok()? == port
                    && fields.get(3) == Some(&LISTEN))
                .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
                .flatten()
            })
        })?;
    let wanted = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            return Some(format!("{} (pid {pid})", name.trim()));
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
fn port_holder(_port: u16) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(policy: NetworkPolicy) -> Arc<SocketGuard> {
        policy.grant(&mut WasiCtxBuilder::new())
    }

    #[test]
    fn binds_follow_the_policy() {
        let guard = guard(NetworkPolicy {
            publish: vec![PortMapping {
                host: "127.0.0.1:9000".parse().expect("addr"),
                container_port: 7000,
            }],
            expose: vec![7000, 8080],
            outbound: Vec::new(),
        });
        let any = |port| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
        assert_eq!(
            guard.bind_target(any(7000), false).ok(),
            Some("127.0.0.1:9000".parse().expect("addr"))
        );
        assert_eq!(
            guard.bind_target(any(7000), true).ok(),
            Some("[::1]:9000".parse().expect("addr"))
        );
        assert_eq!(
            guard.bind_target(any(8080), false).ok(),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        assert!(matches!(
            guard.bind_target(any(7001), false),
            Err(ErrorCode::AccessDenied)
        ));
        assert_eq!(guard.bind_target(any(0), false).ok(), Some(any(0)));
    }

    #[test]
    fn local_addresses_show_the_container_port() {
        let guard = guard(NetworkPolicy::default());
        let host: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        let guest: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        guard.record_bind(host, guest);
        assert_eq!(guard.guest_view(host), guest);
        assert_eq!(
            guard.guest_view("127.0.0.1:9000".parse().expect("addr")),
            "127.0.0.1:7000".parse().expect("addr")
        );
        let other: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        assert_eq!(guard.guest_view(other), other);
    }

    #[test]
    fn only_the_names_of_rules_resolve() {
        assert!(!guard(NetworkPolicy::default()).may_resolve("api.example.com"));
        let guard = guard(NetworkPolicy {
            outbound: vec![
                OutboundRule {
                    host: "api.example.com".into(),
                    port: Some(443),
                },
                OutboundRule {
                    host: "127.0.0.1".into(),
                    port: Some(8080),
                },
            ],
            ..NetworkPolicy::default()
        });
        for (name, allowed) in [
            ("api.example.com", true),
            ("API.Example.com.", true),
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("::1", true),
            ("secret.api.example.com", false),
            ("api.example.com.attacker.example", false),
            ("exfil.invalid", false),
            ("localhost", false),
            ("127.1", false),
            ("", false),
        ] {
            assert_eq!(guard.may_resolve(name), allowed, "{name}");
        }
    }

    #[tokio::test]
    async fn checks_listen_and_outbound() {
        let guard = guard(NetworkPolicy {
            publish: Vec::new(),
            expose: vec![7000],
            outbound: vec![
                OutboundRule {
                    host: "127.0.0.1".into(),
                    port: Some(8443),
                },
                OutboundRule {
                    host: "localhost".into(),
                    port: Some(9443),
                },
            ],
        });
        let bound: SocketAddr = "127.0.0.1:45000".parse().expect("addr");
        assert!(!guard.allows(bound, SocketAddrUse::TcpListen).await);
        guard.record_bind(bound, "0.0.0.0:7000".parse().expect("addr"));
        assert!(guard.allows(bound, SocketAddrUse::TcpListen).await);
        // A host name rule matches the addresses the name resolves to.
        for (addr, usage, expected) in [
            ("127.0.0.1:8443", SocketAddrUse::TcpConnect, true),
            ("127.0.0.1:8444", SocketAddrUse::TcpConnect, false),
            ("10.0.0.1:8443", SocketAddrUse::UdpSend, false),
            ("127.0.0.1:9443", SocketAddrUse::TcpConnect, true),
            ("0.0.0.0:0", SocketAddrUse::UdpBind, true),
            ("0.0.0.0:53", SocketAddrUse::UdpBind, false),
        ] {
            let socket: SocketAddr = addr.parse().expect("addr");
            assert_eq!(
                guard.allows(socket, usage).await,
                expected,
                "{addr} {usage:?}"
            );
        }
    }
}
