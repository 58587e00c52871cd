"""Talking to a running daemon over its Unix socket (httpx, no heavy imports)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

# httpx (0.1-0.3 s to import) is imported only once a socket exists: a search with no daemon never needs it.


class DaemonUnavailable(Exception):
    pass


class DaemonError(Exception):
    """The daemon answered with an error; ``status`` is its HTTP status (400: the request was refused)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DaemonClient:
    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        import httpx

        self.socket_path = socket_path
        self._client: httpx.Client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://pixgrep", timeout=timeout
        )

    @classmethod
    def connect(cls, socket_path: Path, timeout: float = 30.0) -> DaemonClient | None:
        """A client if a daemon answers on ``socket_path``, else None."""
        if not os.path.exists(socket_path):
            return None
        client = cls(socket_path, timeout)
        try:
            client.request("GET", "/v1/health", timeout=2.0)
        except DaemonUnavailable:
            client.close()
            return None
        return client

    def request(self, method: str, url: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self._client.request(method, url, **kw)
        except (
            httpx.ConnectError,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            FileNotFoundError,
            ConnectionError,
        ) as e:
            raise DaemonUnavailable(str(e)) from e
        except httpx.TimeoutException as e:
            raise DaemonError(f"the daemon did not answer in time ({e})") from e
        if r.status_code >= 400:
            try:
                detail = r.json().get("error", r.text)
            except ValueError:
                detail = r.text
            raise DaemonError(detail, r.status_code)
        return r.json()

    def search(
        self, query: str, *, limit: int | None, mode: str | None, in_dir: str | None, **extra: Any
    ) -> list[dict[str, Any]]:
        """``extra``: all, since, until, types, source (see ``/v1/search``)."""
        body = {"query": query, "limit": limit, "mode": mode, "in_dir": in_dir, **extra}
        return list(self.request("POST", "/v1/search", json=body)["results"])

    def status(self, *, failed: bool = False) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/status", params={"failed": int(failed)}))

    def close(self) -> None:
        self._client.close()


def ask_daemon(
    socket_path: Path, method: str, url: str, body: dict[str, Any], timeout: float | None = 30.0
) -> dict[str, Any] | None:
    """One request to a running daemon; None if none runs. Raises DaemonError if it refuses."""
    client = DaemonClient.connect(socket_path)
    if client is None:
        return None
    try:
        return dict(client.request(method, url, json=body, timeout=timeout))
    except DaemonUnavailable:
        return None
    finally:
        client.close()
