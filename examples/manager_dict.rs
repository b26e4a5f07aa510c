//! Several processes append results to a manager list and update a manager
//! dict; the parent prints both. Python's `Manager().list()` /
//! `Manager().dict()` example, typed.
//!
//! ```text
//! cargo run --release --example manager_dict
//! ```

use ipckit::manager::{DictProxy, ListProxy, LockProxy, Manager};
use ipckit::process::Process;
use serde::{Deserialize, Serialize};

/// What each worker process receives: its number and three proxies.
#[derive(Serialize, Deserialize)]
struct Job {
    worker: u32,
    results: ListProxy<(u32, u64)>,
    stats: DictProxy<String, u64>,
    lock: LockProxy,
}

fn work(job: Job) -> ipckit::Result<()> {
    // Some "work": the sum of the first worker × 1000 squares.
    let n = (job.worker as u64 + 1) * 1000;
    let sum: u64 = (0..n).map(|i| i * i).sum();
    job.results.push(&(job.worker, sum))?;
    job.stats.insert(
        &format!("worker {} pid", job.worker),
        &(std::process::id() as u64),
    )?;
    // A read-modify-write over several processes needs the manager's lock.
    let _guard = job.lock.acquire()?;
    let total = job.stats.get(&"items".to_owned())?.unwrap_or(0);
    job.stats.insert(&"items".to_owned(), &(total + n))?;
    Ok(())
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let manager = Manager::start()?;
    let results = manager.list::<(u32, u64)>()?;
    let stats = manager.dict::<String, u64>()?;
    let lock = manager.lock()?;

    let workers = (0..6)
        .map(|worker| {
            Process::spawn(
                work,
                Job {
                    worker,
                    results: results.clone(),
                    stats: stats.clone(),
                    lock: lock.clone(),
                },
            )
        })
        .collect::<ipckit::Result<Vec<_>>>()?;
    for w in workers {
        w.join()??;
    }

    println!("results (in the order the workers finished):");
    for (worker, sum) in results.to_vec()? {
        println!("  worker {worker}: {sum}");
    }
    println!("stats (insertion order):");
    for (key, value) in stats.items()? {
        println!("  {key}: {value}");
    }
    assert_eq!(results.len()?, 6);
    assert_eq!(
        stats.get(&"items".to_owned())?,
        Some((1..=6).map(|w| w * 1000).sum())
    );
    manager.shutdown()
}
