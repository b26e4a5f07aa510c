//! A program that forgets `ipckit::init()` (issue 17): its pool's workers
//! re-run `main` instead of their function. That used to start hundreds of
//! processes in seconds, each failing the same way, while the parent only
//! heard "worker died: exit code 1". Now the first spawn in such a child
//! reports the missing `init()` to its parent and exits; the pool breaks
//! with that error.
//!
//! A test without the test harness (`harness = false`): its `main` is the
//! program, run by `cargo test` as the parent and by the pool as each
//! worker. Every run of `main` appends a line to a file, to count them.

use std::io::Write;
use std::time::{Duration, Instant};

use ipckit::ErrorKind;
use ipckit::pool::{Executor, ProcessPool};

const COUNT_ENV: &str = "IPCKIT_NO_INIT_COUNT";

fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    // No ipckit::init() here: that is the mistake under test.
    let count_file = match std::env::var_os(COUNT_ENV) {
        Some(f) => std::path::PathBuf::from(f),
        None => {
            let f = std::env::temp_dir().join(format!("ipckit-no-init-{}", std::process::id()));
            let _ = std::fs::remove_file(&f);
            // SAFETY: single-threaded so far; children inherit it.
            unsafe { std::env::set_var(COUNT_ENV, &f) };
            f
        }
    };
    let parent = std::env::var_os("IPCKIT_PROCESS_FD").is_none();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&count_file)
        .and_then(|mut f| writeln!(f, "{}", std::process::id()))
        .unwrap();

    // What a user's program does: a pool, a task.
    let start = Instant::now();
    let pool = ProcessPool::new(2).unwrap();
    // (A worker never gets here: its ProcessPool::new reports and exits.)
    assert!(parent, "a worker ran past its first spawn");
    let outcome = pool
        .submit(square, 7)
        .and_then(|mut h| h.result_timeout(Duration::from_secs(30)));
    let took = start.elapsed();
    let e = outcome.expect_err("a pool without init() cannot run tasks");
    println!("after {took:?}: {e}");
    assert!(e.to_string().contains("ipckit::init()"), "{e}");
    assert_ne!(e.kind(), ErrorKind::ProcessDied, "{e}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // And the pool stays broken instead of starting more.
    std::thread::sleep(Duration::from_millis(300));
    let e = pool.submit(square, 8).unwrap_err();
    assert!(e.to_string().contains("ipckit::init()"), "{e}");
    drop(pool);
    let runs = std::fs::read_to_string(&count_file)
        .unwrap()
        .lines()
        .count();
    let _ = std::fs::remove_file(&count_file);
    println!("main ran {runs} times (the parent and each worker started)");
    assert!(runs <= 4, "main ran {runs} times");
    println!("no_init: ok");
}
