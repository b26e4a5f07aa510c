use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::spin::{Spinner, timeout_error};
use super::wait::{Slept, WaitCell};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::{self, ProcessId};

/// A process-shared mutex that survives its holder's death, plus an
/// "inconsistent" flag: plain words, no pointer.
///
/// # Words
///
/// | word | meaning |
/// |---|---|
/// | `owner` | 0: free; else the holder — its thread id (high 32 bits) and a tag of its process (low 32 bits: pid and start time, hashed) |
/// | `inconsistent` | see below; written and read only by the holder (Relaxed: the lock orders it) |
/// | `wait` | the [`WaitCell`] lockers sleep on |
///
/// Taking the lock is one compare-and-swap of `owner` from 0 (Acquire);
/// releasing it is a Release store of 0, a fence and a wake-up only if
/// someone sleeps ([`WaitCell::notify`]; SYNC POINT "wake": the locker
/// registers, then re-reads `owner`).
///
/// # A holder that dies
///
/// Nothing in the segment points anywhere: a holder is named by numbers a
/// locker checks against `/proc`, so bytes another process wrote there can
/// at worst make a lock look free or held by someone dead — never make a
/// process write through them. (glibc's robust mutexes, which ipckit used
/// before, keep the robust-list links of the holder's thread in the
/// segment, and unlocking writes through them.)
///
/// A locker that waited a slice (20 ms, doubling to 160 ms) with the same
/// holder recorded asks whether that thread still runs in the process the
/// tag names (`/proc/<tid>`); [`try_lock`](Self::try_lock), and a timed
/// lock about to give up, ask only the cheap half (does the thread exist,
/// one `kill(tid, 0)`). If not, it takes
/// the lock over with one compare-and-swap from the exact word it saw
/// (so one locker wins) and sets `inconsistent`, which stays set — and
/// every later locker is told the owner died — until a holder calls
/// [`mark_consistent`](RawMutex::mark_consistent). This is std's
/// poisoning, across processes. A thread that ends holding a lock (its
/// process living on) is found the same way. Thread ids are those of the
/// lockers' pid namespace: processes in different pid namespaces must not
/// share a lock.
///
/// A holder that *panics* while holding the lock poisons it the same way:
/// [`RawGuard`]'s drop, running during the unwind, stores
/// [`POISON_PANICKED`] before unlocking, so the next locker — a thread of
/// this process or another process — is told exactly as if the holder had
/// been killed (std's `Mutex` poisoning, across processes).
///
/// A lock is held by a thread: it must be released by the thread that took
/// it (guards are `!Send`), and a thread that locks it again is refused.
///
/// | `inconsistent` | meaning |
/// |---|---|
/// | 0 | the protected data is consistent |
/// | [`POISON_OWNER_DIED`] (1) | a holder died |
/// | [`POISON_PANICKED`] (2) | a holder panicked while holding the lock |
/// | anything else | written by a foreign or corrupt peer; treated as 1 |
///
/// Ordering: `owner` is taken with an Acquire CAS and released with a
/// Release store (SYNC POINT "lock"); every other load of it (the spin's
/// poll, the relock and holder checks, snapshots) is Relaxed, because it
/// only decides whether to try the CAS or check a holder — what it reads
/// orders nothing, and a stale value costs one more look.
#[repr(C, align(64))]
pub(crate) struct RawMutex {
    owner: AtomicU64,
    inconsistent: AtomicU32,
    _pad: u32,
    wait: WaitCell,
}

/// A [`RawMutex`] as seen from outside (see [`RawMutex::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockSnapshot {
    /// The holder's thread id, if the lock is held.
    pub owner_tid: Option<u32>,
    /// The holder's process tag (see [`tag_matches`](Self::tag_matches)):
    /// tells a recycled thread id from the holder.
    pub owner_tag: u32,
    /// A holder died and nobody has marked the data consistent yet.
    pub inconsistent: bool,
    /// Lockers registered as sleeping.
    pub waiters: u32,
}

impl LockSnapshot {
    /// Whether `process` is the one this snapshot's holder tag names.
    pub(crate) fn tag_matches(&self, process: ProcessId) -> bool {
        process_tag(process) == self.owner_tag
    }
}

/// `RawMutex::inconsistent`: a holder died.
pub(crate) const POISON_OWNER_DIED: u32 = 1;
/// `RawMutex::inconsistent`: a holder panicked while holding the lock.
pub(crate) const POISON_PANICKED: u32 = 2;

