"""The Milvus server path: HNSW vs FLAT on `milvus-lite server`, recall@10, and the daemon's RSS.

Run as ``python bench/search_latency.py --backend server`` (or this file directly). For each size, the same
synthetic items, shaped like real memes (about 7 segments an image: the whole text, its regions and lines,
real meme text, random unit vectors), go into a FLAT collection pair (exact search) on one `milvus-lite
server` on loopback, then into an HNSW pair (pixgrep's server default: M=16, efConstruction=200) on another,
one server at a time. The same queries go through ``MilvusStore.search_dense`` (both collections, top 10) on
each; recall@10 is HNSW's share of FLAT's top 10, at ef 64 (the default) and 128, and "same first hit" the
share of queries whose first hit is FLAT's. Queries are stored vectors plus noise (cosine ≈ 0.8 to their
source), so each has a true nearest row; random 512-d vectors have no structure, which makes the other nine
neighbours near-ties: a pessimistic recall for HNSW.

Searches start only once Lite's background compaction is over and every sealed segment has its dense index
(Lite searches a segment without one exactly). See ``fill`` for what makes a 100k load feasible without
changing what is measured. With the HNSW collections in place, the books get the same items (SQLite), a
``pixgrep daemon`` starts on the server path and answers a few searches, and its RSS (and its OCR process's)
is read from /proc.

    python bench/search_latency.py --backend server --sizes 10000,100000 --keep /tmp/pgsrv   # reuses loads
    python bench/search_latency.py --backend server --sizes 100000 --keep /tmp/pgsrv --preload HNSW  # beside it
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


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user + system)."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, quiet: float = 0.2, every: float = 10.0, limit: float = 7200) -> float:
    """Wait until the server's background work (compaction, index builds) is done: two windows in a row
    with less than ``quiet`` CPU seconds (a starved but busy server on a loaded machine still gets some)."""
    t = time.monotonic()
    last, calm = cpu_s(pid), 0
    while time.monotonic() - t < limit and calm < 2:
        time.sleep(every)
        now = cpu_s(pid)
        calm = calm + 1 if now - last < quiet else 0
        last = now
    return time.monotonic() - t


def segments(data: Path) -> tuple[int, int]:
    """Lite's sealed segments on disk, and how many of them have a dense-vector index beside them.

    A segment without one is searched by brute force (exact), so HNSW's recall is only HNSW's once all have it.
    """
    parts = list(data.glob("collections/*/partitions/*/data/*.parquet"))
    idx = {p.name.split(".")[0] for p in data.glob("collections/*/partitions/*/indexes/*.dense.*")}
    return len(parts), sum(p.stem in idx for p in parts)


def fill(uri: str, index: str, n: int, lines: list[str], server_pid: int, data: Path) -> tuple[Any, int, float, float]:
    """Load n items into a fresh collection pair with pixgrep's schema and index, as MilvusStore writes them.

    Two things make the load feasible at 100k on Lite without changing what is measured (same rows, same
    schema, same index type and parameters): the collections are fresh, so the delete that ``upsert_many`` sends
    before each insert (a filter scan over every row, growing with the collection) has nothing to find and is
    skipped; and they are released while loading, so Lite builds each segment's index once, at the load after
    the last flush, instead of on every flushed and every compacted segment. Returns the store, the rows, the
    load seconds and the index-build seconds.
    """
    from pixgrep.store import IndexParams, MilvusStore

    t = time.monotonic()
    st = MilvusStore(uri, "pixgrep", EMBED, DIM, timeout=3600, recreate=True, params=IndexParams(index=index))
    for name in st._collections():
        st.client.release_collection(name)
    st._delete_locked = lambda hashes: None  # type: ignore[method-assign]
    for batch in items(n, lines):
        st.upsert_many(batch)  # flushes every flush_rows rows, as the daemon does
    st.flush()
    wait_idle(server_pid)  # compaction of the flushed files, before the index is built on what it leaves
    load_s = time.monotonic() - t
    t = time.monotonic()
    for name in st._collections():
        st.client.load_collection(name, timeout=3600)
    wait_idle(server_pid)
    while (seg := segments(data))[1] < seg[0]:
        print(f"waiting for Lite's index builds: {seg[1]} of {seg[0]} segments indexed", file=sys.stderr, flush=True)
        wait_idle(server_pid)
    rows = st.count()
    return st, rows, load_s, time.monotonic() - t


def reopen(uri: str, index: str) -> Any:
    """The store over a collection pair loaded by an earlier run (``--keep``)."""
    from pixgrep.store import IndexParams, MilvusStore

    return MilvusStore(uri, "pixgrep", EMBED, DIM, timeout=3600, params=IndexParams(index=index))


def timed_search(st: Any, qs: list[np.ndarray], ef: int | None = None) -> tuple[list[float], list[list[Any]]]:
    """Latencies (ms) and each query's hits in order, as (content hash, kind, text)."""
    if ef is not None:
        st.params = type(st.params)(index="HNSW", hnsw_ef=ef)
    st.search_dense(qs[0], 10)  # warm
    lat, found = [], []
    for q in qs:
        t = time.perf_counter()
        hits = st.search_dense(q, 10)
        lat.append((time.perf_counter() - t) * 1000)
        found.append([(h.content_hash, h.kind, h.text) for h in hits])
    return lat, found


