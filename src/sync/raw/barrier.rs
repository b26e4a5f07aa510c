use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::wait::{Spin, WaitCell};

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
/// Waiters sleep on the crate's waiting primitive ([`WaitCell`]), notified
/// after every state change that releases them. `last_reset` records the generation a `reset()` ended, so its
/// waiters can tell "released by a reset" (an error) from "passed". It keeps
/// only the latest reset: a waiter that stays asleep through two resets (and
/// the rounds between them) would take the first one for a pass. With
/// processes as parties this needs a waiter descheduled for whole rounds of
/// the others, so it is documented rather than paid for with a history.
#[repr(C)]
pub(crate) struct RawBarrier {
    state: AtomicU64,
    parties: AtomicU32,
    last_reset: AtomicU32,
    cell: WaitCell,
}

impl RawBarrier {
    pub(crate) fn new(parties: u32) -> RawBarrier {
        RawBarrier {
            state: AtomicU64::new(0),
            parties: AtomicU32::new(parties),
            // An impossible generation, so no generation looks reset.
            last_reset: AtomicU32::new(u32::MAX),
            cell: WaitCell::new(),
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
        // SYNC POINT "wake": after the CAS that released the waiters.
        self.cell.notify(u32::MAX);
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
            // Saturating: the count is read from shared memory, where
            // another process may have written anything (a count at or
            // past `parties` just completes the generation).
            let next = if count.saturating_add(1) >= parties {
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
        if index.saturating_add(1) >= parties {
            self.wake_all();
            return BarrierOutcome::Passed(index);
        }
        // Wait for the generation to end.
        let mut outcome = None;
        loop {
            let done = self.cell.wait_until(deadline, Spin::Wait, || {
                outcome = self.check(generation, index);
                outcome.is_some()
            });
            if let (true, Some(outcome)) = (done, outcome) {
                return outcome;
            }
            // Timed out: break the barrier for everyone in this
            // generation, unless it completed meanwhile.
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
