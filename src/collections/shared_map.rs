//! [`SharedMap`]: a fixed-capacity hash map in one shared-memory segment.
//!
//! # Layout
//!
//! | offset | what |
//! |---|---|
//! | 0 | object header; kind `SharedMap`, type `(K, V)`, parameter = capacity |
//! | 128 | [`RawMutex`] (one cache line) |
//! | 192 | `len`: entry count, `u64`, advisory; 200: `epoch`, `u32` (one cache line) |
//! | 256 (or the slot alignment) | `slots` × [`Slot<K, V>`] |
//!
//! The table is open addressing with linear probing (Knuth, TAOCP vol. 3,
//! §6.4, algorithm L), with deletion by backward shift (algorithm R, see
//! "Tombstone reclamation"); tombstones are a state a slot passes through.
//! `slots` is the smallest power of two ≥ `capacity · 4/3` (and ≥ 2), so the
//! load factor never exceeds 3/4; a key's home slot is
//! `mix64(fnv1a(key)) mod slots`.
//!
//! # The slot state word (`u32`)
//!
//! Bits 8..32 hold the slot's epoch, bits 0..8 its code. A slot whose epoch
//! is not the map's current `epoch` (mod 2²⁴) is `EMPTY`, whatever its code:
//! that is how [`clear`](SharedMap::clear) empties every slot with one store.
//!
//! | code | name | meaning (when the epoch is current) |
//! |---|---|---|
//! | 0 | `EMPTY` | never held a key since the last `clear`; ends every probe sequence |
//! | 1 | `TOMBSTONE` | a hole: held a key that was removed or moved; probing continues past it, insert may reuse it |
//! | 2 | `LIVE0` | holds `key`; its value is `vals[0]` |
//! | 3 | `LIVE1` | holds `key`; its value is `vals[1]` |
//! | 4..=255 | | corrupt, in any epoch: every operation that reads it fails with [`ErrorKind::Corrupt`] |
//!
//! Every transition is one Release store, done while holding the lock:
//!
//! - insert of a new key: write `key` and `vals[0]` of an `EMPTY` or
//!   `TOMBSTONE` slot (which nobody reads), then store `LIVE0`;
//! - update: write the inactive buffer, then store the other `LIVE` value;
//! - remove: store `TOMBSTONE` (the commit point: the key is gone); then
//!   close the hole by backward shift (see "Tombstone reclamation"), which
//!   moves keys with the two stores above (`LIVE0` into a hole, `TOMBSTONE`
//!   at the old slot) and ends with `TOMBSTONE` → `EMPTY` stores;
//! - clear: one Release store of `epoch + 1` (SYNC POINT "clear"), which
//!   makes every slot `EMPTY` at once; then a sweep rewrites each stale slot
//!   as `EMPTY` in the new epoch (no change in meaning), so that no stale
//!   slot is left to come back to life when the 24-bit epoch wraps. A sweep
//!   cut short by a crash is finished by the recovery below.
//!
//! # Tombstone reclamation
//!
//! A table that only marked deletions fills with tombstones under churn
//! (remove a key, insert a new one) until every miss and every insert of a
//! new key scans the whole table (the `shared_map_churn` bench in
//! `benches/manager.rs`; figures in the README). So
//! [`remove`](SharedMap::remove) closes the hole it leaves by
//! **backward-shift deletion** — Knuth's algorithm R (TAOCP vol. 3, §6.4),
//! generalised to tolerate other tombstones; code and proof in
//! `reclaim.rs`. It walks forward from the hole to the next `EMPTY` slot;
//! each key whose probe path (its home up to its slot) holds a hole moves
//! back into the first such hole, whose own slot becomes a hole; at the
//! `EMPTY` slot no key's path crosses a remaining hole, and each becomes
//! `EMPTY`. Tombstones then exist only during a remove (or after a crash,
//! until the repair below), and a lookup costs what it costs in a table
//! that never saw a removal.
//!
//! Moving the key at slot `j` into the hole `q`, and ending the shift:
//!
//! | step | what | a process killed after it leaves |
//! |---|---|---|
//! | 1 | write `j`'s key and live value into `q`'s `key` and `vals[0]` (`q` is a tombstone: nobody reads them) | the hole, as it was |
//! | 2 | store `LIVE0` in `q` (SYNC POINT "slot publish") | the key in `q` **and** in `j`, with the same value |
//! | 3 | store `TOMBSTONE` in `j` (SYNC POINT "slot publish") | the key in `q`, a hole at `j` |
//! | end | store `EMPTY` in each remaining hole, one at a time | fewer holes |
//!
//! `q` lies on the key's path before `j`, so the path to `q` is a prefix of
//! the path to `j` and holds no `EMPTY` slot; and holes stay tombstones
//! until the end. So after **every** store each present key is found by a
//! lookup, with its value, and no absent key is. The window between steps
//! 2 and 3 shows the key twice, but a lookup stops at the first copy, `q`,
//! and both copies hold the same value. That window must not outlive a
//! crash — an update would change only `q`, and a later removal of `q`
//! would bring `j`'s stale copy back — and it does not, because no
//! operation sees the table before the repair below. No user code
//! (`K::hash`, `K::eq`) runs between steps 2 and 3: a panicking `K::hash`
//! during a shift leaves holes, never a duplicate.
//!
//! # Crash windows and repair
//!
//! A process killed between any two stores therefore leaves a table in
//! which every key is either fully there (old or new value) or absent, and
//! is found by lookups. It may also leave: one key in two slots (a move cut
//! between its steps 2 and 3), tombstones (a remove or a shift cut short),
//! a stale `len` (one store apart from the slot's), or an unfinished clear
//! sweep. The robust lock tells the next locker that its holder died, and
//! before doing anything else that locker repairs the map
//! (`SharedMap::recover`):
//!
//! 1. finish the clear sweep;
//! 2. bury (store `TOMBSTONE` in) the copy farther from its home of any key
//!    held twice — the one lookups do not find;
//! 3. close every hole by the backward shift;
//! 4. recount `len`, then mark the lock consistent.
//!
//! Every step is made of the stores above, so a repair killed half-way
//! leaves a state of the same kinds; the lock stays marked inconsistent
//! until step 4, so the next locker repairs again.
//!
//! Ordering: state words are stored with Release and loaded with Acquire
//! (SYNC POINT "slot publish"). Under the lock, the mutex already orders
//! everything; the pair matters for the process that takes over a lock whose
//! holder was killed, which received no unlock: seeing a `LIVE` state must
//! imply seeing the key and value written before it (for a key moved by a
//! backward shift too). `epoch` is stored with Release and loaded with
//! Acquire for the same reason (SYNC POINT "clear"). `len` is only
//! accessed under the lock (Relaxed).
//!
//! The repair also needs order *between* slots: a repairer that sees a
//! move's `TOMBSTONE` in `j` must see its `LIVE0` in `q`, whichever it reads
//! first. It does: the kernel releases a dead holder's robust lock on that
//! thread's own exit path, after every store the thread made, by an atomic
//! read-modify-write of the lock word, which the next locker's acquiring
//! lock reads; so every store of the dead holder happens before the repair.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::reclaim::{self, Cell};
use super::{Held, hash_key, mix64};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{ShmSafe, TypeFingerprint, align_up};
use crate::object::{Create, Layout, Object, Open, Uninit, payload_offset};
use crate::segment::Segment;
use crate::sync::raw::RawMutex;

