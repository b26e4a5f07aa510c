//! Queues between real processes: many producers and consumers, big
//! messages, blocking, crashes at random points, corrupt frames.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::process::Process;
use ipckit::queue::{JoinableQueue, Queue};
use ipckit::sync::Event;
use ipckit::{Array, ErrorKind, Segment};

ipckit::test_support!();

/// A checkable message: `[producer u8][seq u32][fill...][seq u32][producer u8]`,
/// the fill byte derived from both, so any torn or misplaced bytes show.
fn make(producer: u8, seq: u32, len: usize, buf: &mut Vec<u8>) {
    let len = len.max(11);
    buf.clear();
    buf.push(producer);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.resize(len - 5, fill(producer, seq));
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(producer);
}

fn fill(producer: u8, seq: u32) -> u8 {
    (seq as u8).wrapping_mul(31) ^ producer
}

/// Checks a message built by `make`; returns (producer, seq).
fn check(msg: &[u8]) -> (u8, u32) {
    let n = msg.len();
    assert!(n >= 11, "message of {n} bytes");
    let p = msg[0];
    let seq = u32::from_le_bytes(msg[1..5].try_into().unwrap());
    assert_eq!(msg[n - 1], p, "trailer producer");
    assert_eq!(
        u32::from_le_bytes(msg[n - 5..n - 1].try_into().unwrap()),
        seq,
        "trailer seq"
    );
    let f = fill(p, seq);
    // Sample the fill (a full scan of every message is slow in debug builds).
    for i in (5..n - 5).step_by(509) {
        assert_eq!(msg[i], f, "fill byte {i} of message {p}/{seq}");
    }
    assert_eq!(msg[n - 6], f);
    (p, seq)
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

// ---------------------------------------------------------------------------
// 4 producers × 4 consumers × 100 000 messages of 0–64 KiB
// ---------------------------------------------------------------------------

fn producer((q, id, n): (Queue<()>, u8, u32)) {
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ u64::from(id + 1);
    let mut buf = Vec::new();
    for seq in 0..n {
        let len = (xorshift(&mut rng) % 65_537) as usize;
        make(id, seq, len, &mut buf);
        q.put_bytes(&buf).unwrap();
    }
}

fn consumer(q: Queue<()>) -> Vec<(u8, u32)> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    loop {
        match q.get_bytes_into(&mut buf) {
            Ok(()) => got.push(check(&buf)),
            Err(e) if e.is_closed() => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn four_producers_four_consumers_exactly_once_fifo_per_producer() {
    let t = Ctx::with_limit("mpmc", Duration::from_secs(600));
    const N: u32 = 100_000;
    let q = Queue::<()>::create(&t.name("q"), 4 << 20).unwrap();
    let consumers: Vec<_> = (0..4).map(|_| spawn(consumer, q.clone())).collect();
    let producers: Vec<_> = (0..4u8)
        .map(|id| spawn(producer, (q.clone(), id, N)))
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let mut seen = HashSet::new();
    for c in consumers {
        let got = c.join().unwrap();
        let mut last = [None::<u32>; 4];
        for (p, seq) in got {
            assert!(seen.insert((p, seq)), "message {p}/{seq} delivered twice");
            let prev = &mut last[p as usize];
            assert!(
                prev.is_none_or(|l| l < seq),
                "producer {p}: {seq} after {prev:?}"
            );
            *prev = Some(seq);
        }
    }
    assert_eq!(seen.len(), 4 * N as usize, "every message delivered");
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------
// A 256 MiB message through a 1 MiB ring
// ---------------------------------------------------------------------------

const BIG: usize = 256 << 20;
const BLOCK: usize = 1 << 20;

fn big_block(i: usize) -> Vec<u8> {
    vec![(i * 7 + 3) as u8; BLOCK]
}

fn put_big(q: Queue<()>) {
    let mut msg = Vec::with_capacity(BIG);
    for i in 0..BIG / BLOCK {
        msg.extend_from_slice(&big_block(i));
    }
    q.put_bytes(&msg).unwrap();
    q.put_bytes(b"after").unwrap();
}

#[test]
fn a_256_mib_message_crosses_a_1_mib_ring() {
    let _t = Ctx::new("big");
    let mut q = Queue::<()>::new(1 << 20).unwrap();
    q.set_max_message_size(BIG);
    let p = spawn(put_big, q.clone());
    let mut buf = Vec::new();
    let start = Instant::now();
    q.get_bytes_into(&mut buf).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(buf.len(), BIG);
    for (i, chunk) in buf.chunks(BLOCK).enumerate() {
        assert!(chunk == &big_block(i)[..], "block {i} differs");
    }
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf, b"after");
    p.join().unwrap();
    eprintln!("256 MiB through a 1 MiB ring in {elapsed:?}");
}

// ---------------------------------------------------------------------------
// Blocking across processes
// ---------------------------------------------------------------------------

fn put_later((q, ms): (Queue<String>, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    q.put(&"late".to_owned()).unwrap();
}

fn get_later((q, ms): (Queue<String>, u64)) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    q.get().unwrap()
}

#[test]
fn get_and_put_block_until_another_process_acts() {
    let _t = Ctx::new("blocking");
    let q = Queue::<String>::builder(4096).max_items(1).new().unwrap();
    let start = Instant::now();
    let p = spawn(put_later, (q.clone(), 100));
    assert_eq!(q.get().unwrap(), "late");
    assert!(start.elapsed() >= Duration::from_millis(100));
    p.join().unwrap();

    q.put(&"first".to_owned()).unwrap();
    assert!(
        q.try_put(&"second".to_owned())
            .unwrap_err()
            .is_would_block()
    );
    let start = Instant::now();
    let c = spawn(get_later, (q.clone(), 100));
    q.put(&"second".to_owned()).unwrap(); // blocks until the child takes "first"
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(c.join().unwrap(), "first");
    assert_eq!(q.get().unwrap(), "second");
}

fn wait_then_get((q, ready): (Queue<u8>, Event)) -> String {
    ready.set();
    q.get().unwrap_err().to_string()
}

#[test]
fn close_wakes_a_blocked_consumer_in_another_process() {
    let _t = Ctx::new("close_wakes");
    let q = Queue::<u8>::new(4096).unwrap();
    let ready = Event::new().unwrap();
    let c = spawn(wait_then_get, (q.clone(), ready.clone()));
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    q.close();
    let err = c.join().unwrap();
    assert!(err.contains("closed"), "{err}");
}

// ---------------------------------------------------------------------------
// JoinableQueue across processes
// ---------------------------------------------------------------------------

fn worker((q, results): (JoinableQueue<u32>, Queue<u64>)) {
    loop {
        match q.get() {
            Ok(n) => {
                results.put(&(u64::from(n) * u64::from(n))).unwrap();
                q.task_done().unwrap();
            }
            Err(e) if e.is_closed() => return,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn joinable_queue_join_waits_for_workers_in_other_processes() {
    let t = Ctx::new("joinable");
    let q = JoinableQueue::<u32>::create(&t.name("tasks"), 1 << 16).unwrap();
    let results = Queue::<u64>::new(1 << 20).unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| spawn(worker, (q.clone(), results.clone())))
        .collect();
    for n in 0..1000 {
        q.put(&n).unwrap();
    }
    q.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert_eq!(
        results.len(),
        1000,
        "every task finished before join returned"
    );
    let sum: u64 = results.get_many(1000).unwrap().iter().sum();
    assert_eq!(sum, (0..1000u64).map(|n| n * n).sum::<u64>());
    q.close();
    for w in workers {
        w.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Crashes at random points
// ---------------------------------------------------------------------------

/// Puts numbered messages of 0..96 KiB forever (a 64 KiB ring: many are
/// streamed), so a kill lands anywhere in a put.
fn endless_producer((q, run): (Queue<()>, u8)) {
    let mut rng = 0x2545_f491_4f6c_dd1d ^ u64::from(run);
    let mut buf = Vec::new();
    for seq in 0.. {
        let len = (xorshift(&mut rng) % (96 << 10)) as usize;
        make(run, seq, len, &mut buf);
        q.put_bytes(&buf).unwrap();
    }
}

#[test]
fn producers_killed_mid_put_never_leave_partial_or_lost_committed_messages() {
    let _t = Ctx::with_limit("producer_crash", Duration::from_secs(300));
    let q = Queue::<()>::new(64 << 10).unwrap();
    let mut rng = 0xdead_beef_u64 ^ u64::from(std::process::id());
    let mut buf = Vec::new();
    let mut streamed_kills = 0;
    for run in 0..30u8 {
        let p = spawn(endless_producer, (q.clone(), run));
        // Once the producer is running, consume concurrently for a random
        // while, then kill it wherever it is.
        q.get_bytes_into_timeout(&mut buf, Duration::from_secs(60))
            .unwrap();
        assert_eq!(check(&buf), (run, 0));
        let mut next = 1u32;
        let until = Instant::now() + Duration::from_millis(5 + xorshift(&mut rng) % 60);
        while Instant::now() < until {
            if q.get_bytes_into_timeout(&mut buf, Duration::from_millis(5))
                .is_ok()
            {
                assert_eq!(check(&buf), (run, next));
                next += 1;
            }
        }
        p.kill().unwrap();
        assert!(p.join().unwrap_err().is_process_died());
        streamed_kills += usize::from(q.used_bytes() > 0);
        // Drain: everything committed arrives, whole and in order; a stream
        // cut short is aborted, never delivered half.
        while q
            .get_bytes_into_timeout(&mut buf, Duration::from_millis(100))
            .is_ok()
        {
            assert_eq!(check(&buf), (run, next), "run {run}");
            next += 1;
        }
        assert_eq!(q.len(), 0);
    }
    // The queue is still perfectly usable, streams included.
    let q2 = q.clone();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        q2.get_bytes_into(&mut b).unwrap();
        b
    });
    q.put_bytes(&vec![5; 200_000]).unwrap();
    assert_eq!(reader.join().unwrap(), vec![5; 200_000]);
    eprintln!("killed 30 producers; after {streamed_kills} kills data was still queued");
}

fn endless_consumer((q, seen): (Queue<()>, Array<u8>)) {
    let mut buf = Vec::new();
    loop {
        match q.get_bytes_into(&mut buf) {
            Ok(()) => {
                let (_, seq) = check(&buf);
                // A consumer killed while holding `seen` leaves it marked;
                // its one-byte counters cannot tear, so take it over.
                let mut s = seen.lock().unwrap_or_else(|e| {
                    let g = e.into_guard().expect("the lock was taken");
                    g.mark_consistent();
                    g
                });
                s[seq as usize] += 1;
            }
            Err(e) if e.is_closed() => return,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn consumers_killed_mid_get_never_wedge_the_queue_or_duplicate() {
    // Every 7th message is streamed (larger than half the ring).
    killed_consumers("consumer_crash", 64 << 10, 3000, |seq, rng| {
        if seq % 7 == 0 {
            100_000
        } else {
            (xorshift(rng) % 4000) as usize
        }
    });
}

/// The same through a 16 MiB ring with messages of 4-300 KiB, which its
/// producer writes at the ring's start behind `Skip` frames while the
/// consumers keep up: consumers killed around the skips.
#[test]
fn consumers_killed_around_early_wraps_never_wedge_the_queue_or_duplicate() {
    killed_consumers("consumer_crash_wrap", 16 << 20, 1200, |_, rng| {
        4096 + (xorshift(rng) % 300_000) as usize
    });
}

/// Puts `n` numbered messages of `len(seq, rng)` bytes into a ring of
/// `ring` bytes while a consumer process takes them; SIGKILLs and replaces
/// the consumer at random (1 in 100 puts). No message may arrive twice, and
/// only the ones the killed were reading may be lost.
fn killed_consumers(ctx: &str, ring: usize, n: u32, len: impl Fn(u32, &mut u64) -> usize) {
    let _t = Ctx::with_limit(ctx, Duration::from_secs(300));
    let q = Queue::<()>::new(ring).unwrap();
    let seen = Array::new(&vec![0u8; n as usize]).unwrap();
    let mut rng = 0x1234_5678_u64 ^ u64::from(std::process::id());
    let mut consumer = spawn(endless_consumer, (q.clone(), seen.clone()));
    let mut buf = Vec::new();
    let mut kills = 0;
    for seq in 0..n {
        let l = len(seq, &mut rng);
        make(0, seq, l, &mut buf);
        q.put_bytes(&buf).unwrap();
        if xorshift(&mut rng) % 100 == 0 {
            consumer.kill().unwrap();
            assert!(consumer.join().unwrap_err().is_process_died());
            kills += 1;
            consumer = spawn(endless_consumer, (q.clone(), seen.clone()));
        }
    }
    q.close();
    consumer.join().unwrap();
    let seen = seen.to_vec().unwrap();
    assert!(
        seen.iter().all(|&n| n <= 1),
        "a message was delivered twice"
    );
    let delivered = seen.iter().filter(|&&n| n == 1).count();
    // Each killed consumer may take the message it was reading with it
    // (and a stream it was in the middle of).
    assert!(
        delivered + 2 * kills >= n as usize,
        "{delivered} of {n} with {kills} kills"
    );
    assert!(q.is_empty());
    eprintln!("{kills} consumers killed; {delivered} of {n} messages delivered");
}

// ---------------------------------------------------------------------------
// Corrupt frames
// ---------------------------------------------------------------------------

#[test]
fn corrupt_frames_are_clear_errors() {
    let t = Ctx::new("corrupt_frames");
    let name = t.name("q");
    let q = Queue::<u64>::create(&name, 4096).unwrap();
    let seg = Segment::open(&name).unwrap();
    let ring = seg.len() - q.capacity();
    q.put(&7).unwrap();
    // A length that overruns what is queued.
    seg.write_at(ring, &u32::MAX.to_le_bytes()).unwrap();
    let e = q.get().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("only"), "{e}");
    // An unknown frame kind.
    seg.write_at(ring, &1u32.to_le_bytes()).unwrap();
    seg.write_at(ring + 4, &0xdead_beef_u32.to_le_bytes())
        .unwrap();
    let e = q.get().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("unknown kind"), "{e}");
}

fn put_one(q: Queue<Vec<u32>>) {
    q.put(&vec![1, 2, 3]).unwrap();
}

#[test]
fn a_queue_handle_travels_to_a_child_named_and_anonymous() {
    let t = Ctx::new("queue_handles");
    for q in [
        Queue::<Vec<u32>>::create(&t.name("q"), 4096).unwrap(),
        Queue::<Vec<u32>>::new(4096).unwrap(),
    ] {
        Process::spawn(put_one, q.clone()).unwrap().join().unwrap();
        assert_eq!(q.get().unwrap(), [1, 2, 3]);
    }
}
