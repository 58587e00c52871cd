"""The Milvus server path: HNSW vs FLAT on `milvus-lite server`, recall@10, and the daemon's RSS.

Run as ``python bench/search_latency.py --backend server`` (or this file directly). For each size, one
`milvus-lite server` on loopback gets the same synthetic items twice, shaped like real memes (about 7
segments an image: the whole text, its regions and lines, real meme text, random unit vectors): first into
a FLAT collection (exact search), then, after dropping it, into an HNSW one (pixgrep's server default:
M=16, efConstruction=200). The same queries go through ``MilvusStore.search_dense`` (both collections, top
10) on each; recall@10 is HNSW's share of FLAT's top 10, at ef 64 (the default) and 128. Queries are stored
vectors plus noise (cosine ≈ 0.8 to their source), so each has a true nearest row; random 512-d vectors
have no structure, which makes the other nine neighbours near-ties: a pessimistic recall for HNSW.

With the HNSW collection in place, the books get the same items (SQLite), a ``pixgrep daemon`` starts on
the server path and answers a few searches, and its RSS (and its OCR process's) is read from /proc.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 512
EMBED = "use-multilingual-v3"


def start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    import socket

    exe = Path(sys.executable).parent / "milvus-lite"
    log = open(data.parent / "milvus-server.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=log,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("milvus-lite server did not start")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def items(n: int, lines: list[str], seed: int = 0, chunk: int = 2000) -> Any:
    """The same n items on every call: (hash, segments, vectors) in chunks."""
    from search_latency import synthetic_segments

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    for lo in range(0, n, chunk):
        out = []
        for i in range(lo, min(n, lo + chunk)):
            segs = synthetic_segments(lines, rng)
            v = nprng.standard_normal((len(segs), DIM)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            out.append((f"{i:032x}", segs, v))
        yield out


def queries(n: int, lines: list[str], count: int, seed: int = 5) -> list[np.ndarray]:
    picks = set(random.Random(seed).sample(range(n), count))
    noise = np.random.default_rng(seed)
    out = []
    for batch in items(n, lines):
        for h, _, vecs in batch:
            if int(h, 16) in picks:
                q = vecs[noise.integers(len(vecs))] + noise.standard_normal(DIM).astype(np.float32) * (0.7 / DIM**0.5)
                out.append(q / np.linalg.norm(q))
    return out


def fill(uri: str, index: str, n: int, lines: list[str]) -> tuple[Any, int, float]:
    from pixgrep.store import IndexParams, MilvusStore

    t = time.monotonic()
    st = MilvusStore(uri, "pixgrep", EMBED, DIM, timeout=600, recreate=True, params=IndexParams(index=index))
    for batch in items(n, lines):
        st.upsert_many(batch)
    st.flush()
    rows = st.count()
    return st, rows, time.monotonic() - t


def timed_search(st: Any, qs: list[np.ndarray], ef: int | None = None) -> tuple[list[float], list[set[Any]]]:
    if ef is not None:
        st.params = type(st.params)(index="HNSW", hnsw_ef=ef)
    st.search_dense(qs[0], 10)  # warm
    lat, found = [], []
    for q in qs:
        t = time.perf_counter()
        hits = st.search_dense(q, 10)
        lat.append((time.perf_counter() - t) * 1000)
        found.append({(h.content_hash, h.kind, h.text) for h in hits})
    return lat, found


def write_books(home: Path, n: int, lines: list[str]) -> None:
    """The same items in the SQLite books (what the daemon loads and counts), without touching Milvus."""
    from pixgrep.catalog import Catalog

    db = Catalog(home / "pixgrep.sqlite")
    for batch in items(n, lines):
        db.seed(
            [{"hash": h, "status": "done", "source": "ocr", "text": segs[0].text, "attempts": 1} for h, segs, _ in batch],
            [{"path": f"/synthetic/{int(h, 16) // 1000:03d}/img{int(h, 16):07d}.jpg", "content_hash": h, "size": 1,
              "mtime_ns": 1, "inode": int(h, 16)} for h, _, _ in batch],
        )  # fmt: skip
    db.close()


def daemon_rss(uri: str, n: int, lines: list[str], search_words: list[str]) -> dict[str, float]:
    from _daemon import Daemon, Sandbox

    sb = Sandbox("pgsrv-")
    try:
        sb.home.mkdir(parents=True)
        write_books(sb.home, n, lines)
        d = Daemon(sb, PIXGREP_MILVUS__URI=uri, PIXGREP_MILVUS__TIMEOUT="120")
        try:
            d.start(timeout=600)
            hits = sum(len(d.search(w)) for w in search_words)
            if not hits:
                raise RuntimeError("the daemon found nothing on the server path")
            return d.rss()
        finally:
            d.stop()
    finally:
        sb.cleanup()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(sizes: list[int], n_queries: int, lines: list[str]) -> None:
    import tempfile

    from _daemon import machine

    table, mem = [], []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="pgsrv-milvus-"))
        port = 19700 + random.randrange(200)
        server = start_server(tmp / "data", port)
        uri = f"http://127.0.0.1:{port}"
        try:
            qs = queries(n, lines, n_queries)
            flat, rows, build_flat = fill(uri, "FLAT", n, lines)
            flat_lat, exact = timed_search(flat, qs)
            flat.close()
            hnsw, _, build_hnsw = fill(uri, "HNSW", n, lines)
            results = []
            for ef in (64, 128):
                lat, found = timed_search(hnsw, qs, ef)
                recall = statistics.mean(len(f & e) / max(1, len(e)) for f, e in zip(found, exact, strict=True))
                results.append((ef, lat, recall))
            hnsw.close()
            server_rss = rss_mib(server.pid)
            words = [w for w in lines[:5]]
            d = daemon_rss(uri, n, lines, words)
            table.append((n, rows, build_flat, flat_lat, build_hnsw, results))
            mem.append((n, rows, d, server_rss))
            # Each size as soon as it is measured: the largest may not finish on a shared machine.
            print(f"done {n}: rows {rows}, FLAT p50 {statistics.median(flat_lat):.1f} ms, "
                  + ", ".join(f"HNSW ef={ef} p50 {statistics.median(lat):.1f} ms recall@10 {r:.3f}"
                              for ef, lat, r in results)
                  + f"; daemon RSS {d['daemon']:.0f} MiB + OCR {d['children']:.0f} MiB, server {server_rss:.0f} MiB",
                  file=sys.stderr, flush=True)  # fmt: skip
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine: {machine()}; `milvus-lite server` on loopback, dense top 10 over both collections, "
          f"{n_queries} queries\n")  # fmt: skip
    print("| images | rows | index | load + build s | p50 ms | p95 ms | recall@10 vs FLAT |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for n, rows, bf, flat_lat, bh, results in table:
        print(f"| {n:,} | {rows:,} | FLAT (exact) | {bf:.0f} | {statistics.median(flat_lat):.1f} | "
              f"{pct(flat_lat, 0.95):.1f} | 1 |")  # fmt: skip
        for ef, lat, recall in results:
            print(f"| {n:,} | {rows:,} | HNSW M=16 efC=200, ef={ef} | {bh:.0f} | {statistics.median(lat):.1f} | "
                  f"{pct(lat, 0.95):.1f} | {recall:.3f} |")  # fmt: skip
    print("\n| images | rows | daemon RSS MiB | daemon peak MiB | OCR process MiB | milvus-lite server RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, rows, d, srv in mem:
        print(f"| {n:,} | {rows:,} | {d['daemon']:.0f} | {d['daemon_peak']:.0f} | {d['children']:.0f} | {srv:.0f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    from search_latency import main

    sys.argv.insert(1, "--backend=server")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    main()
