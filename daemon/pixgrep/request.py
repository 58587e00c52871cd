"""One search, as every layer passes it: the CLI, the socket API's client and server, the gallery, the backends.

``SearchRequest`` holds the search's fields with their defaults and checks them once, where it is made,
so that no layer repeats the list or the limits. ``to_json``/``from_json`` are the socket API's body: the
CLI's client writes what the daemon's server reads. Standard library only: the CLI's fast path builds
one before it imports anything heavy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from pixgrep.filters import Filters, parse_type
from pixgrep.limits import MODES, QueryRefused, limit_problem, query_problem
from pixgrep.roots import folder_arg

SOURCES = ("ocr", "caption")
MAX_TYPES = 16  # more than there are image types: a longer list is not a person's


@dataclass(frozen=True)
class SearchRequest:
    """A search: ``query`` and how many results (``limit``, None: the configured default) in which ``mode``
    (None: the configured one), only under ``in_dir``, below the relevance floor too with ``all``, files
    modified in ``[since, until]`` (Unix times), of image ``types`` (``filters.TYPES`` keys), matched in
    ``source`` (ocr or caption).

    Raises ValueError (``limits.QueryRefused`` for a limit) with a one-line message when a field is out of
    bounds; ``types`` become sorted canonical names, ``in_dir`` absolute, empty strings None.
    """

    query: str
    limit: int | None = None
    mode: str | None = None
    in_dir: str | None = None
    all: bool = False
    since: float | None = None
    until: float | None = None
    types: tuple[str, ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        _check_text_and_limit(self.query, self.limit)
        _check_choices(self.mode, self.source, self.all, self.in_dir)
        _check_times(self.since, self.until)
        set_ = object.__setattr__  # frozen: the normal forms are set once, here
        set_(self, "types", _types(self.types))
        set_(self, "source", self.source or None)
        set_(self, "in_dir", folder_arg(self.in_dir) if self.in_dir else None)
        set_(self, "since", None if self.since is None else float(self.since))
        set_(self, "until", None if self.until is None else float(self.until))

    @classmethod
    def from_filters(cls, query: str, filters: Filters, **fields: Any) -> SearchRequest:
        """The request for ``query`` with parsed result ``filters`` (``filters.filters_from``) and other ``fields``."""
        return cls(
            query,
            in_dir=filters.in_dir,
            since=filters.since,
            until=filters.until,
            types=tuple(filters.types),
            source=filters.source,
            **fields,
        )

    @property
    def filters(self) -> Filters:
        """The result filters of this request."""
        return Filters(
            since=self.since, until=self.until, types=frozenset(self.types), source=self.source, in_dir=self.in_dir
        )

    def to_json(self) -> dict[str, Any]:
        """The socket API's body: query, limit, mode and in_dir always, the rest only when set (so that a
        plain search reads the same to every daemon version)."""
        body: dict[str, Any] = {"query": self.query, "limit": self.limit, "mode": self.mode, "in_dir": self.in_dir}
        rest = {
            "all": self.all,
            "since": self.since,
            "until": self.until,
            "types": list(self.types),
            "source": self.source,
        }
        # By identity: a since of 0.0 (1970) is set, and 0.0 == False.
        body.update({k: v for k, v in rest.items() if v is not None and v is not False and v != []})
        return body

    @classmethod
    def from_json(cls, body: Any) -> SearchRequest:
        """The request a ``to_json`` body describes; ValueError (one line) on anything else."""
        if not isinstance(body, dict):
            raise ValueError("a search is a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        if "query" not in body:
            raise ValueError("query: missing")
        types = body.get("types", ())
        if not isinstance(types, (list, tuple)):
            raise ValueError("types: must be a list of image types")
        return cls(**{**body, "types": tuple(types)})


_FIELDS = frozenset(f.name for f in fields(SearchRequest))


def _types(types: Iterable[str]) -> tuple[str, ...]:
    if isinstance(types, str):
        raise ValueError("types: must be a list of image types")
    names = list(types)
    if len(names) > MAX_TYPES:
        raise ValueError(f"types: at most {MAX_TYPES}")
    if not all(isinstance(t, str) for t in names):
        raise ValueError("types: must be a list of image types")
    return tuple(sorted({parse_type(t) for t in names if t}))


def _check_text_and_limit(query: object, limit: object) -> None:
    if not isinstance(query, str):
        raise ValueError("query: must be text")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise ValueError("limit: must be a whole number")
    problem = query_problem(query) or limit_problem(limit)
    if problem:
        raise QueryRefused(problem)


def _check_choices(mode: object, source: object, all: object, in_dir: object) -> None:
    if mode not in (None, *MODES):
        raise ValueError(f"unknown mode {mode!r}: choose {', '.join(MODES)}")
    if source not in (None, "", *SOURCES):
        raise ValueError(f"unknown source {source!r}: choose ocr or caption")
    if not isinstance(all, bool):
        raise ValueError("all: must be true or false")
    if in_dir is not None and not isinstance(in_dir, str):
        raise ValueError("in_dir: must be a folder")


def _check_times(since: float | None, until: float | None) -> None:
    for name, t in (("since", since), ("until", until)):
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise ValueError(f"{name}: must be a Unix time")
    if since is not None and until is not None and since > until:
        raise ValueError("--since is after --until: nothing can match")
