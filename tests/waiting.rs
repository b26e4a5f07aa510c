//! The one waiting primitive between real processes (issue 14): `close`
//! releases every waiter at once and is never slept through; waiters
//! SIGKILLed while asleep, on every primitive, neither wedge the object nor
//! tax it for good. Run with `IPCKIT_MEMBARRIER=off` too (`.ci/run` does):
//! the same tests then cover the fenced fallback.

mod common;

ipckit::test_support!();

use std::time::{Duration, Instant};

use common::{Ctx, eventually, spawn};
use ipckit::queue::Queue;
use ipckit::sync::{Barrier, Condvar, Event, Mutex, Semaphore};
use ipckit::{ErrorKind, Value};

/// Longer than any wake-up should take, far shorter than a sleep slice (1 s).
const PROMPT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// close
// ---------------------------------------------------------------------------

/// Fills the queue, signals, then blocks in `put` until the queue closes;
/// returns how long the blocked put took and its error kind.
fn child_blocked_producer((q, full): (Queue<()>, Event)) -> (u64, String) {
    while q.try_put_bytes(&[7u8; 512]).is_ok() {}
    full.set();
    let start = Instant::now();
    let e = q.put_bytes(&[7u8; 512]).unwrap_err();
    (
        start.elapsed().as_millis() as u64,
        format!("{:?}", e.kind()),
    )
}

fn child_blocked_consumer((q, waiting): (Queue<u64>, Event)) -> (u64, String) {
    waiting.set();
    let start = Instant::now();
    let e = q.get().unwrap_err();
    (
        start.elapsed().as_millis() as u64,
        format!("{:?}", e.kind()),
    )
}

#[test]
fn close_releases_a_producer_blocked_on_a_full_queue_at_once() {
    let _t = Ctx::new("close_full");
    let q = Queue::<()>::new(4096).unwrap();
    let full = Event::new().unwrap();
    let c = spawn(child_blocked_producer, (q.clone(), full.clone()));
    full.wait_timeout(Duration::from_secs(30)).unwrap();
    // Let it go to sleep on the full ring.
    std::thread::sleep(Duration::from_millis(100));
    let closed_at = Instant::now();
    q.close();
    let (_, kind) = c.join().unwrap();
    assert_eq!(kind, "Closed");
    assert!(
        closed_at.elapsed() < PROMPT,
        "released {:?} after close",
        closed_at.elapsed()
    );
}

#[test]
fn close_releases_a_consumer_blocked_on_an_empty_queue_at_once() {
    let _t = Ctx::new("close_empty");
    let q = Queue::<u64>::new(4096).unwrap();
    let waiting = Event::new().unwrap();
    let c = spawn(child_blocked_consumer, (q.clone(), waiting.clone()));
    waiting.wait_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let closed_at = Instant::now();
    q.close();
    let (_, kind) = c.join().unwrap();
    assert_eq!(kind, "Closed");
    assert!(closed_at.elapsed() < PROMPT, "{:?}", closed_at.elapsed());
}

#[test]
fn two_thousand_close_versus_get_races_never_sleep_a_slice() {
    let mut slowest = Duration::ZERO;
    for _ in 0..2000 {
        let q = Queue::<u64>::new(4096).unwrap();
        let q2 = q.clone();
        let getter = std::thread::spawn(move || {
            let start = Instant::now();
            let e = q2.get().unwrap_err();
            assert!(e.is_closed(), "{e}");
            start.elapsed()
        });
        // Close while the getter is somewhere between entering `get` and
        // sleeping: sometimes before it registers, sometimes after.
        std::thread::yield_now();
        q.close();
        slowest = slowest.max(getter.join().unwrap());
    }
    assert!(slowest < PROMPT, "a get slept {slowest:?} through a close");
}

// ---------------------------------------------------------------------------
// Waiters SIGKILLed while asleep
// ---------------------------------------------------------------------------

fn child_sleep_in_get(q: Queue<u64>) {
    let _ = q.get();
}

fn child_sleep_in_put(q: Queue<u64>) {
    loop {
        if q.put(&1).is_err() {
            return;
        }
    }
}

/// The queue's registered sleepers, as `ipckit inspect` shows them.
fn registered(name: &str) -> (u64, u64) {
    let info = ipckit::admin::inspect(name).unwrap();
    let q = info.queue.expect("a queue");
    (q.waiting_consumers as u64, q.waiting_producers as u64)
}

