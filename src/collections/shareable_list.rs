//! [`ShareableList`]: Python's `multiprocessing.shared_memory.ShareableList`.
//!
//! # Layout
//!
//! | offset | what |
//! |---|---|
//! | 0 | object header; kind `ShareableList`, no element type, parameter = length `n` |
//! | 128 | [`RawMutex`] (one cache line) |
//! | 192 | `n` × `u64`: each slot's byte capacity (a multiple of 8, ≥ 8), fixed at creation |
//! | 192 + 8n | `n` × `u64`: each slot's state word (below) |
//! | 192 + 16n | slot data: for slot `i`, two buffers of `capacity[i]` bytes, in slot order |
//!
//! Capacities never change, so an opener copies them once, checks that they
//! add up to the object's length, and uses its private copy from then on.
//!
//! # The slot state word (`u64`)
//!
//! | bits | field |
//! |---|---|
//! | 0..32 | byte length of the value in the live buffer |
//! | 32..40 | type tag: 0 None, 1 int, 2 float, 3 bool, 4 str, 5 bytes |
//! | 40 | live buffer: 0 or 1 |
//! | 41..48 | zero |
//! | 48..64 | `0x5C17`, a check mark |
//!
//! A word with another mark, non-zero reserved bits, an unknown tag, a
//! length above the slot's capacity or wrong for its type (int and float
//! are 8 bytes, bool 1 byte holding 0 or 1, None 0 bytes, str valid UTF-8)
//! is [`ErrorKind::Corrupt`].
//!
//! `set` writes the encoded value into the slot's inactive buffer, then
//! commits tag, length and live buffer with **one** Release store of the
//! state word; readers load it with Acquire (SYNC POINT "list publish").
//! A writer killed before that store leaves the old value, one killed after
//! it the new one; the live buffer is never written. All access is under
//! the lock; after a holder's death there is nothing to repair.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Held;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::align_up;
use crate::layout::header::{Header, ObjectKind};
use crate::object::{Create, Layout, Object, Open, Uninit, payload_offset};
use crate::segment::Segment;
use crate::sync::raw::RawMutex;

// ---------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------

/// One element of a [`ShareableList`]: the types Python's `ShareableList`
/// holds.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Item {
    /// Python's `None`.
    #[default]
    None,
    /// An `int` (64-bit).
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `bool`.
    Bool(bool),
    /// A `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
}

impl Item {
    /// The Python name of the item's type (`"int"`, `"str"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Item::None => "None",
            Item::Int(_) => "int",
            Item::Float(_) => "float",
            Item::Bool(_) => "bool",
            Item::Str(_) => "str",
            Item::Bytes(_) => "bytes",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Item::None => TAG_NONE,
            Item::Int(_) => TAG_INT,
            Item::Float(_) => TAG_FLOAT,
            Item::Bool(_) => TAG_BOOL,
            Item::Str(_) => TAG_STR,
            Item::Bytes(_) => TAG_BYTES,
        }
    }

    /// The bytes stored for this item.
    fn encode(&self) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        match self {
            Item::None => Cow::Borrowed(&[]),
            Item::Int(v) => Cow::Owned(v.to_le_bytes().to_vec()),
            Item::Float(v) => Cow::Owned(v.to_le_bytes().to_vec()),
            Item::Bool(v) => Cow::Owned(vec![u8::from(*v)]),
            Item::Str(s) => Cow::Borrowed(s.as_bytes()),
            Item::Bytes(b) => Cow::Borrowed(b),
        }
    }

    /// Bytes the encoded item occupies.
    fn encoded_len(&self) -> usize {
        match self {
            Item::None => 0,
            Item::Int(_) | Item::Float(_) => 8,
            Item::Bool(_) => 1,
            Item::Str(s) => s.len(),
            Item::Bytes(b) => b.len(),
        }
    }
}

macro_rules! item_from {
    ($($t:ty => $v:ident $(as $c:ty)?),* $(,)?) => { $(
        impl From<$t> for Item {
            fn from(v: $t) -> Item {
                Item::$v(v $(as $c)?)
            }
        }
    )* };
}
item_from!(
    i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float, f32 => Float as f64,
    bool => Bool, String => Str, Vec<u8> => Bytes,
);

impl From<&str> for Item {
    fn from(v: &str) -> Item {
        Item::Str(v.to_owned())
    }
}

