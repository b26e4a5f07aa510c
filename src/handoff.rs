//! Passing file descriptors inside serialised values.
//!
//! Some handles are descriptors (a socket, a memfd). When a value holding
//! them is encoded for a child process, [`collect`] gathers duplicates of
//! their descriptors while the value is serialised; each handle serialises
//! as the index of its descriptor. The descriptors travel beside the bytes
//! (SCM_RIGHTS), and in the child [`provide`] makes them available to the
//! handles' deserialisers, which [`take`] theirs by index.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::platform;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises a value) collecting the descriptors handles
/// push; returns its result and the descriptors in index order.
pub(crate) fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let saved = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let r = f();
    let fds = OUTGOING.with(|o| std::mem::replace(&mut *o.borrow_mut(), saved));
    (r, fds.unwrap_or_default())
}

/// Runs `f` (which deserialises a value) with `fds` available to [`take`].
pub(crate) fn provide<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let saved = INCOMING.with(|i| i.borrow_mut().replace(fds.into_iter().map(Some).collect()));
    let r = f();
    INCOMING.with(|i| *i.borrow_mut() = saved);
    r
}

/// If a [`collect`] is running, duplicates `fd` into it and returns its
/// index; `None` otherwise.
pub(crate) fn push(fd: BorrowedFd<'_>) -> Option<io::Result<u32>> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut()?;
        Some(platform::dup(fd.as_raw_fd()).map(|d| {
            list.push(d);
            (list.len() - 1) as u32
        }))
    })
}

/// Takes the descriptor at `index` of the running [`provide`], once.
pub(crate) fn take(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|i| i.borrow_mut().as_mut()?.get_mut(index as usize)?.take())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn collects_and_provides_in_order() {
        let a = std::fs::File::open("/dev/null").unwrap();
        assert!(push(a.as_fd()).is_none(), "no collector running");
        let ((i, j), fds) = collect(|| {
            let i = push(a.as_fd()).unwrap().unwrap();
            let j = push(a.as_fd()).unwrap().unwrap();
            (i, j)
        });
        assert_eq!((i, j, fds.len()), (0, 1, 2));
        provide(fds, || {
            assert!(take(1).is_some());
            assert!(take(1).is_none(), "taken once");
            assert!(take(5).is_none());
            assert!(take(0).is_some());
        });
        assert!(take(0).is_none(), "nothing provided any more");
    }
}
