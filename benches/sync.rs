//! Synchronisation benchmarks.
//!
//! - `lock_unlock`: uncontended lock + increment + unlock, ipckit's robust
//!   process-shared `Mutex` beside `std::sync::Mutex` (process-private).
//! - `pingpong`: one round trip between two processes (a ping and its pong),
//!   through ipckit `Event`s, through an ipckit `Mutex` + `Condvar`, and, as
//!   baselines in the same run, through a raw shared futex word (no spinning:
//!   the floor when the peer sleeps), a pipe pair and a unix socketpair.
//!
//! - `dead_sleepers`: uncontended `put` + `get` of a 64-byte message on a
//!   queue, fresh, then after three consumers SIGKILLed while asleep on it
//!   (empty) and three producers SIGKILLed while asleep on it (full): their
//!   registrations must not tax every later commit (issue 14's target:
//!   ≤ 1.5× the fresh figure).
//!
//! - `semaphore_try_acquire`: a successful `try_acquire` (and the permit's
//!   release), beside one on a semaphore exhausted by 8 live holder
//!   processes (which must not read `/proc` for every holder on every call).
//!
//! Run: `cargo bench --bench sync` (add `IPCKIT_BENCH_PIN=1` to pin parent
//! and child to CPUs 0 and 1). The child side of each ping-pong is this
//! same binary, re-executed with `IPCKIT_BENCH_CHILD` set.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};

mod common;
use common::{PING, PONG, STOP, futex_await, futex_set, hex, pin_to, unhex, word};
use ipckit::queue::Queue;
use ipckit::sync::{Condvar, Event, Mutex, Semaphore};
use ipckit::{Segment, Value};

const ROLE: &str = "IPCKIT_BENCH_CHILD";
const ARG: &str = "IPCKIT_BENCH_ARG";

fn spawn_child<A: serde::Serialize>(role: &str, arg: &A) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, role)
        .env(ARG, hex(&postcard::to_allocvec(arg).unwrap()));
    cmd
}

fn child_arg<A: serde::de::DeserializeOwned>() -> A {
    postcard::from_bytes(&unhex(&std::env::var(ARG).unwrap())).unwrap()
}

// ---------------------------------------------------------------------------

fn lock_unlock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_unlock");
    let m = Mutex::new(0u64).unwrap();
    g.bench_function("ipckit_mutex", |b| {
        b.iter(|| {
            *m.lock().unwrap() += 1;
        })
    });
    let v = Value::new(0u64).unwrap();
    g.bench_function("ipckit_value_update", |b| {
        b.iter(|| v.update(|x| *x += 1).unwrap())
    });
    let s = std::sync::Mutex::new(0u64);
    g.bench_function("std_mutex", |b| {
        b.iter(|| {
            *s.lock().unwrap() += 1;
        })
    });
    g.finish();
    black_box((m, v, s));
}

// ---------------------------------------------------------------------------

/// A running ping-pong peer and how to do one round trip with it.
trait Peer {
    fn round_trip(&mut self);
    fn stop(self: Box<Self>);
}

struct EventPeer {
    ping: Event,
    pong: Event,
    stop: Value<u32>,
    child: Child,
}

impl Peer for EventPeer {
    fn round_trip(&mut self) {
        self.ping.set();
        self.pong.wait();
        self.pong.clear();
    }
    fn stop(mut self: Box<Self>) {
        self.stop.set(1).unwrap();
        self.ping.set();
        self.child.wait().unwrap();
    }
}

fn event_child() {
    let (ping, pong, stop): (Event, Event, Value<u32>) = child_arg();
    loop {
        ping.wait();
        ping.clear();
        if stop.get().unwrap() != 0 {
            return;
        }
        pong.set();
    }
}

struct CondvarPeer {
    state: Mutex<u32>,
    cv: Condvar,
    child: Child,
}

