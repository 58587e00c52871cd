"""Hybrid search: a BM25 keyword leg and a dense leg, fused per image.

Each leg returns segments (whole text, regions, lines, captions); segments
are grouped by content hash, keeping each image's best segment per leg, and
the per-image ranks are fused with reciprocal rank fusion (default) or a
weighted sum of normalised scores.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from pixgrep import textnorm
from pixgrep.db import Content, Database, PathEntry, path_prefix_range
from pixgrep.settings import SearchSettings
from pixgrep.stages import Embedder
from pixgrep.store import Hit, VectorStore


@dataclass
class Result:
    path: str
    score: float
    source: str  # which source matched: ocr | caption
    text: str  # the matched segment
    content_hash: str
    snippet: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    other_paths: list[str] = field(default_factory=list)
    # Why it matched: rank and score of each leg (None if that leg missed).
    keyword_rank: int | None = None
    keyword_score: float | None = None
    dense_rank: int | None = None
    dense_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["spans"] = [list(s) for s in self.spans]
        return d


def _best_per_image(hits: list[Hit]) -> dict[str, tuple[int, Hit]]:
    out: dict[str, tuple[int, Hit]] = {}
    for h in hits:
        if h.content_hash not in out:
            out[h.content_hash] = (len(out) + 1, h)
    return out


def search(
    query: str,
    *,
    store: VectorStore,
    embedder: Embedder | None,
    db: Database,
    settings: SearchSettings,
    mode: str | None = None,
    limit: int | None = None,
    in_dir: str | None = None,
) -> list[Result]:
    mode = mode or settings.mode
    limit = limit or settings.limit
    query = query.strip()
    if not query:
        return []
    # Over-fetch segments: several rows of one image can crowd the top, and --in filters after.
    fetch = min(max(limit * 8, 50) * (4 if in_dir else 1), 2000)

    kw_hits: dict[str, tuple[int, Hit]] = {}
    dense_hits: dict[str, tuple[int, Hit]] = {}
    if mode in ("hybrid", "keyword"):
        kw_hits = _best_per_image(store.search_keyword(textnorm.query_tokens(query), fetch))
    if mode in ("hybrid", "semantic"):
        if embedder is None:
            raise ValueError("semantic search needs an embedder")
        vec = embedder.embed([query])[0]
        dense_hits = _best_per_image(store.search_dense(vec, fetch))

    scores: dict[str, float] = {}
    if settings.fusion == "rrf":
        k = settings.rrf_k
        for h, (rank, _) in kw_hits.items():
            scores[h] = scores.get(h, 0.0) + settings.keyword_weight / (k + rank)
        for h, (rank, _) in dense_hits.items():
            scores[h] = scores.get(h, 0.0) + settings.dense_weight / (k + rank)
    else:
        # BM25 finds the candidates; how much of the query the segment covers scores them,
        # so a partial keyword match doesn't outrank a close paraphrase.
        for h, (_, hit) in kw_hits.items():
            scores[h] = scores.get(h, 0.0) + settings.keyword_weight * textnorm.coverage(query, hit.text) ** 2
        for h, (_, hit) in dense_hits.items():
            scores[h] = scores.get(h, 0.0) + settings.dense_weight * max(hit.score, 0.0)

    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    results: list[Result] = []
    paths: dict[str, list[str]] = {}
    # Paths are looked up a chunk of ranked images at a time: usually the first chunk fills
    # the page; --in or stale rows can filter some out, and then the next chunk is read.
    chunk = max(2 * limit, 20)
    for i, (h, score) in enumerate(ranked):
        if i % chunk == 0:
            paths = _paths_for(db, [hh for hh, _ in ranked[i : i + chunk]], in_dir)
        plist = paths.get(h)
        if not plist:
            continue  # filtered out by --in, or a stale row whose paths are gone
        kw = kw_hits.get(h)
        dn = dense_hits.get(h)
        # Show the keyword segment when there is one: it carries the visible match.
        best = kw[1] if kw else dn[1]  # type: ignore[index]
        snip, spans = textnorm.snippet(best.text, query)
        results.append(
            Result(
                path=plist[0],
                score=round(score, 6),
                source=best.source,
                text=best.text,
                content_hash=h,
                snippet=snip,
                spans=spans,
                other_paths=plist[1:],
                keyword_rank=kw[0] if kw else None,
                keyword_score=round(kw[1].score, 4) if kw else None,
                dense_rank=dn[0] if dn else None,
                dense_score=round(dn[1].score, 4) if dn else None,
            )
        )
        if len(results) >= limit:
            break
    return results


def _paths_for(db: Database, hashes: list[str], in_dir: str | None) -> dict[str, list[str]]:
    if not hashes:
        return {}
    stmt = select(PathEntry.content_hash, PathEntry.path).where(PathEntry.content_hash.in_(hashes))
    if in_dir:
        lo, hi = path_prefix_range(os.path.abspath(in_dir))
        stmt = stmt.where(PathEntry.path >= lo, PathEntry.path < hi)  # type: ignore[operator]
    out: dict[str, list[str]] = {}
    with db.session() as s:
        for h, p in s.execute(stmt.order_by(PathEntry.path)):
            if h is not None:
                out.setdefault(h, []).append(p)
        # Keep only contents that are indexed (not pending a retry of a changed file).
        done = set(s.scalars(select(Content.hash).where(Content.hash.in_(list(out)), Content.status == "done")))
    return {h: v for h, v in out.items() if h in done}