impl From<&[u8]> for Item {
    fn from(v: &[u8]) -> Item {
        Item::Bytes(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Item {
    fn from(v: &[u8; N]) -> Item {
        Item::Bytes(v.to_vec())
    }
}

impl From<()> for Item {
    fn from((): ()) -> Item {
        Item::None
    }
}

impl<T: Into<Item>> From<Option<T>> for Item {
    fn from(v: Option<T>) -> Item {
        v.map_or(Item::None, Into::into)
    }
}

// ---------------------------------------------------------------------------
// Pure parts: the state word and capacities (Miri-friendly)
// ---------------------------------------------------------------------------

const TAG_NONE: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_BOOL: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_BYTES: u8 = 5;

const MARK: u64 = 0x5C17;
const LIVE_BIT: u64 = 1 << 40;
const RESERVED: u64 = 0x7f << 41;

/// A decoded slot state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Desc {
    tag: u8,
    len: u32,
    live: usize,
}

impl Desc {
    fn pack(self) -> u64 {
        (MARK << 48)
            | if self.live == 1 { LIVE_BIT } else { 0 }
            | (u64::from(self.tag) << 32)
            | u64::from(self.len)
    }

    /// Decodes a word read from shared memory, checking it against the
    /// slot's capacity and the tag's length rules.
    fn unpack(w: u64, cap: usize) -> Option<Desc> {
        if w >> 48 != MARK || w & RESERVED != 0 {
            return None;
        }
        let d = Desc {
            tag: (w >> 32) as u8,
            len: w as u32,
            live: usize::from(w & LIVE_BIT != 0),
        };
        let len_ok = match d.tag {
            TAG_NONE => d.len == 0,
            TAG_INT | TAG_FLOAT => d.len == 8,
            TAG_BOOL => d.len == 1,
            TAG_STR | TAG_BYTES => true,
            _ => false,
        };
        (len_ok && d.len as usize <= cap).then_some(d)
    }

    /// The item these bytes (the live buffer's first `len`) encode.
    fn decode(self, bytes: Vec<u8>) -> Option<Item> {
        let eight = || <[u8; 8]>::try_from(bytes.as_slice()).ok();
        match self.tag {
            TAG_NONE => Some(Item::None),
            TAG_INT => eight().map(|b| Item::Int(i64::from_le_bytes(b))),
            TAG_FLOAT => eight().map(|b| Item::Float(f64::from_le_bytes(b))),
            TAG_BOOL => match bytes.as_slice() {
                [0] => Some(Item::Bool(false)),
                [1] => Some(Item::Bool(true)),
                _ => None,
            },
            TAG_STR => String::from_utf8(bytes).ok().map(Item::Str),
            TAG_BYTES => Some(Item::Bytes(bytes)),
            _ => None,
        }
    }
}

/// The default capacity of a slot whose initial value takes `len` bytes:
/// `len` rounded up to a multiple of 8, at least 8 (so any int, float,
/// bool or None fits in every slot).
fn default_capacity(len: usize) -> Option<usize> {
    align_up(len.max(8), 8)
}

/// The largest slot capacity (the state word has 32 bits of length).
const MAX_CAPACITY: usize = (u32::MAX as usize) & !7;

const fn lock_offset() -> usize {
    payload_offset(std::mem::align_of::<RawMutex>())
}

const fn table_offset() -> usize {
    lock_offset() + std::mem::size_of::<RawMutex>()
}

fn states_offset(n: usize) -> Option<usize> {
    table_offset().checked_add(n.checked_mul(8)?)
}

fn data_offset(n: usize) -> Option<usize> {
    table_offset().checked_add(n.checked_mul(16)?)
}

/// The object length for these capacities, and each slot's data offset.
fn layout(caps: &[usize]) -> Option<(usize, Vec<usize>)> {
    let mut at = data_offset(caps.len())?;
    let mut offsets = Vec::with_capacity(caps.len());
    for &c in caps {
        if c % 8 != 0 || c == 0 || c > MAX_CAPACITY {
            return None;
        }
        offsets.push(at);
        at = at.checked_add(c.checked_mul(2)?)?;
    }
    Some((align_up(at, 64)?, offsets))
}

// ---------------------------------------------------------------------------
// ShareableList
// ---------------------------------------------------------------------------

/// Where a slot's bytes are (a private, validated copy of the layout).
#[derive(Debug)]
struct SlotInfo {
    cap: usize,
    /// Offset of buffer 0 from the object's start; buffer 1 follows.
    data: usize,
}

/// A fixed-length list of ints, floats, bools, strings, bytes and Nones in
/// shared memory: Python's `multiprocessing.shared_memory.ShareableList`.
///
/// Each slot has a byte capacity fixed at creation: by default its initial
/// value's length rounded up to a multiple of 8, at least 8 (Python rounds
/// strings and bytes to the next multiple of 8 strictly above their
/// length); [`create_with_capacities`](Self::create_with_capacities) sets it
/// explicitly. A slot may change type, as in Python, as long as the new
/// value fits; a value that does not fit is an
/// [`ErrorKind::LimitExceeded`] error.
///
/// Unlike Python's, every access takes a robust process-shared lock, and a
/// `set` commits with one store after writing a second buffer, so readers
/// never see a torn value, even if the writer is killed half-way. The bytes
/// are **not** compatible with Python's `ShareableList` (Python cannot open
/// one, and this cannot open Python's).
///
/// ```
/// use ipckit::collections::{Item, ShareableList};
/// # fn main() -> ipckit::Result<()> {
/// let l = ShareableList::new([Item::from("alpha"), 2.into(), true.into(), Item::None])?;
/// assert_eq!(l.len(), 4);
/// l.set(3, b"bytes!".as_slice())?;
/// assert_eq!(l.get(3)?, Item::Bytes(b"bytes!".to_vec()));
/// assert_eq!(l.index(&Item::Int(2))?, Some(1));
/// assert_eq!(l.count(&Item::Bool(true))?, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShareableList {
    object: Object<ListLayout>,
    /// A private, validated copy of the slot table, read once on open.
    slots: Arc<[SlotInfo]>,
}

/// The layout of a [`ShareableList`]: a header (parameter: the slot count),
/// a [`RawMutex`], the capacity table, the state words and each slot's two
/// buffers. Its length depends on the capacities, so it is checked against
/// the table when a list is opened (`ShareableList::from_object`).
struct ListLayout;

// SAFETY: the shared part is a RawMutex (repr(C), pointer-free, any bits
// valid); the table, state words and buffers after it are plain bytes and
// atomics, only read into private copies or accessed atomically, every
// offset derived from a validated copy of the table. `expected_len` and the
// table check keep every slot inside the object's length.
unsafe impl Layout for ListLayout {
    type Shared = RawMutex;
    const KIND: ObjectKind = ObjectKind::ShareableList;
    fn total_len(_param: u64) -> Option<usize> {
        // Depends on the capacities: lists are created with `create_sized`.
        None
    }
    fn expected_len(header: &Header) -> Option<usize> {
        // The capacities are checked after opening; here only that the
        // table and states fit in the length the header claims.
        let n = usize::try_from(header.param).ok()?;
        let total = usize::try_from(header.total_len).ok()?;
        (data_offset(n)? <= total).then_some(total)
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("object", &self.object.describe())
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

/// Items and their slot capacities, checked.
fn with_default_capacities(items: Vec<Item>) -> Result<Vec<(Item, usize)>> {
    items
        .into_iter()
        .map(|it| {
            let len = it.encoded_len();
            match default_capacity(len).filter(|&c| c <= MAX_CAPACITY) {
                Some(c) => Ok((it, c)),
                None => Err(invalid(format!(
                    "an item of {len} bytes exceeds the largest slot"
                ))),
            }
        })
        .collect()
}

/// A new list's contents and where they go: what its initialiser writes.
struct NewList {
    items: Vec<(Item, usize)>,
    /// Each slot's data offset.
    offsets: Vec<usize>,
    total_len: usize,
}

impl NewList {
    fn new(items: Vec<(Item, usize)>) -> Result<NewList> {
        let caps: Vec<usize> = items.iter().map(|(_, c)| *c).collect();
        let (total_len, offsets) =
            layout(&caps).ok_or_else(|| invalid("the list does not fit in memory".to_owned()))?;
        Ok(NewList {
            items,
            offsets,
            total_len,
        })
    }

    /// The header parameter: the slot count.
    fn param(&self) -> u64 {
        self.items.len() as u64
    }

    fn write(self, mem: Uninit<ListLayout>) -> Result<()> {
        let states = states_offset(self.items.len()).unwrap_or(0);
        // SAFETY: the object region of `total_len` bytes is exclusively ours
        // until published; `layout` placed the lock, the capacity table, the
        // state words (8-byte aligned) and each slot's two buffers of `cap`
        // bytes inside it, and each encoded item is at most its slot's
        // capacity (checked by the constructors).
        unsafe {
            RawMutex::init(mem.shared())?;
            for (i, (item, cap)) in self.items.iter().enumerate() {
                (mem.at(table_offset() + 8 * i) as *mut u64).write(*cap as u64);
                let bytes = item.encode();
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.at(self.offsets[i]), bytes.len());
                let d = Desc {
                    tag: item.tag(),
                    len: bytes.len() as u32,
                    live: 0,
                };
                (mem.at(states + 8 * i) as *mut AtomicU64).write(AtomicU64::new(d.pack()));
            }
        }
        Ok(())
    }
}

impl ShareableList {
    fn create_at(at: Create<'_>, items: Vec<(Item, usize)>) -> Result<ShareableList> {
        let new = NewList::new(items)?;
        Object::create_sized(at, new.param(), new.total_len, |mem| new.write(mem))
            .and_then(Self::from_object)
    }

