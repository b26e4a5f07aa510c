//! Integrity of the object layer between real processes (issue 13): a lock
//! whose holder panicked is reported like one whose holder was killed;
//! `get_many` never drops what it took; a message over the queue's limit is
//! refused where it enters; opening an object while its creator is still
//! initialising it is never `Corrupt`.

mod common;

ipckit::test_support!();

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::queue::Queue;
use ipckit::sync::{Event, LockError, Mutex};
use ipckit::{Array, ErrorKind, Value};

// ---------------------------------------------------------------------------
// Poisoning: a holder that panics leaves the lock marked
// ---------------------------------------------------------------------------

/// Writes half of an update under the lock, then panics.
fn child_panic_mid_update(m: Mutex<[u64; 2]>) {
    let mut g = m.lock().unwrap();
    g[0] += 1; // the invariant g[0] == g[1] is now broken
    panic!("a bug in the middle of an update");
}

/// Takes the lock expecting `OwnerDied`; returns the data it saw.
fn expect_owner_died(m: &Mutex<[u64; 2]>) -> [u64; 2] {
    match m.lock_timeout(Duration::from_secs(10)) {
        Err(LockError::OwnerDied(g)) => *g,
        Ok(g) => panic!("expected OwnerDied, got the lock normally with {:?}", *g),
        Err(e) => panic!("expected OwnerDied, got {e}"),
    }
}

#[test]
fn child_panicking_while_holding_a_mutex_is_reported_to_the_parent() {
    let t = Ctx::new("child_panic_mutex");
    let m = Mutex::create(&t.name("m"), [5u64, 5]).unwrap();
    let err = spawn(child_panic_mid_update, m.clone()).join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    // The half-done update is visible, and the lock says so.
    assert_eq!(expect_owner_died(&m), [6, 5]);
    // Until someone repairs the data and marks it consistent, every locker
    // is told again.
    assert_eq!(expect_owner_died(&m), [6, 5]);
    let mut g = m.lock().unwrap_err().into_guard().unwrap();
    g[1] = g[0];
    g.mark_consistent();
    drop(g);
    assert_eq!(*m.lock().unwrap(), [6, 6]);
}

#[test]
fn thread_panicking_while_holding_a_mutex_is_reported_like_std_poisoning() {
    let t = Ctx::new("thread_panic_mutex");
    let m = Mutex::create(&t.name("m"), [1u64, 1]).unwrap();
    let m2 = m.clone();
    let joined = std::thread::spawn(move || {
        let mut g = m2.lock().unwrap();
        g[1] += 10;
        panic!("boom");
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(expect_owner_died(&m), [1, 11]);
    // A guard dropped normally while the lock is poisoned keeps it poisoned.
    assert_eq!(expect_owner_died(&m), [1, 11]);
}

#[test]
fn a_panic_outside_the_guard_does_not_poison() {
    // A guard taken while this thread is already unwinding (a lock in a
    // Drop during a panic) must not poison the lock when it is dropped:
    // std's rule, "poisoned if the panic started while the guard was held".
    let m = Mutex::new(0u64).unwrap();
    struct LockOnDrop(Mutex<u64>);
    impl Drop for LockOnDrop {
        fn drop(&mut self) {
            *self.0.lock().unwrap() += 1;
        }
    }
    let m2 = m.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _l = LockOnDrop(m2);
        panic!("unrelated");
    }));
    assert!(r.is_err());
    assert_eq!(*m.lock().expect("not poisoned"), 1);
}

fn child_value_update_panics(v: Value<u64>) {
    v.update(|x| {
        *x = 99;
        panic!("closure panicked");
    })
    .unwrap();
}

fn child_array_panics(a: Array<u32>) {
    let mut g = a.lock().unwrap();
    g[3] = 7;
    panic!("array holder panicked");
}

