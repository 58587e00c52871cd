"""A vector-store outage as the worker sees it: since when, and when to probe again.

An unreachable store is not a per-file failure (issue 9, defect 2): the worker stops
claiming work, puts back what it held without counting an attempt, and probes the
store with exponential backoff capped at a few seconds, so work resumes within
seconds of the store's return however long the outage lasted.

A full disk under the state folder is the same kind of pause (``DiskOutage``): the probe
checks for room and writes what was held back; an outage that begins again soon after
one ended keeps backing off instead of starting over, so a disk that keeps refilling
is not retried (nor its OCR redone) twice a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pixgrep.errors import DiskFull, StoreUnavailable

log = logging.getLogger("pixgrep.service.outage")

FIRST_PROBE = 0.5
MAX_PROBE_INTERVAL = 5.0


class Outage:
    """Tracks one outage at a time; thread-safe for the status reader."""

    # What a failed probe raises, and the words of the log and of the status.
    failure: tuple[type[Exception], ...] = (StoreUnavailable,)
    began = "vector store unavailable, pausing the queue: %s"
    ended = "vector store is back after %.0fs; resuming the queue"
    state = "store unavailable since {stamp}: {error}"

    def __init__(
        self,
        probe: Callable[[], object],
        *,
        first: float = FIRST_PROBE,
        cap: float = MAX_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._probe = probe
        self.first = first
        self.cap = cap
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.since: float | None = None  # wall time the outage began
        self.error = ""
        self.probes = 0
        self.outages = 0
        self._delay = first
        self._next = 0.0
        self._ended = float("-inf")  # clock time the last outage ended

    @property
    def down(self) -> bool:
        with self._lock:
            return self.since is not None

    def begin(self, error: str) -> None:
        """The store failed: pause (a second failure during the same outage changes nothing but the error)."""
        with self._lock:
            self.error = error
            if self.since is not None:
                return
            self.since = self._wall()
            self.outages += 1
            # Down again right after a probe said it was back: keep backing off rather than start over.
            again = self._clock() - self._ended < 2 * self.cap
            self._delay = min(self.cap, self._delay * 2) if again else self.first
            self._next = self._clock() + self._delay
        log.warning(self.began, error)

    def wait_seconds(self) -> float:
        """Seconds until the next probe is due (0 when due now or not down)."""
        with self._lock:
            return 0.0 if self.since is None else max(0.0, self._next - self._clock())

    def probe(self) -> bool:
        """Probe the store if a probe is due; True once it answers (the outage is over)."""
        with self._lock:
            if self.since is None:
                return True
            if self._clock() < self._next:
                return False
            self.probes += 1
        try:
            self._probe()
        except self.failure as e:
            with self._lock:
                self.error = str(e)
                self._delay = min(self.cap, self._delay * 2)
                self._next = self._clock() + self._delay
            return False
        with self._lock:
            since, self.since = self.since, None
            self._ended = self._clock()
        log.warning(self.ended, self._wall() - (since or self._wall()))
        return True

    def describe(self) -> str | None:
        """ "store unavailable since <UTC time>: <error>", or None when the store is up."""
        with self._lock:
            if self.since is None:
                return None
            stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
            return self.state.format(stamp=stamp, error=self.error)


class DiskOutage(Outage):
    """No space left under the state folder: the queue pauses until there is room (issue 9, defect 6)."""

    failure = (DiskFull,)
    began = "%s; pausing the queue until there is room (nothing is marked failed for it)"
    ended = "there is room on the disk again after %.0fs; resuming the queue"
    state = "{error}; queue paused since {stamp}"

    def __init__(self, probe: Callable[[], object], **kw: Callable[[], float]) -> None:
        # A disk is freed by a person, not in seconds: probe less often than a store.
        super().__init__(probe, first=1.0, cap=10.0, **kw)
