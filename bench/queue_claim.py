"""Queue claim throughput: PostgreSQL vs SQLite, 1 and 2 worker processes, a no-op stage.

Each run fills a fresh queue with N paths, then W worker processes (as W daemons would) loop
``claim(batch)`` → ``done(items)`` until the queue is empty. Reported: items/s claimed and completed,
wall clock from the first claim to the last done, and that every item was done exactly once. PostgreSQL
is a throwaway cluster (tests/pgserver.py: Debian's binaries, Unix socket, fsync off); SQLite is a file
in WAL mode (synchronous=NORMAL, as pixgrep opens it).

    PYTHONPATH=daemon:cli python bench/queue_claim.py [--items 5000] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def _queue(url: str):  # type: ignore[no-untyped-def]
    from pixgrep.catalog import Catalog
    from pixgrep.service.queue import WorkQueue

    return WorkQueue(Catalog(url))


def fill(url: str, n: int) -> None:
    from pixgrep.service.queue import Job

    q = _queue(url)
    q.put(Job(f"/bench/{i:07d}.jpg") for i in range(n))
    q.db.close()


def worker(url: str, batch: int, start: mp.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    q = _queue(url)
    done = 0
    start.wait()
    t0 = time.perf_counter()
    while items := q.claim(batch):
        q.done(items)  # the no-op stage
        done += len(items)
    out.put((done, t0, time.perf_counter()))
    q.db.close()


def run_once(url: str, n: int, workers: int, batch: int) -> tuple[float, int]:
    fill(url, n)
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, batch, start, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[0] for r in res)
    wall = max(r[2] for r in res) - min(r[1] for r in res)
    q = _queue(url)
    depth = q.depth()
    q.db.close()
    assert total == n and depth["done"] == n, (total, depth)
    return n / wall, min(r[0] for r in res)


def main() -> None:
    import pgserver

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with pgserver.running() as pg, tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in args.batches.split(",")]:
            for workers in (1, 2):
                # Interleaved: each rep runs SQLite then PostgreSQL, on fresh queues.
                rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
                least: dict[str, int] = {"sqlite": args.items, "postgresql": args.items}
                for rep in range(args.reps):
                    for engine in ("sqlite", "postgresql"):
                        name = f"q{batch}_{workers}_{rep}"
                        url = f"sqlite:///{tmp}/{name}.sqlite" if engine == "sqlite" else pg.create_database(name)
                        rate, fewest = run_once(url, args.items, workers, batch)
                        rates[engine].append(rate)
                        least[engine] = min(least[engine], fewest)
                for engine, rs in rates.items():
                    rows.append((engine, workers, batch, statistics.median(rs), least[engine]))
                print(f"done batch {batch} workers {workers}", file=sys.stderr, flush=True)
    from _daemon import machine

    print(f"machine: {machine()}; {args.items} items a run, median of {args.reps} interleaved runs")
    print("| books | workers | claim batch | items/s claimed + done | fewest items one worker did |")
    print("|---|---:|---:|---:|---:|")
    for engine, workers, batch, rate, fewest in rows:
        print(f"| {engine} | {workers} | {batch} | {rate:,.0f} | {fewest:,} |")


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    main()
