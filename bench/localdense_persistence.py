"""How the local dense index should persist its vectors: its SQLite file (catalog.VectorFile) or .npy files.

The two things it does with them: open (read every vector into faiss) and, after each Milvus write, replace
the rows of a batch of contents. SQLite does the second in place; an .npy matrix written with an atomic
rename must rewrite the whole matrix for every batch. Both measured, interleaved, on the same synthetic
rows (about 7 segments an image, like real memes).

    python bench/localdense_persistence.py --images 10000 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pixgrep.catalog import VectorFile

DIM = 512
SEGS = 7


def rows(start: int, n_images: int, rng: np.random.Generator) -> list[tuple[int, str, str, str, str, bytes]]:
    out = []
    vecs = rng.standard_normal((n_images * SEGS, DIM)).astype(np.float16)
    for i in range(n_images * SEGS):
        h = f"{(start * SEGS + i) // SEGS:032x}"
        out.append((start * SEGS + i + 1, h, "line", "ocr", f"text {i}", vecs[i].tobytes()))
    return out


def sqlite_open(path: Path) -> float:
    t0 = time.perf_counter()
    f = VectorFile(path)
    n = 0
    for batch in f.iter_vectors():
        m = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.float16).reshape(len(batch), DIM)
        n += len(m.astype(np.float32))
    f.close()
    return time.perf_counter() - t0


def sqlite_batch(path: Path, start: int, rng: np.random.Generator) -> float:
    f = VectorFile(path)
    new = rows(start, 32, rng)
    t0 = time.perf_counter()
    f.replace(f.ids_of([r[1] for r in new]), new)
    dt = time.perf_counter() - t0
    f.close()
    return dt


def npy_open(path: Path) -> float:
    t0 = time.perf_counter()
    m = np.load(path)
    m.astype(np.float32)
    return time.perf_counter() - t0


def npy_batch(path: Path, rng: np.random.Generator) -> float:
    t0 = time.perf_counter()
    m = np.load(path)
    m = np.vstack([m, rng.standard_normal((32 * SEGS, DIM)).astype(np.float16)])
    tmp = path.with_suffix(".tmp.npy")
    with open(tmp, "wb") as fh:
        np.save(fh, m)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d = Path(tempfile.mkdtemp(prefix="ldp-"))
    sq, npy = d / "v.sqlite", d / "v.npy"
    base = rows(0, args.images, rng)
    f = VectorFile(sq)
    f.replace([], base)
    f.close()
    np.save(npy, np.frombuffer(b"".join(r[5] for r in base), dtype=np.float16).reshape(len(base), DIM))
    res: dict[str, list[float]] = {k: [] for k in ("sqlite open", "npy open", "sqlite batch", "npy batch")}
    for i in range(args.reps):  # interleaved
        res["sqlite open"].append(sqlite_open(sq))
        res["npy open"].append(npy_open(npy))
        res["sqlite batch"].append(sqlite_batch(sq, args.images + 32 * i, rng))
        res["npy batch"].append(npy_batch(npy, rng))
    print(f"{args.images} images, {args.images * SEGS} rows of {DIM} float16, {args.reps} reps, medians:")
    for k, v in res.items():
        print(f"  {k:13s} {statistics.median(v) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
