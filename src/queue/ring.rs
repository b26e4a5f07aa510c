//! The queue in shared memory: a byte ring of variable-size frames with a
//! producer side and a consumer side, each guarded by its own robust lock.
//!
//! # Why two locks
//!
//! Producers only ever write the ring beyond the tail and move the tail;
//! consumers only read between head and tail and move the head. So producers
//! serialise among themselves on `prod_lock`, consumers on `cons_lock`, and a
//! producer never waits for a consumer's lock (the two-lock queue of Michael
//! and Scott, 1996, on a ring). With one producer and one consumer neither
//! lock is ever contended and the two sides copy in parallel.
//!
//! # Commit points
//!
//! | word | written by | meaning |
//! |---|---|---|
//! | `tail` | the `prod_lock` holder, one Release store per frame | end of committed frames + messages produced (see `frame.rs`) |
//! | `head` | the `cons_lock` holder, one Release store per frame | end of consumed frames + messages consumed |
//! | `stream_open` | the `prod_lock` holder | 1 while a multi-frame message is being written |
//! | `closed` | `close()` | 1 once closed; never reset |
//! | `done` | `task_done()`, by CAS | tasks finished (JoinableQueue), modulo 2^28 |
//!
//! SYNC POINT "tail": a producer copies a frame into the ring, then
//! Release-stores `tail`; a consumer Acquire-loads `tail` before reading the
//! frame. SYNC POINT "head": a consumer copies a frame out, then
//! Release-stores `head`; a producer Acquire-loads `head` before reusing the
//! space.
//!
//! Before its `head` store, a consumer also stores to one byte in each
//! cache line of the frame it consumed, writing back the value it holds
//! (`Ring::hand_back`): the line then leaves the producer's cache, whose
//! next store to it is a prefetchable miss rather than an invalidation its
//! lock's barrier waits for. No producer writes those bytes before the
//! `head` store, and a consumer killed before it leaves the frame exactly
//! as committed, for the next consumer to read.
//!
//! # Crashes
//!
//! A producer killed before its `tail` store leaves bytes beyond the tail
//! that nobody reads; a consumer killed before its `head` store leaves the
//! message for the next consumer. The next locker of the dead process's lock
//! gets `EOWNERDEAD`; the only repair is for a producer that died inside a
//! stream (`stream_open`): the recoverer appends an `Abort` frame, for which
//! every stream keeps 8 bytes of space in reserve. A consumer that waits for
//! the rest of a stream checks for that case itself (it try-locks
//! `prod_lock`), so a stream whose producer died never wedges it.
//!
//! # Streams that stall
//!
//! A consumer whose deadline passes in the middle of a stream (its producer
//! is slow or stopped) keeps the part it read in a per-process table keyed
//! by the queue's identity, records itself in `reader` (pid and start time,
//! committed by the pid's store, under `cons_lock`) and releases the lock.
//! The next consumer to lock: if `reader` is its own process, it takes the
//! part back and continues the stream; if it is another live process, it
//! releases the lock and waits (bounded by its own deadline) for the record
//! to change; if that process is dead, it clears the record and skips the
//! rest of the stream as leftovers. So no timeout ever waits on a stalled
//! producer, and no message is lost to a timeout.
//!
//! # Waiting
//!
//! A producer waits for space (a consumer for data) while holding its own
//! lock, so at most one process per side sleeps on the ring's waiting
//! cells (`not_full`, `not_empty`); the others queue on the lock. The waiter
//! spins briefly on the other side's word, then waits on the cell with the
//! crate's one waiting primitive (`sync::raw::wait`, whose module docs have
//! the handshake and its SYNC POINT "wake"). Positions are committed through
//! `WaitCell::commit`: in a process registered for membarrier a plain
//! Release store (a full fence on every commit would cost the hot path
//! dearly: an `xchg` waits for the store buffer, i.e. for the message's own
//! cache misses; measured: see `docs/design-measurements.md`, "Queue
//! commits without a full fence"), otherwise a store and a SeqCst fence.
//! Both sides commit that way, consumers included. A close is part of every
//! wait's condition, so it releases producers and consumers at once.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::frame::{
    self, FRAME_HEADER, FrameError, FrameKind, UNIT, count_between, pack, unpack, used_units,
};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Padded;
use crate::platform::{self, ProcessId};
use crate::sync::raw::{
    LockSnapshot, Locked, RawGuard, RawMutex, Spin, Spinner, WaitCell, machine_busy, spin_allowed,
};

/// How often a producer waiting for space on a full ring reads `head`.
const POLL_PACE: std::time::Duration = std::time::Duration::from_micros(1);

/// How long a producer that found the ring full sleeps waiting for a quarter
/// of it to be free before it settles for one frame (bounds the delay a
/// consumer that stops consuming can cause; see `wait_space`).
const HYSTERESIS_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
/// How often a put waiting on a queue with one known reader asks whether
/// that reader still lives (see `ProducerGuard::put`).
const CONSUMER_CHECK_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// How far ahead of the frame it writes a producer asks for the ring's
/// lines (`Ring::prefetch_ahead`), and for how much of a frame at most.
const PREFETCH_AHEAD: usize = 256;
const PREFETCH_SPAN: usize = 512;

/// The largest frame whose lines a consumer takes over after reading it
/// (`Ring::hand_back`). Beyond it the ring is at least twice as large, so
/// its lines have left the producer's cache before it writes them again.
const HAND_BACK_MAX: usize = 64 << 10;

/// How many looks at `tail` in a row must each find new frames before a
/// consumer paces its looks (`Ring::reload_tail`), and the pace.
const STREAM_STREAK: u64 = 4;
const RELOAD_PACE_NANOS: u64 = 1_000;

/// How far into the ring a producer may write before it goes back to the
/// ring's start early when the frames queued leave room there
/// (`frame::early_wrap`), and the smallest message it does that for (each
/// such put loads `head`, the consumer's line). Rings of at most this are
/// used whole, as before.
const EARLY_WRAP_AFTER: usize = 4 << 20;
const EARLY_WRAP_MIN_PAYLOAD: usize = 4 << 10;

/// Space every stream keeps free for an `Abort` frame.
const ABORT_RESERVE: u64 = (FRAME_HEADER / UNIT) as u64;

thread_local! {
    /// The address of the shared state of the queue this thread last put
    /// to, in this thread's mapping (0: none). An address, not an identity:
    /// two mappings of one queue do not match, which only costs pacing.
    static LAST_PUT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// The ring offsets `hand_back` stored to on this thread, for tests
    /// that ask (`Some`): the stores change no value, so only this shows
    /// where they went.
    static HANDED_BACK: std::cell::RefCell<Option<Vec<usize>>> = const { std::cell::RefCell::new(None) };
}

/// What consumers keep of their looks at `tail`: written and read only under
/// `cons_lock`, so the line stays in the consumer's cache. Fits the padding
/// of the single word it replaced, so the layout is unchanged; in a queue
/// made before, the two new words hold whatever that padding held, which
/// `Ring::reload_tail` treats like any forged value (at most one pace).
#[repr(C)]
pub(crate) struct TailSeen {
    /// The last `tail` a consumer loaded: from the head on, it never
    /// overstates what is queued. Whoever moves `head` or `tail` under
    /// `cons_lock` keeps it between the two: a consumer reloads it when its
    /// head reaches it (`reload_tail`); a batch get that consumes frames
    /// committed after it stores the tail it loaded (`take_whole_if`), as
    /// does a producer stepping over a skip at the head (`reclaim_skip`);
    /// a producer taking a stream back (the one move of `tail` backwards)
    /// sets it to the new tail (`take_back_stream`). It is a hint from
    /// shared memory all the same: `wait_frame` reloads rather than use one
    /// that says more than a ring's worth is queued.
    tail: AtomicU64,
    /// How many loads of `tail` in a row found new frames (saturating).
    streak: AtomicU64,
    /// When the last of them was made (`CLOCK_MONOTONIC` ns), once `streak`
    /// reached `STREAM_STREAK`.
    last_load: AtomicU64,
}

/// When a paced look at `tail` may be made, given the last look
/// (`last_load`, from shared memory, so possibly forged) and the time `now`
/// (both `CLOCK_MONOTONIC` ns): `RELOAD_PACE_NANOS` after the last look, or
/// `None` for at once — when that time has passed, and when `last_load`
/// lies in the future (a forged or foreign clock value). A `Some` is never
/// more than the pace after `now`, so no value of `last_load` holds a
/// consumer longer.
fn pace_due(last_load: u64, now: u64) -> Option<u64> {
    if last_load > now {
        return None;
    }
    let due = last_load.saturating_add(RELOAD_PACE_NANOS);
    (now < due).then_some(due)
}

/// The queue's shared state; the ring's bytes follow it.
#[repr(C)]
pub(crate) struct QueueShared {
    prod_lock: Padded<RawMutex>,
    tail: Padded<AtomicU64>,
    stream_open: Padded<AtomicU32>,
    /// The last `head` a producer loaded: written and read only under
    /// `prod_lock`, so it stays in the producer's cache. It lags the real
    /// head, which only moves forward, so it never overstates free space.
    head_seen: Padded<AtomicU64>,
    cons_lock: Padded<RawMutex>,
    head: Padded<AtomicU64>,
    /// The last `tail` a consumer loaded, and how it paces its loads
    /// (under `cons_lock`).
    tail_seen: Padded<TailSeen>,
    not_empty: Padded<WaitCell>,
    not_full: Padded<WaitCell>,
    joined: Padded<WaitCell>,
    done: Padded<AtomicU64>,
    closed: Padded<AtomicU32>,
    max_items: Padded<AtomicU64>,
    /// How much free space (units) a producer asleep on a full ring wants
    /// before it is woken (0: any). Written by the producer (under
    /// `prod_lock`) before it registers to sleep; read by consumers after
    /// they see a registration (see `ProducerGuard::wait_space`).
    space_target: Padded<AtomicU64>,
    /// The process holding the first part of the message at the head, if a
    /// consumer's deadline passed in the middle of a stream (see
    /// "Streams that stall"). Written and read only under `cons_lock`.
    reader: Padded<StreamReader>,
}

