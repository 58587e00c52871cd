"""Can a "rank-1 stands out" rule recover meaning hits the relevance floor drops, without junk?

The floor (search.min_score, 0.25) keeps an image when coverage² + 0.5 × cosine reaches it. Meaning
queries ("the meaning in other words") score about as high as queries that match nothing, so it drops
most of their hits. Each rule here keeps everything the floor keeps and also rescues the top-ranked
image when its relevance reaches a lower bound ``low`` and it stands out from the query's own
candidates by ``g``:

* ``rel-z``: z-score of the top relevance among the top 30 candidates (mean and std of ranks 2-30);
* ``rel-gap``: top relevance minus the median relevance of ranks 2-30;
* ``cos-z``: z-score of the top image's cosine among the 30 best cosines of the candidates;
* ``cos-gap``: top image's cosine minus the median of the other 29 best cosines;
* ``cos-gap2``: top image's cosine minus the best other cosine.

(low, g) are chosen on the tuning halves only: the meaning queries with split "tune", all of
queries_dev.jsonl and queries_semantic.jsonl, and the no-match queries at even lines (0, 2, ...) of
queries_nomatch.jsonl. The choice: fewest true hits dropped with no more junk results kept on the
tuning no-match half than the old floor keeps plus a budget (0 and 3). Reported on the held-out
halves (meaning split "test", no-match odd lines), beside the old floor, from the same run.

python bench/floor_rules.py --home /tmp/pixgrep-corpus   # an index of the 1,000 memes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixgrep import search as S
from pixgrep.app import Index
from pixgrep.settings import load_settings

HERE = Path(__file__).resolve().parent
SHARED = next((p for p in (HERE.parents[1] / "shared", Path("/work/shared")) if p.is_dir()), HERE.parents[1] / "shared")
CORPUS = SHARED / "corpus" / "memes"
TOP = 30  # the candidates a rule compares the top image with
LOWS = [0.10, 0.12, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.20, 0.21, 0.22, 0.23, 0.24]
Row = dict[str, Any]


def _load(name: str) -> list[dict[str, Any]]:
    with open(HERE / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _queries() -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, split, query); dev and semantic queries are tuning queries only."""
    out = [("dev", "tune", q) for q in _load("queries_dev.jsonl")]
    out += [("semantic", "tune", q) for q in _load("queries_semantic.jsonl")]
    out += [("meaning", q["split"], q) for q in _load("queries_meaning.jsonl")]
    out += [("nomatch", "tune" if i % 2 == 0 else "test", q) for i, q in enumerate(_load("queries_nomatch.jsonl"))]
    return out


def collect(ix: Index, corpus: str) -> list[Row]:
    """Each query's candidates as search ranks them (limit 10): relevance and cosine, and the target's rank."""
    st = ix.settings.search
    store, emb = ix._search_store(), ix.pipeline.embedder
    fetch = max(st.limit * 8, 50)  # what search() fetches for the default page
    rows = []
    for kind, split, q in _queries():
        kw, dn = S._legs(q["query"], "hybrid", store=store, embedder=emb, fetch=fetch, source=None)
        legs = S._Legs(q["query"], kw, dn, st)
        ranked = [h for h, _ in sorted(legs.scores.items(), key=lambda kv: kv[1], reverse=True)]
        trank = None
        if q.get("file"):
            target = os.path.join(corpus, q["file"])
            res = ix.search(q["query"], limit=10, all=True)
            th = next((r.content_hash for r in res if target in [r.path, *r.other_paths]), None)
            trank = ranked.index(th) if th in ranked else None
        rows.append(
            {
                "kind": kind,
                "split": split,
                "trank": trank,
                "rel": [legs.relevance.get(h, 0.0) for h in ranked],
                "cos": [max(dn[h][1].score, 0.0) if h in dn else 0.0 for h in ranked],
            }
        )
    return rows


def _z(top: float, rest: list[float]) -> float:
    return (top - statistics.mean(rest)) / (statistics.pstdev(rest) or 1e-9) if rest else 0.0


def _cos_rest(r: Row) -> list[float]:
    best = sorted(r["cos"], reverse=True)[:TOP]
    if r["cos"][0] in best:
        best.remove(r["cos"][0])
    elif best:
        best.pop()
    return best


FEATURES: dict[str, Callable[[Row], float]] = {
    "rel-z": lambda r: _z(r["rel"][0], r["rel"][1:TOP]),
    "rel-gap": lambda r: r["rel"][0] - statistics.median(r["rel"][1:TOP] or [0.0]),
    "cos-z": lambda r: _z(r["cos"][0], _cos_rest(r)),
    "cos-gap": lambda r: r["cos"][0] - statistics.median(_cos_rest(r) or [0.0]),
    "cos-gap2": lambda r: r["cos"][0] - max(_cos_rest(r), default=0.0),
}


