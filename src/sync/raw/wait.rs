//! The one waiting primitive: [`WaitCell`], a futex word that sleepers
//! wait on and wakers bump, with a registration word so that waking nobody
//! costs no system call. Every blocking wait in ipckit — condition
//! variables, events, semaphores, barriers and both sides of a queue's ring —
//! is a [`WaitCell::wait_until`] (or, for a condition variable, its parts)
//! and every wake-up a [`WaitCell::wake`] (after [`WaitCell::commit`]) or a
//! [`WaitCell::notify`] (after any other commit).
//!
//! # Words
//!
//! | word | written by | meaning |
//! |---|---|---|
//! | `seq` | wakers, by `fetch_add` | bumped by every wake that finds a registration, and by a repair; sleepers sleep while it is unchanged |
//! | `sleepers` | waiters (register, deregister) and repairs, by RMW | bits 0..32: sleeper registrations in the current epoch; bits 32..48: spinner registrations; bits 48..64: the epoch |
//! | `flags` | committers, once; the creator | bit 0: some process commits a state word this cell guards with a plain store (no store-load fence), so sleepers must issue a membarrier; bit 1: set at creation ([`WaitCell::new_fenced`]), every commit is fenced, so bit 0 is never set |
//!
//! # The handshake (SYNC POINT "wake")
//!
//! A waiter waits for a *state word* another process commits (a queue
//! position, an event's state, a count); a waker commits it and then wakes.
//! It is a store-load (Dekker) pattern: the sleeper registers, then checks
//! the state; the waker commits the state, then checks for registrations.
//! At least one must see the other's write, so each side needs a full
//! barrier between its write and its read:
//!
//! | side | write | barrier | read |
//! |---|---|---|---|
//! | sleeper ([`register`](WaitCell::register)) | `sleepers` (SeqCst RMW) | `fence(SeqCst)`, plus `membarrier` if `flags` says a committer is unfenced | `seq`, then the state |
//! | waker, [`commit`](WaitCell::commit) then [`wake`](WaitCell::wake) | the state (Release store) | `fence(SeqCst)` in `commit`, or none in a process registered for membarrier (the sleeper's membarrier executes one on its behalf) | `sleepers` |
//! | waker, any other commit (an RMW, stores under a lock) then [`notify`](WaitCell::notify) | the state | `fence(SeqCst)` in `notify` | `sleepers` |
//! | waker, an RMW commit on x86_64 then [`notify_after_rmw`](WaitCell::notify_after_rmw) | the state (a locked instruction) | the locked instruction itself (a compiler fence keeps the order); elsewhere and under loom `fence(SeqCst)` | `sleepers` |
//!
//! Both barriers are fences, never "a SeqCst RMW followed by a SeqCst
//! load": the C++20 model makes that pairing sound too, but a fence on each
//! side is what loom can check, and it reads the same to a reviewer.
//!
//! The membarrier variant is the asymmetric fence of userspace RCU: the hot
//! path (a queue commit per message) pays nothing, the rare sleeper pays one
//! system call. Where sleeping is the common case — a queue that carries a
//! message now and then to a reader that is usually asleep, as a process
//! pool's task and result queues do — that trade is the wrong way round
//! (a membarrier interrupts every CPU, several µs on a VM, per sleep), so
//! such a cell is made fenced ([`WaitCell::new_fenced`]): each commit pays
//! a fence, no sleeper ever a membarrier. A process commits unfenced only after setting `flags` with
//! a SeqCst RMW, so a sleeper that reads `flags` as clear knows that every
//! commit it might miss was fenced. Where membarrier is unavailable (or
//! `IPCKIT_MEMBARRIER=off`), commits are SeqCst swaps.
//!
//! If the waker sees a registration it bumps `seq` before `futex_wake`, so
//! a sleeper that registered and read `seq` before the bump either is
//! asleep (and is woken) or finds `seq` changed and does not sleep
//! (`FUTEX_WAIT` compares atomically).
//!
//! # Spinners
//!
//! A condition variable's waiter must register *before* it releases the
//! mutex, so it cannot poll first and register later as other waiters do.
//! It registers as a *spinner* instead ([`register_spinner`](WaitCell::register_spinner)):
//! a waker that finds only spinners bumps `seq` — which they poll — and
//! makes no system call. A spinner whose budget runs out becomes a sleeper
//! (one CAS, SeqCst, then `fence(SeqCst)`, then `FUTEX_WAIT` on the `seq`
//! it registered with); a waker bumps `seq`, issues `fence(SeqCst)`, and
//! only then reads the sleeper count to decide on `futex_wake`, so either
//! the waker sees the new sleeper or the sleeper's `FUTEX_WAIT` sees the
//! new `seq` (SYNC POINT "spin"). A waker that found only spinners also
//! starts a new epoch without them: that is how registrations of spinners
//! killed while spinning are cleared. A live spinner whose registration
//! was cleared this way sees `seq` change (it was bumped first), or — if it
//! registered after the bump — finds the epoch changed when it tries to
//! become a sleeper and returns early: a spurious wake-up, which every
//! condition-variable caller tolerates, never a lost one. At most
//! [`SPINNER_CAP`] waiters spin at once; the rest register as sleepers.
//!
//! # Sleepers that die
//!
//! A process killed while asleep never deregisters. Its registration would
//! make every later commit pay a `seq` bump and a `futex_wake` for nobody.
//! So a wake that finds registrations but wakes nobody (`futex_wake`
//! returns 0) repairs the word: it starts a new epoch with no registration
//! (one CAS, from the exact value it saw), then bumps `seq` again and wakes
//! every sleeper. Live registrations wiped by the repair belong to
//! sleepers that were not asleep yet: each either reads `seq` after the
//! second bump — then its epoch check (after reading `seq`) sees the new
//! epoch and it registers again — or before it, and then its `FUTEX_WAIT`
//! fails (`seq` changed) or is woken by the wake-all. A stale registration
//! thus costs at most one fruitless wake-up, and a sleeper that
//! deregisters in a later epoch changes nothing. The 8-bit epoch wraps;
//! a deregistration 256 repairs late could remove a live registration,
//! which costs that sleeper one sleep slice at worst.
//!
//! # Sleep slices
//!
//! A process killed after its commit but before its wake leaves sleepers
//! unwoken; so no sleep is longer than [`SLEEP_SLICE`], after which the
//! sleeper re-checks the state.

