//! Resource limits, each a cgroup analogue enforced inside the sandbox.
//!
//! - `MemoryLimiter` is `memory.max`: it caps the sum of every linear
//!   memory and table of one sandbox plus the host memory its instances
//!   take (estimated from the program, `footprint.rs`), and bounds
//!   the number of instances, tables and memories ([`MAX_INSTANCES`]). A refused grow behaves as the wasm
//!   spec says (`memory.grow` returns -1, `table.grow` returns -1); the
//!   limiter remembers the refusal so that a guest which then traps or aborts
//!   is reported as OOM-killed.
//! - `CpuThrottle` is `cpu.cfs_quota_us / cfs_period_us`: a token bucket
//!   consulted at every epoch tick that makes a busy guest sleep until it is
//!   back under its share of one core. It never kills. It charges the CPU
//!   time a `CpuMeter` measured around the sandbox's polls, so host calls
//!   count as much as wasm.
//! - `LiveLimits` holds the limits changed while a sandbox runs
//!   ([`crate::SandboxHandle::update_limits`], cgroups' writes to
//!   `memory.max` and `cpu.max`): the limiter reads the cap at each growth,
//!   the throttle the quota at each epoch tick.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Limits applied to one sandbox. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Maximum bytes of linear memory plus table storage plus the host
    /// memory of the program's instances.
    pub memory_bytes: Option<u64>,
    /// CPU quota as a fraction of one core (0.25 = a quarter core).
    pub cpus: Option<f64>,
    /// Wall-clock time after which the guest is killed.
    pub timeout: Option<Duration>,
    /// When the timeout's clock started, if before the sandbox itself
    /// (e.g. before the program was compiled, so that compiling counts).
    pub started: Option<Instant>,
    /// Whose CPU time the quota charges.
    pub cpu_clock: CpuClock,
}

/// Whose CPU time a CPU quota charges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CpuClock {
    /// The threads that run the sandbox, read around each of its polls:
    /// wasm and the host calls made on its own thread. Right wherever
    /// sandboxes share a process (serving, a daemon). Work that
    /// wasmtime-wasi hands to tokio's blocking threads (filesystem
    /// operations) is not seen.
    #[default]
    Sandbox,
    /// The whole process's CPU time since the sandbox started, blocking
    /// threads included. For a process that runs exactly one sandbox (a
    /// foreground `berth run`), where it is the sandbox's real cost. Falls
    /// back to [`CpuClock::Sandbox`] where no process CPU clock exists.
    Process,
}

/// Bytes wasmtime uses for one table element (a pointer).
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// Core instances one sandbox may create. Each costs host memory that
/// the footprint estimate charges against the memory limit; this bounds a
/// sandbox without one. The largest example, a ComponentizeJS component,
/// creates fewer than 20.
pub const MAX_INSTANCES: usize = 1000;
/// Tables one sandbox may create (wasmtime's default is 10,000).
pub const MAX_TABLES: usize = 1000;
/// Linear memories one sandbox may create (wasmtime's default is 10,000).
pub const MAX_MEMORIES: usize = 100;

/// What the sandboxes behind one handle use, updated as they run and read
/// by [`crate::SandboxHandle::stats`]. A server's requests share one.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// Bytes charged to memory limits now.
    pub(crate) memory: AtomicU64,
    /// The most bytes charged at once.
    pub(crate) peak_memory: AtomicU64,
    /// CPU nanoseconds of finished work (requests, or a sandbox's polls
    /// while its meter is not shared).
    pub(crate) cpu_nanos: AtomicU64,
    /// Nanoseconds guests were held back by their CPU quota.
    pub(crate) throttled_nanos: AtomicU64,
    /// Limits changed since the sandbox started.
    pub(crate) live: LiveLimits,
}

/// Limits set while a sandbox runs. Once set, they replace the ones its
/// stores were created with; each is read where it is enforced, so a
/// change takes effect at the guest's next growth or epoch tick.
#[derive(Debug, Default)]
pub(crate) struct LiveLimits {
    /// The memory cap in bytes; 0 while none was set (a cap of 0 bytes is
    /// refused before it gets here).
    memory: AtomicU64,
    /// The CPU quota in cores, as `f64` bits; 0 (0.0) while none was set.
    cpus: AtomicU64,
}

impl LiveLimits {
    /// Sets the memory cap (`u64::MAX`: none). `bytes` must not be 0.
    pub(crate) fn set_memory(&self, bytes: u64) {
        self.memory.store(bytes, Ordering::Relaxed);
    }

