//! The cluster submitter: the same `Executor` calls as on a local pool, run
//! by workers anywhere (`examples/cluster_worker.rs`).
//!
//! ```sh
//! cargo run --release --features nats --example cluster_submit -- nats://127.0.0.1:4222
//! ```

#[path = "support/cluster_tasks.rs"]
mod cluster_tasks;

use std::time::{Duration, Instant};

use cluster_tasks::{is_prime, nap};
use ipckit::cluster::{Cluster, ClusterPool, Connect};
use ipckit::pool::{Executor, MapOptions, as_completed};

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let pool_name = std::env::args().nth(2).unwrap_or_else(|| "demo".into());
    let cluster = Cluster::connect(&Connect::new(&url).name("ipckit-example-submitter"))?;
    let pool = ClusterPool::builder(&cluster, &pool_name)
        .ack_wait(Duration::from_secs(10))
        .connect(&cluster_tasks::registry())?;

    // map in chunks: 200 000 inputs travel as 200 tasks of 1 000.
    let t = Instant::now();
    let options = MapOptions {
        chunksize: 1000,
        buffersize: None,
    };
    let mut primes = 0;
    for r in pool.map_with(is_prime, 0..200_000u64, options) {
        primes += usize::from(r?);
    }
    println!("{primes} primes below 200 000, in {:?}", t.elapsed());

    // Futures: submit, then take the results as they finish.
    let mut handles: Vec<_> = [300, 100, 200]
        .into_iter()
        .map(|ms| pool.submit(nap, ms))
        .collect::<ipckit::Result<_>>()?;
    for i in as_completed(&handles, Some(Duration::from_secs(60))) {
        let i = i?;
        println!("task {i}: {}", handles[i].take_result()?);
    }

    // The dict (a JetStream key-value bucket) for shared state.
    let runs = cluster.dict::<u64>("demo_runs")?;
    let n = runs.update("submitter", |old| old.unwrap_or(0) + 1)?;
    println!("this submitter ran {n} times against this server");
    Ok(())
}
