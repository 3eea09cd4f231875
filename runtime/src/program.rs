//! Turning bytes into a compiled program: telling core modules, components
//! and WebAssembly text apart from the bytes themselves (never the file
//! name), and compiling through the [`crate::CompileCache`].

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::RuntimeError;
use crate::footprint::Footprint;
use crate::runtime::EngineSlot;

/// What kind of WebAssembly a binary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WasmKind {
    /// A core module (WASI preview1 commands, reactors).
    Module,
    /// A component (WASI preview2 commands, wasi:http proxies).
    Component,
}

impl WasmKind {
    /// "module" or "component", for messages.
    pub fn noun(self) -> &'static str {
        match self {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        }
    }
}

/// A compiled program, ready to start any number of sandboxes. Loaded by
/// [`crate::Runtime::load`]; clones share one copy of the machine code and
/// of the linked program.
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("kind", &self.kind())
            .field("footprint", &self.inner.footprint)
            .finish_non_exhaustive()
    }
}

/// What every clone of a [`Program`] shares.
pub(crate) struct ProgramInner {
    pub(crate) code: Code,
    pub(crate) footprint: Footprint,
    /// The engine the code was compiled for, and its linkers.
    pub(crate) slot: Arc<EngineSlot>,
    /// The program linked for each way of running it, made on first use.
    pub(crate) prepared: crate::sandbox::Prepared,
}

impl ProgramInner {
    pub(crate) fn new(code: Code, binary: &[u8], slot: Arc<EngineSlot>) -> Self {
        ProgramInner {
            code,
            footprint: crate::footprint::estimate(binary),
            slot,
            prepared: crate::sandbox::Prepared::default(),
        }
    }
}

/// Compiled code of either kind.
#[derive(Clone)]
pub(crate) enum Code {
    /// A compiled core module.
    Module(wasmtime::Module),
    /// A compiled component.
    Component(Component),
}

impl Program {
    /// What one instantiation takes besides linear memories and tables;
    /// every sandbox charges it against its memory limit.
    pub fn footprint(&self) -> Footprint {
        self.inner.footprint
    }

    /// The kind of WebAssembly this program was compiled from.
    pub fn kind(&self) -> WasmKind {
        match self.inner.code {
            Code::Module(_) => WasmKind::Module,
            Code::Component(_) => WasmKind::Component,
        }
    }

    /// Whether this is a component exporting `wasi:http/incoming-handler`
    /// (any 0.2.x), to be served rather than run as a command.
    pub fn is_http_proxy(&self) -> bool {
        match &self.inner.code {
            Code::Component(component) => component
                .component_type()
                .exports(&self.inner.slot.engine)
                .any(|(name, _)| name.starts_with(crate::http::INCOMING_HANDLER)),
            Code::Module(_) => false,
        }
    }

    pub(crate) fn code(&self) -> &Code {
        &self.inner.code
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Classifies WebAssembly binary bytes, or returns `None` if they are not a
/// WebAssembly binary at all (they may still be text).
pub(crate) fn detect_binary(bytes: &[u8]) -> Option<Result<WasmKind, String>> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        if bytes.starts_with(WASM_MAGIC) {
            return Some(Err("the file ends inside the WebAssembly header".into()));
        }
        return None;
    }
    let version: [u8; 4] = [bytes[4], bytes[5], bytes[6], bytes[7]];
    Some(match version {
        MODULE_VERSION => Ok(WasmKind::Module),
        COMPONENT_VERSION => Ok(WasmKind::Component),
        other => Err(format!(
            "unsupported WebAssembly version/layer {other:02x?}: berth runs core modules (version 1) and components (layer 1, version 0x0d)"
        )),
    })
}

