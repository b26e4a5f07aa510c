//! Process pools: the per-task overhead, beside Python's pools in the same run.
//!
//! - `round_trip`: `submit` → `result` of an empty task, one at a time —
//!   ipckit `ProcessPool` and `ThreadPool`, Python's `ProcessPoolExecutor`;
//! - `map_10k`: `map` over 10 000 tiny tasks, consumed in order — ipckit
//!   `ProcessPool` with chunksize 1 (default buffer of 64 tasks in flight per
//!   worker, and a small buffer of 8), chunksize 100, and chunksize 1250 (what
//!   Python's `Pool.map` picks for 10 000 items on 2 workers), `ThreadPool`
//!   chunksize 1; Python's `ProcessPoolExecutor.map` with chunksize 1 and 100
//!   and `multiprocessing.Pool.map` (automatic chunks: len / (4 × workers)).
//!
//! Every pool has as many workers as the machine has CPUs. The Python rows
//! run `benches/python/pool_peer.py` in a python3 child, which times batches
//! itself and answers over stdin/stdout (`iter_custom`); without python3 they
//! are skipped with a printed reason.
//!
//! Run: `cargo bench --bench pool`.

use std::time::Duration;

mod common;

use common::PythonPeer;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use ipckit::pool::{Executor, MapOptions, ProcessPool, ThreadPool};

const TASKS: u64 = 10_000;

fn empty(x: u64) -> u64 {
    x
}

fn python() -> Option<PythonPeer> {
    PythonPeer::start("pool_peer.py", &[&ipckit::process::cpu_count().to_string()])
}

fn round_trip(c: &mut Criterion) {
    let workers = ipckit::process::cpu_count();
    let processes = ProcessPool::new(workers).unwrap();
    let threads = ThreadPool::new(workers).unwrap();
    // Every worker started before timing.
    processes.map(empty, 0..100).for_each(|r| {
        r.unwrap();
    });
    let mut py = python();

    let mut g = c.benchmark_group("pool_round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ipckit_process_pool", |b| {
        b.iter(|| processes.submit(empty, 1).unwrap().result().unwrap())
    });
    g.bench_function("ipckit_thread_pool", |b| {
        b.iter(|| threads.submit(empty, 1).unwrap().result().unwrap())
    });
    if let Some(py) = &mut py {
        g.bench_function("python_process_pool_executor", |b| {
            b.iter_custom(|iters| py.time(&format!("rt {iters}")))
        });
    }
    g.finish();
}

fn map_10k(c: &mut Criterion) {
    let workers = ipckit::process::cpu_count();
    let processes = ProcessPool::new(workers).unwrap();
    let threads = ThreadPool::new(workers).unwrap();
    processes.map(empty, 0..100).for_each(|r| {
        r.unwrap();
    });
    let mut py = python();
    let consume = |it: &mut dyn Iterator<Item = ipckit::Result<u64>>| {
        let mut n = 0;
        for r in it {
            r.unwrap();
            n += 1;
        }
        assert_eq!(n, TASKS);
    };
    let opts = |chunksize, buffersize| MapOptions {
        chunksize,
        buffersize,
    };

    let mut g = c.benchmark_group("pool_map_10k");
    g.throughput(Throughput::Elements(TASKS));
    // Flat sampling: 10 samples of equal iteration counts, so Python's 1 s
    // rows cost ~10 s rather than the 55 iterations of linear sampling.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("ipckit_process_pool_chunk1", |b| {
        b.iter(|| consume(&mut processes.map(empty, 0..TASKS)))
    });
    g.bench_function("ipckit_process_pool_chunk1_buffer8", |b| {
        b.iter(|| consume(&mut processes.map_with(empty, 0..TASKS, opts(1, Some(8)))))
    });
    g.bench_function("ipckit_process_pool_chunk100", |b| {
        b.iter(|| consume(&mut processes.map_with(empty, 0..TASKS, opts(100, None))))
    });
    // Python's Pool.map: chunksize = ceil(len / (4 × workers)).
    let auto = (TASKS as usize).div_ceil(4 * workers);
    g.bench_function(format!("ipckit_process_pool_chunk{auto}"), |b| {
        b.iter(|| consume(&mut processes.map_with(empty, 0..TASKS, opts(auto, None))))
    });
    g.bench_function("ipckit_thread_pool_chunk1", |b| {
        b.iter(|| consume(&mut threads.map(empty, 0..TASKS)))
    });
    if let Some(py) = &mut py {
        g.bench_function("python_executor_map_chunk1", |b| {
            b.iter_custom(|iters| py.time(&format!("exmap 1 {iters}")))
        });
        g.bench_function("python_executor_map_chunk100", |b| {
            b.iter_custom(|iters| py.time(&format!("exmap 100 {iters}")))
        });
        g.bench_function("python_pool_map", |b| {
            b.iter_custom(|iters| py.time(&format!("poolmap {iters}")))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(30);
    targets = round_trip, map_10k
}

fn main() {
    ipckit::init();
    let steal = common::Steal::start();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Some(p) = steal.percent() {
        println!("CPU time stolen by the hypervisor during this bench: {p:.1}%");
    }
}
