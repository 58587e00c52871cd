"""The durable work queue in SQLite: pending -> processing -> done | failed.

One row per path (the newest event for a path wins, so bursts coalesce).
Ops: ``upsert`` (index if changed), ``force`` (re-read even if unchanged),
``delete`` (forget a file or a whole folder) and ``move`` (``src`` -> ``path``
without new OCR; it falls back to an upsert and a delete when the books do
not know ``src`` or the file changed on the way).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pixgrep.db import Database

log = logging.getLogger("pixgrep.service.queue")

OPS = ("upsert", "force", "delete", "move")
# Keep finished rows this long (they show recent activity), then prune.
DONE_TTL = 600.0


@dataclass(frozen=True)
class Job:
    """What to enqueue: ``path`` with ``op``; ``src`` for moves."""

    path: str
    op: str = "upsert"
    src: str | None = None
    not_before: float = 0.0


@dataclass(frozen=True)
class Item:
    """A claimed row."""

    id: int
    path: str
    op: str
    src: str | None
    attempts: int
    enqueued_at: float


def backoff(attempts: int, base: float = 2.0, cap: float = 600.0) -> float:
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


# A pending move absorbs later upserts and deletes of its destination: the move
# already reconciles both paths. A pending force absorbs an upsert.
_UPSERT_SQL = """
INSERT INTO queue (path, op, src, state, attempts, not_before, error, enqueued_at, claimed_at)
VALUES (?, ?, ?, 'pending', 0, ?, NULL, ?, NULL)
ON CONFLICT(path) DO UPDATE SET
  op = CASE
    WHEN queue.state IN ('pending', 'processing') AND queue.op = 'move' AND excluded.op IN ('upsert', 'delete') THEN 'move'
    WHEN queue.state IN ('pending', 'processing') AND queue.op = 'force' AND excluded.op = 'upsert' THEN 'force'
    ELSE excluded.op END,
  src = CASE
    WHEN queue.state IN ('pending', 'processing') AND queue.op = 'move' AND excluded.op IN ('upsert', 'delete') THEN queue.src
    ELSE excluded.src END,
  state = 'pending',
  attempts = 0,
  not_before = excluded.not_before,
  error = NULL,
  enqueued_at = excluded.enqueued_at,
  claimed_at = NULL
