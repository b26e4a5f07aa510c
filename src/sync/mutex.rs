use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::raw::{Locked, RawGuard, RawMutex};
use super::{LockError, LockResult};
use crate::deadline::deadline_after;
use crate::error::Result;
use crate::layout::header::ObjectKind;
use crate::layout::{ShmSafe, TypeFingerprint};
use crate::object::{Create, Layout, Object, Open, Uninit, fixed_len};
use crate::segment::Segment;

/// The payload of a `Mutex<T>` (and of a `Value<T>`): the lock, then the data.
#[repr(C)]
pub(crate) struct MutexCell<T> {
    pub(crate) raw: RawMutex,
    pub(crate) data: UnsafeCell<T>,
}

// SAFETY: `data` is only accessed through a guard, which exists only while
// the process-shared lock is held; `T: ShmSafe` is Send + Sync and valid for
// every bit pattern, as lock_api's `Mutex<R, T: Send>` is Sync.
unsafe impl<T: ShmSafe> Sync for MutexCell<T> {}

impl<T: ShmSafe> MutexCell<T> {
    /// Initialises a cell holding `value` in place.
    ///
    /// # Safety
    /// `this` must be valid for writes of a `MutexCell<T>`, aligned, and
    /// not in use by anyone.
    pub(crate) unsafe fn init(this: *mut MutexCell<T>, value: T) -> Result<()> {
        // SAFETY: the contract makes `this` valid and unused; only raw
        // pointers to its fields are formed.
        unsafe {
            RawMutex::init(std::ptr::addr_of_mut!((*this).raw))?;
            std::ptr::addr_of_mut!((*this).data).write(UnsafeCell::new(value));
        }
        Ok(())
    }

    fn guard(&self, locked: Locked) -> LockResult<MutexGuard<'_, T>> {
        // SAFETY: `locked` proves this thread has just taken `raw`.
        let raw = unsafe { RawGuard::new(&self.raw) };
        let data = NonNull::new(self.data.get()).expect("non-null");
        MutexGuard::with_state(raw, data, locked)
    }

    /// Takes the lock, waiting until `deadline` (forever if `None`).
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> LockResult<MutexGuard<'_, T>> {
        let locked = self.raw.lock(deadline).map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock if it is free.
    pub(crate) fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let locked = self.raw.try_lock().map_err(LockError::Failed)?;
        self.guard(locked)
    }
}

/// The layout of a [`Mutex<T>`]: a header, then a [`MutexCell<T>`].
pub(crate) struct MutexLayout<T>(PhantomData<T>);

// SAFETY: MutexCell<T> is repr(C) of a RawMutex (plain atomics) and a
// ShmSafe T: no pointers, every bit pattern valid, data accessed only under
// the lock (see its Sync impl). The default length covers it.
unsafe impl<T: ShmSafe> Layout for MutexLayout<T> {
    type Shared = MutexCell<T>;
    const KIND: ObjectKind = ObjectKind::Mutex;
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::of::<T>()
    }
}

/// A mutual-exclusion lock around a `T`, shared between processes.
///
/// Like `std::sync::Mutex`, but the lock and the data live in shared memory,
/// and a holder that dies (even by SIGKILL) or panics does not leave the
/// lock held forever nor the data silently torn: the next locker gets
/// [`LockError::OwnerDied`] with the guard, may repair the data, and calls
/// [`MutexGuard::mark_consistent`]. Like std's poisoning, a holder that
/// panics marks the lock for every later locker, in this process or
/// another.
///
/// Uncontended `lock`/`unlock` are a compare-and-swap each, no system call.
/// Contended locking spins briefly, then sleeps on a futex.
///
/// ```
/// use ipckit::sync::Mutex;
/// # fn main() -> ipckit::Result<()> {
/// let m = Mutex::new(0u64)?;               // anonymous; pass it to children
/// *m.lock()? += 1;
/// assert_eq!(*m.lock()?, 1);
/// # Ok(()) }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct Mutex<T: ShmSafe> {
    object: Object<MutexLayout<T>>,
}

impl<T: ShmSafe> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex {
            object: self.object.clone(),
        }
    }
}

// A panic while the lock is held marks the lock (poisoning), so a Mutex
// observed after a caught panic is never silently torn: as std's Mutex.
impl<T: ShmSafe> UnwindSafe for Mutex<T> {}
impl<T: ShmSafe> RefUnwindSafe for Mutex<T> {}

impl<T: ShmSafe> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("object", &self.object.describe())
            .finish_non_exhaustive()
    }
}

