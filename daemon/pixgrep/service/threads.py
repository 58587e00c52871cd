"""One lifecycle for every long-running thread of the daemon.

The worker, the watcher's stability gate, the rescan loop and the API server
each run on a :class:`StoppableThread` (modelled on watchdog's
``utils.BaseThread``): ``start()`` runs :meth:`StoppableThread.on_thread_start`
and then the thread; ``stop(timeout)`` sets the stop event, calls
:meth:`StoppableThread.on_thread_stop` (to wake whatever the thread waits on)
and joins, returning False if the thread did not end in time. An exception
that escapes :meth:`StoppableThread.run` is kept in ``exception`` and logged;
the supervisor sees the dead thread (``alive`` is False while ``stopping`` is
not) and exits non-zero so that the service manager restarts the daemon.

It wraps a ``threading.Thread`` instead of subclassing it: the subclasses have
methods of their own (``_delete``, ``_stop``...) that would silently override
``Thread``'s private ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("pixgrep.service")


class StoppableThread:
    """A named daemon thread with a stop event; subclasses implement :meth:`run`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.exception: BaseException | None = None
        # Called (in the dying thread) when run() raised: the supervisor wakes up at once.
        self.on_death: Callable[[BaseException], None] | None = None

    # To override -------------------------------------------------------------
    def run(self) -> None:
        """The thread's body; return when :meth:`should_keep_running` turns False."""
        raise NotImplementedError

    def on_thread_start(self) -> None:
        """Runs in the caller before the thread starts (bind a socket, open a file)."""

    def on_thread_stop(self) -> None:
        """Runs in the caller after the stop event is set: wake the thread up."""

    # Lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.on_thread_start()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds; False if it still runs."""
        self._stopping.set()
        self.on_thread_stop()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; False if it still runs after ``timeout``."""
        if self._thread is None:
            return True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as e:
            self.exception = e
            log.critical("%s thread died: %r", self.name, e, exc_info=True)
            if self.on_death is not None:
                self.on_death(e)

    # State -------------------------------------------------------------------
    def should_keep_running(self) -> bool:
        return not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def died(self) -> bool:
        """Started, ended, and nobody asked it to stop."""
        return self._thread is not None and not self._thread.is_alive() and not self._stopping.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until stopped; True if stopped."""
        return self._stopping.wait(seconds)