/// How long a locker sleeps before it first checks that the holder lives;
/// the slice doubles up to [`LAST_CHECK_SLICE`]. Measured: see
/// `docs/design-measurements.md`, "Lock holders are checked after a 20 ms
/// slice, not 1 ms".
const FIRST_CHECK_SLICE: Duration = Duration::from_millis(20);
const LAST_CHECK_SLICE: Duration = Duration::from_millis(160);

/// The result of acquiring a [`RawMutex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Locked {
    /// The data may be inconsistent: a previous holder died.
    pub owner_died: bool,
}

/// The low half of an `owner` word: the holder's process, hashed (never 0,
/// so an owner word is never 0 even for a thread id of 0).
fn process_tag(p: ProcessId) -> u32 {
    let h = crate::layout::fnv1a_continue(
        crate::layout::fnv1a(&p.pid.to_le_bytes()),
        &p.start_time.to_le_bytes(),
    );
    ((h >> 32) as u32 ^ h as u32) | 1
}

/// The calling thread's `owner` word: computed once per thread (and again
/// in a `fork` child, whose pid differs), since every lock and unlock asks
/// for it (hashing the process identity each time cost ~80 instructions
/// per call; callgrind, a 64 B queue put + get: 1 344 instructions with it,
/// see `docs/design-measurements.md`, "The lock's owner word, once per
/// thread").
#[inline]
fn me() -> u64 {
    thread_local! {
        static ME: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((0, 0)) };
    }
    platform::cached_per_thread(&ME, || {
        (u64::from(platform::current_tid()) << 32)
            | u64::from(process_tag(platform::current_process()))
    })
}

/// Whether the holder an `owner` word names still runs: its thread exists,
/// is not a zombie, and belongs to the process its tag names. When `/proc`
/// cannot tell, "alive".
fn holder_alive(word: u64) -> bool {
    match platform::thread_process((word >> 32) as u32) {
        Ok(Some(p)) => process_tag(p) == word as u32,
        Ok(None) => false,
        Err(_) => true,
    }
}

fn relock_error() -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        "this thread already holds the lock (locking it again would deadlock)",
    )
}

impl RawMutex {
    /// Initialises a mutex in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of `size_of::<RawMutex>()` bytes,
    /// aligned, and not in use by anyone as a mutex.
    pub(crate) unsafe fn init(this: *mut RawMutex) -> Result<()> {
        // SAFETY: the contract makes `this` valid, aligned and unused.
        unsafe {
            this.write(RawMutex {
                owner: AtomicU64::new(0),
                inconsistent: AtomicU32::new(0),
                _pad: 0,
                wait: WaitCell::new(),
            })
        };
        Ok(())
    }

    /// The lock is ours now: was a holder's death reported before?
    #[inline]
    fn acquired(&self) -> Locked {
        // Ordering: `inconsistent` is only accessed while holding the lock,
        // whose Acquire CAS and Release unlock order it; Relaxed suffices.
        Locked {
            owner_died: self.inconsistent.load(Ordering::Relaxed) != 0,
        }
    }

