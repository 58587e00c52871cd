"""``ServerThread``: uvicorn on a socket of our own, in a supervised thread.

The API (a Unix socket) and the gallery (a loopback TCP port) differ only in
what they bind and what they serve; the start-up wait, the graceful then forced
stop and the cleanup are here once.
"""

from __future__ import annotations

import concurrent.futures as cf
import socket
import time

import uvicorn
from starlette.types import ASGIApp

from pixgrep.service.threads import StoppableThread


class ServerThread(StoppableThread):
    """Subclasses implement :meth:`bind` and :meth:`make_app`; ``executor`` runs their blocking handlers."""

    #: What the server is, for the error when it does not start ("the API", "the gallery").
    what = "the server"

    def __init__(self, name: str, *, workers: int, thread_prefix: str, start_timeout: float = 10.0) -> None:
        super().__init__(name)
        self.start_timeout = start_timeout
        self.executor = cf.ThreadPoolExecutor(workers, thread_name_prefix=thread_prefix)
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None

    def bind(self) -> socket.socket:
        """The listening socket (called in the caller of start(), so that its errors reach it)."""
        raise NotImplementedError

    def make_app(self) -> ASGIApp:
        """The ASGI app; called after bind()."""
        raise NotImplementedError

    def where(self) -> str:
        """Where it listens, for messages."""
        return self.name

    def on_closed(self) -> None:
        """After the socket is closed (remove a socket file)."""

    def on_thread_start(self) -> None:
        self._sock = self.bind()
        config = uvicorn.Config(
            self.make_app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)

    def run(self) -> None:
        assert self._sock is not None and self._server is not None
        self._server.run(sockets=[self._sock])

    def start(self) -> None:
        """Bind and serve; raises what bind() raises, or RuntimeError if uvicorn did not start."""
        super().start()
        server = self._server
        assert server is not None
        deadline = time.monotonic() + self.start_timeout
        while not server.started and self.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            self.stop()
            raise RuntimeError(f"{self.what} did not start on {self.where()}: {self.exception!r}")

    def on_thread_stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float | None = 5.0) -> bool:
        ok = super().stop(timeout)
        if not ok and self._server is not None:
            self._server.force_exit = True  # open connections past the graceful timeout: cut them
            ok = self.join(timeout)
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.on_closed()
        return ok