#[test]
fn value_and_array_holders_that_panic_are_reported() {
    let t = Ctx::new("value_array_panic");
    let v = Value::create(&t.name("v"), 1u64).unwrap();
    assert!(spawn(child_value_update_panics, v.clone()).join().is_err());
    let e = v.get().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OwnerDied, "{e}");
    let g = v.lock().unwrap_err().into_guard().unwrap();
    assert_eq!(*g, 99);
    g.mark_consistent();
    drop(g);
    assert_eq!(v.get().unwrap(), 99);

    let a = Array::create(&t.name("a"), &[0u32; 8]).unwrap();
    assert!(spawn(child_array_panics, a.clone()).join().is_err());
    assert_eq!(a.get(3).unwrap_err().kind(), ErrorKind::OwnerDied);
    // Same thread, in-process: update closure panics.
    let v2 = Value::new(5u32).unwrap();
    let r = std::panic::catch_unwind(|| v2.update(|x| panic!("{x}")));
    assert!(r.is_err());
    assert_eq!(v2.get().unwrap_err().kind(), ErrorKind::OwnerDied);
}

// ---------------------------------------------------------------------------
// Queues: get_many keeps what it took; limits are checked at put
// ---------------------------------------------------------------------------

/// Drains `q` with `get_many(max)` until it is closed and empty, collecting
/// every good value and counting the errors (bad messages) reported.
fn drain_many(q: &Queue<u64>, max: usize) -> (Vec<u64>, usize) {
    let mut got = Vec::new();
    let mut errors = 0;
    loop {
        match q.get_many(max) {
            Ok(v) => got.extend(v),
            Err(e) if e.is_closed() => return (got, errors),
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::LimitExceeded | ErrorKind::Codec),
                    "{e}"
                );
                errors += 1;
                assert!(errors < 100, "too many errors: {e}");
            }
        }
    }
}

#[test]
fn get_many_with_an_oversized_message_in_the_middle_loses_nothing() {
    let t = Ctx::new("get_many_oversized");
    let name = t.name("q");
    let q: Queue<u64> = Queue::create(&name, 1 << 16).unwrap();
    for i in 0..3u64 {
        q.put(&i).unwrap();
    }
    q.put_bytes(&[0u8; 600]).unwrap(); // fits the ring, over the consumer's limit
    for i in 3..6u64 {
        q.put(&i).unwrap();
    }
    q.close();
    let mut consumer = q.clone();
    consumer.set_max_message_size(100);
    let (got, errors) = drain_many(&consumer, 10);
    assert_eq!(got, (0..6).collect::<Vec<_>>(), "every good message once");
    assert_eq!(errors, 1, "the oversized message is reported once");
}

#[test]
fn get_many_with_an_undecodable_message_in_the_middle_loses_nothing() {
    let q: Queue<u64> = Queue::new(1 << 16).unwrap();
    for i in 0..3u64 {
        q.put(&i).unwrap();
    }
    // 0xff repeated is not a valid postcard varint for a u64 (too long).
    q.put_bytes(&[0xff; 12]).unwrap();
    for i in 3..7u64 {
        q.put(&i).unwrap();
    }
    q.close();
    let (got, errors) = drain_many(&q, 5);
    assert_eq!(got, (0..7).collect::<Vec<_>>());
    assert_eq!(errors, 1);
}

fn child_get_many(q: Queue<u64>) -> (Vec<u64>, usize) {
    drain_many(&q, 4)
}

#[test]
fn get_many_between_processes_with_bad_messages_interleaved() {
    let q: Queue<u64> = Queue::new(1 << 20).unwrap();
    let mut bad = 0;
    for i in 0..1000u64 {
        q.put(&i).unwrap();
        if i % 97 == 13 {
            q.put_bytes(&[0xff; 12]).unwrap();
            bad += 1;
        }
    }
    q.close();
    let a = spawn(child_get_many, q.clone());
    let b = spawn(child_get_many, q.clone());
    let (ga, ea) = a.join().unwrap();
    let (gb, eb) = b.join().unwrap();
    let all: BTreeSet<u64> = ga.iter().chain(&gb).copied().collect();
    assert_eq!(ga.len() + gb.len(), 1000, "no duplicates, nothing lost");
    assert_eq!(all, (0..1000).collect());
    assert_eq!(ea + eb, bad);
}

