//! Queue throughput and latency between two processes, beside baselines
//! measured in the same run.
//!
//! - `throughput/<size>/<transport>`: one-way, the parent sends a batch of
//!   messages of `size` bytes and the child acknowledges once it has
//!   received all of them (criterion reports bytes/s; msgs/s = bytes/s / size).
//! - `round_trip_64B/<transport>`: the child echoes each 64-byte message.
//! - `memcpy_1MiB`: copying 1 MiB within one process, for scale.
//!
//! The round trip also has a raw shared-futex ping-pong (no spinning), the
//! floor for a peer that sleeps.
//!
//! Transports: ipckit `Queue` raw bytes (`put_bytes`/`get_bytes_into`) and
//! typed (`Queue<Vec<u8>>`, serde-encoded), an anonymous pipe pair, a unix
//! socketpair, TCP loopback (NODELAY), and file exchange: each message is
//! written to `<dir>/tmp-N`, renamed to `<dir>/msg-N` (atomic), and the
//! reader polls for `msg-N` (yielding between polls), reads and unlinks it;
//! `<dir>` is under /dev/shm (tmpfs).
//!
//! Run: `cargo bench --bench queue` (add `IPCKIT_BENCH_PIN=1` to pin parent
//! and child to CPUs 0 and 1). Children are this binary re-executed with
//! `IPCKIT_BENCH_CHILD` set.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ipckit::Segment;
use ipckit::queue::Queue;

mod common;
use common::{hex, pin_to, unhex};

const ROLE: &str = "IPCKIT_BENCH_CHILD";
const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];
const RING: usize = 16 << 20;
const STOP: u64 = u64::MAX;

/// The parent's side of a transport.
trait Link {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]);
    /// Receives one message of `buf.len()` bytes (an echo).
    fn recv(&mut self, buf: &mut [u8]);
    /// Tells the child how many messages follow, or to stop.
    fn announce(&mut self, n: u64) {
        self.send(&n.to_le_bytes());
    }
    /// Waits for the child's acknowledgement of a batch.
    fn ack(&mut self) {
        let mut b = [0u8; 1];
        self.recv(&mut b);
    }
    fn child(&mut self) -> &mut Child;
}

/// The child's side.
trait ChildLink {
    fn send(&mut self, msg: &[u8]);
    fn recv(&mut self, buf: &mut Vec<u8>, len: usize);
}

fn child_main(role: &str) {
    let mut parts = role.split(':');
    let (transport, mode, size) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse::<usize>().unwrap(),
    );
    let arg = std::env::var("IPCKIT_BENCH_ARG").unwrap_or_default();
    if transport == "futex" {
        let seg: Segment = postcard::from_bytes(&unhex(&arg)).unwrap();
        common::futex_pong(&seg);
        return;
    }
    let mut link: Box<dyn ChildLink> = match transport {
        "queue" => {
            let (q, back): (Queue<()>, Queue<()>) = postcard::from_bytes(&unhex(&arg)).unwrap();
            Box::new(QueueChild { q, back })
        }
        "typed" => {
            let (q, back): (Queue<Vec<u8>>, Queue<Vec<u8>>) =
                postcard::from_bytes(&unhex(&arg)).unwrap();
            Box::new(TypedChild { q, back })
        }
        "pipe" | "socketpair" => Box::new(StreamChild {
            r: std::io::stdin(),
            w: std::io::stdout(),
        }),
        "tcp" => {
            let s = TcpStream::connect(arg.as_str()).unwrap();
            s.set_nodelay(true).unwrap();
            Box::new(StreamChild {
                r: s.try_clone().unwrap(),
                w: s,
            })
        }
        "file" => Box::new(FileChild {
            dir: PathBuf::from(arg),
            seq_in: 0,
            seq_out: 0,
        }),
        other => panic!("unknown transport {other}"),
    };
    let mut buf = Vec::new();
    if mode == "echo" {
        loop {
            link.recv(&mut buf, size);
            link.send(&buf);
        }
    }
    loop {
        link.recv(&mut buf, 8);
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
        if n == STOP {
            return;
        }
        for _ in 0..n {
            link.recv(&mut buf, size);
        }
        black_box(&buf);
        link.send(&[1]);
    }
}

// -- ipckit queues -------------------------------------------------------------

struct QueueLink {
    q: Queue<()>,
    back: Queue<()>,
    buf: Vec<u8>,
    child: Child,
}

