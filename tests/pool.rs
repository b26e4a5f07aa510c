//! Process and thread pools: futures, map, wait, cancellation, crashes.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Ctx, Picky};
use ipckit::pool::{
    Executor, MapOptions, ProcessPool, ReturnWhen, TaskState, ThreadPool, as_completed, wait,
};
use ipckit::{ErrorKind, Value};

ipckit::test_support!();

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail_if(x: u64) -> u64 {
    if x == 3 {
        panic!("task {x} failed on purpose");
    }
    x
}

fn pid(_: u32) -> u32 {
    std::process::id()
}

/// Runs a check against a process pool and a thread pool of `n` workers.
fn with_pools(n: usize, check: impl Fn(&str, &dyn PoolRef)) {
    let p = ProcessPool::new(n).unwrap();
    check("process", &p);
    drop(p);
    let t = ThreadPool::new(n).unwrap();
    check("thread", &t);
}

/// The `Executor` methods the shared checks use, as an object-safe trait.
trait PoolRef {
    fn submit_u(&self, f: fn(u64) -> u64, a: u64) -> ipckit::pool::TaskHandle<u64>;
    fn map_u(&self, f: fn(u64) -> u64, n: u64, chunk: usize) -> Vec<ipckit::Result<u64>>;
    fn unordered_u(&self, f: fn(u64) -> u64, n: u64) -> Vec<u64>;
    fn apply_u(&self, f: fn(u64) -> u64, a: u64) -> ipckit::Result<u64>;
}

impl<P: Executor> PoolRef for P {
    fn submit_u(&self, f: fn(u64) -> u64, a: u64) -> ipckit::pool::TaskHandle<u64> {
        self.submit(f, a).unwrap()
    }
    fn map_u(&self, f: fn(u64) -> u64, n: u64, chunk: usize) -> Vec<ipckit::Result<u64>> {
        self.map_with(
            f,
            0..n,
            MapOptions {
                chunksize: chunk,
                buffersize: None,
            },
        )
        .collect()
    }
    fn unordered_u(&self, f: fn(u64) -> u64, n: u64) -> Vec<u64> {
        self.map_unordered(f, 0..n).map(|r| r.unwrap()).collect()
    }
    fn apply_u(&self, f: fn(u64) -> u64, a: u64) -> ipckit::Result<u64> {
        self.apply(f, a)
    }
}

#[test]
fn submit_map_apply_in_order_on_both_pools() {
    let _t = Ctx::new("pool_basic");
    with_pools(3, |kind, pool| {
        assert_eq!(pool.submit_u(square, 12).result().unwrap(), 144, "{kind}");
        assert_eq!(pool.apply_u(square, 5).unwrap(), 25);
        let out: Vec<u64> = pool
            .map_u(square, 200, 1)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            out,
            (0..200).map(|x| x * x).collect::<Vec<_>>(),
            "{kind}: map order"
        );
        let out: Vec<u64> = pool
            .map_u(square, 1000, 37)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            out,
            (0..1000).map(|x| x * x).collect::<Vec<_>>(),
            "{kind}: chunked map order"
        );
        let mut un = pool.unordered_u(square, 100);
        un.sort();
        assert_eq!(
            un,
            (0..100).map(|x| x * x).collect::<Vec<_>>(),
            "{kind}: unordered"
        );
        // A failing item fails only its own result (or its chunk's).
        let r = pool.map_u(fail_if, 6, 1);
        let e = r[3].as_ref().unwrap_err();
        assert!(e.is_panicked(), "{kind}");
        // The error names the input, not a pool-wide task number.
        assert!(e.to_string().starts_with("map input 3: "), "{kind}: {e}");
        assert_eq!(*r[4].as_ref().unwrap(), 4);
    });
}

