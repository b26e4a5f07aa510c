//! Multi-producer, multi-consumer queues in shared memory: Python's
//! `multiprocessing.Queue` and `JoinableQueue`.
//!
//! A [`Queue<T>`] is a ring of variable-size frames in one segment, bounded
//! by a byte capacity (rounded up to a power of two, at least 4 KiB) and
//! optionally by a number of messages. Values are serde-encoded (postcard);
//! raw bytes travel through `put_bytes` / `get_bytes_into` without encoding.
//!
//! ```
//! use ipckit::queue::Queue;
//! # fn main() -> ipckit::Result<()> {
//! let q = Queue::<(u32, String)>::new(1 << 20)?;   // anonymous: pass it to children
//! q.put(&(1, "one".to_owned()))?;
//! q.put(&(2, "two".to_owned()))?;
//! assert_eq!(q.len(), 2);
//! assert_eq!(q.get()?, (1, "one".to_owned()));
//! q.close();
//! assert_eq!(q.get()?.0, 2);           // a closed queue still drains
//! assert!(q.get().unwrap_err().is_closed());
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! Producers serialise on one robust lock and consumers on another, so a
//! producer and a consumer never wait for each other's lock and copy in
//! parallel; each side commits a message with a single 64-bit store, so a
//! process killed at any instruction leaves every message either fully
//! queued or not at all. When nobody sleeps, `put` and `get` make no system
//! call. A waiting side spins briefly, then sleeps on a futex.
//!
//! A ring larger than 4 MiB is used from its start for as long as its
//! consumer keeps up: a producer of a message of 4 KiB or more whose place
//! is past the first 4 MiB, with at most 2 MiB queued, writes it at the
//! ring's start behind a skip marker over the rest, so large messages move
//! through memory the caches still hold instead of through the whole ring.
//! The rest of the ring takes a backlog: the skip is consumed with the
//! frames before it, and a producer that finds the ring full with a skip
//! at the head and no consumer at work takes its room back itself.
//!
//! # Messages larger than the ring
//!
//! A message whose frame would take more than half the ring is *streamed*
//! through it in chunks of a quarter of the ring: the producer holds the
//! producer lock for the whole message and the consumer the consumer lock,
//! so a 1 GiB message crosses a 64 MiB ring while both sides copy in
//! parallel. Nothing is written anywhere else, so nothing can leak. If the
//! producer dies or times out mid-message, the stream is ended with an abort
//! marker and consumers discard the partial message; if the consumer dies
//! mid-message, the next consumer skips the rest of it.
//!
//! Timeouts hold in the middle of a message too: a `try_get` or a
//! `get_timeout` whose time runs out while the producer is slow or stopped
//! (SIGSTOP, a debugger) returns `WouldBlock` or `Timeout` and keeps the
//! part it read, in this process; the next get of this queue *in this
//! process* continues the message, which thus arrives whole and once.
//! Meanwhile other processes see nothing to read (everything behind that
//! message waits for it, as in any FIFO) and their own timeouts hold. If
//! the keeping process exits, the rest of the message is skipped, as after
//! a consumer's death.
//!
//! Each handle has a message size limit ([`Queue::max_message_size`],
//! default 1 GiB): `put` refuses a larger message with an
//! [`ErrorKind::LimitExceeded`] error and queues nothing; a larger message
//! from a producer with a higher limit is skipped by `get` and reported as
//! the same error.

mod frame;
mod ring;

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use frame::{MAX_CAPACITY, MAX_ITEMS, MIN_CAPACITY};
use ring::{QueueShared, Read, Ring};

use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{TypeFingerprint, align_up};
use crate::object::{Create, Layout, Object, Open, Uninit, payload_offset};
use crate::segment::Segment;

pub use crate::codec::DEFAULT_MAX_MESSAGE;

