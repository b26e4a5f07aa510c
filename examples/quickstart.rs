//! A tour in one file: child processes, a named segment, a locked counter,
//! and a queue moving 256 MiB between two processes — beside the same
//! transfer over a unix socketpair.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! The parent creates a named segment and a `Value<u64>` counter, starts a
//! child process running `child_main` and hands it both (they are ordinary
//! serde values). Both processes increment the counter under its lock; the
//! child answers through the segment and returns a summary, which `join`
//! delivers. Then a producer and a consumer process move 256 MiB through an
//! ipckit `Queue`, and the same bytes through a socketpair. Nothing is left
//! in /dev/shm afterwards.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipckit::process::{self, Process};
use ipckit::queue::Queue;
use ipckit::{Segment, Value};

const INCREMENTS: u64 = 200_000;
const TOTAL: usize = 256 << 20;
const MESSAGE: usize = 64 << 10;

/// Runs in the child process.
fn child_main((segment, counter): (Segment, Value<u64>)) -> String {
    let me = process::current_process();
    let greeting = read_string(&segment, 0).expect("read greeting");
    println!(
        "[child  {}] opened {:?} and read: {greeting:?}",
        me.pid(),
        segment.name().unwrap_or("?")
    );
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1).expect("increment");
    }
    let reply = format!("hello back from {} (pid {})", me.name(), me.pid());
    write_string(&segment, 1024, &reply).expect("write reply");
    format!("{} did {INCREMENTS} locked increments", me.name())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipckit::init(); // in the child: runs `child_main`, reports its result, exits

    let pid = std::process::id();
    let segment = Segment::create(&format!("ipckit-quickstart-{pid}"), 4096)?;
    let counter = Value::create(&format!("ipckit-quickstart-{pid}-counter"), 0u64)?;
    write_string(&segment, 0, &format!("hello from process {pid}"))?;
    println!(
        "[parent {pid}] created segment {:?} ({} bytes) and a Value<u64> counter",
        segment.name().unwrap_or("?"),
        segment.len()
    );

    let start = Instant::now();
    let child = Process::builder()
        .name("quickstart-child")
        .spawn(child_main, (segment.clone(), counter.clone()))?;
    println!(
        "[parent {pid}] started {} as pid {}",
        child.name(),
        child.pid()
    );
    for _ in 0..INCREMENTS {
        counter.update(|c| *c += 1)?;
    }
    let summary = child.join()?;
    let elapsed = start.elapsed();

    let total = counter.get()?;
    println!("[parent {pid}] the child returned: {summary:?}");
    println!(
        "[parent {pid}] the child wrote back: {:?}",
        read_string(&segment, 1024)?
    );
    println!(
        "[parent {pid}] counter = {total} (2 processes x {INCREMENTS} locked increments) in {:.1} ms including the child's start",
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(total, 2 * INCREMENTS, "no increment may be lost");

    // A producer and a consumer process, 256 MiB in 64 KiB messages.
    println!(
        "[parent {pid}] a one-shot measurement (one run each, no warm-up; a busy machine can \
         flip it): `cargo bench --bench transports` measures properly, with min/median/max"
    );
    let queue = Queue::<()>::new(16 << 20)?;
    let consumer = Process::spawn(consume, queue.clone())?;
    let producer = Process::spawn(produce, queue.clone())?;
    producer.join()?;
    let (bytes, secs) = consumer.join()?;
    report("ipckit Queue", bytes, secs);

    // The same through a unix socketpair (the child's end passed by fd).
    let (ours, theirs) = UnixStream::pair()?;
    let fd = theirs.into_raw_fd();
    let reader = Process::builder()
        .stdin(unsafe_stdio_from(fd))
        .spawn(consume_stdin, ())?;
    let msg = vec![7u8; MESSAGE];
    let mut sock = ours;
    for _ in 0..TOTAL / MESSAGE {
        sock.write_all(&msg)?;
    }
    drop(sock);
    let (bytes, secs) = reader.join()?;
    report("unix socketpair", bytes, secs);

    println!("[parent {pid}] done; dropping the handles unlinks both names");
    Ok(())
}

/// Runs in a child: sends 256 MiB through the queue, then an empty message.
fn produce(queue: Queue<()>) {
    let msg = vec![7u8; MESSAGE];
    for _ in 0..TOTAL / MESSAGE {
        queue.put_bytes(&msg).expect("put");
    }
    queue.put_bytes(&[]).expect("put end");
}

/// Runs in a child: receives until the empty message; returns bytes and seconds.
fn consume(queue: Queue<()>) -> (u64, f64) {
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        queue.get_bytes_into(&mut buf).expect("get");
        let t = *start.get_or_insert_with(Instant::now);
        if buf.is_empty() {
            return (bytes, t.elapsed().as_secs_f64());
        }
        bytes += buf.len() as u64;
    }
}

/// Runs in a child: reads its stdin (the socket) to the end.
fn consume_stdin(_: ()) -> (u64, f64) {
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; MESSAGE];
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        let n = input.read(&mut buf).expect("read");
        let t = *start.get_or_insert_with(Instant::now);
        if n == 0 {
            return (bytes, t.elapsed().as_secs_f64());
        }
        bytes += n as u64;
    }
}

fn report(what: &str, bytes: u64, secs: f64) {
    let secs = secs.max(Duration::from_nanos(1).as_secs_f64());
    println!(
        "[parent] measured: {what:<16} {:.0} MiB in {:6.1} ms: {:8.0} msgs/s of 64 KiB, {:5.2} GB/s",
        bytes as f64 / (1u64 << 20) as f64,
        secs * 1e3,
        bytes as f64 / MESSAGE as f64 / secs,
        bytes as f64 / secs / 1e9
    );
}

fn unsafe_stdio_from(fd: i32) -> std::process::Stdio {
    // SAFETY: `fd` was just released by `into_raw_fd`; the Stdio takes it over.
    unsafe { std::process::Stdio::from_raw_fd(fd) }
}

fn write_string(seg: &Segment, at: usize, s: &str) -> ipckit::Result<()> {
    seg.write_at(at, &(s.len() as u32).to_le_bytes())?;
    seg.write_at(at + 4, s.as_bytes())
}

fn read_string(seg: &Segment, at: usize) -> ipckit::Result<String> {
    let mut len = [0u8; 4];
    seg.read_at(at, &mut len)?;
    let mut buf = vec![0u8; (u32::from_le_bytes(len) as usize).min(seg.len())];
    seg.read_at(at + 4, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
