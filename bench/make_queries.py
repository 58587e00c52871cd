"""Build the development query set from the peer's easyOCR text (not from our own OCR).

Each query is a 4-7 character CJK piece of one image's peer text that occurs in
no other image's peer text, so rank 1 is well defined. Half are converted to
simplified script, as users type. Watermarks shared by many images are skipped.

    python bench/make_queries.py > bench/queries_dev.jsonl
"""

from __future__ import annotations

import csv
import json
import random
import re
import sys
from pathlib import Path

import opencc

CSV = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "memes_peer_easyocr.csv"
WATERMARKS = ("好色龍", "迷因", "翻譯", "翮譯", "療法", "譯", "littlecitymeme")
CJK = re.compile(r"[\u4e00-\u9fff]{4,}")


def main(n: int = 200, seed: int = 7) -> None:
    rng = random.Random(seed)
    t2s = opencc.OpenCC("t2s")
    rows = list(csv.DictReader(CSV.open(encoding="utf-8")))
    texts = {r["file"]: r["easyocr_text"] for r in rows}
    every = "\n".join(texts.values())
    files = sorted(texts)
    rng.shuffle(files)
    out = []
    for f in files:
        runs = [m for m in CJK.findall(texts[f]) if not any(w in m for w in WATERMARKS)]
        if not runs:
            continue
        run = rng.choice(runs)
        length = rng.randint(4, min(7, len(run)))
        start = rng.randint(0, len(run) - length)
        piece = run[start : start + length]
        if every.count(piece) != 1:
            continue
        simplified = len(out) % 2 == 0
        query = t2s.convert(piece) if simplified else piece
        out.append({"query": query, "file": f, "script": "simplified" if simplified else "as-shown"})
        if len(out) >= n:
            break
    for q in out:
        sys.stdout.write(json.dumps(q, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
