"""Python's multiprocessing doing the workloads of benches/transports.rs.

    python3 benches/python/transports.py OUT.json [SECONDS]

Transports (parent and one child process, the default start method):
- python_mp_queue: multiprocessing.Queue, put/get of bytes objects;
- python_mp_pipe: multiprocessing.Pipe(), send_bytes/recv_bytes;
- python_shared_memory_event: a shared_memory.SharedMemory slot per
  direction plus two multiprocessing.Event ("full", "empty"), the same
  hand-off as ipckit's Segment + Event row.

Workloads, as in the Rust bench: one-way throughput (the parent sends a
batch of messages of 64 B / 4 KiB / 64 KiB / 1 MiB, the child acknowledges
once it has them all; the batch doubles until it takes SECONDS) and the 64 B
round trip (the child echoes; every trip timed for SECONDS; mean, p50, p99).
Results go to OUT.json in the format examples/bench_report.rs reads.
"""
import json
import multiprocessing as mp
import struct
import sys
import time
from multiprocessing import shared_memory

SIZES = [("64B", 64), ("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)]


class QueueLink:
    def __init__(self):
        self.down, self.up = mp.Queue(), mp.Queue()

    def send(self, b):
        self.down.put(b)

    def recv(self):
        return self.up.get()

    def child_send(self, b):
        self.up.put(b)

    def child_recv(self):
        return self.down.get()


class PipeLink:
    def __init__(self):
        self.parent, self.child = mp.Pipe()

    def send(self, b):
        self.parent.send_bytes(b)

    def recv(self):
        return self.parent.recv_bytes()

    def child_send(self, b):
        self.child.send_bytes(b)

    def child_recv(self):
        return self.child.recv_bytes()


class Slot:
    def __init__(self, capacity):
        self.shm = shared_memory.SharedMemory(create=True, size=capacity + 8)
        self.full, self.empty = mp.Event(), mp.Event()
        self.empty.set()

    def put(self, b):
        self.empty.wait()
        self.empty.clear()
        self.shm.buf[0:8] = struct.pack("<Q", len(b))
        self.shm.buf[8 : 8 + len(b)] = b
        self.full.set()

    def get(self):
        self.full.wait()
        self.full.clear()
        (n,) = struct.unpack("<Q", self.shm.buf[0:8])
        b = bytes(self.shm.buf[8 : 8 + n])
        self.empty.set()
        return b

    def close(self, unlink):
        self.shm.close()
        if unlink:
            self.shm.unlink()


class SharedMemoryLink:
    def __init__(self, capacity):
        self.down, self.up = Slot(capacity), Slot(capacity)

    def send(self, b):
        self.down.put(b)

    def recv(self):
        return self.up.get()

    def child_send(self, b):
        self.up.put(b)

    def child_recv(self):
        return self.down.get()

    def close(self):
        self.down.close(True)
        self.up.close(True)


def sink(link):
    """Child: receive a count (8 bytes), that many messages, acknowledge."""
    while True:
        (n,) = struct.unpack("<Q", link.child_recv())
        if n == 0:
            return
        for _ in range(n):
            link.child_recv()
        link.child_send(b"\x01")


def echo(link):
    while True:
        b = link.child_recv()
        if b == b"stop":
            return
        link.child_send(b)


def make(name, capacity):
    if name == "python_mp_queue":
        return QueueLink()
    if name == "python_mp_pipe":
        return PipeLink()
    return SharedMemoryLink(capacity)


def throughput(name, size, seconds):
    link = make(name, max(size, 8))
    child = mp.Process(target=sink, args=(link,))
    child.start()
    msg = bytes([0xA5]) * size
    batch = 16
    while True:
        start = time.perf_counter()
        link.send(struct.pack("<Q", batch))
        for _ in range(batch):
            link.send(msg)
        link.recv()
        took = time.perf_counter() - start
        if took >= seconds or batch >= 1 << 24:
            break
        batch *= 2
    link.send(struct.pack("<Q", 0))
    child.join()
    if hasattr(link, "close"):
        link.close()
    return {"msgs_per_s": batch / took, "bytes_per_s": batch * size / took}


def round_trip(name, seconds):
    link = make(name, 64)
    child = mp.Process(target=echo, args=(link,))
    child.start()
    msg = bytes([0x5A]) * 64
    for _ in range(100):
        link.send(msg)
        link.recv()
    trips = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter_ns()
        link.send(msg)
        link.recv()
        trips.append(time.perf_counter_ns() - t)
    link.send(b"stop")
    child.join()
    if hasattr(link, "close"):
        link.close()
    trips.sort()
    q = lambda p: trips[round((len(trips) - 1) * p)] / 1000
    return {
        "samples": len(trips),
        "mean_us": sum(trips) / len(trips) / 1000,
        "p50_us": q(0.50),
        "p99_us": q(0.99),
    }


def main():
    out = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    names = ["python_mp_queue", "python_mp_pipe", "python_shared_memory_event"]
    result = {
        "python": sys.version.split()[0],
        "start_method": mp.get_start_method(),
        "throughput": {},
        "latency": {},
    }
    for name in names:
        result["throughput"][name] = {
            label: throughput(name, size, seconds) for label, size in SIZES
        }
        result["latency"][name] = round_trip(name, seconds)
        print(f"{name}: done", file=sys.stderr)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
