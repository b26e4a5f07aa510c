//! CPython's own tests of the semantics ipckit shares with
//! `multiprocessing` and `concurrent.futures`, ported to Rust and run
//! between processes (issue 17). Each test names the CPython test it ports
//! (`Lib/test/_test_multiprocessing.py`, `Lib/test/test_concurrent_futures/`);
//! where ipckit differs on purpose, the test checks ipckit's behaviour and
//! says why. The README lists them.

mod common;

ipckit::test_support!();

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::ErrorKind;
use ipckit::manager::Manager;
use ipckit::pipe::{Connection, Pipe, wait as wait_conns};
use ipckit::pool::{
    Executor, MapOptions, ProcessPool, ReturnWhen, TaskState, ThreadPool, as_completed, wait,
};
use ipckit::queue::{JoinableQueue, Queue};
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{Array, Value};

const SHORT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(30);

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Every worker of `pool` up and idle, so that completion order is the
/// tasks' own.
fn warm(pool: &ProcessPool, workers: u64) {
    let hs: Vec<_> = (0..workers)
        .map(|_| pool.submit(sleep_ms, 30).unwrap())
        .collect();
    for h in hs {
        h.result().unwrap();
    }
}

fn fail_on(x: u64) -> u64 {
    assert!(x != 5, "refusing {x}");
    x
}

// -- _TestProcess ---------------------------------------------------------------

fn report_identity(name: String) -> (u32, String) {
    let me = ipckit::process::current_process();
    (std::process::id(), format!("{name}:{}", me.name()))
}

/// `_TestProcess.test_process`: a child runs its target with its arguments
/// under its name, and `join` returns after it ends.
#[test]
fn process_test_process() {
    let _t = Ctx::new("cp_process");
    let p = ipckit::process::Process::builder()
        .name("SomeProcess")
        .spawn(report_identity, "args".to_owned())
        .unwrap();
    let pid = p.pid();
    assert_eq!(p.name(), "SomeProcess");
    let (child_pid, seen) = p.join().unwrap();
    assert_eq!(child_pid, pid);
    assert_eq!(seen, "args:SomeProcess");
}

