//! The host memory a program's instances take besides their linear
//! memories and tables, estimated from the binary before it runs.
//!
//! Linear memories and tables are charged by the memory limiter as they are
//! created and grown. Everything else wasmtime allocates per core instance
//! (its `VMContext`: globals, function references, imports; its bookkeeping)
//! is invisible to the limiter, and a module can make it large: 100,000
//! globals are 1.6 MB per instance, and a component can instantiate such a
//! module hundreds of times. So the whole instantiation is estimated here,
//! from the section counts of every core module and the instantiations a
//! component declares (a component's instances are static: it has no loops,
//! so nested components instantiated twice are counted twice), and a sandbox
//! charges it against its memory limit before it instantiates anything.
//!
//! The per-item sizes are upper bounds of wasmtime's own layout (a global
//! definition is 16 bytes, a function reference 32, an import at most 32)
//! plus a fixed allowance per instance, measured on this platform; see
//! [`INSTANCE_BASE_BYTES`].

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, ComponentTypeRef, Encoding,
    Instance, Parser, Payload,
};

/// Host bytes every core instance takes whatever it defines (wasmtime's
/// instance handle, store bookkeeping, allocation slack), measured.
pub const INSTANCE_BASE_BYTES: u64 = 4 << 10;
/// Host bytes per defined global (`VMGlobalDefinition`).
const GLOBAL_BYTES: u64 = 16;
/// Host bytes per function: a `VMFuncRef` (four pointers), charged for
/// every function whether or not it escapes.
const FUNCTION_BYTES: u64 = 32;
/// Host bytes per import of any kind (at most three pointers, rounded up).
const IMPORT_BYTES: u64 = 32;
/// Host bytes per defined memory or table besides its contents: its
/// definition in the `VMContext` and the host object behind it.
const MEMORY_OR_TABLE_BYTES: u64 = 512;
/// Host bytes per type (an engine type index in the `VMContext`).
const TYPE_BYTES: u64 = 4;
/// Host bytes per element or data segment entry kept per instance
/// (dropped-segment bookkeeping, passive element references).
const SEGMENT_ITEM_BYTES: u64 = 8;
/// Host bytes per component-level function or instance (lifted and
/// lowered function state, trampolines, instance records).
const COMPONENT_ITEM_BYTES: u64 = 256;

/// What one instantiation of a program needs, besides the contents of its
/// linear memories and tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Estimated host bytes.
    pub bytes: u64,
    /// Core instances created.
    pub instances: u64,
}

impl Footprint {
    fn add(&mut self, other: Footprint) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.instances = self.instances.saturating_add(other.instances);
    }

    fn max(self, other: Footprint) -> Footprint {
        Footprint {
            bytes: self.bytes.max(other.bytes),
            instances: self.instances.max(other.instances),
        }
    }
}

/// A component being read: its core module and component index spaces
/// (each entry what one instantiation of it costs) and what instantiating
/// it once costs so far.
#[derive(Default)]
struct ComponentScope {
    modules: Vec<Footprint>,
    components: Vec<Footprint>,
    total: Footprint,
}

enum Scope {
    Module(Footprint),
    Component(ComponentScope),
}

/// Estimates what instantiating the WebAssembly binary `binary` (a core
/// module or a component) once takes. Unreadable input estimates as
/// nothing: compiling it reports the real error.
pub(crate) fn estimate(binary: &[u8]) -> Footprint {
    let mut stack: Vec<Scope> = Vec::new();
    // The largest module or component seen, for references this walk does
    // not follow (exports of instances): charging the worst is safe.
    let mut largest = Footprint::default();
    for payload in Parser::new(0).parse_all(binary) {
        let Ok(payload) = payload else {
            return Footprint::default();
        };
        match payload {
            Payload::Version { encoding, .. } if stack.is_empty() => stack.push(match encoding {
                Encoding::Module => Scope::Module(base_instance()),
                Encoding::Component => Scope::Component(ComponentScope::default()),
            }),
            Payload::ModuleSection { .. } => stack.push(Scope::Module(base_instance())),
            Payload::ComponentSection { .. } => {
                stack.push(Scope::Component(ComponentScope::default()));
            }
            Payload::End(_) => {
                let (cost, is_module) = match stack.pop() {
                    Some(Scope::Module(cost)) => (cost, true),
                    Some(Scope::Component(scope)) => (scope.total, false),
                    None => return Footprint::default(),
                };
                largest = largest.max(cost);
                match stack.last_mut() {
                    None => return cost,
                    Some(Scope::Component(parent)) if is_module => parent.modules.push(cost),
                    Some(Scope::Component(parent)) => parent.components.push(cost),
                    Some(Scope::Module(_)) => return Footprint::default(),
                }
            }
            payload => {
                if let Some(Scope::Module(cost)) = stack.last_mut() {
                    module_payload(cost, &payload);
                } else if matches!(stack.last(), Some(Scope::Component(_))) {
                    component_payload(&mut stack, &payload, largest);
                }
            }
        }
    }
    Footprint::default()
}

