//! Every public `*_timeout(Duration)` accepts `Duration::MAX`.
//!
//! `Instant::now() + Duration::MAX` overflows (and panics); a timeout too
//! long to make a deadline of must mean "wait forever" instead. Each call
//! below is made where the operation can succeed at once (an unlocked
//! mutex, a set event, a non-empty queue, a finished task, …), so it returns
//! at once instead of blocking or panicking.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Ctx;
use ipckit::connection::{Client, Listener};
use ipckit::manager::Manager;
use ipckit::pipe::Pipe;
use ipckit::pool::{Executor, ProcessPool, ReturnWhen, ThreadPool, as_completed, wait};
use ipckit::process::Process;
use ipckit::queue::{JoinableQueue, Queue};
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{Array, Value};

ipckit::test_support!();

const FOREVER: Duration = Duration::MAX;

fn square(x: u64) -> u64 {
    x * x
}

/// Calls `notify` every millisecond on another thread while `wait` runs,
/// so a wait for a notification returns as soon as it has started.
fn with_notifier<R>(notify: impl Fn() + Sync, wait: impl FnOnce() -> R) -> R {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                notify();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = wait();
        done.store(true, Ordering::Relaxed);
        r
    })
}

#[test]
fn sync_objects_accept_an_unbounded_timeout() {
    let _t = Ctx::new("max_sync");
    let m = Mutex::new(1u32).unwrap();
    assert_eq!(*m.lock_timeout(FOREVER).unwrap(), 1);

    let v = Value::new(2u32).unwrap();
    assert_eq!(*v.lock_timeout(FOREVER).unwrap(), 2);
    let a = Array::new(&[3u8, 4]).unwrap();
    assert_eq!(a.lock_timeout(FOREVER).unwrap()[1], 4);

    let s = Semaphore::new(1).unwrap();
    drop(s.acquire_timeout(FOREVER).unwrap());

    let e = Event::new().unwrap();
    e.set();
    e.wait_timeout(FOREVER).unwrap();

    let b = Barrier::new(1).unwrap();
    b.wait_timeout(FOREVER).unwrap();

    let cv = Condvar::new().unwrap();
    let g = v.lock().unwrap();
    let (g, r) = cv.wait_timeout_while(g, FOREVER, |x| *x != 2).unwrap();
    assert!(!r.timed_out());
    let (g, r) = with_notifier(|| cv.notify_all(), || cv.wait_timeout(g, FOREVER).unwrap());
    assert!(!r.timed_out());
    assert_eq!(*g, 2);
}

#[test]
fn queues_and_pipes_accept_an_unbounded_timeout() {
    let _t = Ctx::new("max_queue");
    let q = Queue::<u32>::new(4096).unwrap();
    q.put_timeout(&7, FOREVER).unwrap();
    assert_eq!(q.get_timeout(FOREVER).unwrap(), 7);
    q.put_bytes_timeout(b"raw", FOREVER).unwrap();
    let mut buf = Vec::new();
    q.get_bytes_into_timeout(&mut buf, FOREVER).unwrap();
    assert_eq!(buf, b"raw");

    let j = JoinableQueue::<u32>::new(4096).unwrap();
    j.put(&1).unwrap();
    assert_eq!(j.get().unwrap(), 1);
    j.task_done().unwrap();
    j.join_timeout(FOREVER).unwrap();

    let (left, right) = Pipe::duplex().unwrap();
    left.send(&5u32).unwrap();
    assert_eq!(right.recv_timeout::<u32>(FOREVER).unwrap(), 5);
    left.send_bytes(b"bytes").unwrap();
    let mut out = Vec::new();
    right.recv_bytes_into_timeout(&mut out, FOREVER).unwrap();
    assert_eq!(out, b"bytes");
}

#[test]
fn connections_accept_an_unbounded_handshake_timeout() {
    let t = Ctx::new("max_connection");
    let path = std::env::temp_dir().join(format!("{}.sock", t.name("listener")));
    let key = b"an unbounded key";
    let mut listener = Listener::bind(path.clone(), Some(key)).unwrap();
    listener.set_handshake_timeout(FOREVER);
    std::thread::scope(|s| {
        let client = s.spawn(|| Client::connect_timeout(path.clone(), Some(key), FOREVER));
        let server_side = listener.accept().unwrap();
        let client_side = client.join().unwrap().unwrap();
        client_side.send(&1u8).unwrap();
        assert_eq!(server_side.recv::<u8>().unwrap(), 1);
    });
}

#[test]
fn processes_and_tasks_accept_an_unbounded_timeout() {
    let _t = Ctx::new("max_tasks");
    let mut p = Process::spawn(square, 3).unwrap();
    while p.is_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.join_timeout(FOREVER).unwrap(), 9);

    let pool = ThreadPool::new(1).unwrap();
    let mut h = pool.submit(square, 4).unwrap();
    assert_eq!(h.result_timeout(FOREVER).unwrap(), 16);
    let h = pool.submit(square, 5).unwrap();
    assert!(h.error_timeout(FOREVER).unwrap().is_none());
    let (done, not_done) = wait(&[&h], Some(FOREVER), ReturnWhen::AllCompleted);
    assert_eq!((done, not_done), (vec![0], vec![]));
    let order: Vec<usize> = as_completed(&[&h], Some(FOREVER))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(order, [0]);
    // A task timeout too long to enforce is not enforced.
    let h = pool.submit_with_timeout(square, 6, FOREVER).unwrap();
    assert_eq!(h.result().unwrap(), 36);

    let pool = ProcessPool::new(1).unwrap();
    let h = pool.submit_with_timeout(square, 7, FOREVER).unwrap();
    assert_eq!(h.result().unwrap(), 49);
}

#[test]
fn manager_proxies_accept_an_unbounded_timeout() {
    let _t = Ctx::new("max_manager");
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>(0).unwrap();
    q.put_timeout(&8, FOREVER).unwrap();
    assert_eq!(q.get_timeout(FOREVER).unwrap(), 8);

    drop(m.lock().unwrap().acquire_timeout(FOREVER).unwrap());
    drop(m.rlock().unwrap().acquire_timeout(FOREVER).unwrap());
    drop(m.semaphore(1).unwrap().acquire_timeout(FOREVER).unwrap());

    let e = m.event().unwrap();
    e.set().unwrap();
    e.wait_timeout(FOREVER).unwrap();

    assert_eq!(m.barrier(1).unwrap().wait_timeout(FOREVER).unwrap(), 0);

    let c = m.condition().unwrap();
    let notifier = c.clone();
    let g = c.acquire_timeout(FOREVER).unwrap();
    assert!(g.wait_for(|| Ok(true), Some(FOREVER)).unwrap());
    let notified = with_notifier(
        || {
            // Bounded: once the waiter is woken it holds the lock again,
            // and a notifier blocked in `acquire` would wait for it forever
            // (it is released only after this scope ends).
            if let Ok(g) = notifier.acquire_timeout(Duration::from_millis(20)) {
                g.notify_all().unwrap();
            }
        },
        || g.wait_timeout(FOREVER).unwrap(),
    );
    assert!(notified, "woken by a notification, not a timeout");
    drop(g);
    m.shutdown().unwrap();
}
