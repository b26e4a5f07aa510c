//! `ThreadPool` on its failure paths (issue 16), measured inside this
//! process: thread counts and resident memory, so this binary holds one
//! test, run alone.

use std::time::{Duration, Instant};

use ipckit::ErrorKind;
use ipckit::pool::{Executor, ThreadPool};

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn threads() -> u64 {
    status_field("Threads:")
}

fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn refuse(_: u32) {
    panic!("the initializer refuses");
}

fn double(x: u64) -> u64 {
    x * 2
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn thread_pool_failure_paths() {
    // A watchdog: a hang here is a failure, not a stuck CI job.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(240));
        eprintln!("watchdog: thread_pool_failure_paths still running; aborting");
        std::process::abort();
    });

    // 1. A panicking initializer breaks the pool: results are errors with
    //    the panic's message and location (the threads used to die
    //    silently and `result()` to block for ever).
    let pool = ThreadPool::builder()
        .workers(2)
        .initializer(refuse, 1)
        .build()
        .unwrap();
    let outcome = pool
        .submit(double, 4)
        .and_then(|mut h| h.result_timeout(Duration::from_secs(10)));
    let e = outcome.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert!(e.to_string().contains("the initializer refuses"), "{e}");
    assert!(
        e.to_string().contains("tests/thread_pool.rs"),
        "no location: {e}"
    );
    let e = pool.submit(double, 5).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    drop(pool);

    // 2. Recycling after every task: retired threads are joined, so the
    //    thread count and the resident memory stay flat (each retired
    //    thread used to stay unjoined: two mappings and ~8.6 KiB each).
    let pool = ThreadPool::builder()
        .workers(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    for i in 0..2_000 {
        assert_eq!(pool.apply(double, i).unwrap(), i * 2);
    }
    let (threads_before, rss_before) = (threads(), rss_kib());
    for i in 0..50_000 {
        assert_eq!(pool.apply(double, i).unwrap(), i * 2);
    }
    let (threads_after, rss_after) = (threads(), rss_kib());
    println!(
        "50 000 recycled tasks: threads {threads_before} -> {threads_after}, \
         RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        threads_after <= threads_before + 1,
        "{threads_before} -> {threads_after}"
    );
    assert!(
        rss_after < rss_before + 4096,
        "{rss_before} -> {rss_after} KiB"
    );
    drop(pool);

    // 3. Time limits: one timer thread for however many tasks have one
    //    (each used to start a polling thread of its own).
    let base = threads();
    let pool = ThreadPool::new(2).unwrap();
    let start = Instant::now();
    let handles: Vec<_> = (0..2_000)
        .map(|_| {
            pool.submit_with_timeout(sleep_ms, 1, Duration::from_secs(60))
                .unwrap()
        })
        .collect();
    let peak = threads();
    // Two workers and one timer.
    assert!(
        peak <= base + 3,
        "{base} threads before, {peak} with 2 000 limits"
    );
    for mut h in handles {
        assert_eq!(h.result_timeout(Duration::from_secs(60)).unwrap(), 1);
    }
    println!(
        "2 000 tasks with time limits: {base} -> {peak} threads, {:?}",
        start.elapsed()
    );
    // And a limit still fails its task in time.
    let e = pool
        .submit_with_timeout(sleep_ms, 500, Duration::from_millis(30))
        .unwrap()
        .result_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
}
