use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::mutex::unreachable_init;
use super::raw::RawEvent;
use super::{handle_serde, placed_handle, plain_constructors};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::TypeFingerprint;
use crate::layout::header::ObjectKind;
use crate::segment::Segment;
use crate::segment::object::{self, Location, Placement, Spec};

/// A manual-reset event shared between processes: Python's
/// `multiprocessing.Event`.
///
/// [`set`](Event::set) wakes every waiter in every process and leaves the
/// event set until [`clear`](Event::clear). Waiting spins briefly, then sleeps
/// on a futex; `set` with nobody asleep makes no system call. Everything a
/// process wrote before `set` is visible to a waiter after its wait returns.
///
/// ```
/// use ipckit::sync::Event;
/// # fn main() -> ipckit::Result<()> {
/// let ready = Event::new()?;
/// assert!(!ready.is_set());
/// ready.set();
/// ready.wait();                     // returns at once
/// # Ok(()) }
/// ```
pub struct Event {
    pub(crate) place: Placement,
    raw: NonNull<RawEvent>,
}

placed_handle!(Event);

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("object", &self.place.describe())
            .field("is_set", &self.is_set())
            .finish()
    }
}

const PAYLOAD: usize = object::payload_offset(std::mem::align_of::<RawEvent>());

impl Event {
    /// Bytes an `Event` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        PAYLOAD + std::mem::size_of::<RawEvent>()
    }

    fn locate(loc: Location<'_>, create: bool) -> Result<Event> {
        let spec = Spec {
            kind: ObjectKind::Event,
            ty: TypeFingerprint::NONE,
            param: 0,
            total_len: Self::size_in_segment(),
            align: crate::layout::header::HEADER_ALIGN,
        };
        let place = object::locate(
            loc,
            spec,
            |base| {
                if !create {
                    return unreachable_init();
                }
                // SAFETY: the payload is inside the object, ours during init, aligned.
                unsafe { (base.add(PAYLOAD) as *mut RawEvent).write(RawEvent::new()) };
                Ok(())
            },
            |_| Some(Self::size_in_segment()),
        )?;
        let raw = NonNull::new(place.ptr(PAYLOAD) as *mut RawEvent).expect("mapped");
        Ok(Event { place, raw })
    }

    plain_constructors!("event");

    fn raw(&self) -> &RawEvent {
        // SAFETY: points into the mapping held by `self.place`, initialised
        // before publication; RawEvent is one atomic.
        unsafe { self.raw.as_ref() }
    }

    /// Sets the event, waking all waiters.
    pub fn set(&self) {
        self.raw().set();
    }

    /// Clears the event.
    pub fn clear(&self) {
        self.raw().clear();
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Blocks until the event is set.
    pub fn wait(&self) {
        self.raw().wait(None);
    }

    /// Returns at once: `Ok` if set, a would-block error if not.
    pub fn try_wait(&self) -> Result<()> {
        if self.is_set() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::WouldBlock, "event is not set"))
        }
    }

    /// Blocks until the event is set or `timeout` passes (a timeout error).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        match deadline_after(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => {
                self.wait();
                Ok(())
            }
        }
    }

    /// Blocks until the event is set or `deadline` passes (a timeout error).
    pub fn wait_deadline(&self, deadline: Instant) -> Result<()> {
        if self.raw().wait(Some(deadline)) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Timeout,
                "timed out waiting for the event to be set",
            ))
        }
    }
}

handle_serde!(Event);
