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
//!
//! Run: `cargo bench --bench manager`.

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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = dict_insert_get
}

fn main() {
    ipckit::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