// state: 0 idle, 1 ping, 2 pong, 3 stop
impl Peer for CondvarPeer {
    fn round_trip(&mut self) {
        let mut g = self.state.lock().unwrap();
        *g = 1;
        self.cv.notify_one();
        let mut g = self.cv.wait_while(g, |s| *s != 2).unwrap();
        *g = 0;
    }
    fn stop(mut self: Box<Self>) {
        *self.state.lock().unwrap() = 3;
        self.cv.notify_one();
        self.child.wait().unwrap();
    }
}

fn condvar_child() {
    let (state, cv): (Mutex<u32>, Condvar) = child_arg();
    let mut g = state.lock().unwrap();
    loop {
        g = cv.wait_while(g, |s| *s != 1 && *s != 3).unwrap();
        if *g == 3 {
            return;
        }
        *g = 2;
        cv.notify_one();
    }
}

struct FutexPeer {
    seg: Segment,
    child: Child,
}

impl Peer for FutexPeer {
    fn round_trip(&mut self) {
        let w = word(&self.seg);
        futex_set(w, PING);
        futex_await(w, PONG);
    }
    fn stop(mut self: Box<Self>) {
        futex_set(word(&self.seg), STOP);
        self.child.wait().unwrap();
    }
}

fn futex_child() {
    let seg: Segment = child_arg();
    common::futex_pong(&seg);
}

struct StreamPeer<W: Write, R: Read> {
    tx: Option<W>,
    rx: R,
    child: Child,
}

impl<W: Write, R: Read> Peer for StreamPeer<W, R> {
    fn round_trip(&mut self) {
        let mut b = [7u8];
        self.tx.as_mut().unwrap().write_all(&b).unwrap();
        self.rx.read_exact(&mut b).unwrap();
    }
    fn stop(mut self: Box<Self>) {
        // EOF ends a pipe child; a socket's other clone keeps it open, so kill.
        drop(self.tx.take());
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }
}

/// Echo one byte at a time from stdin to stdout (a pipe pair or a socket).
fn echo_child() {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut b = [0u8];
    while input.read_exact(&mut b).is_ok() {
        if output.write_all(&b).and_then(|()| output.flush()).is_err() {
            return;
        }
    }
}

fn start(kind: &str) -> Box<dyn Peer> {
    match kind {
        "ipckit_event" => {
            let (ping, pong, stop) = (
                Event::new().unwrap(),
                Event::new().unwrap(),
                Value::new(0u32).unwrap(),
            );
            let child = spawn_child("event", &(&ping, &pong, &stop))
                .spawn()
                .unwrap();
            Box::new(EventPeer {
                ping,
                pong,
                stop,
                child,
            })
        }
        "ipckit_mutex_condvar" => {
            let (state, cv) = (Mutex::new(0u32).unwrap(), Condvar::new().unwrap());
            let child = spawn_child("condvar", &(&state, &cv)).spawn().unwrap();
            Box::new(CondvarPeer { state, cv, child })
        }
        "raw_futex" => {
            let seg = Segment::new(64).unwrap();
            let child = spawn_child("futex", &seg).spawn().unwrap();
            Box::new(FutexPeer { seg, child })
        }
        "pipe" => {
            let mut child = spawn_child("echo", &())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let tx: ChildStdin = child.stdin.take().unwrap();
            let rx: ChildStdout = child.stdout.take().unwrap();
            Box::new(StreamPeer {
                tx: Some(tx),
                rx,
                child,
            })
        }
        "unix_socketpair" => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let theirs2 = theirs.try_clone().unwrap();
            let child = spawn_child("echo", &())
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::from(OwnedFd::from(theirs2)))
                .spawn()
                .unwrap();
            let rx = ours.try_clone().unwrap();
            Box::new(StreamPeer {
                tx: Some(ours),
                rx,
                child,
            })
        }
        other => panic!("unknown peer {other}"),
    }
}

