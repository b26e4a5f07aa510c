//! Compile-time checks that every public type is `Send`/`Sync` exactly as
//! intended (in the style of tokio's `tests/async_send_sync.rs`).
//!
//! `assert_value!(T: Send & Sync)` fails to compile if `T` is not both;
//! `assert_value!(T: !Send & Sync)` fails to compile if `T` *is* `Send`
//! (the two blanket impls of `AmbiguousIfSend` then overlap for `T`, and
//! naming the item is ambiguous), and so on. A change that makes a guard
//! `Send` — wrong, because the kernel tracks a robust lock's owner per
//! thread — or a handle `!Sync` breaks this file.

#![allow(dead_code, clippy::type_complexity)]

use ipckit::admin::{Creator, Health, Inspection, LockInfo, LockOwner, ObjectInfo, QueueInfo};
use ipckit::collections::{Item, ShareableList, SharedMap};
use ipckit::connection::{Address, Client, Listener};
use ipckit::layout::TypeFingerprint;
use ipckit::layout::header::{Header, HeaderError, ObjectKind};
use ipckit::manager::{
    BarrierProxy, ConditionGuard, ConditionProxy, DictProxy, EventProxy, ListProxy, LockGuard,
    LockProxy, Manager, ManagerBuilder, Named, NamespaceProxy, QueueProxy, RLockGuard, RLockProxy,
    SemaphoreGuard, SemaphoreProxy, ValueProxy,
};
use ipckit::pipe::{Connection, Pipe};
use ipckit::pool::{
    AsCompleted, MapOptions, ProcessPool, ProcessPoolBuilder, ReturnWhen, TaskEvent, TaskHandle,
    TaskState, ThreadPool, ThreadPoolBuilder,
};
use ipckit::process::{Builder, Process, ProcessInfo};
use ipckit::queue::{Joinable, JoinableQueue, Plain, Queue, QueueBuilder};
use ipckit::sync::{
    Barrier, BarrierWaitResult, Condvar, Event, LockError, Mutex, MutexGuard, Semaphore,
    SemaphoreBuilder, SemaphorePermit, WaitTimeoutResult,
};
use ipckit::{Array, CreationMode, Error, ErrorKind, Segment, SegmentBuilder, Value};

fn require_send<T: Send>() {}
fn require_sync<T: Sync>() {}

struct Invalid;

trait AmbiguousIfSend<A> {
    fn some_item() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}