    /// Takes the lock from the dead holder `dead` (the exact word seen):
    /// one locker wins the CAS; it marks the data inconsistent.
    fn take_over(&self, dead: u64, me: u64) -> Option<Locked> {
        self.owner
            .compare_exchange(dead, me, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // Ordering: written while holding the lock, as `acquired` reads it.
        self.inconsistent
            .store(POISON_OWNER_DIED, Ordering::Relaxed);
        Some(Locked { owner_died: true })
    }

    #[inline]
    fn cas_free(&self, me: u64) -> bool {
        // SYNC POINT "lock": Acquire pairs with the Release store of 0 in
        // `unlock`: the last holder's writes happen-before ours.
        self.owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Tries to take the lock without blocking. A holder whose thread no
    /// longer exists is taken over (`owner_died`); one that is a zombie
    /// or a recycled thread id is found only by [`lock`](Self::lock).
    pub(crate) fn try_lock(&self) -> Result<Locked> {
        let me = me();
        if self.cas_free(me) {
            return Ok(self.acquired());
        }
        if let Some(l) = self.take_over_if_gone(me) {
            return Ok(l);
        }
        Err(Error::new(ErrorKind::WouldBlock, "the lock is held"))
    }

    /// Takes the lock over if the thread its holder word names no longer
    /// exists (one `kill(tid, 0)`).
    fn take_over_if_gone(&self, me: u64) -> Option<Locked> {
        let cur = self.owner.load(Ordering::Relaxed);
        if cur != 0 && cur != me && platform::thread_gone((cur >> 32) as u32) {
            return self.take_over(cur, me);
        }
        None
    }

    /// Takes the lock, waiting until `deadline` (forever if `None`).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        // The uncontended case: one compare-and-swap.
        let me = me();
        if self.cas_free(me) {
            return Ok(self.acquired());
        }
        self.lock_slow(me, deadline)
    }

    /// The contended path of [`lock`](Self::lock): poll, then sleep in
    /// slices, checking after each that the holder still lives.
    #[cold]
    fn lock_slow(&self, me: u64, deadline: Option<Instant>) -> Result<Locked> {
        if self.owner.load(Ordering::Relaxed) == me {
            return Err(relock_error());
        }
        // A holder on the other core usually releases within a few hundred
        // nanoseconds, far less than a futex sleep: poll the word read-only
        // and try the CAS only when it looks free.
        let mut spinner = Spinner::new();
        while spinner.spin() {
            if self.owner.load(Ordering::Relaxed) == 0 && self.cas_free(me) {
                return Ok(self.acquired());
            }
        }
        let mut slice = FIRST_CHECK_SLICE;
        loop {
            // SYNC POINT "wake": registered before we read `owner`, so an
            // unlock after our read sees the registration and wakes us.
            let ticket = self.wait.register();
            let held = self.owner.load(Ordering::Relaxed);
            let asleep_at = Instant::now();
            let slept = if held == 0 {
                Slept::Again
            } else {
                self.wait.sleep_at_most(&ticket, deadline, slice)
            };
            self.wait.deregister(ticket);
            if self.cas_free(me) {
                return Ok(self.acquired());
            }
            if slept == Slept::DeadlinePassed {
                // The cheap half of the holder check, last: a holder whose
                // thread is gone (what a `try_*` finds at once).
                if let Some(l) = self.take_over_if_gone(me) {
                    return Ok(l);
                }
                return Err(timeout_error("the lock"));
            }
            // The same holder after a whole slice asleep (no unlock woke
            // us; the word alone cannot tell, as a thread that unlocks and
            // locks again writes the same word): does it still run?
            let now = self.owner.load(Ordering::Relaxed);
            if held != 0 && now == held && asleep_at.elapsed() >= slice {
                if !holder_alive(now) {
                    if let Some(l) = self.take_over(now, me) {
                        return Ok(l);
                    }
                }
                slice = (slice * 2).min(LAST_CHECK_SLICE);
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread must hold the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // Only the holder unlocks (a `fork` child's copy of a guard, or a
        // lock taken over from us meanwhile, must not release it).
        if self.owner.load(Ordering::Relaxed) != me() {
            return;
        }
        // SYNC POINT "lock" (Release), then "wake": the barrier, then the
        // read of registrations. Fenced, not a `commit`: an unfenced
        // commit would make every locker that sleeps issue a membarrier
        // (several µs), while a lock's unlock follows its own locked CAS
        // anyway. The barrier is the release itself, a swap (a locked
        // instruction on x86_64, `notify_after_rmw`), not a store and a
        // fence: `mfence` cost more than `xchg`.
        self.owner.swap(0, Ordering::SeqCst);
        self.wait.notify_after_rmw(1);
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

    /// The thread id of the holder, if any (a snapshot).
    pub(crate) fn owner_tid(&self) -> Option<u32> {
        let w = self.owner.load(Ordering::Relaxed);
        (w != 0).then_some((w >> 32) as u32)
    }

    /// The holder, the "inconsistent" flag and the sleeping lockers, read
    /// without locking and without writing anything (a snapshot, for
    /// `ipckit::admin`).
    pub(crate) fn snapshot(&self) -> LockSnapshot {
        let w = self.owner.load(Ordering::Relaxed);
        LockSnapshot {
            owner_tid: (w != 0).then_some((w >> 32) as u32),
            owner_tag: w as u32,
            inconsistent: self.inconsistent.load(Ordering::Relaxed) != 0,
            waiters: self.wait.registered(),
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
/// poison). `!Send`: a lock is held by a thread.
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
