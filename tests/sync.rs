//! Process-shared synchronisation, tested between real processes.

mod common;

ipckit::test_support!();

use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::sync::{Barrier, Condvar, Event, LockError, Mutex, Semaphore};
use ipckit::{Array, ErrorKind, Value};

// ---------------------------------------------------------------------------
// Mutex: a holder killed while holding the lock
// ---------------------------------------------------------------------------

fn child_hold_mutex_forever((m, locked): (Mutex<u64>, Event)) {
    let mut g = m.lock().unwrap();
    *g = 7;
    locked.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn mutex_owner_killed_is_reported_and_recovered() {
    let t = Ctx::new("mutex_owner_killed");
    let m = Mutex::create(&t.name("m"), 0u64).unwrap();
    let locked = Event::new().unwrap();
    let c = spawn(child_hold_mutex_forever, (m.clone(), locked.clone()));
    locked.wait_timeout(Duration::from_secs(30)).unwrap();
    // The child holds the lock: we cannot take it.
    assert!(m.try_lock().unwrap_err().is_would_block());
    // Kill it without reaping: a zombie's robust locks are already released.
    c.kill().unwrap();
    let g = match m.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied(g)) => g,
        Ok(_) => panic!("expected OwnerDied, got the lock normally"),
        Err(e) => panic!("expected OwnerDied, got {e}"),
    };
    assert_eq!(*g, 7, "data written by the dead holder is visible");
    // Not marking it consistent: the next locker is told again.
    drop(g);
    let mut g = m.lock().unwrap_err().into_guard().expect("still OwnerDied");
    *g = 8;
    g.mark_consistent();
    drop(g);
    // From now on the lock is normal.
    for _ in 0..3 {
        let mut g = m.lock().unwrap();
        *g += 1;
    }
    assert_eq!(*m.lock().unwrap(), 11);
    assert!(c.join().unwrap_err().to_string().contains("SIGKILL"));
}

// ---------------------------------------------------------------------------
// Value: 4 processes × 100 000 increments
// ---------------------------------------------------------------------------

fn child_increment((v, n): (Value<u64>, u32)) {
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn value_counter_four_processes_exact() {
    let t = Ctx::new("value_counter");
    let v = Value::create(&t.name("counter"), 0u64).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| spawn(child_increment, (v.clone(), 100_000u32)))
        .collect();
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(v.get().unwrap(), 400_000);
}

#[test]
fn anonymous_value_counter_with_parent_participating() {
    let _t = Ctx::new("anon_value_counter");
    let v = Value::new(0u64).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| spawn(child_increment, (v.clone(), 20_000u32)))
        .collect();
    for _ in 0..20_000 {
        v.update(|x| *x += 1).unwrap();
    }
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(v.get().unwrap(), 60_000);
}

// ---------------------------------------------------------------------------
// Crash test: kill a writer at random points of a two-word update
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Pair {
    a: u64,
    b: u64,
}
// SAFETY: repr(C), two u64: no pointers, every bit pattern valid.
unsafe impl ipckit::ShmSafe for Pair {}

