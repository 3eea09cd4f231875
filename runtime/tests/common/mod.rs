//! Guests and helpers shared by the runtime's integration tests: small WAT
//! modules that spin, hog memory, wait on stdin or exit, and a runtime,
//! loader and spec with nothing granted.

#![allow(dead_code)]

use std::path::Path;

use berth_runtime::{EngineChoice, Limits, Program, Runtime, RuntimeConfig, SandboxSpec};

/// A guest that spins forever without calling the host.
pub const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

/// A guest that grows its memory a page at a time until refused, then
/// traps (as a C program's failed malloc would abort).
pub const HOG: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
      (br $l))))"#;

/// A guest that grows its memory by 15 pages (to 16), then blocks reading
/// stdin, then exits 0.
pub const GROW_THEN_WAIT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 15)))
    ;; one iovec at 0: buffer at 16, 8 bytes; bytes read at 8
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A guest that blocks reading stdin, then exits 0.
pub const WAIT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A guest that exits with 7 through proc_exit.
pub const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"#;

/// A prebuilt example's bytes, e.g. `example("hello.wasm")`.
pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/wasm")
            .join(name),
    )
    .expect("example wasm is checked in")
}

/// A runtime without a compile cache.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default())
}

/// `text` (WAT) compiled for commands.
pub fn load(runtime: &Runtime, text: &str) -> Program {
    runtime
        .load(text.as_bytes(), "test.wat", EngineChoice::Command)
        .expect("the test module compiles")
}

/// A spec that grants nothing and has `limits`.
pub fn spec(limits: Limits) -> SandboxSpec {
    SandboxSpec {
        program_name: "guest".into(),
        limits,
        ..SandboxSpec::default()
    }
}

/// A tokio runtime with two workers, as on a two-core machine.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
