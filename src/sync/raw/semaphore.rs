use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::time::{Duration, Instant};

use super::mutex::{RawGuard, RawMutex};
use super::spin::timeout_error;
use super::wait::{Slept, WaitCell};
use crate::error::{Error, ErrorKind, Result};
use crate::platform::{self, ProcessId};

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
/// Waiters sleep on the crate's waiting primitive ([`WaitCell`]), notified
/// by every release. A waiter that finds no permit scans the holder table
/// for dead processes (outside the lock), and re-scans every time its
/// sleep slice ends, so the permits of a SIGKILLed holder come back within
/// about half a second. A scan reads `/proc` for every holder, so scans are
/// rate-limited by `last_scan` (a `CLOCK_MONOTONIC` time, the same clock in
/// every process): `try_acquire` on an exhausted semaphore scans at most
/// every [`SCAN_INTERVAL`] and otherwise costs what a successful one does.
#[repr(C)]
pub(crate) struct RawSemaphore {
    lock: RawMutex,
    cell: WaitCell,
    /// When the last dead-holder scan started (monotonic nanoseconds).
    last_scan: AtomicU64,
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

/// The shortest time between two dead-holder scans started by
/// `try_acquire` (blocking acquires scan once per sleep slice).
pub(crate) const SCAN_INTERVAL: Duration = Duration::from_millis(10);

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
            std::ptr::addr_of_mut!((*this).cell).write(WaitCell::new());
            std::ptr::addr_of_mut!((*this).last_scan).write(AtomicU64::new(0));
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
    fn lock(&self) -> Result<RawGuard<'a>> {
        let locked = self.raw.lock.lock(None)?;
        // SAFETY: this thread has just taken the lock.
        let guard = unsafe { RawGuard::new(&self.raw.lock) };
        if locked.owner_died {
            self.recover();
            guard.mark_consistent();
        }
        Ok(guard)
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
        // SYNC POINT "wake": the count was committed under the lock.
        self.cell.notify(n);
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

    /// Whether a dead-holder scan is due (and, if so, claims it): at most
    /// one per [`SCAN_INTERVAL`] across all processes.
    fn scan_due(&self) -> bool {
        let now = platform::monotonic_nanos();
        let last = self.last_scan.load(Ordering::Relaxed);
        now.saturating_sub(last) >= SCAN_INTERVAL.as_nanos() as u64
            && self
                .last_scan
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Tries to take a permit without blocking.
    pub(crate) fn try_acquire(&self) -> Result<Option<PermitSlot>> {
        let me = platform::current_process();
        let g = self.lock()?;
        let r = self.take_locked(me);
        drop(g);
        if r.is_none() && self.scan_due() && self.reclaim_dead()? {
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
            // SYNC POINT "wake": register, then look at the count again, so
            // that a release after our look either sees us or changes `seq`
            // before we sleep.
            let ticket = self.cell.register();
            match take() {
                Ok(None) => {}
                Ok(Some(slot)) => {
                    self.cell.deregister(ticket);
                    return Ok(slot);
                }
                Err(e) => {
                    self.cell.deregister(ticket);
                    return Err(e);
                }
            }
            let slept = self.cell.sleep_at_most(&ticket, deadline, slice);
            self.cell.deregister(ticket);
            if slept == Slept::DeadlinePassed {
                return match take()? {
                    Some(slot) => Ok(slot),
                    None => Err(timeout_error("a semaphore permit")),
                };
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
