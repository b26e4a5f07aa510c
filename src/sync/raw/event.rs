use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::wait::{Spin, WaitCell};

const EV_CLEAR: u32 = 0;
const EV_SET: u32 = 1;

/// A manual-reset event: one state word and the crate's waiting primitive.
///
/// | `state` | meaning |
/// |---|---|
/// | 0 | clear |
/// | 1 | set |
/// | anything else | written by a foreign or corrupt peer; read as clear |
///
/// `set` is a Release swap, waiters see it with an Acquire load: SYNC POINT
/// "event"; then it notifies the [`WaitCell`] (SYNC POINT "wake"; the swap
/// is the waker's barrier on x86_64, `WaitCell::notify_after_rmw`), which
/// makes no system call when nobody sleeps. A sleeper killed while asleep
/// costs at most one fruitless wake-up.
#[repr(C)]
pub(crate) struct RawEvent {
    state: AtomicU32,
    cell: WaitCell,
}

impl RawEvent {
    pub(crate) fn new() -> RawEvent {
        RawEvent {
            state: AtomicU32::new(EV_CLEAR),
            cell: WaitCell::new(),
        }
    }

    #[inline]
    pub(crate) fn set(&self) {
        // SYNC POINT "event".
        if self.state.swap(EV_SET, Ordering::Release) != EV_SET {
            // SYNC POINT "wake": the swap is the commit (an RMW).
            self.cell.notify_after_rmw(u32::MAX);
        }
    }

    #[inline]
    pub(crate) fn clear(&self) {
        self.state.store(EV_CLEAR, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        // SYNC POINT "event".
        self.state.load(Ordering::Acquire) == EV_SET
    }

    /// Waits until set; `false` if `deadline` passed first.
    #[inline]
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        self.cell.wait_until(deadline, Spin::Wait, || self.is_set())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn event_in_process() {
        let e = RawEvent::new();
        assert!(!e.is_set());
        assert!(!e.wait(Some(Instant::now() + Duration::from_millis(5))));
        e.set();
        assert!(e.wait(None));
        e.clear();
        assert!(!e.is_set());
    }

    #[test]
    fn event_wakes_threads() {
        let e = std::sync::Arc::new(RawEvent::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || e.wait(None))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        e.set();
        for w in waiters {
            assert!(w.join().unwrap());
        }
    }
}