// ---------------------------------------------------------------------------
// Pure parts: slot states and probing (no memory access, Miri-friendly)
// ---------------------------------------------------------------------------

const EMPTY: u32 = 0;
const TOMBSTONE: u32 = 1;
const LIVE0: u32 = 2;
/// Epochs are 24 bits wide (bits 8..32 of a state word).
const EPOCH_MASK: u32 = 0x00ff_ffff;

/// A decoded slot state word (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Empty,
    Tombstone,
    /// Occupied; the value is in buffer 0 or 1.
    Live(usize),
}

impl SlotState {
    /// Decodes a state word read in map epoch `epoch`; `None` if corrupt.
    fn decode(word: u32, epoch: u32) -> Option<SlotState> {
        let code = word & 0xff;
        if code > LIVE0 + 1 {
            return None;
        }
        if word >> 8 != epoch & EPOCH_MASK {
            return Some(SlotState::Empty);
        }
        match code {
            EMPTY => Some(SlotState::Empty),
            TOMBSTONE => Some(SlotState::Tombstone),
            _ => Some(SlotState::Live((code - LIVE0) as usize)),
        }
    }

    /// The state word of this state in map epoch `epoch`.
    fn encode(self, epoch: u32) -> u32 {
        let code = match self {
            SlotState::Empty => EMPTY,
            SlotState::Tombstone => TOMBSTONE,
            SlotState::Live(b) => LIVE0 + (b as u32 & 1),
        };
        ((epoch & EPOCH_MASK) << 8) | code
    }
}

/// The number of slots for a map of `capacity` entries: the smallest power
/// of two ≥ `capacity · 4/3` and ≥ 2. `None` for 0 or on overflow.
fn slots_for(capacity: usize) -> Option<usize> {
    if capacity == 0 {
        return None;
    }
    capacity
        .checked_mul(4)?
        .div_ceil(3)
        .max(2)
        .checked_next_power_of_two()
}

