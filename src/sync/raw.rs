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

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::platform::{self, ProcessId, PthreadLocked};

/// Longest uninterrupted futex sleep (see the module docs).
pub(crate) const SLEEP_SLICE: Duration = Duration::from_secs(1);

/// Sleeps on `word` while it equals `expected`, until `deadline`, for at most
/// one slice. Returns `false` if the deadline has passed.
fn sleep_on(word: &AtomicU32, expected: u32, deadline: Option<Instant>, slice: Duration) -> bool {
    let timeout = match platform::remaining(deadline) {
        Some(d) if d.is_zero() => return false,
        Some(d) => d.min(slice),
        None => slice,
    };
    let _ = platform::futex_wait(word, expected, Some(timeout));
    true
}

/// How many times a lock polls before it sleeps: std's futex mutex budget.
/// Locks are held briefly; a holder that is descheduled should not be
/// waited for by spinning.
const SPIN_LIMIT: u32 = 100;

/// Whether spinning can help: not in a process confined to one CPU, where
/// the spinner only delays whatever it waits for. Read once per process.
/// Measured: see `docs/design-measurements.md`, "No spinning in a process
/// confined to one CPU".
pub(crate) fn spin_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Spins (without system calls) until `cond` holds or the lock spin budget is
/// used up; returns whether `cond` held.
fn spin_until(mut cond: impl FnMut() -> bool) -> bool {
    let limit = if spin_allowed() { SPIN_LIMIT } else { 0 };
    for _ in 0..limit {
        if cond() {
            return true;
        }
        std::hint::spin_loop();
    }
    cond()
}

/// How long a waiter for another process's *action* (an event set, a queue
/// message, a barrier's last arrival) polls before it sleeps: about the cost
/// of a futex sleep and wake-up on the project machine, the classic
/// "spin for as long as blocking would cost" rule, which is never worse than
/// twice the better choice. Measured: see `docs/design-measurements.md`,
/// "How long a waiter polls before it sleeps".
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(25);

/// A bounded spin: `spin()` pauses and says whether the budget allows
/// another poll. It reads the clock only every 32 polls and backs off to
/// 16 pauses between polls, so the polled line is left to its writer.
pub(crate) struct Spinner {
    start: Option<Instant>,
    polls: u32,
}

impl Spinner {
    pub(crate) fn new() -> Spinner {
        Spinner {
            start: None,
            polls: 0,
        }
    }

    /// Pauses; `false` once [`WAIT_SPIN`] has passed since the first call.
    pub(crate) fn spin(&mut self) -> bool {
        if !spin_allowed() {
            return false;
        }
        self.polls += 1;
        if self.polls % 32 == 1 {
            let now = Instant::now();
            let start = *self.start.get_or_insert(now);
            if now.duration_since(start) >= WAIT_SPIN {
                return false;
            }
        }
        for _ in 0..(1u32 << (self.polls / 64).min(4)) {
            std::hint::spin_loop();
        }
        true
    }
}

/// Spins until `cond` holds or the wait spin budget is used up.
fn spin_wait(mut cond: impl FnMut() -> bool) -> bool {
    let mut spinner = Spinner::new();
    loop {
        if cond() {
            return true;
        }
        if !spinner.spin() {
            return cond();
        }
    }
}

fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn timeout_error(what: &str) -> Error {
    Error::new(ErrorKind::Timeout, format!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------
// RawMutex
// ---------------------------------------------------------------------------

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

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get()
    }

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
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked> {
        // The uncontended case: one compare-and-swap.
        // SAFETY: as in `try_lock`.
        if let Ok(how) = unsafe { platform::pthread_mutex_trylock(self.raw()) } {
            return Ok(self.acquired(how));
        }
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

// ---------------------------------------------------------------------------
// RawCondvar
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// RawEvent
// ---------------------------------------------------------------------------

const EV_CLEAR: u32 = 0;
const EV_SET: u32 = 1;
const EV_SLEEPERS: u32 = 2;

/// A manual-reset event on one futex word.
///
/// | state | meaning |
/// |---|---|
/// | 0 | clear, nobody sleeping |
/// | 1 | set |
/// | 2 | clear, and someone may be sleeping: `set` must wake |
///
/// A sleeper killed while asleep leaves state 2, which only costs the next
/// `set` one system call. `set` is a Release swap, waiters see it with an
/// Acquire load: SYNC POINT "event".
#[repr(C)]
pub(crate) struct RawEvent {
    state: AtomicU32,
}

impl RawEvent {
    pub(crate) const fn new() -> RawEvent {
        RawEvent {
            state: AtomicU32::new(EV_CLEAR),
        }
    }

    pub(crate) fn set(&self) {
        if self.state.swap(EV_SET, Ordering::Release) == EV_SLEEPERS {
            platform::futex_wake(&self.state, u32::MAX);
        }
    }

    pub(crate) fn clear(&self) {
        // From SLEEPERS there is nothing to do: the event is already clear.
        let _ = self
            .state
            .compare_exchange(EV_SET, EV_CLEAR, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == EV_SET
    }

    /// Waits until set; `false` if `deadline` passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        if spin_wait(|| self.is_set()) {
            return true;
        }
        loop {
            match self.state.load(Ordering::Acquire) {
                EV_SET => return true,
                EV_CLEAR
                    if self
                        .state
                        .compare_exchange(
                            EV_CLEAR,
                            EV_SLEEPERS,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_err() =>
                {
                    continue;
                }
                _ => {}
            }
            if !sleep_on(&self.state, EV_SLEEPERS, deadline, SLEEP_SLICE) {
                return self.is_set();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// RawSemaphore
// ---------------------------------------------------------------------------

/// One record of "process P holds N permits", so that permits of a process
/// that dies are given back.
#[repr(C)]
pub(crate) struct HolderSlot {
    pid: AtomicU32,
    _pad: u32,
    start_time: AtomicU64,
    held: AtomicU64,
}

/// The undo record of the one multi-word update in progress (see [`RawSemaphore`]).
#[repr(C)]
struct Journal {
    active: AtomicU32,
    slot: AtomicU32,
    prev_count: AtomicU64,
    prev_pid: AtomicU32,
    _pad: u32,
    prev_start: AtomicU64,
    prev_held: AtomicU64,
}

/// Value of `max` meaning "unbounded".
pub(crate) const UNBOUNDED: u64 = u64::MAX;

/// A counting semaphore whose permits are given back when their holder dies.
///
/// State lives under a robust [`RawMutex`]: `count` (available permits) and a
/// table of [`HolderSlot`]s that follows the struct in memory. An update that
/// touches more than one word (count and a slot) first writes an undo record
/// (`journal`), sets `journal.active`, applies the change, then clears
/// `active`. A process that dies mid-update leaves `active` set; the next
/// locker gets `EOWNERDEAD`, restores the recorded words and so sees the state
/// from before the update — the dead process's permits then come back through
/// the normal dead-holder scan. Stores inside the critical section are
/// Release so they cannot be reordered before the journal that describes them.
///
/// Waiters sleep on `seq`, which every release bumps. A waiter that finds no
/// permit scans the holder table for dead processes (outside the lock), and
/// re-scans every time its sleep slice ends, so the permits of a SIGKILLed
/// holder come back within about half a second.
#[repr(C)]
pub(crate) struct RawSemaphore {
    lock: RawMutex,
    seq: AtomicU32,
    sleepers: AtomicU32,
    count: AtomicU64,
    max: AtomicU64,
    nslots: AtomicU32,
    _pad: u32,
    journal: Journal,
    // followed by `nslots` HolderSlots
}

/// Where a permit is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PermitSlot {
    /// In holder slot `n`.
    Tracked(u32),
    /// Not recorded (the holder table was full); not recovered on a crash.
    Untracked,
}

const SEM_SLICE_MIN: Duration = Duration::from_millis(10);
const SEM_SLICE_MAX: Duration = Duration::from_millis(500);

impl RawSemaphore {
    /// Bytes needed for a semaphore with `nslots` holder slots.
    pub(crate) fn size_for(nslots: u32) -> Option<usize> {
        (nslots as usize)
            .checked_mul(std::mem::size_of::<HolderSlot>())?
            .checked_add(std::mem::size_of::<RawSemaphore>())
    }

    /// Initialises a semaphore in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of `size_for(nslots)` bytes, aligned,
    /// and not in use.
    pub(crate) unsafe fn init(
        this: *mut RawSemaphore,
        initial: u64,
        max: u64,
        nslots: u32,
    ) -> Result<()> {
        // SAFETY: per the contract the whole region is ours to initialise.
        unsafe {
            RawMutex::init(std::ptr::addr_of_mut!((*this).lock))?;
            std::ptr::addr_of_mut!((*this).seq).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*this).sleepers).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*this).count).write(AtomicU64::new(initial));
            std::ptr::addr_of_mut!((*this).max).write(AtomicU64::new(max));
            std::ptr::addr_of_mut!((*this).nslots).write(AtomicU32::new(nslots));
            std::ptr::addr_of_mut!((*this).journal).write_bytes(0, 1);
            let slots =
                (this as *mut u8).add(std::mem::size_of::<RawSemaphore>()) as *mut HolderSlot;
            slots.write_bytes(0, nslots as usize);
        }
        Ok(())
    }

    /// The slot count recorded in shared memory (validated against the
    /// header by the opener, then never trusted again: see [`SemRef`]).
    pub(crate) fn nslots(&self) -> u32 {
        self.nslots.load(Ordering::Relaxed)
    }

    /// Current number of available permits.
    pub(crate) fn value(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The bound, or [`UNBOUNDED`].
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

/// A [`RawSemaphore`] together with its slot count as validated when the
/// object was opened. The count in shared memory could be overwritten by a
/// faulty process; indexing always uses this private copy.
#[derive(Clone, Copy)]
pub(crate) struct SemRef<'a> {
    raw: &'a RawSemaphore,
    nslots: usize,
}

impl std::ops::Deref for SemRef<'_> {
    type Target = RawSemaphore;
    fn deref(&self) -> &RawSemaphore {
        self.raw
    }
}

impl<'a> SemRef<'a> {
    /// # Safety
    /// `raw` must be followed in memory by at least `nslots` initialised
    /// holder slots that stay mapped for `'a`.
    pub(crate) unsafe fn new(raw: &'a RawSemaphore, nslots: u32) -> SemRef<'a> {
        SemRef {
            raw,
            nslots: nslots as usize,
        }
    }

    fn slots(&self) -> &'a [HolderSlot] {
        // SAFETY: per `SemRef::new`'s contract, `nslots` initialised slots
        // follow the struct and stay mapped for 'a. HolderSlot is all
        // atomics, so shared references are fine.
        unsafe {
            let p = (self.raw as *const RawSemaphore as *const u8)
                .add(std::mem::size_of::<RawSemaphore>());
            std::slice::from_raw_parts(p as *const HolderSlot, self.nslots)
        }
    }

    /// Takes the internal lock, repairing the state if a holder died in the
    /// middle of an update.
    fn lock(&self) -> Result<Guard<'a>> {
        let locked = self.raw.lock.lock(None)?;
        if locked.owner_died {
            self.recover();
            self.raw.lock.mark_consistent();
        }
        Ok(Guard { sem: self.raw })
    }

    fn recover(&self) {
        let j = &self.journal;
        if j.active.load(Ordering::Acquire) != 0 {
            let slot = j.slot.load(Ordering::Acquire) as usize;
            self.count
                .store(j.prev_count.load(Ordering::Acquire), Ordering::Release);
            if let Some(s) = self.slots().get(slot) {
                s.pid
                    .store(j.prev_pid.load(Ordering::Acquire), Ordering::Release);
                s.start_time
                    .store(j.prev_start.load(Ordering::Acquire), Ordering::Release);
                s.held
                    .store(j.prev_held.load(Ordering::Acquire), Ordering::Release);
            }
            j.active.store(0, Ordering::Release);
        }
        // Whoever was sleeping may now find permits.
        self.wake(u32::MAX);
    }

    /// Applies `count := new_count` and `slot := (pid, start, held)` as one
    /// crash-atomic update. Call with the lock held.
    fn journaled(&self, slot: usize, new_count: u64, pid: u32, start: u64, held: u64) {
        let s = &self.slots()[slot];
        let j = &self.journal;
        j.slot.store(slot as u32, Ordering::Release);
        j.prev_count
            .store(self.count.load(Ordering::Relaxed), Ordering::Release);
        j.prev_pid
            .store(s.pid.load(Ordering::Relaxed), Ordering::Release);
        j.prev_start
            .store(s.start_time.load(Ordering::Relaxed), Ordering::Release);
        j.prev_held
            .store(s.held.load(Ordering::Relaxed), Ordering::Release);
        j.active.store(1, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
        self.count.store(new_count, Ordering::Release);
        s.pid.store(pid, Ordering::Release);
        s.start_time.store(start, Ordering::Release);
        s.held.store(held, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
        j.active.store(0, Ordering::Release);
    }

    fn wake(&self, n: u32) {
        // SYNC POINT "semaphore seq": as in RawCondvar, bump then check sleepers.
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            platform::futex_wake(&self.seq, n);
        }
    }

    /// Takes one permit if available. Call with the lock held.
    fn take_locked(&self, me: ProcessId) -> Option<PermitSlot> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let slots = self.slots();
        let mine = slots.iter().position(|s| {
            s.held.load(Ordering::Relaxed) > 0
                && s.pid.load(Ordering::Relaxed) == me.pid
                && s.start_time.load(Ordering::Relaxed) == me.start_time
        });
        let free = || {
            slots
                .iter()
                .position(|s| s.held.load(Ordering::Relaxed) == 0)
        };
        match mine.or_else(free) {
            Some(i) => {
                // A free slot has held == 0, so this is right for both cases.
                let held = slots[i].held.load(Ordering::Relaxed);
                self.journaled(i, count - 1, me.pid, me.start_time, held + 1);
                Some(PermitSlot::Tracked(i as u32))
            }
            None => {
                // Single store: no journal needed.
                self.count.store(count - 1, Ordering::Release);
                Some(PermitSlot::Untracked)
            }
        }
    }

    /// Tries to take a permit without blocking.
    pub(crate) fn try_acquire(&self) -> Result<Option<PermitSlot>> {
        let me = platform::current_process();
        let g = self.lock()?;
        let r = self.take_locked(me);
        drop(g);
        if r.is_none() && self.reclaim_dead()? {
            let g = self.lock()?;
            let r = self.take_locked(me);
            drop(g);
            return Ok(r);
        }
        Ok(r)
    }

    /// Takes a permit, waiting until `deadline`.
    pub(crate) fn acquire(&self, deadline: Option<Instant>) -> Result<PermitSlot> {
        let me = platform::current_process();
        let take = || -> Result<Option<PermitSlot>> {
            let g = self.lock()?;
            let r = self.take_locked(me);
            drop(g);
            Ok(r)
        };
        if let Some(slot) = take()? {
            return Ok(slot);
        }
        let mut slice = SEM_SLICE_MIN;
        loop {
            if self.reclaim_dead()? {
                if let Some(slot) = take()? {
                    return Ok(slot);
                }
            }
            // SYNC POINT "semaphore seq": register as a sleeper and read seq
            // before looking at the count again, so that a release after our
            // look either sees us or changes seq before we sleep.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let seq = self.seq.load(Ordering::SeqCst);
            match take() {
                Ok(None) => {}
                Ok(Some(slot)) => {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    return Ok(slot);
                }
                Err(e) => {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            }
            let slept = sleep_on(&self.seq, seq, deadline, slice);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !slept {
                return Err(timeout_error("a semaphore permit"));
            }
            if let Some(slot) = take()? {
                return Ok(slot);
            }
            slice = (slice * 2).min(SEM_SLICE_MAX);
        }
    }

    /// Returns a permit taken by [`acquire`](Self::acquire).
    pub(crate) fn release_permit(&self, slot: PermitSlot) -> Result<()> {
        let g = self.lock()?;
        let count = self.count.load(Ordering::Relaxed);
        match slot {
            PermitSlot::Tracked(i) => {
                let s = &self.slots()[i as usize];
                let me = platform::current_process();
                let held = s.held.load(Ordering::Relaxed);
                if held > 0 && s.pid.load(Ordering::Relaxed) == me.pid {
                    self.journaled(
                        i as usize,
                        count.saturating_add(1),
                        me.pid,
                        me.start_time,
                        held - 1,
                    );
                } else {
                    // Our record is gone (it cannot be reclaimed while we
                    // live, so this means the table was reset by hand).
                    self.count.store(count.saturating_add(1), Ordering::Release);
                }
            }
            PermitSlot::Untracked => self.count.store(count.saturating_add(1), Ordering::Release),
        }
        drop(g);
        self.wake(1);
        Ok(())
    }

    /// Keeps a permit for good: the count stays lowered, the record is dropped.
    pub(crate) fn forget_permit(&self, slot: PermitSlot) -> Result<()> {
        if let PermitSlot::Tracked(i) = slot {
            let _g = self.lock()?;
            let s = &self.slots()[i as usize];
            let held = s.held.load(Ordering::Relaxed);
            if held > 0 && s.pid.load(Ordering::Relaxed) == platform::current_process().pid {
                s.held.store(held - 1, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Adds `n` permits not taken by `acquire` (Python's `release()`).
    pub(crate) fn release(&self, n: u64) -> Result<()> {
        let g = self.lock()?;
        let count = self.count.load(Ordering::Relaxed);
        let max = self.max();
        let new = count
            .checked_add(n)
            .filter(|&c| max == UNBOUNDED || c <= max);
        let Some(new) = new else {
            drop(g);
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!("semaphore released too many times (value {count}, bound {max})"),
            ));
        };
        self.count.store(new, Ordering::Release);
        drop(g);
        self.wake(n.min(u32::MAX as u64) as u32);
        Ok(())
    }

    /// Gives back the permits of dead holders. Returns whether any came back.
    pub(crate) fn reclaim_dead(&self) -> Result<bool> {
        let me = platform::getpid();
        // Collect candidates under the lock, check liveness outside it
        // (reading /proc is slow), then reclaim those still unchanged.
        let candidates: Vec<(usize, ProcessId)> = {
            let _g = self.lock()?;
            self.slots()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.held.load(Ordering::Relaxed) > 0)
                .map(|(i, s)| {
                    (
                        i,
                        ProcessId {
                            pid: s.pid.load(Ordering::Relaxed),
                            start_time: s.start_time.load(Ordering::Relaxed),
                        },
                    )
                })
                .filter(|(_, id)| id.pid != me)
                .collect()
        };
        let dead: Vec<_> = candidates
            .into_iter()
            .filter(|(_, id)| !platform::process_alive(*id))
            .collect();
        if dead.is_empty() {
            return Ok(false);
        }
        let mut any = false;
        {
            let _g = self.lock()?;
            for (i, id) in dead {
                let s = &self.slots()[i];
                let held = s.held.load(Ordering::Relaxed);
                if held > 0
                    && s.pid.load(Ordering::Relaxed) == id.pid
                    && s.start_time.load(Ordering::Relaxed) == id.start_time
                {
                    let count = self.count.load(Ordering::Relaxed);
                    self.journaled(i, count.saturating_add(held), 0, 0, 0);
                    any = true;
                }
            }
        }
        if any {
            self.wake(u32::MAX);
        }
        Ok(any)
    }
}

struct Guard<'a> {
    sem: &'a RawSemaphore,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: a Guard exists only while this thread holds the lock.
        unsafe { self.sem.lock.unlock() };
    }
}

// ---------------------------------------------------------------------------
// RawBarrier
// ---------------------------------------------------------------------------

const COUNT_MASK: u64 = 0xffff_ffff;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u64 = 0x7fff_ffff;
const BROKEN: u64 = 1 << 63;

fn unpack(state: u64) -> (u32, u32, bool) {
    (
        (state & COUNT_MASK) as u32,
        ((state >> GEN_SHIFT) & GEN_MASK) as u32,
        state & BROKEN != 0,
    )
}

fn pack(count: u32, generation: u32, broken: bool) -> u64 {
    count as u64 | ((generation as u64 & GEN_MASK) << GEN_SHIFT) | if broken { BROKEN } else { 0 }
}

/// What a barrier wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarrierOutcome {
    /// Passed; the arrival index (0-based; `parties - 1` arrived last).
    Passed(u32),
    /// The barrier is or became broken.
    Broken,
    /// The deadline passed (and the barrier is now broken).
    TimedOut,
}

