"""HNSW recall on real embeddings: faiss HNSW against exact search, with random vectors as the baseline.

``bench/hnsw_random.py`` measured HNSW on random unit vectors, whose neighbours after the first are near-ties:
a floor, not a forecast. This measures the same algorithm with pixgrep's server parameters (``store.py``:
M=16, efConstruction=200, ef 64 and 128, inner product on unit vectors) on rows shaped like pixgrep's:

- rows: what ``bench/search_latency.py`` builds for a synthetic image (the whole text, its regions and its
  lines, about 7 rows an image) from real meme text (the peer easyOCR file), except that every line joins two
  fragments of *different* memes, and a row whose text was already seen is dropped, so no two rows are exact
  duplicates (the peer file has 928 texts; without this the 0.73 M rows would repeat a few thousand lines);
- vectors: embedded for real with the default embedder (use-multilingual-v3, ``pixgrep.embed``); they are
  cached under ``--cache`` in chunks, so an interrupted embedding resumes and a larger size reuses a smaller one
  (the rows of a size are the first rows of any larger one);
- queries: every real query text of ``bench/queries_*.jsonl``, embedded the same way.

Per size: recall@10 by ids; tie-aware recall@10 (an HNSW hit counts if its exact score is at least the exact
10th score - 1e-6, so an equally good row is no miss); the share of queries whose first hit is the exact one
(by score, same tolerance); p50 of one query on one thread, flat (``IndexFlatIP``, exact) and HNSW interleaved.
The random row beside it: the same number of random unit vectors, queries a stored vector plus noise, as in
``hnsw_random.py``. One graph a size (Lite and Milvus keep one per sealed segment).

    nice -n 10 python bench/hnsw_recall.py --sizes 72843,727925 --cache /tmp/hnsw_recall
    python bench/hnsw_recall.py --embed-only --sizes 727925 --cache /tmp/hnsw_recall   # the slow part alone
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_latency import LINES_PER_IMAGE, PEER, segments_of  # noqa: E402

DIM = 512
CHUNK = 10_000
TOL = 1e-6


def row_texts(n: int, seed: int = 0) -> list[str]:
    """The first n distinct segment texts of synthetic images (the same prefix for any n)."""
    frag_rng = random.Random(1)
    with open(PEER, encoding="utf-8") as fh:
        texts = [r["easyocr_text"] for r in csv.DictReader(fh) if r["easyocr_text"].strip()]
    # Fragments as search_latency.py cuts them, each with the meme it came from.
    frags = [(m, t[i : i + frag_rng.randint(6, 20)]) for m, t in enumerate(texts) for i in range(0, len(t), 12)]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []

    def line() -> str:
        (ma, a), (mb, b) = rng.sample(frags, 2)
        while ma == mb:
            mb, b = rng.choice(frags)
        return f"{a.strip()} {b.strip()}"

    while len(out) < n:
        picked = [line() for _ in range(rng.choice(LINES_PER_IMAGE))]
        for seg in segments_of(picked, rng):
            if seg.text not in seen:
                seen.add(seg.text)
                out.append(seg.text)
    return out[:n]


def embedder() -> Any:
    from pixgrep.embed import UseEmbedder

    return UseEmbedder(threads=1)


def embedded(texts: list[str], cache: Path) -> np.ndarray:
    """Vectors of texts, CHUNK rows a file under cache (resumes; reuses what a smaller run embedded)."""
    cache.mkdir(parents=True, exist_ok=True)
    emb = None
    parts = []
    for c, lo in enumerate(range(0, len(texts), CHUNK)):
        chunk = texts[lo : lo + CHUNK]
        f = cache / f"rows-{c:04d}-{len(chunk)}.npy"
        if not f.exists():
            emb = emb or embedder()
            t = time.monotonic()
            v = emb.embed(chunk).astype(np.float32)
            np.save(f.with_suffix(".tmp.npy"), v)
            f.with_suffix(".tmp.npy").replace(f)
            print(f"embedded rows {lo:,}-{lo + len(chunk):,} in {time.monotonic() - t:.0f} s", flush=True)
        parts.append(np.load(f))
    return np.concatenate(parts)


def query_texts() -> list[str]:
    out: list[str] = []
    for f in sorted(HERE.glob("queries_*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            out += [json.loads(line)["query"] for line in fh if line.strip()]
    return list(dict.fromkeys(out))


def measure(x: np.ndarray, q: np.ndarray, timed: int) -> list[tuple[int, float, float, float, float, float, float]]:
    """(ef, recall by ids, tie-aware recall, same first hit, flat p50 ms, hnsw p50 ms, build s) for ef 64, 128."""
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    faiss.omp_set_num_threads(2)  # the build is not what is timed
    t = time.monotonic()
    hnsw = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    hnsw.add(x)
    build = time.monotonic() - t
    faiss.omp_set_num_threads(1)
    ex_s, ex_i = flat.search(q, 10)
    out = []
    for ef in (64, 128):
        hnsw.hnsw.efSearch = ef
        _, got = hnsw.search(q, 10)
        by_id = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ex_i, strict=True)])
        # Exact scores of HNSW's hits (a missing hit, -1, scores -inf).
        score = np.where(got >= 0, np.einsum("qd,qkd->qk", q, x[np.maximum(got, 0)]), -np.inf)
        tie_aware = np.mean(score >= ex_s[:, 9:10] - TOL)
        first = np.mean(score[:, 0] >= ex_s[:, 0] - TOL)
        flat_ms, hnsw_ms = [], []
        for i in range(min(timed, len(q))):  # interleaved, one query a call, one thread
            t = time.perf_counter()
            flat.search(q[i : i + 1], 10)
            flat_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            hnsw.search(q[i : i + 1], 10)
            hnsw_ms.append((time.perf_counter() - t) * 1000)
        out.append(
            (ef, by_id, tie_aware, first, statistics.median(flat_ms), statistics.median(hnsw_ms), build)
        )  # fmt: skip
        print(f"  ef {ef}: {out[-1]} (exact 1st/10th score median {np.median(ex_s[:, 0]):.3f}/"
              f"{np.median(ex_s[:, 9]):.3f})", flush=True)  # fmt: skip
    return out


def random_like(n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n, nq, replace=False)
    q = x[src] + rng.standard_normal((nq, DIM)).astype(np.float32) * (0.7 / DIM**0.5)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="72843,727925", help="rows (10k and 100k images in the server bench)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hnsw_recall"))
    ap.add_argument("--timed", type=int, default=100, help="queries timed one by one (recall uses all)")
    ap.add_argument("--data", default="real,random", help="which vectors: real, random or both")
    ap.add_argument("--embed-only", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts = row_texts(max(sizes))
    if args.embed_only:
        embedded(texts, args.cache)
        return
    kinds = args.data.split(",")
    q = embedder().embed(query_texts())
    allx = embedded(texts, args.cache) if "real" in kinds else np.zeros((0, DIM), np.float32)
    rows = []
    for n in sizes:
        for data in kinds:
            print(f"{n:,} rows, {data}", flush=True)
            x, qq = (np.ascontiguousarray(allx[:n]), q) if data == "real" else random_like(n, len(q))
            rows += [(n, data, *r) for r in measure(x, qq, args.timed)]
    print(f"\n{len(q)} queries; p50 over {args.timed} timed one at a time, flat and HNSW interleaved\n")
    print("| rows | vectors | ef | recall@10 by ids | tie-aware recall@10 | same first hit | "
          "flat p50 ms | HNSW p50 ms | HNSW build s (2 threads) |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, data, ef, by_id, tie, first, fl, hn, build in rows:
        print(f"| {n:,} | {data} | {ef} | {by_id:.3f} | {tie:.3f} | {first:.2f} | {fl:.1f} | {hn:.2f} | {build:.0f} |")


if __name__ == "__main__":
    main()
