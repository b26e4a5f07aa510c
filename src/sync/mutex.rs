use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::raw::{Locked, RawMutex};
use super::{LockError, LockResult, handle_serde};
use crate::deadline::deadline_after;
use crate::error::Result;
use crate::layout::header::ObjectKind;
use crate::layout::{ShmSafe, TypeFingerprint};
use crate::segment::Segment;
use crate::segment::object::{self, Location, Placement, Spec};

/// The payload of a `Mutex<T>` (and of a `Value<T>`): the lock, then the data.
#[repr(C)]
pub(crate) struct MutexCell<T> {
    pub(crate) raw: RawMutex,
    pub(crate) data: UnsafeCell<T>,
}

/// A mutual-exclusion lock around a `T`, shared between processes.
///
/// Like `std::sync::Mutex`, but the lock and the data live in shared memory,
/// and a holder that dies (even by SIGKILL) does not leave the lock held
/// forever: the next locker gets [`LockError::OwnerDied`] with the guard, may
/// repair the data, and calls [`MutexGuard::mark_consistent`].
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
pub struct Mutex<T: ShmSafe> {
    pub(crate) place: Placement,
    cell: NonNull<MutexCell<T>>,
}

// SAFETY: the cell lives in a shared mapping kept alive by `place`; access to
// `data` is serialised by the process-shared lock, and T is ShmSafe (Send + Sync,
// no pointers).
unsafe impl<T: ShmSafe> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSafe> Sync for Mutex<T> {}

impl<T: ShmSafe> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex {
            place: self.place.clone(),
            cell: self.cell,
        }
    }
}

impl<T: ShmSafe> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("object", &self.place.describe())
            .finish_non_exhaustive()
    }
}

const fn payload<T>() -> usize {
    object::payload_offset(std::mem::align_of::<MutexCell<T>>())
}

impl<T: ShmSafe> Mutex<T> {
    /// Bytes a `Mutex<T>` needs inside a segment (see [`create_in`](Self::create_in)).
    pub const fn size_in_segment() -> usize {
        payload::<T>() + std::mem::size_of::<MutexCell<T>>()
    }

    fn spec(kind: ObjectKind) -> Spec {
        Spec {
            kind,
            ty: TypeFingerprint::of::<T>(),
            param: 0,
            total_len: Self::size_in_segment(),
            align: std::mem::align_of::<MutexCell<T>>(),
        }
    }

    /// Creates or opens a lock cell of `kind` (Mutex or Value) at `loc`.
    pub(crate) fn locate(kind: ObjectKind, loc: Location<'_>, init: T) -> Result<Mutex<T>> {
        let place = object::locate(
            loc,
            Self::spec(kind),
            |base| {
                // SAFETY: `base` is the start of the object region of
                // `size_in_segment()` bytes, exclusively ours during init;
                // `payload::<T>()` is aligned for MutexCell<T> because the
                // object starts on a 64-byte boundary of a page-aligned map.
                unsafe {
                    let cell = base.add(payload::<T>()) as *mut MutexCell<T>;
                    RawMutex::init(std::ptr::addr_of_mut!((*cell).raw))?;
                    std::ptr::addr_of_mut!((*cell).data).write(UnsafeCell::new(init));
                }
                Ok(())
            },
            |_| Some(Self::size_in_segment()),
        )?;
        Ok(Self::from_place(place))
    }

    fn from_place(place: Placement) -> Mutex<T> {
        let cell = NonNull::new(place.ptr(payload::<T>()) as *mut MutexCell<T>)
            .expect("a mapped segment is never at address 0");
        Mutex { place, cell }
    }

