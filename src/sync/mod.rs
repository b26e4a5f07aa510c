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
//! They are robust to processes dying: a lock whose holder died or panicked
//! is reported (as [`LockError::OwnerDied`]) and recovered, never deadlocked; a semaphore
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
pub(crate) use mutex::MutexCell;
pub use mutex::{Mutex, MutexGuard};
pub use semaphore::{DEFAULT_HOLDER_SLOTS, Semaphore, SemaphoreBuilder, SemaphorePermit};

use crate::error::{Error, ErrorKind};

/// The error of a lock operation: either the lock was acquired but a
/// previous holder died or panicked while holding it
/// ([`OwnerDied`](LockError::OwnerDied), carrying the guard), or it was not
/// acquired at all ([`Failed`](LockError::Failed)).
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
    /// The lock is held by the caller, but a previous holder died (a process
    /// killed, even by SIGKILL) or panicked (a thread of any process, like
    /// std's poisoning) while holding it, so the protected data may be
    /// half-updated. Repair it, then call the guard's `mark_consistent()`;
    /// until then every locker gets this error.
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

pub(crate) const OWNER_DIED_MSG: &str = "a holder died or panicked while holding the lock; the protected data may be inconsistent until a holder calls mark_consistent()";

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