/// Converts `bytes` to a WebAssembly binary and says what kind it is.
///
/// Text (`.wat`) is recognised by content: valid UTF-8 whose first token is
/// `(` after whitespace and comments.
pub fn to_binary<'a>(
    bytes: &'a [u8],
    origin: &str,
) -> Result<(std::borrow::Cow<'a, [u8]>, WasmKind), RuntimeError> {
    if let Some(kind) = detect_binary(bytes) {
        let kind = kind.map_err(|detail| RuntimeError::NotWasm {
            origin: origin.to_owned(),
            detail: format!(": {detail}"),
        })?;
        return Ok((std::borrow::Cow::Borrowed(bytes), kind));
    }
    let not_wasm = |detail: String| RuntimeError::NotWasm {
        origin: origin.to_owned(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_wasm(String::new()))?;
    if !looks_like_wat(text) {
        return Err(not_wasm(String::new()));
    }
    let binary = parse_text(text, origin)?;
    let kind = match detect_binary(&binary) {
        Some(Ok(kind)) => kind,
        _ => {
            return Err(not_wasm(
                ": the text did not produce a module or component".into(),
            ));
        }
    };
    Ok((std::borrow::Cow::Owned(binary), kind))
}

/// WebAssembly text → binary.
#[cfg(feature = "compiler")]
fn parse_text(text: &str, origin: &str) -> Result<Vec<u8>, RuntimeError> {
    wat::parse_str(text).map_err(|error| RuntimeError::InvalidWasm {
        origin: origin.to_owned(),
        kind: "text file",
        reason: error.to_string(),
    })
}

/// Text is only for compiling: a build without the compiler runs binaries
/// precompiled elsewhere.
#[cfg(not(feature = "compiler"))]
fn parse_text(_text: &str, origin: &str) -> Result<Vec<u8>, RuntimeError> {
    Err(RuntimeError::NotWasm {
        origin: origin.to_owned(),
        detail: ": it is WebAssembly text, which only a berth with the compiler reads".into(),
    })
}

/// Whether `text` starts, after whitespace and comments, with `(`.
fn looks_like_wat(text: &str) -> bool {
    let mut rest = text.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("(;") {
            rest = after.split_once(";)").map_or("", |(_, tail)| tail);
        } else {
            return rest.starts_with('(');
        }
    }
}

/// Compiles a WebAssembly binary of a known kind, without any cache.
#[cfg(feature = "compiler")]
pub(crate) fn compile(
    engine: &Engine,
    binary: &[u8],
    kind: WasmKind,
    origin: &str,
) -> Result<Code, RuntimeError> {
    let invalid = |error: wasmtime::Error| RuntimeError::InvalidWasm {
        origin: origin.to_owned(),
        kind: kind.noun(),
        reason: format!("{error:#}"),
    };
    let code = match kind {
        WasmKind::Module => {
            Code::Module(wasmtime::Module::from_binary(engine, binary).map_err(invalid)?)
        }
        WasmKind::Component => {
            Code::Component(Component::from_binary(engine, binary).map_err(invalid)?)
        }
    };
    Ok(code)
}

/// Loads serialized code of `kind` into `engine`.
///
/// Only for bytes produced by wasmtime's `serialize`/`precompile` that the
/// caller has verified: a compile cache entry whose checksum matched, the
/// output of berth's own compile child, or precompiled code from a
/// digest-verified image blob that passed [`crate::precompiled`]'s checks.
pub(crate) fn deserialize(engine: &Engine, payload: &[u8], kind: WasmKind) -> Result<Code, String> {
    // SAFETY: `deserialize` trusts its input to be code produced by a
    // compatible engine. Every caller passes bytes that wasmtime produced
    // and whose integrity it checked (see above): a cache entry's sha256,
    // the compile child (the front door's own executable, compiling with
    // the same engine configuration), or an image blob verified against
    // its digest and made for this target and engine key from the very
    // program being loaded. wasmtime additionally checks its own header,
    // version, target and engine settings.
    let result = match kind {
        WasmKind::Module => {
            unsafe { wasmtime::Module::deserialize(engine, payload) }.map(Code::Module)
        }
        WasmKind::Component => {
            unsafe { Component::deserialize(engine, payload) }.map(Code::Component)
        }
    };
    result.map_err(|error| format!("{error:#}"))
}

