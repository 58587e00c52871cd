"""What a person does with results: filter them by date, type and source, look up an
indexed image's text and boxes, and find images with similar text.

Shared by the CLI, the daemon's API and the gallery, so that all of them filter
and judge relevance the same way.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pixgrep import textnorm
from pixgrep.catalog import Catalog

if TYPE_CHECKING:
    from pixgrep.app import Index

# --type names and the file extensions they cover.
TYPES: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg"),
    "png": (".png",),
    "gif": (".gif",),
    "webp": (".webp",),
    "bmp": (".bmp",),
    "tiff": (".tif", ".tiff"),
}
_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


def parse_type(name: str) -> str:
    """A --type value as a key of TYPES; ValueError names the choices."""
    key = _ALIASES.get(name.lower().lstrip("."), name.lower().lstrip("."))
    if key not in TYPES:
        raise ValueError(f"unknown image type {name!r}: choose from {', '.join(sorted(TYPES))}")
    return key


def parse_date(text: str, *, end: bool = False) -> float:
    """A --since/--until value (YYYY-MM-DD, or an ISO date and time, local time) as a Unix time.

    A bare date given as ``end`` means the end of that day, so ``--until 2024-05-01`` includes it.
    """
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad date {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if end and len(text.strip()) <= 10:
        when += dt.timedelta(days=1)
    return when.timestamp() - (1e-6 if end and len(text.strip()) <= 10 else 0.0)


@dataclass(frozen=True)
class Filters:
    """Result filters; empty means everything."""

    since: float | None = None  # file mtime, Unix time
    until: float | None = None
    types: frozenset[str] = frozenset()
    source: str | None = None  # ocr | caption
    in_dir: str | None = None

    @property
    def by_path(self) -> bool:
        return self.since is not None or self.until is not None or bool(self.types)

    def path_ok(self, path: str) -> bool:
        """Whether the file at ``path`` passes the date and type filters (it must still exist for a date)."""
        if self.types:
            ext = os.path.splitext(path)[1].lower()
            if not any(ext in TYPES[t] for t in self.types):
                return False
        if self.since is not None or self.until is not None:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                return False
            if self.since is not None and mtime < self.since:
                return False
            if self.until is not None and mtime > self.until:
                return False
        return True

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Index.search`` for these filters."""
        return {
            "in_dir": os.path.abspath(self.in_dir) if self.in_dir else None,
            "path_ok": self.path_ok if self.by_path else None,
            "source": self.source,
        }


def filters_from(
    *,
    since: str | None = None,
    until: str | None = None,
    types: list[str] | tuple[str, ...] = (),
    source: str | None = None,
    in_dir: str | None = None,
) -> Filters:
    """Filters from user input; ValueError (one line) on a bad value."""
    if source not in (None, "", "ocr", "caption"):
        raise ValueError(f"unknown source {source!r}: choose ocr or caption")
    return Filters(
        since=parse_date(since) if since else None,
        until=parse_date(until, end=True) if until else None,
        types=frozenset(parse_type(t) for t in types if t),
        source=source or None,
        in_dir=in_dir or None,
    )


def search_json(
    index: Index,
    query: str,
    *,
    limit: int | None,
    mode: str | None,
    in_dir: str | None,
    all: bool = False,
    since: float | None = None,
    until: float | None = None,
    types: tuple[str, ...] | list[str] = (),
    source: str | None = None,
) -> list[dict[str, Any]]:
    """``Index.search`` with the result filters, as JSON-ready dicts (what every Backend returns)."""
    f = Filters(
        since=since,
        until=until,
        types=frozenset(parse_type(t) for t in types),
        source=source or None,
        in_dir=in_dir,
    )
    return [r.to_json() for r in index.search(query, mode=mode, limit=limit, all=all, **f.search_kwargs())]


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
    out.append(f"fused    {r.get('score', 0.0):.4f}, relevance {r.get('relevance', 0.0):.3f}")
    return out


def _one_line(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
