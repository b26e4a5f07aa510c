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
//! # Messages larger than the ring
//!
//! A message whose frame would take more than half the ring is *streamed*
//! through it in chunks of a quarter of the ring: the producer holds the
//! producer lock for the whole message and the consumer the consumer lock,
//! so a 1 GiB message crosses a 64 MiB ring while both sides copy in
//! parallel. Nothing is written anywhere else, so nothing can leak. If the
//! producer dies or times out mid-message, the stream is ended with an abort
//! marker and consumers discard the partial message; if the consumer dies
//! mid-message, the next consumer skips the rest of it. A consumer that has
//! started a message finishes it regardless of its own timeout. Consumers
//! refuse messages over [`Queue::max_message_size`] (default 1 GiB): such a
//! message is skipped and reported as a [`ErrorKind::LimitExceeded`] error.

mod frame;
mod ring;

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use frame::{MAX_CAPACITY, MAX_ITEMS, MIN_CAPACITY};
use ring::{QueueShared, Read, Ring};

use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{TypeFingerprint, align_up};
use crate::segment::Segment;
use crate::segment::object::{self, Location, ObjectToken, Placement, Spec};

/// Default limit on the size of a message a consumer accepts.
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;

const SHARED_AT: usize = object::payload_offset(std::mem::align_of::<QueueShared>());
const RING_AT: usize = SHARED_AT + std::mem::size_of::<QueueShared>();

fn total_len(cap: usize) -> Option<usize> {
    align_up(RING_AT, 128)?.checked_add(cap)
}

thread_local! {
    static PUT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static GET_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Until(Instant),
    No,
}

