//! How much address space and memory an engine may reserve on this machine.
//!
//! wasmtime's defaults assume a 64-bit desktop or server: every linear
//! memory reserves 4 GiB plus 32 MiB guards of address space, so that
//! compiled code needs no bounds checks, and a serving pool reserves that
//! for every slot up front (1,000 concurrent requests: about 8 TiB). A
//! 39-bit address space (512 GiB, as on many ARM64 kernels), a `ulimit -v`
//! or a device with 1 GiB of RAM cannot give that. [`Machine::probe`]
//! measures what this process may still reserve (the `RLIMIT_AS` soft limit
//! and, on Linux, the size of the user address space, less what the
//! process already maps) and its physical memory; [`pool_layout`] and
//! [`command_reservation`] then keep wasmtime's defaults whenever they fit,
//! and otherwise shrink, in this order: each memory's reservation to its
//! maximum (bounds-checked code, 64 KiB guards), the pool's slots, and last
//! the largest memory a pooled instance may have. The sizing is
//! recomputed, and logged, for each engine a runtime creates.

use crate::engine::PoolSizing;

/// wasmtime's default reservation per linear memory on 64-bit hosts.
const DEFAULT_RESERVATION: u64 = 4 << 30;
/// wasmtime's default guard after (and before) each linear memory.
const DEFAULT_GUARD: u64 = 32 << 20;
/// The guard of a reduced reservation: one wasm page, enough to elide the
/// bounds checks of small constant offsets.
const SMALL_GUARD: u64 = 64 << 10;
/// A wasm page: memories are sized in these.
const WASM_PAGE: u64 = 64 << 10;
/// Linear memories per pooled instance (a component's program and its
/// adapter or shims); see [`crate::engine`].
pub(crate) const MEMORIES_PER_INSTANCE: u64 = 2;
/// Tables per pooled instance.
pub(crate) const TABLES_PER_INSTANCE: u64 = 4;
/// Address space of one pooled table: wasmtime's default of 20,000
/// elements of 8 bytes, page-rounded.
const TABLE_BYTES: u64 = 160 << 10;
/// Address space of one pooled async stack and its guard page.
const STACK_BYTES: u64 = (2 << 20) + (4 << 10);
/// Address space kept out of any budget for the process itself: thread
/// stacks, the allocator's arenas, compiling.
const HEADROOM: u64 = 256 << 20;
/// The smallest memory limit a shrunk pool still offers; below it the
/// pool is not worth having and engines allocate on demand.
const MIN_POOLED_MEMORY: u64 = 1 << 20;
/// Memories a command engine's reservation must leave room for, so that a
/// process running many sandboxes does not run out after a few.
const COMMAND_MEMORIES: u64 = 64;
/// Share of physical memory that pooled slots may keep resident between
/// requests (1/8).
const RESIDENT_SHARE: u64 = 8;

/// What this machine offers an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Machine {
    /// Bytes of address space this process may still reserve; `None` when
    /// neither a limit nor the address-space size is known.
    pub(crate) address_space: Option<u64>,
    /// Bytes of physical memory, if known.
    pub(crate) memory: Option<u64>,
}

impl Machine {
    /// Measures this process and machine now.
    pub(crate) fn probe() -> Machine {
        Machine {
            address_space: probe::address_space(),
            memory: probe::physical_memory(),
        }
    }

    /// Only what can make a command engine's reservations too large, and
    /// cheap enough for every `berth run`: the `RLIMIT_AS` soft limit (one
    /// system call) less what is mapped, read only when a limit is set. The
    /// address space's own size is not read: even a 39-bit one holds
    /// [`COMMAND_MEMORIES`] default reservations.
    pub(crate) fn probe_limit() -> Machine {
        Machine {
            address_space: probe::limit_left(),
            memory: None,
        }
    }

    /// Bytes one engine may reserve: three quarters of what is left after
    /// [`HEADROOM`], so that later engines (another pool, the command
    /// engine) and the process itself still find room.
    pub(crate) fn budget(&self) -> Option<u64> {
        self.address_space
            .map(|left| left.saturating_sub(HEADROOM) / 4 * 3)
    }
}