/// Who keeps a partly read message (see [`QueueShared::reader`]): a process
/// identity, committed by the store of `pid` (0: nobody).
#[repr(C)]
struct StreamReader {
    pid: AtomicU32,
    _pad: u32,
    start_time: AtomicU64,
}

impl QueueShared {
    /// Initialises the shared state in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of `size_of::<QueueShared>()` bytes,
    /// aligned, and not in use.
    /// `fenced`: every commit pays a fence so that no sleeper issues a
    /// membarrier (see [`WaitCell::new_fenced`]).
    pub(crate) unsafe fn init(this: *mut QueueShared, max_items: u64, fenced: bool) -> Result<()> {
        let cell = || {
            if fenced {
                WaitCell::new_fenced()
            } else {
                WaitCell::new()
            }
        };
        // SAFETY: per the contract the region is ours; fields are written
        // through raw pointers before any reference to the struct exists.
        unsafe {
            RawMutex::init(std::ptr::addr_of_mut!((*this).prod_lock.0))?;
            RawMutex::init(std::ptr::addr_of_mut!((*this).cons_lock.0))?;
            std::ptr::addr_of_mut!((*this).tail).write(Padded(AtomicU64::new(0)));
            std::ptr::addr_of_mut!((*this).stream_open).write(Padded(AtomicU32::new(0)));
            std::ptr::addr_of_mut!((*this).head).write(Padded(AtomicU64::new(0)));
            std::ptr::addr_of_mut!((*this).head_seen).write(Padded(AtomicU64::new(0)));
            std::ptr::addr_of_mut!((*this).tail_seen).write(Padded(TailSeen {
                tail: AtomicU64::new(0),
                streak: AtomicU64::new(0),
                last_load: AtomicU64::new(0),
            }));
            std::ptr::addr_of_mut!((*this).not_empty).write(Padded(cell()));
            std::ptr::addr_of_mut!((*this).not_full).write(Padded(cell()));
            std::ptr::addr_of_mut!((*this).joined).write(Padded(cell()));
            std::ptr::addr_of_mut!((*this).space_target).write(Padded(AtomicU64::new(0)));
            std::ptr::addr_of_mut!((*this).reader).write(Padded(StreamReader {
                pid: AtomicU32::new(0),
                _pad: 0,
                start_time: AtomicU64::new(0),
            }));
            std::ptr::addr_of_mut!((*this).done).write(Padded(AtomicU64::new(0)));
            std::ptr::addr_of_mut!((*this).closed).write(Padded(AtomicU32::new(0)));
            std::ptr::addr_of_mut!((*this).max_items).write(Padded(AtomicU64::new(max_items)));
        }
        Ok(())
    }
}

/// The queue's shared words, read one by one without locking (for
/// `ipckit::admin`; a snapshot that may mix moments of a busy queue).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedSnapshot {
    pub head: u64,
    pub tail: u64,
    pub done: u64,
    pub max_items: u64,
    pub closed: bool,
    pub stream_open: bool,
    /// Consumers asleep waiting for data.
    pub sleeping_consumers: u32,
    /// The process keeping a partly read message (0: none).
    pub partial_reader: u32,
    /// Producers asleep waiting for space.
    pub sleeping_producers: u32,
    pub prod_lock: LockSnapshot,
    pub cons_lock: LockSnapshot,
}

impl QueueShared {
    /// Reads every word without taking a lock or writing anything.
    pub(crate) fn snapshot(&self) -> SharedSnapshot {
        // Head before tail, as in `Ring::len`: counts only grow, so the tail
        // read later is never behind the head.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        SharedSnapshot {
            head,
            tail,
            done: self.done.load(Ordering::Acquire),
            max_items: self.max_items.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Acquire) != 0,
            stream_open: self.stream_open.load(Ordering::Acquire) != 0,
            sleeping_consumers: self.not_empty.registered(),
            sleeping_producers: self.not_full.registered(),
            partial_reader: self.reader.pid.load(Ordering::Acquire),
            prod_lock: self.prod_lock.snapshot(),
            cons_lock: self.cons_lock.snapshot(),
        }
    }
}

/// A view of a queue: the shared state, the ring, and the capacity as
/// validated when the queue was opened (never re-read from shared memory).
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    s: &'a QueueShared,
    data: *mut u8,
    cap: usize,
    cap_units: u64,
    /// Which queue this is, the same in every mapping of it in this
    /// process (device, inode, offset): the key of its kept partial read.
    key: QueueKey,
}

/// A queue's identity in this process: its segment's device and inode and
/// its offset.
pub(crate) type QueueKey = (u64, u64, usize);

/// The first part of a message a consumer of this process read before its
/// deadline passed in the middle of the stream, kept for the next read.
struct Partial {
    key: QueueKey,
    buf: Vec<u8>,
    total: u64,
    got: u64,
}

/// Partial reads of this process (rare, and few: one per queue at most).
static PARTIALS: std::sync::Mutex<Vec<Partial>> = std::sync::Mutex::new(Vec::new());

fn keep_partial(p: Partial) {
    let mut all = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|q| q.key != p.key);
    all.push(p);
}

fn take_partial(key: QueueKey) -> Option<Partial> {
    let mut all = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    let i = all.iter().position(|p| p.key == key)?;
    Some(all.swap_remove(i))
}

/// A message read by [`ConsumerGuard::read_message`].
pub(crate) enum Read {
    /// A message is in the buffer.
    Message,
    /// A message over the size limit was skipped; its length.
    TooLarge(u64),
    /// The message at the head is half read by another live process,
    /// whose deadline passed in the middle of it; it will continue it.
    /// Nothing can be read before that: wait for [`Ring::reader_pid`] to
    /// change (the consumer lock must be released meanwhile).
    HeldBy(u32),
}

