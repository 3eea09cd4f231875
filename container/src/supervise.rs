//! Supervision: a container's restart policy and back-off, as an async
//! state machine over sandbox handles. The front door says how to start one
//! run of the program and what to do with each [`Event`] (record it, show
//! it); the supervisor decides when to start again, how long to wait first,
//! and how a stop request ends the current run.
//!
//! Nothing here knows processes, files or signals: the same machine drives
//! a detached container's supervisor today and a daemon's pods later.

use std::fmt::Display;
use std::time::{Duration, Instant};

use berth_runtime::{ExitStatus, KillMode, SandboxHandle};
use tokio::sync::watch;

use crate::spec::RestartPolicy;

/// Delays between restarts: `initial`, doubling after each restart, at most
/// `max`; a run that lasted `reset_after` starts the doubling over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first restart.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Backoff {
    /// docker's restart delays: 100 ms doubling to 10 s.
    pub const DOCKER: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
        reset_after: Duration::from_secs(10),
    };

    /// kubelet's crash-loop delays: 10 s doubling to 5 minutes, reset after
    /// 10 minutes of running.
    pub const KUBELET: Backoff = Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };

    /// The delay before the `n`th consecutive restart (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What happened to a supervised container, in order.
#[derive(Debug)]
pub enum Event<'a> {
    /// A run started.
    Started,
    /// A run could not start; `error` says why.
    FailedToStart {
        /// Why.
        error: &'a str,
    },
    /// A run ended.
    Exited {
        /// How.
        status: &'a ExitStatus,
    },
    /// The program will be started again after `delay`.
    Restarting {
        /// The wait before the next run.
        delay: Duration,
        /// Restarts so far, this one included.
        restarts: u32,
    },
}

/// How supervision ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The program ended and the policy does not restart it.
    Exited(ExitStatus),
    /// The first run could not start.
    FailedToStart(String),
    /// A stop was asked for; the last run's status, if one ran.
    Stopped(Option<ExitStatus>),
}

/// The exit code reported for a run that could not start (docker's 125).
pub const START_FAILED_CODE: i32 = 125;

/// Runs a container under a restart policy.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor {
    /// When to start again.
    pub policy: RestartPolicy,
    /// How long to wait first.
    pub backoff: Backoff,
}

impl Supervisor {
    /// Starts the program with `start`, restarts it as the policy says, and
    /// returns when it ends for good or `stop` asks for it (a later
    /// [`KillMode::Immediate`] turns a graceful stop into an immediate one).
    /// `on_event` hears every step.
    ///
    /// `start` returns a future rather than being an async closure so that
    /// a supervisor borrowing its caller's state can run in a spawned
    /// (`Send`) task.
    pub async fn run<E: Display, F: Future<Output = Result<SandboxHandle, E>>>(
        &self,
        mut start: impl FnMut() -> F,
        stop: &mut watch::Receiver<Option<KillMode>>,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Ended {
        let mut restarts = 0u32;
        let mut step = 0u32;
        let mut last = None;
        loop {
            if stop.borrow().is_some() {
                return Ended::Stopped(last);
            }
            let began = Instant::now();
            let status = match start().await {
                Ok(handle) => {
                    on_event(Event::Started);
                    match run_once(&handle, stop).await {
                        Run::Ended(status) => status,
                        Run::Stopped(status) => {
                            on_event(Event::Exited { status: &status });
                            return Ended::Stopped(Some(status));
                        }
                    }
                }
                Err(error) => {
                    let error = error.to_string();
                    on_event(Event::FailedToStart { error: &error });
                    if restarts == 0 {
                        return Ended::FailedToStart(error);
                    }
                    ExitStatus {
                        code: START_FAILED_CODE,
                        reason: berth_runtime::ExitReason::Trapped { message: error },
                        returned: Vec::new(),
                        throttled: Duration::ZERO,
                    }
                }
            };
            on_event(Event::Exited { status: &status });
            if !self.policy.should_restart(status.code, restarts) {
                return Ended::Exited(status);
            }
            if began.elapsed() >= self.backoff.reset_after {
                step = 0;
            }
            step = step.saturating_add(1);
            restarts = restarts.saturating_add(1);
            let delay = self.backoff.delay(step);
            on_event(Event::Restarting { delay, restarts });
            last = Some(status);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(Option::is_some) => return Ended::Stopped(last),
            }
        }
    }
}

enum Run {
    Ended(ExitStatus),
    Stopped(ExitStatus),
}

/// Waits for one run to end, passing on stop requests.
async fn run_once(handle: &SandboxHandle, stop: &mut watch::Receiver<Option<KillMode>>) -> Run {
    let mut stopping = false;
    if let Some(mode) = *stop.borrow_and_update() {
        stopping = true;
        handle.kill(mode);
    }
    loop {
        tokio::select! {
            status = handle.wait() => {
                return if stopping { Run::Stopped(status) } else { Run::Ended(status) };
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    // Nobody can ask for a stop any more: just wait.
                    let status = handle.wait().await;
                    return if stopping { Run::Stopped(status) } else { Run::Ended(status) };
                }
                let asked = *stop.borrow_and_update();
                if let Some(mode) = asked {
                    stopping = true;
                    handle.kill(mode);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let backoff = Backoff::DOCKER;
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(800));
        assert_eq!(backoff.delay(8), Duration::from_secs(10));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(10));
        let kubelet = Backoff::KUBELET;
        assert_eq!(kubelet.delay(1), Duration::from_secs(10));
        assert_eq!(kubelet.delay(6), Duration::from_secs(300));
    }
}
