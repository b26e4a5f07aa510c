use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::spin::{deadline_passed, spin_until, timeout_error};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::{self, PthreadLocked};

/// A robust, process-shared, error-checking pthread mutex plus an
/// "inconsistent" flag.
///
/// Robustness comes from the kernel: glibc registers the mutex on the owning
/// thread's robust futex list, and when that thread dies — SIGKILL included —
/// the kernel marks the lock word `FUTEX_OWNER_DIED` and wakes a waiter, whose
/// lock call returns `EOWNERDEAD`. We then immediately call
/// `pthread_mutex_consistent` (so the mutex itself never becomes
/// unrecoverable) and set `inconsistent`, which stays set — and every later
/// locker is told the owner died — until a holder calls
/// [`mark_consistent`](RawMutex::mark_consistent). This is std's poisoning,
/// across processes.
///
/// A holder that *panics* while holding the lock poisons it the same way:
/// [`RawGuard`]'s drop, running during the unwind, stores
/// [`POISON_PANICKED`] before unlocking, so the next locker — a thread of
/// this process or another process — is told exactly as if the holder had
/// been killed (std's `Mutex` poisoning, across processes).
///
/// Because glibc tracks the owner per thread, a lock must be released by the
/// thread that took it: guards are `!Send`.
///
/// | `inconsistent` | meaning |
/// |---|---|
/// | 0 | the protected data is consistent |
/// | [`POISON_OWNER_DIED`] (1) | a holder died (the kernel reported `EOWNERDEAD`) |
/// | [`POISON_PANICKED`] (2) | a holder panicked while holding the lock |
/// | anything else | written by a foreign or corrupt peer; treated as 1 |
///
/// Written and read only while holding the lock (Relaxed: the mutex orders it).
#[repr(C, align(64))]
pub(crate) struct RawMutex {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    inconsistent: AtomicU32,
}

// SAFETY: all access to the pthread mutex goes through pthread calls, which
// are thread-safe for a process-shared mutex; the flag is atomic.
unsafe impl Sync for RawMutex {}
// SAFETY: as above; the type holds no thread-affine state itself.
unsafe impl Send for RawMutex {}

/// A [`RawMutex`] as seen from outside (see [`RawMutex::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockSnapshot {
    /// The pthread lock word (see `platform::pthread_mutex_word`).
    pub word: u32,
    /// A holder died and nobody has marked the data consistent yet.
    pub inconsistent: bool,
}

/// `RawMutex::inconsistent`: a holder died.
pub(crate) const POISON_OWNER_DIED: u32 = 1;
/// `RawMutex::inconsistent`: a holder panicked while holding the lock.
pub(crate) const POISON_PANICKED: u32 = 2;

/// The result of acquiring a [`RawMutex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Locked {
    /// The data may be inconsistent: a previous holder died.
    pub owner_died: bool,
}

impl RawMutex {
    /// Initialises a mutex in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of `size_of::<RawMutex>()` bytes,
    /// aligned, and not in use by anyone as a mutex.
    pub(crate) unsafe fn init(this: *mut RawMutex) -> Result<()> {
        // SAFETY: the contract makes `this` valid and unused; we only form
        // raw pointers to its fields.
        unsafe {
            let m = std::ptr::addr_of_mut!((*this).mutex) as *mut libc::pthread_mutex_t;
            platform::pthread_mutex_init_robust(m)
                .map_err(|e| Error::io("cannot initialise mutex", e))?;
            std::ptr::addr_of_mut!((*this).inconsistent).write(AtomicU32::new(0));
        }
        Ok(())
    }

