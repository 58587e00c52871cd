"""Calibrate the relevance floor (search.min_score) on the corpus.

For each query of the development sets (the target meme is known) and of
bench/queries_nomatch.jsonl (nothing in the corpus matches), take the top 10
without the floor, then count for each candidate floor:

* true hits dropped: dev queries whose target was in the top 10 and falls below the floor;
* junk kept: results of no-match queries at or above the floor, and how many
  of those queries would still show anything.

python bench/relevance_floor.py --home /tmp/pixgrep-corpus   # an index of the 1,000 memes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from pixgrep.app import Index
from pixgrep.settings import load_settings

HERE = Path(__file__).resolve().parent
# The shared corpus beside the checkout, or at /work/shared for a worktree elsewhere.
SHARED = next((p for p in (HERE.parents[1] / "shared", Path("/work/shared")) if p.is_dir()), HERE.parents[1] / "shared")
CORPUS = SHARED / "corpus" / "memes"
PEER = SHARED / "corpus" / "memes_peer_easyocr.csv"
FLOORS = [0.0, 0.1, 0.15, 0.18, 0.2, 0.22, 0.25, 0.28, 0.3, 0.32, 0.35, 0.4, 0.45, 0.5]


def _load(name: str) -> list[dict[str, str]]:
    with open(HERE / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/pixgrep-corpus")
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--dump", default=None, help="write every query's top 10 (relevance, text) here as JSON")
    args = ap.parse_args()
    os.environ["PIXGREP_HOME"] = args.home
    dev = (
        [(q, "dev") for q in _load("queries_dev.jsonl")]
        + [(q, "semantic") for q in _load("queries_semantic.jsonl")]
        + [(q, "meaning") for q in _load("queries_meaning.jsonl")]
    )
    junk = _load("queries_nomatch.jsonl")
    target_rel: list[tuple[str, float]] = []  # (set, relevance of the target) when the target is in the top 10
    missed = 0
    junk_rel: list[list[float]] = []
    dump: list[dict[str, object]] = []
    with Index(load_settings(), ocr_workers=0) as ix:
        for q, kind in dev:
            res = ix.search(q["query"], limit=10, all=True)
            target = os.path.join(args.corpus, q["file"])
            hit = next((r for r in res if target in [r.path, *r.other_paths]), None)
            if hit is None:
                missed += 1
            else:
                target_rel.append((kind, hit.relevance))
            dump.append({"query": q["query"], "kind": kind, "top": [(r.relevance, r.text[:60]) for r in res[:3]]})
        for q in junk:
            res = ix.search(q["query"], limit=10, all=True)
            junk_rel.append([r.relevance for r in res])
            dump.append({"query": q["query"], "kind": "nomatch", "top": [(r.relevance, r.text[:60]) for r in res[:3]]})
    if args.dump:
        Path(args.dump).write_text(json.dumps(dump, ensure_ascii=False, indent=1), encoding="utf-8")
    n_dev = len(dev)
    n_found = len(target_rel)
    n_junk_results = sum(len(r) for r in junk_rel)
    print(
        f"{n_dev} dev queries ({n_found} with the target in the top 10 without a floor, {missed} without); "
        f"{len(junk)} no-match queries ({n_junk_results} results without a floor)"
    )
    rel = sorted(r for _, r in target_rel)
    print(
        f"target relevance: min {rel[0]:.3f}, p5 {rel[len(rel) // 20]:.3f}, median {statistics.median(rel):.3f}; "
        f"no-match top-1 relevance: max {max(max(r, default=0) for r in junk_rel):.3f}, "
        f"median {statistics.median(max(r, default=0) for r in junk_rel):.3f}"
    )
    print()
    print(
        "| floor | true hits dropped (dev / semantic / meaning) | junk results kept | no-match queries still showing results |"
    )
    print("|---|---|---|---|")
    for f in FLOORS:
        dropped_dev = sum(1 for k, r in target_rel if k == "dev" and r < f)
        dropped_sem = sum(1 for k, r in target_rel if k == "semantic" and r < f)
        dropped_mean = sum(1 for k, r in target_rel if k == "meaning" and r < f)
        kept = sum(sum(1 for x in r if x >= f) for r in junk_rel)
        showing = sum(1 for r in junk_rel if any(x >= f for x in r))
        print(
            f"| {f:.2f} | {dropped_dev + dropped_sem + dropped_mean} of {n_found} "
            f"({dropped_dev} / {dropped_sem} / {dropped_mean}) "
            f"| {kept} of {n_junk_results} | {showing} of {len(junk)} |"
        )


if __name__ == "__main__":
    main()
