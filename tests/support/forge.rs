//! Objects whose bytes another process overwrote, and their ordinary
//! operations, each with a short deadline. Shared by `tests/untrusted.rs`
//! (every word of every kind, in children) and the fuzz target
//! `objects_forged` (`#[path]`-included there): public API only.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ipckit::queue::Queue;
use ipckit::sync::{Barrier, Condvar, Event, LockError, Mutex, MutexGuard, Semaphore};
use ipckit::{Array, Segment, Value};

/// The object header's length: the kind's own state starts after it.
pub const HEADER: usize = 128;
/// Where the header's state word lies (see `ipckit::layout`).
pub const STATE_OFFSET: usize = 8;

/// The kinds, by index.
pub const KINDS: [&str; 8] = [
    "Value",
    "Array",
    "Mutex",
    "Semaphore",
    "Event",
    "Barrier",
    "Condvar",
    "Queue",
];

/// A fresh object of one kind at the start of a segment of its own.
pub enum Object {
    Value(Value<u64>),
    Array(Array<u32>),
    Mutex(Mutex<u64>),
    Semaphore(Semaphore),
    Event(Event),
    Barrier(Barrier),
    Condvar(Condvar, Mutex<u64>),
    Queue(Queue<u64>),
}

fn segment(len: usize) -> Segment {
    Segment::new(len).expect("an anonymous segment")
}