    fn from_object(object: Object<ListLayout>) -> Result<ShareableList> {
        let slots = Self::read_layout(&object)?;
        Ok(ShareableList { object, slots })
    }

    /// Copies the capacity table out of shared memory and checks it against
    /// the header's length.
    fn read_layout(object: &Object<ListLayout>) -> Result<Arc<[SlotInfo]>> {
        let n = object.param() as usize;
        let mut table = vec![0u8; n * 8];
        object
            .segment()
            .read_at(object.offset() + table_offset(), &mut table)?;
        let caps: Vec<usize> = table
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0; 8];
                b.copy_from_slice(c);
                usize::try_from(u64::from_le_bytes(b)).unwrap_or(usize::MAX)
            })
            .collect();
        match layout(&caps) {
            Some((total, offsets)) if total as u64 == object.header().total_len => Ok(caps
                .into_iter()
                .zip(offsets)
                .map(|(cap, data)| SlotInfo { cap, data })
                .collect()),
            _ => Err(Error::new(
                ErrorKind::Corrupt,
                "slot capacities do not match the object's length",
            )
            .context(format!("cannot open {}", object.describe()))),
        }
    }

    fn items_with_capacities(
        items: impl IntoIterator<Item = (impl Into<Item>, usize)>,
    ) -> Result<Vec<(Item, usize)>> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (it, cap))| {
                let it = it.into();
                let len = it.encoded_len();
                let c = default_capacity(cap).filter(|&c| c <= MAX_CAPACITY);
                match c {
                    Some(c) if len <= c => Ok((it, c)),
                    _ => Err(invalid(format!(
                        "item {i} takes {len} bytes, more than the capacity {cap} given for it"
                    ))),
                }
            })
            .collect()
    }

    /// Creates a named list of `items`; fails if the name exists. Each
    /// slot's capacity is its item's length rounded up to 8 bytes (at least 8).
    pub fn create(name: &str, items: impl IntoIterator<Item = impl Into<Item>>) -> Result<Self> {
        let items = with_default_capacities(items.into_iter().map(Into::into).collect())?;
        Self::create_at(Create::Named(name), items)
    }

    /// Creates a named list from `(item, capacity)` pairs: each slot holds
    /// up to `capacity` bytes (rounded up to a multiple of 8, at least 8).
    /// Fails if an item is longer than its capacity.
    pub fn create_with_capacities(
        name: &str,
        items: impl IntoIterator<Item = (impl Into<Item>, usize)>,
    ) -> Result<Self> {
        let items = Self::items_with_capacities(items)?;
        Self::create_at(Create::Named(name), items)
    }

    /// Opens a named list; its length and capacities are whatever it was
    /// created with.
    pub fn open(name: &str) -> Result<Self> {
        Object::open(Open::Named(name)).and_then(Self::from_object)
    }

    /// Opens the named list, or creates it holding `items`.
    pub fn open_or_create(
        name: &str,
        items: impl IntoIterator<Item = impl Into<Item>>,
    ) -> Result<Self> {
        let items = with_default_capacities(items.into_iter().map(Into::into).collect())?;
        let new = NewList::new(items)?;
        Object::open_or_create_sized(name, new.param(), new.total_len, |mem| new.write(mem))
            .and_then(Self::from_object)
    }

    /// Creates an anonymous list of `items`.
    pub fn new(items: impl IntoIterator<Item = impl Into<Item>>) -> Result<Self> {
        let items = with_default_capacities(items.into_iter().map(Into::into).collect())?;
        Self::create_at(Create::Anonymous, items)
    }

    /// Creates an anonymous list from `(item, capacity)` pairs (see
    /// [`create_with_capacities`](Self::create_with_capacities)).
    pub fn new_with_capacities(
        items: impl IntoIterator<Item = (impl Into<Item>, usize)>,
    ) -> Result<Self> {
        let items = Self::items_with_capacities(items)?;
        Self::create_at(Create::Anonymous, items)
    }

    /// Creates a list of `items` at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(
        segment: &Segment,
        offset: usize,
        items: impl IntoIterator<Item = impl Into<Item>>,
    ) -> Result<Self> {
        let items = with_default_capacities(items.into_iter().map(Into::into).collect())?;
        Self::create_at(Create::In(segment, offset), items)
    }

    /// Opens the list at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Self> {
        Object::open(Open::In(segment, offset)).and_then(Self::from_object)
    }

    /// The number of slots (fixed at creation).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the list has no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The byte capacity of slot `i`.
    pub fn slot_capacity(&self, i: usize) -> Result<usize> {
        self.info(i, "read").map(|s| s.cap)
    }

    /// The segment this list lives in.
    pub fn segment(&self) -> &Segment {
        self.object.segment()
    }

    fn info(&self, i: usize, verb: &str) -> Result<&SlotInfo> {
        self.slots.get(i).ok_or_else(|| {
            Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "cannot {verb} item {i} of {}: index out of range for a list of length {}",
                    self.object.describe(),
                    self.slots.len()
                ),
            )
        })
    }

    fn lock(&self, verb: &str) -> Result<Held<'_>> {
        let (held, owner_died) = Held::lock(self.object.shared())
            .map_err(|e| e.context(format!("cannot {verb} {}", self.object.describe())))?;
        if owner_died {
            // Every slot is consistent by construction: nothing to repair.
            held.mark_consistent();
        }
        Ok(held)
    }

    fn state_word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.slots.len());
        let at = states_offset(self.slots.len()).expect("validated layout") + 8 * i;
        // SAFETY: `i < n`, and the validated layout puts n 8-byte state words
        // at `states_offset(n)`, inside the object; the object start is
        // 64-aligned, so the word is aligned. It is only ever accessed
        // atomically.
        unsafe { &*(self.object.at(at) as *const AtomicU64) }
    }

    fn desc(&self, _: &Held<'_>, i: usize) -> Result<Desc> {
        let cap = self.slots[i].cap;
        // SYNC POINT "list publish": pairs with the Release store in `set`.
        let w = self.state_word(i).load(Ordering::Acquire);
        Desc::unpack(w, cap).ok_or_else(|| corrupt_slot(i, w))
    }

    fn read(&self, held: &Held<'_>, i: usize) -> Result<Item> {
        let d = self.desc(held, i)?;
        let s = &self.slots[i];
        let mut bytes = vec![0u8; d.len as usize];
        let src = self.object.at(s.data + d.live * s.cap);
        // SAFETY: `d.len <= cap` (checked by `unpack`), so the bytes lie in
        // the live buffer of slot `i`, inside the object; `bytes` is private.
        // We hold the lock, and writers never write a live buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, bytes.as_mut_ptr(), bytes.len()) };
        d.decode(bytes).ok_or_else(|| corrupt_slot(i, d.pack()))
    }

    /// Item `i`.
    pub fn get(&self, i: usize) -> Result<Item> {
        self.info(i, "read")?;
        let held = self.lock("read")?;
        self.read(&held, i)
            .map_err(|e| e.context(format!("cannot read {}", self.object.describe())))
    }

    /// Sets item `i` (of any type) if it fits in the slot's capacity.
    pub fn set(&self, i: usize, item: impl Into<Item>) -> Result<()> {
        let item = item.into();
        let s = self.info(i, "set")?;
        let bytes = item.encode();
        if bytes.len() > s.cap {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "cannot set item {i} of {}: a {} of {} bytes exceeds the slot's capacity of {} bytes",
                    self.object.describe(),
                    item.type_name(),
                    bytes.len(),
                    s.cap
                ),
            ));
        }
        let held = self.lock("write")?;
        // A corrupt state word is overwritten: the slot is repaired.
        let live = self.desc(&held, i).map_or(1, |d| d.live);
        let target = 1 - live;
        let dst = self.object.at(s.data + target * s.cap);
        // SAFETY: `bytes.len() <= cap`, so the write stays inside slot i's
        // inactive buffer, inside the object. We hold the lock and no reader
        // looks at the inactive buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        let d = Desc {
            tag: item.tag(),
            len: bytes.len() as u32,
            live: target,
        };
        // SYNC POINT "list publish": the bytes written above are visible to
        // whoever loads this word with Acquire.
        self.state_word(i).store(d.pack(), Ordering::Release);
        drop(held);
        Ok(())
    }

    /// Every item, read under one lock.
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        let held = self.lock("read")?;
        (0..self.slots.len())
            .map(|i| self.read(&held, i))
            .collect::<Result<_>>()
            .map_err(|e| e.context(format!("cannot read {}", self.object.describe())))
    }

    /// The index of the first item equal to `item`, if any (Python's
    /// `index`, which raises `ValueError` instead of returning `None`).
    pub fn index(&self, item: &Item) -> Result<Option<usize>> {
        Ok(self.to_vec()?.iter().position(|x| x == item))
    }

    /// How many items equal `item`.
    pub fn count(&self, item: &Item) -> Result<usize> {
        Ok(self.to_vec()?.iter().filter(|x| *x == item).count())
    }
}

