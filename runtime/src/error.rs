//! Typed errors of the runtime library. Front doors (CLI, daemon, shim) map
//! them to exit codes and messages; every variant names the offending value.

use std::path::PathBuf;

/// Why a sandbox could not be prepared or run. A guest that runs and fails
/// is not an error: see [`crate::ExitStatus`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The shared wasmtime engine could not be created.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// A file could not be read or written.
    // The OS error is part of the message rather than a `source`, so that
    // printing the error chain does not repeat it.
    #[error("{action} {path}: {error}")]
    Io {
        /// What berth was doing ("cannot read", "cannot write").
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The bytes are neither WebAssembly binary nor WebAssembly text.
    #[error(
        "{origin} is not WebAssembly: expected a binary module or component (starting with \\0asm) or WebAssembly text (.wat){detail}"
    )]
    NotWasm {
        /// Where the bytes came from (usually a file name).
        origin: String,
        /// Extra detail, such as a text parse error, prefixed with ": ".
        detail: String,
    },
    /// The bytes are WebAssembly but do not validate or compile.
    #[error("{origin} is not a valid WebAssembly {kind}: {reason}")]
    InvalidWasm {
        /// Where the bytes came from.
        origin: String,
        /// "module" or "component".
        kind: &'static str,
        /// wasmtime's explanation.
        reason: String,
    },
    /// A volume specification is malformed or its source is unusable.
    #[error("invalid volume {spec:?}: {reason}")]
    Volume {
        /// The `HOST:GUEST[:ro]` text as given.
        spec: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The working directory cannot be given to the guest safely.
    #[error("cannot use the working directory {workdir:?}: {reason}")]
    Workdir {
        /// The guest path, from `-w` or the image's WORKDIR.
        workdir: String,
        /// Why it was refused.
        reason: String,
    },
    /// The program does not have the requested entry point.
    #[error("{origin} {reason}")]
    Entrypoint {
        /// Where the program came from.
        origin: String,
        /// What is missing and what exists.
        reason: String,
    },
    /// The entry point or its arguments do not fit the program.
    #[error("{0}")]
    Entry(String),
    /// A network setting is invalid or cannot be applied (e.g. a published
    /// port is in use).
    #[error(transparent)]
    Network(#[from] crate::net::NetError),
    /// Compiling the program was stopped by a compile limit.
    #[error("cannot compile {origin}: it exceeded the {limit}")]
    CompileLimit {
        /// Where the program came from.
        origin: String,
        /// The limit and its value, e.g. "compile time limit of 60s".
        limit: String,
    },
    /// The compiler could not be run (e.g. the compile child failed).
    #[error("cannot compile {origin}: {reason}")]
    Compiler {
        /// Where the program came from.
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// A limit given to a running sandbox cannot apply.
    #[error("invalid {limit}: {reason}")]
    Limit {
        /// The limit and its value, e.g. "CPU quota -1".
        limit: String,
        /// What is accepted.
        reason: String,
    },
    /// This runtime has no compiler and the program has no code
    /// precompiled for it.
    #[error(
        "{origin} has no program precompiled for {target} (engine {engine}), and this build of berth has no compiler"
    )]
    NotPrecompiled {
        /// Where the program came from.
        origin: String,
        /// The target triple this runtime runs code for.
        target: String,
        /// The engine key precompiled code must have been made for
        /// ([`crate::precompiled::engine_key`]).
        engine: String,
    },
    /// Precompiled code that claims to be for this runtime cannot be
    /// loaded; it is refused rather than compiled around.
    #[error("refusing the code precompiled for {origin}: {reason}")]
    Precompiled {
        /// Where the program came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sandbox was started outside a tokio runtime.
    #[error("sandboxes must be started from within a tokio runtime")]
    NoAsyncRuntime,
    /// Linking the program against WASI failed (e.g. an unknown import).
    #[error("cannot start {origin}: {reason}")]
    Link {
        /// Where the program came from.
        origin: String,
        /// wasmtime's explanation.
        reason: String,
    },
}

impl RuntimeError {
    /// A linking failure of the program from `origin`.
    pub(crate) fn link(origin: &str, error: &wasmtime::Error) -> Self {
        RuntimeError::Link {
            origin: origin.to_owned(),
            reason: format!("{error:#}"),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        RuntimeError::Io {
            action,
            path: path.into(),
            error,
        }
    }
}
