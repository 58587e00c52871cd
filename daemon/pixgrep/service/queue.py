"""The daemon's durable work queue: the catalog's queue table, plus a wake-up event.

One row per path (the newest event for a path wins, so bursts coalesce). Ops
(``QueueOp``): ``upsert`` (index if changed), ``force`` (re-read even if
unchanged), ``delete`` (forget a file or a whole folder) and ``move`` (``src`` ->
``path`` without new OCR; it falls back to an upsert and a delete when the books
do not know ``src`` or the file changed on the way). The states and the retry
rules are in ``pixgrep.catalog``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from pixgrep.catalog import DONE_TTL, Catalog, Item, Job, Queue, QueueOp, backoff

__all__ = ["DONE_TTL", "Item", "Job", "WorkQueue", "backoff"]

log = logging.getLogger("pixgrep.service.queue")


class WorkQueue(Queue):
    """The queue API used by the watcher, reconcile, the API and the worker."""

    def __init__(
        self,
        db: Catalog,
        *,
        max_attempts: int = 5,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[int], float] = backoff,
        host: str = "",
        lease_seconds: float = 60.0,
    ) -> None:
        super().__init__(
            db, max_attempts=max_attempts, clock=clock, backoff=backoff, host=host, lease_seconds=lease_seconds
        )
        self.db = db
        # Set on every enqueue, so the worker wakes without polling SQLite.
        self.wake = threading.Event()
        # How long an idle worker waits before looking again: on shared books (PostgreSQL) other
        # daemons enqueue and reclaim work that this process's event never hears of.
        self.poll_seconds = 5.0 if db.dialect == "sqlite" else 1.0

    def put(self, jobs: Iterable[Job], *, chunk: int = 5000) -> int:
        n = super().put(jobs, chunk=chunk)
        if n:
            self.wake.set()
        return n

    def upsert(self, path: str, *, force: bool = False, not_before: float = 0.0) -> None:
        self.put([Job(path, QueueOp.FORCE if force else QueueOp.UPSERT, not_before=not_before)])

    def delete(self, path: str, *, not_before: float = 0.0) -> None:
        self.put([Job(path, QueueOp.DELETE, not_before=not_before)])

    def move(self, src: str, dst: str) -> None:
        self.put([Job(dst, QueueOp.MOVE, src)])

    def recover(self) -> int:
        n = super().recover()
        if n:
            log.warning("returned %d claimed queue items to pending after an unclean stop", n)
        return n

    def requeue_failed(self) -> int:
        n = super().requeue_failed()
        if n:
            self.wake.set()
        return n