const SHARED_AT: usize = payload_offset(std::mem::align_of::<QueueShared>());
const RING_AT: usize = SHARED_AT + std::mem::size_of::<QueueShared>();
/// Offset of the ring's bytes: after the shared state, on a 128-byte line pair.
const DATA_AT: usize = match align_up(RING_AT, 128) {
    Some(v) => v,
    None => RING_AT,
};

fn total_len(cap: usize) -> Option<usize> {
    DATA_AT.checked_add(cap)
}

mod sealed {
    /// Keeps [`Flavor`](super::Flavor) closed: the two below are all there is.
    pub trait Sealed {
        const KIND: crate::layout::header::ObjectKind;
    }
}

/// Which of Python's two queue classes a [`Queue`] is: [`Plain`]
/// (`multiprocessing.Queue`) or [`Joinable`] (`JoinableQueue`, see
/// [`JoinableQueue`]). A type parameter rather than a second type, so both
/// share one implementation of every operation.
pub trait Flavor: sealed::Sealed + 'static {}

/// The [`Flavor`] of a plain queue: Python's `multiprocessing.Queue`.
#[derive(Debug)]
pub enum Plain {}

/// The [`Flavor`] of a joinable queue: Python's `JoinableQueue`.
#[derive(Debug)]
pub enum Joinable {}

impl sealed::Sealed for Plain {
    const KIND: ObjectKind = ObjectKind::Queue;
}
impl Flavor for Plain {}
impl sealed::Sealed for Joinable {
    const KIND: ObjectKind = ObjectKind::JoinableQueue;
}
impl Flavor for Joinable {}

/// The layout of a queue: a header (parameter: the ring's capacity in
/// bytes), the [`QueueShared`] state, then the ring at `DATA_AT`.
pub(crate) struct QueueLayout<T, F>(PhantomData<fn(T) -> (T, F)>);

// SAFETY: QueueShared is repr(C) of atomics and robust process-shared
// locks (any bits valid); the ring after it holds bytes, only copied in and
// out of ranges the locks and the committed head/tail reserve, every
// position checked against `cap`. `total_len` covers the shared state and
// `cap` ring bytes for every capacity it accepts.
unsafe impl<T, F: Flavor> Layout for QueueLayout<T, F> {
    type Shared = QueueShared;
    const KIND: ObjectKind = <F as sealed::Sealed>::KIND;
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<T>()
    }
    fn total_len(param: u64) -> Option<usize> {
        if !frame::valid_capacity(param) {
            return None;
        }
        total_len(usize::try_from(param).ok()?)
    }
}

thread_local! {
    static PUT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static GET_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How long an operation may block.
#[derive(Clone, Copy)]
enum Blocking {
    Forever,
    Until(Instant),
    No,
}

impl Blocking {
    /// For a `_timeout` call: `Until` its deadline, or `Forever` if the
    /// deadline cannot be represented.
    fn after(timeout: Duration) -> Blocking {
        deadline_after(timeout).map_or(Blocking::Forever, Blocking::Until)
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Blocking::Forever => None,
            Blocking::Until(d) => Some(d),
            Blocking::No => Some(Instant::now()),
        }
    }
}

/// A queue's state as `ipckit::admin` reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub capacity: u64,
    pub max_items: u64,
    pub items: u64,
    pub used_bytes: u64,
    /// Messages put so far, modulo 2^28.
    pub produced: u64,
    /// Messages taken so far, modulo 2^28.
    pub consumed: u64,
    /// Messages put and not yet marked done (joinable queues).
    pub unfinished: Option<u64>,
    pub shared: ring::SharedSnapshot,
}

/// Reads the state of the queue that starts at offset 0 of `segment`,
/// whose header (already decoded, state already seen as ready with an
/// Acquire load) is `header`. Takes no lock and writes nothing; every
/// value is checked before it is used, so a corrupt queue gives an error
/// or odd numbers, never undefined behaviour.
/// How many leading bytes of a queue's segment [`snapshot`] reads.
pub(crate) const SNAPSHOT_LEN: usize = RING_AT;

