//! The two signals between a sandbox's task and its handles, made to cost
//! no allocation and (in the usual case) no lock per sandbox: the kill a
//! handle asks for ([`KillSignal`]) and the end the task reports
//! ([`EndSignal`]).
//!
//! Both are fields of the state a task shares with its handles. A watch
//! channel or a bare `Notify` did the same jobs, but a watch allocates and
//! broadcasts to eight queues when its sender drops, and a `Notify` takes
//! its lock to register, to wake and to deregister each waiter: a
//! noticeable share of starting a small sandbox.

use std::future::poll_fn;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering, fence};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

use crate::handle::{ExitStatus, KillMode};

/// The strongest kill asked for so far, and the waker of the one task that
/// listens for it (the sandbox's own).
pub(crate) struct KillSignal {
    /// 0: none; otherwise [`KillSignal::code`] of the mode.
    mode: AtomicU8,
    listener: AtomicWaker,
}

impl KillSignal {
    pub(crate) const fn new() -> Self {
        KillSignal {
            mode: AtomicU8::new(0),
            listener: AtomicWaker::new(),
        }
    }

    const fn code(mode: KillMode) -> u8 {
        match mode {
            KillMode::Graceful => 1,
            KillMode::Immediate => 2,
        }
    }

    /// Asks for `mode`; only a stronger kill than any asked before wakes
    /// the listener.
    pub(crate) fn ask(&self, mode: KillMode) {
        let code = Self::code(mode);
        if self.mode.fetch_max(code, Ordering::AcqRel) < code {
            self.listener.wake();
        }
    }

    /// The strongest kill asked for, if any.
    pub(crate) fn asked(&self) -> Option<KillMode> {
        match self.mode.load(Ordering::Acquire) {
            0 => None,
            1 => Some(KillMode::Graceful),
            _ => Some(KillMode::Immediate),
        }
    }

    /// Resolves with the strongest kill asked once one at least as strong
    /// as `least` is; never if none ever is. One task listens at a time:
    /// a later listener replaces an earlier one's waker.
    pub(crate) async fn at_least(&self, least: KillMode) -> KillMode {
        poll_fn(|cx| {
            let asked = |signal: &Self| signal.asked().filter(|mode| *mode >= least);
            if let Some(mode) = asked(self) {
                return Poll::Ready(mode);
            }
            self.listener.register(cx.waker());
            // Asked between the check and the registration: the waker may
            // have been woken before it was there.
            match asked(self) {
                Some(mode) => Poll::Ready(mode),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// How a sandbox ended, set once by its task and read by every handle.
///
/// The first handle to wait keeps its waker in a slot of its own (nearly
/// always the only waiter); any other waits on a `Notify`, which the task
/// only touches if someone ever waited there.
pub(crate) struct EndSignal {
    status: OnceLock<ExitStatus>,
    first: AtomicWaker,
    /// Whether a waiter holds `first`.
    first_taken: AtomicBool,
    others: Notify,
    /// Whether anyone ever waited on `others`.
    others_used: AtomicBool,
}

/// Frees [`EndSignal::first`] for a later waiter when its waiter is done
/// or dropped.
struct FirstSlot<'a>(&'a AtomicBool);

impl Drop for FirstSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl EndSignal {
    pub(crate) const fn new() -> Self {
        EndSignal {
            status: OnceLock::new(),
            first: AtomicWaker::new(),
            first_taken: AtomicBool::new(false),
            others: Notify::const_new(),
            others_used: AtomicBool::new(false),
        }
    }

    /// How it ended, if it has.
    pub(crate) fn get(&self) -> Option<&ExitStatus> {
        self.status.get()
    }

    /// Records how it ended, unless that is known already; does not wake
    /// anyone (see [`EndSignal::wake`]).
    pub(crate) fn set_if_unset(&self, status: impl FnOnce() -> ExitStatus) {
        self.status.get_or_init(status);
    }

    /// Wakes every waiter; call after [`EndSignal::set_if_unset`].
    pub(crate) fn wake(&self) {
        self.first.wake();
        // Pairs with the fence in `wait`: either that waiter sees the
        // status, or this sees that it waits.
        fence(Ordering::SeqCst);
        if self.others_used.load(Ordering::Relaxed) {
            self.others.notify_waiters();
        }
    }

    /// Waits until the status is set and returns it.
    pub(crate) async fn wait(&self) -> ExitStatus {
        if let Some(status) = self.status.get() {
            return status.clone();
        }
        if !self.first_taken.swap(true, Ordering::Acquire) {
            let _slot = FirstSlot(&self.first_taken);
            return poll_fn(|cx| {
                self.first.register(cx.waker());
                match self.status.get() {
                    Some(status) => Poll::Ready(status.clone()),
                    None => Poll::Pending,
                }
            })
            .await;
        }
        self.others_used.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        loop {
            let ended = self.others.notified();
            let mut ended = std::pin::pin!(ended);
            // Registered before the status is read, so that an end
            // reported in between still wakes this waiter.
            ended.as_mut().enable();
            if let Some(status) = self.status.get() {
                return status.clone();
            }
            ended.await;
        }
    }
}
