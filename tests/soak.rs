//! A randomized soak of the process pool and the manager (issue 16): task
//! sizes up to above the limits, workers and clients SIGKILLed at random,
//! cancels, timeouts, then shutdown. Every answer is checked, and at the end
//! resident memory, descriptors, threads and child processes are back where
//! they were (no zombie).
//!
//! `IPCKIT_SOAK_SECS` sets how long each half runs (default 8 s, as in CI);
//! `IPCKIT_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`
//! is the long run whose figures the README quotes.

mod common;

ipckit::test_support!();

use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::ErrorKind;
use ipckit::manager::{DictProxy, LockProxy, Manager, ValueProxy};
use ipckit::pool::{Executor, ProcessPool, TaskHandle};

const LIMIT: usize = 256 << 10;

fn soak_secs() -> u64 {
    std::env::var("IPCKIT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// xorshift64*: deterministic per seed, printed so a failure can be rerun.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn status_field(pid: &str, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// (RSS KiB, descriptors, threads) of this process.
fn footprint() -> (u64, usize, u64) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (
        status_field("self", "VmRSS:"),
        fds,
        status_field("self", "Threads:"),
    )
}

/// This process's children: (live, zombies).
fn children() -> (usize, usize) {
    let me = std::process::id();
    let (mut live, mut zombies) = (0, 0);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me {
            if state == "Z" {
                zombies += 1;
            } else {
                live += 1;
            }
        }
    }
    (live, zombies)
}

// -- tasks ------------------------------------------------------------------

fn text_len(s: String) -> usize {
    s.len()
}

fn text_of(n: usize) -> String {
    "r".repeat(n)
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// What a task was, so its outcome can be checked.
enum Expect {
    Len(usize),
    Text(usize),
    Nap(u64, Option<Duration>),
}

enum Handle {
    Len(TaskHandle<usize>),
    Text(TaskHandle<String>),
    Nap(TaskHandle<u64>),
}

fn pool_half(seed: u64, secs: u64) -> [u64; 6] {
    let mut rng = Rng(seed);
    let pool = ProcessPool::builder()
        .workers(3)
        .max_message_size(LIMIT)
        .build()
        .unwrap();
    // ok, limit, died, timeout, cancelled, refused
    let mut counts = [0u64; 6];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut in_flight: Vec<(Handle, Expect)> = Vec::new();
    while Instant::now() < end {
        match rng.below(100) {
            // Arguments up to 1.5x the limit: over it, submit refuses.
            0..=29 => {
                let n = rng.below(LIMIT as u64 * 3 / 2) as usize;
                match pool.submit(text_len, "a".repeat(n)) {
                    Ok(h) => in_flight.push((Handle::Len(h), Expect::Len(n))),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
                        assert!(n + 64 > LIMIT, "a {n}-byte argument was refused: {e}");
                        counts[5] += 1;
                    }
                }
            }
            // Results up to 1.5x the limit: over it, the task fails.
            30..=59 => {
                let n = rng.below(LIMIT as u64 * 3 / 2) as usize;
                let h = pool.submit(text_of, n).unwrap();
                in_flight.push((Handle::Text(h), Expect::Text(n)));
            }
            // Naps, some with a time limit shorter than the nap.
            60..=84 => {
                let ms = rng.below(30);
                let limit = (rng.below(2) == 0).then(|| Duration::from_millis(rng.below(40) + 1));
                let h = match limit {
                    Some(t) => pool.submit_with_timeout(nap, ms, t).unwrap(),
                    None => pool.submit(nap, ms).unwrap(),
                };
                in_flight.push((Handle::Nap(h), Expect::Nap(ms, limit)));
            }
            // Cancel a random task.
            85..=92 => {
                if !in_flight.is_empty() {
                    let i = rng.below(in_flight.len() as u64) as usize;
                    match &in_flight[i].0 {
                        Handle::Len(h) => h.cancel(),
                        Handle::Text(h) => h.cancel(),
                        Handle::Nap(h) => h.cancel(),
                    };
                }
            }
            // SIGKILL a random worker.
            _ => {
                let pids = pool.worker_pids();
                if !pids.is_empty() {
                    let pid = pids[rng.below(pids.len() as u64) as usize];
                    // SAFETY: kill(2) on a worker process of our pool.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        // Keep at most 40 in flight: collect the oldest.
        while in_flight.len() > 40 {
            let (h, expect) = in_flight.remove(0);
            check(h, expect, &mut counts);
        }
    }
    for (h, expect) in in_flight {
        check(h, expect, &mut counts);
    }
    // The pool still serves, with all its workers.
    assert_eq!(pool.apply(text_len, "ok".to_owned()).unwrap(), 2);
    assert_eq!(pool.worker_pids().len(), 3);
    pool.shutdown(true, false);
    counts
}

/// Checks one outcome: a right value, or an error of an expected kind.
fn check(h: Handle, expect: Expect, counts: &mut [u64; 6]) {
    let wait = Duration::from_secs(60);
    let outcome: Result<(), ipckit::Error> = match (h, expect) {
        (Handle::Len(mut h), Expect::Len(n)) => h.result_timeout(wait).map(|got| {
            assert_eq!(got, n);
        }),
        (Handle::Text(mut h), Expect::Text(n)) => h.result_timeout(wait).map(|got| {
            assert_eq!(got.len(), n);
            assert!(got.bytes().all(|b| b == b'r'));
        }),
        (Handle::Nap(mut h), Expect::Nap(ms, limit)) => {
            let r = h.result_timeout(wait);
            if let Err(e) = &r {
                assert!(
                    !e.is_timeout() || limit.is_some(),
                    "a task without a time limit timed out: {e}"
                );
            }
            r.map(|got| assert_eq!(got, ms))
        }
        _ => unreachable!("handles and expectations are made in pairs"),
    };
    match outcome {
        Ok(()) => counts[0] += 1,
        Err(e) => match e.kind() {
            ErrorKind::LimitExceeded => counts[1] += 1,
            ErrorKind::ProcessDied => counts[2] += 1,
            ErrorKind::Timeout => counts[3] += 1,
            ErrorKind::Cancelled => counts[4] += 1,
            _ => panic!("unexpected outcome: {e}"),
        },
    }
}

// -- manager ------------------------------------------------------------------

/// A client process: increments the counter under the lock and stores
/// values of random sizes (some over the limit) until killed or done.
fn client(
    (lock, counter, dict, seed): (LockProxy, ValueProxy<u64>, DictProxy<u64, String>, u64),
) -> u64 {
    let mut rng = Rng(seed);
    let mut done = 0;
    for _ in 0..100_000 {
        {
            let g = lock.acquire().unwrap();
            let v = counter.get().unwrap();
            counter.set(&(v + 1)).unwrap();
            drop(g);
        }
        done += 1;
        let n = rng.below(LIMIT as u64 * 3 / 2) as usize;
        match dict.insert(&rng.below(50), &"v".repeat(n)) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}"),
        }
    }
    done
}

fn manager_half(seed: u64, secs: u64) -> (u64, u64, u64) {
    let mut rng = Rng(seed);
    let m = Manager::builder().max_message_size(LIMIT).start().unwrap();
    let lock = m.lock().unwrap();
    let counter = m.value(&0u64).unwrap();
    let dict = m.dict::<u64, String>().unwrap();
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut clients: Vec<_> = (0..3)
        .map(|_| {
            spawn(
                client,
                (lock.clone(), counter.clone(), dict.clone(), rng.next()),
            )
        })
        .collect();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.below(200) + 20));
        // SIGKILL a client, wherever it is (in the lock, mid-call), and
        // start another.
        let i = rng.below(clients.len() as u64) as usize;
        // SAFETY: kill(2) on a child we own.
        unsafe { libc::kill(clients[i].pid() as i32, libc::SIGKILL) };
        let _ = clients[i].join_timeout(Duration::from_secs(10));
        kills += 1;
        clients[i] = spawn(
            client,
            (lock.clone(), counter.clone(), dict.clone(), rng.next()),
        );
        // What a dead client held is released: the lock can be taken.
        let g = lock.acquire_timeout(Duration::from_secs(5)).unwrap();
        drop(g);
    }
    for c in &clients {
        // SAFETY: kill(2) on a child we own.
        unsafe { libc::kill(c.pid() as i32, libc::SIGKILL) };
    }
    for mut c in clients {
        let _ = c.join_timeout(Duration::from_secs(10));
    }
    let total = counter.get().unwrap();
    assert!(total > 0, "the clients made no progress");
    let g = lock.acquire_timeout(Duration::from_secs(5)).unwrap();
    drop(g);
    let len = dict.len().unwrap() as u64;
    drop((lock, counter, dict));
    m.shutdown().unwrap();
    (kills, total, len)
}

