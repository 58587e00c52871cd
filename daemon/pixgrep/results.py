"""What a person does with results: filter them by date, type and source, look up an
indexed image's text and boxes, and find images with similar text.

Shared by the CLI, the daemon's API and the gallery, so that all of them filter
and judge relevance the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pixgrep import textnorm
from pixgrep.catalog import Catalog
from pixgrep.filters import Filters

if TYPE_CHECKING:
    from pixgrep.app import Index
    from pixgrep.request import SearchRequest


def search_json(index: Index, request: SearchRequest) -> list[dict[str, Any]]:
    """``Index.search`` for ``request``, as JSON-ready dicts (what every Backend returns)."""
    r = request
    return [
        x.to_json() for x in index.search(r.query, mode=r.mode, limit=r.limit, all=r.all, **r.filters.search_kwargs())
    ]


@dataclass
class Item:
    """An indexed image as the books hold it."""

    content_hash: str
    paths: list[tuple[str, int, int]]  # (path, size, mtime_ns) as indexed
    text: str
    lines: list[dict[str, Any]]
    captions: list[str]
    width: int
    height: int
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def lookup_item(db: Catalog, content_hash: str) -> Item | None:
    """The indexed image with this content hash, or None when it isn't indexed (or has no path)."""
    paths = db.indexed_paths(content_hash)
    c = db.content(content_hash) if paths else None
    if c is None:
        return None
    return Item(
        content_hash=c.hash,
        paths=paths,
        text=c.text,
        lines=c.lines,
        captions=c.captions,
        width=c.width or 0,
        height=c.height or 0,
        source=c.source,
    )


def hash_of_path(db: Catalog, path: str) -> str | None:
    """The content hash the books hold for ``path``."""
    e = db.path_entry(path)
    return e.content_hash if e else None


def matched_lines(lines: list[dict[str, Any]], query: str) -> list[int]:
    """Indexes of the OCR lines that hold part of the query (what the gallery outlines)."""
    if not query.strip():
        return []
    hits = [i for i, ln in enumerate(lines) if textnorm.highlight_spans(ln.get("text", ""), query)]
    if hits:
        return hits
    # A paraphrase matches no characters: outline the line with the largest share of query tokens, if any.
    cov = [(textnorm.coverage(query, ln.get("text", "")), i) for i, ln in enumerate(lines)]
    best = max(cov, default=(0.0, -1))
    return [best[1]] if best[0] > 0 else []


def item_text(item: Item) -> str:
    return " ".join([item.text, *item.captions]).strip()


def similar(
    index: Index,
    *,
    text: str,
    exclude: str | None = None,
    limit: int = 10,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    """Images whose text means what ``text`` means (dense leg), best first, without ``exclude``."""
    if not text.strip():
        return []
    f = filters or Filters()
    res = index.search(text[:2000], mode="semantic", limit=limit + 1, all=True, **f.search_kwargs())
    return [r.to_json() for r in res if r.content_hash != exclude][:limit]


def similar_to_file(
    index: Index, path: str, *, limit: int = 10, filters: Filters | None = None
) -> list[dict[str, Any]]:
    """Images like the one at ``path``: its indexed text when the index holds its bytes, else OCR now."""
    from pixgrep import images

    fb = images.read_file(path)
    item = lookup_item(index.db, fb.digest)
    if item is not None:
        text = item_text(item)
    else:
        analysis = index.pipeline.ocr_pool.submit(fb.digest, fb.data).result(timeout=300)
        if analysis.error:
            raise ValueError(f"{path}: {analysis.error}")
        text = " ".join(ln.text for ln in analysis.lines)
    if not text.strip():
        raise ValueError(f"{path}: no text found in the image")
    return similar(index, text=text, exclude=fb.digest, limit=limit, filters=filters)


def explain(r: dict[str, Any]) -> list[str]:
    """The --explain lines of one result: each leg's score and segment, and the fused score."""
    kw = r.get("keyword_score")
    dn = r.get("dense_score")
    out = []
    if kw is not None:
        out.append(
            f"keyword  bm25 {kw:.3f} (rank {r.get('keyword_rank')}), covers {float(r.get('coverage') or 0):.0%} "
            f"of the query: {_one_line(r.get('keyword_text') or '')}"
        )
    else:
        out.append("keyword  no match")
    if dn is not None:
        out.append(f"dense    cosine {dn:.3f} (rank {r.get('dense_rank')}): {_one_line(r.get('dense_text') or '')}")
    else:
        out.append("dense    no match")
    wh = r.get("whole_score")
    if wh is not None:
        out.append(f"whole    cosine {wh:.3f} (rank {r.get('whole_rank')}): {_one_line(r.get('whole_text') or '')}")
    out.append(f"fused    {r.get('score', 0.0):.4f}, relevance {r.get('relevance', 0.0):.3f}")
    return out


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