#[test]
fn queue_waiters_killed_asleep_neither_wedge_nor_tax_the_queue() {
    let t = Ctx::new("queue_killed_sleepers");
    let name = t.name("q");
    let q = Queue::<u64>::create(&name, 4096).unwrap();
    // Three consumers asleep on the empty queue, killed there.
    let consumers: Vec<_> = (0..3)
        .map(|_| spawn(child_sleep_in_get, q.clone()))
        .collect();
    assert!(eventually(Duration::from_secs(20), || registered(&name).0 >= 1));
    std::thread::sleep(Duration::from_millis(200));
    for c in &consumers {
        c.kill().unwrap();
    }
    for c in consumers {
        assert!(c.join().unwrap_err().is_process_died());
    }
    // One put wakes nobody and repairs the registrations.
    q.put(&1).unwrap();
    assert_eq!(
        registered(&name).0,
        0,
        "stale consumer registrations remain"
    );
    assert_eq!(q.get().unwrap(), 1);

    // Three producers asleep on the full queue, killed there.
    let producers: Vec<_> = (0..3)
        .map(|_| spawn(child_sleep_in_put, q.clone()))
        .collect();
    assert!(eventually(Duration::from_secs(20), || registered(&name).1 >= 1));
    std::thread::sleep(Duration::from_millis(200));
    for p in &producers {
        p.kill().unwrap();
    }
    for p in producers {
        assert!(p.join().unwrap_err().is_process_died());
    }
    while q.try_get().is_ok() {}
    assert_eq!(
        registered(&name).1,
        0,
        "stale producer registrations remain"
    );
    // The queue works and wakes a live waiter in another process.
    let live = spawn(child_sleep_in_get_value, q.clone());
    std::thread::sleep(Duration::from_millis(100));
    q.put(&42).unwrap();
    assert_eq!(live.join().unwrap(), 42);
}

fn child_sleep_in_get_value(q: Queue<u64>) -> u64 {
    q.get().unwrap()
}

fn child_condvar_sleeper((m, cv, awake): (Mutex<u32>, Condvar, Value<u32>)) {
    let g = m.lock().unwrap();
    let _g = cv.wait_while(g, |n| *n == 0).unwrap();
    awake.update(|a| *a += 1).unwrap();
}

fn child_event_sleeper((e, awake): (Event, Value<u32>)) {
    e.wait();
    awake.update(|a| *a += 1).unwrap();
}

fn child_semaphore_sleeper((s, awake): (Semaphore, Value<u32>)) {
    s.acquire().unwrap().forget();
    awake.update(|a| *a += 1).unwrap();
}

fn child_barrier_sleeper((b, awake): (Barrier, Value<u32>)) {
    b.wait().unwrap();
    awake.update(|a| *a += 1).unwrap();
}

/// Starts three sleepers with `start`, kills two of them asleep, then has
/// `release` wake; the survivor must wake. Returns how long that took.
fn kill_two_then_wake_the_third<P>(
    start: impl Fn() -> P,
    kill: impl Fn(&P),
    join: impl Fn(P) -> bool,
    release: impl FnOnce(),
) -> Duration {
    let sleepers: Vec<P> = (0..3).map(|_| start()).collect();
    std::thread::sleep(Duration::from_millis(300));
    kill(&sleepers[0]);
    kill(&sleepers[1]);
    let released = Instant::now();
    release();
    let mut survivors = 0;
    for s in sleepers {
        if join(s) {
            survivors += 1;
        }
    }
    assert_eq!(survivors, 1);
    released.elapsed()
}

#[test]
fn sync_waiters_killed_asleep_do_not_wedge_the_living() {
    let _t = Ctx::new("sync_killed_sleepers");
    type P = ipckit::process::Process<()>;
    let kill = |p: &P| p.kill().unwrap();
    let join = |p: P| p.join().is_ok();

    // Condvar.
    let m = Mutex::new(0u32).unwrap();
    let cv = Condvar::new().unwrap();
    let awake = Value::new(0u32).unwrap();
    let took = kill_two_then_wake_the_third(
        || {
            spawn(
                child_condvar_sleeper,
                (m.clone(), cv.clone(), awake.clone()),
            )
        },
        kill,
        join,
        || {
            *m.lock().unwrap() = 1;
            cv.notify_all();
        },
    );
    assert_eq!(awake.get().unwrap(), 1);
    assert!(took < Duration::from_secs(5), "condvar {took:?}");

    // Event.
    let e = Event::new().unwrap();
    let awake = Value::new(0u32).unwrap();
    kill_two_then_wake_the_third(
        || spawn(child_event_sleeper, (e.clone(), awake.clone())),
        kill,
        join,
        || e.set(),
    );
    assert_eq!(awake.get().unwrap(), 1);
    // Clear, then the event works again for a new waiter.
    e.clear();
    let again = spawn(child_event_sleeper, (e.clone(), awake.clone()));
    std::thread::sleep(Duration::from_millis(50));
    e.set();
    again.join().unwrap();
    assert_eq!(awake.get().unwrap(), 2);

    // Semaphore: one permit released for three sleepers, two of them dead.
    let s = Semaphore::new(0).unwrap();
    let awake = Value::new(0u32).unwrap();
    kill_two_then_wake_the_third(
        || spawn(child_semaphore_sleeper, (s.clone(), awake.clone())),
        kill,
        join,
        || s.release().unwrap(),
    );
    assert_eq!(awake.get().unwrap(), 1);

    // Barrier of three: two parties killed while waiting (they arrived),
    // the third arrival is ours; the one survivor passes.
    let b = Barrier::new(3).unwrap();
    let awake = Value::new(0u32).unwrap();
    let sleepers: Vec<P> = (0..2)
        .map(|_| spawn(child_barrier_sleeper, (b.clone(), awake.clone())))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    sleepers[0].kill().unwrap();
    b.wait_timeout(Duration::from_secs(10)).unwrap();
    let mut survivors = 0;
    for s in sleepers {
        survivors += usize::from(s.join().is_ok());
    }
    assert_eq!(survivors, 1);
    assert_eq!(awake.get().unwrap(), 1);
}

