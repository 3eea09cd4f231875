//! berth's container library: what every front door (the CLI now, the
//! containerd shim and the daemon later) shares about containers.
//!
//! - [`spec`]: [`ContainerSpec`], the typed, serializable definition of a
//!   container, and its restart policy;
//! - [`flags`]: docker's syntax for volumes, environment, ports and
//!   outbound rules, parsed into those types;
//! - [`resolve`]: a spec (and the local image store) to the program and
//!   [`berth_runtime::SandboxSpec`] the runtime runs;
//! - [`launch`]: a resolved container started in a runtime, as a command
//!   or an HTTP server, behind one [`berth_runtime::SandboxHandle`];
//! - [`supervise`]: restart policy and back-off over sandbox handles;
//! - [`records`]: container records and states behind [`RecordStore`];
//! - [`logs`]: container logs with rotation;
//! - [`time`]: the RFC 3339 times records and logs carry.

pub mod flags;
pub mod launch;
pub mod logs;
pub mod records;
pub mod resolve;
pub mod spec;
pub mod supervise;
pub mod time;

pub use flags::FlagError;
pub use launch::{LaunchError, LaunchSettings, Launched, Stdio, launch, launch_on};
pub use records::{
    Container, ContainerRecord, ContainerState, ExitReason, FileRecords, RecordError, RecordStore,
    Status,
};
pub use resolve::{Images, ResolveError, Resolved};
pub use spec::{ContainerSpec, PullPolicy, RestartPolicy, Target};
pub use supervise::{Backoff, Ended, Event, Supervisor};
