"""Result filters (file date, image type, segment source, folder), standard library only:
the CLI parses them before it knows whether a daemon will answer."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

from pixgrep.roots import folder_arg

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
            "in_dir": folder_arg(self.in_dir) if self.in_dir else None,
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