def evaluate(rows: list[Row], split: str, rescue: Callable[[Row], bool], floor: float) -> dict[str, int]:
    """True hits dropped per kind (targets in the top 10) and junk kept, on one split's queries."""
    out = {"dev": 0, "semantic": 0, "meaning": 0, "junk": 0, "junk_queries": 0, "found_meaning": 0}
    for r in rows:
        if r["split"] != split or not r["rel"]:
            continue
        kept = {i for i, x in enumerate(r["rel"][:10]) if x >= floor} | ({0} if rescue(r) else set())
        if r["kind"] == "nomatch":
            out["junk"] += len(kept)
            out["junk_queries"] += bool(kept)
        elif r["trank"] is not None and r["trank"] < 10:
            out[r["kind"]] += r["trank"] not in kept
            out["found_" + r["kind"]] = out.get("found_" + r["kind"], 0) + 1
    return out


def tune(rows: list[Row], name: str, floor: float, budget: int) -> tuple[float, float]:
    """(low, g) with the fewest tuning hits dropped and at most the old floor's tuning junk + budget."""
    f = FEATURES[name]
    for r in rows:
        r[name] = f(r) if r["rel"] else 0.0
    base = evaluate(rows, "tune", lambda r: False, floor)["junk"]
    gs = sorted({round(r[name], 3) for r in rows})
    best: tuple[tuple[int, float], float, float] | None = None
    for low in LOWS:
        for g in gs:
            e = evaluate(rows, "tune", lambda r, low=low, g=g: r["rel"][0] >= low and r[name] >= g, floor)
            if e["junk"] > base + budget:
                continue
            key = (e["dev"] + e["semantic"] + e["meaning"], -g)  # ties: the stricter gap
            if best is None or key < best[0]:
                best = (key, low, g)
    assert best is not None  # g = max always passes: it rescues at most what the floor keeps
    return best[1], best[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/pixgrep-corpus")
    ap.add_argument("--corpus", default=str(CORPUS))
    args = ap.parse_args()
    os.environ["PIXGREP_HOME"] = args.home
    settings = load_settings()
    floor = settings.search.min_score
    with Index(settings, ocr_workers=0) as ix:
        rows = collect(ix, args.corpus)
    old = {s: evaluate(rows, s, lambda r: False, floor) for s in ("tune", "test")}
    n_junk = {s: sum(min(len(r["rel"]), 10) for r in rows if r["kind"] == "nomatch" and r["split"] == s) for s in old}
    n_jq = {s: sum(1 for r in rows if r["kind"] == "nomatch" and r["split"] == s) for s in old}
    fm = {s: old[s]["found_meaning"] for s in old}
    # The ceiling of any rank-1 rescue: the meaning hits the floor drops that are the top-ranked image.
    top1 = {
        s: sum(
            1 for r in rows if r["kind"] == "meaning" and r["split"] == s and r["trank"] == 0 and r["rel"][0] < floor
        )
        for s in old
    }
    print(
        f"floor {floor}; meaning targets in the top 10: tune {fm['tune']}, test {fm['test']}; "
        f"of those the floor drops, the top-ranked image: tune {top1['tune']}, test {top1['test']}; "
        f"no-match results: tune {n_junk['tune']} ({n_jq['tune']} queries), test {n_junk['test']} ({n_jq['test']} queries)"
    )
    print()
    print(
        "| rule | tuned (low, g) | junk budget | tune: dropped dev / semantic / meaning | tune: junk kept (queries) "
        "| **test: meaning dropped** | **test: junk kept (queries)** |"
    )
    print("|---|---|---|---|---|---|---|")

    def line(label: str, params: str, budget: str, rescue: Callable[[Row], bool]) -> None:
        t, h = evaluate(rows, "tune", rescue, floor), evaluate(rows, "test", rescue, floor)
        print(
            f"| {label} | {params} | {budget} | {t['dev']} / {t['semantic']} / {t['meaning']} of {fm['tune']} "
            f"| {t['junk']} ({t['junk_queries']}) | {h['meaning']} of {fm['test']} | {h['junk']} ({h['junk_queries']}) |"
        )

    line(f"old floor {floor}", "-", "-", lambda r: False)
    for name in FEATURES:
        for budget in (0, 3):
            low, g = tune(rows, name, floor, budget)
            line(
                name,
                f"({low:.2f}, {g:.3f})",
                f"+{budget}",
                lambda r, low=low, g=g, n=name: r["rel"][0] >= low and r[n] >= g,
            )


if __name__ == "__main__":
    main()