impl Wait {
    /// The wait of an `op_timeout`: forever if `timeout` is too long to
    /// make a deadline of.
    fn after(timeout: Duration) -> Wait {
        deadline_after(timeout).map_or(Wait::Forever, Wait::Until)
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::Until(d) => Some(d),
            Wait::No => Some(Instant::now()),
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
pub(crate) fn snapshot(
    segment: &Segment,
    header: &crate::layout::header::Header,
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
        Some(len) if len as u64 == header.total_len && len <= segment.len() => {}
        _ => {
            return Err(corrupt(format!(
                "header length {} does not match a queue of {cap} bytes in a segment of {}",
                header.total_len,
                segment.len()
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
/// to a child process and it opens the same queue.
pub struct Queue<T> {
    place: Placement,
    shared: NonNull<QueueShared>,
    data: NonNull<u8>,
    cap: usize,
    max_message: u64,
    _type: PhantomData<fn(T) -> T>,
}

// SAFETY: the pointers target the shared mapping kept alive by `place`; all
// access goes through atomics, the robust locks, and copies of regions the
// locks reserve. T values only cross as encoded bytes.
unsafe impl<T> Send for Queue<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Queue<T> {}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            place: self.place.clone(),
            shared: self.shared,
            data: self.data,
            cap: self.cap,
            max_message: self.max_message,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("object", &self.place.describe())
            .field("capacity", &self.cap)
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Options for a new queue. See [`Queue::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct QueueBuilder {
    capacity: usize,
    max_items: u64,
}

impl QueueBuilder {
    /// Limits the queue to `n` messages (Python's `maxsize`), besides its
    /// byte capacity. At most [`MAX_ITEMS`]; 0 means that maximum.
    pub fn max_items(mut self, n: u64) -> Self {
        self.max_items = n;
        self
    }

    /// Creates a named queue of `T`; fails if the name exists.
    pub fn create<T>(&self, name: &str) -> Result<Queue<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Queue::locate(
            ObjectKind::Queue,
            Location::Create { name, mode },
            Some(self),
        )
    }

    /// Opens the named queue, or creates it with these options.
    pub fn open_or_create<T>(&self, name: &str) -> Result<Queue<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Queue::locate(
            ObjectKind::Queue,
            Location::OpenOrCreate { name, mode },
            Some(self),
        )
    }

    /// Creates an anonymous queue of `T`.
    pub fn anonymous<T>(&self) -> Result<Queue<T>> {
        Queue::locate(ObjectKind::Queue, Location::Anonymous, Some(self))
    }

    /// Creates a queue at `offset` (a multiple of 128) inside `segment`.
    pub fn create_in<T>(&self, segment: &Segment, offset: usize) -> Result<Queue<T>> {
        Queue::locate(
            ObjectKind::Queue,
            Location::CreateIn { segment, offset },
            Some(self),
        )
    }

    /// Creates a named joinable queue; fails if the name exists.
    pub fn create_joinable<T>(&self, name: &str) -> Result<JoinableQueue<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Queue::locate(
            ObjectKind::JoinableQueue,
            Location::Create { name, mode },
            Some(self),
        )
        .map(|inner| JoinableQueue { inner })
    }

    /// Creates an anonymous joinable queue.
    pub fn anonymous_joinable<T>(&self) -> Result<JoinableQueue<T>> {
        Queue::locate(ObjectKind::JoinableQueue, Location::Anonymous, Some(self))
            .map(|inner| JoinableQueue { inner })
    }

    /// Bytes this queue needs inside a segment.
    pub fn size_in_segment(&self) -> Option<usize> {
        total_len(frame::round_capacity(self.capacity)?)
    }
}

impl<T> Queue<T> {
    fn locate(
        kind: ObjectKind,
        loc: Location<'_>,
        opts: Option<&QueueBuilder>,
    ) -> Result<Queue<T>> {
        let cap = match opts {
            Some(o) => frame::round_capacity(o.capacity).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("a queue holds at most {MAX_CAPACITY} bytes"),
                )
            })?,
            None => 0,
        };
        let max_items = opts.map_or(0, |o| {
            if o.max_items == 0 {
                MAX_ITEMS
            } else {
                o.max_items.min(MAX_ITEMS)
            }
        });
        let spec = Spec {
            kind,
            ty: TypeFingerprint::of::<T>(),
            param: cap as u64,
            total_len: total_len(cap).unwrap_or(usize::MAX),
            align: std::mem::align_of::<QueueShared>(),
        };
        let place = object::locate(
            loc,
            spec,
            |base| {
                if opts.is_none() {
                    return crate::sync::mutex_unreachable_init();
                }
                // SAFETY: the region [SHARED_AT, total_len) is inside the
                // object, exclusively ours during initialisation, and
                // SHARED_AT is aligned for QueueShared.
                unsafe { QueueShared::init(base.add(SHARED_AT) as *mut QueueShared, max_items) }
            },
            |h| {
                if !frame::valid_capacity(h.param) {
                    return None;
                }
                total_len(usize::try_from(h.param).ok()?)
            },
        )?;
        let cap = place.header.param as usize;
        let shared = NonNull::new(place.ptr(SHARED_AT) as *mut QueueShared).expect("mapped");
        let data = NonNull::new(place.ptr(align_up(RING_AT, 128).expect("small"))).expect("mapped");
        Ok(Queue {
            place,
            shared,
            data,
            cap,
            max_message: DEFAULT_MAX_MESSAGE,
            _type: PhantomData,
        })
    }

    /// Options for a queue of `capacity_bytes`: item limit and location.
    pub fn builder(capacity_bytes: usize) -> QueueBuilder {
        QueueBuilder {
            capacity: capacity_bytes,
            max_items: 0,
        }
    }

    /// Creates a named queue of `capacity_bytes` (rounded up to a power of
    /// two, at least 4 KiB); fails if the name exists.
    pub fn create(name: &str, capacity_bytes: usize) -> Result<Queue<T>> {
        Self::builder(capacity_bytes).create(name)
    }

    /// Opens a named queue, checking that it carries `T`s.
    pub fn open(name: &str) -> Result<Queue<T>> {
        Self::locate(ObjectKind::Queue, Location::Open { name }, None)
    }

    /// Opens the named queue, or creates it with `capacity_bytes`.
    pub fn open_or_create(name: &str, capacity_bytes: usize) -> Result<Queue<T>> {
        Self::builder(capacity_bytes).open_or_create(name)
    }

    /// Creates an anonymous queue of `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> Result<Queue<T>> {
        Self::builder(capacity_bytes).anonymous()
    }

    /// Creates a queue at `offset` (a multiple of 128) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, capacity_bytes: usize) -> Result<Queue<T>> {
        Self::builder(capacity_bytes).create_in(segment, offset)
    }

    /// Opens the queue at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Queue<T>> {
        Self::locate(
            ObjectKind::Queue,
            Location::OpenIn { segment, offset },
            None,
        )
    }

    fn ring(&self) -> Ring<'_> {
        // SAFETY: `shared` and `data` point into the mapping held by
        // `self.place`; the shared state was initialised before publication;
        // `cap` comes from the validated header, whose length covers the ring.
        unsafe { Ring::new(self.shared.as_ref(), self.data.as_ptr(), self.cap) }
    }

    /// Adds "cannot {verb} {queue}" to an error; builds the text only on error.
    fn ctx<'s>(&'s self, verb: &'s str) -> impl Fn(Error) -> Error + 's {
        move |e: Error| e.context(format!("cannot {verb} {}", self.place.describe()))
    }

    /// The ring's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
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
        r.len() >= r.max_items() || r.used_bytes() + 16 > self.cap as u64
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

    /// The largest message this handle accepts from the queue.
    pub fn max_message_size(&self) -> u64 {
        self.max_message
    }

    /// Sets the largest message this handle accepts (default 1 GiB). Larger
    /// messages are skipped and reported as [`ErrorKind::LimitExceeded`].
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.max_message = bytes;
    }

    /// The segment the queue lives in.
    pub fn segment(&self) -> &Segment {
        &self.place.segment
    }

    // -- bytes ---------------------------------------------------------------

    fn put_bytes_with(&self, bytes: &[u8], wait: Wait) -> Result<()> {
        let deadline = wait.deadline();
        let ring = self.ring();
        let guard = ring.lock_producer(deadline);
        let r = guard.and_then(|g| g.put(bytes, deadline));
        r.map_err(|e| would_block(e, wait, "the queue is full"))
            .map_err(self.ctx("put into"))
    }

    /// Puts raw bytes, blocking while the queue is full.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.put_bytes_with(bytes, Wait::Forever)
    }

    /// Puts raw bytes if there is room now; otherwise a would-block error.
    pub fn try_put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.put_bytes_with(bytes, Wait::No)
    }

    /// Puts raw bytes, waiting at most `timeout` for room.
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.put_bytes_with(bytes, Wait::after(timeout))
    }

