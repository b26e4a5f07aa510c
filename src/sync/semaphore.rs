use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::{PermitSlot, RawSemaphore, SemRef, UNBOUNDED};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::align_up;
use crate::layout::header::ObjectKind;
use crate::object::{Create, Layout, Object, Open, Uninit};
use crate::segment::Segment;

/// Holder slots a semaphore gets unless the builder says otherwise.
pub const DEFAULT_HOLDER_SLOTS: u32 = 64;

/// A counting semaphore shared between processes: Python's
/// `multiprocessing.Semaphore` and `BoundedSemaphore`.
///
/// [`acquire`](Semaphore::acquire) returns a [`SemaphorePermit`] that gives
/// the permit back when dropped. Permits are recorded per process, so the
/// permits of a process that dies — SIGKILL included — are returned to the
/// semaphore rather than lost: a waiter notices within about half a second.
/// (Up to [`DEFAULT_HOLDER_SLOTS`] processes can hold permits at once with
/// this guarantee; see [`SemaphoreBuilder::holder_slots`]. Permits taken
/// beyond that still work but are not recovered after a crash.)
///
/// Python-style use, where one process acquires and another releases,
/// works through [`SemaphorePermit::forget`] and [`Semaphore::release`]:
///
/// ```
/// use ipckit::sync::Semaphore;
/// # fn main() -> ipckit::Result<()> {
/// let items = Semaphore::new(0)?;  // counts produced items
/// items.release()?;                // producer
/// items.acquire()?.forget();       // consumer: take the item for good
/// assert_eq!(items.value(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Semaphore {
    object: Object<SemaphoreLayout>,
}

/// The most holder slots a semaphore may have.
const MAX_SLOTS: u32 = 1 << 20;

/// The layout of a [`Semaphore`]: a header (parameter: the holder slot
/// count), a [`RawSemaphore`] and its holder slots.
pub(crate) struct SemaphoreLayout;

// SAFETY: RawSemaphore and its slots are atomic words and a process-shared
// lock: repr(C), any bits valid. `total_len` covers the slots the header's
// parameter counts, and `check_opened` makes the count inside agree.
unsafe impl Layout for SemaphoreLayout {
    type Shared = RawSemaphore;
    const KIND: ObjectKind = ObjectKind::Semaphore;
    fn total_len(param: u64) -> Option<usize> {
        let slots = u32::try_from(param).ok().filter(|&s| s <= MAX_SLOTS)?;
        let len = Self::SHARED_AT.checked_add(RawSemaphore::size_for(slots)?)?;
        align_up(len, 64)
    }
    fn check_opened(object: &Object<Self>) -> Result<()> {
        // The slot table is sized from the header; the count the raw
        // semaphore keeps must agree, or it would index past the object.
        if object.shared().nslots() as u64 == object.param() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Corrupt,
                "holder slot count does not match the header",
            ))
        }
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("object", &self.object.describe())
            .field("value", &self.value())
            .field("max", &self.max())
            .finish()
    }
}

/// A permit taken from a [`Semaphore`]; dropping it gives the permit back.
#[must_use = "the permit is returned as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
    slot: Option<PermitSlot>,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit for good: the semaphore's count stays lowered (Python's
    /// `acquire()` without a matching `release()` by this process).
    pub fn forget(mut self) {
        if let Some(slot) = self.slot.take() {
            // The only failure is an OS error taking the internal lock; the
            // permit then simply stays recorded and returns when we exit.
            let _ = self.sem.raw().forget_permit(slot);
        }
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = self.sem.raw().release_permit(slot);
        }
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

/// Options for a new semaphore. See [`Semaphore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SemaphoreBuilder {
    initial: u64,
    max: u64,
    slots: u32,
}

impl SemaphoreBuilder {
    /// Makes the semaphore bounded: [`Semaphore::release`] fails with
    /// [`ErrorKind::LimitExceeded`] if the value would exceed `max` (Python's
    /// `BoundedSemaphore`, whose bound is its initial value).
    pub fn max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// How many processes can hold permits at once with crash recovery
    /// (default [`DEFAULT_HOLDER_SLOTS`]). Each slot costs 24 bytes.
    pub fn holder_slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    fn check(&self) -> Result<()> {
        if self.max != UNBOUNDED && self.initial > self.max {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "initial value {} exceeds the bound {}",
                    self.initial, self.max
                ),
            ));
        }
        if self.slots > MAX_SLOTS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "more than 1 048 576 holder slots",
            ));
        }
        Ok(())
    }

    fn init(&self) -> Result<impl FnOnce(Uninit<SemaphoreLayout>) -> Result<()>> {
        self.check()?;
        let (initial, max, slots) = (self.initial, self.max, self.slots);
        Ok(move |mem: Uninit<SemaphoreLayout>| {
            // SAFETY: the payload (RawSemaphore plus `slots` holder slots)
            // is inside the new object (its length came from `slots`),
            // aligned, and exclusively ours until it is published.
            unsafe { RawSemaphore::init(mem.shared(), initial, max, slots) }
        })
    }

    fn create_at(&self, at: Create<'_>) -> Result<Semaphore> {
        Object::create(at, self.slots as u64, self.init()?).map(|object| Semaphore { object })
    }

    /// Creates a named semaphore; fails if the name exists.
    pub fn create(&self, name: &str) -> Result<Semaphore> {
        self.create_at(Create::Named(name))
    }

    /// Opens the named semaphore, or creates it with these options.
    pub fn open_or_create(&self, name: &str) -> Result<Semaphore> {
        Object::open_or_create(name, self.slots as u64, self.init()?)
            .map(|object| Semaphore { object })
    }

    /// Creates an anonymous semaphore.
    // The builder's verbs are the type's constructors: `new` is anonymous.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(&self) -> Result<Semaphore> {
        self.create_at(Create::Anonymous)
    }

    /// Creates the semaphore at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(&self, segment: &Segment, offset: usize) -> Result<Semaphore> {
        self.create_at(Create::In(segment, offset))
    }

    /// Bytes this semaphore needs inside a segment.
    pub fn size_in_segment(&self) -> usize {
        Object::<SemaphoreLayout>::size_in_segment(self.slots as u64).unwrap_or(usize::MAX)
    }
}

