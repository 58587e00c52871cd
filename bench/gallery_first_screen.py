"""The gallery's first screen at 10k indexed images: page, search, and the first thumbnails.

A synthetic index as bench/search_latency.py builds it (about 7 segments an
image of real meme text, random unit vectors), whose images are real memes:
image i is meme i % 1000 of the corpus with a unique trailer after its last
byte, so every content hash differs and thumbnails cost what real ones do. The
files are written only for the images that the queries show. The gallery runs
in-process on a free loopback port, warm (embedder loaded, one search done), and
a client fetches what the browser fetches for a first screen: the page, its
script and style, /api/search, then the first THUMBS thumbnails six at a time
(a browser's connections per host). Each query is timed with a cold thumbnail
cache and again warm.

    python bench/gallery_first_screen.py --size 10000
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_latency import synthetic_segments  # noqa: E402

# The shared corpus beside the checkout, or at /work/shared for a worktree elsewhere.
SHARED = next((p for p in (HERE.parents[1] / "shared", Path("/work/shared")) if p.is_dir()), HERE.parents[1] / "shared")
CORPUS = SHARED / "corpus" / "memes"
PEER = SHARED / "corpus" / "memes_peer_easyocr.csv"
TRAILER = b"\0pixgrep-bench-%08d"


def populate(home: Path, pics: Path, n: int, lines: list[str], rng: random.Random) -> dict[str, bytes]:
    """Books and store for n images; returns the bytes of each content hash (files not written yet)."""
    from pixgrep import images
    from pixgrep.catalog import Catalog
    from pixgrep.settings import load_settings
    from pixgrep.store import open_store

    memes = sorted(CORPUS.rglob("*.jpg"))[:1000]
    raw = [m.read_bytes() for m in memes]
    os.environ["PIXGREP_HOME"] = str(home)
    # A generous Milvus timeout: a shared, loaded machine makes Lite's big upserts slow.
    settings = load_settings(milvus={"timeout": 600})
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Catalog(settings.db_path)
    store = open_store(settings, embed_name="use-multilingual-v3", dim=512)
    nprng = np.random.default_rng(0)
    data_of: dict[str, bytes] = {}
    for start in range(0, n, 500):
        contents, paths, items = [], [], []
        for i in range(start, min(n, start + 500)):
            data = raw[i % len(raw)] + TRAILER % i
            h = images.content_hash(data)
            data_of[h] = data
            segs = synthetic_segments(lines, rng)
            vecs = nprng.standard_normal((len(segs), 512)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items.append((h, segs, vecs))
            contents.append({"hash": h, "status": "done", "source": "ocr", "text": segs[0].text})
            paths.append(
                {"path": str(pics / f"{i}.jpg"), "content_hash": h, "size": len(data), "mtime_ns": 1, "inode": i}
            )
        store.upsert_many(items)
        db.seed(contents, paths)
    store.flush()
    store.close()
    db.close()
    return data_of


def first_screen(client: httpx.Client, query: str, thumbs: int, pool: cf.Executor) -> tuple[float, float, int]:
    """Seconds to the search answer and to the last of the first thumbnails; how many thumbnails."""
    t0 = time.perf_counter()
    for url in ("/", "/static/app.js", "/static/style.css"):
        client.get(url).raise_for_status()
    r = client.get("/api/search", params={"q": query, "all": "1"})
    r.raise_for_status()
    t_search = time.perf_counter() - t0
    hashes = [x["content_hash"] for x in r.json()["results"][:thumbs]]
    for resp in pool.map(lambda h: client.get(f"/thumb/{h}"), hashes):
        resp.raise_for_status()
    return t_search, time.perf_counter() - t0, len(hashes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--thumbs", type=int, default=20, help="thumbnails on a first screen (1280x800: 5 x 3 cards)")
    args = ap.parse_args()
    rng = random.Random(1)
    with open(PEER, encoding="utf-8") as fh:
        texts = [r["easyocr_text"] for r in csv.DictReader(fh) if r["easyocr_text"].strip()]
    lines = [t[i : i + rng.randint(6, 20)] for t in texts for i in range(0, len(t), 12)]
    queries = [rng.choice(lines)[: rng.randint(3, 8)] for _ in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        home, pics = Path(tmp) / "home", Path(tmp) / "pics"
        pics.mkdir()
        t = time.monotonic()
        data_of = populate(home, pics, args.size, lines, rng)
        print(f"built {args.size} images in {time.monotonic() - t:.0f}s", file=sys.stderr)
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        from pixgrep.app import Index
        from pixgrep.service.gallery import GalleryServer, IndexBackend
        from pixgrep.settings import load_settings

        settings = load_settings(ui={"port": 0})
        with Index(settings, ocr_workers=0) as ix:
            # Write the files the queries show (all results, the floor off, so any may appear).
            for q in queries:
                for r in ix.search(q, limit=60, all=True):
                    p = Path(r.path)
                    if not p.exists():
                        p.write_bytes(data_of[r.content_hash])
            backend = IndexBackend(lambda: ix, lambda: {})
            server = GalleryServer(settings, backend)
            server.start()
            try:
                base = f"http://127.0.0.1:{server.port}"
                with (
                    httpx.Client(base_url=base, headers={"Authorization": f"Bearer {server.token}"}) as client,
                    cf.ThreadPoolExecutor(6) as pool,
                ):
                    first_screen(client, "warm up", 0, pool)
                    rows, inproc = [], []
                    for q in queries:
                        # Baseline in the same run: the same search in-process, no HTTP, no thumbnails.
                        t = time.perf_counter()
                        ix.search(q, limit=60, all=True)
                        inproc.append(time.perf_counter() - t)
                        rows.append(
                            (first_screen(client, q, args.thumbs, pool), first_screen(client, q, args.thumbs, pool))
                        )
            finally:
                server.stop()
    cold_s = [c[0] for c, _ in rows]
    cold = [c[1] for c, _ in rows]
    warm = [w[1] for _, w in rows]
    shown = statistics.median([c[2] for c, _ in rows])
    print(f"\n{os.cpu_count()} cores; {args.size} images; {len(queries)} queries; first {args.thumbs} thumbnails")
    print(
        "| images | in-process search p50 ms (baseline) | page + search p50 ms | first screen, cold thumbnail cache p50 / max ms | first screen, warm cache p50 / max ms | thumbnails shown (median) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.size} | {statistics.median(inproc) * 1000:.0f} | {statistics.median(cold_s) * 1000:.0f} | {statistics.median(cold) * 1000:.0f} / {max(cold) * 1000:.0f} "
        f"| {statistics.median(warm) * 1000:.0f} / {max(warm) * 1000:.0f} | {shown:.0f} |"
    )


if __name__ == "__main__":
    main()
