"""After a batch of moves: check the names the moves wrote against the disk (issue 9, churn).

Events name paths as they were when they happened, and the worker applies them later. A folder move renames
every booked path under the folder at once, so an event from before the folder move that is handled after it
(a delete, which the watcher delays; a move deferred while its source was still being indexed) names a path
the books no longer hold, while the path they do hold has no file and no event left to correct it. Each later
rename of the folder then carries that ghost along (``Pipeline.move_tree`` keeps books whose file is gone,
since they may have moved on again), and only the hourly rescan removed it.

So the worker hands the destinations of each batch's moves to :func:`ghosts`: the booked paths at or under
them whose file is gone, minus those a queued event can still take on (a live row names the path, or a live
move starts at the path or at a folder above it: the rename of a folder twice in a row). It queues a delayed
delete for each (``Worker._converge``): an event still on its way in the meantime is applied first, and the
delete checks the disk again before it forgets anything. Only names are checked and forgotten here: no bytes
are read, so this costs no OCR.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pixgrep.catalog import Catalog, Queue
from pixgrep.roots import is_key


class _Listing:
    """Whether paths exist, one ``os.listdir`` per folder (a moved folder may hold thousands of books)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str] | None] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:  # gone, or not a folder any more
                self._names[folder] = None
        names = self._names[folder]
        return names is not None and name in names


def _ancestors(path: str) -> Iterable[str]:
    """``path`` and every folder above it."""
    while path and path != "/":
        yield path
        path = os.path.dirname(path)


def _booked(db: Catalog, touched: Iterable[str]) -> set[str]:
    """The booked paths at or under each of ``touched``."""
    booked: set[str] = set()
    for t in {t.rstrip("/") for t in touched if t and not is_key(t)}:
        booked.update(db.paths_under(t))
        if db.path_entry(t) is not None:
            booked.add(t)
    return booked


def ghosts(db: Catalog, queue: Queue, touched: Iterable[str]) -> list[str]:
    """Booked paths at or under ``touched`` whose file is gone and that no live queue row can take on."""
    listing = _Listing()
    missing = sorted(p for p in _booked(db, touched) if not is_key(p) and not listing.exists(p))
    if not missing:
        return []
    sources = {s.rstrip("/") for s in queue.live_moves().values() if s}
    return [p for p in missing if not _awaited(p, sources, queue) and not os.path.lexists(p)]


def _awaited(path: str, sources: set[str], queue: Queue) -> bool:
    """Whether a live row names ``path`` or a live move starts at it or at a folder above it."""
    return any(a in sources for a in _ancestors(path)) or queue.in_flight(path)
