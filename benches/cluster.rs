//! The cluster pool (feature `nats`) on a local nats-server, beside the local
//! `ProcessPool` in the same run:
//!
//! - `cluster_round_trip`: `submit` → `result` of an empty task, one at a
//!   time: `ClusterPool` with 2 worker processes (one task each at a time),
//!   and a `ProcessPool` of 2;
//! - `cluster_map_10k`: `map` over 10 000 tiny tasks with chunks of 1, 100
//!   and 1250 inputs (1250 is what Python's `Pool.map` picks for 10 000 items
//!   on 2 workers), and the `ProcessPool` with chunks of 100.
//!
//! The bench starts its own `nats-server` (JetStream, file storage in a
//! temporary directory, 127.0.0.1, a free port) and two worker processes;
//! without a server binary it prints why and does nothing.
//!
//! Run: `cargo bench --features nats --bench cluster`.

use std::time::Duration;

#[path = "../tests/support/nats.rs"]
mod nats;

use criterion::{Criterion, SamplingMode, Throughput};
use ipckit::cluster::{Cluster, ClusterPool, Connect, Registry, Worker};
use ipckit::pool::{Executor, MapOptions, ProcessPool};

const TASKS: u64 = 10_000;

#[inline(never)]
fn empty(x: u64) -> u64 {
    x
}

fn registry() -> Registry {
    ipckit::registry![empty]
}

fn worker((url, pool): (String, String)) -> u64 {
    let cluster = Cluster::connect(&Connect::new(&url)).expect("worker connects");
    Worker::builder(&cluster, &pool)
        .concurrency(1)
        .serve(&registry())
        .expect("worker serves")
        .completed
}

fn main() {
    ipckit::init();
    let Some(server) = nats::Server::start() else {
        return;
    };
    let cluster = Cluster::connect(&Connect::new(&server.url())).unwrap();
    let pool = ClusterPool::builder(&cluster, "bench")
        .workers(2)
        .connect(&registry())
        .unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            ipckit::process::Process::builder()
                .daemon(true)
                .spawn(worker, (server.url(), "bench".to_owned()))
                .unwrap()
        })
        .collect();
    let local = ProcessPool::new(2).unwrap();
    // Both warm: workers connected, streams made, pages touched.
    pool.map(empty, 0..200).for_each(|r| {
        r.unwrap();
    });
    local.map(empty, 0..200).for_each(|r| {
        r.unwrap();
    });

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("cluster_round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ipckit_cluster_pool", |b| {
        b.iter(|| pool.submit(empty, 1).unwrap().result().unwrap())
    });
    g.bench_function("ipckit_process_pool", |b| {
        b.iter(|| local.submit(empty, 1).unwrap().result().unwrap())
    });
    g.finish();
    c.final_summary();

    // Ten seconds of ten samples by default; the command line (CI's quick
    // mode) still wins, since its arguments are applied last.
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut g = c.benchmark_group("cluster_map_10k");
    g.throughput(Throughput::Elements(TASKS));
    g.sampling_mode(SamplingMode::Flat);
    for chunksize in [1usize, 100, 1250] {
        g.bench_function(format!("ipckit_cluster_pool_chunksize_{chunksize}"), |b| {
            b.iter(|| {
                let options = MapOptions {
                    chunksize,
                    buffersize: None,
                };
                pool.map_with(empty, 0..TASKS, options)
                    .map(|r| r.unwrap())
                    .sum::<u64>()
            })
        });
    }
    g.bench_function("ipckit_process_pool_chunksize_100", |b| {
        b.iter(|| {
            let options = MapOptions {
                chunksize: 100,
                buffersize: None,
            };
            local
                .map_with(empty, 0..TASKS, options)
                .map(|r| r.unwrap())
                .sum::<u64>()
        })
    });
    g.finish();
    c.final_summary();

    drop(pool);
    for w in workers {
        let _ = w.terminate();
        let _ = w.join();
    }
}
