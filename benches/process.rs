//! Starting a child process and collecting its result.
//!
//! - `ipckit_spawn_join`: `Process::spawn(f, arg)` + `join()` of a trivial
//!   function (this bench binary re-executed, payload and result exchanged);
//! - `ipckit_spawn_join_daemon`: the same for a daemon (forked by ipckit's
//!   long-lived spawner thread);
//! - baselines in the same run: `std::process::Command` running `true`, and
//!   re-executing this same binary with `Command` and exiting at once (the
//!   cost of loading this executable, without ipckit's protocol).
//!
//! Run: `cargo bench --bench process`.

use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use ipckit::process::Process;

fn trivial(x: u32) -> u32 {
    x + 1
}

fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_join");
    g.bench_function("ipckit_spawn_join", |b| {
        b.iter(|| Process::spawn(trivial, 1).unwrap().join().unwrap())
    });
    g.bench_function("ipckit_spawn_join_daemon", |b| {
        b.iter(|| {
            Process::builder()
                .daemon(true)
                .spawn(trivial, 1)
                .unwrap()
                .join()
                .unwrap()
        })
    });
    g.bench_function("command_true", |b| {
        b.iter(|| assert!(Command::new("true").status().unwrap().success()))
    });
    g.bench_function("command_reexec_self", |b| {
        b.iter(|| {
            let s = Command::new("/proc/self/exe")
                .env("IPCKIT_BENCH_EXIT_AT_ONCE", "1")
                .status()
                .unwrap();
            assert!(s.success());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(30);
    targets = spawn_join
}

fn main() {
    ipckit::init();
    if std::env::var_os("IPCKIT_BENCH_EXIT_AT_ONCE").is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