/// Smaller per-memory reservations than wasmtime's defaults. They change
/// the compiled code (explicit bounds checks), so programs are compiled
/// for them, and the compile cache keys them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reservation {
    /// Bytes reserved per linear memory, and for its growth beyond that.
    pub(crate) memory: u64,
    /// Guard bytes after (and before) each linear memory.
    pub(crate) guard: u64,
}

impl Reservation {
    /// Sets these reservations on `config`.
    pub(crate) fn apply(&self, config: &mut wasmtime::Config) {
        config
            .memory_reservation(self.memory)
            .memory_guard_size(self.guard)
            .memory_reservation_for_growth(self.memory);
    }
}

/// The instance pool a serving engine reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLayout {
    /// Instances that may exist at once.
    pub(crate) instances: u32,
    /// The largest linear memory of one instance.
    pub(crate) max_memory: u64,
    /// `None`: wasmtime's default reservations.
    pub(crate) reservation: Option<Reservation>,
    /// Bytes of each memory slot kept resident between instances.
    pub(crate) keep_resident: u64,
    /// The address space the pool reserves.
    pub(crate) reserved: u64,
}

/// Address space of one pooled instance whose memories reserve `memory`
/// bytes plus `guard`.
fn instance_bytes(memory: u64, guard: u64) -> u64 {
    MEMORIES_PER_INSTANCE
        .saturating_mul(memory.saturating_add(guard))
        .saturating_add(TABLES_PER_INSTANCE * TABLE_BYTES)
        .saturating_add(STACK_BYTES)
}

/// The pool for `requested` on `machine`, or `None` when not even one
/// instance with a useful memory fits (engines then allocate on demand).
/// `keep_resident` is the per-slot resident budget on a big machine.
pub(crate) fn pool_layout(
    requested: PoolSizing,
    machine: &Machine,
    keep_resident: u64,
) -> Option<PoolLayout> {
    let wanted = requested.concurrent_instances.clamp(1, 10_000);
    let mut layout = PoolLayout {
        instances: wanted,
        max_memory: requested.max_memory_bytes,
        reservation: None,
        keep_resident,
        reserved: 0,
    };
    let default_instance = instance_bytes(
        requested.max_memory_bytes.max(DEFAULT_RESERVATION),
        DEFAULT_GUARD,
    );
    let budget = machine.budget();
    if budget.is_none_or(|budget| u64::from(wanted).saturating_mul(default_instance) <= budget) {
        layout.reserved = u64::from(wanted).saturating_mul(default_instance);
        layout.keep_resident = resident_share(keep_resident, wanted, machine);
        return Some(layout);
    }
    let budget = budget.unwrap_or(u64::MAX);
    // A guest cannot use more memory than the machine has.
    let mut memory = round_up_to_page(machine.memory.map_or(requested.max_memory_bytes, |ram| {
        ram.min(requested.max_memory_bytes)
    }));
    let mut instances = wanted.min(
        u32::try_from(budget / instance_bytes(memory, SMALL_GUARD).max(1)).unwrap_or(u32::MAX),
    );
    if instances == 0 {
        // One instance, with the largest memory that fits.
        instances = 1;
        let for_memories = budget.saturating_sub(TABLES_PER_INSTANCE * TABLE_BYTES + STACK_BYTES)
            / MEMORIES_PER_INSTANCE;
        memory = for_memories.saturating_sub(SMALL_GUARD) / WASM_PAGE * WASM_PAGE;
        if memory < MIN_POOLED_MEMORY {
            return None;
        }
    }
    layout.instances = instances;
    layout.max_memory = memory;
    layout.reservation = Some(Reservation {
        memory,
        guard: SMALL_GUARD,
    });
    layout.reserved = u64::from(instances).saturating_mul(instance_bytes(memory, SMALL_GUARD));
    layout.keep_resident = resident_share(keep_resident, instances, machine);
    Some(layout)
}

/// `keep_resident`, lowered so that every slot of `instances` keeping it
/// stays within [`RESIDENT_SHARE`] of physical memory.
fn resident_share(keep_resident: u64, instances: u32, machine: &Machine) -> u64 {
    let Some(memory) = machine.memory else {
        return keep_resident;
    };
    let slots = u64::from(instances) * MEMORIES_PER_INSTANCE;
    let share = memory / RESIDENT_SHARE / slots.max(1);
    // Whole host pages; at least one, so a tiny handler still resets in place.
    keep_resident.min((share / 4096 * 4096).max(4096))
}