    /// Creates a named mutex holding `value`; fails if the name exists.
    pub fn create(name: &str, value: T) -> Result<Mutex<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(ObjectKind::Mutex, Location::Create { name, mode }, value)
    }

    /// Opens the named mutex, checking that it holds a `T`.
    pub fn open(name: &str) -> Result<Mutex<T>> {
        Self::locate_existing(ObjectKind::Mutex, Location::Open { name })
    }

    /// Opens the named mutex, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Mutex<T>> {
        let mode = crate::segment::DEFAULT_MODE;
        Self::locate(
            ObjectKind::Mutex,
            Location::OpenOrCreate { name, mode },
            value,
        )
    }

    /// Creates an anonymous mutex holding `value`.
    pub fn new(value: T) -> Result<Mutex<T>> {
        Self::locate(ObjectKind::Mutex, Location::Anonymous, value)
    }

    /// Creates a mutex at `offset` (a multiple of 64) inside `segment`,
    /// overwriting [`size_in_segment()`](Self::size_in_segment) bytes there.
    pub fn create_in(segment: &Segment, offset: usize, value: T) -> Result<Mutex<T>> {
        Self::locate(
            ObjectKind::Mutex,
            Location::CreateIn { segment, offset },
            value,
        )
    }

    /// Opens the mutex at `offset` inside `segment`.
    pub fn open_in(segment: &Segment, offset: usize) -> Result<Mutex<T>> {
        Self::locate_existing(ObjectKind::Mutex, Location::OpenIn { segment, offset })
    }

    pub(crate) fn locate_existing(kind: ObjectKind, loc: Location<'_>) -> Result<Mutex<T>> {
        let place = object::locate(
            loc,
            Self::spec(kind),
            |_| unreachable_init(),
            |_| Some(Self::size_in_segment()),
        )?;
        Ok(Self::from_place(place))
    }

    fn cell(&self) -> &MutexCell<T> {
        // SAFETY: `cell` points into the mapping held by `self.place`, to a
        // MutexCell initialised before the object was published.
        unsafe { self.cell.as_ref() }
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.cell().raw
    }

    fn guard(&self, locked: Locked) -> LockResult<MutexGuard<'_, T>> {
        let data = NonNull::new(self.cell().data.get()).expect("non-null");
        let guard = MutexGuard {
            raw: self.raw(),
            data,
            _marker: PhantomData,
        };
        if locked.owner_died {
            Err(LockError::OwnerDied(guard))
        } else {
            Ok(guard)
        }
    }

    fn lock_with(&self, deadline: Option<Instant>) -> LockResult<MutexGuard<'_, T>> {
        let locked = self.raw().lock(deadline).map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock, blocking as long as needed.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.lock_with(None)
    }

    /// Takes the lock if it is free; otherwise fails with a would-block error.
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let locked = self.raw().try_lock().map_err(LockError::Failed)?;
        self.guard(locked)
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, T>> {
        self.lock_with(deadline_after(timeout))
    }

    /// Takes the lock, waiting until `deadline` at the latest.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<MutexGuard<'_, T>> {
        self.lock_with(Some(deadline))
    }

    /// The thread id of the current holder, if locked (a racy snapshot, for
    /// diagnostics).
    pub fn owner_tid(&self) -> Option<u32> {
        self.raw().owner_tid()
    }

    /// The segment this mutex lives in.
    pub fn segment(&self) -> &Segment {
        &self.place.segment
    }
}

pub(crate) fn unreachable_init() -> Result<()> {
    // `locate` only calls `init` when it creates; callers passing this never
    // ask it to create.
    Err(crate::Error::new(
        crate::ErrorKind::NotFound,
        "object does not exist",
    ))
}

handle_serde!(Mutex<T: ShmSafe>);

/// Proof that the lock is held; gives access to the data.
///
/// Dropping the guard releases the lock. A guard is tied to the thread that
/// took the lock (the kernel tracks robust-lock owners per thread), so it is
/// not `Send`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(crate) raw: &'a RawMutex,
    data: NonNull<T>,
    _marker: PhantomData<(&'a mut T, *const ())>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// A guard for `data` protected by `raw`, which the caller holds.
    pub(crate) fn new(raw: &'a RawMutex, data: NonNull<T>) -> Self {
        MutexGuard {
            raw,
            data,
            _marker: PhantomData,
        }
    }

    /// Gives up the guard without unlocking: the caller takes over the lock.
    pub(crate) fn into_raw_parts(self) -> (&'a RawMutex, NonNull<T>) {
        let parts = (self.raw, self.data);
        std::mem::forget(self);
        parts
    }

    /// Declares the protected data consistent after a holder died
    /// ([`LockError::OwnerDied`]); later lockers get the lock normally.
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

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its thread holds the lock.
        unsafe { self.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