impl<T: ShmSafe> Mutex<T> {
    /// Bytes a `Mutex<T>` needs inside a segment (see [`create_in`](Self::create_in)).
    pub const fn size_in_segment() -> usize {
        fixed_len::<MutexCell<T>>()
    }

    fn create_at(at: Create<'_>, value: T) -> Result<Mutex<T>> {
        Object::create(at, 0, |mem: Uninit<MutexLayout<T>>| {
            // SAFETY: `mem` is the new object's region, exclusively ours.
            unsafe { MutexCell::init(mem.shared(), value) }
        })
        .map(|object| Mutex { object })
    }

    /// Creates a named mutex holding `value`; fails if the name exists.
    pub fn create(name: &str, value: T) -> Result<Mutex<T>> {
        Self::create_at(Create::Named(name), value)
    }

    /// Opens the named mutex, checking that it holds a `T`.
    pub fn open(name: &str) -> Result<Mutex<T>> {
        Object::open(Open::Named(name)).map(|object| Mutex { object })
    }

    /// Opens the named mutex, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Mutex<T>> {
        Object::open_or_create(name, 0, |mem: Uninit<MutexLayout<T>>| {
            // SAFETY: `mem` is the new object's region, exclusively ours.
            unsafe { MutexCell::init(mem.shared(), value) }
        })
        .map(|object| Mutex { object })
    }

    /// Creates an anonymous mutex holding `value`.
    pub fn new(value: T) -> Result<Mutex<T>> {
        Self::create_at(Create::Anonymous, value)
    }

    /// Creates a mutex at `offset` (a multiple of 64) inside `segment`,
    /// overwriting [`size_in_segment()`](Self::size_in_segment) bytes there.
    pub fn create_in(segment: &Segment, offset: usize, value: T) -> Result<Mutex<T>> {
        Self::create_at(Create::In(segment, offset), value)
    }

    /// Opens the mutex at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Mutex<T>> {
        Object::open(Open::In(segment, offset)).map(|object| Mutex { object })
    }

    fn cell(&self) -> &MutexCell<T> {
        self.object.shared()
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.cell().raw
    }

    /// Takes the lock, blocking as long as needed.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.cell().lock(None)
    }

    /// Takes the lock if it is free; otherwise fails with a would-block error.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.cell().try_lock()
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, T>> {
        self.cell().lock(deadline_after(timeout))
    }

    /// Takes the lock, waiting until `deadline` at the latest.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, T>> {
        self.cell().lock(Some(deadline))
    }

    /// The thread id of the current holder, if locked (a racy snapshot, for
    /// diagnostics).
    pub fn owner_tid(&self) -> Option<u32> {
        self.raw().owner_tid()
    }

    /// The segment this mutex lives in.
    pub fn segment(&self) -> &Segment {
        self.object.segment()
    }
}

/// Proof that the lock is held; gives access to the data.
///
/// Dropping the guard releases the lock; dropping it while its thread
/// unwinds from a panic poisons the lock first (the next locker gets
/// [`LockError::OwnerDied`]). A guard is tied to the thread that took the
/// lock (the lock records the holding thread), so it is not `Send`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(crate) raw: RawGuard<'a>,
    data: NonNull<T>,
    _marker: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// A guard for `data` protected by the lock `raw` holds.
    pub(crate) fn new(raw: RawGuard<'a>, data: NonNull<T>) -> Self {
        MutexGuard {
            raw,
            data,
            _marker: PhantomData,
        }
    }

    /// The guard, or the guard inside `OwnerDied` if a holder died or
    /// panicked.
    pub(crate) fn with_state(
        raw: RawGuard<'a>,
        data: NonNull<T>,
        locked: Locked,
    ) -> LockResult<Self> {
        let guard = MutexGuard::new(raw, data);
        if locked.owner_died {
            Err(LockError::OwnerDied(guard))
        } else {
            Ok(guard)
        }
    }

    /// Gives the guard up without unlocking: the thread no longer holds the
    /// lock (a condition variable's relock failed).
    pub(crate) fn forget(self) {
        self.raw.forget();
    }

    /// Declares the protected data consistent after a holder died or
    /// panicked ([`LockError::OwnerDied`]); later lockers get the lock
    /// normally.
    pub fn mark_consistent(&self) {
        self.raw.mark_consistent();
    }
}

// SAFETY: sharing `&MutexGuard` across threads only gives `&T`, and `T: Sync`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime, so no process
        // following the protocol writes the data; it was initialised before
        // publication and T is ShmSafe (valid for every bit pattern).
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is the only accessor while it lives.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
