"""Hybrid search latency at 1k, 10k and 50k indexed images (synthetic rows).

Each synthetic image gets three segments (whole text and two lines) built from
real meme text (the peer easyOCR file) so BM25 sees realistic tokens; vectors are
random unit vectors (FLAT search cost does not depend on their values), queries
are embedded for real. Reports p50/p95 in-process and through the daemon-less CLI
process (`pixgrep search`, process start included).

    python bench/search_latency.py --sizes 1000,10000,50000
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

HERE = Path(__file__).resolve().parent
PEER = HERE.parents[1] / "shared" / "corpus" / "memes_peer_easyocr.csv"


def populate(home: Path, n: int, lines: list[str], rng: random.Random) -> None:
    from pixgrep import textnorm
    from pixgrep.db import Content, Database, PathEntry
    from pixgrep.settings import load_settings
    from pixgrep.store import Segment, open_store

    os.environ["PIXGREP_HOME"] = str(home)
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    store = open_store(settings, embed_name="use-multilingual-v3", dim=512)
    nprng = np.random.default_rng(0)
    chunk = 2000
    for start in range(0, n, chunk):
        contents, paths, items = [], [], []
        for i in range(start, min(n, start + chunk)):
            h = f"{i:032x}"
            two = rng.sample(lines, 2)
            full = "\n".join(two)
            segs = [Segment("full", "ocr", full, textnorm.document_tokens(full))] + [
                Segment("line", "ocr", t, textnorm.document_tokens(t)) for t in two
            ]
            vecs = nprng.standard_normal((3, 512)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items.append((h, segs, vecs))
            contents.append({"hash": h, "status": "done", "source": "ocr", "text": full})
            paths.append({"path": f"/synthetic/{i}.jpg", "content_hash": h, "size": 1, "mtime_ns": 1, "inode": i})
        store.upsert_many(items)
        with db.session() as s:
            s.execute(insert(Content), contents)
            s.execute(insert(PathEntry), paths)
    store.flush()
    store.close()
    db.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--cli-runs", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(1)
    with open(PEER, encoding="utf-8") as fh:
        texts = [r["easyocr_text"] for r in csv.DictReader(fh) if r["easyocr_text"].strip()]
    lines = [t[i : i + rng.randint(6, 20)] for t in texts for i in range(0, len(t), 12)]
    queries = [rng.choice(lines)[: rng.randint(3, 8)] for _ in range(args.queries)]
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            t = time.monotonic()
            populate(home, n, lines, rng)
            build = time.monotonic() - t
            from pixgrep.app import Index
            from pixgrep.settings import load_settings

            with Index(load_settings(), ocr_workers=0) as ix:
                ix.search("warm up")
                lat = []
                for q in queries:
                    t = time.perf_counter()
                    ix.search(q)
                    lat.append((time.perf_counter() - t) * 1000)
            cli = []
            env = {**os.environ, "PIXGREP_HOME": str(home), "XDG_RUNTIME_DIR": tmp}
            for q in queries[: args.cli_runs]:
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "pixgrep_cli.main", "search", q, "--json"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                cli.append((time.perf_counter() - t) * 1000)
            rows.append((n, build, statistics.median(lat), pct(lat, 0.95), statistics.median(cli), pct(cli, 0.95)))
            print(f"done {n}", file=sys.stderr)
    print(
        f"\n{os.cpu_count()} cores; hybrid search, k=10; {args.queries} queries in-process, {args.cli_runs} CLI runs\n"
    )
    print("| images | rows | build s | in-process p50 ms | in-process p95 ms | CLI (no daemon) p50 ms | CLI p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for n, build, p50, p95, c50, c95 in rows:
        print(f"| {n} | {3 * n} | {build:.0f} | {p50:.1f} | {p95:.1f} | {c50:.0f} | {c95:.0f} |")


if __name__ == "__main__":
    main()
