//! Shared values and arrays: Python's `multiprocessing.Value` and `Array`.
//!
//! A [`Value<T>`] is one `T` and an [`Array<T>`] a fixed-length run of `T`s,
//! each with its own robust process-shared lock, living in shared memory.
//! `T` is any [`ShmSafe`] type: integers, floats, arrays of them, or your
//! own `#[repr(C)]` structs of those.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::ObjectKind;
use crate::layout::{ShmSafe, TypeFingerprint, align_up};
use crate::object::{Create, Layout, Object, Open, Uninit, fixed_len, payload_offset};
use crate::segment::Segment;
use crate::sync::raw::{RawGuard, RawMutex};
use crate::sync::{LockError, LockResult, MutexCell, MutexGuard, OWNER_DIED_MSG};

fn owner_died(what: &str) -> Error {
    Error::new(
        ErrorKind::OwnerDied,
        format!("{what}: {OWNER_DIED_MSG}; take lock() to inspect and repair it"),
    )
}

/// The layout of a [`Value<T>`]: a `Mutex<T>`'s, under its own kind.
pub(crate) struct ValueLayout<T>(PhantomData<T>);

// SAFETY: as `MutexLayout<T>`: MutexCell<T> is repr(C), pointer-free, valid
// for every bit pattern, its data accessed only under its lock.
unsafe impl<T: ShmSafe> Layout for ValueLayout<T> {
    type Shared = MutexCell<T>;
    const KIND: ObjectKind = ObjectKind::Value;
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<T>()
    }
}

/// A `T` in shared memory behind a robust lock: Python's `multiprocessing.Value`.
///
/// [`get`](Value::get) and [`set`](Value::set) take the lock for a single
/// read or write; [`lock`](Value::lock) holds it for a compound update
/// (Python's `with v.get_lock(): v.value += 1`).
///
/// If a process dies — or a thread panics, in [`update`](Value::update)'s
/// closure for instance — while holding the lock, `get`/`set` fail with
/// [`ErrorKind::OwnerDied`] until someone takes [`lock`](Value::lock),
/// checks the value and calls [`MutexGuard::mark_consistent`].
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
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct Value<T: ShmSafe> {
    object: Object<ValueLayout<T>>,
}

impl<T: ShmSafe> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            object: self.object.clone(),
        }
    }
}

// A panic under the lock poisons it (see `Mutex`).
impl<T: ShmSafe> UnwindSafe for Value<T> {}
impl<T: ShmSafe> RefUnwindSafe for Value<T> {}

impl<T: ShmSafe + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Value");
        d.field("object", &self.object.describe());
        match self.try_lock() {
            Ok(g) => d.field("value", &*g),
            Err(_) => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl<T: ShmSafe> Value<T> {
    /// Bytes a `Value<T>` needs inside a segment.
    pub const fn size_in_segment() -> usize {
        fixed_len::<MutexCell<T>>()
    }

    fn init(value: T) -> impl FnOnce(Uninit<ValueLayout<T>>) -> Result<()> {
        move |mem| {
            // SAFETY: `mem` is the new object's region, exclusively ours.
            unsafe { MutexCell::init(mem.shared(), value) }
        }
    }

    /// Creates a named value; fails if the name exists.
    pub fn create(name: &str, value: T) -> Result<Value<T>> {
        Object::create(Create::Named(name), 0, Self::init(value)).map(|object| Value { object })
    }

    /// Opens a named value, checking that it holds a `T`.
    pub fn open(name: &str) -> Result<Value<T>> {
        Object::open(Open::Named(name)).map(|object| Value { object })
    }

    /// Opens the named value, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Value<T>> {
        Object::open_or_create(name, 0, Self::init(value)).map(|object| Value { object })
    }

    /// Creates an anonymous value.
    pub fn new(value: T) -> Result<Value<T>> {
        Object::create(Create::Anonymous, 0, Self::init(value)).map(|object| Value { object })
    }

    /// Creates a value at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, value: T) -> Result<Value<T>> {
        Object::create(Create::In(segment, offset), 0, Self::init(value))
            .map(|object| Value { object })
    }

    /// Opens the value at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Value<T>> {
        Object::open(Open::In(segment, offset)).map(|object| Value { object })
    }

    #[inline]
    fn with<R>(&self, verb: &str, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        match self.lock() {
            Ok(mut g) => Ok(f(&mut g)),
            Err(e) => Err(self.lock_failed(verb, e)),
        }
    }

    #[cold]
    fn lock_failed(&self, verb: &str, e: LockError<MutexGuard<'_, T>>) -> Error {
        match e {
            LockError::OwnerDied(_) => {
                owner_died(&format!("cannot {verb} {}", self.object.describe()))
            }
            LockError::Failed(e) => e,
        }
    }

    /// Reads the value under the lock.
    pub fn get(&self) -> Result<T> {
        self.with("read", |v| *v)
    }

    /// Writes the value under the lock.
    pub fn set(&self, value: T) -> Result<()> {
        self.with("write", |v| *v = value)
    }

    /// Runs `f` on the value under the lock and returns its result. If `f`
    /// panics, the lock is poisoned: later calls report
    /// [`ErrorKind::OwnerDied`] until the value is repaired.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        self.with("update", f)
    }

    /// Takes the lock for a compound update (Python's `get_lock()`).
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.object.shared().lock(None)
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.object.shared().try_lock()
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, T>> {
        self.object.shared().lock(deadline_after(timeout))
    }

    /// Takes the lock, waiting until `deadline`.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, T>> {
        self.object.shared().lock(Some(deadline))
    }

    /// The segment this value lives in.
    pub fn segment(&self) -> &Segment {
        self.object.segment()
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
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct Array<T: ShmSafe> {
    object: Object<ArrayLayout<T>>,
}

/// The layout of an [`Array<T>`]: a header, a [`RawMutex`], then `len`
/// elements (the header's parameter) at `data_offset::<T>()`.
pub(crate) struct ArrayLayout<T>(PhantomData<T>);

// SAFETY: the shared part is a RawMutex (repr(C), pointer-free, any bits
// valid); the elements after it are ShmSafe and only accessed under that
// lock. `total_len` covers the lock and `len` elements.
unsafe impl<T: ShmSafe> Layout for ArrayLayout<T> {
    type Shared = RawMutex;
    const KIND: ObjectKind = ObjectKind::Array;
    const ALIGN: usize = max(std::mem::align_of::<RawMutex>(), std::mem::align_of::<T>());
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<T>()
    }
    fn total_len(param: u64) -> Option<usize> {
        Array::<T>::size_in_segment(usize::try_from(param).ok()?)
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

impl<T: ShmSafe> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            object: self.object.clone(),
        }
    }
}