#[test]
fn a_panic_comes_back_with_its_message() {
    let _t = Ctx::new("pool_panic");
    with_pools(2, |kind, pool| {
        let e = pool.submit_u(fail_if, 3).result().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked, "{kind}: {e}");
        assert!(
            e.to_string().contains("task 3 failed on purpose"),
            "{kind}: {e}"
        );
        // Both kinds name where it panicked, the same way.
        assert!(e.to_string().contains("tests/pool.rs:"), "{kind}: {e}");
        assert!(e.to_string().starts_with("task "), "{kind}: {e}");
        // The pool goes on.
        assert_eq!(pool.submit_u(square, 3).result().unwrap(), 9);
    });
}

#[test]
fn ten_thousand_tiny_tasks_complete() {
    let _t = Ctx::with_limit("pool_10k", Duration::from_secs(300));
    with_pools(2, |kind, pool| {
        let start = Instant::now();
        let sum: u64 = pool
            .map_u(square, 10_000, 1)
            .into_iter()
            .map(|r| r.unwrap())
            .sum();
        assert_eq!(sum, (0..10_000u64).map(|x| x * x).sum::<u64>());
        eprintln!("{kind}: 10 000 tasks in {:?}", start.elapsed());
    });
}

#[test]
fn as_completed_yields_in_completion_order() {
    let _t = Ctx::new("pool_as_completed");
    with_pools(3, |kind, pool| {
        let hs = [
            pool.submit_u(sleep_ms, 300),
            pool.submit_u(sleep_ms, 20),
            pool.submit_u(sleep_ms, 150),
        ];
        let order: Vec<usize> = as_completed(&hs, Some(Duration::from_secs(30)))
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(order, [1, 2, 0], "{kind}");
        let hs = [pool.submit_u(sleep_ms, 500)];
        let mut it = as_completed(&hs, Some(Duration::from_millis(20)));
        assert!(it.next().unwrap().unwrap_err().is_timeout());
        assert!(it.next().is_none());
    });
}

#[test]
fn wait_modes() {
    let _t = Ctx::new("pool_wait");
    with_pools(3, |kind, pool| {
        let hs = [
            pool.submit_u(sleep_ms, 400),
            pool.submit_u(sleep_ms, 10),
            pool.submit_u(sleep_ms, 400),
        ];
        let (done, not_done) = wait(
            &hs,
            Some(Duration::from_secs(30)),
            ReturnWhen::FirstCompleted,
        );
        assert_eq!(done, [1], "{kind}");
        assert_eq!(not_done, [0, 2]);
        let (done, not_done) = wait(&hs, Some(Duration::from_secs(30)), ReturnWhen::AllCompleted);
        assert_eq!((done.len(), not_done.len()), (3, 0));

        let hs = [
            pool.submit_u(sleep_ms, 600),
            pool.submit_u(fail_if, 3),
            pool.submit_u(sleep_ms, 600),
        ];
        let (done, not_done) = wait(
            &hs,
            Some(Duration::from_secs(30)),
            ReturnWhen::FirstException,
        );
        assert_eq!(done, [1], "{kind}");
        assert_eq!(not_done.len(), 2);
        let start = Instant::now();
        let hs2 = [pool.submit_u(sleep_ms, 500)];
        let (done, _) = wait(
            &hs2,
            Some(Duration::from_millis(30)),
            ReturnWhen::AllCompleted,
        );
        assert!(done.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(30));
    });
}