/// The slot visited at `step` of the probe sequence that starts at the home
/// slot of `hash`, in a table of `slots` (a power of two) slots.
fn probe(hash: u64, step: usize, slots: usize) -> usize {
    debug_assert!(slots.is_power_of_two());
    (mix64(hash) as usize).wrapping_add(step) & (slots - 1)
}

/// The lock, held for one operation, and the map's epoch read under it.
struct Op<'a> {
    held: Held<'a>,
    epoch: u32,
}

/// Where a key is, or where it would go.
enum Find {
    /// In slot `.0`, value in buffer `.1`.
    Found(usize, usize),
    /// Absent; it would be inserted in this slot (the first tombstone on its
    /// probe sequence, else the `EMPTY` that ended it), if any.
    Vacant(Option<usize>),
}

/// The map's table under the lock of `op`, as the reclamation algorithms
/// (`reclaim.rs`) see it. Each mutating method is one [`SharedMap::publish`].
struct Tab<'a, K: ShmSafe + Eq + Hash, V: ShmSafe> {
    map: &'a SharedMap<K, V>,
    op: &'a Op<'a>,
}

impl<K: ShmSafe + Eq + Hash, V: ShmSafe> reclaim::Table for Tab<'_, K, V> {
    type Key = K;

    fn slots(&self) -> usize {
        self.map.nslots
    }

    fn cell(&self, i: usize) -> Result<Cell<K>> {
        Ok(match self.map.state(self.op, i)? {
            SlotState::Empty => Cell::Empty,
            SlotState::Tombstone => Cell::Tombstone,
            SlotState::Live(_) => Cell::Live(self.map.key(self.op, i)),
        })
    }

    fn home(&self, k: &K) -> usize {
        probe(hash_key(k), 0, self.map.nslots)
    }

    fn copy(&self, from: usize, to: usize) -> Result<()> {
        let (m, op) = (self.map, self.op);
        let SlotState::Live(b) = m.state(op, from)? else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("slot {from} changed under the lock"),
            ));
        };
        // `to` is a tombstone: nobody reads its key or values.
        m.write_key(op, to, m.key(op, from));
        m.write_val(op, to, 0, m.val(op, from, b));
        m.publish(op, to, SlotState::Live(0));
        Ok(())
    }

    fn bury(&self, i: usize) -> Result<()> {
        self.map.publish(self.op, i, SlotState::Tombstone);
        Ok(())
    }

    fn vacate(&self, i: usize) -> Result<()> {
        self.map.publish(self.op, i, SlotState::Empty);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

/// One table slot. `repr(C)`: the same layout in every process.
#[repr(C)]
struct Slot<K, V> {
    state: AtomicU32,
    key: K,
    vals: [V; 2],
}

const fn lock_offset() -> usize {
    payload_offset(std::mem::align_of::<RawMutex>())
}

const fn len_offset() -> usize {
    lock_offset() + std::mem::size_of::<RawMutex>()
}

const fn epoch_offset() -> usize {
    len_offset() + 8
}

const fn slots_offset<K, V>() -> usize {
    let end = len_offset() + crate::layout::CACHE_LINE;
    match align_up(end, std::mem::align_of::<Slot<K, V>>()) {
        Some(v) => v,
        None => end,
    }
}

// ---------------------------------------------------------------------------
// SharedMap
// ---------------------------------------------------------------------------

/// A fixed-capacity hash map of [`ShmSafe`] keys and values in shared
/// memory, under one robust process-shared lock. No server process.
///
/// The capacity (how many entries fit) is fixed at creation; inserting a new
/// key into a full map fails with [`ErrorKind::LimitExceeded`]. The table
/// behind it has the smallest power of two ≥ `capacity · 4/3` slots (so the
/// load factor stays ≤ 3/4), each holding a state word, a key and two values
/// (see [`size_in_segment`](Self::size_in_segment)). Keys are
/// placed by a deterministic hash (FNV-1a over what `K::hash` writes, then
/// MurmurHash3's finaliser), so every process agrees — as long as `K::hash`
/// and `K::eq` themselves are deterministic, as derived ones are.
///
/// Every operation takes the lock once. A process killed while holding it
/// (even by SIGKILL) loses nothing that was committed and tears nothing: the
/// next operation recovers on its own and succeeds (see the [module
/// docs](super#crash-consistency)). Calling the map's methods from inside an
/// [`update`](SharedMap::update) closure fails with
/// [`ErrorKind::LimitExceeded`] instead of deadlocking.
///
/// Removals leave no tombstones behind (backward-shift deletion, see the
/// module docs), so a map churned by millions of removals and inserts
/// probes as briefly as a fresh one.
///
/// ```
/// use ipckit::collections::SharedMap;
/// # fn main() -> ipckit::Result<()> {
/// let m: SharedMap<u64, u64> = SharedMap::new(1000)?;   // anonymous; pass it to children
/// assert_eq!(m.insert(1, 10)?, None);
/// assert_eq!(m.insert(1, 11)?, Some(10));
/// m.update(&1, |v| *v += 1)?;
/// assert_eq!(m.get_or_insert(2, 20)?, 20);
/// assert_eq!(m.to_vec()?.len(), 2);
/// assert_eq!(m.get(&1)?, Some(12));
/// # Ok(()) }
/// ```
pub struct SharedMap<K: ShmSafe + Eq + Hash, V: ShmSafe> {
    object: Object<MapLayout<K, V>>,
    /// Derived from the validated header's capacity.
    nslots: usize,
    capacity: usize,
}

/// The layout of a [`SharedMap`]: a header (parameter: the capacity), the
/// [`RawMutex`], `len` and `epoch`, then the slots (see the module docs).
pub(crate) struct MapLayout<K, V>(PhantomData<fn() -> (K, V)>);

// SAFETY: the shared part is a RawMutex (repr(C), pointer-free, any bits
// valid); `len`, `epoch` and the slots after it are atomics and ShmSafe keys
// and values, accessed atomically or under the lock. `total_len` covers
// `slots_for(capacity)` slots for every capacity it accepts.
unsafe impl<K: ShmSafe + Eq + Hash, V: ShmSafe> Layout for MapLayout<K, V> {
    type Shared = RawMutex;
    const KIND: ObjectKind = ObjectKind::SharedMap;
    const ALIGN: usize = max(
        std::mem::align_of::<RawMutex>(),
        std::mem::align_of::<Slot<K, V>>(),
    );
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<(K, V)>()
    }
    fn total_len(param: u64) -> Option<usize> {
        SharedMap::<K, V>::size_in_segment(usize::try_from(param).ok()?)
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

impl<K: ShmSafe + Eq + Hash, V: ShmSafe> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            object: self.object.clone(),
            nslots: self.nslots,
            capacity: self.capacity,
        }
    }
}

