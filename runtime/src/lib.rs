//! berth's sandbox runtime: runs WebAssembly programs (WASI preview1
//! modules, WASI preview2 command components, WebAssembly text) on wasmtime
//! with container-like limits and capability-based isolation.
//!
//! The flow is always the same, whichever front door (CLI, daemon, shim)
//! asks: bytes → [`program::load_bytes`] (through the [`CompileCache`]) →
//! a [`Program`] → [`run`] with a [`SandboxSpec`] → an [`ExitStatus`].
//!
//! Nothing is granted by default: a guest sees no host file, environment
//! variable or socket unless its [`SandboxSpec`] lists it.

pub mod cache;
pub mod compile;
pub mod engine;
pub mod error;
pub mod footprint;
pub mod http;
pub mod limits;
pub mod net;
pub mod program;
pub mod quantity;
pub mod sandbox;
pub mod spec;

pub use cache::CompileCache;
pub use compile::{ChildCompiler, CompileIsolation, CompileLimits};
pub use engine::shared_engine;
pub use error::RuntimeError;
pub use limits::Limits;
pub use net::{NetworkPolicy, OutboundRule, PortMapping};
pub use program::{Code, Program, WasmKind};
pub use sandbox::{EXIT_KILLED, EXIT_TRAPPED, ExitReason, ExitStatus, run};
pub use spec::{Entrypoint, Mount, Output, SandboxSpec, Stdin};
/// The wasmtime version berth is built on, for front doors that need its types.
pub use wasmtime;