#[test]
fn a_message_over_the_limit_is_refused_at_put() {
    let mut q: Queue<Vec<u8>> = Queue::new(1 << 16).unwrap();
    q.set_max_message_size(1000);
    let e = q.put(&vec![7u8; 2000]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    let e = q.put_bytes(&[0u8; 1001]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(q.len(), 0, "nothing was queued");
    q.put(&vec![1u8; 10]).unwrap();
    assert_eq!(q.get().unwrap(), vec![1u8; 10]);
}

// ---------------------------------------------------------------------------
// Opening races creating: never Corrupt
// ---------------------------------------------------------------------------

fn race_seconds() -> f64 {
    std::env::var("IPCKIT_RACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0)
}

/// Creates and drops the named value as fast as it can until `stop` is set.
fn child_create_drop_loop((name, stop): (String, Event)) -> u64 {
    let mut cycles = 0u64;
    while !stop.is_set() {
        match Value::create(&name, 42u64) {
            Ok(v) => drop(v),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("create: {e}"),
        }
        cycles += 1;
    }
    cycles
}

#[test]
fn opening_while_the_creator_initialises_is_never_corrupt() {
    let t = Ctx::with_limit("open_race", Duration::from_secs(300));
    let name = t.name("v");
    let stop = Event::new().unwrap();
    let creator = spawn(child_create_drop_loop, (name.clone(), stop.clone()));
    let end = Instant::now() + Duration::from_secs_f64(race_seconds());
    let (mut opened, mut absent, mut uninit, mut corrupt) = (0u64, 0u64, 0u64, Vec::new());
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let r = if i % 4 == 0 {
            Value::<u64>::open_or_create(&name, 42)
        } else {
            Value::<u64>::open(&name)
        };
        match r {
            Ok(v) => {
                // The creator's value, or ours: never a torn one.
                assert_eq!(v.get().unwrap(), 42);
                opened += 1;
            }
            Err(e) => match e.kind() {
                ErrorKind::NotFound => absent += 1,
                ErrorKind::Uninitialized => uninit += 1,
                _ => corrupt.push(e.to_string()),
            },
        }
    }
    stop.set();
    let cycles = creator.join().unwrap();
    eprintln!(
        "{cycles} create/drop cycles; {opened} opened, {absent} absent, {uninit} uninitialised"
    );
    assert!(
        corrupt.is_empty(),
        "{} errors other than NotFound/Uninitialized, e.g. {:?}",
        corrupt.len(),
        &corrupt[..corrupt.len().min(5)]
    );
    assert!(opened > 0 && cycles > 0, "the race was exercised");
}

// ---------------------------------------------------------------------------
// A handle that cannot be opened in the child keeps its error's kind
// ---------------------------------------------------------------------------

/// Serialises as a `Value<u64>`'s handle and deserialises as a
/// `Mutex<u64>`: in the child, the handle opens the wrong kind of object.
struct WrongHandle {
    value: Option<Value<u64>>,
    mutex: Option<Mutex<u64>>,
}

impl serde::Serialize for WrongHandle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.as_ref().expect("the parent's side").serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for WrongHandle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(WrongHandle {
            value: None,
            mutex: Some(Mutex::deserialize(d)?),
        })
    }
}

fn child_uses_mutex(h: WrongHandle) -> u64 {
    *h.mutex.expect("decoded").lock().unwrap()
}

#[test]
fn a_handle_the_child_cannot_open_reports_why() {
    let t = Ctx::new("wrong_handle");
    let v = Value::create(&t.name("v"), 5u64).unwrap();
    let arg = WrongHandle {
        value: Some(v.clone()),
        mutex: None,
    };
    let e = spawn(child_uses_mutex, arg).join().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKind, "{e}");
    assert!(e.to_string().contains("not a Mutex"), "{e}");
    // In-process decoding says the same.
    let bytes = ipckit::codec::encode(&v).unwrap();
    let e = ipckit::codec::decode::<Mutex<u64>>(&bytes).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKind, "{e}");
}