    /// Sets the CPU quota (a whole core or more: none). `cpus` must be
    /// positive.
    pub(crate) fn set_cpus(&self, cpus: f64) {
        self.cpus.store(cpus.to_bits(), Ordering::Relaxed);
    }

    /// The memory cap set while running, if one was.
    pub(crate) fn memory(&self) -> Option<u64> {
        Some(self.memory.load(Ordering::Relaxed)).filter(|bytes| *bytes != 0)
    }

    /// The CPU quota set while running, if one was.
    pub(crate) fn cpus(&self) -> Option<f64> {
        Some(f64::from_bits(self.cpus.load(Ordering::Relaxed))).filter(|cpus| *cpus > 0.0)
    }
}

impl Usage {
    fn grew(&self, delta: u64) {
        let now = self.memory.fetch_add(delta, Ordering::Relaxed) + delta;
        self.peak_memory.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, delta: u64) {
        self.memory.fetch_sub(delta, Ordering::Relaxed);
    }

    /// Adds `duration` to a nanosecond counter.
    pub(crate) fn add(counter: &AtomicU64, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Caps total linear memory and table growth of one store, and the number
/// of instances, tables and memories in it.
#[derive(Debug, Default)]
pub(crate) struct MemoryLimiter {
    limit: Option<u64>,
    used: u64,
    refused: Option<u64>,
    usage: Option<Arc<Usage>>,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.shrank(self.used);
        }
    }
}

impl MemoryLimiter {
    /// A limiter allowing at most `limit` bytes (`None` = unlimited).
    pub fn new(limit: Option<u64>) -> Self {
        MemoryLimiter {
            limit,
            used: 0,
            refused: None,
            usage: None,
        }
    }

    /// Also reports what it charges to `usage` (released when dropped).
    pub(crate) fn reporting_to(mut self, usage: Arc<Usage>) -> Self {
        usage.grew(self.used);
        self.usage = Some(usage);
        self
    }

    /// The size of the first growth request that was refused, if any.
    pub fn refused_request(&self) -> Option<u64> {
        self.refused
    }

    /// The cap in force: one set while running replaces the first.
    pub fn limit(&self) -> Option<u64> {
        self.usage
            .as_ref()
            .and_then(|usage| usage.live.memory())
            .or(self.limit)
    }

