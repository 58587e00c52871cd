"""``RemoteBackend``: the CLI's client for a running daemon, standard library only.

HTTP/1.1 over the daemon's Unix socket (``pixgrep_cli.wire``: ``socket`` alone,
since importing ``http.client`` costs more than the daemon takes to search),
so the fast search path (``pixgrep_cli.fast``) and every other command share
this one client. It implements ``pixgrep.backend.Backend``.
"""

from __future__ import annotations

import json
import os

from pixgrep.errors import PixgrepError

from pixgrep_cli import wire

TYPE_CHECKING = False  # importing typing costs milliseconds on the fast path: mypy reads this name as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from pixgrep.request import SearchRequest

HEALTH_TIMEOUT = 2.0


class DaemonUnavailable(PixgrepError):
    """No daemon answers on the socket (none runs, or it died mid-request)."""


class DaemonError(PixgrepError):
    """The daemon answered with an error, or not in time; the message is its reason.

    ``status`` is the HTTP status (400: the request was refused; 0: no answer in time).
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RemoteBackend:
    """The Backend operations as requests to the daemon at ``socket_path``."""

    live = True

    def __init__(self, socket_path: str | Path, timeout: float | None = 30.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    @classmethod
    def connect(cls, socket_path: str | Path, timeout: float | None = 30.0) -> RemoteBackend | None:
        """A backend if a daemon answers on ``socket_path``, else None."""
        if not os.path.exists(socket_path):
            return None
        backend = cls(socket_path, timeout)
        try:
            backend.request("GET", "/v1/health", timeout=HEALTH_TIMEOUT)
        except PixgrepError:
            return None
        return backend

    def request(self, method: str, url: str, body: dict[str, Any] | None = None, *, timeout: Any = "default") -> Any:
        """One request; the decoded JSON answer. Raises DaemonUnavailable or DaemonError."""
        data = json.dumps(body).encode() if body is not None else None
        try:
            status, payload = wire.exchange(
                self.socket_path, method, url, data, timeout=self.timeout if timeout == "default" else timeout
            )
        except TimeoutError as e:
            raise DaemonError(f"the daemon did not answer in time ({e})") from e
        except OSError as e:
            # Refused, reset, a stale socket file, a daemon that died mid-answer.
            raise DaemonUnavailable(f"no daemon answers on {self.socket_path} ({e})") from e
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = {"error": payload.decode("utf-8", "replace")}
        if status >= 400:
            raise DaemonError(str(answer.get("error", answer) if isinstance(answer, dict) else answer), status)
        return answer

    def close(self) -> None:
        pass  # a connection per request: nothing stays open

    # The Backend operations ------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/health", timeout=HEALTH_TIMEOUT))

    def status(self, *, failed: bool) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/status?failed={int(failed)}"))

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        return self.search_body(request.to_json())

    def search_body(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """``search`` of a body in ``SearchRequest.to_json`` form: the fast path writes a plain one itself, since
        importing ``dataclasses`` (and ``inspect``) costs 10-15 ms there."""
        return list(self.request("POST", "/v1/search", body)["results"])

    def similar(self, path: str, *, limit: int | None) -> list[dict[str, Any]]:
        return list(self.request("POST", "/v1/similar", {"path": path, "limit": limit})["results"])

    def index(
        self,
        paths: list[str],
        *,
        force: bool,
        on_total: Callable[[int], None] | None = None,
        on_outcome: Callable[[Any], None] | None = None,
    ) -> dict[str, Any]:
        # The daemon only queues: there is no progress to report here.
        return dict(self.request("POST", "/v1/index", {"paths": paths, "force": force}))

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        body = {"stale": stale, "embeddings": embeddings, "all": all, "failed": failed}
        # A rebuild runs while we wait, as long as it takes.
        return dict(self.request("POST", "/v1/reindex", body, timeout=None))

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/watch", {"path": path, "polling": polling}))

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/unwatch", {"path": path, "forget": forget}, timeout=None))
