use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::{BarrierOutcome, RawBarrier};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::object::{Create, Layout, Object, Open, Uninit, fixed_len};
use crate::segment::Segment;

/// The layout of a [`Barrier`]: a header (parameter: the party count) and a
/// [`RawBarrier`].
pub(crate) struct BarrierLayout;

// SAFETY: RawBarrier is atomic words: repr(C), any bits valid, accessed only
// atomically. The length is the fixed one.
unsafe impl Layout for BarrierLayout {
    type Shared = RawBarrier;
    const KIND: ObjectKind = ObjectKind::Barrier;
    fn total_len(param: u64) -> Option<usize> {
        (1..=u32::MAX as u64)
            .contains(&param)
            .then_some(fixed_len::<RawBarrier>())
    }
    fn check_opened(object: &Object<Self>) -> Result<()> {
        if object.shared().parties() as u64 == object.param() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Corrupt,
                "party count does not match the header",
            ))
        }
    }
}

/// A reusable barrier for a fixed number of parties: Python's
/// `multiprocessing.Barrier`.
///
/// Each [`wait`](Barrier::wait) blocks until `parties` waits are in progress,
/// then all return and the barrier is ready for the next round. As in Python,
/// a wait that times out *breaks* the barrier: the other waiters of that round
/// and all later ones fail with [`ErrorKind::BrokenBarrier`] until
/// [`reset`](Barrier::reset). [`abort`](Barrier::abort) breaks it on purpose.
///
/// The state is one 64-bit word changed by compare-and-swap, so a process
/// killed at any point leaves a consistent barrier. A process killed while
/// waiting still counts as arrived for its round (it did arrive); a party
/// that never arrives keeps the others waiting, as in Python — use timeouts.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Barrier {
    object: Object<BarrierLayout>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("object", &self.object.describe())
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

/// What a successful [`Barrier::wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    index: u32,
    parties: u32,
}

impl BarrierWaitResult {
    /// The arrival index, `0..parties` (Python's return value of `wait()`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// True for exactly one waiter per round: the last to arrive.
    pub fn is_leader(&self) -> bool {
        self.index + 1 == self.parties
    }
}

impl Barrier {
    /// Bytes a `Barrier` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        fixed_len::<RawBarrier>()
    }

    fn init(parties: u32) -> Result<impl FnOnce(Uninit<BarrierLayout>) -> Result<()>> {
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a barrier needs at least one party",
            ));
        }
        Ok(move |mem: Uninit<BarrierLayout>| {
            // SAFETY: the shared state's place is inside the new object,
            // aligned, and exclusively ours until it is published.
            unsafe { mem.shared().write(RawBarrier::new(parties)) };
            Ok(())
        })
    }

    fn create_at(at: Create<'_>, parties: u32) -> Result<Barrier> {
        Object::create(at, parties as u64, Self::init(parties)?).map(|object| Barrier { object })
    }

    /// Creates a named barrier for `parties` processes; fails if the name exists.
    pub fn create(name: &str, parties: u32) -> Result<Barrier> {
        Self::create_at(Create::Named(name), parties)
    }

    /// Opens a named barrier.
    pub fn open(name: &str) -> Result<Barrier> {
        Object::open(Open::Named(name)).map(|object| Barrier { object })
    }

    /// Opens the named barrier, or creates it for `parties` processes.
    pub fn open_or_create(name: &str, parties: u32) -> Result<Barrier> {
        Object::open_or_create(name, parties as u64, Self::init(parties)?)
            .map(|object| Barrier { object })
    }

    /// Creates an anonymous barrier for `parties` processes.
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::create_at(Create::Anonymous, parties)
    }

    /// Creates a barrier at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, parties: u32) -> Result<Barrier> {
        Self::create_at(Create::In(segment, offset), parties)
    }

    /// Opens the barrier at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Barrier> {
        Object::open(Open::In(segment, offset)).map(|object| Barrier { object })
    }

    fn raw(&self) -> &RawBarrier {
        self.object.shared()
    }

    /// The number of parties needed to pass.
    pub fn parties(&self) -> u32 {
        self.raw().parties()
    }

    /// How many parties are currently waiting.
    pub fn n_waiting(&self) -> u32 {
        self.raw().n_waiting()
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.raw().is_broken()
    }

    fn finish(&self, outcome: BarrierOutcome) -> Result<BarrierWaitResult> {
        match outcome {
            BarrierOutcome::Passed(index) => Ok(BarrierWaitResult {
                index,
                parties: self.parties(),
            }),
            BarrierOutcome::Broken => Err(Error::new(
                ErrorKind::BrokenBarrier,
                "barrier is broken (a waiter timed out, or abort() or reset() was called)",
            )),
            BarrierOutcome::TimedOut => Err(Error::new(
                ErrorKind::Timeout,
                "timed out waiting at the barrier (the barrier is now broken)",
            )),
        }
    }

    /// Waits until all parties have called `wait`.
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.finish(self.raw().wait(None))
    }

    /// Like [`wait`](Self::wait), giving up (and breaking the barrier) after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult> {
        self.finish(self.raw().wait(deadline_after(timeout)))
    }

    /// Like [`wait`](Self::wait), giving up (and breaking the barrier) at `deadline`.
    pub fn wait_deadline(&self, deadline: Instant) -> Result<BarrierWaitResult> {
        self.finish(self.raw().wait(Some(deadline)))
    }

    /// Breaks the barrier: current and future waits fail until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.raw().abort();
    }

    /// Returns the barrier to its initial, empty state. Processes waiting in
    /// the current round fail with a broken-barrier error.
    pub fn reset(&self) {
        self.raw().reset();
    }
}
