//! Raw process-shared primitives: plain `#[repr(C)]` words that live inside a
//! segment. They hold no pointers and no per-process state, so any process
//! that maps the segment can use them. The typed objects of [`crate::sync`],
//! values and arrays, the queue's ring and the collections embed them.
//!
//! Blocking: spin only while spinning can pay, then sleep on a shared
//! futex word; when nobody sleeps, waking costs no system call.
//!
//! # Crash windows and sleep slices
//!
//! Every "commit, then wake" pair has a window: a process killed after its
//! committing store but before its `futex_wake` leaves sleepers unwoken. So
//! no sleep here is unbounded: sleepers wake at least every [`SLEEP_SLICE`]
//! and re-check the committed state. After a crash in that window waiters
//! continue within one slice; otherwise the slice costs one wake-up per
//! second per sleeping waiter.

mod barrier;
mod condvar;
mod event;
mod mutex;
mod semaphore;
mod spin;
mod wait;

pub(crate) use barrier::{BarrierOutcome, RawBarrier};
pub(crate) use condvar::RawCondvar;
pub(crate) use event::RawEvent;
pub(crate) use mutex::{LockSnapshot, Locked, RawGuard, RawMutex};
pub(crate) use semaphore::{PermitSlot, RawSemaphore, SemRef, UNBOUNDED};
pub(crate) use spin::{Spinner, deadline_passed, machine_busy, spin_allowed};
pub(crate) use wait::{Spin, WaitCell};
