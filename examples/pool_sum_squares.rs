//! The CPU-bound job `sum(i*i for i in 0..n)` for n in 3_000_000..3_000_030,
//! run serially, on a `ThreadPool` and on a `ProcessPool`, printing each
//! duration (best of 5 rounds: the job is short, so one round is at the mercy
//! of the scheduler) and the speedup over the serial run.
//!
//! ```text
//! cargo run --release --example pool_sum_squares
//! cargo run --release --example pool_sum_squares --features progress   # with progress bars
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use ipckit::pool::{Executor, ProcessPool, ThreadPool};

/// One task: the sum of squares below `n` (black_box keeps the compiler from
/// replacing the loop by a closed formula).
fn sum_squares(n: u64) -> u64 {
    (0..n).map(|i| black_box(i) * i).fold(0, u64::wrapping_add)
}

const RANGE: std::ops::Range<u64> = 3_000_000..3_000_030;
const ROUNDS: usize = 5;

/// Runs `job` ROUNDS times; returns its result and the best duration.
fn best_of(
    mut job: impl FnMut(bool) -> ipckit::Result<Vec<u64>>,
) -> ipckit::Result<(Vec<u64>, Duration)> {
    let mut best = Duration::MAX;
    let mut result = Vec::new();
    for round in 0..ROUNDS {
        let start = Instant::now();
        result = job(round == 0)?;
        best = best.min(start.elapsed());
    }
    Ok((result, best))
}

/// One round on a pool; with feature `progress`, the first round draws a bar.
fn on_pool<P: Executor>(pool: &P, label: &str, show: bool) -> ipckit::Result<Vec<u64>> {
    let map = pool.map(sum_squares, RANGE);
    #[cfg(feature = "progress")]
    let map = if show { map.progress(label) } else { map };
    let _ = (label, show);
    map.collect()
}

fn report(label: &str, took: Duration, serial: Duration) {
    println!(
        "{label:<13} {:8.1} ms  ({:.2}x)",
        took.as_secs_f64() * 1e3,
        serial.as_secs_f64() / took.as_secs_f64()
    );
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let workers = ipckit::process::cpu_count();
    println!("sum of squares for n in {RANGE:?}: {workers} workers, best of {ROUNDS} rounds");

    let (serial, t_serial) = best_of(|_| Ok(RANGE.map(sum_squares).collect()))?;
    report("serial:", t_serial, t_serial);

    let threads = ThreadPool::new(workers)?;
    let (r, t) = best_of(|show| on_pool(&threads, "thread pool ", show))?;
    assert_eq!(r, serial, "the thread pool computed something else");
    report("thread pool:", t, t_serial);

    let processes = ProcessPool::new(workers)?;
    let (r, t) = best_of(|show| on_pool(&processes, "process pool", show))?;
    assert_eq!(r, serial, "the process pool computed something else");
    report("process pool:", t, t_serial);

    println!(
        "all three agree; sum of squares below {} = {} (mod 2^64)",
        RANGE.end - 1,
        serial[serial.len() - 1]
    );
    Ok(())
}
