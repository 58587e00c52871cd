"""Hybrid search: a BM25 keyword leg and a dense leg, fused per image.

Each leg returns segments (whole text, regions, lines, captions); segments
are grouped by content hash, keeping each image's best segment per leg, and
the per-image ranks are fused with reciprocal rank fusion (default) or a
weighted sum of normalised scores. With a whole-text model
(``embed.whole_backend``) a second dense leg searches the whole texts and
captions by that model's vectors, weighted by ``search.whole_weight`` above
``search.whole_offset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pixgrep import textnorm
from pixgrep.catalog import Catalog
from pixgrep.limits import check_search
from pixgrep.segments import Hit
from pixgrep.settings import SearchSettings
from pixgrep.stages import Embedder, embed_queries
from pixgrep.store import Searcher


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
    # --explain: the segment each leg matched, the share of the query the keyword segment
    # covers, and the relevance the floor judges (coverage^2 * kw weight + cosine * dense weight).
    keyword_text: str | None = None
    dense_text: str | None = None
    # The whole-text leg (embed.whole_backend), when there is one.
    whole_rank: int | None = None
    whole_score: float | None = None
    whole_text: str | None = None
    coverage: float | None = None
    relevance: float = 0.0

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
    store: Searcher,
    embedder: Embedder | None,
    db: Catalog,
    settings: SearchSettings,
    mode: str | None = None,
    limit: int | None = None,
    in_dir: str | None = None,
    min_score: float | None = None,
    path_ok: Callable[[str], bool] | None = None,
    source: str | None = None,
    whole_embedder: Embedder | None = None,
) -> list[Result]:
    """Ranked images for ``query``.

    ``min_score`` drops images whose relevance is below it (the "no good match" floor);
    ``path_ok`` keeps only paths it accepts (date and type filters); ``source`` keeps only
    segments of that source (ocr or caption); ``whole_embedder`` adds the whole-text leg.
    """
    check_search(query, limit)  # raises QueryRefused (a ValueError): 0 is not "the default"
    mode = mode or settings.mode
    limit = limit or settings.limit
    query = query.strip()
    if not query:
        return []
    # Over-fetch segments: several rows of one image can crowd the top, and --in filters after.
    filtered = bool(in_dir or path_ok or source)
    fetch = min(max(limit * 8, 50) * (4 if filtered else 1), 2000)

    kw_hits, dense_hits = _legs(query, mode, store=store, embedder=embedder, fetch=fetch, source=source)
    whole_hits = _whole_leg(query, mode, store=store, embedder=whole_embedder, fetch=fetch, source=source)
    legs = _Legs(query, kw_hits, dense_hits, settings, whole_hits)
    ranked = sorted(legs.scores.items(), key=lambda kv: kv[1], reverse=True)
    if min_score is not None:
        ranked = [(h, score) for h, score in ranked if legs.relevance.get(h, 0.0) >= min_score]
    return _page(ranked, legs, db=db, limit=limit, in_dir=in_dir, path_ok=path_ok)


def _page(
    ranked: list[tuple[str, float]],
    legs: _Legs,
    *,
    db: Catalog,
    limit: int,
    in_dir: str | None,
    path_ok: Callable[[str], bool] | None,
) -> list[Result]:
    results: list[Result] = []
    paths: dict[str, list[str]] = {}
    # Paths are looked up a chunk of ranked images at a time: usually the first chunk fills
    # the page; --in or stale rows can filter some out, and then the next chunk is read.
    chunk = max(2 * limit, 20)
    for i, (h, score) in enumerate(ranked):
        if i % chunk == 0:
            paths = db.paths_for([hh for hh, _ in ranked[i : i + chunk]], in_dir)
        plist = [p for p in paths.get(h, []) if path_ok is None or path_ok(p)]
        if not plist:
            continue  # filtered out by --in, a date or type filter, or a stale row whose paths are gone
        results.append(legs.result(h, score, plist))
        if len(results) >= limit:
            break
    return results


def _legs(
    query: str, mode: str, *, store: Searcher, embedder: Embedder | None, fetch: int, source: str | None
) -> tuple[dict[str, tuple[int, Hit]], dict[str, tuple[int, Hit]]]:
    """Each leg's best segment per image, with its per-image rank."""
    kw_hits: dict[str, tuple[int, Hit]] = {}
    dense_hits: dict[str, tuple[int, Hit]] = {}
    if mode in ("hybrid", "keyword"):
        kw_hits = _best_per_image(_of_source(store.search_keyword(textnorm.query_tokens(query), fetch), source))
    if mode in ("hybrid", "semantic"):
        if embedder is None:
            raise ValueError("semantic search needs an embedder")
        vec = embed_queries(embedder, [query])[0]
        dense_hits = _best_per_image(_of_source(store.search_dense(vec, fetch), source))
    return kw_hits, dense_hits