/// A queue's state from `segment`, which holds at least the first
/// [`SNAPSHOT_LEN`] bytes of a queue object of `object_len` bytes (the
/// object itself, or a private copy of its start).
pub(crate) fn snapshot(
    segment: &Segment,
    header: &crate::layout::header::Header,
    object_len: u64,
) -> Result<Snapshot> {
    let corrupt = |why: String| Error::new(ErrorKind::Corrupt, why);
    let joinable = match header.kind() {
        Some(ObjectKind::Queue) => false,
        Some(ObjectKind::JoinableQueue) => true,
        _ => {
            return Err(Error::new(
                ErrorKind::WrongKind,
                "the object is not a queue",
            ));
        }
    };
    if !frame::valid_capacity(header.param) {
        return Err(corrupt(format!("invalid queue capacity {}", header.param)));
    }
    let cap = usize::try_from(header.param).map_err(|_| corrupt("capacity too large".into()))?;
    match total_len(cap) {
        Some(len) if len as u64 == header.total_len && len as u64 <= object_len => {}
        _ => {
            return Err(corrupt(format!(
                "header length {} does not match a queue of {cap} bytes in a segment of {object_len}",
                header.total_len,
            )));
        }
    }
    let at = segment.ptr_at(SHARED_AT, std::mem::size_of::<QueueShared>())?;
    // SAFETY: the range was bounds-checked just above and SHARED_AT is
    // aligned for QueueShared (the mapping is page-aligned). Every field is
    // an atomic or a pthread mutex read only through an atomic load of its
    // lock word, so any bytes — even garbage — are valid to read, and
    // `segment` keeps the mapping alive for the borrow.
    let shared = unsafe { &*(at as *const QueueShared) }.snapshot();
    let (hpos, consumed) = frame::unpack(shared.head);
    let (tpos, produced) = frame::unpack(shared.tail);
    Ok(Snapshot {
        capacity: cap as u64,
        max_items: shared.max_items.min(MAX_ITEMS),
        items: frame::count_between(consumed, produced),
        used_bytes: frame::used_units(hpos, tpos).saturating_mul(frame::UNIT as u64),
        produced,
        consumed,
        unfinished: joinable.then(|| frame::count_between(shared.done, produced)),
        shared,
    })
}

/// Messages between two readings of a counter in [`Snapshot`] (the counters
/// wrap at 2^28).
pub(crate) fn counter_delta(earlier: u64, later: u64) -> u64 {
    frame::count_between(earlier, later)
}

/// A queue of `T` values in shared memory. See the [module docs](self).
///
/// Handles are cheap to clone, `Send + Sync`, and serde values: pass one
/// to a child process and it opens the same queue. `F` is the
/// [`Flavor`]: a plain queue by default; [`JoinableQueue<T>`] is
/// `Queue<T, Joinable>`, which adds `task_done` and `join`.
pub struct Queue<T, F: Flavor = Plain> {
    object: Object<QueueLayout<T, F>>,
    max_message: usize,
    /// The queue's identity in this process (see `ring::QueueKey`).
    key: ring::QueueKey,
}

/// A queue whose consumers report finished work: Python's
/// `multiprocessing.JoinableQueue`.
///
/// Every put adds an unfinished task; [`task_done`](Queue::task_done)
/// marks one finished; [`join`](Queue::join) blocks until none is left.
/// Every other operation is the plain [`Queue`]'s.
pub type JoinableQueue<T> = Queue<T, Joinable>;

impl<T, F: Flavor> Clone for Queue<T, F> {
    fn clone(&self) -> Self {
        Queue {
            object: self.object.clone(),
            max_message: self.max_message,
            key: self.key,
        }
    }
}