def write_books(target: Path | str, n: int, lines: list[str]) -> None:
    """The same items in the books (a SQLite file or a database URL), without touching Milvus."""
    from pixgrep.catalog import Catalog

    db = Catalog(target)
    for batch in items(n, lines):
        db.seed(
            [{"hash": h, "status": "done", "source": "ocr", "text": segs[0].text, "attempts": 1} for h, segs, _ in batch],
            [{"path": f"/synthetic/{int(h, 16) // 1000:03d}/img{int(h, 16):07d}.jpg", "content_hash": h, "size": 1,
              "mtime_ns": 1, "inode": int(h, 16)} for h, _, _ in batch],
        )  # fmt: skip
    db.close()


def daemon_rss(uri: str, n: int, lines: list[str], search_words: list[str], books: str = "sqlite") -> dict[str, float]:
    """A daemon on the server path over books of n items (SQLite, or PostgreSQL as the team set-up uses)."""
    if books == "postgresql":
        sys.path.insert(0, str(HERE.parent / "tests"))
        import pgserver

        with pgserver.running() as pg:
            url = pg.create_database()
            write_books(url, n, lines)
            return _daemon_rss(uri, search_words, None, PIXGREP_DB__URL=url)
    return _daemon_rss(uri, search_words, (n, lines))


def _daemon_rss(
    uri: str, search_words: list[str], sqlite: tuple[int, list[str]] | None, **env: str
) -> dict[str, float]:
    from _daemon import Daemon, Sandbox

    sb = Sandbox("pgsrv-")
    try:
        sb.home.mkdir(parents=True)
        if sqlite is not None:
            write_books(sb.home / "pixgrep.sqlite", *sqlite)
        d = Daemon(sb, PIXGREP_MILVUS__URI=uri, PIXGREP_MILVUS__TIMEOUT="120", **env)
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


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(data: Path, index: str, n: int, lines: list[str], qs: list[np.ndarray], efs: list[int | None],
            books: list[str]) -> dict[str, Any]:  # fmt: skip
    """One server on ``data``: load n items (or reuse an earlier run's load), time the queries, the RSS."""
    import json

    data.mkdir(parents=True, exist_ok=True)
    marker = data / f"loaded-{index}.json"
    while (data / "preloading").exists():
        time.sleep(10)  # a --preload run is loading this folder: wait until it is done and its server stopped
    port = 19700 + random.randrange(200)
    server = start_server(data / "milvus", port)
    uri = f"http://127.0.0.1:{port}"
    try:
        if marker.exists():
            st = reopen(uri, index)
            wait_idle(server.pid)
            info = json.loads(marker.read_text())
        else:
            st, rows, load_s, build_s = fill(uri, index, n, lines, server.pid, data / "milvus")
            info = {"rows": rows, "load_s": load_s, "build_s": build_s}
            marker.write_text(json.dumps(info))
        info["segments"], info["indexed"] = segments(data / "milvus")
        print(f"{index} {n}: {info}", file=sys.stderr, flush=True)
        runs = {ef: timed_search(st, qs, ef) for ef in efs}
        st.close()
        out = {**info, "runs": runs, "server_rss": rss_mib(server.pid)}
        out["daemon"] = {b: daemon_rss(uri, n, lines, lines[:5], b) for b in books}
        return out
    finally:
        stop_server(server)


def preload(sizes: list[int], index: str, lines: list[str], keep: Path) -> None:
    """Only load (``--preload FLAT|HNSW --keep DIR``): beside a measuring run, so the two loads overlap; the
    measuring run (or a rerun with the same ``--keep``) then finds the collections loaded and only searches."""
    for n in sizes:
        data = keep / str(n) / index.lower()
        data.mkdir(parents=True, exist_ok=True)
        (data / "preloading").touch()
        port = 19700 + random.randrange(200)
        server = start_server(data / "milvus", port)
        try:
            st, rows, load_s, build_s = fill(f"http://127.0.0.1:{port}", index, n, lines, server.pid, data / "milvus")
            st.close()
            info = {"rows": rows, "load_s": load_s, "build_s": build_s}
            (data / f"loaded-{index}.json").write_text(__import__("json").dumps(info))
            print(f"preloaded {index} {n}: {info}", file=sys.stderr, flush=True)
        finally:
            stop_server(server)
            (data / "preloading").unlink()


