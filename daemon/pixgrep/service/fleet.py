"""Several daemons on one set of books: who is alive, and what happens to the work of one that died.

Each daemon has a row in ``daemons`` (host, pid, last heartbeat, rates). ``pixgrep-heartbeat`` beats every
``daemon.heartbeat_seconds``: it refreshes that row, extends the leases on the queue rows and contents this
daemon holds, and returns to pending any claim whose lease ran out (its daemon was killed, or lost its
host). A daemon that stops cleanly marks its row stopped and gives its content leases up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pixgrep.catalog import Catalog, Queue
from pixgrep.service.threads import StoppableThread

log = logging.getLogger("pixgrep.service.fleet")


def describe(daemons: list[dict[str, Any]], *, lease_seconds: float, now: float | None = None) -> list[dict[str, Any]]:
    """Daemon rows for `pixgrep status`: ``alive`` unless stopped or silent longer than a lease."""
    now = time.time() if now is None else now
    out = []
    for d in daemons:
        silent = now - d["last_beat"]
        alive = d["state"] == "running" and silent < lease_seconds
        out.append({**d, "alive": alive, "seconds_since_beat": round(silent, 1),
                    "state": d["state"] if alive or d["state"] != "running" else "lost"})  # fmt: skip
    return out


class Heartbeat(StoppableThread):
    """The ``pixgrep-heartbeat`` thread; the daemon's id is its queue's owner."""

    def __init__(
        self,
        catalog: Catalog,
        queue: Queue,
        *,
        version: str,
        interval: float,
        stats: Callable[[], dict[str, Any]],
        on_reclaim: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__("pixgrep-heartbeat")
        self.catalog = catalog
        self.queue = queue
        self.version = version
        self.interval = interval
        self.stats = stats
        self.on_reclaim = on_reclaim
        self.error: str | None = None

    def beat(self, state: str = "running") -> None:
        now = time.time()
        q = self.queue
        self.catalog.beat(q.owner, host=q.host, pid=os.getpid(), version=self.version, state=state,
                          stats=self.stats(), now=now)  # fmt: skip
        if state != "running":
            self.catalog.release_content_leases(q.owner, now=now)
            return
        q.extend(now + q.lease_seconds)
        self.catalog.extend_content_leases(q.owner, now + q.lease_seconds)
        n = q.reclaim_expired(now)
        if n:
            log.warning("took back %d queue items whose daemon stopped beating", n)
            self.on_reclaim()

    def on_thread_start(self) -> None:
        self.beat()

    def run(self) -> None:
        while not self.sleep(self.interval):
            try:
                self.beat()
                self.error = None
            except Exception as e:
                # The books may be away for a while (PostgreSQL restarting): keep beating.
                error = f"heartbeat failed: {str(e).splitlines()[0][:200]}"
                if error != self.error:  # once per cause, not every beat of a long outage (a full disk)
                    log.warning("%s", error)
                self.error = error

    def stop(self, timeout: float | None = 10.0) -> bool:
        ok = super().stop(timeout)
        try:
            self.beat("stopped")
        except Exception as e:
            log.warning("could not mark this daemon stopped: %s", e)
        return ok
