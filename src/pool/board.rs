//! A process pool's counters in a named object, for the `ipckit` tool
//! (`ls`, `inspect`, `watch`): opt-in with
//! [`ProcessPoolBuilder::publish`](super::ProcessPoolBuilder::publish).
//! The pool's collector refreshes it as it goes (a few plain stores every
//! 10 ms at most); nothing in it is read back by the pool.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::Result;
use crate::layout::header::ObjectKind;
use crate::object::{Create, Layout, Object, Uninit};

/// Most worker pids published (a larger pool publishes its first ones).
pub(crate) const MAX_PUBLISHED_WORKERS: usize = 64;

/// What a published pool shows.
#[repr(C)]
pub(crate) struct BoardShared {
    pub(crate) pending: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    /// Workers now; the first `MAX_PUBLISHED_WORKERS` pids follow.
    pub(crate) workers: AtomicU64,
    pub(crate) pids: [AtomicU32; MAX_PUBLISHED_WORKERS],
}

/// The layout of a published pool: a header and a [`BoardShared`].
pub(crate) struct BoardLayout;

// SAFETY: BoardShared is repr(C), atomics only (any bits valid, accessed
// only atomically), no pointers; the default length covers it.
unsafe impl Layout for BoardLayout {
    type Shared = BoardShared;
    const KIND: ObjectKind = ObjectKind::Pool;
}

/// The published counters, as the collector writes them.
pub(crate) struct Board {
    object: Object<BoardLayout>,
}

/// One refresh of the board.
pub(crate) struct Snapshot<'a> {
    pub pending: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub pids: &'a [u32],
}

impl Board {
    pub(crate) fn create(name: &str) -> Result<Board> {
        let init = |mem: Uninit<BoardLayout>| {
            // SAFETY: the shared state's place is inside the new object,
            // aligned, and exclusively ours until it is published; all
            // zeros is a valid BoardShared (atomics).
            unsafe { std::ptr::write_bytes(mem.shared(), 0, 1) };
            Ok(())
        };
        Object::create(Create::Named(name), 0, init).map(|object| Board { object })
    }

    pub(crate) fn update(&self, s: &Snapshot<'_>) {
        let b = self.object.shared();
        // Ordering: Relaxed; independent counters, read as a snapshot that
        // may mix moments.
        b.pending.store(s.pending, Ordering::Relaxed);
        b.running.store(s.running, Ordering::Relaxed);
        b.completed.store(s.completed, Ordering::Relaxed);
        b.failed.store(s.failed, Ordering::Relaxed);
        b.cancelled.store(s.cancelled, Ordering::Relaxed);
        b.workers.store(s.pids.len() as u64, Ordering::Relaxed);
        for (slot, pid) in b
            .pids
            .iter()
            .zip(s.pids.iter().chain(std::iter::repeat(&0)))
        {
            slot.store(*pid, Ordering::Relaxed);
        }
    }
}

/// Reads a board's counters from the bytes of its shared state (a private
/// copy, as `ipckit inspect` takes): (pending, running, completed, failed,
/// cancelled, worker pids). The six counters are `BoardShared`'s first six
/// fields, in order, little-endian (x86_64).
pub(crate) fn decode(bytes: &[u8]) -> Option<(u64, u64, u64, u64, u64, Vec<u32>)> {
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let workers = usize::try_from(u64_at(5)?).ok()?.min(MAX_PUBLISHED_WORKERS);
    let pids_at = std::mem::offset_of!(BoardShared, pids);
    let pids = (0..workers)
        .map(|k| {
            let at = pids_at + k * 4;
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        })
        .collect::<Option<Vec<u32>>>()?;
    Some((
        u64_at(0)?,
        u64_at(1)?,
        u64_at(2)?,
        u64_at(3)?,
        u64_at(4)?,
        pids,
    ))
}

/// Where the shared state lies in the object, and its length.
pub(crate) fn shared_span() -> (usize, usize) {
    (BoardLayout::SHARED_AT, std::mem::size_of::<BoardShared>())
}