    fn get_bytes_with(&self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        let deadline = wait.deadline();
        let ring = self.ring();
        let r = ring
            .lock_consumer(deadline)
            .and_then(|g| g.read_message(buf, self.max_message, deadline));
        match r {
            Ok(Some(Read::Message)) => Ok(()),
            Ok(Some(Read::TooLarge(len))) => Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "skipped a message of {len} bytes, over this handle's limit of {}",
                    self.max_message
                ),
            )),
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
        self.get_bytes_with(buf, Wait::Forever)
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into) if a message is there
    /// now; otherwise a would-block error.
    pub fn try_get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        self.get_bytes_with(buf, Wait::No)
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into), waiting at most `timeout`.
    pub fn get_bytes_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<()> {
        self.get_bytes_with(buf, Wait::after(timeout))
    }
}

fn would_block(e: Error, wait: Wait, what: &str) -> Error {
    if matches!(wait, Wait::No) && e.is_timeout() {
        Error::new(ErrorKind::WouldBlock, what)
    } else {
        e
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_with(&self, value: &T, wait: Wait) -> Result<()> {
        PUT_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            codec::encode_into(value, &mut buf).map_err(self.ctx("put into"))?;
            self.put_bytes_with(&buf, wait)
        })
    }

    /// Puts a value, blocking while the queue is full.
    pub fn put(&self, value: &T) -> Result<()> {
        self.put_with(value, Wait::Forever)
    }

    /// Puts a value if there is room now; otherwise a would-block error.
    pub fn try_put(&self, value: &T) -> Result<()> {
        self.put_with(value, Wait::No)
    }

    /// Puts a value, waiting at most `timeout` for room.
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.put_with(value, Wait::after(timeout))
    }

    /// Puts a value, waiting until `deadline` at the latest.
    pub fn put_deadline(&self, value: &T, deadline: Instant) -> Result<()> {
        self.put_with(value, Wait::Until(deadline))
    }

    fn get_with(&self, wait: Wait) -> Result<T> {
        GET_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            self.get_bytes_with(&mut buf, wait)?;
            codec::decode(&buf).map_err(self.ctx("decode a message from"))
        })
    }

    /// Takes the next value, blocking while the queue is empty.
    pub fn get(&self) -> Result<T> {
        self.get_with(Wait::Forever)
    }

    /// Takes the next value if one is there now; otherwise a would-block error.
    pub fn try_get(&self) -> Result<T> {
        self.get_with(Wait::No)
    }

    /// Takes the next value, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Wait::after(timeout))
    }

    /// Takes the next value, waiting until `deadline` at the latest.
    pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
        self.get_with(Wait::Until(deadline))
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
            guard.put(&buf, None).map_err(self.ctx("put into"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Takes up to `max` values under one acquisition of the consumer lock:
    /// blocks until at least one is there, then takes the others that are
    /// already queued without waiting for more.
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let ring = self.ring();
        let guard = ring.lock_consumer(None).map_err(self.ctx("get from"))?;
        let mut buf = Vec::new();
        loop {
            match guard.read_message(&mut buf, self.max_message, None) {
                Ok(Some(Read::Message)) => {
                    out.push(codec::decode(&buf).map_err(self.ctx("decode a message from"))?)
                }
                Ok(Some(Read::TooLarge(len))) => {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("skipped a message of {len} bytes, over this handle's limit"),
                    ))
                    .map_err(self.ctx("get from"));
                }
                Ok(None) if out.is_empty() => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "the queue is closed and empty",
                    ))
                    .map_err(self.ctx("get from"));
                }
                Ok(None) => break,
                Err(e) => return Err(e).map_err(self.ctx("get from")),
            }
            if out.len() == max || !guard.whole_ready() {
                break;
            }
        }
        Ok(out)
    }
}