impl Link for QueueLink {
    fn send(&mut self, msg: &[u8]) {
        self.q.put_bytes(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.back.get_bytes_into(&mut self.buf).unwrap();
        buf.copy_from_slice(&self.buf);
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct QueueChild {
    q: Queue<()>,
    back: Queue<()>,
}

impl ChildLink for QueueChild {
    fn send(&mut self, msg: &[u8]) {
        self.back.put_bytes(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        self.q.get_bytes_into(buf).unwrap();
    }
}

struct TypedLink {
    q: Queue<Vec<u8>>,
    back: Queue<Vec<u8>>,
    msg: Vec<u8>,
    child: Child,
}

impl Link for TypedLink {
    fn send(&mut self, msg: &[u8]) {
        // The typed API takes a value: a Vec<u8> the size of the message.
        self.msg.clear();
        self.msg.extend_from_slice(msg);
        self.q.put(&self.msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let v = self.back.get().unwrap();
        buf.copy_from_slice(&v);
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct TypedChild {
    q: Queue<Vec<u8>>,
    back: Queue<Vec<u8>>,
}

impl ChildLink for TypedChild {
    fn send(&mut self, msg: &[u8]) {
        self.back.put(&msg.to_vec()).unwrap();
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        *buf = self.q.get().unwrap();
    }
}

// -- byte streams: pipe, socketpair, TCP ------------------------------------------

struct StreamLink<W: Write, R: Read> {
    w: W,
    r: R,
    child: Child,
}

impl<W: Write, R: Read> Link for StreamLink<W, R> {
    fn send(&mut self, msg: &[u8]) {
        self.w.write_all(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).unwrap();
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct StreamChild<R: Read, W: Write> {
    r: R,
    w: W,
}

impl<R: Read, W: Write> ChildLink for StreamChild<R, W> {
    fn send(&mut self, msg: &[u8]) {
        self.w.write_all(msg).unwrap();
        self.w.flush().unwrap();
    }
    fn recv(&mut self, buf: &mut Vec<u8>, len: usize) {
        buf.resize(len, 0);
        if self.r.read_exact(buf).is_err() {
            std::process::exit(0);
        }
    }
}

// -- file exchange --------------------------------------------------------------

fn file_put(dir: &std::path::Path, prefix: &str, seq: u64, msg: &[u8]) {
    let tmp = dir.join(format!("tmp-{prefix}-{seq}"));
    std::fs::write(&tmp, msg).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{prefix}-{seq}"))).unwrap();
}

fn file_get(dir: &std::path::Path, prefix: &str, seq: u64, buf: &mut Vec<u8>) {
    let path = dir.join(format!("{prefix}-{seq}"));
    loop {
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                buf.clear();
                f.read_to_end(buf).unwrap();
                std::fs::remove_file(&path).unwrap();
                return;
            }
            Err(_) => std::thread::yield_now(),
        }
    }
}

struct FileLink {
    dir: PathBuf,
    seq_out: u64,
    seq_in: u64,
    buf: Vec<u8>,
    child: Child,
}

impl Link for FileLink {
    fn send(&mut self, msg: &[u8]) {
        file_put(&self.dir, "msg", self.seq_out, msg);
        self.seq_out += 1;
    }
    fn recv(&mut self, buf: &mut [u8]) {
        file_get(&self.dir, "rep", self.seq_in, &mut self.buf);
        self.seq_in += 1;
        buf.copy_from_slice(&self.buf);
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for FileLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct FileChild {
    dir: PathBuf,
    seq_in: u64,
    seq_out: u64,
}

impl ChildLink for FileChild {
    fn send(&mut self, msg: &[u8]) {
        file_put(&self.dir, "rep", self.seq_out, msg);
        self.seq_out += 1;
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        file_get(&self.dir, "msg", self.seq_in, buf);
        self.seq_in += 1;
    }
}

// -- starting children ------------------------------------------------------------

fn command(transport: &str, mode: &str, size: usize) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, format!("{transport}:{mode}:{size}"));
    c
}

fn start(transport: &str, mode: &str, size: usize) -> Box<dyn Link> {
    match transport {
        "ipckit_queue" => {
            let (q, back) = (
                Queue::<()>::new(RING).unwrap(),
                Queue::<()>::new(RING).unwrap(),
            );
            let child = command("queue", mode, size)
                .env(
                    "IPCKIT_BENCH_ARG",
                    hex(&postcard::to_allocvec(&(&q, &back)).unwrap()),
                )
                .spawn()
                .unwrap();
            Box::new(QueueLink {
                q,
                back,
                buf: Vec::new(),
                child,
            })
        }
        "ipckit_queue_typed" => {
            let (q, back) = (
                Queue::<Vec<u8>>::new(RING).unwrap(),
                Queue::<Vec<u8>>::new(RING).unwrap(),
            );
            let child = command("typed", mode, size)
                .env(
                    "IPCKIT_BENCH_ARG",
                    hex(&postcard::to_allocvec(&(&q, &back)).unwrap()),
                )
                .spawn()
                .unwrap();
            Box::new(TypedLink {
                q,
                back,
                msg: Vec::new(),
                child,
            })
        }
        "pipe" => {
            let mut child = command("pipe", mode, size)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let w = child.stdin.take().unwrap();
            let r = child.stdout.take().unwrap();
            Box::new(StreamLink { w, r, child })
        }
        "unix_socketpair" => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let theirs2 = theirs.try_clone().unwrap();
            let child = command("socketpair", mode, size)
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::from(OwnedFd::from(theirs2)))
                .spawn()
                .unwrap();
            let r = ours.try_clone().unwrap();
            Box::new(StreamLink { w: ours, r, child })
        }
        "tcp_loopback" => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let child = command("tcp", mode, size)
                .env("IPCKIT_BENCH_ARG", addr)
                .spawn()
                .unwrap();
            let (s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let r = s.try_clone().unwrap();
            Box::new(StreamLink { w: s, r, child })
        }
        "file_exchange" => {
            let dir = PathBuf::from(format!(
                "/dev/shm/ipckit-bench-files-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            let child = command("file", mode, size)
                .env("IPCKIT_BENCH_ARG", &dir)
                .spawn()
                .unwrap();
            Box::new(FileLink {
                dir,
                seq_out: 0,
                seq_in: 0,
                buf: Vec::new(),
                child,
            })
        }
        other => panic!("unknown transport {other}"),
    }
}

fn stop(mut link: Box<dyn Link>, announced: bool) {
    if announced {
        link.announce(STOP);
        let _ = link.child().wait();
    } else {
        let _ = link.child().kill();
        let _ = link.child().wait();
    }
}

const TRANSPORTS: [&str; 6] = [
    "ipckit_queue",
    "ipckit_queue_typed",
    "pipe",
    "unix_socketpair",
    "tcp_loopback",
    "file_exchange",
];

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut g = c.benchmark_group(format!("throughput/{}", label(size)));
        g.throughput(Throughput::Bytes(size as u64));
        for transport in TRANSPORTS {
            let mut link = start(transport, "sink", size);
            let msg = vec![0xa5u8; size];
            // Warm up the child (page faults, first wake-ups).
            link.announce(16);
            for _ in 0..16 {
                link.send(&msg);
            }
            link.ack();
            g.bench_function(BenchmarkId::from_parameter(transport), |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    link.announce(iters);
                    for _ in 0..iters {
                        link.send(&msg);
                    }
                    link.ack();
                    t.elapsed()
                })
            });
            stop(link, true);
        }
        g.finish();
    }
}

/// The floor for a peer that sleeps: one shared futex word, no spinning.
fn raw_futex_round_trip(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let seg = Segment::anonymous(64).unwrap();
    let mut child = command("futex", "echo", 4)
        .env(
            "IPCKIT_BENCH_ARG",
            hex(&postcard::to_allocvec(&seg).unwrap()),
        )
        .spawn()
        .unwrap();
    let w = common::word(&seg);
    let trip = || {
        common::futex_set(w, common::PING);
        common::futex_await(w, common::PONG);
    };
    for _ in 0..100 {
        trip();
    }
    g.bench_function(BenchmarkId::from_parameter("raw_futex"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                trip();
            }
            t.elapsed()
        })
    });
    common::futex_set(w, common::STOP);
    let _ = child.wait();
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip_64B");
    raw_futex_round_trip(&mut g);
    for transport in TRANSPORTS {
        let mut link = start(transport, "echo", 64);
        let msg = vec![0x5au8; 64];
        let mut back = vec![0u8; 64];
        for _ in 0..100 {
            link.send(&msg);
            link.recv(&mut back);
        }
        g.bench_function(BenchmarkId::from_parameter(transport), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    link.send(&msg);
                    link.recv(&mut back);
                }
                t.elapsed()
            })
        });
        stop(link, false);
    }
    g.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy_1MiB");
    g.throughput(Throughput::Bytes(1 << 20));
    let src = vec![1u8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    g.bench_function("copy_from_slice", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    g.finish();
}

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = throughput, round_trip, memcpy
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        pin_to(1);
        child_main(&role);
        return;
    }
    pin_to(0);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