impl<T, F: Flavor> fmt::Debug for Queue<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct(<F as sealed::Sealed>::KIND.name());
        d.field("object", &self.object.describe())
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("closed", &self.is_closed());
        if <F as sealed::Sealed>::KIND == ObjectKind::JoinableQueue {
            d.field("unfinished_tasks", &self.ring().unfinished());
        }
        d.finish()
    }
}

/// Options for a new queue. See [`Queue::builder`] and
/// [`JoinableQueue::builder`].
#[must_use]
pub struct QueueBuilder<T, F: Flavor = Plain> {
    capacity: usize,
    max_items: u64,
    fenced: bool,
    _queue: PhantomData<fn() -> Queue<T, F>>,
}

impl<T, F: Flavor> Clone for QueueBuilder<T, F> {
    fn clone(&self) -> Self {
        QueueBuilder {
            capacity: self.capacity,
            max_items: self.max_items,
            fenced: self.fenced,
            _queue: PhantomData,
        }
    }
}

impl<T, F: Flavor> fmt::Debug for QueueBuilder<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("capacity", &self.capacity)
            .field("max_items", &self.max_items)
            .field("fenced_commits", &self.fenced)
            .finish()
    }
}

impl<T, F: Flavor> QueueBuilder<T, F> {
    fn with_capacity(capacity: usize) -> Self {
        QueueBuilder {
            capacity,
            max_items: 0,
            fenced: false,
            _queue: PhantomData,
        }
    }

    /// Limits the queue to `n` messages (Python's `maxsize`), besides its
    /// byte capacity. At most [`MAX_ITEMS`]; 0 means that maximum.
    pub fn max_items(mut self, n: u64) -> Self {
        self.max_items = n;
        self
    }

    /// Tunes the queue for readers that are usually asleep: a queue that
    /// carries a message now and then (tasks, results, commands) rather
    /// than a stream. By default a `put` commits with a plain store and a
    /// reader that goes to sleep pays for it with a `membarrier` — an
    /// interrupt to every CPU, several µs on a VM — which is the right trade
    /// when readers rarely sleep. With `fenced_commits(true)` every `put`
    /// and `get` pays a memory fence instead (tens of nanoseconds) and no
    /// sleeper ever issues a `membarrier`. ipckit's process pools use it
    /// for their task and result queues (measured: the README's Pools
    /// section). Fixed when the queue is created; every process using the
    /// queue follows it.
    pub fn fenced_commits(mut self, yes: bool) -> Self {
        self.fenced = yes;
        self
    }

    /// The ring's capacity after rounding (a power of two, at least 4 KiB).
    /// Zero is refused: Python's `Queue(0)` means "unbounded", which a ring
    /// in shared memory cannot be.
    fn rounded_capacity(&self) -> Result<usize> {
        if self.capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a queue needs a capacity in bytes (Python's Queue(0), unbounded, has no \
                 shared-memory equivalent): choose the ring's size, e.g. 1 << 20, and limit \
                 the number of messages with max_items",
            ));
        }
        frame::round_capacity(self.capacity).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("a queue holds at most {MAX_CAPACITY} bytes"),
            )
        })
    }

    fn init(&self) -> impl FnOnce(Uninit<QueueLayout<T, F>>) -> Result<()> + use<T, F> {
        let max_items = if self.max_items == 0 {
            MAX_ITEMS
        } else {
            self.max_items.min(MAX_ITEMS)
        };
        let fenced = self.fenced;
        move |mem| {
            // SAFETY: the region [SHARED_AT, total_len) is inside the new
            // object, exclusively ours until it is published, and SHARED_AT
            // is aligned for QueueShared.
            unsafe { QueueShared::init(mem.shared(), max_items, fenced) }
        }
    }

    fn create_at(&self, at: Create<'_>) -> Result<Queue<T, F>> {
        let cap = self.rounded_capacity()?;
        Object::create(at, cap as u64, self.init()).map(Queue::from_object)
    }

    /// Creates a named queue; fails if the name exists.
    pub fn create(&self, name: &str) -> Result<Queue<T, F>> {
        self.create_at(Create::Named(name))
    }

    /// Opens the named queue, or creates it with these options.
    pub fn open_or_create(&self, name: &str) -> Result<Queue<T, F>> {
        let cap = self.rounded_capacity()?;
        Object::open_or_create(name, cap as u64, self.init()).map(Queue::from_object)
    }

    /// Creates an anonymous queue.
    // The builder's verbs are the type's constructors: `new` is anonymous.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(&self) -> Result<Queue<T, F>> {
        self.create_at(Create::Anonymous)
    }

    /// Creates a queue at `offset` (a multiple of 128) inside `segment`.
    pub fn create_in(&self, segment: &Segment, offset: usize) -> Result<Queue<T, F>> {
        self.create_at(Create::In(segment, offset))
    }

    /// Bytes this queue needs inside a segment.
    pub fn size_in_segment(&self) -> Option<usize> {
        total_len(frame::round_capacity(self.capacity)?)
    }
}

