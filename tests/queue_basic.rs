//! Queue semantics within one process (cross-process tests: tests/queue.rs).

mod common;

use std::time::{Duration, Instant};

use common::Ctx;
use ipckit::ErrorKind;
use ipckit::queue::{JoinableQueue, Queue};

#[test]
fn fifo_len_and_capacity() {
    let q = Queue::<u64>::new(5000).unwrap();
    assert_eq!(q.capacity(), 8192, "rounded up to a power of two");
    assert!(q.is_empty());
    for i in 0..100 {
        q.put(&i).unwrap();
    }
    assert_eq!(q.len(), 100);
    for i in 0..100 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(q.is_empty());
    assert_eq!(q.used_bytes(), 0);
}

#[test]
fn wraps_around_many_times() {
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    let mut expect = std::collections::VecDeque::new();
    for i in 0..20_000u32 {
        let v = vec![(i % 251) as u8; (i as usize * 7) % 900];
        while q.try_put(&v).is_err() {
            assert_eq!(q.get().unwrap(), expect.pop_front().unwrap());
        }
        expect.push_back(v);
    }
    while let Some(v) = expect.pop_front() {
        assert_eq!(q.get().unwrap(), v);
    }
}

#[test]
fn bytes_api_reuses_the_buffer() {
    let q = Queue::<()>::new(1 << 16).unwrap();
    q.put_bytes(b"hello").unwrap();
    q.put_bytes(b"").unwrap();
    q.put_bytes(&[7; 3000]).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let ptr = buf.as_ptr();
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf, b"hello");
    q.get_bytes_into(&mut buf).unwrap();
    assert!(buf.is_empty());
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf, vec![7; 3000]);
    assert_eq!(buf.as_ptr(), ptr, "no reallocation");
    assert_eq!(
        q.get_bytes_into_timeout(&mut buf, Duration::from_millis(1))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
}

#[test]
fn timeouts_and_try_variants() {
    let q = Queue::<u32>::builder(4096).max_items(2).new().unwrap();
    let d = Duration::from_millis(30);
    assert!(q.try_get().unwrap_err().is_would_block());
    let start = Instant::now();
    assert!(q.get_timeout(d).unwrap_err().is_timeout());
    assert!(start.elapsed() >= d);
    let start = Instant::now();
    assert!(q.get_deadline(Instant::now() + d).unwrap_err().is_timeout());
    assert!(start.elapsed() >= d);
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    assert!(q.is_full());
    assert!(q.try_put(&3).unwrap_err().is_would_block());
    let start = Instant::now();
    assert!(q.put_timeout(&3, d).unwrap_err().is_timeout());
    assert!(start.elapsed() >= d);
    assert!(
        q.put_deadline(&3, Instant::now() + d)
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(q.get().unwrap(), 1);
    q.put(&3).unwrap();
    assert_eq!(q.max_items(), 2);
}

#[test]
fn close_fails_puts_and_drains_gets() {
    let q = Queue::<String>::new(4096).unwrap();
    q.put(&"a".into()).unwrap();
    q.put(&"b".into()).unwrap();
    q.close();
    assert!(q.is_closed());
    assert!(q.put(&"c".into()).unwrap_err().is_closed());
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.get_many(10).unwrap(), ["b"]);
    assert!(q.get().unwrap_err().is_closed());
    assert!(q.get_many(3).unwrap_err().is_closed());
    let e = q.get().unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
}

#[test]
fn batches() {
    let q = Queue::<u16>::new(1 << 16).unwrap();
    let v: Vec<u16> = (0..1000).collect();
    assert_eq!(q.put_many(&v).unwrap(), 1000);
    assert_eq!(q.get_many(0).unwrap(), Vec::<u16>::new());
    assert_eq!(q.get_many(10).unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(q.get_many(5000).unwrap(), (10..1000).collect::<Vec<_>>());
}

#[test]
fn streams_larger_than_the_ring() {
    let q = Queue::<Vec<u8>>::new(4096).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let q2 = q.clone();
    let expect = big.clone();
    let reader = std::thread::spawn(move || {
        for _ in 0..3 {
            assert_eq!(q2.get().unwrap(), expect);
        }
        assert_eq!(q2.get().unwrap(), vec![1, 2, 3]);
    });
    for _ in 0..3 {
        q.put(&big).unwrap();
    }
    q.put(&vec![1, 2, 3]).unwrap();
    reader.join().unwrap();
    assert!(q.is_empty());
}

#[test]
fn a_stream_that_times_out_is_aborted_and_skipped() {
    let q = Queue::<()>::new(4096).unwrap();
    // Nobody reads: the stream cannot finish.
    let e = q
        .put_bytes_timeout(&[9; 10_000], Duration::from_millis(30))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    q.put_bytes(b"after").unwrap();
    let mut buf = Vec::new();
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf, b"after", "the aborted message is skipped");
    assert!(q.is_empty());
}