fn corrupt_slot(i: usize, w: u64) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("slot {i} has an invalid state word {w:#018x}"),
    )
}

impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.object.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let object = Object::deserialize(d)?;
        ShareableList::from_object(object).map_err(crate::codec::de_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip() {
        for d in [
            Desc {
                tag: TAG_NONE,
                len: 0,
                live: 0,
            },
            Desc {
                tag: TAG_INT,
                len: 8,
                live: 1,
            },
            Desc {
                tag: TAG_STR,
                len: 16,
                live: 1,
            },
            Desc {
                tag: TAG_BYTES,
                len: 0,
                live: 0,
            },
        ] {
            assert_eq!(Desc::unpack(d.pack(), 16), Some(d));
        }
    }

    #[test]
    fn invalid_state_words_are_rejected() {
        let ok = Desc {
            tag: TAG_STR,
            len: 8,
            live: 0,
        }
        .pack();
        assert!(Desc::unpack(ok, 8).is_some());
        assert_eq!(Desc::unpack(ok, 7), None, "longer than the capacity");
        assert_eq!(Desc::unpack(0, 8), None, "fresh memory");
        assert_eq!(Desc::unpack(ok ^ (1 << 60), 8), None, "bad mark");
        assert_eq!(Desc::unpack(ok | (1 << 45), 8), None, "reserved bit");
        let bad_tag = (ok & !(0xff << 32)) | (9 << 32);
        assert_eq!(Desc::unpack(bad_tag, 8), None);
        let int3 = Desc {
            tag: TAG_INT,
            len: 3,
            live: 0,
        }
        .pack();
        assert_eq!(Desc::unpack(int3, 8), None, "an int is 8 bytes");
    }

    #[test]
    fn items_encode_and_decode() {
        for item in [
            Item::None,
            Item::Int(-5),
            Item::Float(2.5),
            Item::Bool(true),
            Item::Bool(false),
            Item::Str("héllo".into()),
            Item::Bytes(vec![0, 255, 7]),
        ] {
            let bytes = item.encode().into_owned();
            assert_eq!(bytes.len(), item.encoded_len());
            let d = Desc {
                tag: item.tag(),
                len: bytes.len() as u32,
                live: 0,
            };
            let d = Desc::unpack(d.pack(), 8).unwrap();
            assert_eq!(d.decode(bytes), Some(item));
        }
        let str_desc = Desc {
            tag: TAG_STR,
            len: 2,
            live: 0,
        };
        assert_eq!(str_desc.decode(vec![0xff, 0xfe]), None, "not UTF-8");
        let bool_desc = Desc {
            tag: TAG_BOOL,
            len: 1,
            live: 0,
        };
        assert_eq!(bool_desc.decode(vec![2]), None);
    }

    #[test]
    fn capacities_and_layout() {
        assert_eq!(default_capacity(0), Some(8));
        assert_eq!(default_capacity(8), Some(8));
        assert_eq!(default_capacity(9), Some(16));
        assert_eq!(default_capacity(usize::MAX), None);
        assert_eq!(lock_offset(), 128);
        assert_eq!(table_offset(), 192);
        let (total, offs) = layout(&[8, 16]).unwrap();
        assert_eq!(offs, [192 + 32, 192 + 32 + 16]);
        assert_eq!(total, 320);
        assert_eq!(layout(&[]).map(|l| l.0), Some(192));
        assert_eq!(layout(&[7]), None);
        assert_eq!(layout(&[0]), None);
        assert_eq!(layout(&[usize::MAX & !7]), None);
    }
}