#[test]
fn cancel_callbacks_and_result_timeouts() {
    let _t = Ctx::new("pool_cancel");
    with_pools(1, |kind, pool| {
        let busy = pool.submit_u(sleep_ms, 300);
        let queued = pool.submit_u(square, 2);
        while !busy.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        queued.add_done_callback(move |e| {
            assert_eq!(e.state, TaskState::Cancelled);
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(queued.cancel(), "{kind}");
        assert!(queued.cancelled());
        assert!(!queued.cancel(), "only once");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(queued.error().unwrap().kind(), ErrorKind::Cancelled);
        assert!(
            !busy.cancel(),
            "{kind}: a running task is not cancelled by cancel()"
        );
        let mut busy = busy;
        let start = Instant::now();
        assert!(
            busy.result_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(busy.result_timeout(Duration::from_secs(30)).unwrap(), 300);
        let calls2 = Arc::new(AtomicUsize::new(0));
        let c = calls2.clone();
        busy.add_done_callback(move |e| {
            assert_eq!(e.state, TaskState::Finished);
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            calls2.load(Ordering::SeqCst),
            1,
            "runs at once when already done"
        );
    });
}

#[test]
fn task_handles_are_futures() {
    let _t = Ctx::new("pool_future");
    with_pools(2, |_, pool| {
        let h = pool.submit_u(sleep_ms, 30);
        assert_eq!(common::block_on(h).unwrap(), 30);
        let hs: Vec<_> = (0..5).map(|i| pool.submit_u(square, i)).collect();
        let total: u64 = common::block_on(async {
            let mut t = 0;
            for h in hs {
                t += h.await.unwrap();
            }
            t
        });
        assert_eq!(total, 30);
    });
}

// ---------------------------------------------------------------------------
// Processes only: crashes, timeouts, recycling, initializers
// ---------------------------------------------------------------------------

fn abort_now(_: u64) -> u64 {
    std::process::abort()
}

#[test]
fn a_worker_killed_mid_task_fails_only_that_task() {
    let _t = Ctx::new("pool_sigkill");
    let pool = ProcessPool::new(2).unwrap();
    let victim = pool.submit(sleep_ms, 30_000).unwrap();
    let others: Vec<_> = (0..20).map(|i| pool.submit(square, i).unwrap()).collect();
    // Wait until the long task runs, then find and kill its worker.
    let start = Instant::now();
    while !victim.running() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let before: HashSet<u32> = pool.worker_pids().into_iter().collect();
    // The worker running the long task is the one whose pid is not in the
    // results of the short tasks (they ran on the other worker).
    let short_pids: HashSet<u32> = (0..20).map(|_| pool.apply(pid, 0).unwrap()).collect();
    let target = *before
        .difference(&short_pids)
        .next()
        .expect("the busy worker");
    // SAFETY: kill(2) on a worker process we own.
    unsafe { libc::kill(target as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let e = victim.result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
    assert!(e.to_string().contains("SIGKILL"), "{e}");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        killed.elapsed()
    );
    for (i, h) in others.into_iter().enumerate() {
        assert_eq!(h.result().unwrap(), (i * i) as u64);
    }
    // A replacement took its place and the pool goes on.
    assert_eq!(pool.worker_pids().len(), 2);
    assert!(!pool.worker_pids().contains(&target));
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    // A task that aborts its worker fails the same way.
    let e = pool.submit(abort_now, 0).unwrap().result().unwrap_err();
    assert!(e.to_string().contains("SIGABRT"), "{e}");
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
}

#[test]
fn timeouts_and_cancel_running_kill_and_replace_the_worker() {
    let _t = Ctx::new("pool_timeout");
    let pool = ProcessPool::new(1).unwrap();
    let start = Instant::now();
    let e = pool
        .submit_with_timeout(sleep_ms, 30_000, Duration::from_millis(100))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(pool.apply(square, 7).unwrap(), 49);

    let long = pool.submit(sleep_ms, 30_000).unwrap();
    while !long.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(long.cancel_running());
    assert!(
        long.cancelled(),
        "cancelled as soon as cancel_running returns"
    );
    assert!(
        !long.cancel_running(),
        "a second cancel has nothing to stop"
    );
    let e = long.result().unwrap_err();
    assert!(e.is_cancelled(), "{e}");
    assert_eq!(pool.apply(square, 8).unwrap(), 64);
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let _t = Ctx::new("pool_recycle");
    let pool = ProcessPool::builder()
        .workers(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..9).map(|_| pool.apply(pid, 0).unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3]);
}

fn count_init(counter: Value<u32>) {
    counter.update(|c| *c += 1).unwrap();
}

fn bad_init(_: ()) {
    panic!("initializer refuses");
}

#[test]
fn the_initializer_runs_once_per_worker() {
    let _t = Ctx::new("pool_init");
    let counter = Value::new(0u32).unwrap();
    let pool = ProcessPool::builder()
        .workers(3)
        .initializer(count_init, counter.clone())
        .build()
        .unwrap();
    let sum: u64 = pool.map(square, 0..60).map(|r| r.unwrap()).sum();
    assert_eq!(sum, (0..60u64).map(|x| x * x).sum::<u64>());
    pool.shutdown(true, false);
    assert_eq!(counter.get().unwrap(), 3);

    let broken = ProcessPool::builder()
        .workers(2)
        .initializer(bad_init, ())
        .build()
        .unwrap();
    let e = broken
        .submit(square, 2)
        .and_then(|h| h.result())
        .unwrap_err();
    assert!(e.to_string().contains("initializer"), "{e}");
    // Tasks fail with the kind of the initializer's failure.
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert!(e.to_string().contains("initializer refuses"), "{e}");

    // An initializer that cannot even decode its argument: a codec error.
    let broken = ProcessPool::builder()
        .workers(1)
        .initializer(picky_init, Picky(13))
        .build()
        .unwrap();
    let e = broken
        .submit(square, 2)
        .and_then(|h| h.result())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
    assert!(e.to_string().contains("Picky"), "{e}");
}

fn picky_init(_: Picky) {}

fn picky_id(p: Picky) -> u32 {
    p.0
}

fn fail_with_kind(timeout: bool) -> ipckit::Result<u32> {
    let kind = if timeout {
        ErrorKind::Timeout
    } else {
        ErrorKind::NotFound
    };
    Err(ipckit::Error::new(kind, "failed on purpose"))
}

#[test]
fn a_workers_failure_comes_back_with_its_kind() {
    let _t = Ctx::new("pool_error_kind");
    let pool = ProcessPool::new(1).unwrap();
    // The task's own error travels as its value, kind included.
    for (timeout, kind) in [(true, ErrorKind::Timeout), (false, ErrorKind::NotFound)] {
        let r = pool
            .submit(fail_with_kind, timeout)
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), kind);
    }
    // A task whose argument does not decode in the worker.
    let e = pool
        .submit(picky_id, Picky(13))
        .unwrap()
        .result()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
    assert!(e.to_string().contains("could not run in worker"), "{e}");
    assert!(e.to_string().contains("Picky"), "{e}");
    // The worker goes on.
    assert_eq!(
        pool.submit(picky_id, Picky(12)).unwrap().result().unwrap(),
        12
    );
}

#[test]
fn shutdown_terminate_and_kill() {
    let _t = Ctx::new("pool_shutdown");
    let pool = ProcessPool::new(1).unwrap();
    let running = pool.submit(sleep_ms, 200).unwrap();
    let pending = pool.submit(square, 3).unwrap();
    pool.shutdown(false, true);
    assert!(pending.cancelled());
    assert!(pool.submit(square, 1).unwrap_err().is_closed());
    assert_eq!(running.result().unwrap(), 200);
    pool.shutdown(true, false);

    let pool = ProcessPool::new(2).unwrap();
    let a = pool.submit(sleep_ms, 30_000).unwrap();
    let b = pool.submit(sleep_ms, 30_000).unwrap();
    let c = pool.submit(square, 1).unwrap();
    while !(a.running() && b.running()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool.kill_workers();
    assert!(a.result().unwrap_err().to_string().contains("SIGKILL"));
    assert!(b.result().unwrap_err().is_process_died());
    assert!(c.cancelled());
    assert!(pool.submit(square, 1).is_err());
}

// ---------------------------------------------------------------------------
// Threads only
// ---------------------------------------------------------------------------

#[test]
fn thread_pool_timeouts_and_recycling() {
    let pool = ThreadPool::builder()
        .workers(1)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let e = pool
        .submit_with_timeout(sleep_ms, 300, Duration::from_millis(30))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let names: Vec<u64> = (0..6).map(|i| pool.apply(square, i).unwrap()).collect();
    assert_eq!(names, [0, 1, 4, 9, 16, 25]);
    pool.shutdown(true, false);
    assert!(pool.submit(square, 1).is_err());
}

fn count_run(v: Value<u64>) -> u64 {
    v.update(|n| {
        *n += 1;
        *n
    })
    .unwrap()
}

/// A task sent ahead to a busy worker (behind its running task) is not
/// lost and not run twice when that worker dies: it runs once, elsewhere.
/// And one sent ahead can still be cancelled until it starts.
#[test]
fn a_task_sent_ahead_runs_once_when_its_worker_dies() {
    let _t = Ctx::new("pool_ahead");
    let pool = ProcessPool::new(1).unwrap();
    let runs = Value::new(0u64).unwrap();
    for _ in 0..5 {
        let busy = pool.submit(sleep_ms, 30_000).unwrap();
        let ahead = pool.submit(count_run, runs.clone()).unwrap();
        let cancelled = pool.submit(square, 7).unwrap();
        while !busy.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cancelled.cancel(), "a pending task is cancellable");
        let before = runs.get().unwrap();
        assert!(busy.cancel_running());
        assert!(busy.result().unwrap_err().is_cancelled());
        let n = ahead.result().unwrap();
        assert_eq!(n, before + 1);
        assert_eq!(runs.get().unwrap(), before + 1, "run exactly once");
        assert!(cancelled.cancelled());
    }
    // Many tasks in flight: every one answered once, in order.
    let n = 2_000u64;
    let got: Vec<u64> = pool.map(square, 0..n).map(|r| r.unwrap()).collect();
    assert_eq!(got, (0..n).map(|x| x * x).collect::<Vec<_>>());
}

/// Several tasks sent ahead to one worker (up to four ride behind its
/// running task): when it dies, each one it had not started runs exactly
/// once elsewhere, and one cancelled while sent ahead never runs.
#[test]
fn tasks_sent_ahead_run_once_each_when_their_worker_dies() {
    let _t = Ctx::new("pool_ahead_many");
    let pool = ProcessPool::new(1).unwrap();
    let runs = Value::new(0u64).unwrap();
    for _ in 0..3 {
        let busy = pool.submit(sleep_ms, 30_000).unwrap();
        let ahead: Vec<_> = (0..6)
            .map(|_| pool.submit(count_run, runs.clone()).unwrap())
            .collect();
        while !busy.running() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.stats().pending, 6, "sent ahead or pending");
        assert!(ahead[1].cancel(), "a task sent ahead is cancellable");
        let before = runs.get().unwrap();
        assert!(busy.cancel_running());
        assert!(busy.result().unwrap_err().is_cancelled());
        let mut seen = Vec::new();
        for (i, h) in ahead.into_iter().enumerate() {
            if i == 1 {
                assert!(h.result().unwrap_err().is_cancelled());
                continue;
            }
            seen.push(h.result().unwrap());
        }
        // Each ran once, in submission order (the values are the counter
        // after each increment).
        assert_eq!(seen, (before + 1..=before + 5).collect::<Vec<_>>());
        assert_eq!(runs.get().unwrap(), before + 5, "run exactly once each");
    }
}

fn wait_then_pid(e: ipckit::sync::Event) -> u32 {
    e.wait();
    std::process::id()
}

/// Tasks sent ahead to a worker stuck on a long task do not wait for it:
/// the other worker, once idle, takes them back and runs them.
#[test]
fn an_idle_worker_takes_tasks_sent_ahead_to_a_busy_one() {
    let _t = Ctx::new("pool_steal");
    let pool = ProcessPool::new(2).unwrap();
    // Both workers up before the test starts.
    let warm: Vec<_> = (0..2).map(|_| pool.submit(sleep_ms, 50).unwrap()).collect();
    for h in warm {
        h.result().unwrap();
    }
    let release = ipckit::sync::Event::new().unwrap();
    let slow = pool.submit(wait_then_pid, release.clone()).unwrap();
    while !slow.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Dealt out one by one: half of them are sent ahead behind `slow`.
    let quick: Vec<_> = (0..8).map(|_| pool.submit(pid, 0).unwrap()).collect();
    let pids: HashSet<u32> = quick
        .into_iter()
        .map(|mut h| h.result_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert!(!slow.done(), "every quick task finished while `slow` runs");
    release.set();
    let slow_pid = slow.result().unwrap();
    assert!(!pids.contains(&slow_pid), "{pids:?} ran beside {slow_pid}");
    assert_eq!(pids.len(), 1, "all on the other worker: {pids:?}");
}

fn text_len(s: String) -> usize {
    s.len()
}

#[test]
fn a_large_task_for_a_worker_that_died_idle_returns_in_time() {
    let _t = Ctx::new("pool_dead_idle");
    let pool = ProcessPool::new(1).unwrap();
    // Four times the worker's task queue; a string, which encodes with one
    // copy (fast even in a debug build, so the window below is not missed).
    let big = "x".repeat(4 << 20);
    for round in 0..20 {
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        let pid = pool.worker_pids()[0];
        // SAFETY: kill(2) on a worker process we own.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        // At once, before the collector (every 10 ms) notices: the task
        // goes to the dead worker and streams into its queue, which nobody
        // reads. That send used to wait for room for ever.
        let t = Instant::now();
        let mut handle = pool.submit(text_len, big.clone()).unwrap();
        let outcome = handle.result_timeout(Duration::from_secs(10));
        let took = t.elapsed();
        match outcome {
            Ok(n) => assert_eq!(n, 4 << 20),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ProcessDied, "round {round}: {e}"),
        }
        assert!(took < Duration::from_secs(5), "round {round}: {took:?}");
    }
    assert_eq!(pool.apply(text_len, big).unwrap(), 4 << 20);
}

fn text_of(n: usize) -> String {
    "r".repeat(n)
}

#[test]
fn an_oversized_result_fails_its_task_and_the_pool_goes_on() {
    let _t = Ctx::new("pool_oversized");
    let pool = ProcessPool::builder()
        .workers(2)
        .max_message_size(1 << 20)
        .build()
        .unwrap();
    // A result over the limit: its task fails (it used to stay running
    // for ever, its worker given nothing more).
    let mut big = pool.submit(text_of, 2 << 20).unwrap();
    let e = big.result_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert!(
        e.to_string().contains("over the pool's message limit"),
        "{e}"
    );
    // An argument over it is refused by submit itself.
    let e = pool.submit(text_len, "a".repeat(2 << 20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    // The next 100 tasks are served, by both workers.
    let handles: Vec<_> = (0..100u64)
        .map(|i| (i, pool.submit(sleep_then_pid, i).unwrap()))
        .collect();
    let mut pids = HashSet::new();
    for (i, mut h) in handles {
        let (n, pid) = h.result_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(n, i);
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");
    // Just under the limit still goes through.
    assert_eq!(pool.apply(text_of, 1000).unwrap().len(), 1000);
}

fn sleep_then_pid(i: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(2));
    (i, std::process::id())
}

#[test]
fn pythons_as_completed_loops_on_a_process_pool() {
    let _t = Ctx::new("pool_completed");
    let pool = ProcessPool::new(3).unwrap();
    // Every worker up and idle first.
    let warm: Vec<_> = (0..3).map(|_| pool.submit(sleep_ms, 20).unwrap()).collect();
    for h in warm {
        h.result().unwrap();
    }
    // Longest first, one per worker: completion order is not submission order.
    let handles: Vec<_> = [400u64, 200, 0]
        .iter()
        .map(|&ms| pool.submit(sleep_ms, ms).unwrap())
        .collect();
    let order: Vec<(usize, u64)> = ipckit::pool::completed(handles)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order, [(2, 0), (1, 200), (0, 400)]);
    // Handles kept, results taken by index.
    let mut handles: Vec<_> = (0..5).map(|i| pool.submit(square, i).unwrap()).collect();
    for i in as_completed(&handles, Some(Duration::from_secs(30))) {
        let i = i.unwrap();
        assert_eq!(handles[i].take_result().unwrap(), (i * i) as u64);
        assert!(handles[i].take_result().is_err(), "taken once");
    }
}

#[test]
fn stats_show_pending_running_outcomes_and_workers() {
    let _t = Ctx::new("pool_stats");
    let release = ipckit::sync::Event::new().unwrap();
    // Process pool: two workers held busy by tasks waiting on an event.
    let pool = ProcessPool::new(2).unwrap();
    let warm: Vec<_> = (0..2).map(|i| pool.submit(square, i).unwrap()).collect();
    for h in warm {
        h.result().unwrap();
    }
    let busy: Vec<_> = (0..2)
        .map(|_| pool.submit(wait_for_event, release.clone()).unwrap())
        .collect();
    let queued: Vec<_> = (0..5).map(|i| pool.submit(square, i).unwrap()).collect();
    assert!(common::eventually(Duration::from_secs(30), || pool
        .stats()
        .running
        == 2));
    let s = pool.stats();
    assert_eq!((s.pending, s.running, s.completed), (5, 2, 2), "{s:?}");
    assert_eq!(s.workers.len(), 2);
    let pids: HashSet<u32> = pool.worker_pids().into_iter().collect();
    for w in &s.workers {
        assert!(pids.contains(&w.pid.unwrap()), "{s:?}");
        assert!(busy.iter().any(|h| Some(h.id()) == w.running), "{s:?}");
    }
    queued[4].cancel();
    release.set();
    for h in busy {
        assert_eq!(h.result().unwrap(), 1);
    }
    for h in queued.into_iter().take(4) {
        h.result().unwrap();
    }
    let e = pool.submit(fail_if, 3).unwrap().result().unwrap_err();
    assert!(e.is_panicked());
    let s = pool.stats();
    assert_eq!((s.pending, s.running), (0, 0), "{s:?}");
    assert_eq!((s.completed, s.failed, s.cancelled), (8, 1, 1), "{s:?}");
    // A thread pool answers the same way.
    let threads = ThreadPool::new(2).unwrap();
    release.clear();
    let busy: Vec<_> = (0..2)
        .map(|_| threads.submit(wait_for_event, release.clone()).unwrap())
        .collect();
    let _queued = threads.submit(square, 9).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || threads
        .stats()
        .running
        == 2));
    let s = threads.stats();
    assert_eq!((s.pending, s.running, s.workers.len()), (1, 2, 2), "{s:?}");
    assert!(
        s.workers
            .iter()
            .all(|w| w.pid.is_none() && w.running.is_some()),
        "{s:?}"
    );
    release.set();
    for h in busy {
        h.result().unwrap();
    }
}

fn wait_for_event(e: ipckit::sync::Event) -> u32 {
    e.wait();
    1
}

/// A map whose first submit fails (the pool is shut down) yields an error
/// for every input of that chunk, in order, instead of ending at once.
#[test]
fn map_on_a_shut_down_pool_reports_the_failed_inputs() {
    let pool = ThreadPool::new(1).unwrap();
    pool.shutdown(true, false);
    let results: Vec<_> = pool.map(square, 0..5u64).collect();
    assert_eq!(results.len(), 1, "the first failed submit ends the map");
    let chunked: Vec<_> = pool
        .map_with(
            square,
            0..5u64,
            MapOptions {
                chunksize: 3,
                buffersize: None,
            },
        )
        .collect();
    assert_eq!(chunked.len(), 3, "every input of the failed chunk");
    for r in chunked {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("map input"), "{e}");
    }
}