use std::time::{Duration, Instant};

use super::spin::{Spinner, deadline_passed};
use crate::loom::futex;
use crate::loom::{AtomicU32, AtomicU64, Ordering, fence};

/// Whether a waiter should spin at all (see [`Spinner`]).
#[cfg(not(loom))]
fn spinning_pays() -> bool {
    super::spin::spin_allowed() && !super::spin::machine_busy()
}

/// Under loom a waiter always may spin: the model explores both outcomes.
#[cfg(loom)]
fn spinning_pays() -> bool {
    true
}

/// One poll of a spin; `false` when the budget is used up.
#[cfg(not(loom))]
fn spin_once(spinner: &mut Spinner) -> bool {
    spinner.spin()
}

/// Under loom the budget is two polls. No `yield_now`: the loop is bounded,
/// and a yield would make loom switch to the waker and never explore a
/// spinner that runs out of budget before the waker acts.
#[cfg(loom)]
fn spin_once(spinner: &mut Spinner) -> bool {
    spinner.spin_loom()
}

/// Longest uninterrupted futex sleep (see the module docs).
pub(crate) const SLEEP_SLICE: Duration = Duration::from_secs(1);

const COUNT_MASK: u64 = 0xffff_ffff;
const SPINNER_ONE: u64 = 1 << 32;
const SPINNER_MASK: u64 = 0xffff << 32;
const EPOCH_ONE: u64 = 1 << 48;
const FLAG_UNFENCED: u32 = 1;
const FLAG_FENCED: u32 = 2;

/// At most this many waiters of one cell spin at once (more cannot all be
/// running; the rest register as sleepers straight away).
pub(crate) const SPINNER_CAP: u64 = 64;