/// A reusable barrier (Python's `threading.Barrier` semantics) on one 64-bit
/// state word committed by compare-and-swap, so a process killed at any point
/// leaves either the old or the new state.
///
/// | bits of `state` | meaning |
/// |---|---|
/// | 0..32 | processes waiting in the current generation |
/// | 32..63 | generation number (wraps) |
/// | 63 | broken |
///
/// Waiters sleep on `seq`, bumped after every state change that releases
/// them. `last_reset` records the generation a `reset()` ended, so its
/// waiters can tell "released by a reset" (an error) from "passed". It keeps
/// only the latest reset: a waiter that stays asleep through two resets (and
/// the rounds between them) would take the first one for a pass. With
/// processes as parties this needs a waiter descheduled for whole rounds of
/// the others, so it is documented rather than paid for with a history.
#[repr(C)]
pub(crate) struct RawBarrier {
    state: AtomicU64,
    seq: AtomicU32,
    sleepers: AtomicU32,
    parties: AtomicU32,
    last_reset: AtomicU32,
}

impl RawBarrier {
    pub(crate) fn new(parties: u32) -> RawBarrier {
        RawBarrier {
            state: AtomicU64::new(0),
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            parties: AtomicU32::new(parties),
            // An impossible generation, so no generation looks reset.
            last_reset: AtomicU32::new(u32::MAX),
        }
    }