    /// Charges `bytes` of host memory that no growth reports (the
    /// program's instances, see [`crate::footprint`]); false, and
    /// remembered as refused, when that is over the limit.
    pub fn reserve(&mut self, bytes: u64) -> bool {
        self.grow(0, bytes)
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let delta = desired.saturating_sub(current);
        let wanted = self.used.saturating_add(delta);
        // A cap lowered below what is used takes nothing back (linear
        // memory cannot shrink): every further growth is refused.
        match self.limit() {
            Some(limit) if wanted > limit => {
                self.refused.get_or_insert(wanted);
                false
            }
            _ => {
                if let Some(usage) = &self.usage {
                    usage.grew(wanted - self.used);
                }
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

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// A token bucket that keeps a guest at `cpus` of one core over wall time.
///
/// The guest is charged the CPU time its sandbox really uses: wasm and the
/// host calls it makes alike, measured by a [`CpuMeter`] around every poll
/// of the sandbox's future. A guest blocked in the host (reading stdin,
/// sleeping) uses no CPU and is charged nothing. At every epoch tick the
/// guest is credited `cpus` times the wall time since the last tick and
/// debited the CPU time it used; when the balance goes negative it sleeps
/// exactly long enough to earn it back. Credit saved while idle is capped at
/// one [`CpuThrottle::PERIOD`] worth of quota, like CFS, so an idle guest
/// cannot save up for a long burst.
#[derive(Debug)]
pub(crate) struct CpuThrottle {
    cpus: f64,
    burst: f64,
    credit: f64,
    /// Wall time up to which the guest has been credited.
    credited_until: Instant,
    /// CPU time charged so far.
    charged: Duration,
    throttled: Duration,
}

impl CpuThrottle {
    /// The accounting period, as cgroups' default `cpu.cfs_period_us`.
    pub const PERIOD: Duration = Duration::from_millis(100);

    /// A throttle for `cpus` cores, starting to count at `now`.
    pub fn new(cpus: f64, now: Instant) -> Self {
        CpuThrottle {
            cpus,
            burst: Self::PERIOD.as_secs_f64() * cpus,
            credit: 0.0,
            credited_until: now,
            charged: Duration::ZERO,
            throttled: Duration::ZERO,
        }
    }

    /// Whether this throttle can ever delay a guest (quotas of a whole core
    /// or more cannot: a guest runs on one thread).
    pub fn is_limiting(&self) -> bool {
        self.cpus < 1.0
    }

    /// Applies a quota of `cpus` set while the guest runs to `throttle`:
    /// retuned in place (its credit capped at the new burst), or created,
    /// charging only the CPU time used from `cpu_used` on. Nothing changes
    /// when the quota already is `cpus`.
    pub fn retune(
        throttle: &mut Option<CpuThrottle>,
        cpus: f64,
        now: Instant,
        cpu_used: impl FnOnce() -> Duration,
    ) {
        match throttle {
            Some(throttle) if throttle.cpus != cpus => {
                throttle.cpus = cpus;
                throttle.burst = Self::PERIOD.as_secs_f64() * cpus;
                throttle.credit = throttle.credit.min(throttle.burst);
            }
            Some(_) => {}
            None if cpus < 1.0 => {
                *throttle = Some(CpuThrottle {
                    charged: cpu_used(),
                    ..CpuThrottle::new(cpus, now)
                });
            }
            None => {}
        }
    }

    /// Charges the guest up to `cpu_used` (its total CPU time so far) and
    /// returns how long it must now sleep, if at all.
    pub fn on_tick(&mut self, now: Instant, cpu_used: Duration) -> Option<Duration> {
        let used = cpu_used.saturating_sub(self.charged).as_secs_f64();
        self.charged = self.charged.max(cpu_used);
        if !self.is_limiting() {
            // A quota raised to a whole core while running.
            self.credited_until = self.credited_until.max(now);
            return None;
        }
        let earned = now
            .saturating_duration_since(self.credited_until)
            .as_secs_f64()
            * self.cpus;
        self.credited_until = self.credited_until.max(now);
        self.credit = (self.credit + earned - used).min(self.burst);
        if self.credit >= 0.0 {
            return None;
        }
        // The pause earns back exactly the debt, so it is credited now.
        let pause = Duration::from_secs_f64(-self.credit / self.cpus);
        self.credit = 0.0;
        self.credited_until = now + pause;
        self.throttled += pause;
        Some(pause)
    }

    /// Total time the guest has been held back so far.
    pub fn throttled_time(&self) -> Duration {
        self.throttled
    }
}

/// Measures the CPU time one sandbox uses, whichever thread runs it.
///
/// A sandbox is a future: wasm runs on a fiber resumed inside its `poll`,
/// and so do the host calls it makes, but between two polls it may move to
/// another worker thread. So the thread's CPU clock is read at the start
/// and end of every poll ([`Metered`]), and the CPU time of the poll in
/// progress is read against the start of that same poll. Where no thread
/// CPU clock exists, the wall time spent inside polls stands in for it.
///
/// Reading a thread's CPU clock is a system call (Linux has no fast path
/// for it), two per poll: a quota needs that precision, statistics alone
/// do not. A meter made [`CpuMeter::estimating`] charges the wall time
/// spent inside polls instead, which is the CPU time unless the machine
/// runs more threads than it has cores.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    /// CPU nanoseconds of finished polls.
    used: AtomicU64,
    /// The thread clock when the poll in progress started.
    poll_start: AtomicU64,
    /// Where wall time stands in for the thread clock, its zero.
    origin: Instant,
    /// With [`CpuClock::Process`], the process's CPU time when the meter
    /// was made.
    process_origin: Option<Duration>,
    /// Whether the thread CPU clock is read (else wall time in polls);
    /// a quota set while running turns it on.
    precise: AtomicBool,
    /// Which clock the poll in progress started on: a switch in the middle
    /// of a poll applies from the next.
    poll_precise: AtomicBool,
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter::new(CpuClock::Sandbox)
    }
}

impl CpuMeter {
    /// A meter that charges what `clock` says.
    pub fn new(clock: CpuClock) -> Self {
        CpuMeter {
            used: AtomicU64::new(0),
            poll_start: AtomicU64::new(0),
            origin: Instant::now(),
            process_origin: match clock {
                CpuClock::Sandbox => None,
                CpuClock::Process => process_cpu_time(),
            },
            precise: AtomicBool::new(true),
            poll_precise: AtomicBool::new(true),
        }
    }

    /// A meter for statistics only: it charges the wall time spent inside
    /// polls, which costs no system call.
    pub fn estimating() -> Self {
        CpuMeter {
            process_origin: None,
            precise: AtomicBool::new(false),
            poll_precise: AtomicBool::new(false),
            ..CpuMeter::new(CpuClock::Sandbox)
        }
    }

    /// Reads the thread CPU clock from the next poll on (a quota needs it).
    pub fn make_precise(&self) {
        self.precise.store(true, Ordering::Relaxed);
    }

    /// The current thread's clock, in nanoseconds: the CPU clock when
    /// `precise`, else wall time since the meter was made.
    fn thread_clock(&self, precise: bool) -> u64 {
        let now = if precise {
            thread_cpu_time().unwrap_or_else(|| self.origin.elapsed())
        } else {
            self.origin.elapsed()
        };
        u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
    }

    fn poll_started(&self) {
        let precise = self.precise.load(Ordering::Relaxed);
        self.poll_precise.store(precise, Ordering::Relaxed);
        self.poll_start
            .store(self.thread_clock(precise), Ordering::Relaxed);
    }

    /// The clock of the poll in progress, in nanoseconds.
    fn poll_clock(&self) -> u64 {
        self.thread_clock(self.poll_precise.load(Ordering::Relaxed))
    }

    fn poll_ended(&self) {
        let spent = self
            .poll_clock()
            .saturating_sub(self.poll_start.load(Ordering::Relaxed));
        self.used.fetch_add(spent, Ordering::Relaxed);
    }

    /// CPU time used so far, including the poll in progress. Call it only
    /// from inside a poll of the [`Metered`] future (an epoch callback).
    pub fn used_in_poll(&self) -> Duration {
        if let Some(origin) = self.process_origin
            && let Some(now) = process_cpu_time()
        {
            return now.saturating_sub(origin);
        }
        let current = self
            .poll_clock()
            .saturating_sub(self.poll_start.load(Ordering::Relaxed));
        Duration::from_nanos(self.used.load(Ordering::Relaxed).saturating_add(current))
    }

    /// CPU time used by finished polls.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used.load(Ordering::Relaxed))
    }
}

/// The CPU time the current thread has used (`None` where the platform
/// has no such clock, e.g. Windows: the caller uses wall time).
fn thread_cpu_time() -> Option<Duration> {
    cpu_clock(CpuClockId::Thread)
}

/// The CPU time every thread of this process has used (`None` where the
/// platform has no such clock: meters then charge the sandbox's own polls).
fn process_cpu_time() -> Option<Duration> {
    cpu_clock(CpuClockId::Process)
}

/// Which CPU clock to read.
#[derive(Clone, Copy)]
enum CpuClockId {
    Thread,
    Process,
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
))]
fn cpu_clock(id: CpuClockId) -> Option<Duration> {
    use rustix::time::{ClockId, clock_gettime};
    let time = clock_gettime(match id {
        CpuClockId::Thread => ClockId::ThreadCPUTime,
        CpuClockId::Process => ClockId::ProcessCPUTime,
    });
    Some(Duration::new(
        u64::try_from(time.tv_sec).ok()?,
        u32::try_from(time.tv_nsec).ok()?,
    ))
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
)))]
fn cpu_clock(_id: CpuClockId) -> Option<Duration> {
    None
}