#[test]
fn messages_over_the_limit_are_skipped_with_an_error() {
    // The producer's handle has the default limit; the consumer's is 100.
    let producer = Queue::<()>::new(1 << 16).unwrap();
    let mut q = producer.clone();
    q.set_max_message_size(100);
    // This handle refuses what it would not accept.
    assert_eq!(
        q.put_bytes(&[1; 101]).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    producer.put_bytes(&[1; 101]).unwrap();
    producer.put_bytes(&[2; 100]).unwrap();
    // Nobody reads yet: a stream this big cannot finish, so it times out and is aborted.
    assert!(
        producer
            .put_bytes_timeout(&[3; 200_000], Duration::from_millis(20))
            .unwrap_err()
            .is_timeout()
    );
    let mut buf = Vec::new();
    assert_eq!(
        q.get_bytes_into(&mut buf).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    q.get_bytes_into(&mut buf).unwrap();
    assert_eq!(buf, vec![2; 100]);
    assert!(q.is_empty());
    // A streamed message over the limit is skipped as well.
    let q2 = producer.clone();
    let writer = std::thread::spawn(move || q2.put_bytes(&[4; 50_000]));
    assert_eq!(
        q.get_bytes_into(&mut buf).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    writer.join().unwrap().unwrap();
}

#[test]
fn named_queues_and_types() {
    let t = Ctx::new("queue_named");
    let name = t.name("q");
    let q = Queue::<String>::create(&name, 4096).unwrap();
    q.put(&"x".to_owned()).unwrap();
    let o = Queue::<String>::open(&name).unwrap();
    assert_eq!(o.get().unwrap(), "x");
    assert_eq!(
        Queue::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        JoinableQueue::<String>::open(&name).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    assert_eq!(
        ipckit::Value::<u8>::open(&name).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    let again = Queue::<String>::open_or_create(&name, 4096).unwrap();
    assert_eq!(again.capacity(), 4096);
    // A message that does not decode as the queue's type.
    q.put_bytes(&[0xff, 0xff, 0xff]).unwrap();
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Codec);
}

#[test]
fn joinable_queue_in_one_process() {
    let q = JoinableQueue::<u8>::new(4096).unwrap();
    assert!(q.task_done().is_err());
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    let d = Duration::from_millis(20);
    let start = Instant::now();
    assert!(q.join_timeout(d).unwrap_err().is_timeout());
    assert!(start.elapsed() >= d);
    q.get().unwrap();
    q.task_done().unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    q.join().unwrap();
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::LimitExceeded);
}

#[test]
fn queue_edges_a_newcomer_meets() {
    // Python's Queue(0) means unbounded; a ring cannot be: a clear error.
    let e = Queue::<u32>::new(0).unwrap_err();
    assert_eq!(e.kind(), ipckit::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("capacity"), "{e}");
    // One thread, no consumer, a message over half the ring: it would be
    // streamed and wait for a reader. put_timeout gives up, and the queue
    // is as before — nothing counted, no bytes held.
    let q = Queue::<()>::new(4096).unwrap();
    assert_eq!(q.max_whole_message(), 2040);
    let big = vec![7u8; 10_000];
    let e = q
        .put_bytes_timeout(&big, Duration::from_millis(50))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(
        (q.len(), q.used_bytes()),
        (0, 0),
        "the aborted stream is taken back"
    );
    // The queue works on.
    q.put_bytes(b"small").unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"small");
    assert_eq!((q.len(), q.used_bytes()), (0, 0));
}
