"""The local dense index's two kinds on one vector file: the exact flat scan against IVF (``search.ann_*``).

Opens the same ``*.vectors.sqlite`` twice (on a copy: opening writes nothing, but a copy is safe),
once flat (``ann_rows = 0``) and once as IVF (256 cells, each ``--probes`` value), then for every
query, alternating the two: the dense search's time (the segments a search fetches: 80), recall@10
of the IVF's segments against the exact ones, and whether the top 10 images (best segment per
image, as the dense leg ranks them) are the same. Queries are embedded with the default embedder:
the development and meaning queries for an index of the real corpus (``--queries corpus``), the
synthetic queries of ``daemon_latency.py`` for a synthetic index (``--queries synthetic``, whose
vectors are random: no neighbourhoods, the worst case for any index that visits part of the rows).

    PYTHONPATH=daemon:cli python bench/dense_ann.py --home HOME --queries synthetic [--probes 16 32 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _daemon import machine

HERE = Path(__file__).resolve().parent
FETCH = 80  # segments the dense leg asks for with the default limit (search.py)


def queries(kind: str, n: int) -> list[str]:
    if kind == "synthetic":
        from daemon_latency import vocabulary

        vocab, rnd = vocabulary(), random.Random(7)
        return [" ".join(rnd.sample(vocab[50:2000], k=rnd.randint(1, 3))) for _ in range(n)]
    out = []
    for name in ("queries_dev.jsonl", "queries_meaning.jsonl"):
        with open(HERE / name, encoding="utf-8") as fh:
            out += [json.loads(line)["query"] for line in fh if line.strip()]
    return out[:n]


def top_images(hits: list[tuple[str, str, str]], k: int = 10) -> list[str]:
    """The first k distinct images of a dense leg's segments (its per-image ranking)."""
    seen: dict[str, None] = {}
    for h, _, _ in hits:
        seen.setdefault(h, None)
    return list(seen)[:k]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--queries", choices=["synthetic", "corpus"], required=True)
    ap.add_argument("-n", type=int, default=60, help="queries")
    ap.add_argument("--probes", type=int, nargs="+", default=[32])
    args = ap.parse_args()

    from pixgrep.embed import UseEmbedder
    from pixgrep.localdense import LocalDenseIndex
    from pixgrep.settings import load_settings
    from pixgrep.store import local_path

    settings = load_settings(home=str(args.home))
    src = local_path(settings.milvus_uri, settings.milvus.collection)
    tmp = Path(tempfile.mkdtemp(prefix="pgann-", dir="/tmp"))
    try:
        path = tmp / src.name
        shutil.copyfile(src, path)
        emb = UseEmbedder(threads=1)
        qs = queries(args.queries, args.n)
        vecs = np.asarray(emb.embed(qs), dtype=np.float32)
        t0 = time.perf_counter()
        flat = LocalDenseIndex(path, 512)
        flat_open = time.perf_counter() - t0
        rows = flat.count()
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start (shared machine)")
        print(
            f"{rows:,} rows; {len(qs)} {args.queries} queries; fetch {FETCH} segments; flat opened in {flat_open:.1f}s"
        )
        print("| index | open s | search p50 ms | search p95 ms | recall@10 (segments) | same top-10 images |")
        print("|---|---:|---:|---:|---:|---:|")
        for probes in args.probes:
            t0 = time.perf_counter()
            ivf = LocalDenseIndex(path, 512, ann_rows=1, ann_probes=probes)
            ivf_open = time.perf_counter() - t0
            assert ivf.kind == "ivf", "too few rows for an IVF index"
            t_flat, t_ivf, recall, same = [], [], [], 0
            for i, q in enumerate(vecs):
                order = (flat, ivf) if i % 2 == 0 else (ivf, flat)
                res: dict[bool, list[tuple[str, str, str]]] = {}
                for ix in order:
                    t = time.perf_counter()
                    hits = ix.search(q, FETCH)
                    (t_flat if ix is flat else t_ivf).append(time.perf_counter() - t)
                    res[ix is flat] = [(h.content_hash, h.kind, h.text) for h in hits]
                exact, approx = res[True], res[False]
                recall.append(len(set(exact[:10]) & set(approx[:10])) / max(1, min(10, len(exact))))
                same += top_images(exact) == top_images(approx)
            ivf.close()
            if probes == args.probes[0]:
                print(
                    f"| flat (exact) | {flat_open:.1f} | {statistics.median(t_flat) * 1000:.1f} "
                    f"| {sorted(t_flat)[int(0.95 * len(t_flat))] * 1000:.1f} | 1 | {len(qs)}/{len(qs)} |"
                )
            print(
                f"| IVF 256 cells, {probes} probed | {ivf_open:.1f} | {statistics.median(t_ivf) * 1000:.1f} "
                f"| {sorted(t_ivf)[int(0.95 * len(t_ivf))] * 1000:.1f} | {statistics.mean(recall):.3f} "
                f"| {same}/{len(qs)} |"
            )
        flat.close()
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
