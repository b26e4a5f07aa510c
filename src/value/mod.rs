//! Shared values and arrays: Python's `multiprocessing.Value` and `Array`.
//!
//! A [`Value<T>`] is one `T` and an [`Array<T>`] a fixed-length run of `T`s,
//! each with its own robust process-shared lock, living in shared memory.
//! `T` is any [`ShmSafe`] type: integers, floats, arrays of them, or your
//! own `#[repr(C)]` structs of those.

use std::fmt;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{ShmSafe, TypeFingerprint, align_up};
use crate::segment::Segment;
use crate::segment::object::{self, Location, ObjectToken, Placement, Spec};
use crate::sync::raw::RawMutex;
use crate::sync::{LockError, LockResult, Mutex, MutexGuard, OWNER_DIED_MSG};

fn owner_died(what: &str) -> Error {
    Error::new(
        ErrorKind::OwnerDied,
        format!("{what}: {OWNER_DIED_MSG}; take lock() to inspect and repair it"),
    )
}

/// A `T` in shared memory behind a robust lock: Python's `multiprocessing.Value`.
///
/// [`get`](Value::get) and [`set`](Value::set) take the lock for a single
/// read or write; [`lock`](Value::lock) holds it for a compound update
/// (Python's `with v.get_lock(): v.value += 1`).
///
/// If a process dies while holding the lock, `get`/`set` fail with
/// [`ErrorKind::OwnerDied`] until someone takes [`lock`](Value::lock), checks
/// the value and calls [`MutexGuard::mark_consistent`].
///
/// ```
/// use ipckit::Value;
/// # fn main() -> ipckit::Result<()> {
/// let counter = Value::new(0u64)?;      // anonymous; pass it to children
/// *counter.lock()? += 1;                // compound update under the lock
/// counter.update(|c| *c += 1)?;         // the same, as a closure
/// assert_eq!(counter.get()?, 2);
/// # Ok(()) }
/// ```
pub struct Value<T: ShmSafe> {
    inner: Mutex<T>,
}

impl<T: ShmSafe> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            inner: self.inner.clone(),
        }
    }
}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Value");
        d.field("object", &self.inner.place.describe());
        match self.inner.try_lock() {
            Ok(g) => d.field("value", &*g),
            Err(_) => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: ShmSafe> Value<T> {
    /// Bytes a `Value<T>` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        Mutex::<T>::size_in_segment()
    }

    fn make(loc: Location<'_>, value: T) -> Result<Value<T>> {
        Mutex::locate(ObjectKind::Value, loc, value).map(|inner| Value { inner })
    }

    fn existing(loc: Location<'_>) -> Result<Value<T>> {
        Mutex::locate_existing(ObjectKind::Value, loc).map(|inner| Value { inner })
    }

    /// Creates a named value; fails if the name exists.
    pub fn create(name: &str, value: T) -> Result<Value<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::make(Location::Create { name, mode }, value)
    }

    /// Opens a named value, checking that it holds a `T`.
    pub fn open(name: &str) -> Result<Value<T>> {
        Self::existing(Location::Open { name })
    }

    /// Opens the named value, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Value<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::make(Location::OpenOrCreate { name, mode }, value)
    }

    /// Creates an anonymous value.
    pub fn new(value: T) -> Result<Value<T>> {
        Self::make(Location::Anonymous, value)
    }

    /// Creates a value at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, value: T) -> Result<Value<T>> {
        Self::make(Location::CreateIn { segment, offset }, value)
    }

    /// Opens the value at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Value<T>> {
        Self::existing(Location::OpenIn { segment, offset })
    }

    /// Reads the value under the lock.
    pub fn get(&self) -> Result<T> {
        match self.inner.lock() {
            Ok(g) => Ok(*g),
            Err(LockError::OwnerDied(_)) => Err(owner_died(&format!(
                "cannot read {}",
                self.inner.place.describe()
            ))),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Writes the value under the lock.
    pub fn set(&self, value: T) -> Result<()> {
        match self.inner.lock() {
            Ok(mut g) => {
                *g = value;
                Ok(())
            }
            Err(LockError::OwnerDied(_)) => Err(owner_died(&format!(
                "cannot write {}",
                self.inner.place.describe()
            ))),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Runs `f` on the value under the lock and returns its result.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        match self.inner.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(LockError::OwnerDied(_)) => Err(owner_died(&format!(
                "cannot update {}",
                self.inner.place.describe()
            ))),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    /// Takes the lock for a compound update (Python's `get_lock()`).
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.inner.lock()
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.inner.try_lock()
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, T>> {
        self.inner.lock_timeout(timeout)
    }

    /// Takes the lock, waiting until `deadline`.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, T>> {
        self.inner.lock_deadline(deadline)
    }

    /// The segment this value lives in.
    pub fn segment(&self) -> &Segment {
        self.inner.segment()
    }
}

impl<T: ShmSafe> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.place.token().serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, offset) = ObjectToken::decode(d)?;
        Value::open_in(&segment, offset).map_err(serde::de::Error::custom)
    }
}