pin_project_lite::pin_project! {
    /// A future whose every poll is charged to a [`CpuMeter`] (or, without
    /// a meter, a plain pass-through).
    pub(crate) struct Metered<F> {
        #[pin]
        inner: F,
        meter: Option<Arc<CpuMeter>>,
    }
}

impl<F> Metered<F> {
    /// Wraps `inner`; `meter` is `None` when nothing needs measuring.
    pub fn new(inner: F, meter: Option<Arc<CpuMeter>>) -> Self {
        Metered { inner, meter }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(meter) = this.meter.as_deref() else {
            return this.inner.poll(cx);
        };
        meter.poll_started();
        let result = this.inner.poll(cx);
        meter.poll_ended();
        result
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
        let mut throttle = CpuThrottle::new(0.25, start);
        let ms = Duration::from_millis;
        let pause = throttle
            .on_tick(start + ms(10), ms(10))
            .expect("a busy guest over quota must pause");
        assert_eq!(pause.as_millis(), 30);
        // Resumed after the pause; the next 10 ms of running costs the same.
        let resumed = start + ms(40);
        let pause = throttle
            .on_tick(resumed + ms(10), ms(20))
            .expect("still over quota");
        assert_eq!(pause.as_millis(), 30);
        assert_eq!(throttle.throttled_time().as_millis(), 60);
    }

