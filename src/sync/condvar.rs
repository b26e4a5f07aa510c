use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::mutex::{MutexGuard, unreachable_init};
use super::raw::RawCondvar;
use super::{LockError, LockResult, handle_serde, placed_handle, plain_constructors};
use crate::deadline::deadline_after;
use crate::error::Result;
use crate::layout::TypeFingerprint;
use crate::layout::header::ObjectKind;
use crate::segment::Segment;
use crate::segment::object::{self, Location, Placement, Spec};

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
pub struct Condvar {
    pub(crate) place: Placement,
    raw: NonNull<RawCondvar>,
}

placed_handle!(Condvar);

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            .field("object", &self.place.describe())
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

const PAYLOAD: usize = object::payload_offset(std::mem::align_of::<RawCondvar>());

impl Condvar {
    /// Bytes a `Condvar` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        PAYLOAD + std::mem::size_of::<RawCondvar>()
    }

    fn spec() -> Spec {
        Spec {
            kind: ObjectKind::Condvar,
            ty: TypeFingerprint::NONE,
            param: 0,
            total_len: Self::size_in_segment(),
            align: crate::layout::header::HEADER_ALIGN,
        }
    }

    fn locate(loc: Location<'_>, create: bool) -> Result<Condvar> {
        let place = object::locate(
            loc,
            Self::spec(),
            |base| {
                if !create {
                    return unreachable_init();
                }
                // SAFETY: the payload region is inside the object and ours
                // during initialisation; PAYLOAD is suitably aligned.
                unsafe { (base.add(PAYLOAD) as *mut RawCondvar).write(RawCondvar::new()) };
                Ok(())
            },
            |_| Some(Self::size_in_segment()),
        )?;
        let raw = NonNull::new(place.ptr(PAYLOAD) as *mut RawCondvar).expect("mapped");
        Ok(Condvar { place, raw })
    }

    plain_constructors!("condition variable");

    fn raw(&self) -> &RawCondvar {
        // SAFETY: points into the mapping held by `self.place`, initialised
        // before publication; RawCondvar is all atomics.
        unsafe { self.raw.as_ref() }
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
        // the guard must not unlock in between, so it is taken apart and rebuilt.
        let (raw_mutex, data) = guard.into_raw_parts();
        // SAFETY: the guard proved this thread holds `raw_mutex`.
        let (relock, timed_out) = unsafe { self.raw().wait(raw_mutex, deadline) };
        let result = WaitTimeoutResult(timed_out);
        match relock {
            Ok(locked) => {
                let guard = MutexGuard::new(raw_mutex, data);
                if locked.owner_died {
                    Err(LockError::OwnerDied((guard, result)))
                } else {
                    Ok((guard, result))
                }
            }
            // Relocking failed: we do not hold the lock, so there is no guard.
            Err(e) => Err(LockError::Failed(e)),
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

handle_serde!(Condvar);