fn child_pair_writer((v, started): (Value<Pair>, Event)) {
    started.set();
    loop {
        let mut g = match v.lock() {
            Ok(g) => g,
            Err(LockError::OwnerDied(g)) => g, // the test repairs, not us
            Err(e) => panic!("{e}"),
        };
        g.a += 1;
        // Widen the window between the two halves of the update.
        for _ in 0..100 {
            std::hint::spin_loop();
        }
        g.b += 1;
        let a = g.a;
        drop(g);
        if a % 16 == 0 {
            // Sometimes be killed outside the lock too.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[test]
fn writer_killed_at_random_points_never_leaves_silent_corruption() {
    let _t = Ctx::new("pair_crash");
    let v = Value::new(Pair::default()).unwrap();
    let mut owner_died_seen = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    for _ in 0..25 {
        let started = Event::new().unwrap();
        let c = spawn(child_pair_writer, (v.clone(), started.clone()));
        started.wait_timeout(Duration::from_secs(30)).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(200 + seed % 5_000));
        c.kill().unwrap();
        assert!(c.join().unwrap_err().is_process_died());
        match v.lock() {
            Ok(g) => assert_eq!(g.a, g.b, "consistent state must satisfy the invariant"),
            Err(LockError::OwnerDied(mut g)) => {
                owner_died_seen += 1;
                assert!(
                    g.a == g.b || g.a == g.b + 1,
                    "torn at most by one step: {g:?}"
                );
                g.b = g.a;
                g.mark_consistent();
            }
            Err(e) => panic!("{e}"),
        }
    }
    let g = v.lock().unwrap();
    assert_eq!(g.a, g.b);
    assert!(g.a > 0);
    eprintln!(
        "owner died in {owner_died_seen} of 25 kills; final count {}",
        g.a
    );
}

// ---------------------------------------------------------------------------
// Condvar
// ---------------------------------------------------------------------------

fn child_condvar_waiter((m, cv, waiting, target): (Mutex<u32>, Condvar, Value<u32>, u32)) {
    let mut g = m.lock().unwrap();
    waiting.update(|w| *w += 1).unwrap();
    while *g < target {
        g = cv.wait(g).unwrap();
    }
}

#[test]
fn condvar_waiter_killed_while_waiting_wedges_nothing() {
    let t = Ctx::new("condvar_killed");
    let m = Mutex::create(&t.name("m"), 0u32).unwrap();
    let cv = Condvar::create(&t.name("cv")).unwrap();
    let waiting = Value::new(0u32).unwrap();

    let doomed = spawn(
        child_condvar_waiter,
        (m.clone(), cv.clone(), waiting.clone(), 99u32),
    );
    assert!(common::eventually(Duration::from_secs(30), || waiting
        .get()
        .unwrap()
        == 1));
    // Taking the lock proves the waiter released it inside `wait`.
    drop(m.lock().unwrap());
    doomed.kill().unwrap();
    assert!(doomed.join().unwrap_err().is_process_died());

    // A live waiter is still woken by notify_one, and the lock is free.
    let survivor = spawn(
        child_condvar_waiter,
        (m.clone(), cv.clone(), waiting.clone(), 1u32),
    );
    assert!(common::eventually(Duration::from_secs(30), || waiting
        .get()
        .unwrap()
        == 2));
    {
        let mut g = m.lock_timeout(Duration::from_secs(10)).unwrap();
        *g = 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut survivor = survivor;
    loop {
        cv.notify_one();
        match survivor.join_timeout(Duration::from_millis(20)) {
            Ok(()) => break,
            Err(e) if e.is_timeout() => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "survivor never woke");
    }
}

fn child_condvar_pong((m, cv, rounds): (Mutex<u32>, Condvar, u32)) {
    let mut g = m.lock().unwrap();
    for i in 0..rounds {
        // Wait for the parent's odd value, answer with the next even one.
        g = cv.wait_while(g, |v| *v != 2 * i + 1).unwrap();
        *g += 1;
        cv.notify_all();
    }
}

#[test]
fn condvar_ping_pong_between_processes() {
    let _t = Ctx::new("condvar_pingpong");
    let m = Mutex::new(0u32).unwrap();
    let cv = Condvar::new().unwrap();
    let rounds = 200;
    let c = spawn(child_condvar_pong, (m.clone(), cv.clone(), rounds));
    let mut g = m.lock().unwrap();
    for i in 0..rounds {
        *g = 2 * i + 1;
        cv.notify_all();
        g = cv.wait_while(g, |v| *v != 2 * i + 2).unwrap();
    }
    drop(g);
    c.join().unwrap();
}

// ---------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------

fn child_hold_permit_forever((s, held): (Semaphore, Event)) {
    let _p = s.acquire().unwrap();
    held.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn semaphore_permit_of_killed_holder_comes_back() {
    let t = Ctx::new("sem_killed");
    let s = Semaphore::create(&t.name("s"), 1).unwrap();
    let held = Event::new().unwrap();
    let c = spawn(child_hold_permit_forever, (s.clone(), held.clone()));
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(s.value(), 0);
    assert!(s.try_acquire().unwrap_err().is_would_block());
    c.kill().unwrap();
    // No reaping: a zombie holder counts as dead.
    let p = s
        .acquire_timeout(Duration::from_secs(10))
        .expect("the dead holder's permit is reclaimed");
    assert_eq!(s.value(), 0);
    drop(p);
    assert_eq!(s.value(), 1);
    assert!(c.join().unwrap_err().is_process_died());
}

fn child_bounded_worker((s, active, rounds): (Semaphore, Array<u32>, u32)) {
    for _ in 0..rounds {
        let _p = s.acquire().unwrap();
        {
            let mut a = active.lock().unwrap();
            a[0] += 1;
            a[1] = a[1].max(a[0]);
        }
        std::thread::sleep(Duration::from_micros(300));
        active.lock().unwrap()[0] -= 1;
    }
}

#[test]
fn semaphore_bounds_concurrency_across_processes() {
    let _t = Ctx::new("sem_bounds");
    let s = Semaphore::new(2).unwrap();
    let active = Array::new(&[0u32, 0]).unwrap(); // [now, max]
    let children: Vec<_> = (0..5)
        .map(|_| spawn(child_bounded_worker, (s.clone(), active.clone(), 30u32)))
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let a = active.to_vec().unwrap();
    assert_eq!(a[0], 0);
    assert!(
        (1..=2).contains(&a[1]),
        "max concurrency {} exceeds 2",
        a[1]
    );
    assert_eq!(s.value(), 2);
}

#[test]
fn semaphore_release_forget_and_bounds() {
    let t = Ctx::new("sem_api");
    let name = t.name("s");
    let s = Semaphore::builder(1).max(2).create(&name).unwrap();
    assert_eq!(s.max(), Some(2));
    s.release().unwrap();
    assert_eq!(s.value(), 2);
    assert_eq!(s.release().unwrap_err().kind(), ErrorKind::LimitExceeded);
    s.acquire().unwrap().forget();
    assert_eq!(s.value(), 1);
    let p = s.try_acquire().unwrap();
    assert_eq!(s.value(), 0);
    drop(p);
    assert_eq!(s.value(), 1);
    let other = Semaphore::open(&name).unwrap();
    assert_eq!(other.value(), 1);
    assert!(
        Semaphore::bounded(3).unwrap().release().unwrap_err().kind() == ErrorKind::LimitExceeded
    );
    let e = Semaphore::builder(3).max(2).new().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

// ---------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------

fn child_barrier_party(
    (b, marks, leaders, me, rounds): (Barrier, Array<u32>, Value<u32>, usize, u32),
) {
    for round in 1..=rounds {
        marks.set(me, round).unwrap();
        let r = b.wait_timeout(Duration::from_secs(30)).unwrap();
        if r.is_leader() {
            leaders.update(|l| *l += 1).unwrap();
        }
        // Everyone wrote this round's mark before anyone passed.
        let all = marks.to_vec().unwrap();
        assert!(all.iter().all(|&m| m >= round), "round {round}: {all:?}");
        b.wait_timeout(Duration::from_secs(30)).unwrap();
    }
}

#[test]
fn barrier_synchronises_three_processes() {
    let t = Ctx::new("barrier3");
    let b = Barrier::create(&t.name("b"), 3).unwrap();
    let marks = Array::new(&[0u32; 3]).unwrap();
    let leaders = Value::new(0u32).unwrap();
    let rounds = 20u32;
    let children: Vec<_> = (1..3)
        .map(|me| {
            spawn(
                child_barrier_party,
                (
                    b.clone(),
                    marks.clone(),
                    leaders.clone(),
                    me as usize,
                    rounds,
                ),
            )
        })
        .collect();
    for round in 1..=rounds {
        marks.set(0, round).unwrap();
        let r = b.wait_timeout(Duration::from_secs(30)).unwrap();
        assert!(r.index() < 3);
        if r.is_leader() {
            leaders.update(|l| *l += 1).unwrap();
        }
        assert!(marks.to_vec().unwrap().iter().all(|&m| m >= round));
        b.wait_timeout(Duration::from_secs(30)).unwrap();
    }
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(
        leaders.get().unwrap(),
        rounds,
        "exactly one leader per round"
    );
    assert_eq!(b.parties(), 3);
    assert!(!b.is_broken());
}

fn child_barrier_expect_broken((b, arrived): (Barrier, Event)) {
    arrived.set();
    let e = b.wait().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenBarrier, "{e}");
}

#[test]
fn barrier_timeout_breaks_it_for_other_processes_until_reset() {
    let _t = Ctx::new("barrier_break");
    let b = Barrier::new(3).unwrap();
    let arrived = Event::new().unwrap();
    let c = spawn(child_barrier_expect_broken, (b.clone(), arrived.clone()));
    arrived.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    let start = Instant::now();
    let e = b.wait_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    c.join().unwrap();
    assert!(b.is_broken());
    assert!(b.wait().unwrap_err().is_broken());
    b.reset();
    assert!(!b.is_broken());
    assert_eq!(b.n_waiting(), 0);

    // reset() while someone waits: that waiter fails with BrokenBarrier.
    let arrived = Event::new().unwrap();
    let c = spawn(child_barrier_expect_broken, (b.clone(), arrived.clone()));
    arrived.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    b.reset();
    c.join().unwrap();
    assert!(!b.is_broken());

    // abort() likewise.
    let arrived = Event::new().unwrap();
    let c = spawn(child_barrier_expect_broken, (b.clone(), arrived.clone()));
    arrived.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(common::eventually(Duration::from_secs(30), || b
        .n_waiting()
        == 1));
    b.abort();
    c.join().unwrap();
    assert!(b.is_broken());
}

// ---------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------

fn child_event_waiter((e, ready, woke): (Event, Semaphore, Value<u32>)) {
    ready.release().unwrap();
    e.wait_timeout(Duration::from_secs(30)).unwrap();
    woke.update(|w| *w += 1).unwrap();
}

#[test]
fn event_set_in_one_process_wakes_waiters_in_two_others() {
    let t = Ctx::new("event_wakes");
    let e = Event::create(&t.name("e")).unwrap();
    let ready = Semaphore::new(0).unwrap();
    let woke = Value::new(0u32).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| spawn(child_event_waiter, (e.clone(), ready.clone(), woke.clone())))
        .collect();
    for _ in 0..2 {
        ready
            .acquire_timeout(Duration::from_secs(30))
            .unwrap()
            .forget();
    }
    // Give them time to fall asleep on the futex.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(woke.get().unwrap(), 0);
    e.set();
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(woke.get().unwrap(), 2);
    assert!(e.is_set());
    e.clear();
    assert!(!e.is_set());
    assert!(e.try_wait().unwrap_err().is_would_block());
}

// ---------------------------------------------------------------------------
// Timeouts: never earlier than asked
// ---------------------------------------------------------------------------

fn child_hold_until_released((m, held, release): (Mutex<u32>, Event, Event)) {
    let _g = m.lock().unwrap();
    held.set();
    release.wait_timeout(Duration::from_secs(60)).unwrap();
}

fn assert_timeout_after<T>(
    what: &str,
    wait: Duration,
    f: impl FnOnce() -> Result<T, ipckit::Error>,
) {
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    match r {
        Err(e) => assert!(e.is_timeout(), "{what}: expected a timeout, got {e}"),
        Ok(_) => panic!("{what}: expected a timeout, got success"),
    }
    assert!(
        elapsed >= wait,
        "{what}: returned after {elapsed:?}, before {wait:?}"
    );
}

#[test]
fn every_timeout_variant_waits_at_least_as_long_as_asked() {
    let _t = Ctx::new("timeouts");
    let d = Duration::from_millis(30);
    let m = Mutex::new(0u32).unwrap();
    let held = Event::new().unwrap();
    let release = Event::new().unwrap();
    let c = spawn(
        child_hold_until_released,
        (m.clone(), held.clone(), release.clone()),
    );
    held.wait_timeout(Duration::from_secs(30)).unwrap();

    assert_timeout_after("Mutex::lock_timeout", d, || {
        m.lock_timeout(d).map(drop).map_err(Into::into)
    });
    assert_timeout_after("Mutex::lock_deadline", d, || {
        m.lock_deadline(Instant::now() + d)
            .map(drop)
            .map_err(Into::into)
    });
    assert!(m.try_lock().unwrap_err().is_would_block());
    release.set();
    c.join().unwrap();

    let s = Semaphore::new(0).unwrap();
    assert_timeout_after("Semaphore::acquire_timeout", d, || {
        s.acquire_timeout(d).map(drop)
    });
    assert_timeout_after("Semaphore::acquire_deadline", d, || {
        s.acquire_deadline(Instant::now() + d).map(drop)
    });
    assert!(s.try_acquire().unwrap_err().is_would_block());

    let e = Event::new().unwrap();
    assert_timeout_after("Event::wait_timeout", d, || e.wait_timeout(d));
    assert_timeout_after("Event::wait_deadline", d, || {
        e.wait_deadline(Instant::now() + d)
    });

    let b = Barrier::new(2).unwrap();
    assert_timeout_after("Barrier::wait_timeout", d, || b.wait_timeout(d));
    b.reset();
    assert_timeout_after("Barrier::wait_deadline", d, || {
        b.wait_deadline(Instant::now() + d)
    });

    let v = Value::new(1u8).unwrap();
    let g = v.lock().unwrap();
    let cv = Condvar::new().unwrap();
    let start = Instant::now();
    let (g, r) = cv.wait_timeout(g, d).unwrap();
    assert!(r.timed_out());
    assert!(start.elapsed() >= d);
    let start = Instant::now();
    let (_g, r) = cv.wait_timeout_while(g, d, |x| *x == 1).unwrap();
    assert!(r.timed_out());
    assert!(start.elapsed() >= d);
}

#[test]
fn relocking_from_the_same_thread_is_an_error_not_a_deadlock() {
    let m = Mutex::new(0u8).unwrap();
    let _g = m.lock().unwrap();
    let e = m.lock().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
}
