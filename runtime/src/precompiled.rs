//! Programs compiled ahead of time, for machines that cannot compile.
//!
//! An image may carry its program compiled for a target triple beside the
//! WebAssembly itself (`berth build --precompile TARGET`). This module
//! makes that code ([`precompile`], only with the `compiler` feature) and
//! names which code a runtime can use ([`host_target`], [`engine_key`]);
//! [`crate::Runtime::load_precompiled`] loads it.
//!
//! wasmtime loads code only into an engine with the same target, the same
//! settings that shape code (WebAssembly features, tunables such as memory
//! reservations) and a CPU that has the extensions the code uses.
//! wasmtime's own `precompile_compatibility_hash` needs the compiler, so a
//! runtime without one could not compute it: berth names an engine by its
//! own key instead, computable by both builds: wasmtime's major version
//! (the version wasmtime checks), the target triple and berth's engine
//! settings (everything but the compiler's own settings). Code is compiled
//! for the target's baseline CPU, never for the building machine's
//! extensions, so it runs on every CPU of that target. wasmtime still checks
//! all of this itself when it loads the code; the key only picks the
//! candidate.
//!
//! Loading machine code is unsafe: wasmtime trusts the bytes to be its own
//! output. The runtime loads only a candidate made for its own target and
//! engine key from the very program it runs (the source digest is the
//! sha256 of the WebAssembly being loaded), and only bytes that begin as
//! wasmtime's code does (an ELF header); the caller must hand over code
//! whose integrity it verified (the image store checks every blob against
//! its digest, and the digests against the image's manifests).

use sha2::{Digest, Sha256};

use crate::sizing::Reservation;

/// The wasmtime major version berth is built on: code made by another
/// major version never loads.
pub const WASMTIME_MAJOR: &str = "48";

/// The targets berth precompiles for: 64-bit x86 and ARM on Linux, macOS
/// and Windows (wasmtime's Cranelift supports no other 64-bit ARM Windows
/// target).
pub const TARGETS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-gnu",
    "aarch64-unknown-linux-musl",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
    "x86_64-pc-windows-gnu",
];

/// Code compiled ahead of time for one target, and what it was made for.
#[derive(Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// The target triple the code runs on, e.g. `aarch64-unknown-linux-gnu`.
    pub target: String,
    /// The engine it was compiled for ([`engine_key`]).
    pub engine: String,
    /// The digest (`sha256:<hex>`) of the WebAssembly binary it was
    /// compiled from.
    pub source: String,
    /// wasmtime's `precompile_compatibility_hash` of the engine that made
    /// it (hex of its sha256), for diagnosis; empty when not known. A
    /// runtime without the compiler cannot compute it, so loading never
    /// depends on it.
    pub compatibility_hash: String,
    /// The code (wasmtime's serialized module or component).
    pub code: Vec<u8>,
}

impl std::fmt::Debug for Precompiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Precompiled")
            .field("target", &self.target)
            .field("engine", &self.engine)
            .field("source", &self.source)
            .field("compatibility_hash", &self.compatibility_hash)
            .field("code_bytes", &self.code.len())
            .finish()
    }
}

