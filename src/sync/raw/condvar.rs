use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::mutex::{Locked, RawMutex};
use super::spin::{SLEEP_SLICE, deadline_passed, sleep_on};
use crate::error::Result;
use crate::platform;

/// A condition variable on a shared futex word (the algorithm of Rust std's
/// futex condvar, plus a waiter count so that notifying nobody is free).
///
/// | word | meaning |
/// |---|---|
/// | `seq` | bumped by every notify; waiters sleep while it is unchanged |
/// | `waiters` | processes between "about to sleep" and "awake"; a waiter killed while asleep leaves it one too high, which only costs later notifies a system call |
#[repr(C)]
pub(crate) struct RawCondvar {
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl RawCondvar {
    /// A fresh condition variable (all zeros).
    pub(crate) const fn new() -> RawCondvar {
        RawCondvar {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Atomically releases `mutex` and sleeps until notified (or a spurious
    /// wake-up, or `deadline`), then re-takes `mutex`. Returns the relock
    /// result and whether the deadline has passed.
    ///
    /// # Safety
    /// The calling thread must hold `mutex`.
    pub(crate) unsafe fn wait(
        &self,
        mutex: &RawMutex,
        deadline: Option<Instant>,
    ) -> (Result<Locked>, bool) {
        // Ordering: SeqCst on `waiters` and `seq` here and in `notify`. Either
        // the notifier's load of `waiters` sees our increment (and it wakes
        // us), or our load of `seq` comes after its bump (and FUTEX_WAIT
        // refuses to sleep). SYNC POINT "condvar".
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.seq.load(Ordering::SeqCst);
        // SAFETY: the caller holds `mutex`.
        unsafe { mutex.unlock() };
        sleep_on(&self.seq, seq, deadline, SLEEP_SLICE);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        let relock = mutex.lock(None);
        (relock, deadline_passed(deadline))
    }

    /// Wakes one waiter.
    pub(crate) fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    fn notify(&self, n: u32) {
        // SYNC POINT "condvar" (see `wait`).
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            platform::futex_wake(&self.seq, n);
        }
    }
}