/// The constructors, written once for both flavours: `Queue::<T>::new`
/// makes a plain queue, `JoinableQueue::<T>::new` a joinable one.
impl<T, F: Flavor> Queue<T, F> {
    fn from_object(object: Object<QueueLayout<T, F>>) -> Self {
        let (dev, ino) = object.segment().file_id();
        let key = (dev, ino, object.offset());
        Queue {
            object,
            max_message: DEFAULT_MAX_MESSAGE,
            key,
        }
    }

    /// Options for a queue of `capacity_bytes`: item limit and location.
    pub fn builder(capacity_bytes: usize) -> QueueBuilder<T, F> {
        QueueBuilder::with_capacity(capacity_bytes)
    }

    /// Creates a named queue of `capacity_bytes` (rounded up to a power of
    /// two, at least 4 KiB); fails if the name exists.
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Self> {
        Self::builder(capacity_bytes).create(name)
    }

    /// Opens a named queue, checking its flavour and that it carries `T`s.
    pub fn open(name: &str) -> Result<Self> {
        Object::open(Open::Named(name)).map(Queue::from_object)
    }

    /// Opens the named queue, or creates it with `capacity_bytes`.
    pub fn open_or_create(name: &str, capacity_bytes: usize) -> Result<Self> {
        Self::builder(capacity_bytes).open_or_create(name)
    }

    /// Creates an anonymous queue of `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> Result<Self> {
        Self::builder(capacity_bytes).new()
    }

    /// Creates a queue at `offset` (a multiple of 128) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, capacity_bytes: usize) -> Result<Self> {
        Self::builder(capacity_bytes).create_in(segment, offset)
    }

    /// Opens the queue at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Self> {
        Object::open(Open::In(segment, offset)).map(Queue::from_object)
    }
}

/// What a [`JoinableQueue`] adds to a queue.
impl<T> JoinableQueue<T> {
    /// Marks one task finished. Fails with [`ErrorKind::LimitExceeded`] if
    /// called more times than items were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.ring()
            .task_done()
            .map_err(self.object.context("mark a task done in"))
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u64 {
        self.ring().unfinished()
    }

    /// Blocks until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.ring().join(None)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.ring().join(deadline_after(timeout))
    }

    /// Like [`join`](Self::join), waiting until `deadline` at the latest.
    pub fn join_deadline(&self, deadline: Instant) -> Result<()> {
        self.ring().join(Some(deadline))
    }
}

