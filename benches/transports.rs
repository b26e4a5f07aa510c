//! Every transport between two processes, in one run: the evidence behind
//! the README's performance table (`examples/bench_report.rs` turns the
//! results into `docs/benchmarks.md` and `docs/throughput.svg`).
//!
//! - `transports_throughput/<size>/<transport>`: one-way, the parent sends a
//!   batch of messages of `size` bytes and the child acknowledges once it
//!   has received all of them (criterion reports bytes/s; msgs/s = bytes/s
//!   ÷ size). Sizes 64 B, 4 KiB, 64 KiB, 1 MiB.
//! - `transports_round_trip_64B/<transport>`: the child echoes each 64-byte
//!   message; besides criterion's mean, every single trip is timed and the
//!   p50 / p99 are written to `target/ipckit-bench/latency.json`.
//! - `transports_scaling_64B/<shape>`: one ipckit `Queue`, 1 producer → N
//!   consumer processes and N producers → 1 consumer (N = 1, 2, 4), 64-byte
//!   messages; elements/s = messages/s in total.
//! - `memcpy_1MiB`: copying 1 MiB within one process, for scale.
//! - Regimes (after criterion, not a criterion group): the ipckit `Queue`
//!   against the unix socketpair, 64 B one way with rings of 64 KiB, 1 MiB
//!   and 16 MiB (the socketpair has no ring), idle and with one busy-loop
//!   process per core (children of the bench, started before and killed
//!   after the loaded part); each regime is several runs on fresh links,
//!   reported as min / median / max msgs/s so that bimodal behaviour shows,
//!   plus a 64 B round trip (p50, p99) in both load conditions. Results in
//!   `target/ipckit-bench/regimes.json`, the table printed. With criterion's
//!   quick flags (`--measurement-time` under 1 s, as `.ci/run` passes) the
//!   runs are short and fewer (5 instead of 11); select it alone with the
//!   filter `regimes`.
//! - Python's `multiprocessing.Queue`, `Pipe` and `shared_memory` + `Event`
//!   doing the same throughput and round-trip workloads
//!   (`benches/python/transports.py`, run by this bench after criterion;
//!   skipped with a printed reason without python3), results in
//!   `target/ipckit-bench/python.json`.
//!
//! Transports: ipckit `Queue` raw bytes (`put_bytes`/`get_bytes_into`) and
//! typed (`Queue<Vec<u8>>`, serde-encoded); an ipckit `Connection` over a
//! unix socket (`Listener`/`Client`, no key); ipckit `Segment` + `Event`
//! hand-off (one slot per direction: the writer waits for "empty", copies
//! the message into the segment, sets "full"; the reader waits for "full",
//! copies it out, sets "empty"); an anonymous pipe pair; a unix socketpair;
//! TCP loopback (NODELAY); file exchange: each message is written to
//! `<dir>/tmp-N`, renamed to `<dir>/msg-N` (atomic), and the reader polls
//! for `msg-N` (yielding between polls), reads and unlinks it; `<dir>` is
//! under /dev/shm (tmpfs); and `ipc-channel` (servo's, `bytes_channel`).
//! With `--features bench-iceoryx2`, also iceoryx2 0.10 publish-subscribe
//! of `[u8]` slices (loan, copy in, send; the receiver busy-polls
//! `receive()`, iceoryx2 having no blocking receive on this port).
//! The round trip also has a raw shared-futex ping-pong (no spinning), the
//! floor for a peer that sleeps.
//!
//! Run: `cargo bench --bench transports` (add `IPCKIT_BENCH_PIN=1` to pin
//! parent and child to CPUs 0 and 1). Children are this binary re-executed
//! with `IPCKIT_BENCH_CHILD` set.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use ipckit::Segment;
use ipckit::connection::{Client, Listener};
use ipckit::pipe::Connection;
use ipckit::queue::Queue;
use ipckit::sync::Event;

mod common;
use common::{hex, pin_to, regime_report, unhex};

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
        "connection" => Box::new(ConnectionChild(
            Client::connect(std::path::Path::new(&arg), None).unwrap(),
        )),
        "segevent" => {
            let (down, up): (Slot, Slot) = postcard::from_bytes(&unhex(&arg)).unwrap();
            Box::new(SlotChild { down, up })
        }
        "ipcchannel" => {
            let (to_child, rx) = ipc_channel::ipc::bytes_channel().unwrap();
            let (tx, from_child) = ipc_channel::ipc::bytes_channel().unwrap();
            IpcSender::<(IpcBytesSender, IpcBytesReceiver)>::connect(arg)
                .unwrap()
                .send((to_child, from_child))
                .unwrap();
            Box::new(IpcChannelChild { rx, tx })
        }
        #[cfg(feature = "bench-iceoryx2")]
        "iceoryx2" => Box::new(ice::child(&arg)),
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