    pub(crate) fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed)
    }

    pub(crate) fn n_waiting(&self) -> u32 {
        let (count, _, broken) = unpack(self.state.load(Ordering::Acquire));
        if broken { 0 } else { count }
    }

    pub(crate) fn is_broken(&self) -> bool {
        unpack(self.state.load(Ordering::Acquire)).2
    }

    fn wake_all(&self) {
        // SYNC POINT "barrier seq": bump then check sleepers (see `wait`).
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            platform::futex_wake(&self.seq, u32::MAX);
        }
    }

    pub(crate) fn wait(&self, deadline: Option<Instant>) -> BarrierOutcome {
        let parties = self.parties();
        // Arrive.
        let mut cur = self.state.load(Ordering::Acquire);
        let (index, generation) = loop {
            let (count, generation, broken) = unpack(cur);
            if broken {
                return BarrierOutcome::Broken;
            }
            let next = if count + 1 >= parties {
                pack(0, generation.wrapping_add(1), false)
            } else {
                pack(count + 1, generation, false)
            };
            // AcqRel: the last arriver's Release publishes everyone's prior
            // writes (each arrival's RMW is in the release sequence); waiters
            // Acquire-load the new generation. SYNC POINT "barrier".
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break (count, generation),
                Err(actual) => cur = actual,
            }
        };
        if index + 1 >= parties {
            self.wake_all();
            return BarrierOutcome::Passed(index);
        }
        // Wait for the generation to end.
        let mut outcome = None;
        if spin_wait(|| {
            outcome = self.check(generation, index);
            outcome.is_some()
        }) {
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
        loop {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let seq = self.seq.load(Ordering::SeqCst);
            if let Some(outcome) = self.check(generation, index) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return outcome;
            }
            let slept = sleep_on(&self.seq, seq, deadline, SLEEP_SLICE);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !slept {
                // Timed out: break the barrier for everyone in this
                // generation, unless it completed meanwhile.
                if let Some(outcome) = self.check(generation, index) {
                    return outcome;
                }
                let mut cur = self.state.load(Ordering::Acquire);
                loop {
                    let (count, g, broken) = unpack(cur);
                    if g != generation || broken {
                        break;
                    }
                    match self.state.compare_exchange_weak(
                        cur,
                        pack(count, g, true),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            self.wake_all();
                            return BarrierOutcome::TimedOut;
                        }
                        Err(actual) => cur = actual,
                    }
                }
                if let Some(outcome) = self.check(generation, index) {
                    return outcome;
                }
            }
        }
    }

    /// The outcome for a waiter of `generation`, if its wait is over.
    fn check(&self, generation: u32, index: u32) -> Option<BarrierOutcome> {
        let (_, g, broken) = unpack(self.state.load(Ordering::Acquire));
        if g != generation {
            if self.last_reset.load(Ordering::Acquire) == generation {
                return Some(BarrierOutcome::Broken);
            }
            return Some(BarrierOutcome::Passed(index));
        }
        broken.then_some(BarrierOutcome::Broken)
    }

    /// Breaks the barrier: current and future waiters fail until `reset`.
    pub(crate) fn abort(&self) {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (count, g, _) = unpack(cur);
            match self.state.compare_exchange_weak(
                cur,
                pack(count, g, true),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.wake_all();
    }

    /// Returns the barrier to its empty state; processes waiting in the
    /// current generation fail with a broken-barrier error.
    pub(crate) fn reset(&self) {
        // 1. Break the current generation, so it can no longer complete.
        self.abort();
        // 2. Record which generation the reset ends, then 3. start a new one.
        // A process killed between the steps leaves the barrier broken, which
        // another reset() repairs.
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (_, g, _) = unpack(cur);
            self.last_reset.store(g, Ordering::Release);
            match self.state.compare_exchange_weak(
                cur,
                pack(0, g.wrapping_add(1), false),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_state_packs() {
        for (c, g, b) in [
            (0, 0, false),
            (5, 7, true),
            (u32::MAX, GEN_MASK as u32, false),
        ] {
            assert_eq!(unpack(pack(c, g, b)), (c, g, b));
        }
        // The generation wraps within its 31 bits.
        assert_eq!(unpack(pack(1, u32::MAX, false)).1, GEN_MASK as u32);
    }

    #[test]
    fn event_in_process() {
        let e = RawEvent::new();
        assert!(!e.is_set());
        assert!(!e.wait(Some(Instant::now() + Duration::from_millis(5))));
        e.set();
        assert!(e.wait(None));
        e.clear();
        assert!(!e.is_set());
    }

    #[test]
    fn event_wakes_threads() {
        let e = std::sync::Arc::new(RawEvent::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || e.wait(None))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        e.set();
        for w in waiters {
            assert!(w.join().unwrap());
        }
    }

    #[test]
    fn barrier_rounds_across_threads() {
        use std::sync::Arc;
        let parties = 3;
        let rounds = 4;
        let b = Arc::new(RawBarrier::new(parties));
        let arrived = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..parties)
            .map(|_| {
                let (b, arrived) = (b.clone(), arrived.clone());
                std::thread::spawn(move || {
                    let mut leaders = 0;
                    for round in 1..=rounds {
                        arrived.fetch_add(1, Ordering::Relaxed);
                        match b.wait(None) {
                            BarrierOutcome::Passed(i) => leaders += u32::from(i + 1 == parties),
                            other => panic!("{other:?}"),
                        }
                        // SYNC POINT "barrier": every arrival of this round is visible.
                        assert!(arrived.load(Ordering::Relaxed) >= round * parties);
                    }
                    leaders
                })
            })
            .collect();
        let leaders: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(leaders, rounds);
    }

    #[test]
    fn barrier_single_party_passes() {
        let b = RawBarrier::new(1);
        assert_eq!(b.wait(None), BarrierOutcome::Passed(0));
        assert_eq!(b.wait(None), BarrierOutcome::Passed(0));
        b.abort();
        assert_eq!(b.wait(None), BarrierOutcome::Broken);
        b.reset();
        assert_eq!(b.wait(None), BarrierOutcome::Passed(0));
    }
}