/// The reservations of a command engine (on-demand allocation) on
/// `machine`: `None` (wasmtime's 4 GiB per memory) while that leaves room
/// for [`COMMAND_MEMORIES`] memories, else the largest power of two that
/// does (at least a wasm page); memories larger than it grow by moving.
pub(crate) fn command_reservation(machine: &Machine) -> Option<Reservation> {
    let budget = machine.budget()?;
    let per_memory = budget / COMMAND_MEMORIES;
    if per_memory >= DEFAULT_RESERVATION + 2 * DEFAULT_GUARD {
        return None;
    }
    let fits = per_memory.saturating_sub(2 * SMALL_GUARD).max(WASM_PAGE);
    // The largest power of two not above `fits`.
    let memory = 1u64 << (63 - fits.leading_zeros());
    Some(Reservation {
        memory,
        guard: SMALL_GUARD,
    })
}

fn round_up_to_page(bytes: u64) -> u64 {
    bytes
        .div_ceil(WASM_PAGE)
        .saturating_mul(WASM_PAGE)
        .max(WASM_PAGE)
}

#[cfg(target_os = "linux")]
mod probe {
    //! Linux: the rlimit, the user address space's size (from where the
    //! kernel put the main thread's stack, at its top) less what this
    //! process maps, and MemTotal.

    pub(super) fn address_space() -> Option<u64> {
        let limit = [super::rlimit(), user_address_space()]
            .into_iter()
            .flatten()
            .min()?;
        Some(limit.saturating_sub(mapped().unwrap_or(0)))
    }

    pub(super) fn limit_left() -> Option<u64> {
        let limit = super::rlimit()?;
        Some(limit.saturating_sub(mapped().unwrap_or(0)))
    }

    /// The size of the user address space: the main thread's stack sits
    /// just below its top, so the next power of two above the stack's end
    /// is the top (2^47 on x86_64, 2^39 or 2^48 on ARM64).
    fn user_address_space() -> Option<u64> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let line = maps.lines().find(|line| line.ends_with("[stack]"))?;
        let (_, end) = line.split_whitespace().next()?.split_once('-')?;
        let end = u64::from_str_radix(end, 16).ok()?;
        end.checked_next_power_of_two()
    }

    /// Bytes this process maps now (VmSize).
    fn mapped() -> Option<u64> {
        kib_field(
            &std::fs::read_to_string("/proc/self/status").ok()?,
            "VmSize:",
        )
    }

    pub(super) fn physical_memory() -> Option<u64> {
        kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
    }

    /// A `NAME:  N kB` field of a /proc file, in bytes.
    fn kib_field(text: &str, name: &str) -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        kib.checked_mul(1024)
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod probe {
    //! Other unixes: the rlimit only.

    pub(super) fn address_space() -> Option<u64> {
        super::rlimit()
    }

    pub(super) fn limit_left() -> Option<u64> {
        super::rlimit()
    }

    pub(super) fn physical_memory() -> Option<u64> {
        None
    }
}

#[cfg(not(unix))]
mod probe {
    //! Elsewhere nothing is measured, and wasmtime's defaults apply.

    pub(super) fn address_space() -> Option<u64> {
        None
    }

    pub(super) fn limit_left() -> Option<u64> {
        None
    }

    pub(super) fn physical_memory() -> Option<u64> {
        None
    }
}