    #[inline]
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get()
    }

    #[inline]
    fn acquired(&self, how: PthreadLocked) -> Locked {
        // Ordering: `inconsistent` is only accessed while holding the mutex,
        // whose lock/unlock provide the synchronisation; Relaxed suffices.
        if how == PthreadLocked::OwnerDied {
            self.inconsistent
                .store(POISON_OWNER_DIED, Ordering::Relaxed);
            return Locked { owner_died: true };
        }
        Locked {
            owner_died: self.inconsistent.load(Ordering::Relaxed) != 0,
        }
    }

    fn lock_error(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ETIMEDOUT) => timeout_error("the lock"),
            Some(libc::EBUSY) => Error::new(ErrorKind::WouldBlock, "the lock is held"),
            Some(libc::EDEADLK) => Error::new(
                ErrorKind::LimitExceeded,
                "this thread already holds the lock (locking it again would deadlock)",
            ),
            Some(libc::ENOTRECOVERABLE) => Error::new(
                ErrorKind::Corrupt,
                "the lock is not recoverable (an owner died and it was unlocked without recovery)",
            ),
            _ => Error::io("cannot lock", e),
        }
    }

    /// Tries to take the lock without blocking.
    pub(crate) fn try_lock(&self) -> Result<Locked> {
        // SAFETY: the mutex was initialised by `init` and lives in a mapping
        // that outlives `&self`.
        unsafe { platform::pthread_mutex_trylock(self.raw()) }
            .map(|h| self.acquired(h))
            .map_err(Self::lock_error)
    }

    /// Takes the lock, waiting until `deadline` (forever if `None`).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        // The uncontended case: one compare-and-swap.
        // SAFETY: as in `try_lock`.
        if let Ok(how) = unsafe { platform::pthread_mutex_trylock(self.raw()) } {
            return Ok(self.acquired(how));
        }
        self.lock_slow(deadline)
    }

    /// The contended path of [`lock`](Self::lock): spin, then sleep.
    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<Locked> {
        // Spin briefly first: a holder on the other core usually releases
        // within a few hundred nanoseconds, far less than a futex sleep.
        let mut first_error = None;
        let mut got = None;
        spin_until(|| {
            // Poll the lock word read-only; only try the CAS when it looks free.
            if self.owner_tid().is_some() {
                return false;
            }
            match self.try_lock() {
                Ok(l) => {
                    got = Some(l);
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(e) => {
                    first_error = Some(e);
                    true
                }
            }
        });
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(l) = got {
            return Ok(l);
        }
        if deadline_passed(deadline) {
            return Err(timeout_error("the lock"));
        }
        // SAFETY: as in `try_lock`.
        unsafe { platform::pthread_mutex_lock(self.raw(), deadline) }
            .map(|h| self.acquired(h))
            .map_err(Self::lock_error)
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock. An error-checking mutex reports
        // misuse instead of corrupting itself; there is nothing useful to do
        // with such an error in a guard's Drop.
        let _ = unsafe { platform::pthread_mutex_unlock(self.raw()) };
    }

    /// Marks the protected data consistent again. Call only while holding the lock.
    pub(crate) fn mark_consistent(&self) {
        self.inconsistent.store(0, Ordering::Relaxed);
    }

    /// Marks the protected data inconsistent because its holder panicked.
    /// Call only while holding the lock (the unlock that follows publishes it).
    #[cold]
    fn poison(&self) {
        self.inconsistent.store(POISON_PANICKED, Ordering::Relaxed);
    }

    /// The TID of the thread holding the lock, if any (a snapshot).
    pub(crate) fn owner_tid(&self) -> Option<u32> {
        platform::pthread_mutex_owner(self.raw())
    }

    /// The lock word and the "inconsistent" flag, read without locking and
    /// without writing anything (a snapshot, for `ipckit::admin`).
    pub(crate) fn snapshot(&self) -> LockSnapshot {
        LockSnapshot {
            word: platform::pthread_mutex_word(self.raw()),
            inconsistent: self.inconsistent.load(Ordering::Relaxed) != 0,
        }
    }
}

/// Proof that this thread holds a [`RawMutex`]: unlocks it on drop.
///
/// Every holder of an ipckit lock — `MutexGuard`, the containers' and the
/// queue's internal guards — holds one, so poisoning is written once: a
/// guard dropped while its thread unwinds from a panic that started *after*
/// the lock was taken marks the lock [`POISON_PANICKED`] before unlocking
/// (std's rule: a guard taken during an unwind, in some `Drop`, does not
/// poison). `!Send`: glibc tracks a robust mutex's owner per thread.
pub(crate) struct RawGuard<'a> {
    raw: &'a RawMutex,
    /// Whether this thread was already panicking when it took the lock.
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RawGuard<'a> {
    /// Wraps a lock the calling thread has just taken.
    ///
    /// # Safety
    /// The calling thread must hold `raw`, and nothing else may unlock it.
    #[inline]
    pub(crate) unsafe fn new(raw: &'a RawMutex) -> RawGuard<'a> {
        RawGuard {
            raw,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        }
    }

    /// The lock held.
    #[inline]
    pub(crate) fn raw(&self) -> &'a RawMutex {
        self.raw
    }

    /// Declares the protected data consistent again (after a repair).
    pub(crate) fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }

    /// Gives the lock up without unlocking it: for a condition variable's
    /// relock that failed, when the thread no longer holds the lock.
    pub(crate) fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for RawGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.raw.poison();
        }
        // SAFETY: a RawGuard exists only while this thread holds the lock
        // (the contract of `new`; not Send; dropped once).
        unsafe { self.raw.unlock() };
    }
}