fn base_instance() -> Footprint {
    Footprint {
        bytes: INSTANCE_BASE_BYTES,
        instances: 1,
    }
}

fn charge(cost: &mut Footprint, count: u32, each: u64) {
    cost.bytes = cost
        .bytes
        .saturating_add(u64::from(count).saturating_mul(each));
}

/// Adds what a core module section costs per instance.
fn module_payload(cost: &mut Footprint, payload: &Payload<'_>) {
    match payload {
        Payload::TypeSection(reader) => charge(cost, reader.count(), TYPE_BYTES),
        Payload::ImportSection(reader) => {
            let imports = reader.clone().into_imports().count();
            charge(
                cost,
                u32::try_from(imports).unwrap_or(u32::MAX),
                IMPORT_BYTES,
            );
        }
        Payload::FunctionSection(reader) => charge(cost, reader.count(), FUNCTION_BYTES),
        Payload::TableSection(reader) => charge(cost, reader.count(), MEMORY_OR_TABLE_BYTES),
        Payload::MemorySection(reader) => charge(cost, reader.count(), MEMORY_OR_TABLE_BYTES),
        Payload::GlobalSection(reader) => charge(cost, reader.count(), GLOBAL_BYTES),
        Payload::TagSection(reader) => charge(cost, reader.count(), GLOBAL_BYTES),
        Payload::ElementSection(reader) => {
            let items = reader.clone().into_iter().fold(0u32, |sum, element| {
                let count = element.map_or(0, |element| match element.items {
                    wasmparser::ElementItems::Functions(items) => items.count(),
                    wasmparser::ElementItems::Expressions(_, items) => items.count(),
                });
                sum.saturating_add(count).saturating_add(1)
            });
            charge(cost, items, SEGMENT_ITEM_BYTES);
        }
        Payload::DataSection(reader) => charge(cost, reader.count(), SEGMENT_ITEM_BYTES),
        _ => {}
    }
}