/// The soft `RLIMIT_AS` (`ulimit -v`), if set.
#[cfg(unix)]
fn rlimit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::As).current
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const KEEP: u64 = 1 << 20;
    /// `berth run -p` without `-m`: 1,000 instances of up to 4 GiB.
    const SERVE: PoolSizing = PoolSizing {
        concurrent_instances: 1000,
        max_memory_bytes: 4 * GIB,
    };

    fn machine(address_space: u64, memory: u64) -> Machine {
        Machine {
            address_space: Some(address_space),
            memory: Some(memory),
        }
    }

    #[test]
    fn a_big_machine_keeps_wasmtimes_defaults() {
        // x86_64: 128 TiB of user address space, 24 GiB of RAM.
        let layout = pool_layout(SERVE, &machine(128 << 40, 24 * GIB), KEEP).expect("a pool");
        assert_eq!(
            (layout.instances, layout.max_memory, layout.reservation),
            (1000, 4 * GIB, None)
        );
        assert_eq!(layout.keep_resident, KEEP);
        assert_eq!(command_reservation(&machine(128 << 40, 24 * GIB)), None);
        // Nothing known: defaults too.
        let unknown = pool_layout(SERVE, &Machine::default(), KEEP).expect("a pool");
        assert_eq!((unknown.instances, unknown.reservation), (1000, None));
        assert_eq!(command_reservation(&Machine::default()), None);
    }

    #[test]
    fn a_39_bit_address_space_gets_a_pool_that_fits() {
        let space = 512 * GIB;
        let m = machine(space, 24 * GIB);
        let budget = m.budget().expect("a budget");
        // Without -m, the guest keeps its 4 GiB; fewer slots fit.
        let layout = pool_layout(SERVE, &m, KEEP).expect("a pool");
        assert!(layout.reserved <= budget, "{layout:?}");
        assert!(
            layout.instances >= 32 && layout.instances < 1000,
            "{layout:?}"
        );
        assert_eq!(layout.max_memory, 4 * GIB);
        assert_eq!(
            layout.reservation,
            Some(Reservation {
                memory: 4 * GIB,
                guard: SMALL_GUARD
            })
        );
        // With -m 64m, all 1,000 slots fit.
        let limited = PoolSizing {
            concurrent_instances: 1000,
            max_memory_bytes: 64 << 20,
        };
        let layout = pool_layout(limited, &m, KEEP).expect("a pool");
        assert_eq!((layout.instances, layout.max_memory), (1000, 64 << 20));
        assert!(layout.reserved <= budget, "{layout:?}");
        // Commands keep 4 GiB reservations: 64 of them still fit.
        assert_eq!(command_reservation(&m), None);
    }

    #[test]
    fn a_one_gib_device_gets_a_small_pool_and_small_reservations() {
        // ulimit -v 1 GiB, of which 300 MiB is mapped already, 1 GiB RAM.
        let m = machine(GIB - (300 << 20), GIB);
        let budget = m.budget().expect("a budget");
        let limited = PoolSizing {
            concurrent_instances: 1000,
            max_memory_bytes: 16 << 20,
        };
        let layout = pool_layout(limited, &m, KEEP).expect("a pool");
        assert!(layout.reserved <= budget, "{layout:?}");
        assert!(layout.instances >= 4, "{layout:?}");
        assert_eq!(layout.max_memory, 16 << 20);
        // Without -m the memory shrinks to what one instance can have.
        let layout = pool_layout(SERVE, &m, KEEP).expect("a pool");
        assert_eq!(layout.instances, 1);
        assert!(
            layout.max_memory < GIB && layout.max_memory >= 64 << 20,
            "{layout:?}"
        );
        assert!(layout.reserved <= budget, "{layout:?}");
        // Resident slots stay within an eighth of RAM.
        let many = pool_layout(
            PoolSizing {
                concurrent_instances: 1000,
                max_memory_bytes: 64 << 10,
            },
            &machine(512 * GIB, GIB),
            KEEP,
        )
        .expect("a pool");
        assert!(
            u64::from(many.instances) * MEMORIES_PER_INSTANCE * many.keep_resident <= GIB / 8,
            "{many:?}"
        );
        // Commands reserve a power of two that leaves room for 64 memories.
        let command = command_reservation(&m).expect("smaller reservations");
        assert!(command.memory.is_power_of_two());
        assert!(COMMAND_MEMORIES * (command.memory + 2 * command.guard) <= budget);
    }

    #[test]
    fn no_room_means_no_pool() {
        let m = machine(HEADROOM + (2 << 20), GIB);
        assert_eq!(pool_layout(SERVE, &m, KEEP), None);
        assert_eq!(
            command_reservation(&m).map(|r| r.memory),
            Some(WASM_PAGE),
            "the smallest reservation"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_probe_finds_this_machine() {
        let m = Machine::probe();
        let space = m.address_space.expect("an address space");
        // At least 39 bits' worth, less what is mapped, unless ulimit -v.
        assert!(space > 0);
        assert!(m.memory.expect("MemTotal") > 64 << 20);
        // The command probe never reports more room than the full one.
        let limit = Machine::probe_limit();
        assert_eq!(limit.memory, None);
        if let Some(left) = limit.address_space {
            assert!(left <= space + (64 << 20), "{left} > {space}");
        }
    }
}