impl<T, F: Flavor> Queue<T, F> {
    fn ring(&self) -> Ring<'_> {
        let cap = self.object.param() as usize;
        // SAFETY: the shared state and the ring at DATA_AT lie in the
        // mapping `self.object` keeps alive; the shared state was
        // initialised before publication; `cap` is the validated header's
        // parameter, and the object's validated length is DATA_AT + cap.
        unsafe { Ring::new(self.object.shared(), self.object.at(DATA_AT), cap, self.key) }
    }

    /// Adds "cannot {verb} {queue}" to an error; builds the text only on error.
    fn ctx<'s>(&'s self, verb: &'s str) -> impl Fn(Error) -> Error + 's {
        self.object.context(verb)
    }

    /// The ring's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.object.param() as usize
    }

    /// The limit on messages queued at once ([`MAX_ITEMS`] if none was set).
    pub fn max_items(&self) -> u64 {
        self.ring().max_items()
    }

    /// Messages queued now (a snapshot; exact when nobody is putting or getting).
    pub fn len(&self) -> usize {
        self.ring().len() as usize
    }

    /// Whether no message is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the item limit is reached or less than a small frame's space
    /// is left (a snapshot).
    pub fn is_full(&self) -> bool {
        let r = self.ring();
        r.len() >= r.max_items() || r.used_bytes() + 16 > self.capacity() as u64
    }

    /// The largest message that travels whole; a larger one is streamed
    /// through the ring (see [`put`](Self::put)).
    pub fn max_whole_message(&self) -> usize {
        frame::max_whole_payload(self.capacity())
    }

    /// Bytes of the ring in use (a snapshot).
    pub fn used_bytes(&self) -> usize {
        self.ring().used_bytes() as usize
    }

    /// Closes the queue: later puts fail with a closed error; gets drain what
    /// is queued, then fail with a closed error. Wakes every waiter.
    pub fn close(&self) {
        self.ring().close();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.ring().is_closed()
    }

    /// The largest message this handle puts or accepts (default
    /// [`DEFAULT_MAX_MESSAGE`]).
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Sets the largest message this handle puts or accepts (default 1 GiB).
    /// A larger `put` fails with [`ErrorKind::LimitExceeded`] and queues
    /// nothing; a larger message from a producer with a higher limit is
    /// skipped by `get` and reported as [`ErrorKind::LimitExceeded`].
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message = bytes;
    }

    /// The segment the queue lives in.
    pub fn segment(&self) -> &Segment {
        self.object.segment()
    }

    // -- bytes ---------------------------------------------------------------

    fn check_size(&self, len: usize) -> Result<()> {
        if len > self.max_message {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a message of {len} bytes is over this handle's limit of {} \
                     (see set_max_message_size)",
                    self.max_message
                ),
            ));
        }
        Ok(())
    }

    fn put_bytes_with(&self, bytes: &[u8], wait: Blocking) -> Result<()> {
        self.check_size(bytes.len()).map_err(self.ctx("put into"))?;
        let deadline = wait.deadline();
        let ring = self.ring();
        let guard = ring.lock_producer(deadline);
        let r = guard.and_then(|g| g.put(bytes, deadline, None));
        r.map_err(|e| would_block(e, wait, "the queue is full"))
            .map_err(self.ctx("put into"))
    }

    /// Puts raw bytes, blocking while the queue is full — but only while
    /// `reader_alive` says the one process that reads this queue lives
    /// (asked every 10 ms of waiting): then `Closed`, the message not
    /// queued (a stream is aborted). For queues with a single known reader,
    /// such as a pool worker's task queue.
    pub(crate) fn put_bytes_while(
        &self,
        bytes: &[u8],
        reader_alive: &dyn Fn() -> bool,
    ) -> Result<()> {
        self.check_size(bytes.len()).map_err(self.ctx("put into"))?;
        let ring = self.ring();
        let guard = ring.lock_producer(None);
        guard
            .and_then(|g| g.put(bytes, None, Some(reader_alive)))
            .map_err(self.ctx("put into"))
    }

    fn too_large(&self, len: u64) -> Error {
        Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "skipped a message of {len} bytes, over this handle's limit of {}",
                self.max_message
            ),
        )
    }

    /// Puts raw bytes, blocking while the queue is full.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.put_bytes_with(bytes, Blocking::Forever)
    }

    /// Puts raw bytes if there is room now; otherwise a would-block error.
    pub fn try_put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.put_bytes_with(bytes, Blocking::No)
    }

    /// Puts raw bytes, waiting at most `timeout` for room.
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.put_bytes_with(bytes, Blocking::after(timeout))
    }

    /// Takes the consumer lock and reads the next message into `buf`,
    /// waiting (without the lock) while the message at the head is half
    /// read by another process that will continue it. Returns the guard,
    /// still held, and what was read: a message, a skipped one, or `None`
    /// (closed and empty).
    fn read_next<'r>(
        &self,
        ring: &'r Ring<'r>,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<(ring::ConsumerGuard<'r>, Option<Read>)> {
        loop {
            let guard = ring.lock_consumer(deadline)?;
            match guard.read_message(buf, self.max_message as u64, deadline)? {
                Some(Read::HeldBy(pid)) => {
                    drop(guard);
                    let passed = deadline.is_some_and(|d| Instant::now() >= d);
                    if passed || !ring.wait_reader_change(pid, deadline) {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "timed out: the message at the head is half read by \
                                 process {pid}, whose next get continues it"
                            ),
                        ));
                    }
                }
                read => return Ok((guard, read)),
            }
        }
    }

    fn get_bytes_with(&self, buf: &mut Vec<u8>, wait: Blocking) -> Result<()> {
        let deadline = wait.deadline();
        let ring = self.ring();
        match self.read_next(&ring, buf, deadline).map(|(_, read)| read) {
            Ok(Some(Read::Message)) => Ok(()),
            Ok(Some(Read::TooLarge(len))) => Err(self.too_large(len)),
            Ok(Some(Read::HeldBy(_))) => unreachable!("read_next waits those out"),
            Ok(None) => Err(Error::new(
                ErrorKind::Closed,
                "the queue is closed and empty",
            )),
            Err(e) => Err(would_block(e, wait, "the queue is empty")),
        }
        .map_err(self.ctx("get from"))
    }

    /// Takes the next message as raw bytes, blocking while the queue is empty.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_bytes_into(&mut buf)?;
        Ok(buf)
    }

    /// Takes the next message into `buf` (replacing its contents); reuses
    /// `buf`'s allocation, so a steady stream allocates nothing.
    pub fn get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        self.get_bytes_with(buf, Blocking::Forever)
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into) if a message is there
    /// now; otherwise a would-block error.
    pub fn try_get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        self.get_bytes_with(buf, Blocking::No)
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into), waiting at most `timeout`.
    pub fn get_bytes_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<()> {
        self.get_bytes_with(buf, Blocking::after(timeout))
    }
}

