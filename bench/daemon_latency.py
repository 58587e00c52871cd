"""Search latency against a warm daemon at 10k and 50k indexed items.

Builds an index of synthetic items (about 7 segments each, like real memes: words drawn from a Zipf
vocabulary, random unit vectors) straight into SQLite and Milvus Lite, starts
``pixgrep daemon`` on it, and times ``pixgrep search`` as a fresh process per
query (end to end: interpreter start, imports, the request, printing), next
to the same request made from a warm in-process client (the daemon's share).
"CLI" is the ``pixgrep`` console script (its stdlib fast path when the daemon
answers); "full CLI" is ``python -m pixgrep_cli.main`` (click, pydantic, httpx).

    PYTHONPATH=daemon:cli python bench/daemon_latency.py [--sizes 10000 50000] [--queries 30]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time

import numpy as np
from _daemon import Daemon, Sandbox, cli, machine, pct
from search_latency import LINES_PER_IMAGE, segments_of


def vocabulary(n: int = 8000, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rnd.choice(letters) for _ in range(rnd.randint(3, 9))))
    return sorted(words)


def grow(sb: Sandbox, start: int, stop: int) -> float:
    """Add items [start, stop) in a child process: Milvus Lite keeps its lock until the process exits."""
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, __file__, "--grow", str(start), str(stop), "--home", str(sb.home)], check=True, env=sb.env()
    )
    return time.monotonic() - t0


def _grow(home: str, start: int, stop: int, vocab: list[str]) -> None:
    from pixgrep.catalog import Catalog
    from pixgrep.settings import load_settings
    from pixgrep.store import DOC_KINDS, open_store, whole_identity

    settings = load_settings(home=home)
    db = Catalog(settings.db_path)
    store = open_store(settings, embed_name="use-multilingual-v3", dim=512)
    # embed.whole_backend set (PIXGREP_EMBED__WHOLE_BACKEND): random whole-text vectors too, from their own stream.
    whole = whole_identity(settings)
    wrng = np.random.default_rng(start + 1_000_003)
    rng = np.random.default_rng(start)
    pyrng = random.Random(start)
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    chunk = 2000
    for lo in range(start, stop, chunk):
        hi = min(stop, lo + chunk)
        items, wholes = [], []
        rows_c, rows_p = [], []
        for i in range(lo, hi):
            h = f"{i:032x}"
            n_lines = int(rng.choice(LINES_PER_IMAGE))
            lines = [" ".join(rng.choice(vocab, size=rng.integers(2, 7), p=weights)) for _ in range(n_lines)]
            full = "\n".join(lines)
            # Shaped like real memes: about 7 segments an image (search_latency.py).
            segs = segments_of(lines, pyrng)
            v = rng.standard_normal((len(segs), 512)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            items.append((h, segs, v))
            if whole:
                w = wrng.standard_normal((sum(s.kind in DOC_KINDS for s in segs), whole[1])).astype(np.float32)
                wholes.append(w / np.linalg.norm(w, axis=1, keepdims=True))
            rows_c.append((h, full))
            rows_p.append((f"/synthetic/{i // 1000:03d}/img{i:07d}.jpg", h, i))
        store.upsert_many(items, whole=wholes if whole else None)
        db.seed(
            [{"hash": h, "status": "done", "source": "ocr", "text": full, "attempts": 1} for h, full in rows_c],
            [{"path": p, "content_hash": h, "size": 1, "mtime_ns": 1, "inode": ino} for p, h, ino in rows_p],
        )
    store.flush()
    store.close()
    db.close()


def measure(sb: Sandbox, n: int, queries: list[str], reps: int) -> list[str]:
    d = Daemon(sb)
    rows = []
    try:
        startup = d.start()
        for q in queries[:5]:  # warm caches and code paths
            d.search(q)
            cli(d.env, "search", "--json", q)
        for mode in ("hybrid", "keyword"):
            api_t, cli_t, full_t = [], [], []
            for q in queries[:reps]:
                t = time.perf_counter()
                d.search(q, mode=mode)
                api_t.append(time.perf_counter() - t)
                dt, r = cli(d.env, "search", "--json", "--mode", mode, q)
                if r.returncode not in (0, 1):
                    raise RuntimeError(r.stderr)
                cli_t.append(dt)
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pixgrep_cli.main", "search", "--json", "--mode", mode, q],
                    env=d.env,
                    capture_output=True,
                )
                full_t.append(time.perf_counter() - t)
            rows.append(
                f"| {n:,} | {mode} | {pct(api_t, 50) * 1000:.0f} | {pct(api_t, 95) * 1000:.0f} "
                f"| {pct(cli_t, 50) * 1000:.0f} | {pct(cli_t, 95) * 1000:.0f} | {pct(full_t, 50) * 1000:.0f} |"
            )
        rss = d.rss()
        rows.append(
            f"<!-- {n}: daemon start-up {startup:.1f}s, RSS {rss['daemon']:.0f} MiB + OCR {rss['children']:.0f} MiB -->"
        )
    finally:
        d.stop()
    return rows


def floor(reps: int = 10) -> tuple[float, float]:
    """Interpreter start alone, and `pixgrep --version` (the CLI's imports without a request)."""
    a, b = [], []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pixgrep_cli.main, pixgrep_cli.commands"], check=True)
        b.append(time.perf_counter() - t)
    return pct(a, 50), pct(b, 50)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--grow", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    vocab = vocabulary()
    if args.grow:
        _grow(args.home, args.grow[0], args.grow[1], vocab)
        return
    rnd = random.Random(7)
    # Mid-frequency words (the head matches everything; the far tail almost nothing).
    queries = [" ".join(rnd.sample(vocab[50:2000], k=rnd.randint(1, 3))) for _ in range(args.queries + 5)]
    sb = Sandbox("pglat-")
    out = []
    try:
        have = 0
        for n in sorted(args.sizes):
            secs = grow(sb, have, n)
            print(f"# built {n:,} items (about 7 Milvus rows each) in {secs:.0f}s", file=sys.stderr)
            have = n
            out += measure(sb, n, queries, args.queries)
    finally:
        sb.cleanup()
    py, imports = floor()
    print(f"machine: {machine()}")
    print("| items | mode | API p50 ms | API p95 ms | CLI p50 ms | CLI p95 ms | full CLI p50 ms |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(out))
    print(f"floor: `python -c pass` {py * 1000:.0f} ms; importing the CLI (main + commands) {imports * 1000:.0f} ms")


if __name__ == "__main__":
    main()
