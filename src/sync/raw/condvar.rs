use std::time::Instant;

use super::mutex::{Locked, RawMutex};
use super::spin::deadline_passed;
use super::wait::WaitCell;
use crate::error::Result;

/// A condition variable: the algorithm of Rust std's futex condvar, on the
/// crate's one waiting primitive ([`WaitCell`]), so that notifying nobody is
/// free, a waiter polls briefly before it sleeps (a notify then makes no
/// system call), and a waiter killed while asleep costs at most one
/// fruitless wake-up (the cell repairs its registrations).
#[repr(C)]
pub(crate) struct RawCondvar {
    cell: WaitCell,
}

impl RawCondvar {
    /// A fresh condition variable.
    pub(crate) fn new() -> RawCondvar {
        RawCondvar {
            cell: WaitCell::new(),
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
        // SYNC POINT "wake" (sync::raw::wait): registered while holding the
        // mutex, so a notifier that takes the mutex after we release it
        // sees the registration; one that notifies before changes `seq`
        // after our read of it, and we do not sleep.
        // It registers as a spinner: a notifier on another CPU usually comes
        // within microseconds, far sooner than a futex sleep and wake-up
        // (see "Spinners" in `sync::raw::wait`).
        let mut ticket = self.cell.register_spinner();
        // SAFETY: the caller holds `mutex`.
        unsafe { mutex.unlock() };
        self.cell.spin_then_sleep(&mut ticket, deadline);
        self.cell.deregister(ticket);
        let relock = mutex.lock(None);
        (relock, deadline_passed(deadline))
    }

    /// Wakes one waiter.
    pub(crate) fn notify_one(&self) {
        self.cell.notify(1);
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        self.cell.notify(u32::MAX);
    }
}
