"""Hybrid search latency at 1k, 10k and 50k indexed images (synthetic rows).

Each synthetic image gets as many segments as real memes do: the whole text,
1-10 OCR lines and the regions grouping them, about 7 rows an image, like the
1,000-meme corpus indexed (7.1: 0.95 whole texts, 2.8 regions, 3.4 lines).
The texts are real meme text (the peer easyOCR file), so BM25 sees realistic
tokens; vectors are random unit vectors (flat search cost does not depend on
their values); queries are embedded for real. Reports p50/p95 in-process and
through the daemon-less CLI process (`pixgrep search`, process start included).

    python bench/search_latency.py --sizes 1000,10000,50000
    python bench/search_latency.py --backend server --sizes 10000,100000   (bench/server_search.py)
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

HERE = Path(__file__).resolve().parent
# Beside the checkout (CI, /work/main) or beside the worktrees' folder (/work/wt/NAME).
PEER = next(
    (p for p in (HERE.parents[i] / "shared" / "corpus" / "memes_peer_easyocr.csv" for i in (1, 2)) if p.exists()),
    HERE.parents[1] / "shared" / "corpus" / "memes_peer_easyocr.csv",
)
LINES_PER_IMAGE = [1, 2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 10]


def synthetic_segments(lines: list[str], rng: random.Random) -> list:
    """Whole text, regions and lines as pipeline.build_segments makes them (7.3 on average)."""
    return segments_of(rng.sample(lines, rng.choice(LINES_PER_IMAGE)), rng)


def segments_of(picked: list[str], rng: random.Random) -> list:
    """The segments of an image with these OCR lines, cut into random regions."""
    from pixgrep import textnorm
    from pixgrep.segments import Segment

    full = "\n".join(picked)
    cuts = sorted(rng.sample(range(1, len(picked)), rng.randint(0, len(picked) - 1))) if len(picked) > 1 else []
    blocks = ["\n".join(picked[a:b]) for a, b in zip([0, *cuts], [*cuts, len(picked)], strict=True)]
    seen = {full}
    texts = [("full", full)]
    if len(picked) > 1:
        for kind, t in [("region", b) for b in blocks] + [("line", t) for t in picked]:
            if t not in seen:
                seen.add(t)
                texts.append((kind, t))
    return [Segment(kind, "ocr", t, textnorm.document_tokens(t)) for kind, t in texts]


def populate(home: Path, n: int, lines: list[str], rng: random.Random) -> int:
    from pixgrep.catalog import Catalog
    from pixgrep.settings import load_settings
    from pixgrep.store import open_store

    os.environ["PIXGREP_HOME"] = str(home)
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Catalog(settings.db_path)
    store = open_store(settings, embed_name="use-multilingual-v3", dim=512)
    nprng = np.random.default_rng(0)
    chunk = 2000
    for start in range(0, n, chunk):
        contents, paths, items = [], [], []
        for i in range(start, min(n, start + chunk)):
            h = f"{i:032x}"
            segs = synthetic_segments(lines, rng)
            vecs = nprng.standard_normal((len(segs), 512)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items.append((h, segs, vecs))
            full = segs[0].text
            contents.append({"hash": h, "status": "done", "source": "ocr", "text": full})
            paths.append({"path": f"/synthetic/{i}.jpg", "content_hash": h, "size": 1, "mtime_ns": 1, "inode": i})
        store.upsert_many(items)
        db.seed(contents, paths)
    store.flush()
    rows = store.count()
    store.close()
    db.close()
    return rows


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--cli-runs", type=int, default=8)
    ap.add_argument(
        "--backend",
        choices=("lite", "server"),
        default="lite",
        help="server: HNSW vs FLAT on `milvus-lite server`, recall@10, daemon RSS (bench/server_search.py)",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        help="server backend: keep each size's loaded collections under this folder and reuse them on the next run",
    )
    ap.add_argument("--preload", choices=("FLAT", "HNSW"), help="server backend: only load this index under --keep")
    ap.add_argument("--books", default="sqlite", help="server backend: the daemon's books, sqlite and/or postgresql")
    ap.add_argument("--daemon-only", action="store_true", help="server backend: only the daemon's RSS, no searches")
    args = ap.parse_args()
    rng = random.Random(1)
    with open(PEER, encoding="utf-8") as fh:
        texts = [r["easyocr_text"] for r in csv.DictReader(fh) if r["easyocr_text"].strip()]
    lines = [t[i : i + rng.randint(6, 20)] for t in texts for i in range(0, len(t), 12)]
    queries = [rng.choice(lines)[: rng.randint(3, 8)] for _ in range(args.queries)]
    if args.backend == "server":
        sys.path.insert(0, str(HERE))
        from server_search import preload, run

        if args.preload:
            preload([int(x) for x in args.sizes.split(",")], args.preload, lines, args.keep)
            return
        sizes = [int(x) for x in args.sizes.split(",")]
        run(
            sizes, args.queries, lines, keep=args.keep, books=tuple(args.books.split(",")), daemon_only=args.daemon_only
        )
        return
    table = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            t = time.monotonic()
            rows = populate(home, n, lines, rng)
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
                # Baseline: both legs searched in Milvus Lite itself (no local index), as the server
                # path does. With Lite the regions and lines live only in the local index, so this
                # baseline walks the whole texts alone (one row an image), not all seven rows.
                p = ix.pipeline
                st = p.store
                st.local, local = None, st.local
                base = []
                for q in queries:
                    t = time.perf_counter()
                    ix.search(q)
                    base.append((time.perf_counter() - t) * 1000)
                st.local = local
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
            table.append(
                (
                    n,
                    rows,
                    build,
                    statistics.median(lat),
                    pct(lat, 0.95),
                    statistics.median(base),
                    statistics.median(cli),
                    pct(cli, 0.95),
                )
            )
            print(f"done {n}", file=sys.stderr)
    print(
        f"\n{os.cpu_count()} cores; hybrid search, k=10; {args.queries} queries in-process, {args.cli_runs} CLI runs\n"
    )
    print(
        "| images | rows | build s | in-process p50 ms | in-process p95 ms "
        "| baseline p50 ms (dense in Milvus Lite) | CLI (no daemon) p50 ms | CLI p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, rows, build, p50, p95, b50, c50, c95 in table:
        print(f"| {n} | {rows} | {build:.0f} | {p50:.1f} | {p95:.1f} | {b50:.1f} | {c50:.0f} | {c95:.0f} |")


if __name__ == "__main__":
    main()