// A panic under the lock poisons it (see `Mutex`).
impl<T: ShmSafe> UnwindSafe for Array<T> {}
impl<T: ShmSafe> RefUnwindSafe for Array<T> {}

impl<T: ShmSafe> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("object", &self.object.describe())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

const fn array_payload() -> usize {
    payload_offset(std::mem::align_of::<RawMutex>())
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

    fn check_len(len: usize) -> Result<()> {
        match Self::size_in_segment(len) {
            Some(_) => Ok(()),
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("an array of {len} elements does not fit in memory"),
            )),
        }
    }

    fn create_at(at: Create<'_>, values: &[T]) -> Result<Array<T>> {
        Self::check_len(values.len())?;
        Object::create(at, values.len() as u64, Self::init(values)).map(|object| Array { object })
    }

    fn init(values: &[T]) -> impl FnOnce(Uninit<ArrayLayout<T>>) -> Result<()> + '_ {
        move |mem| {
            // SAFETY: the object region holds the lock at `array_payload()`
            // and `values.len()` elements at `data_offset::<T>()`, both
            // aligned and inside the length `size_in_segment` gave,
            // exclusively ours during initialisation.
            unsafe {
                RawMutex::init(mem.shared())?;
                let data = mem.at(data_offset::<T>()) as *mut T;
                std::ptr::copy_nonoverlapping(values.as_ptr(), data, values.len());
            }
            Ok(())
        }
    }

    /// Creates a named array holding a copy of `values`; fails if the name exists.
    pub fn create(name: &str, values: &[T]) -> Result<Array<T>> {
        Self::create_at(Create::Named(name), values)
    }

    /// Opens a named array, checking its element type; its length is whatever
    /// it was created with.
    pub fn open(name: &str) -> Result<Array<T>> {
        Object::open(Open::Named(name)).map(|object| Array { object })
    }

    /// Opens the named array, or creates it holding a copy of `values`.
    pub fn open_or_create(name: &str, values: &[T]) -> Result<Array<T>> {
        Self::check_len(values.len())?;
        Object::open_or_create(name, values.len() as u64, Self::init(values))
            .map(|object| Array { object })
    }

    /// Creates an anonymous array holding a copy of `values`.
    pub fn new(values: &[T]) -> Result<Array<T>> {
        Self::create_at(Create::Anonymous, values)
    }

    /// Creates an anonymous array of `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Result<Array<T>> {
        Self::new(&vec![value; len])
    }

    /// Creates an array at `offset` (a multiple of 64) inside `segment`.
    pub fn create_in(segment: &Segment, offset: usize, values: &[T]) -> Result<Array<T>> {
        Self::create_at(Create::In(segment, offset), values)
    }

    /// Opens the array at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Array<T>> {
        Object::open(Open::In(segment, offset)).map(|object| Array { object })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        // Validated on open: `size_in_segment(param)` exists, so it fits.
        self.object.param() as usize
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn guard(&self, locked: crate::sync::raw::Locked) -> LockResult<MutexGuard<'_, [T]>> {
        // SAFETY: `locked` proves this thread has just taken the lock.
        let raw = unsafe { RawGuard::new(self.object.shared()) };
        let data = NonNull::new(self.object.at(data_offset::<T>()) as *mut T).expect("mapped");
        let slice = NonNull::slice_from_raw_parts(data, self.len());
        MutexGuard::with_state(raw, slice, locked)
    }

    fn lock_with(&self, deadline: Option<Instant>) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self
            .object
            .shared()
            .lock(deadline)
            .map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock; the guard dereferences to `[T]`.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_with(None)
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        let locked = self.object.shared().try_lock().map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_with(deadline_after(timeout))
    }

    /// Takes the lock, waiting until `deadline`.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_with(Some(deadline))
    }

    fn with<R>(&self, verb: &str, f: impl FnOnce(&mut [T]) -> Result<R>) -> Result<R> {
        match self.lock() {
            Ok(mut g) => f(&mut g),
            Err(LockError::OwnerDied(_)) => Err(owner_died(&format!(
                "cannot {verb} {}",
                self.object.describe()
            ))),
            Err(LockError::Failed(e)) => Err(e),
        }
    }

    fn out_of_range(&self, i: usize) -> Error {
        Error::new(
            ErrorKind::OutOfRange,
            format!(
                "index {i} is out of range for an array of length {}",
                self.len()
            ),
        )
    }

    /// Element `i`, read under the lock.
    pub fn get(&self, i: usize) -> Result<T> {
        if i >= self.len() {
            return Err(self.out_of_range(i));
        }
        self.with("read", |s| Ok(s[i]))
    }

    /// Sets element `i` under the lock.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len() {
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
        if values.len() != self.len() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "source has {} elements, the array has {}",
                    values.len(),
                    self.len()
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
        self.object.segment()
    }
}