/// The target triple of the machine this berth was built for: the code it
/// can load.
pub fn host_target() -> String {
    let os = if cfg!(target_os = "linux") {
        if cfg!(target_env = "musl") {
            "unknown-linux-musl"
        } else {
            "unknown-linux-gnu"
        }
    } else if cfg!(target_os = "macos") {
        "apple-darwin"
    } else if cfg!(target_os = "windows") {
        if cfg!(target_env = "gnu") {
            "pc-windows-gnu"
        } else {
            "pc-windows-msvc"
        }
    } else {
        std::env::consts::OS
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// Checks that berth precompiles for `target`.
pub fn check_target(target: &str) -> Result<(), crate::RuntimeError> {
    if TARGETS.contains(&target) {
        return Ok(());
    }
    Err(crate::RuntimeError::Precompiled {
        origin: format!("target {target:?}"),
        reason: format!(
            "berth precompiles only for {} (this machine is {})",
            TARGETS.join(", "),
            host_target()
        ),
    })
}

/// The key of the engine that runs commands on `target` with wasmtime's
/// default memory reservations: what `berth build --precompile` compiles
/// for. (Engines with reduced reservations, chosen on machines with small
/// address spaces, have other keys; see docs/edge.md.)
pub fn engine_key(target: &str) -> String {
    engine_key_for(target, None)
}

/// The key of an engine for `target` with `reservation`.
pub(crate) fn engine_key_for(target: &str, reservation: Option<Reservation>) -> String {
    let settings = format!("{:?}", crate::engine::config_for(reservation));
    let mut hasher = Sha256::new();
    hasher.update(b"berth-precompiled-v1\0");
    hasher.update(WASMTIME_MAJOR.as_bytes());
    hasher.update(b"\0");
    hasher.update(target.as_bytes());
    hasher.update(b"\0");
    hasher.update(without_field(&settings, "compiler_config").as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// `debug` (a `Debug` struct rendering, `Name { a: 1, b: X { .. }, c: 2 }`)
/// without field `name`: the compiler's settings, which only a build with
/// the compiler prints.
fn without_field(debug: &str, name: &str) -> String {
    let marker = format!(", {name}: ");
    let Some(start) = debug.find(&marker) else {
        return debug.to_owned();
    };
    let mut depth = 0usize;
    let rest = &debug[start + marker.len()..];
    let mut end = rest.len();
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' if depth == 0 => {
                // The last field: keep the space before the closer.
                end = rest[..at].trim_end().len();
                break;
            }
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                end = at;
                break;
            }
            '"' => {
                // Skip a string, which may hold brackets or commas.
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            _ => {}
        }
    }
    format!("{}{}", &debug[..start], &rest[end..])
}

/// The candidate of `precompiled` made for `target`, `engine` and the
/// program whose sha256 is `digest`.
pub(crate) fn pick<'a>(
    precompiled: &'a [Precompiled],
    target: &str,
    engine: &str,
    digest: &[u8; 32],
) -> Option<&'a Precompiled> {
    let source = format!("sha256:{}", hex::encode(digest));
    precompiled
        .iter()
        .find(|p| p.target == target && p.engine == engine && p.source == source)
}

/// Whether `code` begins as wasmtime's code does (an ELF header): checked
/// before the bytes reach `deserialize`.
pub(crate) fn looks_like_code(code: &[u8]) -> bool {
    code.starts_with(b"\x7fELF")
}

