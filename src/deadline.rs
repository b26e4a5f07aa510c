//! Deadlines that cannot overflow.
//!
//! `Instant::now() + timeout` panics when the sum does not fit in an
//! `Instant` (`lock_timeout(Duration::MAX)`, a timeout read from a config
//! file or sent by a peer). Every `op_timeout(Duration)` turns its timeout
//! into a deadline here instead, and treats "no deadline" as "wait forever",
//! as crossbeam-channel's `send_timeout` does: a wait that long is one no
//! caller will see end.

use std::time::{Duration, Instant};

/// The instant `timeout` from now, or `None` (no deadline: wait forever) if
/// that instant is too far in the future to represent.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representable_timeouts_give_deadlines() {
        let before = Instant::now();
        let d = deadline_after(Duration::from_secs(5)).unwrap();
        assert!(d >= before + Duration::from_secs(5));
        assert!(deadline_after(Duration::ZERO).unwrap() >= before);
    }

    #[test]
    fn overflowing_timeouts_mean_no_deadline() {
        assert_eq!(deadline_after(Duration::MAX), None);
        assert_eq!(deadline_after(Duration::from_secs(u64::MAX)), None);
    }
}
