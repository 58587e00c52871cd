"""Retrieval quality on the development query set: recall@1, recall@5 and MRR per search mode.

python bench/eval_retrieval.py --home /tmp/pixgrep-corpus   # indexes the corpus there first if needed
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from pixgrep.app import Index, index_paths
from pixgrep.settings import load_settings

HERE = Path(__file__).resolve().parent
# Beside the checkout (/work/main) or beside the folder of worktrees (/work/wt/NAME).
CORPUS = Path(
    os.environ.get("PIXGREP_TEST_CORPUS")
    or next((p / "shared/corpus/memes" for p in HERE.parents if (p / "shared/corpus/memes").is_dir()), "memes")
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/pixgrep-corpus")
    ap.add_argument("--queries", default=str(HERE / "queries_dev.jsonl"))
    ap.add_argument("--modes", default="hybrid,keyword,semantic")
    ap.add_argument("--fusion", default=None, choices=[None, "rrf", "weighted"])
    ap.add_argument("--all", action="store_true", help="rank without the relevance floor (search.min_score)")
    args = ap.parse_args()
    os.environ["PIXGREP_HOME"] = args.home
    with open(args.queries, encoding="utf-8") as fh:
        queries = [json.loads(line) for line in fh]
    overrides = {"search": {"fusion": args.fusion}} if args.fusion else {}
    with Index(load_settings(**overrides)) as ix:
        if ix.db.counts()["indexed"] < 900:
            t = time.monotonic()
            index_paths(ix, [str(CORPUS)])
            print(f"indexed the corpus in {time.monotonic() - t:.0f}s")
        print("| mode | queries | R@1 | R@5 | R@10 | MRR@10 | R@1 by query kind | p50 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in args.modes.split(","):
            ranks: list[int | None] = []
            by_script: dict[str, list[bool]] = {}
            times = []
            for q in queries:
                t = time.perf_counter()
                res = ix.search(q["query"], mode=mode, limit=10, all=args.all)
                times.append(time.perf_counter() - t)
                target = str(CORPUS / q["file"])
                rank = next((i + 1 for i, r in enumerate(res) if target in [r.path, *r.other_paths]), None)
                ranks.append(rank)
                by_script.setdefault(q["script"], []).append(rank == 1)
            n = len(ranks)
            r1 = sum(r == 1 for r in ranks) / n
            r5 = sum(r is not None and r <= 5 for r in ranks) / n
            r10 = sum(r is not None for r in ranks) / n
            mrr = sum(1 / r for r in ranks if r) / n
            times.sort()
            kinds = ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in sorted(by_script.items()))
            label = " (no floor)" if args.all and mode == "hybrid" else ""
            print(
                f"| {mode}{label} | {n} | {r1:.3f} | {r5:.3f} | {r10:.3f} | {mrr:.3f} | {kinds} | {times[n // 2] * 1000:.0f} |"
            )


if __name__ == "__main__":
    main()