/// The epoch of a `sleepers` word.
fn epoch(word: u64) -> u64 {
    word & !(COUNT_MASK | SPINNER_MASK)
}

/// The sleeper registration count of a `sleepers` word.
fn count(word: u64) -> u64 {
    word & COUNT_MASK
}

/// The spinner registration count of a `sleepers` word.
fn spinners(word: u64) -> u64 {
    (word & SPINNER_MASK) >> 32
}

/// A futex word to sleep on and its registrations. See the module docs.
#[repr(C)]
pub(crate) struct WaitCell {
    seq: AtomicU32,
    flags: AtomicU32,
    sleepers: AtomicU64,
    #[cfg(loom)]
    queue: futex::Queue,
}

/// A registration: the epoch it was made in, the `seq` read after it, and
/// what is registered (a sleeper, a spinner, or nothing any more).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    seq: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sleeper,
    Spinner,
    /// The registration is gone (deregistered by its waiter or cleared by
    /// a waker's new epoch).
    Gone,
}

/// How a [`WaitCell::sleep`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slept {
    /// Woken, or the slice ended, or `seq` had changed: check again.
    Again,
    /// The deadline had passed; nothing was slept.
    DeadlinePassed,
}

/// How long a waiter polls before it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spin {
    /// Not at all (the caller already polled, or waits for something slow).
    No,
    /// The wait policy's budget ([`Spinner`]).
    Wait,
}

impl WaitCell {
    /// A cell with no sleeper.
    pub(crate) fn new() -> WaitCell {
        WaitCell {
            seq: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            sleepers: AtomicU64::new(0),
            #[cfg(loom)]
            queue: futex::Queue::new(),
        }
    }

    #[cfg(not(loom))]
    fn queue(&self) -> futex::Queue {
        futex::Queue::new()
    }

    #[cfg(loom)]
    fn queue(&self) -> &futex::Queue {
        &self.queue
    }

    /// A cell whose every commit is fenced, so that its sleepers never
    /// issue a membarrier: for a state word committed rarely and usually
    /// waited for asleep (see "The handshake" in the module docs).
    pub(crate) fn new_fenced() -> WaitCell {
        let c = WaitCell::new();
        // Ordering: Relaxed; the cell is not shared yet (publishing it
        // orders this store before any other process's read).
        c.flags.store(FLAG_FENCED, Ordering::Relaxed);
        c
    }

    /// Registered sleepers (a racy snapshot, for `ipckit::admin`).
    pub(crate) fn registered(&self) -> u32 {
        // Ordering: Relaxed; a snapshot that orders nothing.
        let w = self.sleepers.load(Ordering::Relaxed);
        (count(w) + spinners(w)).min(u64::from(u32::MAX)) as u32
    }

    /// Registers the caller as a sleeper and reads `seq` (SYNC POINT
    /// "wake"). The registration is the sleeper's write of the handshake. Check the condition after this, then [`sleep`](Self::sleep)
    /// and [`deregister`](Self::deregister).
    pub(crate) fn register(&self) -> Ticket {
        let before = self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.registered_as(before, Kind::Sleeper)
    }

    /// The rest of a registration: the handshake's barrier and the read of
    /// `seq`.
    fn registered_as(&self, before: u64, kind: Kind) -> Ticket {
        // SYNC POINT "wake": the registration is ordered before the reads
        // of the state that follow; with the waker's barrier between its
        // commit and its read of `sleepers`, one of the two sees the other.
        fence(Ordering::SeqCst);
        if self.flags.load(Ordering::Relaxed) & FLAG_UNFENCED != 0 {
            // A committer stores without a fence: make every running
            // thread of every registered process execute one now.
            futex::membarrier();
        }
        let seq = self.seq.load(Ordering::SeqCst);
        Ticket {
            epoch: epoch(before),
            seq,
            kind,
        }
    }