/// A fixed-length array of `T` in shared memory behind one robust lock:
/// Python's `multiprocessing.Array`.
///
/// ```
/// use ipckit::Array;
/// # fn main() -> ipckit::Result<()> {
/// let a = Array::new(&[1.0f64, 2.0, 3.0])?;
/// a.set(1, 20.0)?;
/// assert_eq!(a.to_vec()?, [1.0, 20.0, 3.0]);
/// a.lock()?.iter_mut().for_each(|x| *x *= 2.0);   // under one lock
/// assert_eq!(a.get(2)?, 6.0);
/// # Ok(()) }
/// ```
pub struct Array<T: ShmSafe> {
    place: Placement,
    raw: NonNull<RawMutex>,
    data: NonNull<T>,
    len: usize,
}

// SAFETY: the lock and data live in a mapping kept alive by `place`; data
// access is serialised by the process-shared lock and T is ShmSafe.
unsafe impl<T: ShmSafe> Send for Array<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe> Sync for Array<T> {}

impl<T: ShmSafe> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            place: self.place.clone(),
            raw: self.raw,
            data: self.data,
            len: self.len,
        }
    }
}

impl<T: ShmSafe> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("object", &self.place.describe())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

const fn array_payload() -> usize {
    object::payload_offset(std::mem::align_of::<RawMutex>())
}

const fn data_offset<T>() -> usize {
    let end = array_payload() + std::mem::size_of::<RawMutex>();
    match align_up(end, std::mem::align_of::<T>()) {
        Some(v) => v,
        None => end,
    }
}