/// Compiles `bytes` (a module, component or WebAssembly text) ahead of time
/// for `target` (one of [`TARGETS`]), for the engine [`engine_key`] names.
/// Compiles in this process, without compile limits: for programs the user
/// builds, which were compiled under limits for this machine already.
#[cfg(feature = "compiler")]
pub fn precompile(
    bytes: &[u8],
    origin: &str,
    target: &str,
) -> Result<Precompiled, crate::RuntimeError> {
    use std::hash::Hash;

    check_target(target)?;
    let (binary, kind) = crate::program::to_binary(bytes, origin)?;
    let mut config = crate::engine::config_for(None);
    config
        .target(target)
        .map_err(|error| crate::RuntimeError::Precompiled {
            origin: origin.to_owned(),
            reason: format!("cannot compile for {target}: {error:#}"),
        })?;
    let engine = wasmtime::Engine::new(&config)
        .map_err(|error| crate::RuntimeError::Engine(format!("for target {target}: {error:#}")))?;
    let code = match kind {
        crate::WasmKind::Module => engine.precompile_module(&binary),
        crate::WasmKind::Component => engine.precompile_component(&binary),
    }
    .map_err(|error| crate::RuntimeError::InvalidWasm {
        origin: origin.to_owned(),
        kind: kind.noun(),
        reason: format!("{error:#}"),
    })?;
    let mut hasher = crate::cache::Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Ok(Precompiled {
        target: target.to_owned(),
        engine: engine_key(target),
        source: format!("sha256:{}", hex::encode(Sha256::digest(&binary))),
        compatibility_hash: hex::encode(hasher.0.finalize()),
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compilers_settings_are_left_out_of_the_key() {
        assert_eq!(
            without_field(
                "Config { a: true, compiler_config: C { x: [1, 2], s: \"}, \" }, b: 3 }",
                "compiler_config"
            ),
            "Config { a: true, b: 3 }"
        );
        assert_eq!(
            without_field(
                "Config { a: true, compiler_config: C { x: 1 } }",
                "compiler_config"
            ),
            "Config { a: true }"
        );
        assert_eq!(
            without_field("Config { a: 1 }", "compiler_config"),
            "Config { a: 1 }"
        );
        let settings = format!("{:?}", crate::engine::config_for(None));
        assert!(settings.contains("compiler_config"), "{settings}");
        let stripped = without_field(&settings, "compiler_config");
        assert!(!stripped.contains("compiler_config"), "{stripped}");
        // Tunables that shape code remain part of it.
        assert!(stripped.contains("wasm_"), "{stripped}");
    }

    #[test]
    fn keys_differ_by_target_and_reservation() {
        let here = engine_key(&host_target());
        assert_eq!(here, engine_key(&host_target()));
        assert_ne!(here, engine_key("aarch64-apple-darwin"));
        let reduced = Reservation {
            memory: 1 << 30,
            guard: 32 << 20,
        };
        assert_ne!(here, engine_key_for(&host_target(), Some(reduced)));
    }

    #[test]
    fn the_wasmtime_major_version_is_the_one_built() {
        let lock = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        )
        .expect("Cargo.lock");
        assert!(
            lock.contains(&format!(
                "name = \"wasmtime\"\nversion = \"{WASMTIME_MAJOR}."
            )),
            "WASMTIME_MAJOR is not the wasmtime of Cargo.lock"
        );
    }

    #[test]
    fn unknown_targets_are_named_with_the_accepted_ones() {
        let error = check_target("riscv64gc-unknown-linux-gnu").expect_err("unsupported");
        let message = error.to_string();
        assert!(message.contains("riscv64gc-unknown-linux-gnu"), "{message}");
        assert!(message.contains("aarch64-unknown-linux-gnu"), "{message}");
        assert!(TARGETS.contains(&host_target().as_str()) || cfg!(not(target_arch = "x86_64")));
    }

    #[cfg(feature = "compiler")]
    mod loading {
        use super::super::*;
        use crate::{EngineChoice, Runtime, RuntimeError, WasmKind};

        fn example(name: &str) -> Vec<u8> {
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/wasm")
                    .join(name),
            )
            .expect("example wasm")
        }

        #[test]
        fn code_for_this_machine_is_loaded_and_other_code_is_not_used() {
            let hello = example("hello.wasm");
            let here = precompile(&hello, "hello.wasm", &host_target()).expect("precompiles");
            assert_eq!(here.engine, engine_key(&host_target()));
            assert!(here.source.starts_with("sha256:"));
            assert!(!here.compatibility_hash.is_empty());
            assert!(looks_like_code(&here.code));
            let foreign = precompile(&hello, "hello.wasm", "aarch64-unknown-linux-gnu")
                .expect("cross-compiles");
            assert_ne!(foreign.code, here.code);
            assert_ne!(foreign.engine, here.engine);

            let runtime = Runtime::default();
            let program = runtime
                .load_precompiled(
                    &hello,
                    "hello.wasm",
                    EngineChoice::Command,
                    &[foreign.clone(), here.clone()],
                )
                .expect("loads the code for this machine");
            assert_eq!(program.kind(), WasmKind::Module);

            // Components too (the same engine serves them).
            let component = example("hello-p2.wasm");
            let code =
                precompile(&component, "hello-p2.wasm", &host_target()).expect("precompiles");
            let program = Runtime::default()
                .load_precompiled(&component, "hello-p2.wasm", EngineChoice::Command, &[code])
                .expect("loads the component");
            assert_eq!(program.kind(), WasmKind::Component);
        }

        /// The candidate is used only if it was made for this target, this
        /// engine and this very program; garbage that claims all three is
        /// refused before wasmtime sees it, never compiled around.
        #[test]
        fn hostile_code_is_refused_or_ignored() {
            let hello = example("hello.wasm");
            let here = precompile(&hello, "hello.wasm", &host_target()).expect("precompiles");
            let garbage = Precompiled {
                code: b"#!/bin/sh\nrm -rf /\n".to_vec(),
                ..here.clone()
            };
            let error = Runtime::default()
                .load_precompiled(&hello, "hello.wasm", EngineChoice::Command, &[garbage])
                .expect_err("garbage is refused");
            assert!(matches!(error, RuntimeError::Precompiled { .. }), "{error}");
            assert!(error.to_string().contains("hello.wasm"), "{error}");
            assert!(error.to_string().contains("ELF"), "{error}");

            // An ELF header is not enough: wasmtime's own checks refuse it.
            let mut elf = b"\x7fELF".to_vec();
            elf.extend_from_slice(&[0; 60]);
            let fake = Precompiled {
                code: elf,
                ..here.clone()
            };
            let error = Runtime::default()
                .load_precompiled(&hello, "hello.wasm", EngineChoice::Command, &[fake])
                .expect_err("a fake ELF is refused");
            assert!(matches!(error, RuntimeError::Precompiled { .. }), "{error}");

            // Code of another program, or for another engine, is never
            // picked: this runtime compiles instead.
            let other = example("exitcode.wasm");
            let elsewhere = [
                Precompiled {
                    code: b"garbage".to_vec(),
                    engine: "0".repeat(32),
                    ..here.clone()
                },
                Precompiled {
                    code: b"garbage".to_vec(),
                    ..precompile(&other, "exitcode.wasm", &host_target()).expect("precompiles")
                },
            ];
            Runtime::default()
                .load_precompiled(&hello, "hello.wasm", EngineChoice::Command, &elsewhere)
                .expect("compiled, candidates ignored");
        }
    }
}