impl Object {
    /// Creates kind `kind` (an index into [`KINDS`]) in a fresh anonymous
    /// segment: returns the object and the segment.
    pub fn create(kind: usize) -> (Object, Segment) {
        match kind % KINDS.len() {
            0 => {
                let s = segment(Value::<u64>::size_in_segment());
                (Object::Value(Value::create_in(&s, 0, 41).unwrap()), s)
            }
            1 => {
                let s = segment(Array::<u32>::size_in_segment(8).unwrap());
                (
                    Object::Array(Array::create_in(&s, 0, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap()),
                    s,
                )
            }
            2 => {
                let s = segment(Mutex::<u64>::size_in_segment());
                (Object::Mutex(Mutex::create_in(&s, 0, 5).unwrap()), s)
            }
            3 => {
                let builder = Semaphore::builder(2);
                let s = segment(builder.size_in_segment());
                (Object::Semaphore(builder.create_in(&s, 0).unwrap()), s)
            }
            4 => {
                let s = segment(Event::size_in_segment());
                (Object::Event(Event::create_in(&s, 0).unwrap()), s)
            }
            5 => {
                let s = segment(Barrier::size_in_segment());
                (Object::Barrier(Barrier::create_in(&s, 0, 2).unwrap()), s)
            }
            6 => {
                let s = segment(Condvar::size_in_segment());
                (
                    Object::Condvar(Condvar::create_in(&s, 0).unwrap(), Mutex::new(0).unwrap()),
                    s,
                )
            }
            _ => {
                let q = Queue::<u64>::new(1024).unwrap();
                q.try_put(&7).unwrap();
                let s = q.segment().clone();
                (Object::Queue(q), s)
            }
        }
    }

    /// Opens kind `kind` afresh from `seg` (whose header may be forged).
    pub fn open(kind: usize, seg: &Segment) -> Option<Object> {
        match kind % KINDS.len() {
            0 => Value::open_in(seg, 0).ok().map(Object::Value),
            1 => Array::open_in(seg, 0).ok().map(Object::Array),
            2 => Mutex::open_in(seg, 0).ok().map(Object::Mutex),
            3 => Semaphore::open_in(seg, 0).ok().map(Object::Semaphore),
            4 => Event::open_in(seg, 0).ok().map(Object::Event),
            5 => Barrier::open_in(seg, 0).ok().map(Object::Barrier),
            6 => Condvar::open_in(seg, 0)
                .ok()
                .map(|c| Object::Condvar(c, Mutex::new(0).unwrap())),
            _ => Queue::open_in(seg, 0).ok().map(Object::Queue),
        }
    }

    /// The object's ordinary operations, each bounded by `step` where it
    /// can wait; returns the longest any single operation took. Every
    /// outcome is a value or an error; none may panic, crash or hang.
    pub fn exercise(&self, step: Duration) -> Duration {
        let mut longest = Duration::ZERO;
        let mut timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            longest = longest.max(t.elapsed());
        };
        match self {
            Object::Value(v) => {
                timed(&mut || drop(v.get()));
                timed(&mut || drop(v.set(9)));
                timed(&mut || drop(v.update(|x| *x = x.wrapping_add(1))));
                timed(&mut || settle(v.lock_timeout(step), |g| *g = g.wrapping_add(1)));
            }
            Object::Array(a) => {
                timed(&mut || drop(a.get(3)));
                timed(&mut || drop(a.set(7, 70)));
                timed(&mut || drop(a.to_vec()));
                timed(&mut || settle(a.try_lock(), |g| g[0] = g[0].wrapping_add(1)));
            }
            Object::Mutex(m) => {
                timed(&mut || settle(m.try_lock(), |g| *g = g.wrapping_add(1)));
                timed(&mut || settle(m.lock_timeout(step), |g| *g = g.wrapping_add(1)));
                let _ = m.owner_tid();
            }
            Object::Semaphore(s) => {
                timed(&mut || drop(s.try_acquire()));
                timed(&mut || drop(s.acquire_timeout(step)));
                timed(&mut || drop(s.release()));
                timed(&mut || drop(s.reclaim_dead_holders()));
                let _ = (s.value(), s.max());
            }
            Object::Event(e) => {
                timed(&mut || drop(e.try_wait()));
                timed(&mut || drop(e.wait_timeout(step)));
                timed(&mut || e.set());
                timed(&mut || drop(e.wait_timeout(step)));
                timed(&mut || e.clear());
            }
            Object::Barrier(b) => {
                let _ = (b.parties(), b.n_waiting(), b.is_broken());
                timed(&mut || drop(b.wait_timeout(step)));
                timed(&mut || b.reset());
                timed(&mut || drop(b.wait_timeout(step)));
            }
            Object::Condvar(c, m) => {
                timed(&mut || {
                    if let Ok(g) = m.lock() {
                        drop(c.wait_timeout(g, step));
                    }
                });
                timed(&mut || c.notify_one());
                timed(&mut || c.notify_all());
            }
            Object::Queue(q) => {
                timed(&mut || drop(q.try_get()));
                timed(&mut || drop(q.try_put(&8)));
                timed(&mut || drop(q.get_timeout(step)));
                timed(&mut || drop(q.put_timeout(&9, step)));
                let _ = (q.len(), q.used_bytes());
            }
        }
        longest
    }
}

/// Uses a guard however it came (a forged holder is taken over and
/// reported as `OwnerDied`), marking the data consistent again.
fn settle<T: ?Sized>(
    r: Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>>,
    use_it: impl FnOnce(&mut T),
) {
    match r {
        Ok(mut g) => use_it(&mut g),
        Err(LockError::OwnerDied(mut g)) => {
            use_it(&mut g);
            g.mark_consistent();
        }
        Err(LockError::Failed(_)) => {}
    }
}

/// Overwrites `len` bytes at `at` with `pattern` repeated.
pub fn forge(seg: &Segment, at: usize, len: usize, pattern: u64) {
    let end = (at + len).min(seg.len());
    if at >= end {
        return;
    }
    let bytes: Vec<u8> = (at..end).map(|i| pattern.to_le_bytes()[i % 8]).collect();
    seg.write_at(at, &bytes).unwrap();
}

/// A small deterministic generator (xorshift64*), for seeds.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Patterns each word is overwritten with in turn.
pub const PATTERNS: [u64; 5] = [
    0,
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
    0x0000_0001_0000_0001,
    0x8000_0000_0000_0000,
];
