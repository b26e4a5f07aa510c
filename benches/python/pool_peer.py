"""Python's process pools doing the workloads of benches/pool.rs.

Driven by the bench over stdin/stdout, one command per line; each answers
with the elapsed nanoseconds of the whole batch:

    rt N            N submit -> result round trips of an empty task
                    (concurrent.futures.ProcessPoolExecutor)
    exmap C N       N runs of ProcessPoolExecutor.map(empty, range(10000),
                    chunksize=C), consumed in order
    poolmap N       N runs of multiprocessing.Pool.map(empty, range(10000))
                    (its automatic chunking)

Both pools have WORKERS processes (argv[1]) and the platform's default start
method (fork on Linux), started and warmed up before "ready" is printed.
"""
import concurrent.futures
import multiprocessing
import sys
import time

TASKS = 10_000


def empty(x):
    return x


def main():
    workers = int(sys.argv[1])
    executor = concurrent.futures.ProcessPoolExecutor(max_workers=workers)
    pool = multiprocessing.Pool(workers)
    # Warm up: every worker started and has run tasks.
    list(executor.map(empty, range(100)))
    pool.map(empty, range(100))
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        start = time.perf_counter_ns()
        if cmd[0] == "rt":
            for i in range(int(cmd[1])):
                executor.submit(empty, i).result()
        elif cmd[0] == "exmap":
            chunksize, n = int(cmd[1]), int(cmd[2])
            for _ in range(n):
                for _ in executor.map(empty, range(TASKS), chunksize=chunksize):
                    pass
        elif cmd[0] == "poolmap":
            for _ in range(int(cmd[1])):
                pool.map(empty, range(TASKS))
        elif cmd[0] == "quit":
            break
        else:
            print(f"error unknown command {cmd[0]!r}", flush=True)
            continue
        print(time.perf_counter_ns() - start, flush=True)
    executor.shutdown()
    pool.close()
    pool.join()


if __name__ == "__main__":
    main()
