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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = dict_insert_get, shared_map_churn
}

fn main() {
    ipckit::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