impl<K: ShmSafe + Eq + Hash, V: ShmSafe> fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMap")
            .field("object", &self.object.describe())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: ShmSafe + Eq + Hash, V: ShmSafe> SharedMap<K, V> {
    /// Bytes a map of `capacity` entries needs inside a segment (`None` for
    /// a capacity of 0 or on overflow).
    pub fn size_in_segment(capacity: usize) -> Option<usize> {
        let slots = slots_for(capacity)?;
        let bytes = slots.checked_mul(std::mem::size_of::<Slot<K, V>>())?;
        align_up(slots_offset::<K, V>().checked_add(bytes)?, 64)
    }

    fn init(capacity: usize) -> Result<impl FnOnce(Uninit<MapLayout<K, V>>) -> Result<()>> {
        let Some(total_len) = Self::size_in_segment(capacity) else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                if capacity == 0 {
                    "a shared map needs a capacity of at least 1".to_owned()
                } else {
                    format!("a shared map of {capacity} entries does not fit in memory")
                },
            ));
        };
        let slots = slots_for(capacity).unwrap_or(0);
        Ok(move |mem: Uninit<MapLayout<K, V>>| {
            // SAFETY: the object region of `total_len` bytes is aligned for
            // the lock (64) and the slots, and exclusively ours until it is
            // published. The lock, the counter and `slots` slots lie inside
            // it by construction of `size_in_segment`. Zeroing a slot makes
            // its state EMPTY.
            unsafe {
                debug_assert!(
                    slots_offset::<K, V>() + slots * std::mem::size_of::<Slot<K, V>>() <= total_len
                );
                RawMutex::init(mem.shared())?;
                (mem.at(len_offset()) as *mut AtomicU64).write(AtomicU64::new(0));
                (mem.at(epoch_offset()) as *mut AtomicU32).write(AtomicU32::new(0));
                std::ptr::write_bytes(
                    mem.at(slots_offset::<K, V>()),
                    0,
                    slots * std::mem::size_of::<Slot<K, V>>(),
                );
            }
            Ok(())
        })
    }

    fn from_object(object: Object<MapLayout<K, V>>) -> SharedMap<K, V> {
        // The header (a private, checksummed copy) was validated: its
        // capacity is non-zero and the object is exactly as long as it implies.
        let capacity = object.param() as usize;
        let nslots = slots_for(capacity).expect("validated capacity");
        SharedMap {
            object,
            nslots,
            capacity,
        }
    }

    fn create_at(at: Create<'_>, capacity: usize) -> Result<SharedMap<K, V>> {
        Object::create(at, capacity as u64, Self::init(capacity)?).map(Self::from_object)
    }

    /// Creates a named map with room for `capacity` entries; fails if the
    /// name exists.
    pub fn create(name: &str, capacity: usize) -> Result<SharedMap<K, V>> {
        Self::create_at(Create::Named(name), capacity)
    }

    /// Opens a named map, checking its key and value types; its capacity is
    /// whatever it was created with.
    pub fn open(name: &str) -> Result<SharedMap<K, V>> {
        Object::open(Open::Named(name)).map(Self::from_object)
    }

    /// Opens the named map, or creates it with room for `capacity` entries.
    pub fn open_or_create(name: &str, capacity: usize) -> Result<SharedMap<K, V>> {
        Object::open_or_create(name, capacity as u64, Self::init(capacity)?).map(Self::from_object)
    }

    /// Creates an anonymous map with room for `capacity` entries.
    pub fn new(capacity: usize) -> Result<SharedMap<K, V>> {
        Self::create_at(Create::Anonymous, capacity)
    }

    /// Creates a map at `offset` (a multiple of 64) inside `segment`,
    /// overwriting [`size_in_segment(capacity)`](Self::size_in_segment) bytes.
    pub fn create_in(segment: &Segment, offset: usize, capacity: usize) -> Result<SharedMap<K, V>> {
        Self::create_at(Create::In(segment, offset), capacity)
    }

    /// Opens the map at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<SharedMap<K, V>> {
        Object::open(Open::In(segment, offset)).map(Self::from_object)
    }

    /// How many entries fit (fixed at creation).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The segment this map lives in.
    pub fn segment(&self) -> &Segment {
        self.object.segment()
    }

    // -- raw access (callers hold the lock: `&Held`) -------------------------

    fn raw(&self) -> &RawMutex {
        self.object.shared()
    }

    fn len_word(&self) -> &AtomicU64 {
        // SAFETY: `len` follows the lock inside the object (8-byte aligned,
        // in bounds), in the mapping `self.object` keeps alive; only ever
        // accessed atomically.
        unsafe { &*(self.object.at(len_offset()) as *const AtomicU64) }
    }

    fn epoch_word(&self) -> &AtomicU32 {
        // SAFETY: the epoch follows `len` in the same cache line of the
        // object (4-byte aligned, in bounds); only ever accessed atomically.
        unsafe { &*(self.object.at(epoch_offset()) as *const AtomicU32) }
    }

    fn slot(&self, i: usize) -> *mut Slot<K, V> {
        debug_assert!(i < self.nslots);
        // `i < nslots`, and the object holds `nslots` slots from
        // `slots_offset` (validated length), so this stays in bounds.
        (self.object.at(slots_offset::<K, V>()) as *mut Slot<K, V>).wrapping_add(i)
    }

    fn state_word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the state word is the first field of slot `i` (in bounds,
        // 4-byte aligned) and is only ever accessed atomically.
        unsafe { &*std::ptr::addr_of!((*self.slot(i)).state) }
    }

    fn state(&self, op: &Op<'_>, i: usize) -> Result<SlotState> {
        // SYNC POINT "slot publish": pairs with the Release store in `publish`.
        let word = self.state_word(i).load(Ordering::Acquire);
        SlotState::decode(word, op.epoch).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("slot {i} has an invalid state word {word:#010x}"),
            )
        })
    }

    fn publish(&self, op: &Op<'_>, i: usize, s: SlotState) {
        // SYNC POINT "slot publish": the key and value written before this
        // store are visible to whoever loads the new state with Acquire.
        self.state_word(i)
            .store(s.encode(op.epoch), Ordering::Release);
    }

    fn key(&self, _: &Op<'_>, i: usize) -> K {
        // SAFETY: in bounds and aligned (field of slot `i`); K is ShmSafe, so
        // any bytes are a valid K; writers hold the lock, which we hold.
        unsafe { std::ptr::addr_of!((*self.slot(i)).key).read() }
    }

    fn val(&self, _: &Op<'_>, i: usize, b: usize) -> V {
        debug_assert!(b < 2);
        // SAFETY: as in `key`; `b < 2` indexes `vals`.
        unsafe {
            (std::ptr::addr_of!((*self.slot(i)).vals) as *const V)
                .add(b)
                .read()
        }
    }

    fn write_key(&self, _: &Op<'_>, i: usize, k: K) {
        // SAFETY: in bounds and aligned; we hold the lock, and slot `i` is
        // not LIVE, so no reader looks at its key.
        unsafe { std::ptr::addr_of_mut!((*self.slot(i)).key).write(k) }
    }

    fn write_val(&self, _: &Op<'_>, i: usize, b: usize, v: V) {
        debug_assert!(b < 2);
        // SAFETY: in bounds and aligned; we hold the lock, and buffer `b` is
        // not the live one of slot `i`, so no reader looks at it.
        unsafe {
            (std::ptr::addr_of_mut!((*self.slot(i)).vals) as *mut V)
                .add(b)
                .write(v)
        }
    }

    /// The entry count, checked against the capacity.
    fn count(&self, _: &Op<'_>) -> Result<usize> {
        let n = self.len_word().load(Ordering::Relaxed);
        if n > self.capacity as u64 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("entry count {n} exceeds the capacity {}", self.capacity),
            ));
        }
        Ok(n as usize)
    }

    fn set_count(&self, _: &Op<'_>, n: usize) {
        self.len_word().store(n as u64, Ordering::Relaxed);
    }

    /// Takes the lock for an operation described by `verb`; repairs the map
    /// if the previous holder died.
    fn lock(&self, verb: &str) -> Result<Op<'_>> {
        let ctx = |e: Error| e.context(format!("cannot {verb} {}", self.object.describe()));
        let (held, owner_died) = Held::lock(self.raw()).map_err(ctx)?;
        // SYNC POINT "clear": pairs with the Release store in `clear`.
        let epoch = self.epoch_word().load(Ordering::Acquire) & EPOCH_MASK;
        let op = Op { held, epoch };
        if owner_died {
            self.recover(&op).map_err(ctx)?;
            op.held.mark_consistent();
        }
        Ok(op)
    }

    /// After a holder died: every slot is consistent by construction (one
    /// store per transition), but a clear's sweep may be unfinished, a key
    /// may sit in two slots (a move of a backward shift cut short),
    /// tombstones may be left and `len` may be off. Finish the sweep, drop
    /// the duplicate, close the holes, recount (module docs, "Crash
    /// windows and repair").
    fn recover(&self, op: &Op<'_>) -> Result<()> {
        for i in 0..self.nslots {
            if self.state(op, i)? == SlotState::Empty {
                self.sweep(op, i);
            }
        }
        let n = reclaim::repair(&self.table(op))?;
        if n > self.capacity {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{n} entries exceed the capacity {}", self.capacity),
            ));
        }
        self.set_count(op, n);
        Ok(())
    }

    /// Rewrites slot `i`, which reads as `EMPTY`, as `EMPTY` of the current
    /// epoch if it is stale (no change in meaning).
    fn sweep(&self, op: &Op<'_>, i: usize) {
        let empty = SlotState::Empty.encode(op.epoch);
        if self.state_word(i).load(Ordering::Relaxed) != empty {
            self.publish(op, i, SlotState::Empty);
        }
    }

    fn find(&self, op: &Op<'_>, k: &K) -> Result<Find> {
        let hash = hash_key(k);
        let mut free = None;
        for step in 0..self.nslots {
            let i = probe(hash, step, self.nslots);
            match self.state(op, i)? {
                SlotState::Empty => return Ok(Find::Vacant(free.or(Some(i)))),
                SlotState::Tombstone => {
                    free.get_or_insert(i);
                }
                SlotState::Live(b) => {
                    if self.key(op, i) == *k {
                        return Ok(Find::Found(i, b));
                    }
                }
            }
        }
        Ok(Find::Vacant(free))
    }

    /// The table under `op`'s lock, for `reclaim`.
    fn table<'a>(&'a self, op: &'a Op<'a>) -> Tab<'a, K, V> {
        Tab { map: self, op }
    }

    fn full(&self) -> Error {
        Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "cannot insert into {}: map is full ({} entries)",
                self.object.describe(),
                self.capacity
            ),
        )
    }

    /// Writes `v` into the inactive buffer of live slot `i`, then flips.
    fn replace(&self, op: &Op<'_>, i: usize, b: usize, v: V) {
        self.write_val(op, i, 1 - b, v);
        self.publish(op, i, SlotState::Live(1 - b));
    }

    /// Inserts a key known to be absent at `at`.
    fn insert_new(&self, op: &Op<'_>, at: Option<usize>, k: K, v: V) -> Result<()> {
        let n = self.count(op)?;
        let Some(i) = at.filter(|_| n < self.capacity) else {
            return Err(self.full());
        };
        self.write_key(op, i, k);
        self.write_val(op, i, 0, v);
        self.publish(op, i, SlotState::Live(0));
        // A death here leaves `len` one short: recovery recounts it.
        self.set_count(op, n + 1);
        Ok(())
    }

    /// Inserts or replaces; returns the previous value. Fails with
    /// [`ErrorKind::LimitExceeded`] if `k` is new and the map is full.
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>> {
        let op = self.lock("insert into")?;
        match self.find(&op, &k)? {
            Find::Found(i, b) => {
                let old = self.val(&op, i, b);
                self.replace(&op, i, b, v);
                Ok(Some(old))
            }
            Find::Vacant(at) => self.insert_new(&op, at, k, v).map(|()| None),
        }
    }

    /// The value of `k`, if present.
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        let op = self.lock("read")?;
        Ok(match self.find(&op, k)? {
            Find::Found(i, b) => Some(self.val(&op, i, b)),
            Find::Vacant(_) => None,
        })
    }

    /// Whether `k` is present.
    pub fn contains_key(&self, k: &K) -> Result<bool> {
        let op = self.lock("read")?;
        Ok(matches!(self.find(&op, k)?, Find::Found(..)))
    }

    /// Removes `k`; returns its value if it was present.
    ///
    /// The slot becomes a tombstone (the commit point), then the hole is
    /// closed by backward shift: keys after it in its cluster move back
    /// into it, and the last hole becomes empty (see the module docs).
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let op = self.lock("remove from")?;
        let Find::Found(i, b) = self.find(&op, k)? else {
            return Ok(None);
        };
        let old = self.val(&op, i, b);
        let n = self.count(&op)?;
        self.publish(&op, i, SlotState::Tombstone);
        // A death here leaves `len` one too high: recovery recounts it.
        self.set_count(&op, n.saturating_sub(1));
        reclaim::backshift(&self.table(&op), i)?;
        Ok(Some(old))
    }

    /// Runs `f` on a copy of `k`'s value and stores the result, all under
    /// the lock; returns `f`'s result, or `None` if `k` is absent.
    ///
    /// If `f` panics, the map is unchanged and the lock is released.
    pub fn update<R>(&self, k: &K, f: impl FnOnce(&mut V) -> R) -> Result<Option<R>> {
        let op = self.lock("update")?;
        let Find::Found(i, b) = self.find(&op, k)? else {
            return Ok(None);
        };
        let mut v = self.val(&op, i, b);
        let r = f(&mut v);
        self.replace(&op, i, b, v);
        Ok(Some(r))
    }

    /// Runs `f` on `k`'s value, or on `default` if `k` is absent, and
    /// stores the result, all under one lock (`d[k] = d.get(k, 0) + 1` in
    /// Python, but atomic). Fails with [`ErrorKind::LimitExceeded`] if `k`
    /// is new and the map is full; then `f` is not called.
    ///
    /// ```
    /// # fn main() -> ipckit::Result<()> {
    /// let words = ipckit::collections::SharedMap::<[u8; 8], u64>::new(100)?;
    /// for w in [*b"apple\0\0\0", *b"pear\0\0\0\0", *b"apple\0\0\0"] {
    ///     words.update_or_insert(w, 0, |n| *n += 1)?;
    /// }
    /// assert_eq!(words.get(b"apple\0\0\0")?, Some(2));
    /// # Ok(()) }
    /// ```
    pub fn update_or_insert<R>(&self, k: K, default: V, f: impl FnOnce(&mut V) -> R) -> Result<R> {
        let op = self.lock("update")?;
        match self.find(&op, &k)? {
            Find::Found(i, b) => {
                let mut v = self.val(&op, i, b);
                let r = f(&mut v);
                self.replace(&op, i, b, v);
                Ok(r)
            }
            Find::Vacant(at) => {
                if at.is_none() || self.count(&op)? >= self.capacity {
                    return Err(self.full());
                }
                let mut v = default;
                let r = f(&mut v);
                self.insert_new(&op, at, k, v)?;
                Ok(r)
            }
        }
    }

    /// The value of `k`; if absent, inserts `v` first and returns it. Fails
    /// with [`ErrorKind::LimitExceeded`] if `k` is new and the map is full.
    pub fn get_or_insert(&self, k: K, v: V) -> Result<V> {
        let op = self.lock("insert into")?;
        match self.find(&op, &k)? {
            Find::Found(i, b) => Ok(self.val(&op, i, b)),
            Find::Vacant(at) => self.insert_new(&op, at, k, v).map(|()| v),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        let op = self.lock("read")?;
        self.count(&op)
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Removes every entry, atomically: one store of a new epoch commits it
    /// (a process killed during `clear` leaves the map either untouched or
    /// empty). Also overwrites corrupt slot state words.
    pub fn clear(&self) -> Result<()> {
        let mut op = self.lock("clear")?;
        op.epoch = (op.epoch + 1) & EPOCH_MASK;
        // SYNC POINT "clear": whoever loads the new epoch with Acquire sees
        // every slot EMPTY, whatever the sweep below has reached.
        self.epoch_word().store(op.epoch, Ordering::Release);
        // A death here leaves `len` stale: recovery recounts it.
        self.set_count(&op, 0);
        let empty = SlotState::Empty.encode(op.epoch);
        for i in 0..self.nslots {
            if self.state_word(i).load(Ordering::Relaxed) != empty {
                self.publish(&op, i, SlotState::Empty);
            }
        }
        Ok(())
    }

    /// A snapshot of every entry, taken under one lock, in table order.
    pub fn to_vec(&self) -> Result<Vec<(K, V)>> {
        let op = self.lock("read")?;
        let mut out = Vec::with_capacity(self.count(&op)?);
        for i in 0..self.nslots {
            if let SlotState::Live(b) = self.state(&op, i)? {
                out.push((self.key(&op, i), self.val(&op, i, b)));
            }
        }
        Ok(out)
    }

    /// A snapshot of the keys (see [`to_vec`](Self::to_vec)).
    pub fn keys(&self) -> Result<Vec<K>> {
        Ok(self.to_vec()?.into_iter().map(|(k, _)| k).collect())
    }

    /// A snapshot of the values (see [`to_vec`](Self::to_vec)).
    pub fn values(&self) -> Result<Vec<V>> {
        Ok(self.to_vec()?.into_iter().map(|(_, v)| v).collect())
    }
}

impl<K: ShmSafe + Eq + Hash, V: ShmSafe> Serialize for SharedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.object.serialize(s)
    }
}

