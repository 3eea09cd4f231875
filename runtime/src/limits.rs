//! Resource limits, each a cgroup analogue enforced inside the sandbox.
//!
//! - [`MemoryLimiter`] is `memory.max`: it caps the sum of every linear
//!   memory and table of one instance. A refused grow behaves as the wasm
//!   spec says (`memory.grow` returns -1, `table.grow` returns -1); the
//!   limiter remembers the refusal so that a guest which then traps or aborts
//!   is reported as OOM-killed.
//! - [`CpuThrottle`] is `cpu.cfs_quota_us / cfs_period_us`: a token bucket
//!   consulted at every epoch tick that makes a busy guest sleep until it is
//!   back under its share of one core. It never kills.

use std::time::{Duration, Instant};

/// Limits applied to one sandbox. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Maximum bytes of linear memory plus table storage.
    pub memory_bytes: Option<u64>,
    /// CPU quota as a fraction of one core (0.25 = a quarter core).
    pub cpus: Option<f64>,
    /// Wall-clock time after which the guest is killed.
    pub timeout: Option<Duration>,
}

/// Bytes wasmtime uses for one table element (a pointer).
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// Caps total linear memory and table growth of one store.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    limit: Option<u64>,
    used: u64,
    refused: Option<u64>,
}

impl MemoryLimiter {
    /// A limiter allowing at most `limit` bytes (`None` = unlimited).
    pub fn new(limit: Option<u64>) -> Self {
        MemoryLimiter {
            limit,
            used: 0,
            refused: None,
        }
    }

    /// The size of the first growth request that was refused, if any.
    pub fn refused_request(&self) -> Option<u64> {
        self.refused
    }

    /// Bytes currently accounted to memories and tables.
    pub fn used(&self) -> u64 {
        self.used
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        let wanted = self.used.saturating_add(delta);
        match self.limit {
            Some(limit) if wanted > limit => {
                self.refused.get_or_insert(wanted);
                false
            }
            _ => {
                self.used = wanted;
                true
            }
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            (current as u64).saturating_mul(TABLE_ELEMENT_BYTES),
            (desired as u64).saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

/// A token bucket that keeps a guest at `cpus` of one core over wall time.
///
/// The guest is charged only for time spent executing wasm: the store's call
/// hook reports every switch between wasm and the host, so a guest blocked
/// in a host call (reading stdin, sleeping) is not charged. At every epoch
/// tick the guest is credited `cpus` times what it ran; when the balance goes
/// negative it sleeps exactly long enough to earn it back. Credit saved while
/// idle is capped at one [`CpuThrottle::PERIOD`] worth of quota, like CFS, so
/// an idle guest cannot save up for a long burst.
#[derive(Debug)]
pub struct CpuThrottle {
    cpus: f64,
    burst: f64,
    credit: f64,
    /// When the guest last started running wasm; `None` while in the host.
    running_since: Option<Instant>,
    /// Wasm time accumulated since the last tick.
    ran: Duration,
    throttled: Duration,
}

impl CpuThrottle {
    /// The accounting period, as cgroups' default `cpu.cfs_period_us`.
    pub const PERIOD: Duration = Duration::from_millis(100);

    /// A throttle for `cpus` cores; the guest is not running yet.
    pub fn new(cpus: f64) -> Self {
        CpuThrottle {
            cpus,
            burst: Self::PERIOD.as_secs_f64() * cpus,
            credit: 0.0,
            running_since: None,
            ran: Duration::ZERO,
            throttled: Duration::ZERO,
        }
    }

    /// Whether this throttle can ever delay a guest (quotas of a whole core
    /// or more cannot: a guest runs on one thread).
    pub fn is_limiting(&self) -> bool {
        self.cpus < 1.0
    }

    /// The guest starts (or resumes) executing wasm.
    pub fn resume(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The guest stops executing wasm (calls the host or returns).
    pub fn suspend(&mut self, now: Instant) {
        if let Some(since) = self.running_since.take() {
            self.ran += now.saturating_duration_since(since);
        }
    }

    /// Charges the wasm time run since the last tick and returns how long the
    /// guest must now sleep, if at all. Called while the guest runs wasm.
    pub fn on_tick(&mut self, now: Instant) -> Option<Duration> {
        self.suspend(now);
        let ran = std::mem::take(&mut self.ran).as_secs_f64();
        self.credit += ran * self.cpus - ran;
        if self.credit >= 0.0 {
            self.credit = self.credit.min(self.burst);
            self.resume(now);
            return None;
        }
        let pause = Duration::from_secs_f64(-self.credit / self.cpus);
        self.credit = 0.0;
        self.throttled += pause;
        self.resume(now + pause);
        Some(pause)
    }

    /// Total time the guest has been held back so far.
    pub fn throttled_time(&self) -> Duration {
        self.throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_limit_counts_every_memory_and_table() {
        let mut limiter = MemoryLimiter::new(Some(10 * 65536));
        assert!(limiter.memory_growing(0, 4 * 65536, None).unwrap_or(false));
        assert!(limiter.memory_growing(0, 4 * 65536, None).unwrap_or(false));
        // 8 pages used; a third memory of 4 pages would exceed 10.
        assert!(!limiter.memory_growing(0, 4 * 65536, None).unwrap_or(true));
        assert_eq!(limiter.refused_request(), Some(12 * 65536));
        // Tables count at pointer size per element.
        assert!(limiter.table_growing(0, 1000, None).unwrap_or(false));
        assert!(!limiter.table_growing(1000, 1_000_000, None).unwrap_or(true));
    }

    #[test]
    fn unlimited_memory_never_refuses() {
        let mut limiter = MemoryLimiter::new(None);
        assert!(
            limiter
                .memory_growing(0, usize::MAX / 2, None)
                .unwrap_or(false)
        );
        assert_eq!(limiter.refused_request(), None);
    }

    #[test]
    fn throttle_sleeps_three_times_the_run_time_at_a_quarter_core() {
        let start = Instant::now();
        let mut throttle = CpuThrottle::new(0.25);
        throttle.resume(start);
        let pause = throttle
            .on_tick(start + Duration::from_millis(10))
            .expect("a busy guest over quota must pause");
        assert_eq!(pause.as_millis(), 30);
        // Resumed after the pause; the next 10 ms of running costs the same.
        let resumed = start + Duration::from_millis(40);
        let pause = throttle
            .on_tick(resumed + Duration::from_millis(10))
            .expect("still over quota");
        assert_eq!(pause.as_millis(), 30);
        assert_eq!(throttle.throttled_time().as_millis(), 60);
    }

    #[test]
    fn time_in_host_calls_is_not_charged() {
        let start = Instant::now();
        let mut throttle = CpuThrottle::new(0.25);
        throttle.resume(start);
        throttle.suspend(start + Duration::from_millis(1));
        // A second blocked in the host (e.g. sleeping) costs nothing.
        throttle.resume(start + Duration::from_secs(1));
        let pause = throttle
            .on_tick(start + Duration::from_millis(1001))
            .expect("2 ms of wasm at a quarter core must pause");
        assert_eq!(pause.as_millis(), 6);
    }

    #[test]
    fn full_core_is_never_throttled() {
        let start = Instant::now();
        let mut throttle = CpuThrottle::new(1.0);
        throttle.resume(start);
        assert!(!throttle.is_limiting());
        assert_eq!(throttle.on_tick(start + Duration::from_secs(5)), None);
    }
}
