//! Process-shared synchronisation: [`Mutex`], [`Condvar`], [`Semaphore`],
//! [`Event`] and [`Barrier`].
//!
//! Each primitive lives in shared memory and can be
//!
//! - created by name (`create`, `open`, `open_or_create`) — a POSIX shared
//!   memory object of its own, mode `0o600`;
//! - anonymous (`new`) — a `memfd` that leaks nothing, passed to other
//!   processes inside any serde-encoded value;
//! - embedded in a segment you lay out yourself (`create_in`, `open_in`), at
//!   an offset that is a multiple of 64, occupying `size_in_segment()` bytes.
//!
//! They are robust to processes dying: a lock whose holder died is reported
//! (as [`LockError::OwnerDied`]) and recovered, never deadlocked; a semaphore
//! permit held by a dead process is given back; a waiter that dies wedges
//! nobody. Waiting follows one vocabulary: `op()` blocks, `try_op()` never
//! blocks, `op_timeout(Duration)`, `op_deadline(Instant)`. Uncontended
//! operations make no system call.

mod barrier;
mod condvar;
mod event;
mod mutex;
pub(crate) mod raw;
mod semaphore;

use std::fmt;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use event::Event;
pub(crate) use mutex::unreachable_init as mutex_unreachable_init;
pub use mutex::{Mutex, MutexGuard};
pub use semaphore::{DEFAULT_HOLDER_SLOTS, Semaphore, SemaphoreBuilder, SemaphorePermit};

use crate::error::{Error, ErrorKind};

/// The error of a lock operation: either the lock was acquired but its
/// previous holder died ([`OwnerDied`](LockError::OwnerDied), carrying the
/// guard), or it was not acquired at all ([`Failed`](LockError::Failed)).
///
/// ```no_run
/// # fn main() -> ipckit::Result<()> {
/// use ipckit::sync::{LockError, Mutex};
/// let m = Mutex::create("accounts", [0u64; 2])?;
/// let mut guard = match m.lock() {
///     Ok(g) => g,
///     Err(LockError::OwnerDied(mut g)) => {
///         // A process died mid-update: repair the invariant, then say so.
///         let total = g[0] + g[1];
///         g[1] = total - g[0];
///         g.mark_consistent();
///         g
///     }
///     Err(e) => return Err(e.into()),
/// };
/// guard[0] += 1;
/// # Ok(()) }
/// ```
pub enum LockError<G> {
    /// The lock is held by the caller, but a process died while holding it
    /// and the protected data may be half-updated. Repair it, then call the
    /// guard's `mark_consistent()`; until then every locker gets this error.
    OwnerDied(G),
    /// The lock was not acquired (timeout, would block, or an OS error).
    Failed(Error),
}

/// The result of a lock operation.
pub type LockResult<G> = Result<G, LockError<G>>;

impl<G> LockError<G> {
    /// [`ErrorKind::OwnerDied`] or the kind of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LockError::OwnerDied(_) => ErrorKind::OwnerDied,
            LockError::Failed(e) => e.kind(),
        }
    }

    /// The guard, if the lock was acquired.
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            LockError::Failed(_) => None,
        }
    }

    /// Whether a previous holder died.
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Whether a `try_` call found the lock held.
    pub fn is_would_block(&self) -> bool {
        self.kind() == ErrorKind::WouldBlock
    }

    pub(crate) fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::Failed(e) => LockError::Failed(e),
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(OWNER_DIED_MSG),
            LockError::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for LockError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::OwnerDied(_) => None,
            LockError::Failed(e) => Some(e),
        }
    }
}

pub(crate) const OWNER_DIED_MSG: &str = "a process died while holding the lock; the protected data may be inconsistent until a holder calls mark_consistent()";

impl<G> From<LockError<G>> for Error {
    /// Drops the guard (releasing the lock) and keeps the error.
    fn from(e: LockError<G>) -> Error {
        match e {
            LockError::OwnerDied(_) => Error::new(ErrorKind::OwnerDied, OWNER_DIED_MSG),
            LockError::Failed(e) => e,
        }
    }
}

impl<G> From<Error> for LockError<G> {
    fn from(e: Error) -> LockError<G> {
        LockError::Failed(e)
    }
}

/// `Send`, `Sync` and `Clone` for a handle made of a `place` (which keeps the
/// mapping alive) and a `raw` pointer into it.
macro_rules! placed_handle {
    ($ty:ident) => {
        // SAFETY: `raw` points into the shared mapping that `place` keeps
        // alive; the pointee is only accessed through atomics or the
        // process-shared lock, which any thread of any process may use.
        unsafe impl Send for $ty {}
        // SAFETY: as above.
        unsafe impl Sync for $ty {}
        impl Clone for $ty {
            fn clone(&self) -> Self {
                $ty {
                    place: self.place.clone(),
                    raw: self.raw,
                }
            }
        }
    };
}
pub(crate) use placed_handle;

/// The six constructors of an object without parameters, delegating to
/// `Self::locate(location, create: bool)`.
macro_rules! plain_constructors {
    ($what:literal) => {
        #[doc = concat!("Creates a named ", $what, "; fails if the name exists.")]
        pub fn create(name: &str) -> Result<Self> {
            let mode = crate::segment::DEFAULT_MODE;
            Self::locate(Location::Create { name, mode }, true)
        }

        #[doc = concat!("Opens a named ", $what, ".")]
        pub fn open(name: &str) -> Result<Self> {
            Self::locate(Location::Open { name }, false)
        }

        #[doc = concat!("Opens the named ", $what, ", or creates it.")]
        pub fn open_or_create(name: &str) -> Result<Self> {
            let mode = crate::segment::DEFAULT_MODE;
            Self::locate(Location::OpenOrCreate { name, mode }, true)
        }

        #[doc = concat!("Creates an anonymous ", $what, ".")]
        pub fn new() -> Result<Self> {
            Self::locate(Location::Anonymous, true)
        }

        #[doc = concat!("Creates a ", $what, " at `offset` (a multiple of 64) inside `segment`.")]
        pub fn create_in(segment: &Segment, offset: usize) -> Result<Self> {
            Self::locate(Location::CreateIn { segment, offset }, true)
        }

        #[doc = concat!("Opens the ", $what, " at `offset` inside `segment`.")]
        pub fn open_in(segment: &Segment, offset: usize) -> Result<Self> {
            Self::locate(Location::OpenIn { segment, offset }, false)
        }
    };
}
pub(crate) use plain_constructors;

/// Implements `Serialize`/`Deserialize` for a handle type through its
/// placement token; deserialising opens (and validates) the object.
macro_rules! handle_serde {
    ($ty:ident) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.place.token(), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let (segment, offset) = crate::segment::object::ObjectToken::decode(d)?;
                Self::open_in(&segment, offset).map_err(serde::de::Error::custom)
            }
        }
    };
    ($ty:ident<$g:ident: $bound:path>) => {
        impl<$g: $bound> serde::Serialize for $ty<$g> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&self.place.token(), s)
            }
        }
        impl<'de, $g: $bound> serde::Deserialize<'de> for $ty<$g> {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let (segment, offset) = crate::segment::object::ObjectToken::decode(d)?;
                Self::open_in(&segment, offset).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use handle_serde;