/// A child that panics closes its queues on the way out, so that the
/// parent's wait ends with an error instead of waiting for it for good
/// (a bench that hangs in CI says nothing).
macro_rules! close_on_panic {
    ($t:ty) => {
        impl Drop for $t {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.q.close();
                    self.back.close();
                }
            }
        }
    };
}
close_on_panic!(QueueChild);
close_on_panic!(TypedChild);

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

// -- ipckit Connection -------------------------------------------------------------

struct ConnectionLink {
    conn: Connection,
    buf: Vec<u8>,
    child: Child,
    _listener: Listener,
}

impl Link for ConnectionLink {
    fn send(&mut self, msg: &[u8]) {
        self.conn.send_bytes(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.conn.recv_bytes_into(&mut self.buf).unwrap();
        buf.copy_from_slice(&self.buf);
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct ConnectionChild(Connection);

impl ChildLink for ConnectionChild {
    fn send(&mut self, msg: &[u8]) {
        self.0.send_bytes(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        if self.0.recv_bytes_into(buf).is_err() {
            std::process::exit(0);
        }
    }
}

// -- ipckit Segment + Event hand-off -------------------------------------------------

/// One direction of the hand-off: a segment holding one message (an 8-byte
/// length, then the bytes) and two events saying whether it is full.
#[derive(serde::Serialize, serde::Deserialize)]
struct Slot {
    seg: Segment,
    full: Event,
    empty: Event,
}

impl Slot {
    fn new(capacity: usize) -> Slot {
        let slot = Slot {
            seg: Segment::new(capacity + 8).unwrap(),
            full: Event::new().unwrap(),
            empty: Event::new().unwrap(),
        };
        slot.empty.set();
        slot
    }

    fn put(&self, msg: &[u8]) {
        self.empty.wait();
        self.empty.clear();
        self.seg
            .write_at(0, &(msg.len() as u64).to_le_bytes())
            .unwrap();
        self.seg.write_at(8, msg).unwrap();
        self.full.set();
    }

    fn get(&self, buf: &mut Vec<u8>) {
        self.full.wait();
        self.full.clear();
        let mut len = [0u8; 8];
        self.seg.read_at(0, &mut len).unwrap();
        buf.resize(u64::from_le_bytes(len) as usize, 0);
        self.seg.read_at(8, buf).unwrap();
        self.empty.set();
    }
}

struct SlotLink {
    down: Slot,
    up: Slot,
    buf: Vec<u8>,
    child: Child,
}

impl Link for SlotLink {
    fn send(&mut self, msg: &[u8]) {
        self.down.put(msg);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.up.get(&mut self.buf);
        buf.copy_from_slice(&self.buf);
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct SlotChild {
    down: Slot,
    up: Slot,
}

impl ChildLink for SlotChild {
    fn send(&mut self, msg: &[u8]) {
        self.up.put(msg);
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        self.down.get(buf);
    }
}

// -- ipc-channel -------------------------------------------------------------------

struct IpcChannelLink {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    child: Child,
}

impl Link for IpcChannelLink {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) {
        buf.copy_from_slice(&self.rx.recv().unwrap());
    }
    fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

struct IpcChannelChild {
    rx: IpcBytesReceiver,
    tx: IpcBytesSender,
}

impl ChildLink for IpcChannelChild {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
        match self.rx.recv() {
            Ok(v) => *buf = v,
            Err(_) => std::process::exit(0),
        }
    }
}

// -- iceoryx2 (feature bench-iceoryx2) ------------------------------------------------

#[cfg(feature = "bench-iceoryx2")]
mod ice {
    use super::{Child, ChildLink, Link, command};
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;

    type Pub = Publisher<ipc::Service, [u8], ()>;
    type Sub = Subscriber<ipc::Service, [u8], ()>;

    pub struct Ports {
        _node: Node<ipc::Service>,
        p: Pub,
        s: Sub,
    }

    fn ports(out: &str, inp: &str, max: usize) -> Ports {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
        let open = |name: &str| {
            node.service_builder(&name.try_into().unwrap())
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .subscriber_max_buffer_size(64)
                .open_or_create()
                .unwrap()
        };
        let (so, si) = (open(out), open(inp));
        let p = so
            .publisher_builder()
            .initial_max_slice_len(max.max(8))
            .allocation_strategy(AllocationStrategy::PowerOfTwo)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .unwrap();
        let s = si.subscriber_builder().buffer_size(64).create().unwrap();
        Ports { _node: node, p, s }
    }

    impl Ports {
        fn send(&self, msg: &[u8]) {
            let sample = self.p.loan_slice_uninit(msg.len()).unwrap();
            sample.write_from_slice(msg).send().unwrap();
        }
        fn recv_into(&self, buf: &mut Vec<u8>) {
            loop {
                if let Some(x) = self.s.receive().unwrap() {
                    buf.clear();
                    buf.extend_from_slice(x.payload());
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }

    pub struct IceLink {
        ports: Ports,
        buf: Vec<u8>,
        child: Child,
    }

    pub fn parent(mode: &str, size: usize) -> IceLink {
        let base = format!("ipckit-bench/{}/{mode}/{size}", std::process::id());
        let ports = ports(&format!("{base}/down"), &format!("{base}/up"), size);
        let child = command("iceoryx2", mode, size)
            .env("IPCKIT_BENCH_ARG", &base)
            .spawn()
            .unwrap();
        // The child says hello once its subscriber exists; messages sent
        // before that would have nobody to go to.
        let mut buf = Vec::new();
        ports.recv_into(&mut buf);
        IceLink { ports, buf, child }
    }

    impl Link for IceLink {
        fn send(&mut self, msg: &[u8]) {
            self.ports.send(msg);
        }
        fn recv(&mut self, buf: &mut [u8]) {
            self.ports.recv_into(&mut self.buf);
            buf.copy_from_slice(&self.buf);
        }
        fn child(&mut self) -> &mut Child {
            &mut self.child
        }
    }

    pub fn child(base: &str) -> Ports {
        let size: usize = base.rsplit('/').next().unwrap().parse().unwrap();
        let ports = ports(&format!("{base}/up"), &format!("{base}/down"), size);
        ports.send(b"hello");
        ports
    }

    impl ChildLink for Ports {
        fn send(&mut self, msg: &[u8]) {
            Ports::send(self, msg);
        }
        fn recv(&mut self, buf: &mut Vec<u8>, _len: usize) {
            self.recv_into(buf);
        }
    }
}

// -- starting children ------------------------------------------------------------

/// The bench's pid, so that a child started just as the bench died (before
/// its PR_SET_PDEATHSIG took effect) notices and exits.
const PARENT: &str = "IPCKIT_BENCH_PARENT";

fn child_command(role: String) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env(ROLE, role)
        .env(PARENT, std::process::id().to_string());
    c
}

fn command(transport: &str, mode: &str, size: usize) -> Command {
    child_command(format!("{transport}:{mode}:{size}"))
}

/// An ipckit `Queue` pair (down and back) of `ring` bytes each, and a child.
fn start_queue(mode: &str, size: usize, ring: usize) -> Box<dyn Link> {
    let (q, back) = (
        Queue::<()>::new(ring).unwrap(),
        Queue::<()>::new(ring).unwrap(),
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

fn start(transport: &str, mode: &str, size: usize) -> Box<dyn Link> {
    match transport {
        "ipckit_queue" => start_queue(mode, size, RING),
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
        "ipckit_connection" => {
            let path = std::env::temp_dir().join(format!(
                "ipckit-bench-conn-{}-{mode}-{size}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            let listener = Listener::bind(path.as_path(), None).unwrap();
            let child = command("connection", mode, size)
                .env("IPCKIT_BENCH_ARG", &path)
                .spawn()
                .unwrap();
            let conn = listener.accept().unwrap();
            Box::new(ConnectionLink {
                conn,
                buf: Vec::new(),
                child,
                _listener: listener,
            })
        }
        "ipckit_segment_event" => {
            let (down, up) = (Slot::new(size.max(8)), Slot::new(size.max(8)));
            let child = command("segevent", mode, size)
                .env(
                    "IPCKIT_BENCH_ARG",
                    hex(&postcard::to_allocvec(&(&down, &up)).unwrap()),
                )
                .spawn()
                .unwrap();
            Box::new(SlotLink {
                down,
                up,
                buf: Vec::new(),
                child,
            })
        }
        "ipc_channel" => {
            let (server, name) =
                IpcOneShotServer::<(IpcBytesSender, IpcBytesReceiver)>::new().unwrap();
            let child = command("ipcchannel", mode, size)
                .env("IPCKIT_BENCH_ARG", name)
                .spawn()
                .unwrap();
            let (_, (tx, rx)) = server.accept().unwrap();
            Box::new(IpcChannelLink { tx, rx, child })
        }
        #[cfg(feature = "bench-iceoryx2")]
        "iceoryx2" => Box::new(ice::parent(mode, size)),
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

const TRANSPORTS: &[&str] = &[
    "ipckit_queue",
    "ipckit_queue_typed",
    "ipckit_connection",
    "ipckit_segment_event",
    "pipe",
    "unix_socketpair",
    "tcp_loopback",
    "file_exchange",
    "ipc_channel",
    #[cfg(feature = "bench-iceoryx2")]
    "iceoryx2",
];

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut g = c.benchmark_group(format!("transports_throughput/{}", label(size)));
        g.throughput(Throughput::Bytes(size as u64));
        for &transport in TRANSPORTS {
            let mut link = start(transport, "sink", size);
            let msg = vec![0xa5u8; size];
            // Warm up the child (page faults, first wake-ups).
            link.announce(16);
            for _ in 0..16 {
                link.send(&msg);
            }
            link.ack();
            let id = format!("transports_throughput/{}/{transport}", label(size));
            placed(id, || {
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
            });
            stop(link, true);
        }
        g.finish();
    }
}

/// The floor for a peer that sleeps: one shared futex word, no spinning.
fn raw_futex_round_trip(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let seg = Segment::new(64).unwrap();
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

/// Where the bench leaves what criterion does not keep: latency
/// percentiles and the Python peers' results.
/// The host's placement of the two vCPUs around each criterion benchmark:
/// a cache-line round trip (ns) just before and just after it (see
/// `common::line_round_trip_ns`), by "group/id"; written to
/// `placement.json` for `bench_report`, which marks the rows measured with
/// the vCPUs far apart.
static PLACEMENT: std::sync::Mutex<Vec<Probed>> = std::sync::Mutex::new(Vec::new());

/// A benchmark's id and its placement probes, before and after.
type Probed = (String, Option<f64>, Option<f64>);

/// Runs `bench` (one criterion benchmark, `group/id`) between two probes
/// of the vCPUs' placement, if criterion's filter selects it.
fn placed(id: String, bench: impl FnOnce()) {
    if !selected(&id) {
        return bench();
    }
    let before = common::line_round_trip_ns(LINE_PROBE);
    bench();
    let after = common::line_round_trip_ns(LINE_PROBE);
    PLACEMENT.lock().unwrap().push((id, before, after));
}

/// Adds this run's probes to `placement.json` (entries of benchmarks not
/// run this time are kept, as criterion keeps their estimates).
fn save_placement() {
    let probes = std::mem::take(&mut *PLACEMENT.lock().unwrap());
    if probes.is_empty() {
        return;
    }
    let path = out_dir().join("placement.json");
    let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (id, before, after) in probes {
        all.insert(
            id,
            serde_json::json!({ "before_ns": before, "after_ns": after }),
        );
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
}

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    let dir = target.join("ipckit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `q`-quantile of sorted samples, in microseconds.
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("transports_round_trip_64B");
    raw_futex_round_trip(&mut g);
    let mut latency = serde_json::Map::new();
    for &transport in TRANSPORTS {
        let mut link = start(transport, "echo", 64);
        let msg = vec![0x5au8; 64];
        let mut back = vec![0u8; 64];
        for _ in 0..100 {
            link.send(&msg);
            link.recv(&mut back);
        }
        // Every trip is timed on its own (an `Instant` costs ~25 ns, noise
        // beside microsecond trips) to report percentiles, not just a mean.
        let mut trips: Vec<Duration> = Vec::new();
        placed(format!("transports_round_trip_64B/{transport}"), || {
            g.bench_function(BenchmarkId::from_parameter(transport), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        link.send(&msg);
                        link.recv(&mut back);
                        let d = t.elapsed();
                        total += d;
                        if trips.len() < 4_000_000 {
                            trips.push(d);
                        }
                    }
                    total
                })
            });
        });
        stop(link, false);
        if trips.is_empty() {
            continue; // filtered out
        }
        trips.sort();
        let mean = trips.iter().sum::<Duration>().as_secs_f64() * 1e6 / trips.len() as f64;
        latency.insert(
            transport.to_owned(),
            serde_json::json!({
                "samples": trips.len(),
                "mean_us": mean,
                "p50_us": quantile_us(&trips, 0.50),
                "p99_us": quantile_us(&trips, 0.99),
            }),
        );
    }
    g.finish();
    if !latency.is_empty() {
        let path = out_dir().join("latency.json");
        // Merge with an earlier run's rows (a filtered run updates its own).
        let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        all.extend(latency);
        std::fs::write(&path, serde_json::to_vec_pretty(&all).unwrap()).unwrap();
    }
}

// -- scaling: one queue, many producers or consumers ----------------------------------

/// A scaling child: `consume` takes messages from `q` until a 1-byte stop
/// marker, then reports its count on `back`; `produce` waits on `ctl` for a
/// count, puts that many messages, and repeats until told 0.
fn scaling_child(role: &str, arg: &str) {
    let (q, back, ctl): (Queue<()>, Queue<()>, Queue<()>) =
        postcard::from_bytes(&unhex(arg)).unwrap();
    let mut buf = Vec::new();
    match role {
        // Markers are 9 bytes: a tag (1: end of round, 0: end of run) and
        // the round number. Once a consumer took its marker for a round,
        // only that round's markers remain in the queue (they follow all of
        // its messages), so a second one is put back for another consumer.
        "consume" => {
            let mut n = 0u64;
            let mut last_round = None;
            loop {
                q.get_bytes_into(&mut buf).unwrap();
                if buf.len() != 9 {
                    n += 1;
                    continue;
                }
                let round = u64::from_le_bytes(buf[1..9].try_into().unwrap());
                if last_round == Some(round) {
                    q.put_bytes(&buf).unwrap();
                    std::thread::yield_now();
                    continue;
                }
                last_round = Some(round);
                back.put_bytes(&n.to_le_bytes()).unwrap();
                n = 0;
                if buf[0] == 0 {
                    return;
                }
            }
        }
        _ => {
            let msg = [0x33u8; 64];
            loop {
                ctl.get_bytes_into(&mut buf).unwrap();
                let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
                if n == 0 {
                    return;
                }
                for _ in 0..n {
                    q.put_bytes(&msg).unwrap();
                }
            }
        }
    }
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("transports_scaling_64B");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 2, 4] {
        // 1 producer (this process) -> n consumer processes.
        let (q, back, ctl) = (
            Queue::<()>::new(RING).unwrap(),
            Queue::<()>::new(1 << 16).unwrap(),
            Queue::<()>::new(1 << 16).unwrap(),
        );
        let arg = hex(&postcard::to_allocvec(&(&q, &back, &ctl)).unwrap());
        let mut kids: Vec<Child> = (0..n)
            .map(|_| {
                command("scaling", "consume", 64)
                    .env("IPCKIT_BENCH_ARG", &arg)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let msg = [0x44u8; 64];
        let mut buf = Vec::new();
        let mut round = 0u64;
        let marker = |tag: u8, round: u64| {
            let mut m = [tag; 9];
            m[1..].copy_from_slice(&round.to_le_bytes());
            m
        };
        g.bench_function(format!("1p_{n}c"), |b| {
            b.iter_custom(|iters| {
                round += 1;
                let t = Instant::now();
                for _ in 0..iters {
                    q.put_bytes(&msg).unwrap();
                }
                for _ in 0..n {
                    q.put_bytes(&marker(1, round)).unwrap();
                }
                let mut got = 0;
                for _ in 0..n {
                    back.get_bytes_into(&mut buf).unwrap();
                    got += u64::from_le_bytes(buf[..8].try_into().unwrap());
                }
                assert_eq!(got, iters, "every message consumed once");
                t.elapsed()
            })
        });
        round += 1;
        for _ in 0..n {
            q.put_bytes(&marker(0, round)).unwrap();
        }
        for k in &mut kids {
            let _ = k.wait();
        }

        if n == 1 {
            continue; // 1 -> 1 measured above
        }
        // n producer processes -> 1 consumer (this process).
        let (q, back, ctl) = (
            Queue::<()>::new(RING).unwrap(),
            Queue::<()>::new(1 << 16).unwrap(),
            Queue::<()>::new(1 << 16).unwrap(),
        );
        let arg = hex(&postcard::to_allocvec(&(&q, &back, &ctl)).unwrap());
        let mut kids: Vec<Child> = (0..n)
            .map(|_| {
                command("scaling", "produce", 64)
                    .env("IPCKIT_BENCH_ARG", &arg)
                    .spawn()
                    .unwrap()
            })
            .collect();
        g.bench_function(format!("{n}p_1c"), |b| {
            b.iter_custom(|iters| {
                let share = iters.div_ceil(n as u64);
                let t = Instant::now();
                for _ in 0..n {
                    ctl.put_bytes(&share.to_le_bytes()).unwrap();
                }
                for _ in 0..share * n as u64 {
                    q.get_bytes_into(&mut buf).unwrap();
                }
                // Time per message actually moved (share × n ≥ iters).
                t.elapsed()
                    .mul_f64(iters as f64 / (share * n as u64) as f64)
            })
        });
        for _ in 0..n {
            ctl.put_bytes(&0u64.to_le_bytes()).unwrap();
        }
        for k in &mut kids {
            let _ = k.wait();
        }
    }
    g.finish();
}

/// Python's multiprocessing doing the throughput and round-trip workloads.
fn python_peers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/transports.py");
    let out = out_dir().join("python.json");
    let quick = quick();
    let status = Command::new("python3")
        .arg(script)
        .arg(&out)
        .arg(if quick { "0.05" } else { "0.5" })
        .status();
    match status {
        Ok(s) if s.success() => println!("python peers: results in {}", out.display()),
        Ok(s) => eprintln!("python peers failed ({s}); the Python rows are missing"),
        Err(e) => eprintln!("skipping the Python rows: python3 cannot be started: {e}"),
    }
}

// -- regimes: ring size and machine load ----------------------------------------------

/// Ring sizes of the regime section (the socketpair has none).
const REGIME_RINGS: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];
/// The rows of each load condition: (transport, ring).
const REGIME_CASES: [(&str, Option<usize>); 4] = [
    ("ipckit_queue", Some(REGIME_RINGS[0])),
    ("ipckit_queue", Some(REGIME_RINGS[1])),
    ("ipckit_queue", Some(REGIME_RINGS[2])),
    ("unix_socketpair", None),
];
/// The round trip's ring: one message is in flight, so the size does not
/// matter, and a small ring is laped (its pages faulted in) by the warm-up.
const REGIME_RT_RING: usize = 64 << 10;

/// Criterion's quick flags, as `.ci/run` passes them (`--measurement-time`
/// under a second, or `--quick`).
fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--quick")
        || args
            .windows(2)
            .any(|w| w[0] == "--measurement-time" && w[1].parse::<f64>().is_ok_and(|t| t < 1.0))
}

/// Whether a criterion filter on the command line leaves `section` selected.
fn selected(section: &str) -> bool {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<f64>().is_err());
    filter.is_none_or(|f| section.contains(f.as_str()) || f.contains(section))
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A busy-loop child (`busy:<k>`): says it runs, then spins until killed.
fn busy_loop(k: usize) {
    pin_to(k);
    let mut out = std::io::stdout();
    out.write_all(b"r").unwrap();
    out.flush().unwrap();
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// Load on the machine: one busy-loop process per core, children of the
/// bench that die with it (PR_SET_PDEATHSIG); killed and reaped on drop.
struct Load(Vec<Child>);

impl Load {
    fn start(n: usize) -> Load {
        let mut load = Load(Vec::new());
        for k in 0..n {
            let child = child_command(format!("busy:{k}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            load.0.push(child);
        }
        // Measure only once every loop runs.
        for child in &mut load.0 {
            let mut b = [0u8; 1];
            child.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
        }
        load
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh 64-byte link for one regime run: a new queue pair of `ring`
/// bytes or a new socketpair, and a new child.
fn regime_link(transport: &str, mode: &str, ring: Option<usize>) -> Box<dyn Link> {
    match ring {
        Some(ring) => start_queue(mode, 64, ring),
        None => start(transport, mode, 64),
    }
}

/// Sends `n` messages one way and waits for the child's acknowledgement.
fn batch(link: &mut dyn Link, n: u64) -> Duration {
    let msg = [0xa5u8; 64];
    let t = Instant::now();
    link.announce(n);
    for _ in 0..n {
        link.send(&msg);
    }
    link.ack();
    t.elapsed()
}

/// A new sink link, warmed up: enough messages to lap the ring (every page
/// of it faulted in on both sides), 4096 for the socketpair.
fn warm_sink(transport: &str, ring: Option<usize>) -> Box<dyn Link> {
    let mut link = regime_link(transport, "sink", ring);
    batch(&mut *link, ring.map_or(4096, |r| (r / 64) as u64 + 16));
    link
}

/// Messages per run so that one run takes about `target`: batches double
/// until one takes a quarter of it.
fn regime_count(transport: &str, ring: Option<usize>, target: Duration) -> u64 {
    let mut link = warm_sink(transport, ring);
    let mut n = 1024u64;
    let count = loop {
        let took = batch(&mut *link, n);
        if took >= target / 4 || n >= 1 << 32 {
            break (n as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-9)) as u64;
        }
        n *= 2;
    };
    stop(link, true);
    count.max(1024)
}

/// Whether the child last ran on the CPU this process runs on: a sample
/// taken at the end of a run (the scheduler may move either process during
/// it). Whether two floating peers share a CPU decides how a wake-up costs
/// (a 64 B socketpair round trip here: ~10 µs on one CPU, ~90 µs across
/// two), so each run records it.
fn same_cpu(link: &mut dyn Link) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", link.child().id())).ok()?;
    // Field 39, `processor`; the fields after the command name start at 3.
    let child: i32 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(36)?
        .parse()
        .ok()?;
    // SAFETY: sched_getcpu has no preconditions.
    let ours = unsafe { libc::sched_getcpu() };
    (ours >= 0).then_some(child == ours)
}

/// One measurement: a fresh link, warmed up, then `n` messages; msgs/s,
/// whether parent and child ended the run on one CPU, the cache-line
/// round trip between the two CPUs measured just before (the host's
/// placement of the virtual CPUs; see `common::line_round_trip_ns`), and
/// where the run's time went (`common::RunAccount`: each side's time on a
/// CPU and waiting for one, the hypervisor's steal).
///
/// Not under load: the probe's spinning threads would share their CPUs
/// with the busy loops and measure the scheduler instead.
fn regime_run(
    transport: &str,
    ring: Option<usize>,
    n: u64,
    loaded: bool,
) -> (f64, Option<bool>, Option<f64>, common::RunShares) {
    let mut link = warm_sink(transport, ring);
    let line = if loaded {
        None
    } else {
        common::line_round_trip_ns(LINE_PROBE)
    };
    let account = common::RunAccount::start(link.child().id());
    let took = batch(&mut *link, n);
    let shares = account.finish();
    let same = same_cpu(&mut *link);
    stop(link, true);
    (n as f64 / took.as_secs_f64(), same, line, shares)
}

/// How long the cache-line probe before each regime run bounces its line.
const LINE_PROBE: Duration = Duration::from_millis(10);

/// One round-trip measurement on a fresh link: `count` trips of 64 B
/// echoed (fewer if `cap` passes first), every trip timed; sorted (a fixed
/// count gives every run the same weight in the pooled percentiles), and
/// whether parent and child ended the run on one CPU.
fn regime_trips(transport: &str, count: usize, cap: Duration) -> (Vec<Duration>, Option<bool>) {
    let ring = (transport == "ipckit_queue").then_some(REGIME_RT_RING);
    let mut link = regime_link(transport, "echo", ring);
    let msg = [0x5au8; 64];
    let mut back = [0u8; 64];
    for _ in 0..ring.map_or(100, |r| 2 * r / 64) {
        link.send(&msg);
        link.recv(&mut back);
    }
    let mut trips = Vec::with_capacity(count);
    let end = Instant::now() + cap;
    while trips.len() < count {
        let t = Instant::now();
        link.send(&msg);
        link.recv(&mut back);
        let now = Instant::now();
        trips.push(now - t);
        if now >= end {
            break;
        }
    }
    let same = same_cpu(&mut *link);
    stop(link, false);
    trips.sort();
    (trips, same)
}

/// The Queue against the socketpair, 64 B one way and round trip, in each
/// regime: ring 64 KiB / 1 MiB / 16 MiB, idle and with one busy loop per
/// core. Every run is a separate measurement on a fresh link (new queue or
/// socketpair, new child), the rows interleaved run by run so that drift
/// hits them alike; results in `target/ipckit-bench/regimes.json`, the
/// table printed.
fn regimes() {
    let quick = quick();
    let (runs, target, trips_per_run) = if quick {
        (5, Duration::from_millis(30), 1_000)
    } else {
        (11, Duration::from_millis(250), 10_000)
    };
    let trip_cap = Duration::from_secs(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let began = Instant::now();
    let loadavg_start = loadavg();
    let (mut throughput, mut round_trip, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    for loaded in [false, true] {
        let (load, label) = if loaded {
            ("loaded", format!("{cores} busy loops"))
        } else {
            ("idle", "idle".to_owned())
        };
        let before = loadavg();
        let steal = common::Steal::start();
        let started = Instant::now();
        let busy = loaded.then(|| Load::start(cores));
        let counts: Vec<u64> = REGIME_CASES
            .iter()
            .map(|&(t, ring)| regime_count(t, ring, target))
            .collect();
        let mut rates = vec![Vec::new(); REGIME_CASES.len()];
        let mut same = vec![Vec::new(); REGIME_CASES.len()];
        let mut line = vec![Vec::new(); REGIME_CASES.len()];
        let mut shares = vec![Vec::new(); REGIME_CASES.len()];
        for _ in 0..runs {
            for (i, &(t, ring)) in REGIME_CASES.iter().enumerate() {
                let (rate, one_cpu, line_ns, run) = regime_run(t, ring, counts[i], loaded);
                rates[i].push(rate);
                same[i].push(one_cpu);
                line[i].push(line_ns);
                shares[i].push(run);
            }
        }
        for (i, &(t, ring)) in REGIME_CASES.iter().enumerate() {
            // Per run, fractions of its wall-clock time: [bench thread, child].
            let ran: Vec<_> = shares[i].iter().map(|s| s.ran).collect();
            let waited: Vec<_> = shares[i].iter().map(|s| s.waited).collect();
            let stolen: Vec<_> = shares[i].iter().map(|s| s.stolen).collect();
            throughput.push(serde_json::json!({
                "load": load, "load_label": label, "transport": t, "ring": ring,
                "msgs_per_run": counts[i], "msgs_per_s": rates[i], "same_cpu": same[i],
                "line_rtt_ns": line[i], "ran": ran, "waited": waited, "stolen": stolen,
            }));
        }
        for t in ["ipckit_queue", "unix_socketpair"] {
            round_trip.push(serde_json::json!({ "load": load, "transport": t }));
        }
        let rt_at = round_trip.len() - 2;
        let mut all: [Vec<Duration>; 2] = Default::default();
        let mut run_p50: [Vec<f64>; 2] = Default::default();
        let mut run_same: [Vec<Option<bool>>; 2] = Default::default();
        for _ in 0..runs {
            for (i, t) in ["ipckit_queue", "unix_socketpair"].iter().enumerate() {
                let (trips, one_cpu) = regime_trips(t, trips_per_run, trip_cap);
                run_p50[i].push(quantile_us(&trips, 0.50));
                run_same[i].push(one_cpu);
                all[i].extend(trips);
            }
        }
        for i in 0..2 {
            all[i].sort();
            let row = round_trip[rt_at + i].as_object_mut().unwrap();
            row.insert("ring".into(), (i == 0).then_some(REGIME_RT_RING).into());
            row.insert("trips".into(), all[i].len().into());
            row.insert("p50_us".into(), quantile_us(&all[i], 0.50).into());
            row.insert("p99_us".into(), quantile_us(&all[i], 0.99).into());
            row.insert("run_p50_us".into(), run_p50[i].clone().into());
            row.insert("same_cpu".into(), serde_json::json!(run_same[i]));
        }
        drop(busy);
        loads.push(serde_json::json!({
            "load": load, "label": label, "busy_loops": if loaded { cores } else { 0 },
            "loadavg_before": before, "seconds": started.elapsed().as_secs_f64(),
            "steal_percent": steal.percent(),
        }));
    }
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let results = serde_json::json!({
        "quick": quick,
        "runs": runs,
        "run_target_s": target.as_secs_f64(),
        "trips_per_run": trips_per_run,
        "trip_cap_s": trip_cap.as_secs_f64(),
        "message_bytes": 64,
        "cores": cores,
        "pinned": std::env::var("IPCKIT_BENCH_PIN").as_deref() == Ok("1"),
        "unix_time": unix_time,
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "seconds": began.elapsed().as_secs_f64(),
        "loads": loads,
        "throughput": throughput,
        "round_trip": round_trip,
    });
    let path = out_dir().join("regimes.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    println!("\n{}", regime_report::markdown(&results));
    println!("regimes: results in {}", path.display());
}

/// `memcpy` of 1 MiB within one process: alone, and while a second thread
/// copies 1 MiB buffers of its own without pause (`both_cpus`: the two
/// copies a 1 MiB one-way transport makes run at once, one per CPU; when
/// the host runs the two vCPUs as two threads of one core they share its
/// load and store units and caches, and this row shows what is left of
/// each). Each with its placement probes, as the transports have.
fn memcpy(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut g = c.benchmark_group("memcpy_1MiB");
    g.throughput(Throughput::Bytes(1 << 20));
    let src = vec![1u8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    placed("memcpy_1MiB/copy_from_slice".into(), || {
        g.bench_function("copy_from_slice", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });
    });
    placed("memcpy_1MiB/copy_from_slice_both_cpus".into(), || {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (src, mut dst) = (vec![2u8; 1 << 20], vec![0u8; 1 << 20]);
                while !stop.load(Ordering::Relaxed) {
                    dst.copy_from_slice(black_box(&src));
                    black_box(&dst);
                }
            });
            g.bench_function("copy_from_slice_both_cpus", |b| {
                b.iter(|| {
                    dst.copy_from_slice(black_box(&src));
                    black_box(&dst);
                })
            });
            stop.store(true, Ordering::Relaxed);
        });
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
    targets = throughput, round_trip, scaling, memcpy
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        // A child dies with the bench, however the bench ends.
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, no memory.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let parent = std::env::var(PARENT)
            .ok()
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: getppid has no preconditions.
        if parent.is_some_and(|p| unsafe { libc::getppid() } != p) {
            return; // the bench died before the prctl: nobody to serve
        }
        if let Some(k) = role.strip_prefix("busy:") {
            busy_loop(k.parse().unwrap());
            return;
        }
        if let Some(rest) = role.strip_prefix("scaling:") {
            let mode = rest.split(':').next().unwrap();
            scaling_child(mode, &std::env::var("IPCKIT_BENCH_ARG").unwrap());
            return;
        }
        pin_to(1);
        child_main(&role);
        return;
    }
    pin_to(0);
    benches();
    save_placement();
    // The regimes and Python run unless a filter selects only other benches.
    if selected("regimes") {
        regimes();
    }
    if selected("python") {
        python_peers();
    }
    Criterion::default().configure_from_args().final_summary();
}
