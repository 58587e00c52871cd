"""Index throughput: the seed article's pipeline against `pixgrep index`, same images, same run.

Seed, as written: for each image, sequentially, pytesseract chi_sim -> encode that one
text -> insert one row into Milvus Lite, with the same embedder pixgrep uses.
pixgrep: `pixgrep index DIR` (OCR worker processes, batched embedding and upserts),
timed from process start, so model loading and the pool start are included.

OCR quality is compared with the peer's easyOCR text as a reference (not ground
truth): character-bag F1 over folded CJK characters and latin letters.

    python bench/index_throughput.py -n 100
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "corpus"


def seed_pipeline(files: list[Path], db: Path) -> tuple[float, dict[str, str]]:
    import numpy as np
    import pytesseract
    from PIL import Image
    from pixgrep.embed import UseEmbedder
    from pymilvus import MilvusClient

    t0 = time.monotonic()
    embedder = UseEmbedder()
    client = MilvusClient(str(db))
    client.create_collection("seed", dimension=512, auto_id=True)
    texts = {}
    for f in files:
        try:
            text = pytesseract.image_to_string(Image.open(f), lang="chi_sim")
        except Exception as e:  # the seed has no error handling; count it as empty
            text = ""
            print(f"seed: {f.name}: {e}", file=sys.stderr)
        texts[f.name] = text
        vec = embedder.embed([text or " "])[0]
        client.insert("seed", [{"vector": np.asarray(vec).tolist(), "text": text[:1000], "path": str(f)}])
    client.close()
    return time.monotonic() - t0, texts


def pixgrep_index(folder: Path, home: Path) -> float:
    env = {**os.environ, "PIXGREP_HOME": str(home)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pixgrep_cli.main", "index", str(folder)], env=env, check=True)
    return time.monotonic() - t0


def pixgrep_texts(home: Path) -> dict[str, str]:
    from pixgrep.catalog import Catalog

    db = Catalog(home / "pixgrep.sqlite")
    texts = {c.hash: c.text for c in db.contents()}
    out = {Path(p).name: texts[h] for p, h in db.paths().items() if h in texts}
    db.close()
    return out


def char_f1(a: str, b: str) -> float:
    from pixgrep.textnorm import fold

    ca = collections.Counter(c for c in fold(a) if c.isalnum())
    cb = collections.Counter(c for c in fold(b) if c.isalnum())
    if not ca and not cb:
        return 1.0
    overlap = sum((ca & cb).values())
    if not overlap:
        return 0.0
    p, r = overlap / sum(ca.values()), overlap / sum(cb.values())
    return 2 * p * r / (p + r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    peer = {}
    with open(SHARED / "memes_peer_easyocr.csv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            peer[row["file"].replace("/", "__")] = row["easyocr_text"]
    all_files = sorted((SHARED / "memes").rglob("*.jpg"))
    picked = all_files[:: max(1, len(all_files) // args.n)][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        files = []
        for f in picked:
            dst = folder / f"{f.parent.name}__{f.name}"
            shutil.copyfile(f, dst)
            files.append(dst)
        seed_s, seed_txt = seed_pipeline(files, Path(tmp) / "seed.db")
        pg_s = pixgrep_index(folder, Path(tmp) / "home")
        pg_txt = pixgrep_texts(Path(tmp) / "home")
    n = len(files)
    seed_f1 = sum(char_f1(seed_txt.get(f.name, ""), peer.get(f.name, "")) for f in files) / n
    pg_f1 = sum(char_f1(pg_txt.get(f.name, ""), peer.get(f.name, "")) for f in files) / n
    print(f"\n{n} corpus images, {os.cpu_count()} cores\n")
    print("| pipeline | seconds | images/s | char-F1 vs peer easyOCR |")
    print("|---|---|---|---|")
    print(f"| seed: tesseract chi_sim, one at a time | {seed_s:.1f} | {n / seed_s:.2f} | {seed_f1:.3f} |")
    print(f"| pixgrep index (rapidocr PP-OCRv6) | {pg_s:.1f} | {n / pg_s:.2f} | {pg_f1:.3f} |")
    print(f"\nratio pixgrep/seed images/s: {seed_s / pg_s:.2f}x")


if __name__ == "__main__":
    main()