    /// Registers the caller as a spinner (see "Spinners" in the module
    /// docs), or as a sleeper where spinning cannot pay (one CPU, an
    /// oversubscribed machine, [`SPINNER_CAP`] spinners already). For a
    /// waiter that must register before it may poll — a condition
    /// variable's, which registers before releasing the mutex. Then
    /// [`spin_then_sleep`](Self::spin_then_sleep) and
    /// [`deregister`](Self::deregister).
    pub(crate) fn register_spinner(&self) -> Ticket {
        if !spinning_pays() {
            return self.register();
        }
        // Ordering: Relaxed; only the CAS's expected value (the CAS is SeqCst).
        let mut cur = self.sleepers.load(Ordering::Relaxed);
        loop {
            if spinners(cur) >= SPINNER_CAP {
                return self.register();
            }
            match self.sleepers.compare_exchange_weak(
                cur,
                cur + SPINNER_ONE,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(before) => return self.registered_as(before, Kind::Spinner),
                Err(actual) => cur = actual,
            }
        }
    }

    /// For a ticket from [`register_spinner`](Self::register_spinner):
    /// polls `seq` for the wait policy's budget, then — still registered —
    /// sleeps as [`sleep`](Self::sleep) does. Returns when `seq` changed
    /// (a wake-up, perhaps spurious), a slice passed or `deadline`.
    pub(crate) fn spin_then_sleep(&self, ticket: &mut Ticket, deadline: Option<Instant>) -> Slept {
        if ticket.kind == Kind::Spinner {
            let mut spinner = Spinner::new();
            loop {
                // SYNC POINT "spin": a waker bumps `seq` before anything else.
                if self.seq.load(Ordering::Acquire) != ticket.seq {
                    return Slept::Again;
                }
                if deadline_passed(deadline) {
                    return Slept::DeadlinePassed;
                }
                if !spin_once(&mut spinner) {
                    break;
                }
            }
            // Become a sleeper, unless a waker cleared our registration.
            // Ordering: Relaxed; the CAS's expected value.
            let mut cur = self.sleepers.load(Ordering::Relaxed);
            loop {
                if epoch(cur) != ticket.epoch || spinners(cur) == 0 {
                    ticket.kind = Kind::Gone;
                    return Slept::Again;
                }
                match self.sleepers.compare_exchange_weak(
                    cur,
                    cur - SPINNER_ONE + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
            ticket.kind = Kind::Sleeper;
            // SYNC POINT "spin": the new sleeper count is ordered before
            // the kernel's read of `seq` in FUTEX_WAIT; the waker bumps
            // `seq`, fences, then reads the count.
            fence(Ordering::SeqCst);
        }
        if ticket.kind == Kind::Gone {
            return Slept::Again;
        }
        self.sleep(ticket, deadline)
    }

    /// Sleeps until woken, `seq` changes, a slice passes or `deadline`.
    /// Call after [`register`](Self::register) and a false check.
    pub(crate) fn sleep(&self, ticket: &Ticket, deadline: Option<Instant>) -> Slept {
        self.sleep_at_most(ticket, deadline, SLEEP_SLICE)
    }

    /// [`sleep`](Self::sleep) with a shorter slice (at most [`SLEEP_SLICE`]),
    /// for a waiter that has work to do between sleeps.
    pub(crate) fn sleep_at_most(
        &self,
        ticket: &Ticket,
        deadline: Option<Instant>,
        slice: Duration,
    ) -> Slept {
        let slice = slice.min(SLEEP_SLICE);
        let timeout = match deadline {
            None => slice,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(slice),
                _ => return Slept::DeadlinePassed,
            },
        };
        // A repair since we registered: our registration is gone, so a
        // waker might not wake us. Register again first (see the module docs).
        if epoch(self.sleepers.load(Ordering::SeqCst)) != ticket.epoch {
            return Slept::Again;
        }
        self.queue().wait(&self.seq, ticket.seq, timeout);
        Slept::Again
    }

    /// Removes the registration `ticket` made, unless a repair already did.
    pub(crate) fn deregister(&self, ticket: Ticket) {
        let (one, held): (u64, fn(u64) -> u64) = match ticket.kind {
            Kind::Sleeper => (1, count),
            Kind::Spinner => (SPINNER_ONE, spinners),
            Kind::Gone => return,
        };
        let mut cur = self.sleepers.load(Ordering::Relaxed);
        while epoch(cur) == ticket.epoch && held(cur) > 0 {
            match self.sleepers.compare_exchange_weak(
                cur,
                cur - one,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Waits until `ready()` holds (`true`) or `deadline` passes (`false`,
    /// after a last check). Polls first if `spin` says so.
    ///
    /// The first check is inlined into the caller, the rest is out of
    /// line: a wait for a state that already holds (an `Event` already
    /// set) is a load and a branch, before any prologue.
    #[inline]
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        self.wait_until_slow(deadline, spin, ready)
    }

    /// [`wait_until`](Self::wait_until) after a first check that failed.
    #[inline(never)]
    fn wait_until_slow(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if spin == Spin::Wait {
            let mut spinner = Spinner::new();
            while spinner.spin() {
                if ready() {
                    return true;
                }
            }
        }
        loop {
            let ticket = self.register();
            if ready() {
                self.deregister(ticket);
                return true;
            }
            let slept = self.sleep(&ticket, deadline);
            self.deregister(ticket);
            if ready() {
                return true;
            }
            if slept == Slept::DeadlinePassed {
                return false;
            }
        }
    }

    /// One registered sleep (at most a slice) unless `ready()` holds after
    /// registering: for a waiter that must do something between sleeps.
    pub(crate) fn wait_once(&self, deadline: Option<Instant>, ready: impl FnOnce() -> bool) {
        let ticket = self.register();
        if !ready() {
            self.sleep(&ticket, deadline);
        }
        self.deregister(ticket);
    }

    /// Commits a state word this cell's sleepers check: runs `store` (a
    /// Release store of the new value) with the barrier the handshake needs
    /// before [`wake`](Self::wake) reads `sleepers` (see the module docs):
    /// none in a process registered for membarrier (after it marked the
    /// cell), else — and always in a [fenced](Self::new_fenced) cell — a
    /// SeqCst fence.
    pub(crate) fn commit(&self, store: impl FnOnce()) {
        // Ordering: Relaxed; bit 1 is written once before the cell is
        // shared, and bit 0 is only ever set by the branch below.
        let flags = self.flags.load(Ordering::Relaxed);
        if futex::commits_unfenced() && flags & FLAG_FENCED == 0 {
            if flags & FLAG_UNFENCED == 0 {
                // SYNC POINT "wake": set before the first unfenced commit,
                // with a full barrier, so a sleeper that reads it clear
                // is seen by our read of `sleepers`.
                self.flags.fetch_or(FLAG_UNFENCED, Ordering::SeqCst);
                fence(Ordering::SeqCst);
            }
            store();
            // Keeps the compiler from sinking the store below the read of
            // `sleepers` in `wake`; the CPU may, which the sleeper's
            // membarrier makes harmless.
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        } else {
            store();
            // SYNC POINT "wake".
            fence(Ordering::SeqCst);
        }
    }

    /// Wakes up to `n` sleepers after a state change committed some other
    /// way than [`commit`](Self::commit) (an RMW, stores under a lock):
    /// issues the waker's barrier, then [`wake`](Self::wake)s.
    pub(crate) fn notify(&self, n: u32) {
        // SYNC POINT "wake".
        fence(Ordering::SeqCst);
        self.wake(n);
    }

    /// [`notify`](Self::notify) for a state committed by a read-modify-write
    /// (an event's swap): on x86_64 a locked instruction is itself a full
    /// barrier (loads are not reordered with locked instructions), so only
    /// the compiler must be kept from moving the read of `sleepers` above
    /// the RMW; elsewhere, and under loom, the fence. Saves one locked
    /// instruction per `Event::set`.
    #[inline]
    pub(crate) fn notify_after_rmw(&self, n: u32) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        // SYNC POINT "wake": the committing RMW was a locked instruction.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        // SYNC POINT "wake".
        fence(Ordering::SeqCst);
        self.wake(n);
    }

    /// Wakes up to `n` sleepers, if any registered. Call right after
    /// [`commit`](Self::commit) (SYNC POINT "wake"); after any other commit
    /// call [`notify`](Self::notify). Makes no system call when nobody
    /// registered.
    #[inline]
    pub(crate) fn wake(&self, n: u32) {
        self.wake_if(n, || true);
    }

    /// [`wake`](Self::wake), but only if `worth_it()` says the sleepers'
    /// condition may hold now — for a waker that knows what they wait for
    /// (a queue producer waiting for a quarter of the ring). `worth_it` runs
    /// only when someone registered, after the SeqCst read of `sleepers`,
    /// so it sees what the sleeper wrote before registering. Skipping is
    /// safe only if a later commit, or the sleeper's own bounded wait,
    /// ends the wait.
    ///
    /// The read of `sleepers` is inlined, waking is out of line: a commit
    /// that finds nobody registered — every `Event::set` and queue commit
    /// of a hand-off between running processes — is a load and a branch.
    #[inline]
    pub(crate) fn wake_if(&self, n: u32, worth_it: impl FnOnce() -> bool) {
        let seen = self.sleepers.load(Ordering::SeqCst);
        if seen & (COUNT_MASK | SPINNER_MASK) == 0 || !worth_it() {
            return;
        }
        self.wake_registered(n, seen);
    }

    /// [`wake_if`](Self::wake_if) once `seen` showed a registration.
    #[inline(never)]
    fn wake_registered(&self, n: u32, seen: u64) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        let seen = if spinners(seen) == 0 {
            seen
        } else {
            // SYNC POINT "spin": `seq` is bumped (every spinner polls it)
            // before we read whether a spinner became a sleeper.
            fence(Ordering::SeqCst);
            let now = self.sleepers.load(Ordering::SeqCst);
            if count(now) == 0 {
                // Only spinners: they see `seq`; clear their registrations
                // (those of dead spinners with them) by a new epoch.
                let _ = self.sleepers.compare_exchange(
                    now,
                    epoch(now).wrapping_add(EPOCH_ONE),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                return;
            }
            now
        };
        if self.queue().wake(&self.seq, n) == 0 {
            self.repair(seen);
        }
    }

    /// Registrations were counted but nobody slept: start a new epoch
    /// without them (see "Sleepers that die").
    #[cold]
    fn repair(&self, seen: u64) {
        let next = epoch(seen).wrapping_add(EPOCH_ONE);
        if self
            .sleepers
            .compare_exchange(seen, next, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            self.seq.fetch_add(1, Ordering::SeqCst);
            self.queue().wake(&self.seq, u32::MAX);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn words_pack() {
        let w = 3 * EPOCH_ONE + 7 * SPINNER_ONE + 5;
        assert_eq!(count(w), 5);
        assert_eq!(spinners(w), 7);
        assert_eq!(epoch(w), 3 * EPOCH_ONE);
        assert_eq!(epoch(u64::MAX).wrapping_add(EPOCH_ONE), 0);
    }

    #[test]
    fn a_fenced_cell_never_asks_its_sleepers_for_a_membarrier() {
        let plain = WaitCell::new();
        let fenced = WaitCell::new_fenced();
        let word = AtomicU64::new(0);
        for c in [&plain, &fenced] {
            c.commit(|| word.store(1, Ordering::Release));
            c.wake(u32::MAX);
        }
        // A plain cell's committer marks it unfenced where membarrier
        // works (a sleeper must then issue one); a fenced cell's never.
        let unfenced = |c: &WaitCell| c.flags.load(Ordering::Relaxed) & FLAG_UNFENCED != 0;
        assert_eq!(unfenced(&plain), futex::commits_unfenced());
        assert!(!unfenced(&fenced));
    }

    #[test]
    fn a_dead_registration_costs_one_wake_then_nothing() {
        let c = WaitCell::new();
        // A sleeper that registered and vanished.
        let _lost = c.register();
        assert_eq!(c.registered(), 1);
        let seq = c.seq.load(Ordering::Relaxed);
        c.wake(u32::MAX); // wakes nobody: repairs
        assert_eq!(c.registered(), 0);
        assert_eq!(c.seq.load(Ordering::Relaxed), seq.wrapping_add(2));
        // Later wakes make no system call and leave `seq` alone.
        c.wake(u32::MAX);
        assert_eq!(c.seq.load(Ordering::Relaxed), seq.wrapping_add(2));
        // The lost ticket's deregistration (a late one) changes nothing.
        c.deregister(_lost);
        assert_eq!(c.registered(), 0);
    }

    #[test]
    fn a_dead_spinner_costs_one_notify_then_nothing() {
        let c = WaitCell::new();
        // A spinner that registered and vanished (a plain sleeper where
        // spinning cannot pay; both are cleared the same way).
        let _lost = c.register_spinner();
        assert_eq!(c.registered(), 1);
        let seq = c.seq.load(Ordering::Relaxed);
        c.notify(1);
        assert_eq!(c.registered(), 0);
        assert_ne!(c.seq.load(Ordering::Relaxed), seq);
        let seq = c.seq.load(Ordering::Relaxed);
        c.notify(1);
        assert_eq!(c.seq.load(Ordering::Relaxed), seq);
        c.deregister(_lost);
        assert_eq!(c.registered(), 0);
    }

    /// A smoke test on real threads: the waiter returns and leaves no
    /// registration. A lost wake-up would only cost a sleep slice here;
    /// the loom tests are what rule it out.
    #[test]
    fn a_spinner_returns_after_a_notify_and_deregisters() {
        for _ in 0..200 {
            let c = Arc::new(WaitCell::new());
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (c2, f2) = (c.clone(), flag.clone());
            let t = std::thread::spawn(move || {
                loop {
                    let mut ticket = c2.register_spinner();
                    if f2.load(std::sync::atomic::Ordering::Acquire) {
                        c2.deregister(ticket);
                        return;
                    }
                    c2.spin_then_sleep(&mut ticket, None);
                    c2.deregister(ticket);
                }
            });
            flag.store(true, std::sync::atomic::Ordering::Release);
            c.notify(1);
            t.join().unwrap();
            assert_eq!(c.registered(), 0);
        }
    }

    #[test]
    fn a_live_sleeper_survives_a_repair() {
        let c = Arc::new(WaitCell::new());
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _stale = c.register(); // a dead process's registration
        let (c2, f2) = (c.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            c2.wait_until(None, Spin::No, || {
                f2.load(std::sync::atomic::Ordering::Acquire)
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, std::sync::atomic::Ordering::Release);
        c.notify(u32::MAX);
        assert!(t.join().unwrap());
    }

    #[test]
    fn deadlines_are_honoured() {
        let c = WaitCell::new();
        let start = Instant::now();
        let d = start + Duration::from_millis(30);
        assert!(!c.wait_until(Some(d), Spin::Wait, || false));
        assert!(Instant::now() >= d);
        assert!(c.wait_until(Some(d), Spin::No, || true));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::AtomicU64;
    use loom::sync::Arc;
    use loom::thread;

    /// Waiter and waker of one state word committed by RMW: the waiter
    /// always returns (a lost wake-up would be a deadlock loom reports).
    #[test]
    fn loom_wait_and_wake_rmw() {
        loom::model(|| {
            let c = Arc::new(WaitCell::new());
            let state = Arc::new(AtomicU64::new(0));
            let (c2, s2) = (c.clone(), state.clone());
            let t = thread::spawn(move || {
                c2.wait_until(None, Spin::No, || s2.load(Ordering::Acquire) == 1)
            });
            state.swap(1, Ordering::SeqCst);
            c.notify(u32::MAX);
            assert!(t.join().unwrap());
        });
    }

    /// The same with a store commit (the fenced path, as without membarrier).
    #[test]
    fn loom_wait_and_wake_store_commit() {
        loom::model(|| {
            let c = Arc::new(WaitCell::new());
            let state = Arc::new(AtomicU64::new(0));
            let (c2, s2) = (c.clone(), state.clone());
            let t = thread::spawn(move || {
                c2.wait_until(None, Spin::No, || s2.load(Ordering::Acquire) == 1)
            });
            c.commit(|| state.store(1, Ordering::Release));
            c.wake(u32::MAX);
            assert!(t.join().unwrap());
        });
    }

    /// A stale registration (a sleeper that died) is repaired by a wake
    /// while a live waiter waits: the live one is still woken.
    #[test]
    fn loom_repair_keeps_live_sleepers() {
        loom::model(|| {
            let c = Arc::new(WaitCell::new());
            let _dead = c.register();
            let state = Arc::new(AtomicU64::new(0));
            let (c2, s2) = (c.clone(), state.clone());
            let t = thread::spawn(move || {
                c2.wait_until(None, Spin::No, || s2.load(Ordering::Acquire) >= 2)
            });
            // Two commits, each followed by a wake: the first may repair.
            state.fetch_add(1, Ordering::SeqCst);
            c.notify(u32::MAX);
            state.fetch_add(1, Ordering::SeqCst);
            c.notify(u32::MAX);
            assert!(t.join().unwrap());
        });
    }

    /// A condition variable's wait loop on `c` until `state` is 1:
    /// registered as a spinner before it checks, polls, may become a sleeper.
    fn spinner_waits_for_one(c: &WaitCell, state: &AtomicU64) -> bool {
        loop {
            let mut ticket = c.register_spinner();
            if state.load(Ordering::Acquire) == 1 {
                c.deregister(ticket);
                return true;
            }
            c.spin_then_sleep(&mut ticket, None);
            c.deregister(ticket);
        }
    }

    /// A condition variable's waiter against a waker that commits by RMW
    /// and notifies: the waiter always returns.
    #[test]
    fn loom_spinner_is_woken() {
        loom::model(|| {
            let c = Arc::new(WaitCell::new());
            let state = Arc::new(AtomicU64::new(0));
            let (c2, s2) = (c.clone(), state.clone());
            let t = thread::spawn(move || spinner_waits_for_one(&c2, &s2));
            state.swap(1, Ordering::SeqCst);
            c.notify(1);
            assert!(t.join().unwrap());
        });
    }

    /// A spinner that died leaves a registration; a notify clears it, and a
    /// live spinner registered beside it is still woken.
    #[test]
    fn loom_dead_spinner_is_cleared() {
        loom::model(|| {
            let c = Arc::new(WaitCell::new());
            let _dead = c.register_spinner();
            let state = Arc::new(AtomicU64::new(0));
            let (c2, s2) = (c.clone(), state.clone());
            let t = thread::spawn(move || spinner_waits_for_one(&c2, &s2));
            state.swap(1, Ordering::SeqCst);
            c.notify(1);
            assert!(t.join().unwrap());
            c.notify(1);
            assert_eq!(c.registered(), 0);
        });
    }

    /// One producer and one consumer handing a slot back and forth through
    /// two cells, as the ring's two sides do (positions committed with
    /// `commit`, each side waiting on its own cell).
    #[test]
    fn loom_ring_handshake() {
        loom::model(|| {
            let not_empty = Arc::new(WaitCell::new());
            let not_full = Arc::new(WaitCell::new());
            let tail = Arc::new(AtomicU64::new(0));
            let head = Arc::new(AtomicU64::new(0));
            const N: u64 = 2;
            const CAP: u64 = 1;
            let (ne, nf, t2, h2) = (
                not_empty.clone(),
                not_full.clone(),
                tail.clone(),
                head.clone(),
            );
            let consumer = thread::spawn(move || {
                for i in 0..N {
                    ne.wait_until(None, Spin::No, || t2.load(Ordering::Acquire) > i);
                    nf.commit(|| h2.store(i + 1, Ordering::Release));
                    nf.wake(u32::MAX);
                }
            });
            for i in 0..N {
                not_full.wait_until(None, Spin::No, || head.load(Ordering::Acquire) + CAP > i);
                not_empty.commit(|| tail.store(i + 1, Ordering::Release));
                not_empty.wake(u32::MAX);
            }
            consumer.join().unwrap();
            assert_eq!(head.load(Ordering::Acquire), N);
        });
    }
}
