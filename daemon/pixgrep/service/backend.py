"""What the daemon's API serves: the ``Backend`` operations over the running daemon's parts.

Searches read the daemon's open index; index, watch and reindex go through the
durable queue and the worker thread, so that nothing swaps the store under a
batch. Status and the failure query are ``pixgrep.app``'s, shared with the CLI's
``LocalBackend``; the daemon adds its own section.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pixgrep.app import Index, reindex, retry_failed
from pixgrep.app import status as books_status
from pixgrep.catalog import QueueOp
from pixgrep.forget import ForgetRefused
from pixgrep.forget import forget as forget_tree
from pixgrep.forget import plan as forget_plan
from pixgrep.results import search_json, similar_to_file
from pixgrep.service.api import ApiError
from pixgrep.service.queue import Job
from pixgrep.service.reconcile import reconcile
from pixgrep.service.watcher import Folder

if TYPE_CHECKING:
    from pixgrep.request import SearchRequest
    from pixgrep.service.supervisor import Supervisor


def version() -> str:
    try:
        return metadata.version("pixgrep")
    except metadata.PackageNotFoundError:
        return "?"


class DaemonBackend:
    """The API's backend; every method may block (the API runs them in its thread pool)."""

    live = True

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def _need_ready(self) -> Index:
        sup = self.sup
        if not sup.ready.is_set() or sup.index is None:
            raise ApiError(503, f"the daemon is {sup.state}; try again in a moment")
        return sup.index

    def close(self) -> None:
        pass

    def health(self) -> dict[str, Any]:
        gallery = self.sup.gallery
        # The gallery's URL carries its token: the socket (0600, 0700 folder) is only ours.
        ui = gallery.url if gallery is not None and gallery.alive else None
        return {"ok": True, "pid": os.getpid(), "state": self.sup.state, "version": version(), "ui": ui}

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        return search_json(self._need_ready(), request)

    def similar(self, path: str, *, limit: int | None) -> list[dict[str, Any]]:
        index = self._need_ready()
        return similar_to_file(index, path, limit=limit or self.sup.settings.search.limit)

    def status(self, *, failed: bool) -> dict[str, Any]:
        sup = self.sup
        if sup.index is None or sup.queue is None or sup.watchlist is None:
            raise ApiError(503, f"the daemon is {sup.state}")
        info = books_status(sup.index.db, sup.settings, failed=failed)
        info["watched"] = sup.watchlist.paths()
        info["daemon"] = self._daemon_info()
        if failed:
            # A path can fail in the books and in the queue, and in several queue rows: list each once.
            out = info.setdefault("failures", [])
            listed = {f["path"] for f in out}
            for f in sup.queue.failures():
                if f["path"] not in listed:
                    listed.add(f["path"])
                    out.append({"path": f["path"], "error": f["error"] or "failed", "attempts": f["attempts"]})
        return info

    def _state(self) -> str:
        """The daemon's state, or why its queue is paused: "store unavailable since T: why" while the worker
        waits for the vector store, "no space left on P ...; queue paused since T" while the disk is full."""
        sup = self.sup
        w = sup.worker
        paused = (w.outage.describe() if w else None) or (sup.queue.full.describe() if sup.queue else None)
        return paused or sup.state

    def _daemon_info(self) -> dict[str, Any]:
        sup = self.sup
        assert sup.queue is not None
        w, watcher, rescan = sup.worker, sup.watcher, sup.rescanner
        errors = sorted([*(w.errors if w else []), *sup.errors], key=lambda e: e["time"])[-10:]
        return {
            "running": True,
            "pid": os.getpid(),
            "state": self._state(),
            "version": version(),
            "started_at": sup.started_at,
            "uptime_seconds": round(time.time() - sup.started_at, 1),
            "socket": str(sup.settings.socket_path),
            "images_per_second": w.images_per_second() if w else None,
            "indexed_since_start": w.stats.indexed if w else 0,
            "ocr_runs": sup.index.pipeline.ocr_pool.runs if sup.index else 0,
            "queue": sup.queue.depth(),
            "waiting_to_settle": watcher.gate.waiting() if watcher else 0,
            "working_on": list(w.current) if w else [],
            "watchers": watcher.folders() if watcher else [],
            "reconcile": rescan.summary() if rescan else {},
            "last_errors": [f"{e['path']}: {e['error']}" for e in errors],
            "host": sup.queue.host,
            "id": sup.queue.owner,
        }

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        self._need_ready()
        sup = self.sup
        assert sup.watcher is not None and sup.watchlist is not None and sup.rescanner is not None
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(path):
            raise ApiError(400, f"{path} is not a folder")
        # `pixgrep watch --name` wrote the folder's name into the config: book it under the name from now.
        sup.refresh_roots()
        sup.watchlist.add(Folder(path, polling))
        mode = sup.watcher.add(Folder(path, polling))
        sup.watchlist.remember([path])
        sup.rescanner.kick(path)
        return {"path": path, "mode": mode, "watched": sup.watchlist.paths()}

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        index = self._need_ready()
        sup = self.sup
        assert sup.watcher is not None and sup.watchlist is not None
        path = os.path.abspath(os.path.expanduser(path))
        kept: list[str] = []
        if forget:
            try:  # before anything changes: a refused forget leaves the watch in place too
                what = forget_plan(path, sup.watchlist.paths())
            except ForgetRefused as e:
                raise ApiError(409, str(e)) from None
            kept = what.keep
        was = sup.watchlist.remove(path)
        sup.watcher.remove(path)
        removed = 0
        if forget:
            removed = self._in_worker(lambda: forget_tree(index.pipeline, what))
            sup.watchlist.forget(path)
        return {
            "path": path,
            "was_watched": was,
            "forgotten": removed,
            "kept": kept,
            "watched": sup.watchlist.paths(),
        }

    def index(
        self,
        paths: list[str],
        *,
        force: bool,
        on_total: Callable[[int], None] | None = None,
        on_outcome: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        index = self._need_ready()
        sup = self.sup
        assert sup.queue is not None and sup.watchlist is not None
        n = 0
        flt = sup.file_filter()
        unknown = [p for p in paths if not os.path.lexists(p) and not index.db.knows(os.path.abspath(p))]
        if unknown:
            # Nothing there and nothing to forget: a typo, refused before anything is queued.
            raise ApiError(400, f"no such file or folder: {', '.join(unknown)}")
        for p in paths:
            p = os.path.abspath(os.path.expanduser(p))
            if os.path.isdir(p):
                sup.watchlist.remember([p])
                r = reconcile(index.db, sup.queue, p, flt, force=force)
                n += r.queued + r.deleted
            elif os.path.exists(p):
                sup.queue.upsert(p, force=force)
                n += 1
            else:
                # Gone from disk: forget it (a file or a whole folder).
                sup.queue.delete(p)
                n += 1
        return {"queued": n}

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        index = self._need_ready()
        sup = self.sup
        assert sup.queue is not None
        out: dict[str, Any] = {}
        if stale or embeddings or all:
            # In the worker thread, between batches: a rebuild swaps the store under it.
            report = self._in_worker(lambda: reindex(index, stale=stale, embeddings=embeddings, everything=all))
            out.update(dataclasses.asdict(report))
        if failed or not (stale or embeddings or all):
            paths = retry_failed(index)
            n = sup.queue.requeue_failed()
            n += sup.queue.put(Job(p, QueueOp.FORCE) for p in paths)
            out["queued"] = n
        return out

    def _in_worker(self, fn: Callable[[], Any]) -> Any:
        assert self.sup.worker is not None
        return self.sup.worker.call(fn)
