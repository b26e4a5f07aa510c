use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::mutex::MutexGuard;
use super::raw::RawCondvar;
use super::{LockError, LockResult};
use crate::deadline::deadline_after;
use crate::error::Result;
use crate::layout::header::ObjectKind;
use crate::object::{Create, Layout, Object, Open, Uninit, fixed_len};
use crate::segment::Segment;

/// The layout of a [`Condvar`]: a header and a [`RawCondvar`].
pub(crate) struct CondvarLayout;

// SAFETY: RawCondvar is a WaitCell, atomic words: repr(C), any bits valid, accessed
// only atomically. The default length covers it.
unsafe impl Layout for CondvarLayout {
    type Shared = RawCondvar;
    const KIND: ObjectKind = ObjectKind::Condvar;
}

/// A condition variable shared between processes, used with a
/// [`Mutex`](super::Mutex) (Python's `Condition` is a `Mutex` plus a `Condvar`).
///
/// As with `std::sync::Condvar`, waits may wake spuriously: wait in a loop on
/// the condition, or use [`wait_while`](Condvar::wait_while). Use one condvar
/// with one mutex.
///
/// A waiter killed while waiting wedges nobody: it simply stops waiting. A
/// waiter that is woken and then finds the mutex's previous holder dead gets
/// [`LockError::OwnerDied`] with its guard back.
///
/// `notify_one`/`notify_all` with no waiter make no system call.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Condvar {
    object: Object<CondvarLayout>,
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            .field("object", &self.object.describe())
            .finish_non_exhaustive()
    }
}

/// Whether a timed wait returned because its deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the deadline had passed when the wait returned.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// Bytes a `Condvar` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        fixed_len::<RawCondvar>()
    }

    fn init(mem: Uninit<CondvarLayout>) -> Result<()> {
        // SAFETY: the shared state's place is inside the new object,
        // aligned, and exclusively ours until it is published.
        unsafe { mem.shared().write(RawCondvar::new()) };
        Ok(())
    }

    fn create_at(at: Create<'_>) -> Result<Condvar> {
        Object::create(at, 0, Self::init).map(|object| Condvar { object })
    }

    /// Creates a named condition variable; fails if the name exists.
    pub fn create(name: &str) -> Result<Condvar> {
        Self::create_at(Create::Named(name))
    }

    /// Opens a named condition variable.
    pub fn open(name: &str) -> Result<Condvar> {
        Object::open(Open::Named(name)).map(|object| Condvar { object })
    }

    /// Opens the named condition variable, or creates it.
    pub fn open_or_create(name: &str) -> Result<Condvar> {
        Object::open_or_create(name, 0, Self::init).map(|object| Condvar { object })
    }

    /// Creates an anonymous condition variable.
    pub fn new() -> Result<Condvar> {
        Self::create_at(Create::Anonymous)
    }

    /// Creates a condition variable at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize) -> Result<Condvar> {
        Self::create_at(Create::In(segment, offset))
    }

    /// Opens the condition variable at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Condvar> {
        Object::open(Open::In(segment, offset)).map(|object| Condvar { object })
    }

    fn raw(&self) -> &RawCondvar {
        self.object.shared()
    }

    /// Releases the guard's lock, sleeps until notified, and re-takes the lock.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.wait_inner(guard, None)
            .map(|(g, _)| g)
            .map_err(|e| e.map(|(g, _)| g))
    }

    /// Waits while `condition` holds, re-checking after every wake-up.
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<MutexGuard<'a, T>> {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Like [`wait`](Self::wait), but gives up after `timeout`.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.wait_inner(guard, deadline_after(timeout))
    }

    /// Like [`wait`](Self::wait), but gives up at `deadline`.
    pub fn wait_deadline<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.wait_inner(guard, Some(deadline))
    }

    /// Waits while `condition` holds, until `timeout`; the result tells
    /// whether it returned because time ran out (with the condition still true).
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let deadline = deadline_after(timeout);
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((guard, WaitTimeoutResult(true)));
            }
            guard = self.wait_inner(guard, deadline)?.0;
        }
    }

    fn wait_inner<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        // The lock is released inside `wait` and re-taken before it returns;
        // the guard stays alive meanwhile (it is not dropped, so it does not
        // unlock) and keeps its poisoning state.
        // SAFETY: the guard proves this thread holds the lock.
        let (relock, timed_out) = unsafe { self.raw().wait(guard.raw.raw(), deadline) };
        let result = WaitTimeoutResult(timed_out);
        match relock {
            Ok(locked) if locked.owner_died => Err(LockError::OwnerDied((guard, result))),
            Ok(_) => Ok((guard, result)),
            // Relocking failed: we do not hold the lock, so there is no guard.
            Err(e) => {
                guard.forget();
                Err(LockError::Failed(e))
            }
        }
    }

    /// Wakes one waiting process (or thread).
    pub fn notify_one(&self) {
        self.raw().notify_one();
    }

    /// Wakes every waiting process (or thread).
    pub fn notify_all(&self) {
        self.raw().notify_all();
    }
}
