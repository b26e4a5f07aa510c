"""Python's multiprocessing.Manager doing the workloads of benches/manager.rs.

Driven by the bench over stdin/stdout, one command per line; each answers
with the elapsed nanoseconds of the whole batch:

    dict N      N rounds of `d[k] = i; d[k]` on a Manager().dict()
                (k cycles through 100 integer keys)
    list N      N rounds of `l.append(i)` on a Manager().list()

The manager (a server process, the platform's default start method) is
started and warmed up before "ready" is printed.
"""
import multiprocessing
import sys
import time


def main():
    manager = multiprocessing.Manager()
    d = manager.dict()
    lst = manager.list()
    for i in range(100):
        d[i] = i
        d[i]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        n = int(cmd[1])
        start = time.perf_counter_ns()
        if cmd[0] == "dict":
            for i in range(n):
                k = i % 100
                d[k] = i
                d[k]
        elif cmd[0] == "list":
            for i in range(n):
                lst.append(i)
            elapsed = time.perf_counter_ns() - start
            del lst[:]
            print(elapsed, flush=True)
            continue
        else:
            print(f"error unknown command {cmd[0]!r}", flush=True)
            continue
        print(time.perf_counter_ns() - start, flush=True)
    manager.shutdown()


if __name__ == "__main__":
    main()