#[test]
fn a_semaphore_exhausted_try_acquire_does_not_scan_every_call() {
    // Correctness part of the cost fix: permits of a dead holder still come
    // back to try_acquire callers (within a scan interval), and a living
    // holder's permits are never taken.
    let _t = Ctx::new("sem_try_acquire");
    let s = Semaphore::new(1).unwrap();
    let held = Event::new().unwrap();
    let c = spawn(child_hold_permit, (s.clone(), held.clone()));
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    for _ in 0..1000 {
        assert_eq!(
            s.try_acquire().unwrap_err().kind(),
            ErrorKind::WouldBlock,
            "a live holder's permit was taken"
        );
    }
    c.kill().unwrap();
    let _ = c.join();
    assert!(eventually(Duration::from_secs(5), || s
        .try_acquire()
        .map(|p| p.forget())
        .is_ok()));
}

fn child_hold_permit((s, held): (Semaphore, Event)) {
    let _p = s.acquire().unwrap();
    held.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn many_threads_sleeping_and_waking_lose_no_message() {
    // Four consumer threads sleep and wake on one queue while bursts of
    // messages arrive (each burst's first wake-up may find a registration
    // whose sleeper is not asleep yet, and repair): every message arrives.
    let q = Queue::<u64>::new(4096).unwrap();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = 0u64;
                loop {
                    match q.get() {
                        Ok(_) => got += 1,
                        Err(e) if e.is_closed() => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..20_000u64 {
        q.put(&i).unwrap();
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    q.close();
    let total: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, 20_000);
}

// ---------------------------------------------------------------------------
// A stream whose producer is stopped mid-message
// ---------------------------------------------------------------------------

const BIG: usize = 1 << 20;

fn big_message() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn child_put_big(q: Queue<()>) {
    q.put_bytes(&big_message()).unwrap();
}

fn child_get_timeout((q, ms): (Queue<()>, u64)) -> (u64, String) {
    let start = Instant::now();
    let mut buf = Vec::new();
    let r = q.get_bytes_into_timeout(&mut buf, Duration::from_millis(ms));
    let kind = match r {
        Ok(()) => format!("got {} bytes", buf.len()),
        Err(e) => format!("{:?}", e.kind()),
    };
    (start.elapsed().as_millis() as u64, kind)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn a_stopped_stream_producer_blocks_no_deadline_and_loses_nothing() {
    let t = Ctx::with_limit("stopped_stream", Duration::from_secs(120));
    let name = t.name("q");
    let q = Queue::<()>::create(&name, 64 << 10).unwrap();
    let producer = spawn(child_put_big, q.clone());
    // Wait until the producer is inside its stream with the ring full.
    assert!(eventually(Duration::from_secs(20), || q.used_bytes()
        > q.capacity() / 2));
    signal(producer.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(50));

    // try_get reads what is there and returns at once, keeping its part.
    let mut buf = Vec::new();
    let start = Instant::now();
    let e = q.try_get_bytes_into(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    assert!(
        start.elapsed() < PROMPT,
        "try_get took {:?}",
        start.elapsed()
    );

    // `ipckit inspect` shows who keeps the first part.
    let info = ipckit::admin::queue_info(&name).unwrap();
    assert_eq!(info.partial_reader, Some(std::process::id()));

    // Another consumer process: its get_timeout honours its timeout.
    let (ms, kind) = spawn(child_get_timeout, (q.clone(), 200)).join().unwrap();
    assert_eq!(kind, "Timeout");
    assert!(
        (200..2000).contains(&ms),
        "a 200 ms get_timeout returned after {ms} ms"
    );
    // A get_timeout in this process resumes the same message and times
    // out again while the producer stays stopped.
    let e = q
        .get_bytes_into_timeout(&mut buf, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");

    // Resume the producer: the whole message arrives, intact, once.
    signal(producer.pid(), libc::SIGCONT);
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf.len(), BIG);
    assert!(buf == big_message(), "the resumed message is torn");
    producer.join().unwrap();
    assert!(q.is_empty());
    assert_eq!(
        ipckit::admin::queue_info(&name).unwrap().partial_reader,
        None
    );
    assert_eq!(
        q.try_get_bytes_into(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
}
