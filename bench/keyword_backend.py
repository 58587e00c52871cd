"""The keyword leg's BM25 with Milvus Lite: SQLite FTS5 in the local index (now) against Lite's own (before).

Same index, same queries, query by query: each query is searched with the keyword leg from the local
index's FTS5 table and from Lite's documents collection (BM25 function), the dense leg from the local
index in both. Prints R@1 / R@10 per query set and mode for each, and how often the two top-10s agree.

    PYTHONPATH=daemon:cli python bench/keyword_backend.py --home /tmp/pixgrep-corpus   # indexed by eval_retrieval.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from eval_retrieval import CORPUS, HERE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/pixgrep-corpus")
    ap.add_argument("--sets", default="queries_dev.jsonl,queries_semantic.jsonl,queries_meaning.jsonl")
    args = ap.parse_args()
    os.environ["PIXGREP_HOME"] = args.home
    from pixgrep.app import Index
    from pixgrep.settings import load_settings
    from pixgrep.store import MilvusStore

    with Index(load_settings()) as ix:
        st: Any = ix.pipeline.store
        fts5 = st.search_keyword

        def lite(tokens: str, limit: int) -> Any:
            local, st.local = st.local, None
            try:
                return MilvusStore.search_keyword(st, tokens, limit)
            finally:
                st.local = local

        print("| queries | mode | BM25 | R@1 | R@10 | same top-10 as the other |")
        print("|---|---|---|---|---|---|")
        for name in args.sets.split(","):
            with open(HERE / name, encoding="utf-8") as fh:
                queries = [json.loads(line) for line in fh]
            for mode in ("keyword", "hybrid"):
                ranks: dict[str, list[int | None]] = {"FTS5 (local index)": [], "Milvus Lite": []}
                same = 0
                for q in queries:
                    paths = {}
                    for arm, fn in (("FTS5 (local index)", fts5), ("Milvus Lite", lite)):
                        st.search_keyword = fn
                        res = ix.search(q["query"], mode=mode, limit=10)
                        paths[arm] = [r.path for r in res]
                        target = str(CORPUS / q["file"])
                        rank = next((i + 1 for i, r in enumerate(res) if target in [r.path, *r.other_paths]), None)
                        ranks[arm].append(rank)
                    same += paths["FTS5 (local index)"] == paths["Milvus Lite"]
                for arm, rs in ranks.items():
                    n = len(rs)
                    r1 = sum(r == 1 for r in rs) / n
                    r10 = sum(r is not None for r in rs) / n
                    print(f"| {Path(name).stem} ({n}) | {mode} | {arm} | {r1:.3f} | {r10:.3f} | {same}/{n} |")
        st.search_keyword = fts5


if __name__ == "__main__":
    main()
