"""Several daemons on one set of books: who is alive, and what happens to the work of one that died.

Each daemon has a row in ``daemons`` (host, pid, last heartbeat, rates). ``pixgrep-heartbeat`` beats every
``daemon.heartbeat_seconds``: it refreshes that row, extends the leases on the queue rows and contents this
daemon holds, and returns to pending any row whose lease ran out (its daemon was killed, or lost its
host). A daemon that stops cleanly marks its row stopped and releases its claims.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from pixgrep.service.threads import StoppableThread

log = logging.getLogger("pixgrep.service.fleet")


def daemon_id(host: str) -> str:
    """``host:pid:start``: unique per process, even when the host reuses a pid."""
    return f"{host}:{os.getpid()}:{int(time.time() * 1000)}"


def host_name(configured: str) -> str:
    return configured or socket.gethostname()


class Books(Protocol):
    """What the heartbeat needs from the catalog."""

    def beat(self, daemon: str, *, host: str, pid: int, version: str, state: str, stats: dict[str, Any]) -> None:
        """Insert or refresh this daemon's row."""
        ...

    def extend_leases(self, daemon: str, until: float) -> None:
        """Push the lease of every queue row and content this daemon holds to ``until``."""
        ...

    def reclaim_expired(self, now: float) -> int:
        """Return work whose lease ran out to pending; how many queue rows."""
        ...


class Heartbeat(StoppableThread):
    """The ``pixgrep-heartbeat`` thread."""

    def __init__(
        self,
        books: Books,
        *,
        daemon: str,
        host: str,
        version: str,
        interval: float,
        lease_seconds: float,
        stats: Callable[[], dict[str, Any]],
        on_reclaim: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__("pixgrep-heartbeat")
        self.books = books
        self.daemon = daemon
        self.host = host
        self.version = version
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.stats = stats
        self.on_reclaim = on_reclaim
        self.error: str | None = None

    def beat(self, state: str = "running") -> None:
        now = time.time()
        self.books.beat(self.daemon, host=self.host, pid=os.getpid(), version=self.version, state=state,
                        stats=self.stats())  # fmt: skip
        if state == "running":
            self.books.extend_leases(self.daemon, now + self.lease_seconds)
            if self.books.reclaim_expired(now):
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
                self.error = f"heartbeat failed: {str(e).splitlines()[0][:200]}"
                log.warning("%s", self.error)

    def stop(self, timeout: float | None = 10.0) -> bool:
        ok = super().stop(timeout)
        try:
            self.beat("stopped")
        except Exception as e:
            log.warning("could not mark this daemon stopped: %s", e)
        return ok
