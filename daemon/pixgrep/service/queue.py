"""The daemon's durable work queue: the catalog's queue table, plus a wake-up event.

One row per path (the newest event for a path wins, so bursts coalesce). Ops
(``QueueOp``): ``upsert`` (index if changed), ``force`` (re-read even if
unchanged), ``delete`` (forget a file or a whole folder) and ``move`` (``src`` ->
``path`` without new OCR; it falls back to an upsert and a delete when the books
do not know ``src`` or the file changed on the way). The states and the retry
rules are in ``pixgrep.catalog``.

A full disk under the books (issue 9) is a pause, not a failure: an enqueue that cannot be
written is held in memory and written with the next one that can; the worker's writes raise
``DiskFull`` and the worker waits on ``full`` (an outage of the disk) until there is room.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from pixgrep import diskfull
from pixgrep.catalog import DONE_TTL, Catalog, Item, Job, Queue, QueueOp, backoff
from pixgrep.errors import DiskFull
from pixgrep.service.outage import DiskOutage

__all__ = ["DONE_TTL", "Item", "Job", "WorkQueue", "backoff"]

log = logging.getLogger("pixgrep.service.queue")

T = TypeVar("T")

# Enqueues held in memory while the disk is full; past this the rescan finds the rest (it reconciles
# every watched folder with the disk), so a long outage under a burst cannot grow the daemon unbounded.
MAX_HELD = 100_000


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
        self.home = db.path.parent if db.path is not None else Path.home()
        self._held: list[Job] = []
        self._held_lock = threading.Lock()
        self._dropped = 0
        self.full = DiskOutage(self._probe_room)

    def put(self, jobs: Iterable[Job], *, chunk: int = 5000) -> int:
        new = list(jobs)
        with self._held_lock:
            # Held ones first: the newest event for a path wins.
            todo, self._held = self._held + new, []
            try:
                n = super().put(todo, chunk=chunk)
            except Exception as e:
                full = self.disk_full(e)
                if full is None:
                    self._held = todo[: len(todo) - len(new)]
                    raise
                self._hold(todo)
                return 0
        if n:
            self.wake.set()
        return n

    def _hold(self, jobs: list[Job]) -> None:
        """Keep what could not be written (lock held); beyond MAX_HELD, leave the rest to the rescan."""
        self._held = jobs[-MAX_HELD:]
        dropped = len(jobs) - len(self._held)
        if dropped:
            self._dropped += dropped
            log.warning("disk full: %d queued changes dropped; the next rescan finds them", dropped)

    @property
    def held(self) -> int:
        """Enqueues waiting in memory for room on the disk."""
        with self._held_lock:
            return len(self._held)

    def disk_full(self, e: BaseException) -> DiskFull | None:
        """The DiskFull behind ``e`` (the queue is paused from now), or None when ``e`` is something else."""
        full = diskfull.classify(e, self.home)
        if full is not None:
            self.full.begin(str(full))
        return full

    def _probe_room(self) -> None:
        """The disk outage's probe: room on the file system, and the held enqueues written."""
        if diskfull.no_room(self.home):
            raise DiskFull(str(self.home), errno.ENOSPC)
        self.put([])  # writes what is held, or holds it again
        if self.held:
            raise DiskFull(str(self.home), errno.ENOSPC)

    def _write(self, fn: Callable[[], T]) -> T:
        """A write of the worker's: a full disk raises DiskFull (and pauses the queue)."""
        try:
            return fn()
        except Exception as e:
            full = self.disk_full(e)
            if full is None:
                raise
            raise full from e

    def claim(self, limit: int) -> list[Item]:
        return self._write(lambda: Queue.claim(self, limit))

    def done(self, items: Sequence[Item], *, note: dict[int, str] | None = None) -> None:
        self._write(lambda: Queue.done(self, items, note=note))

    def retry(self, item: Item, error: str) -> bool:
        return self._write(lambda: Queue.retry(self, item, error))

    def defer(self, item: Item, until: float) -> None:
        self._write(lambda: Queue.defer(self, item, until))

    def release(self, items: Sequence[Item]) -> None:
        self._write(lambda: Queue.release(self, items))

    def prune(self, older_than: float = DONE_TTL) -> int:
        # Housekeeping: on a full disk it waits for the next round.
        try:
            return Queue.prune(self, older_than)
        except Exception as e:
            if self.disk_full(e) is None:
                raise
            return 0

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