impl<T: ShmSafe> Array<T> {
    /// Bytes an `Array<T>` of `len` elements needs inside a segment (`None` on overflow).
    pub fn size_in_segment(len: usize) -> Option<usize> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        align_up(data_offset::<T>().checked_add(bytes)?, 64)
    }

    fn locate(loc: Location<'_>, init: Option<&[T]>) -> Result<Array<T>> {
        let len = init.map_or(0, |v| v.len());
        let total_len = Self::size_in_segment(len).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("an array of {len} elements does not fit in memory"),
            )
        })?;
        let spec = Spec {
            kind: ObjectKind::Array,
            ty: TypeFingerprint::of::<T>(),
            param: len as u64,
            total_len,
            align: std::mem::align_of::<T>(),
        };
        let place = object::locate(
            loc,
            spec,
            |base| {
                let Some(values) = init else {
                    return crate::sync::mutex_unreachable_init();
                };
                // SAFETY: the object region holds the lock at `array_payload()`
                // and `len` elements at `data_offset::<T>()`, both aligned and
                // inside `total_len`, exclusively ours during initialisation.
                unsafe {
                    RawMutex::init(base.add(array_payload()) as *mut RawMutex)?;
                    let data = base.add(data_offset::<T>()) as *mut T;
                    std::ptr::copy_nonoverlapping(values.as_ptr(), data, values.len());
                }
                Ok(())
            },
            |h| {
                let len = usize::try_from(h.param).ok()?;
                Self::size_in_segment(len)
            },
        )?;
        let len = place.header.param as usize;
        let raw = NonNull::new(place.ptr(array_payload()) as *mut RawMutex).expect("mapped");
        let data = NonNull::new(place.ptr(data_offset::<T>()) as *mut T).expect("mapped");
        Ok(Array {
            place,
            raw,
            data,
            len,
        })
    }

    /// Creates a named array holding a copy of `values`; fails if the name exists.
    pub fn create(name: &str, values: &[T]) -> Result<Array<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(Location::Create { name, mode }, Some(values))
    }

    /// Opens a named array, checking its element type; its length is whatever
    /// it was created with.
    pub fn open(name: &str) -> Result<Array<T>> {
        Self::locate(Location::Open { name }, None)
    }

    /// Opens the named array, or creates it holding a copy of `values`.
    pub fn open_or_create(name: &str, values: &[T]) -> Result<Array<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(Location::OpenOrCreate { name, mode }, Some(values))
    }

    /// Creates an anonymous array holding a copy of `values`.
    pub fn new(values: &[T]) -> Result<Array<T>> {
        Self::locate(Location::Anonymous, Some(values))
    }

    /// Creates an anonymous array of `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Result<Array<T>> {
        Self::new(&vec![value; len])
    }

    /// Creates an array at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, values: &[T]) -> Result<Array<T>> {
        Self::locate(Location::CreateIn { segment, offset }, Some(values))
    }

    /// Opens the array at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Array<T>> {
        Self::locate(Location::OpenIn { segment, offset }, None)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn raw(&self) -> &RawMutex {
        // SAFETY: points into the mapping held by `self.place`, initialised
        // before publication.
        unsafe { self.raw.as_ref() }
    }

    fn guard(&self, locked: crate::sync::raw::Locked) -> LockResult<MutexGuard<'_, [T]>> {
        let slice = NonNull::slice_from_raw_parts(self.data, self.len);
        let g = MutexGuard::new(self.raw(), slice);
        if locked.owner_died {
            Err(LockError::OwnerDied(g))
        } else {
            Ok(g)
        }
    }

    /// Takes the lock; the guard dereferences to `[T]`.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self.raw().lock(None).map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self.raw().try_lock().map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self
            .raw()
            .lock(deadline_after(timeout))
            .map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock, waiting until `deadline`.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self.raw().lock(Some(deadline)).map_err(LockError::Failed)?;
        self.guard(locked)
    }

    fn with<R>(&self, verb: &str, f: impl FnOnce(&mut [T]) -> Result<R>) -> Result<R> {
        match self.lock() {
            Ok(mut g) => f(&mut g),
            Err(LockError::OwnerDied(_)) => Err(owner_died(&format!(
                "cannot {verb} {}",
                self.place.describe()
            ))),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    fn out_of_range(&self, i: usize) -> Error {
        Error::new(
            ErrorKind::OutOfRange,
            format!(
                "index {i} is out of range for an array of length {}",
                self.len
            ),
        )
    }

    /// Element `i`, read under the lock.
    pub fn get(&self, i: usize) -> Result<T> {
        if i >= self.len {
            return Err(self.out_of_range(i));
        }
        self.with("read", |s| Ok(s[i]))
    }

    /// Sets element `i` under the lock.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len {
            return Err(self.out_of_range(i));
        }
        self.with("write", |s| {
            s[i] = value;
            Ok(())
        })
    }

    /// A copy of all elements, taken under one lock.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.with("read", |s| Ok(s.to_vec()))
    }

    /// Overwrites all elements from `values` (same length) under one lock.
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        if values.len() != self.len {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "source has {} elements, the array has {}",
                    values.len(),
                    self.len
                ),
            ));
        }
        self.with("write", |s| {
            s.copy_from_slice(values);
            Ok(())
        })
    }

    /// The segment this array lives in.
    pub fn segment(&self) -> &Segment {
        &self.place.segment
    }
}

impl<T: ShmSafe> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.place.token().serialize(s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, offset) = ObjectToken::decode(d)?;
        Array::open_in(&segment, offset).map_err(serde::de::Error::custom)
    }
}