/// Follows a component section: the index spaces of modules and
/// components, and the instantiations that add to the component's cost.
fn component_payload(stack: &mut [Scope], payload: &Payload<'_>, largest: Footprint) {
    let depth = stack.len();
    // What an outer alias `count` levels up at `index` refers to.
    let outer = |stack: &[Scope], count: u32, index: u32, modules: bool| {
        let level = usize::try_from(count)
            .ok()
            .and_then(|count| depth.checked_sub(count + 1));
        match level.map(|level| &stack[level]) {
            Some(Scope::Component(scope)) => {
                let space = if modules {
                    &scope.modules
                } else {
                    &scope.components
                };
                usize::try_from(index)
                    .ok()
                    .and_then(|index| space.get(index).copied())
                    .unwrap_or(largest)
            }
            _ => largest,
        }
    };
    let mut new_modules = Vec::new();
    let mut new_components = Vec::new();
    let mut instantiated = Footprint::default();
    {
        let Some(Scope::Component(scope)) = stack.last() else {
            return;
        };
        let module = |index: u32| {
            usize::try_from(index)
                .ok()
                .and_then(|index| scope.modules.get(index).copied())
                .unwrap_or(largest)
        };
        let component = |index: u32| {
            usize::try_from(index)
                .ok()
                .and_then(|index| scope.components.get(index).copied())
                .unwrap_or(largest)
        };
        match payload {
            Payload::InstanceSection(reader) => {
                for instance in reader.clone().into_iter().flatten() {
                    if let Instance::Instantiate { module_index, .. } = instance {
                        instantiated.add(module(module_index));
                    }
                }
            }
            Payload::ComponentInstanceSection(reader) => {
                for instance in reader.clone().into_iter().flatten() {
                    instantiated.bytes = instantiated.bytes.saturating_add(COMPONENT_ITEM_BYTES);
                    if let wasmparser::ComponentInstance::Instantiate {
                        component_index, ..
                    } = instance
                    {
                        instantiated.add(component(component_index));
                    }
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                charge(&mut instantiated, reader.count(), COMPONENT_ITEM_BYTES);
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader.clone().into_iter().flatten() {
                    match import.ty {
                        // The host supplies these; it never supplies code.
                        ComponentTypeRef::Module(_) => new_modules.push(Footprint::default()),
                        ComponentTypeRef::Component(_) => {
                            new_components.push(Footprint::default());
                        }
                        _ => {}
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader.clone().into_iter().flatten() {
                    match export.kind {
                        ComponentExternalKind::Module => new_modules.push(module(export.index)),
                        ComponentExternalKind::Component => {
                            new_components.push(component(export.index));
                        }
                        _ => {}
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader.clone().into_iter().flatten() {
                    match alias {
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Module,
                            ..
                        } => new_modules.push(largest),
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Component,
                            ..
                        } => new_components.push(largest),
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::CoreModule,
                            count,
                            index,
                        } => new_modules.push(outer(stack, count, index, true)),
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::Component,
                            count,
                            index,
                        } => new_components.push(outer(stack, count, index, false)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(Scope::Component(scope)) = stack.last_mut() {
        scope.modules.extend(new_modules);
        scope.components.extend(new_components);
        scope.total.add(instantiated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate_wat(text: &str) -> Footprint {
        estimate(&wat::parse_str(text).expect("valid wat"))
    }

    #[test]
    fn a_module_costs_its_globals_and_functions() {
        let empty = estimate_wat("(module)");
        assert_eq!(empty, base_instance());
        let globals: String = (0..1000)
            .map(|_| "(global (mut i32) (i32.const 0))")
            .collect();
        let big = estimate_wat(&format!("(module {globals})"));
        assert_eq!(big.bytes, INSTANCE_BASE_BYTES + 1000 * GLOBAL_BYTES);
        assert_eq!(big.instances, 1);
    }

    #[test]
    fn a_component_costs_every_instantiation_it_declares() {
        let globals: String = (0..100)
            .map(|_| "(global (mut i32) (i32.const 0))")
            .collect();
        let module = estimate_wat(&format!("(module {globals})"));
        let instances: String = (0..50)
            .map(|_| "(core instance (instantiate $m))")
            .collect();
        let component = estimate_wat(&format!(
            "(component (core module $m {globals}) {instances})"
        ));
        assert_eq!(component.instances, 50);
        assert_eq!(component.bytes, 50 * module.bytes);
        // A nested component instantiated twice counts twice.
        let nested = estimate_wat(&format!(
            "(component
               (component $inner (core module $m {globals}) {instances})
               (instance (instantiate $inner))
               (instance (instantiate $inner)))"
        ));
        assert_eq!(nested.instances, 100);
        assert!(nested.bytes >= 100 * module.bytes);
        // A module defined but never instantiated costs nothing.
        let unused = estimate_wat(&format!("(component (core module $m {globals}))"));
        assert_eq!(unused.instances, 0);
        // An outer alias refers to the enclosing component's module.
        let aliased = estimate_wat(&format!(
            "(component
               (core module $m {globals})
               (component $inner
                 (alias outer 1 $m (core module $mm))
                 (core instance (instantiate $mm)))
               (instance (instantiate $inner)))"
        ));
        assert_eq!(aliased.instances, 1);
        assert!(aliased.bytes >= module.bytes);
    }

    #[test]
    fn the_examples_fit_the_limits_with_room_to_spare() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/wasm") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|ext| ext != "wasm") {
                continue;
            }
            let footprint = estimate(&std::fs::read(&path).expect("read example"));
            eprintln!("{}: {footprint:?}", path.display());
            assert!(footprint.instances >= 1, "{}", path.display());
            let cap = u64::try_from(crate::limits::MAX_INSTANCES).unwrap_or(u64::MAX);
            assert!(footprint.instances * 10 <= cap, "{}", path.display());
            assert!(footprint.bytes < 4 << 20, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 5);
    }

    #[test]
    fn garbage_costs_nothing() {
        assert_eq!(estimate(b"not wasm"), Footprint::default());
    }
}