#[test]
fn soak_pool_and_manager() {
    let secs = soak_secs();
    let _t = Ctx::with_limit("soak", Duration::from_secs(secs * 2 + 240));
    let seed = std::env::var("IPCKIT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("soak: seed {seed} (IPCKIT_SOAK_SEED reruns it), {secs} s per half");
    // A first short round, so that lazily made things (the test support's
    // threads, allocator arenas) exist before the baseline is taken.
    pool_half(seed ^ 0x5555, 1);
    let (rss0, fds0, threads0) = footprint();
    let t = Instant::now();
    let [ok, limit, died, timeout, cancelled, refused] = pool_half(seed, secs);
    println!(
        "soak pool, {:?}: {ok} right answers, {limit} results over the limit, {refused} \
         arguments refused, {died} lost with a killed worker, {timeout} timed out, {cancelled} \
         cancelled",
        t.elapsed()
    );
    let t = Instant::now();
    let (kills, total, keys) = manager_half(seed.rotate_left(17), secs);
    println!(
        "soak manager, {:?}: {kills} clients SIGKILLed, {total} locked increments, {keys} keys",
        t.elapsed()
    );
    // Everything is back where it was.
    assert!(
        common::eventually(Duration::from_secs(10), || children() == (0, 0)),
        "children left (live, zombies): {:?}",
        children()
    );
    let (rss1, fds1, threads1) = footprint();
    println!(
        "soak footprint: RSS {rss0} -> {rss1} KiB, descriptors {fds0} -> {fds1}, threads \
         {threads0} -> {threads1}"
    );
    assert!(fds1 <= fds0 + 2, "descriptors {fds0} -> {fds1}");
    assert!(threads1 <= threads0 + 2, "threads {threads0} -> {threads1}");
    assert!(rss1 < rss0 + 32 * 1024, "RSS {rss0} -> {rss1} KiB");
    assert!(ok > 0 && limit > 0 && refused > 0);
}
