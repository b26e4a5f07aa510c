use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::RawEvent;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::object::{Create, Layout, Object, Open, Uninit, fixed_len};
use crate::segment::Segment;

/// The layout of an [`Event`]: a header and a [`RawEvent`].
pub(crate) struct EventLayout;

// SAFETY: RawEvent is one atomic word: repr(C), any bits valid, accessed
// only atomically. The default length covers it.
unsafe impl Layout for EventLayout {
    type Shared = RawEvent;
    const KIND: ObjectKind = ObjectKind::Event;
}

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
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Event {
    object: Object<EventLayout>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("object", &self.object.describe())
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// Bytes an `Event` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        fixed_len::<RawEvent>()
    }

    fn init(mem: Uninit<EventLayout>) -> Result<()> {
        // SAFETY: the shared state's place is inside the new object,
        // aligned, and exclusively ours until it is published.
        unsafe { mem.shared().write(RawEvent::new()) };
        Ok(())
    }

    fn create_at(at: Create<'_>) -> Result<Event> {
        Object::create(at, 0, Self::init).map(|object| Event { object })
    }

    /// Creates a named event (clear); fails if the name exists.
    pub fn create(name: &str) -> Result<Event> {
        Self::create_at(Create::Named(name))
    }

    /// Opens a named event.
    pub fn open(name: &str) -> Result<Event> {
        Object::open(Open::Named(name)).map(|object| Event { object })
    }

    /// Opens the named event, or creates it (clear).
    pub fn open_or_create(name: &str) -> Result<Event> {
        Object::open_or_create(name, 0, Self::init).map(|object| Event { object })
    }

    /// Creates an anonymous event (clear).
    pub fn new() -> Result<Event> {
        Self::create_at(Create::Anonymous)
    }

    /// Creates an event at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize) -> Result<Event> {
        Self::create_at(Create::In(segment, offset))
    }

    /// Opens the event at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Event> {
        Object::open(Open::In(segment, offset)).map(|object| Event { object })
    }

    #[inline]
    fn raw(&self) -> &RawEvent {
        self.object.shared()
    }

    /// Sets the event, waking all waiters.
    #[inline]
    pub fn set(&self) {
        self.raw().set();
    }

    /// Clears the event.
    #[inline]
    pub fn clear(&self) {
        self.raw().clear();
    }

    /// Whether the event is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Blocks until the event is set.
    #[inline]
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