impl<'a> Ring<'a> {
    /// # Safety
    /// `s` must be an initialised `QueueShared` followed by `cap` ring bytes
    /// at `data`, all mapped for `'a`; `cap` must be a valid capacity.
    pub(crate) unsafe fn new(
        s: &'a QueueShared,
        data: *mut u8,
        cap: usize,
        key: QueueKey,
    ) -> Ring<'a> {
        debug_assert!(frame::valid_capacity(cap as u64));
        Ring {
            s,
            data,
            cap,
            cap_units: (cap / UNIT) as u64,
            key,
        }
    }

    /// The pid recorded as keeping a half-read message (0: none).
    pub(crate) fn reader_pid(&self) -> u32 {
        self.s.reader.pid.load(Ordering::Acquire)
    }

    /// Waits until the record of a half-read message no longer names
    /// `pid`, or `deadline` passes (`false`). A close does not end this
    /// wait: the message at the head stays that process's to continue, and
    /// the caller would only find it held again (a fuzzer found that loop).
    pub(crate) fn wait_reader_change(&self, pid: u32, deadline: Option<Instant>) -> bool {
        let changed = || self.reader_pid() != pid;
        // A kept partial is continued when its process reads again, which
        // may be long from now: sleep a slice at a time, and stop waiting
        // when its process is gone (the next locker clears the record).
        loop {
            if changed() {
                return true;
            }
            let holder = ProcessId {
                pid,
                start_time: self.s.reader.start_time.load(Ordering::Acquire),
            };
            if !platform::process_alive(holder) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.s.not_empty.wait_once(deadline, changed);
        }
    }

    pub(crate) fn max_items(&self) -> u64 {
        self.s
            .max_items
            .load(Ordering::Relaxed)
            .min(frame::MAX_ITEMS)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.s.closed.load(Ordering::Acquire) != 0
    }

    pub(crate) fn close(&self) {
        self.s.closed.store(1, Ordering::Release);
        // SYNC POINT "wake": `closed` is part of every wait's condition.
        self.s.not_empty.notify(u32::MAX);
        self.s.not_full.notify(u32::MAX);
        self.s.joined.notify(u32::MAX);
    }

    /// Messages queued now (a snapshot).
    pub(crate) fn len(&self) -> u64 {
        // Head first: counts only grow, so the tail read later is never behind.
        let (_, consumed) = unpack(self.s.head.load(Ordering::Acquire));
        let (_, produced) = unpack(self.s.tail.load(Ordering::Acquire));
        count_between(consumed, produced)
    }

    /// Bytes of the ring in use now (a snapshot).
    pub(crate) fn used_bytes(&self) -> u64 {
        let (h, _) = unpack(self.s.head.load(Ordering::Acquire));
        let (t, _) = unpack(self.s.tail.load(Ordering::Acquire));
        used_units(h, t) * UNIT as u64
    }

    // -- copying in and out of the ring -----------------------------------

    fn copy_in(&self, pos: u64, src: &[u8]) {
        let off = frame::ring_offset(pos, self.cap);
        let first = src.len().min(self.cap - off);
        // SAFETY: `off + first <= cap` and the rest (< cap, as every frame is
        // smaller than the ring) goes to the start; the ring lies inside the
        // mapping. The region is beyond the committed tail and we hold
        // `prod_lock`, so no other process reads or writes it now.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(off), first);
            // Most frames do not wrap: no second (empty) copy call.
            if first < src.len() {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(first),
                    self.data,
                    src.len() - first,
                );
            }
        }
    }

    /// Asks for the lines `PREFETCH_AHEAD` bytes beyond the frame of `len`
    /// bytes at `pos`, for writing: the next frames' lines.
    ///
    /// Why: in a small ring the consumer has just read those lines, so
    /// they sit in its cache, and a store to one waits for the other core
    /// to give it up. The producer's locked instructions (taking and
    /// releasing `prod_lock`) wait for its pending stores, so without the
    /// hint every message pays that transfer in full, one after the other
    /// (64 B messages, 64 KiB ring, full: ~5.5 M/s; with it ~10 M/s; a
    /// 16 MiB ring, whose lines the consumer no longer holds, is unchanged;
    /// see `docs/design-measurements.md`, "A producer asks for the ring's
    /// next lines"). Only a hint: it changes no memory and the lines stay readable by
    /// the consumer until a store takes them.
    fn prefetch_ahead(&self, pos: u64, len: usize) {
        let start = frame::ring_offset(pos, self.cap) + PREFETCH_AHEAD;
        let end = start + len.min(PREFETCH_SPAN);
        let mut line = start & !63;
        while line < end {
            // `% cap` keeps the address inside the ring (a hint needs no
            // valid address, but it should name a line we will write).
            // SAFETY: `line % cap < cap`, so the pointer stays inside the
            // ring's allocation; nothing is read or written through it.
            platform::prefetch_for_write(unsafe { self.data.add(line % self.cap) });
            line += 64;
        }
    }

    /// Stores to one byte in every cache line of the consumed frame of
    /// `units` at `pos` — the value it already holds — before its space is
    /// handed back by the `head` store; frames over `HAND_BACK_MAX` are
    /// left as they are.
    ///
    /// The value is the byte's own: a consumer killed between this and its
    /// `head` store leaves the frame to the next consumer, which must read
    /// it exactly as committed. (The first version stored zero: a consumer
    /// SIGKILLed in that window left a frame whose length had lost its low
    /// byte, and the next consumer read a corrupt frame —
    /// `a_consumer_killed_after_handing_back_leaves_its_frame_whole`.)
    ///
    /// Why: a line the consumer only read stays shared — the producer
    /// keeps a copy, the consumer another — and the producer's store to it
    /// a ring later must first invalidate the consumer's copy. The
    /// prefetchers do not do that ahead of time (neither `PREFETCHW` nor the
    /// hardware's: the line is present, only not writable), so each of the
    /// producer's per-message barriers (its lock, its unlock) waits for one
    /// such round trip between the CPUs. A consumer that reads and then
    /// writes the line takes it over whole (the CPUs hand a line read and
    /// then written by one core to that core outright), the producer's copy
    /// is dropped, and its next store is a miss, which its prefetches
    /// overlap. The consumer's own cost does not change. 64 B messages
    /// through a 64 KiB ring, two processes, medians: 12.7 -> 15.4 M/s with
    /// the CPUs' line round trip at ~115 ns, 3.8 -> 10.2 M/s at ~520 ns;
    /// 4 KiB messages 1.8-7.6 -> 12-22 GB/s (`docs/design-measurements.md`,
    /// "The consumer takes the lines it read").
    fn hand_back(&self, pos: u64, units: u64) {
        let len = units as usize * UNIT;
        if len > HAND_BACK_MAX {
            return;
        }
        let start = frame::ring_offset(pos, self.cap);
        let mut off = start;
        while off < start + len {
            // SAFETY: `off % cap < cap`, inside the ring's allocation. The
            // byte belongs to the frame being consumed (between `head` and
            // the committed tail, under `cons_lock`), which no producer
            // writes until our `head` store hands it back, and no other
            // consumer touches while we hold `cons_lock`; storing its own
            // value changes nothing any process can read. Volatile: the
            // store changes no value and must not be elided.
            unsafe {
                let p = self.data.add(off & (self.cap - 1));
                std::ptr::write_volatile(p, std::ptr::read_volatile(p));
            }
            #[cfg(test)]
            HANDED_BACK.with(|h| {
                if let Some(v) = h.borrow_mut().as_mut() {
                    v.push(off & (self.cap - 1));
                }
            });
            // The next line's first byte (the ring's start is line-aligned).
            off = (off | 63) + 1;
        }
    }

    /// Loads `tail` for a consumer that has consumed every frame it knew of
    /// (head at `hpos`), and records it in `tail_seen`.
    ///
    /// While a producer streams, a consumer that looks at `tail` as soon as
    /// it ran out finds one new frame per look and trails the producer by
    /// one: every message moves the `tail` line and the frame's last line
    /// between the CPUs, and the producer's next store waits for each.
    /// So once `STREAM_STREAK` looks in a row found new frames, the next
    /// look waits until `RELOAD_PACE_NANOS` after the last, and the producer
    /// writes several frames undisturbed — unless this thread's last put
    /// was to this queue: a thread that puts and then gets its own messages
    /// finds a new frame at every look too, and would wait the whole pace
    /// for nothing on every get (1 µs instead of ~90 ns per put + get).
    /// (Asking whether a producer holds `prod_lock` instead cost the
    /// producer a transfer of its lock's line per look: with the CPUs far
    /// apart, the pacing then gained nothing.) A look that finds nothing
    /// ends the streak, so a consumer waiting for a message (a round trip)
    /// looks at once, as before; only a consumer that keeps finding
    /// messages lets them gather, for at most the pace. A `try_get`
    /// (deadline passed) never waits, nor does a consumer where the spin
    /// policy forbids spinning (`machine_busy`, `spin_allowed`). 64 B
    /// messages, 64 KiB ring, two processes, the lines taken over
    /// (`hand_back`) in both, medians of ~185 runs: CPUs ~520 ns apart
    /// 12.1 -> 12.6 M/s (slowest run 3.9 -> 5.2), ~115 ns apart 17.4 ->
    /// 17.5 (`docs/design-measurements.md`).
    fn reload_tail(&self, hpos: u64, deadline: Option<Instant>) -> u64 {
        let seen = &self.s.tail_seen;
        // Both words come from shared memory: a forged streak only makes us
        // wait, for at most the pace (`last_load` in the future is ignored).
        let streak = seen.streak.load(Ordering::Relaxed);
        let mut now = 0;
        // Waiting is spinning: not where spinning cannot pay (one CPU, or
        // more runnable threads than CPUs: the producer may be the thread
        // this spin keeps off a CPU).
        if streak >= STREAM_STREAK
            && !self.last_put_here()
            && spin_allowed()
            && !machine_busy()
            && deadline.is_none_or(|d| Instant::now() < d)
        {
            now = platform::monotonic_nanos();
            if let Some(due) = pace_due(seen.last_load.load(Ordering::Relaxed), now) {
                while now < due {
                    std::hint::spin_loop();
                    now = platform::monotonic_nanos();
                }
            }
        }
        // SYNC POINT "tail".
        let tail = self.s.tail.load(Ordering::Acquire);
        seen.tail.store(tail, Ordering::Relaxed);
        if used_units(hpos, unpack(tail).0) == 0 {
            if streak != 0 {
                seen.streak.store(0, Ordering::Relaxed);
            }
        } else {
            seen.streak
                .store(streak.saturating_add(1), Ordering::Relaxed);
            // The clock was read only if pacing was considered (a producer
            // at work): the first such look never waits (`last_load` is
            // old), and a thread that gets its own messages reads no clock.
            if now != 0 {
                seen.last_load.store(now, Ordering::Relaxed);
            }
        }
        tail
    }

    /// Whether this thread's last put was to this queue (see
    /// `reload_tail`); `note_put` records it.
    #[inline]
    fn last_put_here(&self) -> bool {
        LAST_PUT.get() == self.s as *const QueueShared as usize
    }

    #[inline]
    fn note_put(&self) {
        LAST_PUT.set(self.s as *const QueueShared as usize);
    }

    fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let off = frame::ring_offset(pos, self.cap);
        let first = dst.len().min(self.cap - off);
        // SAFETY: as in `copy_in`; the region lies between head and the
        // committed tail and we hold `cons_lock`, so producers do not write it.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(off), dst.as_mut_ptr(), first);
            if first < dst.len() {
                std::ptr::copy_nonoverlapping(
                    self.data,
                    dst.as_mut_ptr().add(first),
                    dst.len() - first,
                );
            }
        }
    }

    /// Appends `len` bytes at `pos` to `buf` without zero-filling first.
    fn append_out(&self, pos: u64, len: usize, buf: &mut Vec<u8>) {
        buf.reserve(len);
        let start = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len];
        // SAFETY: MaybeUninit<u8> and u8 have the same layout; `copy_out`
        // writes every byte of the slice before anything reads it.
        let dst = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        self.copy_out(pos, dst);
        // SAFETY: the `len` bytes after `start` were just initialised.
        unsafe { buf.set_len(start + len) };
    }

    // -- locks -------------------------------------------------------------

    fn lock_error(side: &str, e: Error) -> Error {
        if e.is_timeout() {
            Error::new(
                ErrorKind::Timeout,
                format!("timed out waiting for the queue's {side} lock"),
            )
        } else {
            e
        }
    }

    /// Takes `prod_lock`, repairing after a producer that died (or panicked).
    pub(crate) fn lock_producer(&self, deadline: Option<Instant>) -> Result<ProducerGuard<'a>> {
        let locked = self
            .s
            .prod_lock
            .lock(deadline)
            .map_err(|e| Self::lock_error("producer", e))?;
        // SAFETY: this thread has just taken the lock.
        let lock = unsafe { RawGuard::new(&self.s.prod_lock) };
        self.after_producer_lock(locked);
        Ok(ProducerGuard {
            ring: *self,
            _lock: lock,
        })
    }

    fn after_producer_lock(&self, locked: Locked) {
        if locked.owner_died {
            // A producer died holding the lock. Its uncommitted bytes are
            // invisible already; if it was inside a stream, end the stream.
            if self.s.stream_open.load(Ordering::Acquire) != 0 {
                let (pos, count) = unpack(self.s.tail.load(Ordering::Relaxed));
                self.copy_in(pos, &frame::encode_header(FrameKind::Abort, 0));
                let tail = pack(pos + ABORT_RESERVE, count);
                self.s
                    .not_empty
                    .commit(|| self.s.tail.store(tail, Ordering::Release));
                self.s.stream_open.store(0, Ordering::Release);
                self.s.not_empty.wake(u32::MAX);
            }
            self.s.prod_lock.mark_consistent();
        }
    }

    /// Takes `cons_lock`. A consumer that died left nothing to repair: its
    /// message is still queued, or its half-read stream is skipped later.
    pub(crate) fn lock_consumer(&self, deadline: Option<Instant>) -> Result<ConsumerGuard<'a>> {
        let locked = self
            .s
            .cons_lock
            .lock(deadline)
            .map_err(|e| Self::lock_error("consumer", e))?;
        // SAFETY: this thread has just taken the lock.
        let lock = unsafe { RawGuard::new(&self.s.cons_lock) };
        if locked.owner_died {
            self.s.cons_lock.mark_consistent();
        }
        Ok(ConsumerGuard {
            ring: *self,
            _lock: lock,
        })
    }

    /// Checks on the producer side from a consumer waiting inside a stream:
    /// if `prod_lock` is free, takes it for a moment, which runs the
    /// dead-producer repair (an `Abort` frame) if its last holder died.
    ///
    /// Returns whether the stream can never continue: the lock was free (a
    /// streaming producer holds it from the `Start` to the `End`), no
    /// stream is open, and — read under the lock, so after any frame its
    /// last holder committed — nothing follows the consumer's position
    /// `hpos`. Only bytes written by something other than a producer (a
    /// lone `Start` frame) leave a stream so.
    fn probe_producer(&self, hpos: u64) -> bool {
        let Ok(locked) = self.s.prod_lock.try_lock() else {
            return false;
        };
        // SAFETY: we just took the lock on this thread.
        let _lock = unsafe { RawGuard::new(&self.s.prod_lock) };
        self.after_producer_lock(locked);
        // We hold the producer lock, so nobody is writing a stream: a
        // stream flag still set was not written by a producer (which
        // clears it before unlocking, or dies and is repaired above).
        if self.s.stream_open.load(Ordering::Acquire) != 0 {
            self.s.stream_open.store(0, Ordering::Release);
            self.s.not_empty.notify(u32::MAX);
        }
        // Ordering: the lock's Acquire orders these after its last
        // holder's commits.
        self.s.stream_open.load(Ordering::Acquire) == 0
            && used_units(hpos, unpack(self.s.tail.load(Ordering::Acquire)).0) == 0
    }
}

