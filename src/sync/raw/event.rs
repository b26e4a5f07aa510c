use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::spin::{SLEEP_SLICE, sleep_on, spin_wait};
use crate::platform;

const EV_CLEAR: u32 = 0;
const EV_SET: u32 = 1;
const EV_SLEEPERS: u32 = 2;

/// A manual-reset event on one futex word.
///
/// | state | meaning |
/// |---|---|
/// | 0 | clear, nobody sleeping |
/// | 1 | set |
/// | 2 | clear, and someone may be sleeping: `set` must wake |
///
/// A sleeper killed while asleep leaves state 2, which only costs the next
/// `set` one system call. `set` is a Release swap, waiters see it with an
/// Acquire load: SYNC POINT "event".
#[repr(C)]
pub(crate) struct RawEvent {
    state: AtomicU32,
}

impl RawEvent {
    pub(crate) const fn new() -> RawEvent {
        RawEvent {
            state: AtomicU32::new(EV_CLEAR),
        }
    }

    pub(crate) fn set(&self) {
        if self.state.swap(EV_SET, Ordering::Release) == EV_SLEEPERS {
            platform::futex_wake(&self.state, u32::MAX);
        }
    }

    pub(crate) fn clear(&self) {
        // From SLEEPERS there is nothing to do: the event is already clear.
        let _ = self
            .state
            .compare_exchange(EV_SET, EV_CLEAR, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == EV_SET
    }

    /// Waits until set; `false` if `deadline` passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        if spin_wait(|| self.is_set()) {
            return true;
        }
        loop {
            match self.state.load(Ordering::Acquire) {
                EV_SET => return true,
                EV_CLEAR
                    if self
                        .state
                        .compare_exchange(
                            EV_CLEAR,
                            EV_SLEEPERS,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_err() =>
                {
                    continue;
                }
                _ => {}
            }
            if !sleep_on(&self.state, EV_SLEEPERS, deadline, SLEEP_SLICE) {
                return self.is_set();
            }
        }
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