"""


class WorkQueue:
    """The queue API used by the watcher, reconcile, the API and the worker."""

    def __init__(self, db: Database, *, max_attempts: int = 5) -> None:
        self.db = db
        self.max_attempts = max_attempts
        # Set on every enqueue, so the worker wakes without polling SQLite.
        self.wake = threading.Event()

    def _exec(self, sql: str, params: Any = ()) -> Any:
        with self.db.engine.begin() as conn:
            return conn.exec_driver_sql(sql, params)

    # Producers -------------------------------------------------------------
    def put(self, jobs: Iterable[Job], *, chunk: int = 5000) -> int:
        now = time.time()
        rows = [
            (os.fsencode(j.path), j.op, os.fsencode(j.src) if j.src else None, j.not_before or now, now) for j in jobs
        ]
        for r in rows:
            if r[1] not in OPS:
                raise ValueError(f"unknown queue op {r[1]!r}")
        for i in range(0, len(rows), chunk):
            with self.db.engine.begin() as conn:
                conn.exec_driver_sql(_UPSERT_SQL, rows[i : i + chunk])
        if rows:
            self.wake.set()
        return len(rows)

    def upsert(self, path: str, *, force: bool = False, not_before: float = 0.0) -> None:
        self.put([Job(path, "force" if force else "upsert", not_before=not_before)])

    def delete(self, path: str, *, not_before: float = 0.0) -> None:
        self.put([Job(path, "delete", not_before=not_before)])

    def move(self, src: str, dst: str) -> None:
        self.put([Job(dst, "move", src)])

    # The worker ------------------------------------------------------------
    def recover(self) -> int:
        """Return rows a crashed run had claimed to pending; give up on repeat offenders."""
        now = time.time()
        with self.db.engine.begin() as conn:
            n = conn.exec_driver_sql(
                "UPDATE queue SET state = 'pending', attempts = attempts + 1, claimed_at = NULL, not_before = ? "
                "WHERE state = 'processing'",
                (now,),
            ).rowcount
            # A file that was in flight during several crashes may be what crashes us.
            conn.exec_driver_sql(
                "UPDATE queue SET state = 'failed', error = ? WHERE state = 'pending' AND attempts >= ?",
                (f"was being processed during {self.max_attempts} crashes; giving up", self.max_attempts),
            )
        if n:
            log.warning("returned %d claimed queue items to pending after an unclean stop", n)
        return int(n or 0)

    def claim(self, limit: int) -> list[Item]:
        now = time.time()
        with self.db.engine.begin() as conn:
            rows = conn.exec_driver_sql(
                "UPDATE queue SET state = 'processing', claimed_at = ? WHERE id IN ("
                " SELECT id FROM queue WHERE state = 'pending' AND not_before <= ? ORDER BY not_before, id LIMIT ?"
                ") RETURNING id, path, op, src, attempts, enqueued_at",
                (now, now, limit),
            ).fetchall()
        items = [
            Item(r[0], os.fsdecode(r[1]), r[2], os.fsdecode(r[3]) if r[3] is not None else None, r[4], r[5])
            for r in rows
        ]
        items.sort(key=lambda it: it.id)
        return items

    def done(self, items: Sequence[Item], *, note: dict[int, str] | None = None) -> None:
        """Mark items done unless a newer event re-queued them meanwhile."""
        if not items:
            return
        now = time.time()
        note = note or {}
        with self.db.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE queue SET state = 'done', error = ?, claimed_at = ? WHERE id = ? AND state = 'processing'",
                [(note.get(it.id), now, it.id) for it in items],
            )

    def fail(self, item: Item, error: str) -> None:
        self._exec(
            "UPDATE queue SET state = 'failed', error = ?, attempts = attempts + 1 WHERE id = ? AND state = 'processing'",
            (error, item.id),
        )

    def retry(self, item: Item, error: str) -> bool:
        """Back off and try again later; False (and failed) once attempts run out."""
        attempts = item.attempts + 1
        if attempts >= self.max_attempts:
            self.fail(item, f"gave up after {attempts} attempts: {error}")
            return False
        self._exec(
            "UPDATE queue SET state = 'pending', error = ?, attempts = ?, not_before = ?, claimed_at = NULL "
            "WHERE id = ? AND state = 'processing'",
            (error, attempts, time.time() + backoff(attempts), item.id),
        )
        return True

    def defer(self, item: Item, until: float) -> None:
        """Put back without counting an attempt (e.g. the file is still being written)."""
        self._exec(
            "UPDATE queue SET state = 'pending', not_before = ?, claimed_at = NULL WHERE id = ? AND state = 'processing'",
            (until, item.id),
        )

    def release(self, items: Sequence[Item]) -> None:
        """Return unfinished claims at shutdown."""
        if items:
            with self.db.engine.begin() as conn:
                conn.exec_driver_sql(
                    "UPDATE queue SET state = 'pending', claimed_at = NULL WHERE id = ? AND state = 'processing'",
                    [(it.id,) for it in items],
                )

    # Reading ---------------------------------------------------------------
    def next_due(self) -> float | None:
        """The earliest not_before among pending rows, or None if none are pending."""
        with self.db.engine.connect() as conn:
            v = conn.exec_driver_sql("SELECT MIN(not_before) FROM queue WHERE state = 'pending'").scalar()
        return None if v is None else float(v)

    def depth(self) -> dict[str, int]:
        with self.db.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT state, COUNT(*) FROM queue GROUP BY state").fetchall()
        out = {"pending": 0, "processing": 0, "done": 0, "failed": 0}
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def failures(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT path, op, error, attempts FROM queue WHERE state = 'failed' ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"path": os.fsdecode(r[0]), "op": r[1], "error": r[2], "attempts": r[3]} for r in rows]

    def requeue_failed(self) -> int:
        now = time.time()
        n = self._exec(
            "UPDATE queue SET state = 'pending', attempts = 0, error = NULL, not_before = ? WHERE state = 'failed'",
            (now,),
        ).rowcount
        if n:
            self.wake.set()
        return int(n or 0)

    def prune(self, older_than: float = DONE_TTL) -> int:
        return int(
            self._exec(
                "DELETE FROM queue WHERE state = 'done' AND claimed_at < ?", (time.time() - older_than,)
            ).rowcount
            or 0
        )

    def rows(self) -> list[tuple[str, str, str, str | None]]:
        """(path, op, state, error) of every row, for tests and debugging."""
        with self.db.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT path, op, state, error FROM queue ORDER BY id").fetchall()
        return [(os.fsdecode(r[0]), r[1], r[2], r[3]) for r in rows]
