//! berth's sandbox runtime: runs WebAssembly programs (WASI preview1
//! modules, WASI preview2 command components, WebAssembly text) on wasmtime
//! with container-like limits and capability-based isolation.
//!
//! The flow is always the same, whichever front door (CLI, daemon, shim)
//! asks: a front door creates one [`Runtime`]; bytes → [`Runtime::load`]
//! (through the in-memory program cache and the [`CompileCache`]) → a
//! [`Program`] → [`Runtime::start`] with a [`SandboxSpec`] → a
//! [`SandboxHandle`] (wait, kill, stats) → an [`ExitStatus`]. wasi:http
//! components are served by an [`http::HttpHandler`], with or without an
//! [`http::HttpListener`].
//!
//! Nothing is granted by default: a guest sees no host file, environment
//! variable or socket unless its [`SandboxSpec`] lists it.

pub mod cache;
pub mod compile;
mod engine;
pub mod error;
mod footprint;
mod handle;
pub mod http;
pub mod limits;
pub mod net;
pub mod precompiled;
pub mod program;
pub mod quantity;
mod runtime;
mod sandbox;
mod signal;
mod sizing;
pub mod spec;
pub mod stdio;

pub use cache::CompileCache;
pub use compile::{ChildCompiler, CompileIsolation, CompileLimits};
pub use engine::{EPOCH_TICK, PoolSizing, engine_config};
pub use error::RuntimeError;
pub use footprint::Footprint;
pub use handle::{
    EXIT_KILLED, EXIT_TERMINATED, EXIT_TRAPPED, ExitReason, ExitStatus, KillMode, SandboxHandle,
    SandboxStats,
};
pub use limits::Limits;
pub use net::{NetworkPolicy, OutboundRule, PortMapping};
pub use precompiled::Precompiled;
pub use program::{Program, WasmKind};
pub use runtime::{EngineChoice, Runtime, RuntimeConfig};
pub use sandbox::MAX_COMMAND_RESOURCES;
pub use spec::{Entrypoint, Mount, SandboxSpec};
pub use stdio::{Output, OutputRing, Stdin};
/// The wasmtime version berth is built on, for front doors that need its types.
pub use wasmtime;
