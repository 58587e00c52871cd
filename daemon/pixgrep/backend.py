"""What the CLI and the daemon's API call: the ``Backend`` Protocol, and the in-process one.

Three implementations stand behind it:

* ``pixgrep_cli.remote.RemoteBackend``: the CLI's standard-library client for a
  running daemon's Unix socket;
* :class:`LocalBackend`: no daemon runs, so the CLI opens the index itself;
* ``pixgrep.service.backend.DaemonBackend``: what the daemon's API serves, over
  the daemon's own index, queue, worker and watcher.

Every method may block. Results are JSON-ready dicts, the same whichever
backend answers, so the CLI prints them one way. The status and failure
queries live in ``pixgrep.app`` and are shared by the local and daemon ones.

This module imports only the standard library at import time: the CLI picks a
backend before it knows whether it needs the heavy stack.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pixgrep.app import Index
    from pixgrep.request import SearchRequest
    from pixgrep.settings import Settings


class Backend(Protocol):
    """The operations of pixgrep; raise ``pixgrep.errors.PixgrepError`` with a one-line message."""

    #: True when a running daemon answers: watch/unwatch take effect now and index only queues.
    live: bool

    def health(self) -> dict[str, Any]:
        """``{"ok": True, "state": ...}``; the daemon adds its pid and version."""
        ...

    def status(self, *, failed: bool) -> dict[str, Any]:
        """Counts, roots, watched folders, the daemon's state; ``failures`` too when ``failed``."""
        ...

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        """Ranked results as ``Result.to_json()`` dicts for ``request`` (checked where it was made)."""
        ...

    def similar(self, path: str, *, limit: int | None) -> list[dict[str, Any]]:
        """Images whose text is like that of the image at ``path`` (indexed or OCR'd now), as ``search`` returns them."""
        ...

    def index(
        self,
        paths: list[str],
        *,
        force: bool,
        on_total: Callable[[int], None] | None = None,
        on_outcome: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        """Index files and folders: ``{"queued": n}`` from a daemon, else the ``IndexReport`` as a dict.

        ``on_total``/``on_outcome`` report progress when the work happens in this process.
        """
        ...

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        """Re-run stages (``ReindexReport`` fields) and/or retry failures (``queued``: how many)."""
        ...

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        """Watch a folder now: ``{"path", "mode", "watched"}``; ``mode`` is None when nothing watches yet."""
        ...

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        """Stop watching: ``{"path", "was_watched", "forgotten", "kept", "watched"}``.

        With ``forget``, the images under ``path`` go from the index except those under a folder that stays
        watched (``kept``); raises ``pixgrep.forget.ForgetRefused`` (nothing removed) when ``path`` lies inside one.
        """
        ...

    def close(self) -> None: ...


class LocalBackend:
    """No daemon: the index opened in this process, lazily (status needs only the books)."""

    live = False

    def __init__(self, settings: Settings, *, ocr_workers: int | None = None) -> None:
        self.settings = settings
        self._ocr_workers = ocr_workers
        self._index: Index | None = None

    def _open(self, *, ocr_workers: int | None = None, search_only: bool = False) -> Index:
        if self._index is None:
            from pixgrep.app import Index

            workers = ocr_workers if ocr_workers is not None else self._ocr_workers
            self._index = Index(self.settings, ocr_workers=workers, search_only=search_only)
        return self._index

    def _need_books(self) -> None:
        if not self.settings.books_exist:
            from pixgrep.errors import NoIndex

            raise NoIndex(f"no index at {self.settings.home} yet: run `pixgrep index DIR` or `pixgrep watch DIR` first")

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return {"ok": True, "state": "local"}

    def status(self, *, failed: bool) -> dict[str, Any]:
        s = self.settings
        if s.books_exist:
            from pixgrep.app import open_books, status

            db = open_books(s)
            try:
                info = status(db, s, failed=failed)
            finally:
                db.close()
        else:
            info = {"counts": {}, "roots": [], "home": str(s.home)}
        info["daemon"] = {"running": False}
        info["watched"] = [str(f.path) for f in s.watch.folders]
        return info

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        from pixgrep.results import search_json

        self._need_books()
        # Searching never OCRs: no OCR processes; and it may read the local index without opening Milvus Lite.
        return search_json(self._open(ocr_workers=0, search_only=True), request)

    def similar(self, path: str, *, limit: int | None) -> list[dict[str, Any]]:
        from pixgrep.results import similar_to_file

        self._need_books()
        return similar_to_file(self._open(ocr_workers=0), path, limit=limit or self.settings.search.limit)

    def index(
        self,
        paths: list[str],
        *,
        force: bool,
        on_total: Callable[[int], None] | None = None,
        on_outcome: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        from pixgrep.app import index_paths

        report = index_paths(self._open(), paths, force=force, on_total=on_total, on_outcome=on_outcome)
        return dataclasses.asdict(report)

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        from pixgrep.app import reindex, retry_failed

        index = self._open()
        out: dict[str, Any] = {}
        if stale or embeddings or all:
            out.update(dataclasses.asdict(reindex(index, stale=stale, embeddings=embeddings, everything=all)))
        if failed or not (stale or embeddings or all):
            paths = retry_failed(index)
            index.pipeline.process(paths, force=True)
            index.pipeline.flush()
            out["queued"] = len(paths)
        return out

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        # Nothing watches without a daemon; the config file (the CLI's part) is what lasts.
        return {"path": os.path.abspath(path), "mode": None, "watched": []}

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        from pixgrep.forget import forget as forget_tree
        from pixgrep.forget import plan

        path = os.path.abspath(path)
        forgotten, kept = 0, []
        if forget:
            # The config's folders, less ``path``: those stay watched (raises ForgetRefused inside one).
            what = plan(path, [str(f.path) for f in self.settings.watch.folders])
            kept = what.keep
            index = self._open(ocr_workers=0)
            forgotten = forget_tree(index.pipeline, what)
            index.pipeline.store.flush()
        return {"path": path, "was_watched": False, "forgotten": forgotten, "kept": kept, "watched": []}