/// Proof that this thread holds `prod_lock`; unlocks on drop. A producer
/// that panics while holding it poisons it, and the next producer runs the
/// same repair as after a producer's death.
pub(crate) struct ProducerGuard<'a> {
    ring: Ring<'a>,
    _lock: RawGuard<'a>,
}

/// Proof that this thread holds `cons_lock`; unlocks on drop.
pub(crate) struct ConsumerGuard<'a> {
    ring: Ring<'a>,
    _lock: RawGuard<'a>,
}

fn timeout(what: &str) -> Error {
    Error::new(ErrorKind::Timeout, format!("timed out waiting for {what}"))
}

fn closed() -> Error {
    Error::new(ErrorKind::Closed, "the queue is closed")
}

impl ProducerGuard<'_> {
    /// Waits until `units` are free (and, if `item`, the item limit allows
    /// one more message). Returns the current tail word.
    fn wait_space(
        &self,
        units: u64,
        item: bool,
        deadline: Option<Instant>,
        consumer_alive: Option<&dyn Fn() -> bool>,
    ) -> Result<u64> {
        let r = &self.ring;
        let tail = r.s.tail.load(Ordering::Relaxed);
        let (tpos, produced) = unpack(tail);
        let fits_after = |head: u64, want: u64| {
            let (hpos, consumed) = unpack(head);
            // Saturating: positions come from shared memory (a forged head
            // reads as a full ring, never as room beyond it).
            let free = r.cap_units.saturating_sub(used_units(hpos, tpos));
            free >= want && (!item || count_between(consumed, produced) < r.max_items())
        };
        // First against the cached head: no cache miss on the consumer's line.
        if fits_after(r.s.head_seen.load(Ordering::Relaxed), units) {
            return Ok(tail);
        }
        let fits_want = |want: u64| {
            // SYNC POINT "head".
            let head = r.s.head.load(Ordering::Acquire);
            r.s.head_seen.store(head, Ordering::Relaxed);
            fits_after(head, want)
        };
        let fits = || fits_want(units);
        if fits() {
            return Ok(tail);
        }
        // A `Skip` at the head holds room no consumer is about to free if
        // none is at work: take it back (`reclaim_skip`).
        if self.reclaim_skip() && fits() {
            return Ok(tail);
        }
        // The ring is full. Hysteresis: while the consumer is draining it
        // (we spin), wait for a quarter of the ring, not for one frame, so
        // that the two sides do not fall into a lockstep in which every
        // message moves the head's and the tail's cache lines between the
        // CPUs; the wake-ups below, for a consumer slower than the spin
        // budget, still wait for one frame only.
        let want = units.max(r.cap_units / 4);
        let mut spinner = Spinner::new();
        // A `try_put` (its deadline already passed) does not spin.
        let may_spin = deadline.is_none_or(|d| Instant::now() < d);
        while may_spin && spinner.spin() {
            if fits_want(want) || r.is_closed() {
                return if fits() { Ok(tail) } else { Err(closed()) };
            }
            // Each look at `head` takes its line from the consumer, whose
            // next commit then misses: look about once a microsecond (a
            // quarter of the ring takes many of them to drain).
            let paced = Instant::now();
            while paced.elapsed() < POLL_PACE {
                std::hint::spin_loop();
            }
        }
        // Still full: sleep — first, briefly, until a quarter is free, with
        // consumers told not to wake us before (`space_target`: no system
        // call per message while the ring drains); then, if the consumer is
        // slower than that, until one frame fits. A close releases the
        // producer at once: `closed` is part of both conditions.
        if may_spin {
            // SYNC POINT "wake": written before we register, so a consumer
            // that sees our registration sees the target.
            r.s.space_target.store(want, Ordering::Relaxed);
            let until = Instant::now() + HYSTERESIS_WAIT;
            let short = deadline.map_or(until, |d| d.min(until));
            let ready = || fits_want(want) || r.is_closed();
            let _ = r.s.not_full.wait_until(Some(short), Spin::No, ready);
            r.s.space_target.store(0, Ordering::Relaxed);
            if fits() || r.is_closed() {
                return if fits() { Ok(tail) } else { Err(closed()) };
            }
        }
        let ready = || fits() || r.is_closed();
        // Rings that can hold a `Skip` wait in slices too: a consumer that
        // stops right before a skip frees its room without waking us, and
        // between slices we take it back (`reclaim_skip`).
        let skips = r.cap > EARLY_WRAP_AFTER;
        match consumer_alive {
            None if !skips => {
                if !r.s.not_full.wait_until(deadline, Spin::No, ready) {
                    return Err(timeout("space in the queue"));
                }
            }
            None => loop {
                let slice = Instant::now() + CONSUMER_CHECK_SLICE;
                let until = deadline.map_or(slice, |d| d.min(slice));
                if r.s.not_full.wait_until(Some(until), Spin::No, ready)
                    || (self.reclaim_skip() && fits())
                {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(timeout("space in the queue"));
                }
            },
            // Sliced: between slices, the caller says whether the one
            // process that reads this queue still lives.
            Some(alive) => loop {
                let slice = Instant::now() + CONSUMER_CHECK_SLICE;
                let until = deadline.map_or(slice, |d| d.min(slice));
                if r.s.not_full.wait_until(Some(until), Spin::No, ready)
                    || (skips && self.reclaim_skip() && fits())
                {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(timeout("space in the queue"));
                }
                if !alive() {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "the process reading the queue is gone",
                    ));
                }
            },
        }
        if fits() { Ok(tail) } else { Err(closed()) }
    }

    /// Writes one frame at the tail word `tail` and commits it; returns the
    /// new tail word. `ends_message` counts a message.
    fn commit_frame(&self, tail: u64, kind: FrameKind, payload: &[u8], ends_message: bool) -> u64 {
        let r = &self.ring;
        let (pos, count) = unpack(tail);
        let units = frame::frame_units(payload.len()).expect("frame sizes are bounded by the ring");
        r.prefetch_ahead(pos, units as usize * UNIT);
        // Lengths fit the header's 32 bits: frames are at most
        // `MAX_FRAME_PAYLOAD` (`max_whole_payload`, `chunk_payload`).
        debug_assert!(payload.len() <= frame::MAX_FRAME_PAYLOAD);
        r.copy_in(pos, &frame::encode_header(kind, payload.len() as u32));
        r.copy_in(pos + (FRAME_HEADER / UNIT) as u64, payload);
        let new = pack(pos + units, count + u64::from(ends_message));
        // SYNC POINT "tail": the frame's bytes happen-before a consumer's
        // Acquire load that sees this word (`commit` is at least Release).
        r.s.not_empty
            .commit(|| r.s.tail.store(new, Ordering::Release));
        new
    }

    /// Goes back to the ring's start for a frame of `units` if
    /// `frame::early_wrap` says so: writes a `Skip` frame over the rest of
    /// the ring at `tail` and returns the tail word after it, for the frame
    /// to be committed there. The skip is not committed on its own: the
    /// frame's `tail` store commits both, so a producer killed in between
    /// leaves nothing a consumer can see. Otherwise returns `tail`.
    fn wrap_early(&self, tail: u64, units: u64) -> u64 {
        let r = &self.ring;
        let (tpos, count) = unpack(tail);
        // SYNC POINT "head": the consumer's copies out of the ring's start
        // happen-before our writes there (it commits `head` with Release).
        let head = r.s.head.load(Ordering::Acquire);
        // Ordering: Relaxed, a producer-side cache read and written only
        // under the producer lock (as in `wait_space`).
        r.s.head_seen.store(head, Ordering::Relaxed);
        let after = (EARLY_WRAP_AFTER / UNIT) as u64;
        let Some(skip) = frame::early_wrap(unpack(head).0, tpos, r.cap_units, units, after) else {
            return tail;
        };
        let len = (skip - 1) * UNIT as u64;
        // `early_wrap` bounds the skip's length to a header's 32 bits.
        r.copy_in(tpos, &frame::encode_header(FrameKind::Skip, len as u32));
        pack(tpos + skip, count)
    }

    /// Takes the consumer lock if it is free right now, so that no consumer
    /// can start while a producer tidies the head (`reclaim_skip`,
    /// `take_back_stream`). `None` if it is held, or if a consumer died
    /// holding it: that consumer may have been mid-message, and ending what
    /// it left is its recoverer's business.
    fn try_consumer_lock(&self) -> Option<RawGuard<'_>> {
        let cons_lock = &self.ring.s.cons_lock;
        let locked = cons_lock.try_lock().ok()?;
        // SAFETY: this thread has just taken the lock, and only the guard
        // unlocks it.
        let guard = unsafe { RawGuard::new(cons_lock) };
        (!locked.owner_died).then_some(guard)
    }

    /// Steps the head over a `Skip` frame at the head, as a consumer would,
    /// if no consumer holds the consumer lock (taken here, so none can start
    /// meanwhile): a skip is consumed right after the frames before it, but
    /// a consumer that stopped right there leaves its room held. `true` if
    /// it stepped. Not where a consumer died holding the lock (its
    /// recoverer's business), as in `take_back_stream`.
    fn reclaim_skip(&self) -> bool {
        let r = &self.ring;
        if r.cap <= EARLY_WRAP_AFTER {
            return false;
        }
        let Some(_guard) = self.try_consumer_lock() else {
            return false;
        };
        // Under both locks: `head` is written only by consumer-lock holders,
        // `tail` only by producer-lock holders.
        let head = r.s.head.load(Ordering::Relaxed);
        let tail = r.s.tail.load(Ordering::Relaxed);
        let (hpos, count) = unpack(head);
        let used = used_units(hpos, unpack(tail).0);
        if used == 0 {
            return false;
        }
        let mut hdr = [0u8; FRAME_HEADER];
        r.copy_out(hpos, &mut hdr);
        let Ok((FrameKind::Skip, _, units)) = frame::decode_header(hdr, used, r.cap_units) else {
            return false;
        };
        // The consumers' cached tail may be the skip's own position: keep
        // it from falling behind the head (see `TailSeen::tail`). Relaxed:
        // written and read under `cons_lock`.
        r.s.tail_seen.tail.store(tail, Ordering::Relaxed);
        // SYNC POINT "head": Release, as every head commit (the skip's bytes
        // were never read for data, so there is nothing to order but the
        // word itself).
        r.s.head.store(pack(hpos + units, count), Ordering::Release);
        true
    }

    /// Ends a stream that ran out of time by taking it back whole — the
    /// tail returns to `before_start`, so the queue's bytes and message
    /// count agree again, as if it was never put — if no consumer has
    /// started on it: the consumer lock is free (taken here, so none can
    /// start meanwhile) and the head has not passed the `Start` frame.
    /// Otherwise `false`, and the caller ends it with an `Abort` frame that
    /// consumers skip.
    fn take_back_stream(&self, before_start: u64) -> bool {
        let r = &self.ring;
        let Some(_guard) = self.try_consumer_lock() else {
            return false;
        };
        let (start_pos, _) = unpack(before_start);
        // SYNC POINT "head": a consumer commits its position with Release.
        let (hpos, _) = unpack(r.s.head.load(Ordering::Acquire));
        if hpos != start_pos {
            return false;
        }
        // Ordering: Release, as every tail commit; consumers, none of which
        // can read now, Acquire-load it. No frame after `before_start` is
        // reachable once it is the tail again.
        r.s.tail.store(before_start, Ordering::Release);
        // A consumer that looked at `tail` after the `Start` was committed
        // and then stopped at it holds the frames taken back in its cached
        // tail: the next get would read them, or a frame a producer is
        // writing there. Relaxed: written and read under `cons_lock`.
        r.s.tail_seen.tail.store(before_start, Ordering::Relaxed);
        // Ordering: Release, as where a stream's End clears it.
        r.s.stream_open.store(0, Ordering::Release);
        // Producers waiting for space may go on (we held their lock).
        r.s.not_full.wake(u32::MAX);
        true
    }

    /// Puts one message. `deadline` bounds the waits for space; a stream
    /// that runs out of time is ended with an `Abort` frame.
    ///
    /// With `consumer_alive`, waits for space are sliced and end with a
    /// `Closed` error (a stream with an `Abort` frame) once it says the
    /// queue's one reader is gone: for queues with a single known reader
    /// (a pool worker's task queue), so that a put never waits on the dead.
    pub(crate) fn put(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        consumer_alive: Option<&dyn Fn() -> bool>,
    ) -> Result<()> {
        let r = &self.ring;
        if r.is_closed() {
            return Err(closed());
        }
        if msg.len() <= frame::max_whole_payload(r.cap) {
            let units = frame::frame_units(msg.len()).expect("bounded above");
            let mut tail = self.wait_space(units, true, deadline, consumer_alive)?;
            if msg.len() >= EARLY_WRAP_MIN_PAYLOAD {
                tail = self.wrap_early(tail, units);
            }
            self.commit_frame(tail, FrameKind::Whole, msg, true);
            r.s.not_empty.wake(1);
            r.note_put();
            return Ok(());
        }
        // A stream: Start (total length), Cont..., End.
        let start_units = frame::frame_units(8).expect("small") + ABORT_RESERVE;
        let mut tail = self.wait_space(start_units, true, deadline, consumer_alive)?;
        let before_start = tail;
        // Set before the Start frame is committed, cleared after the End:
        // a recoverer that sees it set ends the stream with Abort (harmless
        // if the Start or the End was never or already committed).
        r.s.stream_open.store(1, Ordering::Release);
        tail = self.commit_frame(
            tail,
            FrameKind::Start,
            &(msg.len() as u64).to_le_bytes(),
            false,
        );
        r.s.not_empty.wake(1);
        let chunk = frame::chunk_payload(r.cap);
        let mut rest = msg;
        while !rest.is_empty() {
            let n = rest.len().min(chunk);
            let units = frame::frame_units(n).expect("bounded") + ABORT_RESERVE;
            match self.wait_space(units, false, deadline, consumer_alive) {
                Ok(t) => tail = t,
                Err(e) => {
                    if self.take_back_stream(before_start) {
                        return Err(e);
                    }
                    tail = r.s.tail.load(Ordering::Relaxed);
                    self.commit_frame(tail, FrameKind::Abort, &[], false);
                    r.s.stream_open.store(0, Ordering::Release);
                    r.s.not_empty.wake(1);
                    return Err(e);
                }
            }
            let last = n == rest.len();
            let kind = if last {
                FrameKind::End
            } else {
                FrameKind::Cont
            };
            tail = self.commit_frame(tail, kind, &rest[..n], last);
            rest = &rest[n..];
            r.s.not_empty.wake(1);
        }
        let _ = tail;
        r.s.stream_open.store(0, Ordering::Release);
        r.note_put();
        Ok(())
    }
}