    #[test]
    fn waiting_without_cpu_is_not_charged() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = CpuThrottle::new(0.25, start);
        // A second blocked in the host (e.g. sleeping) uses 1 ms of CPU:
        // well under a quarter of it.
        assert_eq!(throttle.on_tick(start + ms(1000), ms(1)), None);
        // Credit saved while idle is capped at one period (25 ms here), so
        // 45 ms of CPU in the next 10 ms overdraws by 45 - 25 - 2.5 ms.
        let pause = throttle
            .on_tick(start + ms(1010), ms(46))
            .expect("a burst beyond the saved credit must pause");
        assert_eq!(pause.as_millis(), 70);
    }

    #[test]
    fn cpu_used_in_host_calls_is_charged() {
        // Whatever the guest spent its CPU on, wasm or host calls, a tick
        // that sees 10 ms of CPU in 10 ms of wall time pauses it.
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = CpuThrottle::new(0.1, start);
        let pause = throttle
            .on_tick(start + ms(10), ms(10))
            .expect("over quota");
        assert_eq!(pause.as_millis(), 90);
    }

    #[test]
    fn meter_charges_the_cpu_of_every_poll() {
        let meter = Arc::new(CpuMeter::default());
        let spin = |until: Duration| {
            let start = thread_cpu_time().unwrap_or_default();
            let began = Instant::now();
            while thread_cpu_time().unwrap_or_else(|| began.elapsed()) < start + until
                && began.elapsed() < Duration::from_secs(5)
            {
                std::hint::black_box(0u64);
            }
        };
        // Two polls that each burn 20 ms of CPU, with an idle gap between.
        let mut polls = 0;
        let future = std::future::poll_fn(|cx| {
            polls += 1;
            spin(Duration::from_millis(20));
            if polls == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        let mut metered = std::pin::pin!(Metered::new(future, Some(meter.clone())));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(metered.as_mut().poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(50));
        assert!(metered.as_mut().poll(&mut cx).is_ready());
        let used = meter.used();
        assert!(
            used >= Duration::from_millis(40) && used < Duration::from_millis(45),
            "charged {used:?} for 40 ms of CPU and 50 ms of sleep"
        );
    }

    #[test]
    fn a_quota_set_while_running_charges_only_what_follows() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = None;
        CpuThrottle::retune(&mut throttle, 2.0, start, || ms(500));
        assert!(throttle.is_none(), "a whole core or more needs no throttle");
        // The 500 ms used before the quota was set are not charged.
        CpuThrottle::retune(&mut throttle, 0.25, start, || ms(500));
        let pause = throttle
            .as_mut()
            .and_then(|throttle| throttle.on_tick(start + ms(10), ms(510)));
        assert_eq!(pause.map(|pause| pause.as_millis()), Some(30));
        // Lifted to a whole core: it never pauses again.
        CpuThrottle::retune(&mut throttle, 1.0, start + ms(40), || ms(510));
        let pause = throttle
            .as_mut()
            .and_then(|throttle| throttle.on_tick(start + ms(50), ms(520)));
        assert_eq!(pause, None);
        assert_eq!(
            throttle.map(|throttle| throttle.throttled_time()),
            Some(ms(30))
        );
    }

    #[test]
    fn a_memory_cap_set_while_running_replaces_the_first() {
        let usage = Arc::new(Usage::default());
        let mut limiter = MemoryLimiter::new(Some(4 * 65536)).reporting_to(usage.clone());
        assert!(limiter.memory_growing(0, 3 * 65536, None).unwrap_or(false));
        usage.live.set_memory(2 * 65536);
        // Lowered below use: nothing is taken back, no growth is allowed.
        assert_eq!(usage.memory.load(Ordering::Relaxed), 3 * 65536);
        assert!(
            !limiter
                .memory_growing(3 * 65536, 3 * 65536 + 1, None)
                .unwrap_or(true)
        );
        assert_eq!(limiter.limit(), Some(2 * 65536));
        usage.live.set_memory(u64::MAX);
        assert!(
            limiter
                .memory_growing(3 * 65536, 64 * 65536, None)
                .unwrap_or(false)
        );
    }

    #[test]
    fn full_core_is_never_throttled() {
        let start = Instant::now();
        let mut throttle = CpuThrottle::new(1.0, start);
        assert!(!throttle.is_limiting());
        let five = Duration::from_secs(5);
        assert_eq!(throttle.on_tick(start + five, five), None);
    }
}