impl<'de, K: ShmSafe + Eq + Hash, V: ShmSafe> Deserialize<'de> for SharedMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Object::deserialize(d).map(SharedMap::from_object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_reject_garbage() {
        for epoch in [0, 1, EPOCH_MASK] {
            for s in [
                SlotState::Empty,
                SlotState::Tombstone,
                SlotState::Live(0),
                SlotState::Live(1),
            ] {
                assert_eq!(SlotState::decode(s.encode(epoch), epoch), Some(s));
                // Any other epoch: the slot is empty (cleared).
                let other = epoch.wrapping_add(1);
                assert_eq!(
                    SlotState::decode(s.encode(epoch), other),
                    Some(SlotState::Empty)
                );
            }
        }
        assert_eq!(SlotState::Live(1).encode(0), 3);
        assert_eq!(SlotState::Tombstone.encode(5), 0x501);
        // The epoch wraps at 24 bits.
        assert_eq!(SlotState::Live(0).encode(EPOCH_MASK + 1), 2);
        for w in [4, 5, 0xdead_beef, u32::MAX, 0x100 | 0x80] {
            assert_eq!(SlotState::decode(w, 0), None);
            assert_eq!(SlotState::decode(w, w >> 8), None);
        }
    }

    #[test]
    fn slot_counts_keep_load_at_most_three_quarters() {
        assert_eq!(slots_for(0), None);
        assert_eq!(slots_for(1), Some(2));
        assert_eq!(slots_for(3), Some(4));
        assert_eq!(slots_for(4), Some(8));
        assert_eq!(slots_for(6), Some(8));
        assert_eq!(slots_for(7), Some(16));
        assert_eq!(slots_for(usize::MAX), None);
        for cap in 1..2000 {
            let s = slots_for(cap).unwrap();
            assert!(s.is_power_of_two());
            assert!(cap * 4 <= s * 3, "{cap} in {s}");
        }
    }

    #[test]
    fn probe_visits_every_slot_once() {
        for slots in [2usize, 8, 64] {
            for hash in [0u64, 1, 0xdead_beef, u64::MAX] {
                let mut seen: Vec<usize> = (0..slots).map(|s| probe(hash, s, slots)).collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..slots).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn layout_offsets() {
        assert_eq!(lock_offset(), 128);
        assert_eq!(len_offset(), 192);
        assert_eq!(epoch_offset(), 200);
        assert_eq!(slots_offset::<u64, u64>(), 256);
        assert_eq!(std::mem::size_of::<Slot<u64, u64>>(), 32);
        assert_eq!(std::mem::size_of::<Slot<u8, u8>>(), 8);
        assert_eq!(
            SharedMap::<u64, u64>::size_in_segment(6),
            Some(256 + 8 * 32)
        );
    }
}
