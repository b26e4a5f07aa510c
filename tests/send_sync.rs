//! Compile-time checks of which public types are `Send`/`Sync`.

use ipckit::sync::{
    Barrier, Condvar, Event, LockError, Mutex, MutexGuard, Semaphore, SemaphorePermit,
};
use ipckit::{Array, Error, Segment, Value};

fn send_sync<T: Send + Sync>() {}
fn sync_only<T: Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    send_sync::<Segment>();
    send_sync::<Mutex<u64>>();
    send_sync::<Condvar>();
    send_sync::<Semaphore>();
    send_sync::<Event>();
    send_sync::<Barrier>();
    send_sync::<Value<[f64; 4]>>();
    send_sync::<Array<u8>>();
    send_sync::<Error>();
    send_sync::<SemaphorePermit<'static>>();
    fn send<T: Send>() {}
    send::<ipckit::process::Process<Vec<String>>>();
    send_sync::<ipckit::process::ProcessInfo>();
    // A guard may be shared by reference but not sent: the kernel tracks
    // robust-lock owners per thread, so it must be dropped where it was taken.
    sync_only::<MutexGuard<'static, u64>>();
    sync_only::<LockError<()>>();
}

/// `MutexGuard` must not be `Send`. This fails to compile if it becomes `Send`:
/// the blanket impl below would then conflict with the one for `MutexGuard`.
#[test]
fn guards_are_not_send() {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
    <MutexGuard<'static, u64> as AmbiguousIfSend<_>>::some_item();
}
