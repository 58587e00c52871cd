"""The rescan loop: reconcile the watched folders with the books.

At start-up, every ``watch.rescan_interval`` seconds, and whenever asked (a
folder was added), it re-watches folders whose watch broke or that came back
(an unmounted drive), reconciles them, prunes the queue and purges vectors
whose deletion failed while Milvus was away.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pixgrep import scan
from pixgrep.catalog import Catalog
from pixgrep.service.folders import WatchList
from pixgrep.service.queue import WorkQueue
from pixgrep.service.reconcile import Report, reconcile
from pixgrep.service.threads import StoppableThread
from pixgrep.service.watcher import Watcher

log = logging.getLogger("pixgrep.service.rescan")

# Broken watches are healed at least this often, whatever the rescan interval.
HEAL_EVERY = 30.0
ALL = "*"


class Rescanner(StoppableThread):
    def __init__(
        self,
        db: Catalog,
        queue: WorkQueue,
        watcher: Watcher,
        watchlist: WatchList,
        *,
        flt: Callable[[], scan.FileFilter],
        interval: Callable[[], float],
        purge: Callable[[], Any],
        errors: collections.deque[dict[str, Any]],
    ) -> None:
        super().__init__("pixgrep-rescan")
        self.db = db
        self.queue = queue
        self.watcher = watcher
        self.watchlist = watchlist
        self.flt = flt
        self.interval = interval
        self.purge = purge
        self.errors = errors
        self.reports: dict[str, Report] = {}
        self._kick = threading.Event()
        self._asked: list[str] = []
        self._lock = threading.Lock()

    def kick(self, path: str | None = None) -> None:
        """Reconcile ``path`` (every folder if None) as soon as the loop is free."""
        with self._lock:
            self._asked.append(path or ALL)
        self._kick.set()

    def on_thread_stop(self) -> None:
        self._kick.set()

    def run(self) -> None:
        last_full = 0.0
        first = True
        while self.should_keep_running():
            with self._lock:
                asked, self._asked = self._asked, []
            interval = self.interval()
            full = first or ALL in asked or bool(interval and time.monotonic() - last_full >= interval)
            targets = self.watchlist.paths() if full else [p for p in asked if p != ALL]
            # Folders that were missing (unmounted) or whose watch broke: watch and reconcile them again.
            healed = self.watcher.heal(self.watchlist.folders())
            if full:
                last_full = time.monotonic()
                self.queue.prune()
                if not first:
                    self._purge()
            for root in dict.fromkeys([*targets, *healed]):
                if not self.should_keep_running():
                    return
                self._reconcile(root)
            first = False
            wait = max(0.5, interval - (time.monotonic() - last_full)) if interval else HEAL_EVERY
            self._kick.wait(min(wait, HEAL_EVERY))
            self._kick.clear()

    def _purge(self) -> None:
        # Vectors whose deletion failed while Milvus was away.
        try:
            self.purge()
        except Exception as e:
            log.warning("purging orphaned vectors failed: %s", e)

    def _reconcile(self, root: str) -> None:
        try:
            self.reports[os.path.abspath(root)] = reconcile(self.db, self.queue, root, self.flt())
        except Exception as e:
            log.exception("reconcile failed", extra={"file": root})
            self.errors.append({"time": time.time(), "path": root, "error": f"reconcile failed: {e}"})

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            p: {
                "files": r.files,
                "queued": r.queued,
                "deleted": r.deleted,
                "seconds": round(r.seconds, 3),
                "skipped": r.skipped,
            }
            for p, r in list(self.reports.items())
        }
