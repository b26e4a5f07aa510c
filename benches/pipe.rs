//! `Connection` throughput and latency between two processes, beside the
//! raw transports it frames, measured in the same run.
//!
//! - `pipe_throughput/<size>/<transport>`: one-way; the parent sends a batch,
//!   the child acknowledges once it has all of it.
//! - `pipe_round_trip_64B/<transport>`: the child echoes each message.
//!
//! Transports: an ipckit `Pipe::duplex()` connection (`send_bytes` /
//! `recv_bytes_into`, 4-byte length prefix), a raw unix socketpair and a raw
//! pipe(2) pair moving fixed-size messages with no framing at all. The
//! difference between the first two is the framing overhead.
//!
//! Run: `cargo bench --bench pipe` (`IPCKIT_BENCH_PIN=1` pins the processes).

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ipckit::pipe::{Connection, Pipe};
use ipckit::process::Process;

mod common;
use common::pin_to;

const ROLE: &str = "IPCKIT_BENCH_CHILD";
const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];
const STOP: u64 = u64::MAX;

/// The parent's side of a transport.
trait Link {
    fn send(&mut self, msg: &[u8]);
    fn recv(&mut self, buf: &mut [u8]);
    fn stop(self: Box<Self>);
}

// -- ipckit Connection ---------------------------------------------------------

struct ConnLink {
    conn: Connection,
    buf: Vec<u8>,
    child: Option<Process<()>>,
}

impl Link for ConnLink {
    fn send(&mut self, msg: &[u8]) {
        self.conn.send_bytes(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.conn.recv_bytes_into(&mut self.buf).unwrap();
        buf.copy_from_slice(&self.buf);
    }
    fn stop(mut self: Box<Self>) {
        drop(std::mem::replace(&mut self.conn, Pipe::duplex().unwrap().0));
        if let Some(c) = self.child.take() {
            let _ = c.join();
        }
    }
}

fn conn_sink(conn: Connection) {
    let mut buf = Vec::new();
    loop {
        if conn.recv_bytes_into(&mut buf).is_err() {
            return;
        }
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
        if n == STOP {
            return;
        }
        for _ in 0..n {
            conn.recv_bytes_into(&mut buf).unwrap();
        }
        black_box(&buf);
        conn.send_bytes(&[1]).unwrap();
    }
}

fn conn_echo(conn: Connection) {
    let mut buf = Vec::new();
    while conn.recv_bytes_into(&mut buf).is_ok() {
        if conn.send_bytes(&buf).is_err() {
            return;
        }
    }
}

// -- raw streams -------------------------------------------------------------------

struct RawLink<W: Write, R: Read> {
    w: Option<W>,
    r: R,
    child: Child,
}

impl<W: Write, R: Read> Link for RawLink<W, R> {
    fn send(&mut self, msg: &[u8]) {
        self.w.as_mut().unwrap().write_all(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).unwrap();
    }
    fn stop(mut self: Box<Self>) {
        drop(self.w.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The raw child: messages of a fixed, known size, no framing.
fn raw_child(mode: &str, size: usize) {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; size.max(8)];
    if mode == "echo" {
        while input.read_exact(&mut buf[..size]).is_ok() {
            if output
                .write_all(&buf[..size])
                .and_then(|()| output.flush())
                .is_err()
            {
                return;
            }
        }
        return;
    }
    loop {
        if input.read_exact(&mut buf[..8]).is_err() {
            return;
        }
        let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
        if n == STOP {
            return;
        }
        for _ in 0..n {
            input.read_exact(&mut buf[..size]).unwrap();
        }
        black_box(&buf);
        output.write_all(&[1]).unwrap();
        output.flush().unwrap();
    }
}

fn start(transport: &str, mode: &str, size: usize) -> Box<dyn Link> {
    let raw = |stdin: Stdio, stdout: Stdio| {
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE, format!("{mode}:{size}"))
            .stdin(stdin)
            .stdout(stdout)
            .spawn()
            .unwrap()
    };
    match transport {
        "ipckit_connection" => {
            let (mine, theirs) = Pipe::duplex().unwrap();
            let f: fn(Connection) = if mode == "echo" { conn_echo } else { conn_sink };
            let child = Process::builder().daemon(true).spawn(f, theirs).unwrap();
            Box::new(ConnLink {
                conn: mine,
                buf: Vec::new(),
                child: Some(child),
            })
        }
        "unix_socketpair" => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let theirs2 = theirs.try_clone().unwrap();
            let child = raw(
                Stdio::from(OwnedFd::from(theirs)),
                Stdio::from(OwnedFd::from(theirs2)),
            );
            let r = ours.try_clone().unwrap();
            Box::new(RawLink {
                w: Some(ours),
                r,
                child,
            })
        }
        "pipe" => {
            let mut child = raw(Stdio::piped(), Stdio::piped());
            let w = child.stdin.take().unwrap();
            let r = child.stdout.take().unwrap();
            Box::new(RawLink {
                w: Some(w),
                r,
                child,
            })
        }
        other => panic!("unknown transport {other}"),
    }
}

const TRANSPORTS: [&str; 3] = ["ipckit_connection", "unix_socketpair", "pipe"];

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut g = c.benchmark_group(format!("pipe_throughput/{}", label(size)));
        g.throughput(Throughput::Bytes(size as u64));
        for transport in TRANSPORTS {
            let mut link = start(transport, "sink", size);
            let msg = vec![0xa5u8; size];
            let mut ack = [0u8; 1];
            let mut batch = |link: &mut Box<dyn Link>, n: u64| {
                link.send(&n.to_le_bytes());
                for _ in 0..n {
                    link.send(&msg);
                }
                link.recv(&mut ack);
            };
            batch(&mut link, 16);
            g.bench_function(BenchmarkId::from_parameter(transport), |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    batch(&mut link, iters);
                    t.elapsed()
                })
            });
            link.send(&STOP.to_le_bytes());
            link.stop();
        }
        g.finish();
    }
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_round_trip_64B");
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
        link.stop();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = throughput, round_trip
}

fn main() {
    ipckit::init();
    if let Ok(role) = std::env::var(ROLE) {
        pin_to(1);
        let (mode, size) = role.split_once(':').unwrap();
        raw_child(mode, size.parse().unwrap());
        return;
    }
    pin_to(0);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