/// `_TestProcess.test_terminate` and `test_kill`: a child blocked in a
/// sleep ends on SIGTERM / SIGKILL, and `join` reports the signal.
#[test]
fn process_test_terminate_and_kill() {
    let _t = Ctx::new("cp_terminate");
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        let p = spawn(sleep_ms, 60_000);
        std::thread::sleep(SHORT);
        assert!(p.is_alive());
        if sig == libc::SIGTERM {
            p.terminate().unwrap();
        } else {
            p.kill().unwrap();
        }
        let t = Instant::now();
        let e = p.join().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
        assert!(e.to_string().contains(name), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

/// `_TestProcess.test_exitcode` (via `test_sys_exit`): an exit code other
/// than 0 is visible; Python's `exitcode`, ipckit's `ProcessDied` error.
#[test]
fn process_test_sys_exit() {
    let _t = Ctx::new("cp_exit");
    let e = spawn(exit_with, 3).join().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
    assert!(e.to_string().contains("exit code 3"), "{e}");
}

/// `_TestProcess.test_many_processes`: many children at once, each
/// joined, none left over.
#[test]
fn process_test_many_processes() {
    let _t = Ctx::new("cp_many");
    let children: Vec<_> = (0..20).map(|i| spawn(square, i)).collect();
    let results: Vec<u64> = children.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(results, (0..20).map(|i| i * i).collect::<Vec<_>>());
}

// -- _TestQueue -------------------------------------------------------------------

fn put_numbers((q, n): (Queue<u32>, u32)) {
    for i in 0..n {
        q.put(&i).unwrap();
    }
}

/// `_TestQueue.test_put` / `test_get`: FIFO order between processes,
/// `get_nowait` on an empty queue raises `Empty` (ipckit: `WouldBlock`),
/// `put_nowait` on a full one `Full`.
#[test]
fn queue_test_put_and_get() {
    let _t = Ctx::new("cp_queue");
    let q = Queue::<u32>::builder(4096)
        .max_items(6)
        .create(&_t.name("q"))
        .unwrap();
    assert!(q.try_get().unwrap_err().is_would_block());
    spawn(put_numbers, (q.clone(), 6)).join().unwrap();
    assert!(q.is_full());
    assert!(q.try_put(&99).unwrap_err().is_would_block());
    let got: Vec<u32> = (0..6).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    assert!(q.is_empty());
}

/// `_TestQueue.test_timeout`: `get(timeout=…)` on an empty queue raises
/// `Empty` after about the timeout (ipckit: a `Timeout` error).
#[test]
fn queue_test_timeout() {
    let _t = Ctx::new("cp_queue_timeout");
    let q = Queue::<u32>::new(4096).unwrap();
    let t = Instant::now();
    let e = q.get_timeout(Duration::from_millis(200)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// `_TestQueue.test_qsize`: the size follows puts and gets.
#[test]
fn queue_test_qsize() {
    let q = Queue::<u32>::new(4096).unwrap();
    assert_eq!(q.len(), 0);
    q.put(&5).unwrap();
    assert_eq!(q.len(), 1);
    q.put(&6).unwrap();
    assert_eq!(q.len(), 2);
    q.get().unwrap();
    assert_eq!(q.len(), 1);
    q.get().unwrap();
    assert_eq!(q.len(), 0);
}

fn worker_task_done(q: JoinableQueue<u32>) -> u32 {
    let mut n = 0;
    while let Ok(v) = q.get() {
        if v == u32::MAX {
            q.task_done().unwrap();
            return n;
        }
        n += v;
        q.task_done().unwrap();
    }
    n
}

/// `_TestQueue.test_task_done`: `join` returns once every item put has
/// been marked done by workers in other processes.
#[test]
fn queue_test_task_done() {
    let _t = Ctx::new("cp_task_done");
    let q = JoinableQueue::<u32>::new(1 << 16).unwrap();
    let workers: Vec<_> = (0..4).map(|_| spawn(worker_task_done, q.clone())).collect();
    for i in 0..10 {
        q.put(&i).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    for _ in 0..4 {
        q.put(&u32::MAX).unwrap();
    }
    let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 45);
}

/// `_TestQueue.test_closed_queue_put_get_exceptions`: after `close`, `put`
/// fails. ipckit differs on purpose for `get`: a closed queue is drained
/// first, then `get` reports `Closed` (Python's `get` raises at once, since
/// its close only concerns the closing process's feeder thread).
#[test]
fn queue_test_closed_queue_put_get_exceptions() {
    let q = Queue::<u32>::new(4096).unwrap();
    q.put(&1).unwrap();
    q.close();
    assert!(q.put(&2).unwrap_err().is_closed());
    assert_eq!(q.get().unwrap(), 1);
    assert!(q.get().unwrap_err().is_closed());
}

// -- _TestLock, _TestSemaphore, _TestEvent, _TestCondition, _TestBarrier ---------

/// `_TestLock.test_lock`: acquire, non-blocking acquire fails while held,
/// release lets it succeed.
#[test]
fn lock_test_lock() {
    let m = Mutex::new(()).unwrap();
    let g = m.lock().unwrap();
    assert!(m.try_lock().is_err());
    drop(g);
    assert!(m.try_lock().is_ok());
}

/// `_TestSemaphore.test_semaphore` and `test_bounded_semaphore`: values go
/// down with acquires and up with releases; a bounded one refuses a
/// release past its initial value.
#[test]
fn semaphore_test_semaphore_and_bounded() {
    let s = Semaphore::new(2).unwrap();
    let a = s.acquire().unwrap();
    assert_eq!(s.value(), 1);
    let b = s.acquire().unwrap();
    assert_eq!(s.value(), 0);
    assert!(s.try_acquire().is_err());
    drop((a, b));
    assert_eq!(s.value(), 2);
    let bounded = Semaphore::bounded(2).unwrap();
    assert!(
        bounded.release().is_err(),
        "a bounded semaphore refuses a release past its max"
    );
}

/// `_TestSemaphore.test_timeout`: acquire with a timeout on an exhausted
/// semaphore gives up after about the timeout.
#[test]
fn semaphore_test_timeout() {
    let s = Semaphore::new(0).unwrap();
    let t = Instant::now();
    assert!(s.acquire_timeout(Duration::from_millis(200)).is_err());
    assert!(t.elapsed() >= Duration::from_millis(190));
}

fn set_later((e, ms): (Event, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    e.set();
}

/// `_TestEvent.test_event`: `wait` with a timeout on a clear event times
/// out; set from another process, `wait` returns; `clear` resets it.
#[test]
fn event_test_event() {
    let _t = Ctx::new("cp_event");
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(e.wait_timeout(SHORT).is_err());
    let setter = spawn(set_later, (e.clone(), 100));
    e.wait_timeout(LONG).unwrap();
    assert!(e.is_set());
    setter.join().unwrap();
    e.clear();
    assert!(!e.is_set());
}

fn notify_after((m, cv, ms): (Mutex<u32>, Condvar, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    *m.lock().unwrap() += 1;
    cv.notify_all();
}

/// `_TestCondition.test_notify` / `test_timeout` / `test_waitfor`: a
/// waiter is woken by a notify from another process; `wait_for` returns
/// once the predicate holds; a wait with a timeout and no notify times out.
#[test]
fn condition_test_notify_timeout_waitfor() {
    let _t = Ctx::new("cp_condition");
    let m = Mutex::new(0u32).unwrap();
    let cv = Condvar::new().unwrap();
    let g = m.lock().unwrap();
    let (g, r) = cv.wait_timeout(g, SHORT).unwrap();
    assert!(r.timed_out());
    drop(g);
    let notifier = spawn(notify_after, (m.clone(), cv.clone(), 100));
    let g = m.lock().unwrap();
    let (g, r) = cv.wait_timeout_while(g, LONG, |n| *n == 0).unwrap();
    assert!(!r.timed_out());
    assert_eq!(*g, 1);
    drop(g);
    notifier.join().unwrap();
}

fn barrier_party(b: Barrier) -> u32 {
    b.wait().unwrap().index()
}

/// `_TestBarrier.test_barrier` / `test_abort` / `test_timeout`: parties in
/// other processes pass together with distinct indices; a wait that times
/// out breaks the barrier for everyone until `reset`.
#[test]
fn barrier_test_barrier_abort_timeout() {
    let _t = Ctx::new("cp_barrier");
    let b = Barrier::new(4).unwrap();
    let parties: Vec<_> = (0..3).map(|_| spawn(barrier_party, b.clone())).collect();
    let mine = b.wait().unwrap().index();
    let mut indices: HashSet<u32> = parties.into_iter().map(|p| p.join().unwrap()).collect();
    indices.insert(mine);
    assert_eq!(indices, (0..4).collect());
    let e = b.wait_timeout(SHORT).unwrap_err();
    assert!(
        e.is_timeout() || e.kind() == ErrorKind::BrokenBarrier,
        "{e}"
    );
    assert!(b.is_broken());
    assert_eq!(
        b.wait_timeout(SHORT).unwrap_err().kind(),
        ErrorKind::BrokenBarrier
    );
    b.reset();
    assert!(!b.is_broken());
}

// -- _TestValue, _TestArray ---------------------------------------------------------

fn add_to((v, a): (Value<f64>, Array<i64>)) {
    v.update(|x| *x += 1.5).unwrap();
    let mut g = a.lock().unwrap();
    for x in g.iter_mut() {
        *x *= 2;
    }
}

/// `_TestValue.test_value` and `_TestArray.test_array`: a child's changes
/// to a shared value and array are seen by the parent.
#[test]
fn value_and_array_test_value_test_array() {
    let _t = Ctx::new("cp_value");
    let v = Value::new(1.25f64).unwrap();
    let a = Array::new(&[1i64, 2, 3, 4]).unwrap();
    spawn(add_to, (v.clone(), a.clone())).join().unwrap();
    assert_eq!(v.get().unwrap(), 2.75);
    assert_eq!(a.to_vec().unwrap(), [2, 4, 6, 8]);
}

// -- _TestConnection, _TestPoll, TestWait ---------------------------------------------

fn echo_twice(c: Connection) {
    for _ in 0..2 {
        let s: String = c.recv().unwrap();
        c.send(&s.to_uppercase()).unwrap();
    }
}

/// `_TestConnection.test_connection`: send/recv both ways, `poll` with and
/// without a timeout, EOF once the peer has gone.
#[test]
fn connection_test_connection() {
    let _t = Ctx::new("cp_connection");
    let (ours, theirs) = Pipe::duplex().unwrap();
    let child = spawn(echo_twice, theirs);
    assert!(!ours.poll(Some(Duration::ZERO)).unwrap());
    ours.send(&"hello").unwrap();
    assert!(ours.poll(Some(LONG)).unwrap());
    assert_eq!(ours.recv::<String>().unwrap(), "HELLO");
    ours.send(&"again").unwrap();
    assert_eq!(ours.recv::<String>().unwrap(), "AGAIN");
    child.join().unwrap();
    assert!(ours.recv::<String>().unwrap_err().is_closed());
}

/// `_TestPoll.test_boundaries` / `test_dont_merge`: messages keep their
/// boundaries, empty ones included.
#[test]
fn poll_test_boundaries_dont_merge() {
    let (a, b) = Pipe::duplex().unwrap();
    for m in [&b""[..], b"x", b"", b"yz"] {
        a.send_bytes(m).unwrap();
    }
    for m in [&b""[..], b"x", b"", b"yz"] {
        assert_eq!(b.recv_bytes().unwrap(), m);
    }
}

fn write_after((c, ms): (Connection, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    c.send(&ms).unwrap();
}

/// `TestWait.test_wait` / `test_wait_timeout`: `connection.wait` returns
/// the ready connections, and an empty list after the timeout.
#[test]
fn wait_test_wait_and_timeout() {
    let _t = Ctx::new("cp_wait");
    let (r1, w1) = Pipe::simplex().unwrap();
    let (r2, w2) = Pipe::simplex().unwrap();
    assert!(wait_conns(&[&r1, &r2], Some(SHORT)).unwrap().is_empty());
    let child = spawn(write_after, (w2, 50));
    let ready = wait_conns(&[&r1, &r2], Some(LONG)).unwrap();
    assert_eq!(ready, [1]);
    assert_eq!(r2.recv::<u64>().unwrap(), 50);
    child.join().unwrap();
    drop(w1);
}

// -- _TestContainers ----------------------------------------------------------------

/// `_TestContainers.test_list`, `test_dict` and `test_namespace`: a
/// manager's list, dict and namespace hold what clients put there.
#[test]
fn containers_test_list_dict_namespace() {
    let _t = Ctx::new("cp_containers");
    let m = Manager::start().unwrap();
    let l = m.list::<u32>().unwrap();
    l.extend(&[0, 1, 2]).unwrap();
    l.push(&3).unwrap();
    assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 3]);
    let d = m.dict::<String, u32>().unwrap();
    d.insert(&"a".to_owned(), &1).unwrap();
    d.insert(&"b".to_owned(), &2).unwrap();
    assert_eq!(d.get(&"a".to_owned()).unwrap(), Some(1));
    assert_eq!(d.len().unwrap(), 2);
    let ns = m.namespace().unwrap();
    ns.set("name", &"Bob".to_owned()).unwrap();
    assert_eq!(ns.get::<String>("name").unwrap(), Some("Bob".to_owned()));
    drop((l, d, ns));
    m.shutdown().unwrap();
}

// -- _TestPool, _TestPoolWorkerLifetime --------------------------------------------------

/// `_TestPool.test_apply`, `test_map`, `test_map_chunksize`, `test_imap`,
/// `test_imap_unordered`, `test_empty_iterable`.
#[test]
fn pool_test_apply_map_imap() {
    let _t = Ctx::new("cp_pool");
    let pool = ProcessPool::new(2).unwrap();
    assert_eq!(pool.apply(square, 7).unwrap(), 49);
    let squares: Vec<u64> = pool.map(square, 0..10).map(|r| r.unwrap()).collect();
    assert_eq!(squares, (0..10).map(|i| i * i).collect::<Vec<_>>());
    let chunked: Vec<u64> = pool
        .map_with(
            square,
            0..100,
            MapOptions {
                chunksize: 7,
                buffersize: None,
            },
        )
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(chunked.len(), 100);
    let mut unordered: Vec<u64> = pool
        .map_unordered(square, 0..10)
        .map(|r| r.unwrap())
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, squares);
    assert_eq!(pool.map(square, std::iter::empty()).count(), 0);
}

/// `_TestPool.test_map_unplicklable` / the exception cases: a failing item
/// fails only its own result (Python's `map` raises the first error and
/// loses the rest; ipckit yields each result, so the others are kept).
#[test]
fn pool_test_map_with_a_failing_item() {
    let _t = Ctx::new("cp_pool_fail");
    let pool = ProcessPool::new(2).unwrap();
    let results: Vec<_> = pool.map(fail_on, 0..8).collect();
    assert!(results[5].as_ref().unwrap_err().is_panicked());
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 7);
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime`: with
/// `maxtasksperchild`, workers are replaced and all tasks complete.
#[test]
fn pool_test_pool_worker_lifetime() {
    let _t = Ctx::new("cp_lifetime");
    let pool = ProcessPool::builder()
        .workers(2)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let before: HashSet<u32> = pool.worker_pids().into_iter().collect();
    let results: Vec<u64> = pool.map(square, 0..30).map(|r| r.unwrap()).collect();
    assert_eq!(results.len(), 30);
    let after: HashSet<u32> = pool.worker_pids().into_iter().collect();
    assert!(before.is_disjoint(&after), "workers were recycled");
}

// -- test_concurrent_futures ----------------------------------------------------------

/// `test_future.FutureTests.test_cancel` / `test_done` / `test_running` /
/// `test_result_with_timeout`: a pending future can be cancelled, a
/// running one cannot; a result wait with a timeout raises `TimeoutError`.
#[test]
fn futures_test_cancel_done_running_result_timeout() {
    let _t = Ctx::new("cp_futures");
    let pool = ProcessPool::new(1).unwrap();
    let mut running = pool.submit(sleep_ms, 400).unwrap();
    let pending = pool.submit(square, 3).unwrap();
    let pending2 = pool.submit(square, 4).unwrap();
    assert!(common::eventually(LONG, || running.running()));
    assert!(!running.cancel(), "a running future is not cancelled");
    assert!(pending2.cancel());
    assert!(pending2.cancelled() && pending2.done());
    assert!(
        running
            .result_timeout(Duration::from_millis(10))
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(running.result_timeout(LONG).unwrap(), 400);
    assert_eq!(pending.result().unwrap(), 9);
}

/// `test_future.FutureTests.test_done_callback_with_result` / `_with_cancel`
/// / `_already_successful`: callbacks run once, with the outcome, also when
/// added after the end.
#[test]
fn futures_test_done_callbacks() {
    use std::sync::{Arc, Mutex as StdMutex};
    let pool = ThreadPool::new(1).unwrap();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let h = pool.submit(square, 5).unwrap();
    let s = seen.clone();
    h.add_done_callback(move |e| s.lock().unwrap().push(e.state));
    let _ = h.error();
    // As in CPython (`set_result` notifies waiters, then runs callbacks), a
    // waiter can return before the completing thread ran the callbacks.
    assert!(common::eventually(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == 1));
    let s = seen.clone();
    h.add_done_callback(move |e| s.lock().unwrap().push(e.state));
    assert_eq!(
        *seen.lock().unwrap(),
        [TaskState::Finished, TaskState::Finished]
    );
}

/// `test_wait.WaitTests.test_first_completed`, `test_first_exception`,
/// `test_all_completed`, `test_timeout`.
#[test]
fn futures_test_wait_modes() {
    let _t = Ctx::new("cp_wait_modes");
    let pool = ProcessPool::new(3).unwrap();
    warm(&pool, 3);
    let fast = pool.submit(sleep_ms, 0).unwrap();
    let slow = pool.submit(sleep_ms, 1500).unwrap();
    let (done, not_done) = wait(&[&fast, &slow], Some(LONG), ReturnWhen::FirstCompleted);
    assert_eq!((done, not_done), (vec![0], vec![1]));
    let failing = pool.submit(fail_on, 5).unwrap();
    let (done, _) = wait(&[&failing, &slow], Some(LONG), ReturnWhen::FirstException);
    assert_eq!(done, [0]);
    let (done, not_done) = wait(
        &[&slow],
        Some(Duration::from_millis(10)),
        ReturnWhen::AllCompleted,
    );
    assert!(done.is_empty() && not_done == [0], "timeout");
    let (done, not_done) = wait(&[&fast, &slow], Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (2, 0));
}

/// `test_as_completed.AsCompletedTests.test_no_timeout` and
/// `test_future_times_out`: futures come out as they finish; past the
/// timeout, a `TimeoutError` (ipckit: one `Timeout` error, then the end).
#[test]
fn futures_test_as_completed() {
    let _t = Ctx::new("cp_as_completed");
    let pool = ProcessPool::new(2).unwrap();
    warm(&pool, 2);
    let hs = vec![
        pool.submit(sleep_ms, 300).unwrap(),
        pool.submit(sleep_ms, 0).unwrap(),
    ];
    let order: Vec<usize> = as_completed(&hs, Some(LONG)).map(|r| r.unwrap()).collect();
    assert_eq!(order, [1, 0]);
    let slow = vec![pool.submit(sleep_ms, 2000).unwrap()];
    let mut it = as_completed(&slow, Some(Duration::from_millis(50)));
    assert!(it.next().unwrap().unwrap_err().is_timeout());
    assert!(it.next().is_none());
}

fn die(_: u64) -> u64 {
    // SAFETY: raising SIGKILL against ourselves.
    unsafe { libc::raise(libc::SIGKILL) };
    0
}

/// `test_process_pool.ProcessPoolExecutorTest.test_killed_child`: Python
/// breaks the whole executor (`BrokenProcessPool`) when a worker dies.
/// ipckit differs on purpose: only that task fails (`ProcessDied`), the
/// worker is replaced and the pool goes on.
#[test]
fn futures_test_killed_child_differs_on_purpose() {
    let _t = Ctx::new("cp_killed_child");
    let pool = ProcessPool::new(2).unwrap();
    let e = pool.submit(die, 0).unwrap().result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
    assert_eq!(pool.apply(square, 6).unwrap(), 36);
}

/// `test_shutdown.ExecutorShutdownTest.test_run_after_shutdown` and
/// `test_cancel_futures`: submitting after shutdown raises; shutdown with
/// `cancel_futures=True` cancels what has not started.
#[test]
fn futures_test_shutdown() {
    let _t = Ctx::new("cp_shutdown");
    let pool = ProcessPool::new(1).unwrap();
    let running = pool.submit(sleep_ms, 300).unwrap();
    let queued: Vec<_> = (0..5).map(|i| pool.submit(square, i).unwrap()).collect();
    assert!(common::eventually(LONG, || running.running()));
    pool.shutdown(true, true);
    assert_eq!(running.result().unwrap(), 300);
    assert!(
        queued.iter().all(|h| h.cancelled()),
        "pending futures cancelled"
    );
    assert_eq!(
        pool.submit(square, 1).unwrap_err().kind(),
        ErrorKind::Closed
    );
}