def _whole_leg(
    query: str, mode: str, *, store: Searcher, embedder: Embedder | None, fetch: int, source: str | None
) -> dict[str, tuple[int, Hit]]:
    """The whole-text leg's best segment per image (none without a whole-text model, or in keyword mode)."""
    if embedder is None or mode not in ("hybrid", "semantic"):
        return {}
    vec = embed_queries(embedder, [query])[0]
    return _best_per_image(_of_source(store.search_whole(vec, fetch), source))


def _rrf(legs: list[tuple[dict[str, tuple[int, Hit]], float]], k: int) -> dict[str, float]:
    """Reciprocal rank fusion: per image, the sum over the legs of weight / (k + rank)."""
    scores: dict[str, float] = {}
    for hits, weight in legs:
        for h, (rank, _) in hits.items():
            scores[h] = scores.get(h, 0.0) + weight / (k + rank)
    return scores


def _leg_fields(name: str, entry: tuple[int, Hit] | None) -> dict[str, Any]:
    """A leg's rank, score and segment as Result fields (none where the leg missed the image)."""
    if entry is None:
        return {}
    rank, hit = entry
    return {f"{name}_rank": rank, f"{name}_score": round(hit.score, 4), f"{name}_text": hit.text}


class _Legs:
    """The legs' hits of one query, fused into scores, with each image's relevance."""

    def __init__(
        self,
        query: str,
        kw_hits: dict[str, tuple[int, Hit]],
        dense_hits: dict[str, tuple[int, Hit]],
        settings: SearchSettings,
        whole_hits: dict[str, tuple[int, Hit]] | None = None,
    ) -> None:
        self.query = query
        self.kw_hits = kw_hits
        self.dense_hits = dense_hits
        self.whole_hits = whole_hits or {}
        # How much of the query the best keyword segment covers, squared, plus the cosine: the
        # weighted fusion score, and the relevance the floor judges whatever the fusion.
        self.cover = {h: textnorm.coverage(query, hit.text) for h, (_, hit) in kw_hits.items()}
        self.relevance = {h: settings.keyword_weight * c**2 for h, c in self.cover.items()}
        for h, (_, hit) in dense_hits.items():
            self.relevance[h] = self.relevance.get(h, 0.0) + settings.dense_weight * max(hit.score, 0.0)
        # The whole-text model's cosines sit high for anything (e5: 0.7-0.9), so only what is above the offset counts.
        for h, (_, hit) in self.whole_hits.items():
            above = max(hit.score - settings.whole_offset, 0.0)
            self.relevance[h] = self.relevance.get(h, 0.0) + settings.whole_weight * above
        if settings.fusion == "rrf":
            weights = (settings.keyword_weight, settings.dense_weight, settings.whole_weight)
            self.scores = _rrf(list(zip((kw_hits, dense_hits, self.whole_hits), weights, strict=True)), settings.rrf_k)
        else:
            # BM25 finds the candidates; how much of the query the segment covers scores them,
            # so a partial keyword match doesn't outrank a close paraphrase.
            self.scores = dict(self.relevance)

    def result(self, h: str, score: float, plist: list[str]) -> Result:
        kw = self.kw_hits.get(h)
        dn = self.dense_hits.get(h)
        wh = self.whole_hits.get(h)
        # Show the keyword segment when there is one: it carries the visible match.
        best = next(x[1] for x in (kw, dn, wh) if x)
        snip, spans = textnorm.snippet(best.text, self.query)
        return Result(
            path=plist[0],
            score=round(score, 6),
            source=best.source,
            text=best.text,
            content_hash=h,
            snippet=snip,
            spans=spans,
            other_paths=plist[1:],
            **_leg_fields("keyword", kw),
            **_leg_fields("dense", dn),
            **_leg_fields("whole", wh),
            coverage=round(self.cover[h], 4) if h in self.cover else None,
            relevance=round(self.relevance.get(h, 0.0), 6),
        )


def _of_source(hits: list[Hit], source: str | None) -> list[Hit]:
    return hits if source is None else [h for h in hits if h.source == source]
