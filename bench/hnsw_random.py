"""Is a low HNSW recall@10 on random vectors the graph's or the store's? One faiss HNSW graph, no Milvus.

The vectors and queries of ``bench/server_search.py`` in kind: random unit 512-d vectors, queries a stored
vector plus noise (cosine ≈ 0.8 to it). One ``IndexHNSWFlat`` (inner product, M=16, efConstruction=200: what
Milvus Lite builds per segment for pixgrep's defaults) per size, searched at ef 64 and 128 against exact search.
Also prints the cosines of the exact 2nd and 10th neighbours: how close to ties the nine after the source are.

    python bench/hnsw_random.py --sizes 14000,70000
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

DIM = 512


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="14000,70000")
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    print("| rows | build s | ef | recall@10 | same first hit | cosine 2nd / 10th exact neighbour (median) |")
    print("|---:|---:|---:|---:|---:|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        src = rng.choice(n, args.queries, replace=False)
        q = x[src] + rng.standard_normal((args.queries, DIM)).astype(np.float32) * (0.7 / DIM**0.5)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        sims = q @ x.T
        exact = np.argsort(-sims, axis=1)[:, :10]
        near = np.take_along_axis(sims, exact, axis=1)
        t = time.monotonic()
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.add(x)
        build = time.monotonic() - t
        for ef in (64, 128):
            index.hnsw.efSearch = ef
            _, got = index.search(q, 10)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])
            first = np.mean(got[:, 0] == exact[:, 0])
            print(f"| {n:,} | {build:.0f} | {ef} | {recall:.3f} | {first:.2f} | "
                  f"{np.median(near[:, 1]):.3f} / {np.median(near[:, 9]):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