trait AmbiguousIfSync<A> {
    fn some_item() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<Invalid> for T {}

macro_rules! assert_value {
    ($type:ty: Send & Sync) => {
        const _: fn() = || {
            require_send::<$type>();
            require_sync::<$type>();
        };
    };
    ($type:ty: !Send & Sync) => {
        const _: fn() = || {
            <$type as AmbiguousIfSend<_>>::some_item();
            require_sync::<$type>();
        };
    };
    ($type:ty: Send & !Sync) => {
        const _: fn() = || {
            require_send::<$type>();
            <$type as AmbiguousIfSync<_>>::some_item();
        };
    };
    ($type:ty: !Send & !Sync) => {
        const _: fn() = || {
            <$type as AmbiguousIfSend<_>>::some_item();
            <$type as AmbiguousIfSync<_>>::some_item();
        };
    };
}

/// A type that is neither `Send` nor `Sync`, to show that a handle's
/// element type does not leak into its auto traits where it only crosses
/// as encoded bytes.
type NotSendSync = std::rc::Rc<u8>;

// -- segments and objects in shared memory ---------------------------------
assert_value!(Segment: Send & Sync);
assert_value!(SegmentBuilder: Send & Sync);
assert_value!(CreationMode: Send & Sync);
assert_value!(Mutex<u64>: Send & Sync);
assert_value!(Mutex<[u8; 64]>: Send & Sync);
assert_value!(Condvar: Send & Sync);
assert_value!(Semaphore: Send & Sync);
assert_value!(SemaphoreBuilder: Send & Sync);
assert_value!(Event: Send & Sync);
assert_value!(Barrier: Send & Sync);
assert_value!(BarrierWaitResult: Send & Sync);
assert_value!(WaitTimeoutResult: Send & Sync);
assert_value!(Value<[f64; 4]>: Send & Sync);
assert_value!(Array<u8>: Send & Sync);
assert_value!(SharedMap<u64, [u8; 16]>: Send & Sync);
assert_value!(ShareableList: Send & Sync);
assert_value!(Item: Send & Sync);
// Messages cross as encoded bytes: the handle is Send + Sync whatever T is.
assert_value!(Queue<NotSendSync>: Send & Sync);
assert_value!(JoinableQueue<NotSendSync>: Send & Sync);
assert_value!(Queue<String, Plain>: Send & Sync);
assert_value!(QueueBuilder<NotSendSync, Joinable>: Send & Sync);

// Guards: shared by reference, never sent (the kernel tracks robust-lock
// owners per thread, so a lock must be released where it was taken).
assert_value!(MutexGuard<'static, u64>: !Send & Sync);
assert_value!(MutexGuard<'static, [u32]>: !Send & Sync);
assert_value!(LockError<MutexGuard<'static, u64>>: !Send & Sync);
assert_value!(LockError<()>: Send & Sync);
// Permits are recorded per process, so they may move between its threads.
assert_value!(SemaphorePermit<'static>: Send & Sync);

// -- errors, layout --------------------------------------------------------
assert_value!(Error: Send & Sync);
assert_value!(ErrorKind: Send & Sync);
assert_value!(Header: Send & Sync);
assert_value!(HeaderError: Send & Sync);
assert_value!(ObjectKind: Send & Sync);
assert_value!(TypeFingerprint: Send & Sync);

// -- pipes, connections ----------------------------------------------------
assert_value!(Pipe: Send & Sync);
assert_value!(Connection: Send & Sync);
assert_value!(Listener: Send & Sync);
assert_value!(Client: Send & Sync);
assert_value!(Address: Send & Sync);

// -- processes and pools ---------------------------------------------------
assert_value!(Process<Vec<String>>: Send & Sync);
assert_value!(ProcessInfo: Send & Sync);
assert_value!(Builder: Send & Sync);
assert_value!(ProcessPool: Send & Sync);
assert_value!(ProcessPoolBuilder: Send & Sync);
assert_value!(ThreadPool: Send & Sync);
assert_value!(ThreadPoolBuilder: Send & Sync);
assert_value!(TaskHandle<Vec<u8>>: Send & Sync);
assert_value!(TaskState: Send & Sync);
assert_value!(TaskEvent: Send & Sync);
assert_value!(MapOptions: Send & Sync);
assert_value!(ReturnWhen: Send & Sync);
assert_value!(AsCompleted: Send & Sync);

// -- managers --------------------------------------------------------------
assert_value!(Manager: Send & Sync);
assert_value!(ManagerBuilder: Send & Sync);
assert_value!(Named<'static>: Send & Sync);
assert_value!(DictProxy<String, u64>: Send & Sync);
assert_value!(ListProxy<u64>: Send & Sync);
assert_value!(ValueProxy<u64>: Send & Sync);
assert_value!(QueueProxy<NotSendSync>: Send & Sync);
assert_value!(LockProxy: Send & Sync);
assert_value!(RLockProxy: Send & Sync);
assert_value!(SemaphoreProxy: Send & Sync);
assert_value!(EventProxy: Send & Sync);
assert_value!(ConditionProxy: Send & Sync);
assert_value!(BarrierProxy: Send & Sync);
assert_value!(NamespaceProxy: Send & Sync);
assert_value!(LockGuard<'static>: Send & Sync);
assert_value!(RLockGuard<'static>: Send & Sync);
assert_value!(ConditionGuard<'static>: Send & Sync);
assert_value!(SemaphoreGuard<'static>: Send & Sync);

// -- operations --------------------------------------------------------------
assert_value!(ObjectInfo: Send & Sync);
assert_value!(Inspection: Send & Sync);
assert_value!(Health: Send & Sync);
assert_value!(Creator: Send & Sync);
assert_value!(LockOwner: Send & Sync);
assert_value!(LockInfo: Send & Sync);
assert_value!(QueueInfo: Send & Sync);

/// The checks above are made by the compiler; this test only says so in
/// the test run's output.
#[test]
fn send_and_sync_are_checked_at_compile_time() {}