/// The outcome of waiting for a frame.
enum Next {
    Frame {
        kind: FrameKind,
        len: u32,
        units: u64,
        head: u64,
    },
    Closed,
}

/// Who keeps the half-read message at the head.
enum Held {
    /// This process: continue it.
    ByUs(Partial),
    /// Another live process, by pid.
    ByOther(u32),
}

impl ConsumerGuard<'_> {
    /// Waits for a frame at the head, until `deadline`. Inside a stream
    /// (`mid_stream`) a producer that died is detected (and a close does
    /// not end the wait: the stream's End or Abort is still to come).
    fn wait_frame(&self, deadline: Option<Instant>, mid_stream: bool) -> Result<Next> {
        let r = &self.ring;
        let head = r.s.head.load(Ordering::Relaxed);
        let hpos = unpack(head).0;
        let available = || {
            // SYNC POINT "tail".
            let tail = r.s.tail.load(Ordering::Acquire);
            used_units(hpos, unpack(tail).0) > 0
        };
        // Outside a stream a close ends the wait too: it is part of the
        // condition, so a close racing with our registration is never
        // slept through — unless a stream is still being written, whose
        // frames are still to come (the close ends the wait once it ends).
        let closed_for_good = || r.is_closed() && r.s.stream_open.load(Ordering::Acquire) == 0;
        let ready = || available() || (!mid_stream && closed_for_good());
        let mut spinner = Spinner::new();
        let mut may_spin = None;
        loop {
            // The cached tail first: no cache miss while frames are queued.
            // A cache that says nothing, or more than the ring holds (behind
            // the head: forged, or left by a bug), is reloaded.
            let mut tail = r.s.tail_seen.tail.load(Ordering::Relaxed);
            let cached = used_units(hpos, unpack(tail).0);
            if cached == 0 || cached > r.cap_units {
                tail = r.reload_tail(hpos, deadline);
            }
            let used = used_units(hpos, unpack(tail).0);
            if used > 0 {
                let mut hdr = [0u8; FRAME_HEADER];
                r.copy_out(hpos, &mut hdr);
                let (kind, len, units) =
                    frame::decode_header(hdr, used, r.cap_units).map_err(corrupt)?;
                return Ok(Next::Frame {
                    kind,
                    len,
                    units,
                    head,
                });
            }
            if !mid_stream && closed_for_good() {
                return Ok(Next::Closed);
            }
            // A `try_get` (its deadline already passed) does not spin.
            let may_spin =
                *may_spin.get_or_insert_with(|| deadline.is_none_or(|d| Instant::now() < d));
            if may_spin && spinner.spin() {
                continue;
            }
            if mid_stream {
                // Is the stream's producer still there? If the producer lock
                // is free, the stream ended (its End or Abort is coming), or
                // its producer died and `probe_producer` just wrote the Abort
                // — or nothing will ever come (a lone, forged `Start`).
                if r.probe_producer(hpos) {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        "corrupt stream: it started, but no producer is writing it and nothing follows",
                    ));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(timeout("the rest of a message"));
                }
                r.s.not_empty.wait_once(deadline, available);
                continue;
            }
            if r.is_closed() {
                // Closed while a stream is open: if its producer is gone,
                // this takes its lock and ends the stream (an Abort frame),
                // so that the wait below can end.
                r.probe_producer(hpos);
            }
            if !r.s.not_empty.wait_until(deadline, Spin::No, ready) {
                return Err(timeout("a message"));
            }
        }
    }

    /// Consumes the frame at `head` (`units` long); `ends` counts a message.
    fn advance(&self, head: u64, units: u64, ends: bool) {
        let (pos, count) = unpack(head);
        // SYNC POINT "head": our copies out happen-before a producer's
        // Acquire load that sees this word and reuses the space (`commit`
        // is at least Release). SYNC POINT "wake": `commit` supplies the
        // barrier the wake-up handshake needs.
        let s = &self.ring.s;
        self.ring.hand_back(pos, units);
        let new_pos = pos + units;
        let head = pack(new_pos, count + u64::from(ends));
        s.not_full.commit(|| s.head.store(head, Ordering::Release));
        // A producer asleep on a full ring says from where on it wants
        // waking; the ring running empty wakes it regardless.
        s.not_full.wake_if(u32::MAX, || {
            let want = s.space_target.load(Ordering::Relaxed);
            let tail = unpack(s.tail.load(Ordering::Acquire)).0;
            self.ring
                .cap_units
                .saturating_sub(used_units(new_pos, tail))
                >= want
        });
    }

    fn payload_pos(head: u64) -> u64 {
        unpack(head).0 + (FRAME_HEADER / UNIT) as u64
    }

    /// Reads the next message into `buf` (replacing its contents). Messages
    /// longer than `limit` are skipped and reported as `TooLarge`.
    ///
    /// `deadline` bounds every wait, in the middle of a stream too: if it
    /// passes there, the part read so far is kept (in this process, with a
    /// record in shared memory) and the call fails with a timeout; the next
    /// read of this queue by this process continues the message. Another
    /// process meanwhile gets [`Read::HeldBy`].
    pub(crate) fn read_message(
        &self,
        buf: &mut Vec<u8>,
        limit: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Read>> {
        let r = &self.ring;
        if let Some(held) = self.check_reader() {
            match held {
                Held::ByUs(p) => {
                    *buf = p.buf;
                    return self.read_stream(buf, p.total, p.got, limit, deadline);
                }
                Held::ByOther(pid) => return Ok(Some(Read::HeldBy(pid))),
            }
        }
        loop {
            let Next::Frame {
                kind,
                len,
                units,
                head,
            } = self.wait_frame(deadline, false)?
            else {
                return Ok(None);
            };
            match kind {
                FrameKind::Whole => {
                    buf.clear();
                    if u64::from(len) > limit {
                        self.advance(head, units, true);
                        return Ok(Some(Read::TooLarge(len.into())));
                    }
                    r.append_out(Self::payload_pos(head), len as usize, buf);
                    self.advance(head, units, true);
                    return Ok(Some(Read::Message));
                }
                FrameKind::Start => {
                    let mut total = [0u8; 8];
                    r.copy_out(Self::payload_pos(head), &mut total);
                    let total = u64::from_le_bytes(total);
                    self.advance(head, units, false);
                    buf.clear();
                    // Grown as the chunks arrive past the first ring's worth:
                    // `total` comes from shared memory.
                    if total <= limit {
                        buf.reserve(total.min(r.cap_units * UNIT as u64) as usize);
                    }
                    if let Some(read) = self.read_stream(buf, total, 0, limit, deadline)? {
                        return Ok(Some(read));
                    }
                    // Aborted: go on with the next message.
                }
                // Leftovers of a stream whose consumer died or whose Start we
                // never saw: skip them (an End still counts its message).
                FrameKind::Cont | FrameKind::Abort => self.advance(head, units, false),
                FrameKind::End => self.advance(head, units, true),
                // The rest of the ring, skipped by a producer that went back
                // to its start (`ProducerGuard::wrap_early`).
                FrameKind::Skip => self.advance(head, units, false),
            }
        }
    }

    /// Looks at the record of a half-read message: ours to continue, a live
    /// other process's, or a dead one's (cleared: its leftovers are skipped).
    fn check_reader(&self) -> Option<Held> {
        let rec = &self.ring.s.reader;
        let pid = rec.pid.load(Ordering::Acquire);
        if pid == 0 {
            return None;
        }
        let holder = ProcessId {
            pid,
            start_time: rec.start_time.load(Ordering::Acquire),
        };
        let me = platform::current_process();
        if holder == me {
            if let Some(p) = take_partial(self.ring.key) {
                self.clear_reader();
                return Some(Held::ByUs(p));
            }
        } else if platform::process_alive(holder) {
            return Some(Held::ByOther(pid));
        }
        // Its keeper is gone (or this process lost its part): the rest of
        // the message is skipped as leftovers.
        self.clear_reader();
        None
    }

    fn clear_reader(&self) {
        self.ring.s.reader.pid.store(0, Ordering::Release);
        // Consumers of other processes wait for the record to change.
        self.ring.s.not_empty.notify(u32::MAX);
    }

    /// Keeps the part of a message read so far, for this process's next
    /// read, and records that in shared memory (see `read_message`).
    fn keep(&self, buf: &mut Vec<u8>, total: u64, got: u64) {
        keep_partial(Partial {
            key: self.ring.key,
            buf: std::mem::take(buf),
            total,
            got,
        });
        let me = platform::current_process();
        let rec = &self.ring.s.reader;
        rec.start_time.store(me.start_time, Ordering::Release);
        // The pid's store commits the record.
        rec.pid.store(me.pid, Ordering::Release);
    }

    /// Reads a stream's chunks after its Start, `got` bytes of `total`
    /// already in `buf`. `None` if it was aborted.
    fn read_stream(
        &self,
        buf: &mut Vec<u8>,
        total: u64,
        mut got: u64,
        limit: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<Read>> {
        let r = &self.ring;
        let keep = total <= limit;
        loop {
            let next = match self.wait_frame(deadline, true) {
                Ok(next) => next,
                Err(e) if e.is_timeout() => {
                    self.keep(buf, total, got);
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "timed out in the middle of a message (its producer is slow or \
                         stopped); the part read is kept and the next get continues it",
                    ));
                }
                Err(e) => return Err(e),
            };
            let Next::Frame {
                kind,
                len,
                units,
                head,
            } = next
            else {
                unreachable!("wait_frame mid-stream never reports Closed");
            };
            match kind {
                FrameKind::Cont | FrameKind::End => {
                    got += u64::from(len);
                    if got > total {
                        return Err(corrupt(FrameError::Overrun {
                            frame_units: got,
                            used_units: total,
                        }));
                    }
                    if keep {
                        r.append_out(Self::payload_pos(head), len as usize, buf);
                    }
                    let end = kind == FrameKind::End;
                    self.advance(head, units, end);
                    if end {
                        if got != total {
                            return Err(Error::new(
                                ErrorKind::Corrupt,
                                format!("corrupt stream: {got} of {total} bytes before its end"),
                            ));
                        }
                        return Ok(Some(if keep {
                            Read::Message
                        } else {
                            buf.clear();
                            Read::TooLarge(total)
                        }));
                    }
                }
                FrameKind::Abort => {
                    self.advance(head, units, false);
                    buf.clear();
                    return Ok(None);
                }
                // Producers skip only before a whole message, so this one
                // follows a stream that ended (its End or Abort already
                // read) or whose producer died: step over it either way.
                FrameKind::Skip => self.advance(head, units, false),
                // A new message without an End or Abort: the stream's
                // producer died before its recoverer could abort it.
                FrameKind::Whole | FrameKind::Start => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// Takes the next message only if it is complete in the ring right now
    /// (a `Whole` frame), at most `limit` bytes, and accepted by `accept`:
    /// copies it into `buf`, runs `accept` on the bytes, and consumes the
    /// message only if `accept` returns `Some`. Otherwise the message stays
    /// at the head for the next read, which reports what is wrong with it.
    /// Never waits.
    pub(crate) fn take_whole_if<R>(
        &self,
        buf: &mut Vec<u8>,
        limit: u64,
        accept: impl FnOnce(&[u8]) -> Option<R>,
    ) -> Option<R> {
        let r = &self.ring;
        let mut head = r.s.head.load(Ordering::Relaxed);
        // SYNC POINT "tail".
        let tail = r.s.tail.load(Ordering::Acquire);
        // The frames taken below may lie past the consumers' cached tail:
        // keep the cache ahead of the head (see `TailSeen::tail`). Relaxed:
        // written and read under `cons_lock`, which we hold.
        r.s.tail_seen.tail.store(tail, Ordering::Relaxed);
        let (mut used, mut hdr) = (
            used_units(unpack(head).0, unpack(tail).0),
            [0u8; FRAME_HEADER],
        );
        // At most one `Skip` is stepped over: a producer writes one before
        // a frame, never two in a row.
        let mut skipped = false;
        let (len, units) = loop {
            if used == 0 {
                return None;
            }
            r.copy_out(unpack(head).0, &mut hdr);
            match frame::decode_header(hdr, used, r.cap_units) {
                Ok((FrameKind::Whole, len, units)) => break (len, units),
                Ok((FrameKind::Skip, _, units)) if !skipped => {
                    self.advance(head, units, false);
                    // Ordering: Relaxed, our own store just above (we hold
                    // the consumer lock; only its holder writes `head`).
                    head = r.s.head.load(Ordering::Relaxed);
                    used -= units;
                    skipped = true;
                }
                _ => return None,
            }
        };
        if u64::from(len) > limit {
            return None;
        }
        buf.clear();
        r.append_out(Self::payload_pos(head), len as usize, buf);
        let value = accept(buf)?;
        self.advance(head, units, true);
        Some(value)
    }
}

fn corrupt(e: FrameError) -> Error {
    Error::new(ErrorKind::Corrupt, e.to_string())
}

// -- JoinableQueue -----------------------------------------------------------

impl Ring<'_> {
    /// Messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let done = self.s.done.load(Ordering::Acquire);
        let (_, produced) = unpack(self.s.tail.load(Ordering::Acquire));
        count_between(done, produced)
    }

    pub(crate) fn task_done(&self) -> Result<()> {
        let mut done = self.s.done.load(Ordering::Acquire);
        loop {
            let (_, produced) = unpack(self.s.tail.load(Ordering::Acquire));
            if count_between(done, produced) == 0 {
                return Err(Error::new(
                    ErrorKind::LimitExceeded,
                    "task_done() called more times than there were items put",
                ));
            }
            let next = (done + 1) & frame::MAX_ITEMS;
            match self
                .s
                .done
                .compare_exchange_weak(done, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(d) => done = d,
            }
        }
        if self.unfinished() == 0 {
            // SYNC POINT "wake": `done` was committed by the CAS above.
            self.s.joined.notify(u32::MAX);
        }
        Ok(())
    }

    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<()> {
        let finished = || self.unfinished() == 0;
        let mut spinner = Spinner::new();
        loop {
            if finished() {
                return Ok(());
            }
            if spinner.spin() {
                continue;
            }
            if !self.s.joined.wait_until(deadline, Spin::No, finished) {
                return Err(timeout("all tasks to be done"));
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::queue::Queue;

    /// Forges a frame at the tail as a writer that is not a producer would:
    /// under the producer lock, without `stream_open`.
    fn forge(q: &Queue<()>, kind: FrameKind, payload: &[u8]) {
        let ring = q.ring();
        let p = ring.lock_producer(None).unwrap();
        let tail = ring.s.tail.load(Ordering::Relaxed);
        p.commit_frame(tail, kind, payload, false);
    }

    #[test]
    fn a_lone_stream_start_is_reported_not_waited_for() {
        let q = Queue::<()>::new(4096).unwrap();
        forge(&q, FrameKind::Start, &100_000u64.to_le_bytes());
        let mut buf = Vec::new();
        let t = Instant::now();
        let e = q.try_get_bytes_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        forge(&q, FrameKind::Start, &100_000u64.to_le_bytes());
        let e = q
            .get_bytes_into_timeout(&mut buf, Duration::from_secs(30))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // The queue goes on.
        q.put_bytes(b"next").unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"next");
    }

    /// Found by `fuzz/queue_shared_bytes`: both looped in `try_get`.
    #[test]
    fn closed_with_a_stale_stream_flag_or_a_foreign_reader_does_not_loop() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        ring.s.closed.store(1, Ordering::Release);
        ring.s.stream_open.store(1, Ordering::Release);
        let mut buf = Vec::new();
        let t = Instant::now();
        assert!(q.try_get_bytes_into(&mut buf).is_err());
        assert!(
            q.get_bytes_into_timeout(&mut buf, Duration::from_millis(200))
                .is_err()
        );
        // The message at the head half read by a live process (pid 1),
        // on a closed queue.
        q.ring().s.reader.pid.store(1, Ordering::Release);
        q.ring().s.reader.start_time.store(0, Ordering::Release);
        assert!(q.try_get_bytes_into(&mut buf).is_err());
        assert!(
            q.get_bytes_into_timeout(&mut buf, Duration::from_millis(200))
                .is_err()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn a_forged_tail_is_corruption_not_a_read_past_the_ring() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        // A header claiming 1 000 000 bytes and a tail claiming them queued.
        ring.copy_in(0, &frame::encode_header(FrameKind::Whole, 1_000_000));
        ring.s.tail.store(
            pack(frame::frame_units(1_000_000).unwrap(), 1),
            Ordering::Release,
        );
        let mut buf = Vec::new();
        let e = q.try_get_bytes_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("in a ring of 4096"), "{e}");
        // A producer, too, sees no room beyond the ring (and no panic).
        assert!(q.try_put_bytes(b"x").is_err());
    }

    /// A message of `len` bytes numbered `i`: every byte depends on both.
    fn numbered(i: u32, len: usize) -> Vec<u8> {
        (0..len)
            .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i * 7) as u8)
            .collect()
    }

    /// A ring that can wrap early (16 MiB), the message length the
    /// early-wrap tests put (64 KiB) and its frame's size in bytes.
    fn early_wrap_setup() -> (Queue<()>, usize, usize, usize) {
        let cap = 4 * EARLY_WRAP_AFTER;
        let len = 64 << 10;
        let frame = frame::frame_units(len).unwrap() as usize * UNIT;
        (Queue::<()>::new(cap).unwrap(), cap, len, frame)
    }

    /// A batch get takes the frames committed after the consumer last
    /// looked at `tail` (`take_whole_if` loads it itself): the head then
    /// passes the consumer's cached tail, and the next `get` must look
    /// again rather than read the stale cache as "a ring's worth queued".
    #[test]
    fn a_batch_get_past_the_cached_tail_leaves_the_next_get_sound() {
        let q = Queue::<u32>::new(4096).unwrap();
        for i in 0..5 {
            q.put(&i).unwrap();
        }
        // Caches the tail after message 4.
        assert_eq!(q.get().unwrap(), 0);
        for i in 5..10 {
            q.put(&i).unwrap();
        }
        // Starts from the cache, then takes 5..10 past it.
        assert_eq!(q.get_many(100).unwrap(), (1..10).collect::<Vec<_>>());
        q.put(&10).unwrap();
        assert_eq!(q.get().unwrap(), 10);
        assert!(q.try_get().is_err());
    }

    /// A consumer that looked at `tail` while a stream's `Start` was
    /// committed, and consumed only the message before it, still holds
    /// that tail in its cache when the stream's producer runs out of time
    /// and takes the stream back (the head is at its `Start`, no consumer
    /// is at work): the cache must not send the next `get` into the bytes
    /// taken back, nor into the frame a producer writes there next.
    #[test]
    fn a_stream_taken_back_after_the_consumer_looked_is_not_read() {
        let q = Queue::<()>::new(4096).unwrap();
        q.put_bytes(b"before").unwrap();
        let big = vec![7u8; 10_000];
        std::thread::scope(|s| {
            let p = s.spawn(|| q.put_bytes_timeout(&big, Duration::from_millis(300)));
            // The stream's Start and the ring's worth of chunks are in.
            let t = Instant::now();
            while q.used_bytes() < 3000 {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "no stream: {}",
                    q.used_bytes()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // Looks at tail (the Start and the chunks are in it), takes
            // the message before the stream and leaves the head at its Start.
            assert_eq!(q.get_bytes().unwrap(), b"before");
            let e = p.join().unwrap().unwrap_err();
            assert!(e.is_timeout(), "{e}");
        });
        assert_eq!((q.len(), q.used_bytes()), (0, 0), "taken back");
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"after");
        let mut buf = Vec::new();
        let e = q.try_get_bytes_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
        q.put_bytes(b"again").unwrap();
        assert_eq!(q.get_bytes().unwrap(), b"again");
        assert_eq!((q.len(), q.used_bytes()), (0, 0));
    }

    /// A producer that steps over a skip at the head (`reclaim_skip`) moves
    /// the head past the consumer's cached tail when the consumer caught up
    /// just before the skip was written: its next `get` must still find
    /// the frame after the skip.
    #[test]
    fn a_skip_stepped_over_by_a_producer_leaves_the_consumer_sound() {
        let (q, _, len, frame) = early_wrap_setup();
        let ring = q.ring();
        let mut buf = Vec::new();
        let i = up_to_the_bound(&q, len, frame, &mut buf);
        let tail_at =
            || frame::ring_offset(unpack(ring.s.tail.load(Ordering::Relaxed)).0, ring.cap);
        // A, taken at once (the consumer's last look at `tail` ends at A),
        // then B, past the bound: a skip and B at the ring's start.
        q.put_bytes(&numbered(i, len)).unwrap();
        q.get_bytes_into(&mut buf).unwrap();
        let skip_at = tail_at();
        q.put_bytes(&numbered(i + 1, len)).unwrap();
        assert_eq!(tail_at(), frame, "B went to the ring's start");
        // More than the room the skip leaves: the put that finds the ring
        // full steps over the skip (no consumer is at work) and goes on.
        let n = (skip_at / frame) as u32 + 2;
        for k in 0..n {
            q.put_bytes_timeout(&numbered(i + 2 + k, len), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("put {k} of {n}: {e}"));
        }
        for k in 0..n + 1 {
            q.get_bytes_into(&mut buf)
                .unwrap_or_else(|e| panic!("message {k}: {e}"));
            assert!(buf == numbered(i + 1 + k, len), "message {k}");
        }
        assert_eq!((q.len(), q.used_bytes()), (0, 0));
    }

    /// Puts and gets numbered messages of `len` bytes (frames of `frame`)
    /// until the tail is just short of `EARLY_WRAP_AFTER`, the consumer
    /// caught up; returns the next message's number.
    fn up_to_the_bound(q: &Queue<()>, len: usize, frame: usize, buf: &mut Vec<u8>) -> u32 {
        let ring = q.ring();
        let mut i = 0;
        while frame::ring_offset(unpack(ring.s.tail.load(Ordering::Relaxed)).0, ring.cap) + frame
            < EARLY_WRAP_AFTER
        {
            q.put_bytes(&numbered(i, len)).unwrap();
            q.get_bytes_into(buf).unwrap();
            assert!(*buf == numbered(i, len), "message {i}");
            i += 1;
        }
        i
    }

    /// While the consumer keeps up, a producer of large messages goes back
    /// to the ring's start once past `EARLY_WRAP_AFTER` instead of writing
    /// the whole ring; every message arrives intact and in order, through
    /// `get` and through a batch get (`take_whole_if`) alike.
    #[test]
    fn a_producer_that_is_kept_up_with_reuses_the_rings_start() {
        let (q, cap, len, frame) = early_wrap_setup();
        let ring = q.ring();
        let frame = frame as u64;
        let mut buf = Vec::new();
        let mut furthest = 0;
        for i in 0..600u32 {
            let msg = numbered(i, len);
            q.put_bytes(&msg).unwrap();
            let (tpos, _) = unpack(ring.s.tail.load(Ordering::Relaxed));
            let end = frame::ring_offset(tpos, ring.cap) as u64;
            furthest = furthest.max(if end == 0 { cap as u64 } else { end });
            q.get_bytes_into(&mut buf).unwrap();
            assert!(buf == msg, "message {i}");
        }
        // 600 frames of 64 KiB (37.5 MiB) went through a 16 MiB ring without
        // the tail passing the bound by more than a frame.
        assert!(
            furthest <= EARLY_WRAP_AFTER as u64 + frame,
            "the tail reached {furthest} of {cap}"
        );
        // A backlog, with no consumer at work: the whole ring holds it (a
        // skip left at the head on the way is taken back; see
        // `a_skip_left_at_the_head_does_not_hold_a_sleeping_producer`).
        let n = (cap / (len + UNIT)) as u32 - 1;
        for i in 0..n {
            q.put_bytes_timeout(&numbered(i, len), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("backlog message {i} of {n}: {e}"));
        }
        for i in 0..n {
            q.get_bytes_into(&mut buf).unwrap();
            assert!(buf == numbered(i, len), "backlog message {i}");
        }
        let batch: Queue<Vec<u8>> = Queue::new(cap).unwrap();
        // Typed messages through a batch get, which steps over the skip.
        let mut sent = 0u32;
        let mut got = 0u32;
        while got < 400 {
            while sent < got + 3 {
                batch.put(&numbered(sent, len)).unwrap();
                sent += 1;
            }
            for m in batch.get_many(8).unwrap() {
                assert!(m == numbered(got, len), "batch message {got}");
                got += 1;
            }
        }
        let r = batch.ring();
        let skipped_to_start =
            frame::ring_offset(unpack(r.s.tail.load(Ordering::Relaxed)).0, r.cap);
        assert!(skipped_to_start as u64 <= EARLY_WRAP_AFTER as u64 + 3 * frame);
    }

    /// A consumer that reads the frames before a skip and stops: the
    /// producer, already asleep on the full ring, takes the skip's room back
    /// between its sleeps and finishes its puts.
    #[test]
    fn a_skip_left_at_the_head_does_not_hold_a_sleeping_producer() {
        let (q, cap, len, frame) = early_wrap_setup();
        let ring = q.ring();
        let mut buf = Vec::new();
        let i = up_to_the_bound(&q, len, frame, &mut buf);
        // A: the last frame before the bound. B: past it, so it wraps.
        q.put_bytes(&numbered(i, len)).unwrap();
        q.put_bytes(&numbered(i + 1, len)).unwrap();
        let b_at = frame::ring_offset(unpack(ring.s.tail.load(Ordering::Relaxed)).0, ring.cap);
        assert_eq!(b_at, frame, "B went to the ring's start");
        // A producer fills the rest of the room and goes to sleep on it: it
        // puts as many more as the whole ring holds beside B.
        let n = (cap / frame) as u32 - 2;
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for k in 0..n {
                    q.put_bytes_timeout(&numbered(i + 2 + k, len), Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("put {k} of {n}: {e}"));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        // The consumer reads A only, and stops there, before the skip.
        q.get_bytes_into(&mut buf).unwrap();
        assert!(buf == numbered(i, len));
        let t = Instant::now();
        while !producer.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the producer is still held"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.join().unwrap();
        // Everything after A arrives, in order.
        for k in 0..n + 1 {
            q.get_bytes_into(&mut buf).unwrap();
            assert!(buf == numbered(i + 1 + k, len), "message {k}");
        }
    }

    /// A `Skip` written but not committed (its producer killed before the
    /// frame's `tail` store) is invisible: the next put writes over it.
    #[test]
    fn an_uncommitted_skip_is_invisible() {
        let cap = 2 * EARLY_WRAP_AFTER;
        let q = Queue::<()>::new(cap).unwrap();
        let ring = q.ring();
        let len = 256 << 10;
        let mut buf = Vec::new();
        // Bring the tail past the bound with the consumer caught up.
        let mut i = 0;
        while frame::ring_offset(unpack(ring.s.tail.load(Ordering::Relaxed)).0, ring.cap)
            < EARLY_WRAP_AFTER
        {
            q.put_bytes(&numbered(i, len)).unwrap();
            q.get_bytes_into(&mut buf).unwrap();
            i += 1;
        }
        // As a producer killed after `wrap_early`, before its commit.
        {
            let p = ring.lock_producer(None).unwrap();
            let tail = ring.s.tail.load(Ordering::Relaxed);
            let units = frame::frame_units(len).unwrap();
            assert_ne!(p.wrap_early(tail, units), tail, "it would have wrapped");
        }
        assert!(q.try_get_bytes_into(&mut buf).is_err(), "nothing is queued");
        q.put_bytes(&numbered(i, len)).unwrap();
        q.get_bytes_into(&mut buf).unwrap();
        assert!(buf == numbered(i, len));
    }

    /// `hand_back` stores to exactly one byte in each line of the frame
    /// being consumed and nowhere else: frames of every length from 1 to
    /// 300 bytes, crossing line boundaries and the ring's end, with several
    /// frames queued behind the one consumed; every message arrives intact.
    #[test]
    fn consumed_frames_are_handed_back_within_their_own_bytes() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        let msg = |i: usize| -> Vec<u8> {
            let len = 1 + (i * 37) % 300;
            (0..len).map(|j| (i + j) as u8 | 1).collect()
        };
        let (mut sent, mut got) = (0, 0);
        let mut buf = Vec::new();
        let mut wrapped = 0;
        while got < 2_000 {
            // Keep up to 8 messages queued behind the one read.
            while sent < got + 8 {
                q.put_bytes(&msg(sent)).unwrap();
                sent += 1;
            }
            let pos = unpack(ring.s.head.load(Ordering::Acquire)).0;
            HANDED_BACK.with(|h| *h.borrow_mut() = Some(Vec::new()));
            q.get_bytes_into(&mut buf).unwrap();
            assert_eq!(buf, msg(got), "message {got}");
            let len = (unpack(ring.s.head.load(Ordering::Acquire)).0 - pos) as usize * UNIT;
            let at = frame::ring_offset(pos, ring.cap);
            // One store per line the frame's bytes `at..at + len` touch, at
            // the frame's first byte, then at each later line's first byte.
            let want: Vec<usize> = std::iter::once(at)
                .chain((at / 64 + 1..=(at + len - 1) / 64).map(|l| l * 64))
                .map(|o| o % ring.cap)
                .collect();
            wrapped += usize::from(at + len > ring.cap);
            assert_eq!(HANDED_BACK.with(|h| h.take()), Some(want), "message {got}");
            got += 1;
        }
        assert!(wrapped > 10, "only {wrapped} frames crossed the ring's end");
    }

    /// A consumer SIGKILLed after `hand_back` and before its `head` store
    /// leaves the frame to the next consumer: it must read the message as
    /// it was committed (a hand-back that stored zero cut the length's low
    /// byte, and the next consumer found a corrupt frame).
    #[test]
    fn a_consumer_killed_after_handing_back_leaves_its_frame_whole() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        let mut buf = Vec::new();
        for len in [1, 7, 8, 63, 64, 200, 300, 1000] {
            let m: Vec<u8> = (0..len).map(|j| (j * 31 + len) as u8 | 0x80).collect();
            q.put_bytes(&m).unwrap();
            q.put_bytes(b"behind").unwrap();
            let head = ring.s.head.load(Ordering::Acquire);
            let tail = unpack(ring.s.tail.load(Ordering::Acquire)).0;
            let (pos, _) = unpack(head);
            // What the dying consumer did before its `head` store.
            ring.hand_back(pos, tail - pos);
            assert_eq!(ring.s.head.load(Ordering::Acquire), head);
            q.get_bytes_into(&mut buf).unwrap();
            assert_eq!(buf, m, "a {len}-byte message");
            assert_eq!(q.get_bytes().unwrap(), b"behind");
        }
    }

    /// Whatever `last_load` holds (it comes from shared memory), a paced
    /// look waits until a time at most the pace after now, and a look whose
    /// pace has passed, or whose `last_load` lies in the future, waits not
    /// at all.
    #[test]
    fn a_paced_look_waits_at_most_the_pace() {
        let now = platform::monotonic_nanos();
        for n in [0, 1, now, u64::MAX - RELOAD_PACE_NANOS, u64::MAX] {
            for last in [
                0,
                1,
                n.saturating_sub(RELOAD_PACE_NANOS + 1),
                n.saturating_sub(RELOAD_PACE_NANOS),
                n.saturating_sub(RELOAD_PACE_NANOS - 1),
                n.saturating_sub(1),
                n,
                n.saturating_add(1),
                n.saturating_add(RELOAD_PACE_NANOS),
                u64::MAX,
            ] {
                match pace_due(last, n) {
                    Some(due) => {
                        assert!(n < due, "last {last}, now {n}: due {due}");
                        assert!(
                            due - n <= RELOAD_PACE_NANOS,
                            "last {last}, now {n}: due {due}"
                        );
                        assert!(last <= n, "a future last_load {last} (now {n}) held a look");
                    }
                    None => assert!(
                        last > n || last.saturating_add(RELOAD_PACE_NANOS) <= n,
                        "last {last}, now {n}: no wait though the pace has not passed"
                    ),
                }
            }
        }
        // A look right after the last waits the rest of the pace.
        assert_eq!(pace_due(now - 10, now), Some(now - 10 + RELOAD_PACE_NANOS));
    }

    /// The pacing words come from shared memory: forged (a streak at its
    /// maximum, `last_load` far in the future, now, or never), they neither
    /// stop a consumer from getting its messages nor make a `try_get` wait
    /// (`a_paced_look_waits_at_most_the_pace` bounds each wait). The
    /// messages come from another thread, so that pacing is considered at
    /// all (a thread never paces for its own puts).
    #[test]
    fn a_forged_pacing_state_does_not_hold_a_consumer() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        let seen = &ring.s.tail_seen;
        let mut buf = Vec::new();
        for last in [u64::MAX, platform::monotonic_nanos(), 0] {
            for _ in 0..1_000 {
                seen.streak.store(u64::MAX, Ordering::Relaxed);
                seen.last_load.store(last, Ordering::Relaxed);
                let q2 = q.clone();
                std::thread::spawn(move || q2.put_bytes(b"m").unwrap())
                    .join()
                    .unwrap();
                assert!(!ring.last_put_here());
                assert_eq!(q.get_bytes().unwrap(), b"m");
                seen.streak.store(u64::MAX, Ordering::Relaxed);
                assert_eq!(
                    q.try_get_bytes_into(&mut buf).unwrap_err().kind(),
                    ErrorKind::WouldBlock
                );
            }
        }
    }

    /// A thread that gets the messages it put itself never paces (it would
    /// wait for nothing): no clock read, however long the streak. Messages
    /// from another thread may be paced (if the machine is not busy), and
    /// all arrive.
    #[test]
    fn a_thread_reading_its_own_puts_does_not_pace() {
        let q = Queue::<()>::new(4096).unwrap();
        let ring = q.ring();
        let seen = &ring.s.tail_seen;
        for _ in 0..100 {
            q.put_bytes(b"m").unwrap();
            assert_eq!(q.get_bytes().unwrap(), b"m");
        }
        assert!(seen.streak.load(Ordering::Relaxed) >= STREAM_STREAK);
        assert_eq!(seen.last_load.load(Ordering::Relaxed), 0);
        // This thread's last put goes elsewhere; another thread produces.
        Queue::<()>::new(4096).unwrap().put_bytes(b"x").unwrap();
        for _ in 0..100 {
            let q2 = q.clone();
            std::thread::spawn(move || q2.put_bytes(b"m").unwrap())
                .join()
                .unwrap();
            assert_eq!(q.get_bytes().unwrap(), b"m");
        }
    }
}