impl Semaphore {
    /// Options for a semaphore starting at `initial`: bound, holder slots,
    /// and where to create it.
    pub fn builder(initial: u64) -> SemaphoreBuilder {
        SemaphoreBuilder {
            initial,
            max: UNBOUNDED,
            slots: DEFAULT_HOLDER_SLOTS,
        }
    }

    /// Creates a named semaphore with `initial` permits; fails if the name exists.
    pub fn create(name: &str, initial: u64) -> Result<Semaphore> {
        Self::builder(initial).create(name)
    }

    /// Opens a named semaphore.
    pub fn open(name: &str) -> Result<Semaphore> {
        Object::open(Open::Named(name)).map(|object| Semaphore { object })
    }

    /// Opens the named semaphore, or creates it with `initial` permits.
    pub fn open_or_create(name: &str, initial: u64) -> Result<Semaphore> {
        Self::builder(initial).open_or_create(name)
    }

    /// Creates an anonymous semaphore with `initial` permits.
    pub fn new(initial: u64) -> Result<Semaphore> {
        Self::builder(initial).new()
    }

    /// Creates an anonymous bounded semaphore (Python's `BoundedSemaphore`):
    /// the value may never exceed `initial`.
    pub fn bounded(initial: u64) -> Result<Semaphore> {
        Self::builder(initial).max(initial).new()
    }

    /// Creates a semaphore with default options at `offset` inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, initial: u64) -> Result<Semaphore> {
        Self::builder(initial).create_in(segment, offset)
    }

    /// Opens the semaphore at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Semaphore> {
        Object::open(Open::In(segment, offset)).map(|object| Semaphore { object })
    }

    fn raw(&self) -> SemRef<'_> {
        let slots = self.object.param() as u32;
        // SAFETY: the shared state lives as long as `self.object`; the
        // validated header's length covers `param` holder slots after it and
        // the raw count agrees (`SemaphoreLayout::check_opened`).
        unsafe { SemRef::new(self.object.shared(), slots) }
    }

    fn permit(&self, slot: PermitSlot) -> SemaphorePermit<'_> {
        SemaphorePermit {
            sem: self,
            slot: Some(slot),
        }
    }

    /// Takes a permit, blocking until one is available.
    pub fn acquire(&self) -> Result<SemaphorePermit<'_>> {
        self.raw().acquire(None).map(|s| self.permit(s))
    }

    /// Takes a permit if one is available now; otherwise a would-block error.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>> {
        match self.raw().try_acquire()? {
            Some(s) => Ok(self.permit(s)),
            None => Err(Error::new(
                ErrorKind::WouldBlock,
                "no semaphore permit is available",
            )),
        }
    }

    /// Takes a permit, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit<'_>> {
        self.raw()
            .acquire(deadline_after(timeout))
            .map(|s| self.permit(s))
    }

    /// Takes a permit, waiting until `deadline` at the latest.
    pub fn acquire_deadline(&self, deadline: Instant) -> Result<SemaphorePermit<'_>> {
        self.raw().acquire(Some(deadline)).map(|s| self.permit(s))
    }

    /// Adds one permit (Python's `release()`), waking a waiter. Fails with
    /// [`ErrorKind::LimitExceeded`] if a bounded semaphore would exceed its bound.
    pub fn release(&self) -> Result<()> {
        self.raw().release(1)
    }

    /// Adds `n` permits at once.
    pub fn release_many(&self, n: u64) -> Result<()> {
        self.raw().release(n)
    }

    /// The number of permits available now (Python's `get_value()`).
    pub fn value(&self) -> u64 {
        self.raw().value()
    }

    /// The bound, if bounded.
    pub fn max(&self) -> Option<u64> {
        Some(self.raw().max()).filter(|&m| m != UNBOUNDED)
    }

    /// Gives back permits held by processes that have died; returns whether
    /// any came back. Waiters do this on their own; call it to recover eagerly.
    pub fn reclaim_dead_holders(&self) -> Result<bool> {
        self.raw().reclaim_dead()
    }
}
