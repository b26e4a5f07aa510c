//! The atomics and futex calls of the waiting primitive, swapped for loom's
//! models under `--cfg loom` (tokio's `src/loom/` pattern), so that the
//! same code runs in production and under the model checker:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib loom_
//! ```
//!
//! Only `sync::raw::wait` (and the ring commit it offers) uses this module;
//! every other word in shared memory is a std atomic.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) mod futex {
    //! The kernel's futex, and membarrier.
    use std::time::Duration;

    use super::AtomicU32;
    use crate::platform;

    /// Per-cell futex state: none, the kernel keeps the queue.
    #[derive(Default)]
    pub(crate) struct Queue;

    impl Queue {
        pub(crate) const fn new() -> Queue {
            Queue
        }

        /// Sleeps while `word` holds `expected`, at most `timeout`.
        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
            let _ = platform::futex_wait(word, expected, Some(timeout));
        }

        /// Wakes up to `n` sleepers of `word`; returns how many it woke.
        pub(crate) fn wake(&self, word: &AtomicU32, n: u32) -> usize {
            platform::futex_wake(word, n)
        }
    }

    /// Whether this process commits without a store-load fence (it is
    /// registered for membarrier; see `sync::raw::wait`).
    pub(crate) fn commits_unfenced() -> bool {
        platform::membarrier_registered()
    }

    /// A full barrier on every running thread of every registered process.
    pub(crate) fn membarrier() {
        platform::membarrier_global();
    }
}

#[cfg(loom)]
pub(crate) mod futex {
    //! A model of the futex for loom: the check of the word and the sleep
    //! are atomic with respect to wakers (a lock stands for the kernel's
    //! hash-bucket lock), a sleep has no timeout — so a lost wake-up is a
    //! deadlock loom reports — and membarrier is unavailable (commits are
    //! fenced).
    use std::time::Duration;

    use super::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};

    pub(crate) struct Queue {
        sleeping: Mutex<usize>,
        cv: Condvar,
    }

    impl Queue {
        pub(crate) fn new() -> Queue {
            Queue {
                sleeping: Mutex::new(0),
                cv: Condvar::new(),
            }
        }

        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Duration) {
            let mut n = self.sleeping.lock().unwrap();
            if word.load(Ordering::SeqCst) != expected {
                return;
            }
            *n += 1;
            // A wake takes every sleeper off the queue (extra ones wake
            // spuriously, which every caller tolerates).
            drop(self.cv.wait(n).unwrap());
        }

        pub(crate) fn wake(&self, _word: &AtomicU32, n: u32) -> usize {
            let mut sleeping = self.sleeping.lock().unwrap();
            let woken = (*sleeping).min(n as usize);
            if *sleeping > 0 {
                *sleeping = 0;
                self.cv.notify_all();
            }
            woken
        }
    }

    pub(crate) fn commits_unfenced() -> bool {
        false
    }

    pub(crate) fn membarrier() {}
}
