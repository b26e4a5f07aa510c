//! Managers: one dict `insert` + `get` round trip, from a client process to
//! the manager's server process, beside Python's `Manager().dict()` doing
//! the same in the same run, and beside the server-less
//! `collections::SharedMap`.
//!
//! - `manager_dict_insert_get`: `d.insert(&k, &i)` then `d.get(&k)`, k
//!   cycling through 100 keys — ipckit manager over its default unix socket
//!   and over TCP loopback; Python's `d[k] = i; d[k]`
//!   (`benches/python/manager_peer.py`, timed by Python); `SharedMap`
//!   (shared memory under a robust lock, no server).
//! - `manager_list_push`: one `push` (Python: `append`).
//! - `shared_map_churn`: `SharedMap<u64, u64>` of capacity 1000 holding 750
//!   keys, fresh and after 200 000 remove + insert pairs (remove a present
//!   key, insert a never-seen one), side by side: a lookup of an absent key
//!   (`miss_*`, the probe that tombstones would lengthen), of a present key
//!   (`hit_*`), a present key removed and inserted again (`remove_reinsert_*`),
//!   and an insert of a new key plus its removal (`insert_remove_*`).
//!
//! - `manager_many_threads`: 100 threads of one client process, each doing
//!   `insert` + `get` pairs on one dict; throughput is pairs per second for
//!   all of them, and each sample prints the spread of the threads'
//!   times (slowest ÷ fastest): with too few connections kept, most calls
//!   reconnect and some threads starve.
//!
//! Run: `cargo bench --bench manager` (`-- shared_map_churn` for the last).

mod common;

use std::time::Duration;

use common::PythonPeer;
use criterion::{Criterion, Throughput, criterion_group};
use ipckit::collections::SharedMap;
use ipckit::connection::Address;
use ipckit::manager::Manager;

fn dict_insert_get(c: &mut Criterion) {
    let local = Manager::start().unwrap();
    let tcp = Manager::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .authkey(b"bench")
        .start()
        .unwrap();
    let mut py = PythonPeer::start("manager_peer.py", &[]);

    let mut g = c.benchmark_group("manager_dict_insert_get");
    g.throughput(Throughput::Elements(1));
    for (label, m) in [
        ("ipckit_manager_unix", &local),
        ("ipckit_manager_tcp", &tcp),
    ] {
        let d = m.dict::<u64, u64>().unwrap();
        let mut i = 0u64;
        g.bench_function(label, |b| {
            b.iter(|| {
                i += 1;
                d.insert(&(i % 100), &i).unwrap();
                d.get(&(i % 100)).unwrap()
            })
        });
    }
    if let Some(py) = &mut py {
        g.bench_function("python_manager_dict", |b| {
            b.iter_custom(|iters| py.time(&format!("dict {iters}")))
        });
    }
    let map = SharedMap::<u64, u64>::new(1024).unwrap();
    let mut i = 0u64;
    g.bench_function("ipckit_shared_map", |b| {
        b.iter(|| {
            i += 1;
            map.insert(i % 100, i).unwrap();
            map.get(&(i % 100)).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("manager_list_push");
    g.throughput(Throughput::Elements(1));
    let l = local.list::<u64>().unwrap();
    g.bench_function("ipckit_manager_unix", |b| {
        b.iter(|| l.push(&7).unwrap());
    });
    if let Some(py) = &mut py {
        g.bench_function("python_manager_list", |b| {
            b.iter_custom(|iters| py.time(&format!("list {iters}")))
        });
    }
    g.finish();
}

/// Live keys of the churn maps: 0..LIVE at first; churn pair `i` removes
/// key `i` and inserts `LIVE + i`, so the live set slides along.
const LIVE: u64 = 750;
/// Keys at or above this are never inserted: lookups of them miss.
const ABSENT: u64 = 1 << 40;

fn churned_map(pairs: u64) -> SharedMap<u64, u64> {
    let m = SharedMap::<u64, u64>::new(1000).unwrap();
    for k in 0..LIVE {
        m.insert(k, k).unwrap();
    }
    for i in 0..pairs {
        assert_eq!(m.remove(&i).unwrap(), Some(i));
        assert_eq!(m.insert(LIVE + i, LIVE + i).unwrap(), None);
    }
    assert_eq!(m.len().unwrap(), LIVE as usize);
    m
}

fn shared_map_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("shared_map_churn");
    g.throughput(Throughput::Elements(1));
    for (label, pairs) in [("fresh", 0u64), ("after_churn", 200_000)] {
        let m = churned_map(pairs);
        let mut i = 0u64;
        g.bench_function(format!("miss_{label}"), |b| {
            b.iter(|| {
                // Different absent keys: their home slots cover the table.
                i = (i + 1) % 4096;
                assert_eq!(m.get(&(ABSENT + i)).unwrap(), None);
            })
        });
        g.bench_function(format!("hit_{label}"), |b| {
            b.iter(|| {
                i = (i + 1) % LIVE;
                m.get(&(pairs + i)).unwrap().unwrap()
            })
        });
        // A present key out and back in: in a marking-only table the insert
        // reuses the remove's tombstone, so this row stays fresh either way.
        g.bench_function(format!("remove_reinsert_{label}"), |b| {
            b.iter(|| {
                i = (i + 1) % LIVE;
                let k = pairs + i;
                let v = m.remove(&k).unwrap().unwrap();
                m.insert(k, v).unwrap()
            })
        });
        g.bench_function(format!("insert_remove_{label}"), |b| {
            b.iter(|| {
                i = (i + 1) % 4096;
                m.insert(ABSENT + i, i).unwrap();
                m.remove(&(ABSENT + i)).unwrap().unwrap()
            })
        });
    }
    g.finish();
}

const THREADS: u64 = 100;
/// Pairs per thread at least, so that connecting is not most of a sample.
const MIN_PER_THREAD: u64 = 200;

/// `pairs` insert+get pairs split over [`THREADS`] threads; the time for
/// all, and the slowest thread's time over the fastest's.
fn many_threads_round(m: &Manager, pairs: u64) -> (Duration, f64) {
    let d = m.dict::<u64, u64>().unwrap();
    let per = pairs.div_ceil(THREADS).max(MIN_PER_THREAD);
    let barrier = std::sync::Barrier::new(THREADS as usize);
    let start = std::time::Instant::now();
    let times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let d = d.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let t0 = std::time::Instant::now();
                    for i in 0..per {
                        let k = t * 1_000_000 + i % 10;
                        d.insert(&k, &i).unwrap();
                        d.get(&k).unwrap();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all = start.elapsed();
    let min = times.iter().min().unwrap().as_secs_f64();
    let max = times.iter().max().unwrap().as_secs_f64();
    (all, max / min.max(1e-9))
}

fn many_threads(c: &mut Criterion) {
    let m = Manager::start().unwrap();
    let mut g = c.benchmark_group("manager_many_threads");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("ipckit_manager_unix_100_threads", |b| {
        b.iter_custom(|iters| {
            let (all, spread) = many_threads_round(&m, iters);
            let done = iters.div_ceil(THREADS).max(MIN_PER_THREAD) * THREADS;
            eprintln!(
                "manager_many_threads: {done} pairs by {THREADS} threads in {all:?} \
                 ({:.0} pairs/s), slowest/fastest thread {spread:.2}x",
                done as f64 / all.as_secs_f64()
            );
            // Per pair, as criterion counts `iters` of them.
            all.mul_f64(iters as f64 / done as f64)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = dict_insert_get, shared_map_churn, many_threads
}

fn main() {
    ipckit::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