fn would_block(e: Error, wait: Blocking, what: &str) -> Error {
    if matches!(wait, Blocking::No) && e.is_timeout() {
        Error::new(ErrorKind::WouldBlock, what)
    } else {
        e
    }
}

impl<T: Serialize + DeserializeOwned, F: Flavor> Queue<T, F> {
    fn put_with(&self, value: &T, wait: Blocking) -> Result<()> {
        PUT_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            codec::encode_into(value, &mut buf).map_err(self.ctx("put into"))?;
            self.put_bytes_with(&buf, wait)
        })
    }

    /// Puts a value, blocking while the queue is full.
    ///
    /// A message whose frame takes more than half the ring is streamed
    /// through it (see the [module docs](self)): `put` then returns only
    /// once a consumer has read all but the last part of it. So a thread
    /// that puts such a message with nobody getting — a single-threaded
    /// program putting before it gets, say — waits for ever; use a larger
    /// ring ([`Queue::max_whole_message`] says what fits whole), a consumer
    /// in another thread or process, or [`put_timeout`](Self::put_timeout),
    /// which ends the stream and queues nothing if time runs out.
    pub fn put(&self, value: &T) -> Result<()> {
        self.put_with(value, Blocking::Forever)
    }

    /// Puts a value if there is room now; otherwise a would-block error.
    pub fn try_put(&self, value: &T) -> Result<()> {
        self.put_with(value, Blocking::No)
    }

    /// Puts a value, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.put_with(value, Blocking::after(timeout))
    }

    /// Puts a value, waiting until `deadline` at the latest.
    pub fn put_deadline(&self, value: &T, deadline: Instant) -> Result<()> {
        self.put_with(value, Blocking::Until(deadline))
    }

    fn get_with(&self, wait: Blocking) -> Result<T> {
        GET_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            self.get_bytes_with(&mut buf, wait)?;
            codec::decode(&buf).map_err(self.ctx("decode a message from"))
        })
    }

    /// Takes the next value, blocking while the queue is empty.
    pub fn get(&self) -> Result<T> {
        self.get_with(Blocking::Forever)
    }

    /// Takes the next value if one is there now; otherwise a would-block error.
    pub fn try_get(&self) -> Result<T> {
        self.get_with(Blocking::No)
    }

    /// Takes the next value, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Blocking::after(timeout))
    }

    /// Takes the next value, waiting until `deadline` at the latest.
    pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
        self.get_with(Blocking::Until(deadline))
    }

    /// Puts every value under one acquisition of the producer lock, so they
    /// are queued back to back; blocks while the queue is full. Returns how
    /// many were put (all of them unless an error stops the batch).
    pub fn put_many<'v>(&self, values: impl IntoIterator<Item = &'v T>) -> Result<usize>
    where
        T: 'v,
    {
        let ring = self.ring();
        let guard = ring.lock_producer(None).map_err(self.ctx("put into"))?;
        let mut buf = Vec::new();
        let mut n = 0;
        for v in values {
            codec::encode_into(v, &mut buf).map_err(self.ctx("put into"))?;
            self.check_size(buf.len()).map_err(self.ctx("put into"))?;
            guard.put(&buf, None, None).map_err(self.ctx("put into"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Takes up to `max` values under one acquisition of the consumer lock:
    /// blocks until at least one is there, then takes the others that are
    /// already queued without waiting for more.
    ///
    /// Nothing taken is ever dropped. A bad message — over this handle's
    /// size limit, or not decodable as a `T` — is reported by the call that
    /// meets it *first*: if it is the first message of a call, that call
    /// fails with its error (and the message is gone, as with `get`); if
    /// good messages came before it, the call returns them and leaves the
    /// bad one at the head of the queue, where the next `get` or
    /// `get_many` reports it.
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let ring = self.ring();
        GET_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (guard, read) = self
                .read_next(&ring, &mut buf, None)
                .map_err(self.ctx("get from"))?;
            match read {
                Some(Read::Message) => {
                    out.push(codec::decode(&buf).map_err(self.ctx("decode a message from"))?)
                }
                Some(Read::TooLarge(len)) => {
                    return Err(self.too_large(len)).map_err(self.ctx("get from"));
                }
                Some(Read::HeldBy(_)) => unreachable!("read_next waits those out"),
                None => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "the queue is closed and empty",
                    ))
                    .map_err(self.ctx("get from"));
                }
            }
            while out.len() < max {
                let next = guard
                    .take_whole_if(&mut buf, self.max_message as u64, |b| codec::decode(b).ok());
                match next {
                    Some(v) => out.push(v),
                    None => break,
                }
            }
            Ok(out)
        })
    }
}

impl<T, F: Flavor> Serialize for Queue<T, F> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.object.serialize(s)
    }
}

impl<'de, T, F: Flavor> Deserialize<'de> for Queue<T, F> {
    /// Opens the queue (checking its kind, element type and geometry); the
    /// handle's message size limit is the default.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Object::deserialize(d).map(Queue::from_object)
    }
}
