//! The spin policy: how long a waiter polls before it sleeps, and when it
//! must not poll at all.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// Whether spinning can help: not in a process confined to one CPU, where
/// the spinner only delays whatever it waits for. Read once per process.
/// Measured: see `docs/design-measurements.md`, "No spinning in a process
/// confined to one CPU".
pub(crate) fn spin_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Whether the machine has more runnable threads than CPUs. A waiter that
/// spins then takes a CPU from a runnable thread — often the very peer it
/// waits for — so it sleeps instead (a [`Spinner`] after [`BUSY_AFTER`]
/// polls). Read from `/proc/loadavg` (a few microseconds) at most every
/// [`BUSY_CHECK`] per thread, timed by the coarse clock, which is read only
/// every [`CLOCK_EVERY`] asks: every wait that polls past its first few
/// asks, so this runs up to once per hand-off (`Instant::now()` here
/// cost ~23 ns of a ~100 ns `Event` hand-off; see
/// `docs/design-measurements.md`, "No clock read before the first polls").
#[inline]
pub(crate) fn machine_busy() -> bool {
    // Most asks reuse the answer without reading even the coarse clock: a
    // hand-off asks once per wait. Kept small so that it inlines, the
    // thread-local's access included; the rest is out of line.
    let (at, busy, asks) = BUSY_SEEN.get();
    if at != 0 && asks < CLOCK_EVERY {
        BUSY_SEEN.set((at, busy, asks + 1));
        return busy;
    }
    recheck_machine_busy(at, busy)
}

thread_local! {
    /// (coarse ns when read, busy, asks since the clock was last read); at
    /// 0: never read.
    static BUSY_SEEN: std::cell::Cell<(u64, bool, u32)> = const { std::cell::Cell::new((0, false, 0)) };
}

#[cold]
#[inline(never)]
fn recheck_machine_busy(at: u64, busy: bool) -> bool {
    let now = crate::platform::coarse_nanos();
    if at != 0 && now.saturating_sub(at) < BUSY_CHECK.as_nanos() as u64 {
        BUSY_SEEN.set((at, busy, 0));
        return busy;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let busy = crate::platform::runnable_threads().is_some_and(|n| n > cpus);
    BUSY_SEEN.set((now.max(1), busy, 0));
    busy
}

/// At which poll a [`Spinner`] asks [`machine_busy`]. Not at the first:
/// a hand-off between running processes mostly ends within the first few
/// polls, and the ask (a thread-local read and write) would sit on its
/// path; on an oversubscribed machine the waiter spends `BUSY_AFTER - 1`
/// pauses (~25 ns each here) before it finds out, a small fraction of the
/// system calls it is about to make. See `docs/design-measurements.md`,
/// "The `Segment` + `Event` round trip since a6c686b".
pub(crate) const BUSY_AFTER: u32 = 4;

/// How many asks of [`machine_busy`] reuse its answer before it reads the
/// clock to see whether [`BUSY_CHECK`] has passed: an answer is at most
/// this many waits or `BUSY_CHECK` old, whichever comes later.
const CLOCK_EVERY: u32 = 16;

/// How often a thread re-reads whether the machine is oversubscribed.
pub(crate) const BUSY_CHECK: Duration = Duration::from_millis(10);

/// How long a waiter for another process's *action* (an event set, a queue
/// message, a barrier's last arrival) polls before it sleeps: about the cost
/// of a futex sleep and wake-up on the project machine, the classic
/// "spin for as long as blocking would cost" rule, which is never worse than
/// twice the better choice. Measured: see `docs/design-measurements.md`,
/// "How long a waiter polls before it sleeps".
pub(crate) const WAIT_SPIN: Duration = Duration::from_micros(25);

/// A bounded spin: `spin()` pauses and says whether the budget allows
/// another poll. It reads the clock only every 32 polls, first at the
/// 32nd (most waits end before: a hand-off between running processes takes
/// a few polls), and counts the budget from there, and backs off to 16
/// pauses between polls, so the polled line is left to its writer.
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

    /// Pauses; `false` once [`WAIT_SPIN`] has passed since the 32nd call,
    /// at once in a process confined to one CPU ([`spin_allowed`]), and at
    /// the [`BUSY_AFTER`]th call on an oversubscribed machine
    /// ([`machine_busy`]).
    ///
    /// Inlined, its clock read out of line: a waiter's poll loop is then
    /// one loop (load, pause, load), with no call per poll. The poll that
    /// sees the peer's commit is the hand-off's latency; see
    /// `docs/design-measurements.md`, "The `Segment` + `Event` round trip
    /// since a6c686b".
    #[inline]
    pub(crate) fn spin(&mut self) -> bool {
        if !spin_allowed() {
            return false;
        }
        self.polls += 1;
        if self.polls == BUSY_AFTER && machine_busy() {
            return false;
        }
        if self.polls % 32 == 0 && !self.budget_left() {
            return false;
        }
        for _ in 0..(1u32 << (self.polls / 64).min(4)) {
            std::hint::spin_loop();
        }
        true
    }

    /// Whether [`WAIT_SPIN`] has not yet passed since the first clock read.
    #[inline(never)]
    fn budget_left(&mut self) -> bool {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        now.duration_since(start) < WAIT_SPIN
    }

    /// Loom's budget: two polls (see `sync::raw::wait`).
    #[cfg(loom)]
    pub(crate) fn spin_loom(&mut self) -> bool {
        self.polls += 1;
        self.polls <= 2
    }
}

pub(crate) fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

pub(crate) fn timeout_error(what: &str) -> Error {
    Error::new(ErrorKind::Timeout, format!("timed out waiting for {what}"))
}