fn pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong_round_trip");
    for kind in [
        "ipckit_event",
        "ipckit_mutex_condvar",
        "raw_futex",
        "pipe",
        "unix_socketpair",
    ] {
        let mut peer = start(kind);
        // Let the child get going before measuring.
        for _ in 0..1000 {
            peer.round_trip();
        }
        g.bench_function(kind, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    peer.round_trip();
                }
                t.elapsed()
            })
        });
        peer.stop();
    }
    g.finish();
}

// ---------------------------------------------------------------------------

fn sleep_get_child() {
    let q: Queue<u64> = child_arg();
    let _ = q.get();
}

fn sleep_put_child() {
    let q: Queue<u64> = child_arg();
    while q.put(&0).is_ok() {}
}

/// Starts three children of `role` on `q`, waits until they are asleep
/// (registered on the queue), and SIGKILLs them there.
fn kill_three_asleep(role: &str, q: &Queue<u64>, name: &str, registered: impl Fn(&str) -> u64) {
    let mut children: Vec<Child> = (0..3)
        .map(|_| spawn_child(role, q).spawn().expect("spawn a sleeper"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while registered(name) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the last of them reach the futex.
    std::thread::sleep(Duration::from_millis(100));
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

fn dead_sleepers(c: &mut Criterion) {
    let mut g = c.benchmark_group("dead_sleepers");
    let name = format!("ipckit-bench-dead-sleepers-{}", std::process::id());
    // Sleepers and the bench share one named queue; messages go through
    // the bytes API (64 B, as in the figure).
    let q = Queue::<u64>::create(&name, 4096).unwrap();
    let msg = [7u8; 64];
    let mut buf = Vec::with_capacity(64);
    let mut put_get = |b: &mut criterion::Bencher| {
        b.iter(|| {
            q.put_bytes(&msg).unwrap();
            q.get_bytes_into(&mut buf).unwrap();
            black_box(&buf);
        })
    };
    g.bench_function("queue_put_get_fresh", &mut put_get);
    let waiting = |n: &str, producers: bool| {
        ipckit::admin::inspect(n)
            .ok()
            .and_then(|i| i.queue)
            .map_or(0, |q| {
                if producers {
                    q.waiting_producers as u64
                } else {
                    q.waiting_consumers as u64
                }
            })
    };
    kill_three_asleep("sleep_get", &q, &name, |n| waiting(n, false));
    while q.try_put_bytes(&msg).is_ok() {}
    kill_three_asleep("sleep_put", &q, &name, |n| waiting(n, true));
    let mut drain = Vec::new();
    while q.try_get_bytes_into(&mut drain).is_ok() {}
    g.bench_function("queue_put_get_after_6_sleepers_killed", &mut put_get);
    g.finish();
}

fn hold_permit_child() {
    let (s, held): (Semaphore, Value<u32>) = child_arg();
    let permit = s.acquire().unwrap();
    held.update(|n| *n += 1).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        black_box(&permit);
    }
}

fn semaphore_try_acquire(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore_try_acquire");
    let free = Semaphore::new(1).unwrap();
    g.bench_function("available", |b| {
        b.iter(|| drop(black_box(free.try_acquire().unwrap())))
    });
    const HOLDERS: u32 = 8;
    let s = Semaphore::new(HOLDERS as u64).unwrap();
    let held = Value::new(0u32).unwrap();
    let mut holders: Vec<Child> = (0..HOLDERS)
        .map(|_| {
            spawn_child("hold_permit", &(s.clone(), held.clone()))
                .spawn()
                .expect("spawn a holder")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.get().unwrap() < HOLDERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    g.bench_function("exhausted_by_8_live_holders", |b| {
        b.iter(|| black_box(s.try_acquire().is_err()))
    });
    for h in &mut holders {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = lock_unlock, pingpong, dead_sleepers, semaphore_try_acquire
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        pin_to(1);
        match role.as_str() {
            "event" => event_child(),
            "condvar" => condvar_child(),
            "futex" => futex_child(),
            "echo" => echo_child(),
            "sleep_get" => sleep_get_child(),
            "sleep_put" => sleep_put_child(),
            "hold_permit" => hold_permit_child(),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    pin_to(0);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
