use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::mutex::unreachable_init;
use super::raw::{PermitSlot, RawSemaphore, SemRef, UNBOUNDED};
use super::{handle_serde, placed_handle};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{TypeFingerprint, align_up};
use crate::segment::Segment;
use crate::segment::object::{self, Location, Placement, Spec};

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
pub struct Semaphore {
    pub(crate) place: Placement,
    raw: NonNull<RawSemaphore>,
}

placed_handle!(Semaphore);

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("object", &self.place.describe())
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
        if self.slots > 1 << 20 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "more than 1 048 576 holder slots",
            ));
        }
        Ok(())
    }

    fn locate(&self, loc: Location<'_>) -> Result<Semaphore> {
        self.check()?;
        Semaphore::locate(loc, Some(self))
    }

    /// Creates a named semaphore; fails if the name exists.
    pub fn create(&self, name: &str) -> Result<Semaphore> {
        let mode = crate::segment::DEFAULT_MODE;
        self.locate(Location::Create { name, mode })
    }

    /// Opens the named semaphore, or creates it with these options.
    pub fn open_or_create(&self, name: &str) -> Result<Semaphore> {
        let mode = crate::segment::DEFAULT_MODE;
        self.locate(Location::OpenOrCreate { name, mode })
    }

    /// Creates an anonymous semaphore.
    pub fn anonymous(&self) -> Result<Semaphore> {
        self.locate(Location::Anonymous)
    }

    /// Creates the semaphore at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(&self, segment: &Segment, offset: usize) -> Result<Semaphore> {
        self.locate(Location::CreateIn { segment, offset })
    }

    /// Bytes this semaphore needs inside a segment.
    pub fn size_in_segment(&self) -> usize {
        Semaphore::total_len(self.slots).unwrap_or(usize::MAX)
    }
}

const PAYLOAD: usize = object::payload_offset(std::mem::align_of::<RawSemaphore>());

impl Semaphore {
    fn total_len(slots: u32) -> Option<usize> {
        let len = PAYLOAD.checked_add(RawSemaphore::size_for(slots)?)?;
        align_up(len, 64)
    }

    fn locate(loc: Location<'_>, opts: Option<&SemaphoreBuilder>) -> Result<Semaphore> {
        let slots = opts.map_or(0, |o| o.slots);
        let spec = Spec {
            kind: ObjectKind::Semaphore,
            ty: TypeFingerprint::NONE,
            param: slots as u64,
            total_len: Self::total_len(slots)
                .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "too many holder slots"))?,
            align: crate::layout::header::HEADER_ALIGN,
        };
        let place = object::locate(
            loc,
            spec,
            |base| {
                let Some(o) = opts else {
                    return unreachable_init();
                };
                // SAFETY: the payload region (RawSemaphore plus `slots` holder
                // slots) is inside the object, ours during init, and aligned.
                unsafe {
                    RawSemaphore::init(
                        base.add(PAYLOAD) as *mut RawSemaphore,
                        o.initial,
                        o.max,
                        o.slots,
                    )
                }
            },
            |h| {
                let slots = u32::try_from(h.param).ok().filter(|&s| s <= 1 << 20)?;
                Self::total_len(slots)
            },
        )?;
        let raw = NonNull::new(place.ptr(PAYLOAD) as *mut RawSemaphore).expect("mapped");
        let sem = Semaphore { place, raw };
        // The slot table is sized from the header; the count the raw
        // semaphore keeps must agree, or it would index past the object.
        if sem.raw_nslots() as u64 != sem.place.header.param {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "holder slot count does not match the header",
            )
            .context(format!("cannot open {}", sem.place.describe())));
        }
        Ok(sem)
    }

    fn raw_nslots(&self) -> u32 {
        // SAFETY: points into the mapping held by `self.place`, initialised
        // before publication; reading one atomic field.
        unsafe { self.raw.as_ref() }.nslots()
    }

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
        Self::locate(Location::Open { name }, None)
    }

    /// Opens the named semaphore, or creates it with `initial` permits.
    pub fn open_or_create(name: &str, initial: u64) -> Result<Semaphore> {
        Self::builder(initial).open_or_create(name)
    }

    /// Creates an anonymous semaphore with `initial` permits.
    pub fn new(initial: u64) -> Result<Semaphore> {
        Self::builder(initial).anonymous()
    }

    /// Creates an anonymous bounded semaphore (Python's `BoundedSemaphore`):
    /// the value may never exceed `initial`.
    pub fn bounded(initial: u64) -> Result<Semaphore> {
        Self::builder(initial).max(initial).anonymous()
    }

    /// Creates a semaphore with default options at `offset` inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, initial: u64) -> Result<Semaphore> {
        Self::builder(initial).create_in(segment, offset)
    }

    /// Opens the semaphore at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Semaphore> {
        Self::locate(Location::OpenIn { segment, offset }, None)
    }

    fn raw(&self) -> SemRef<'_> {
        let slots = self.place.header.param as u32;
        // SAFETY: `raw` points into the mapping held by `self.place`,
        // initialised before publication; the header's validated length
        // covers `param` holder slots after it (checked in `locate`).
        unsafe { SemRef::new(self.raw.as_ref(), slots) }
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

handle_serde!(Semaphore);