impl<T> serde::Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.place.token().serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, offset) = ObjectToken::decode(d)?;
        Queue::open_in(&segment, offset).map_err(serde::de::Error::custom)
    }
}

/// A queue whose consumers report finished work: Python's
/// `multiprocessing.JoinableQueue`.
///
/// Every put adds an unfinished task; [`task_done`](Self::task_done) marks
/// one finished; [`join`](Self::join) blocks until none is left. All the
/// [`Queue`] methods are available through `Deref`.
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.inner)
            .field("unfinished_tasks", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T> JoinableQueue<T> {
    /// Creates a named joinable queue; fails if the name exists.
    pub fn create(name: &str, capacity_bytes: usize) -> Result<JoinableQueue<T>> {
        Queue::<T>::builder(capacity_bytes).create_joinable(name)
    }

    /// Opens a named joinable queue.
    pub fn open(name: &str) -> Result<JoinableQueue<T>> {
        Queue::locate(ObjectKind::JoinableQueue, Location::Open { name }, None)
            .map(|inner| JoinableQueue { inner })
    }

    /// Creates an anonymous joinable queue.
    pub fn new(capacity_bytes: usize) -> Result<JoinableQueue<T>> {
        Queue::<T>::builder(capacity_bytes).anonymous_joinable()
    }

    /// Opens the joinable queue at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<JoinableQueue<T>> {
        Queue::locate(
            ObjectKind::JoinableQueue,
            Location::OpenIn { segment, offset },
            None,
        )
        .map(|inner| JoinableQueue { inner })
    }

    /// Marks one task finished. Fails with [`ErrorKind::LimitExceeded`] if
    /// called more times than items were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.inner
            .ring()
            .task_done()
            .map_err(self.inner.ctx("mark a task done in"))
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> u64 {
        self.inner.ring().unfinished()
    }

    /// Blocks until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.inner.ring().join(None)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.ring().join(deadline_after(timeout))
    }

    /// Like [`join`](Self::join), waiting until `deadline` at the latest.
    pub fn join_deadline(&self, deadline: Instant) -> Result<()> {
        self.inner.ring().join(Some(deadline))
    }
}

impl<T> serde::Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.place.token().serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, offset) = ObjectToken::decode(d)?;
        JoinableQueue::open_in(&segment, offset).map_err(serde::de::Error::custom)
    }
}
