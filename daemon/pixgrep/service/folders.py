"""The daemon's watch list: the folders it watches now and the roots the books know.

One object that the supervisor (config reload), the API (watch, unwatch), the
worker (which root a file belongs to) and the rescan loop (what to reconcile)
share, so that the list has one owner and one lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

from pixgrep.catalog import Catalog
from pixgrep.service.watcher import Folder


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


class WatchList:
    def __init__(self, db: Catalog, folders: Iterable[Folder] = ()) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._folders: list[Folder] = list(folders)
        self._roots: list[str] | None = None

    def folders(self) -> list[Folder]:
        with self._lock:
            return list(self._folders)

    def paths(self) -> list[str]:
        return [_abs(f.path) for f in self.folders()]

    def replace(self, folders: Sequence[Folder]) -> None:
        """The config was reloaded: its folders are the list now."""
        with self._lock:
            self._folders = list(folders)
            self._roots = None

    def add(self, folder: Folder) -> None:
        path = _abs(folder.path)
        with self._lock:
            self._folders = [f for f in self._folders if _abs(f.path) != path] + [Folder(path, folder.polling)]

    def remove(self, path: str) -> bool:
        """Stop listing ``path``; True if it was listed."""
        path = _abs(path)
        with self._lock:
            was = any(_abs(f.path) == path for f in self._folders)
            self._folders = [f for f in self._folders if _abs(f.path) != path]
        return was

    # Roots: every folder ever indexed or watched, kept in the books -----------
    def remember(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        self.db.add_roots(_abs(p) for p in paths)
        with self._lock:
            self._roots = None

    def forget(self, path: str) -> None:
        self.db.remove_root(_abs(path))
        with self._lock:
            self._roots = None

    def roots(self) -> list[str]:
        """Known roots and watched folders, cached until one changes."""
        with self._lock:
            cached = self._roots
        if cached is not None:
            return cached
        known = self.db.roots()
        roots = sorted({*known, *self.paths()})
        with self._lock:
            self._roots = roots
        return roots
