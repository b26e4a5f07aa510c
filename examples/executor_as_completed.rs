//! Submit jobs of different lengths to a process pool, print them as they
//! complete, and cancel the rest after the first failure.
//!
//! ```text
//! cargo run --release --example executor_as_completed
//! ```

use std::time::{Duration, Instant};

use ipckit::pool::{Executor, ProcessPool, as_completed};

/// A job that takes `ms` milliseconds; the 250 ms one fails.
fn job(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    if ms == 250 {
        panic!("job of {ms} ms failed");
    }
    ms
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let pool = ProcessPool::new(3)?;
    let lengths = [400u64, 100, 250, 50, 900, 1200, 700, 1500];
    let start = Instant::now();
    let handles = lengths
        .iter()
        .map(|&ms| pool.submit(job, ms))
        .collect::<ipckit::Result<Vec<_>>>()?;
    println!("submitted {} jobs to 3 worker processes", handles.len());
    for index in as_completed(&handles, Some(Duration::from_secs(30))) {
        let i = index?;
        let h = &handles[i];
        let at = start.elapsed().as_millis();
        match h.error() {
            None => println!("{at:5} ms  job {i} ({} ms) finished", lengths[i]),
            Some(e) => {
                println!("{at:5} ms  job {i} ({} ms) failed: {e}", lengths[i]);
                let cancelled: Vec<usize> = (0..handles.len())
                    .filter(|&j| handles[j].cancel())
                    .collect();
                println!("{at:5} ms  cancelled the jobs that had not started: {cancelled:?}");
                let stopped: Vec<usize> = (0..handles.len())
                    .filter(|&j| !handles[j].done() && handles[j].cancel_running())
                    .collect();
                println!(
                    "{at:5} ms  stopped the running ones (their workers were replaced): {stopped:?}"
                );
                break;
            }
        }
    }
    for (i, h) in handles.into_iter().enumerate() {
        let state = h.state();
        let outcome = match h.result() {
            Ok(v) => format!("{v}"),
            Err(e) => format!("{:?}", e.kind()),
        };
        println!("job {i}: {state:?} -> {outcome}");
    }
    Ok(())
}
