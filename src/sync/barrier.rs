use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::mutex::unreachable_init;
use super::raw::{BarrierOutcome, RawBarrier};
use super::{handle_serde, placed_handle};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::TypeFingerprint;
use crate::layout::header::ObjectKind;
use crate::segment::Segment;
use crate::segment::object::{self, Location, Placement, Spec};

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
pub struct Barrier {
    pub(crate) place: Placement,
    raw: NonNull<RawBarrier>,
}

placed_handle!(Barrier);

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("object", &self.place.describe())
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

const PAYLOAD: usize = object::payload_offset(std::mem::align_of::<RawBarrier>());

impl Barrier {
    /// Bytes a `Barrier` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        PAYLOAD + std::mem::size_of::<RawBarrier>()
    }

    fn locate(loc: Location<'_>, parties: Option<u32>) -> Result<Barrier> {
        if parties == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a barrier needs at least one party",
            ));
        }
        let spec = Spec {
            kind: ObjectKind::Barrier,
            ty: TypeFingerprint::NONE,
            param: parties.unwrap_or(0) as u64,
            total_len: Self::size_in_segment(),
            align: crate::layout::header::HEADER_ALIGN,
        };
        let place = object::locate(
            loc,
            spec,
            |base| {
                let Some(parties) = parties else {
                    return unreachable_init();
                };
                // SAFETY: the payload is inside the object, ours during init, aligned.
                unsafe { (base.add(PAYLOAD) as *mut RawBarrier).write(RawBarrier::new(parties)) };
                Ok(())
            },
            |h| (h.param > 0 && h.param <= u32::MAX as u64).then_some(Self::size_in_segment()),
        )?;
        let raw = NonNull::new(place.ptr(PAYLOAD) as *mut RawBarrier).expect("mapped");
        let barrier = Barrier { place, raw };
        if barrier.parties() as u64 != barrier.place.header.param {
            return Err(
                Error::new(ErrorKind::Corrupt, "party count does not match the header")
                    .context(format!("cannot open {}", barrier.place.describe())),
            );
        }
        Ok(barrier)
    }

    /// Creates a named barrier for `parties` processes; fails if the name exists.
    pub fn create(name: &str, parties: u32) -> Result<Barrier> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(Location::Create { name, mode }, Some(parties))
    }

    /// Opens a named barrier.
    pub fn open(name: &str) -> Result<Barrier> {
        Self::locate(Location::Open { name }, None)
    }

    /// Opens the named barrier, or creates it for `parties` processes.
    pub fn open_or_create(name: &str, parties: u32) -> Result<Barrier> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(Location::OpenOrCreate { name, mode }, Some(parties))
    }

    /// Creates an anonymous barrier for `parties` processes.
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::locate(Location::Anonymous, Some(parties))
    }

    /// Creates a barrier at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, parties: u32) -> Result<Barrier> {
        Self::locate(Location::CreateIn { segment, offset }, Some(parties))
    }

    /// Opens the barrier at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Barrier> {
        Self::locate(Location::OpenIn { segment, offset }, None)
    }

    fn raw(&self) -> &RawBarrier {
        // SAFETY: points into the mapping held by `self.place`, initialised
        // before publication; RawBarrier is all atomics.
        unsafe { self.raw.as_ref() }
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

handle_serde!(Barrier);