def run(sizes: list[int], n_queries: int, lines: list[str], keep: Path | None = None,
        books: tuple[str, ...] = ("sqlite",), daemon_only: bool = False) -> None:  # fmt: skip
    """Per size: FLAT on one server, then HNSW (and the daemon) on another; ``keep`` reuses loads across runs.

    ``daemon_only``: no searches, only the daemon's RSS over the HNSW collections (with each kind of books)."""
    import tempfile

    from _daemon import machine

    table, mem = [], []
    for n in sizes:
        base = keep / str(n) if keep else Path(tempfile.mkdtemp(prefix="pgsrv-milvus-"))
        try:
            qs = [] if daemon_only else queries(n, lines, n_queries)
            flat = None if daemon_only else measure(base / "flat", "FLAT", n, lines, qs, [None], books=[])
            hnsw = measure(base / "hnsw", "HNSW", n, lines, qs, [] if daemon_only else [64, 128], books=list(books))
            for b, d in hnsw["daemon"].items():
                mem.append((n, hnsw["rows"], b, d, hnsw["server_rss"]))
                print(f"{n} items, {b} books: daemon RSS {d['daemon']:.0f} MiB (peak {d['daemon_peak']:.0f}) + OCR "
                      f"{d['children']:.0f} MiB, server {hnsw['server_rss']:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
            if flat is None:
                continue
            flat_lat, exact = flat["runs"][None]
            results = []
            for ef, (lat, found) in hnsw["runs"].items():
                pairs = list(zip(found, exact, strict=True))
                recall = statistics.mean(len(set(f) & set(e)) / max(1, len(e)) for f, e in pairs)
                # The query's own source row (a stored vector plus noise) is FLAT's first hit.
                top1 = statistics.mean(float(f[:1] == e[:1]) for f, e in pairs)
                results.append((ef, lat, recall, top1))
            table.append((n, flat["rows"], flat, flat_lat, hnsw, results))
            # Each size as soon as it is measured: the largest may not finish on a shared machine.
            print(f"done {n} at load {os.getloadavg()[0]:.1f}: FLAT p50 {statistics.median(flat_lat):.1f} ms, "
                  + ", ".join(f"HNSW ef={ef} p50 {statistics.median(lat):.1f} ms recall@10 {r:.3f} top-1 {t:.2f}"
                              for ef, lat, r, t in results)
                  + f"; FLAT server {flat['server_rss']:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            if keep is None:
                shutil.rmtree(base, ignore_errors=True)
    print(f"\nmachine: {machine()}; `milvus-lite server` on loopback, dense top 10 over both collections, "
          f"{n_queries} queries; load average at the end {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    if table:
        print("| images | rows | segments | index | load s | index build s | p50 ms | p95 ms | recall@10 vs FLAT "
              "| same first hit as FLAT |")  # fmt: skip
        print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, rows, flat, flat_lat, hnsw, results in table:
        print(f"| {n:,} | {rows:,} | {flat['segments']} | FLAT (exact) | {flat['load_s']:.0f} | {flat['build_s']:.0f} | "
              f"{statistics.median(flat_lat):.1f} | {pct(flat_lat, 0.95):.1f} | 1 | 1 |")  # fmt: skip
        for ef, lat, recall, top1 in results:
            print(f"| {n:,} | {rows:,} | {hnsw['segments']} | HNSW M=16 efC=200, ef={ef} | {hnsw['load_s']:.0f} | "
                  f"{hnsw['build_s']:.0f} | {statistics.median(lat):.1f} | {pct(lat, 0.95):.1f} | {recall:.3f} | "
                  f"{top1:.2f} |")  # fmt: skip
    print(
        "\n| images | rows | books | daemon RSS MiB | daemon peak MiB | OCR process MiB | milvus-lite server RSS MiB |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|")
    for n, rows, b, d, srv in mem:
        print(
            f"| {n:,} | {rows:,} | {b} | {d['daemon']:.0f} | {d['daemon_peak']:.0f} | {d['children']:.0f} | {srv:.0f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    from search_latency import main

    sys.argv.insert(1, "--backend=server")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    main()