/// Reads `path`, as [`crate::Runtime::load`] wants it.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::io("cannot read", path, source))
}

/// Whether `bytes` (binary or text) are a component with a top-level
/// export whose name starts with `prefix`, read from its export section
/// without compiling it. Anything unreadable answers `false`; compiling
/// reports the real error.
pub(crate) fn component_exports(bytes: &[u8], prefix: &str) -> bool {
    let Ok((binary, WasmKind::Component)) = to_binary(bytes, "") else {
        return false;
    };
    // Nested modules and components are parsed inline; only exports at
    // depth 0 belong to the component itself.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&binary) {
        match payload {
            Ok(
                wasmparser::Payload::ModuleSection { .. }
                | wasmparser::Payload::ComponentSection { .. },
            ) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentExportSection(exports)) if depth == 0 => {
                if exports
                    .into_iter()
                    .flatten()
                    .any(|export| export.name.name.starts_with(prefix))
                {
                    return true;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;

    #[test]
    fn detects_kinds_from_bytes() {
        assert_eq!(
            detect_binary(b"\0asm\x01\0\0\0"),
            Some(Ok(WasmKind::Module))
        );
        assert_eq!(
            detect_binary(b"\0asm\x0d\0\x01\0"),
            Some(Ok(WasmKind::Component))
        );
        assert!(matches!(detect_binary(b"\0asm\x02\0\0\0"), Some(Err(_))));
        assert!(matches!(detect_binary(b"\0asm"), Some(Err(_))));
        assert_eq!(detect_binary(b"(module)"), None);
    }

    #[test]
    fn text_is_recognised_by_content() {
        let (binary, kind) =
            to_binary(b";; a comment\n(; block ;) (module)", "t").expect("valid wat");
        assert_eq!(kind, WasmKind::Module);
        assert!(binary.starts_with(WASM_MAGIC));
        let (_, kind) = to_binary(b"(component)", "t").expect("valid component wat");
        assert_eq!(kind, WasmKind::Component);
    }

    #[test]
    fn reads_only_the_components_own_exports() {
        let example = |name: &str| {
            std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/wasm")
                    .join(name),
            )
            .expect("example wasm")
        };
        let handler = "wasi:http/incoming-handler@0.2";
        assert!(component_exports(&example("http-hello.wasm"), handler));
        assert!(!component_exports(
            &example("http-hello.wasm"),
            "wasi:cli/run"
        ));
        assert!(component_exports(
            &example("hello-p2.wasm"),
            "wasi:cli/run@0.2"
        ));
        assert!(!component_exports(&example("hello-p2.wasm"), handler));
        assert!(!component_exports(&example("hello.wasm"), "_start"));
        // A nested component's export is not the outer component's.
        let nested = br#"(component
            (component $inner
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "wasi:http/incoming-handler@0.2.0" (func $f)))
        )"#;
        assert!(matches!(
            to_binary(nested, "t"),
            Ok((_, WasmKind::Component))
        ));
        assert!(!component_exports(nested, handler));
        let mut truncated = example("http-hello.wasm");
        truncated.truncate(truncated.len() / 2);
        assert!(!component_exports(&truncated, handler));
        assert!(!component_exports(b"garbage", handler));
    }

    #[test]
    fn garbage_is_not_wasm() {
        for garbage in [
            &b"hello world"[..],
            b"\xff\xfe\x00garbage",
            b"",
            b"#!/bin/sh\n",
        ] {
            let error = to_binary(garbage, "garbage.bin").expect_err("garbage");
            assert!(matches!(error, RuntimeError::NotWasm { .. }), "{error}");
            assert!(error.to_string().contains("garbage.bin"));
        }
        let error = to_binary(b"(module (func $f (unknown)))", "bad.wat").expect_err("bad wat");
        assert!(matches!(error, RuntimeError::InvalidWasm { .. }), "{error}");
    }
}
