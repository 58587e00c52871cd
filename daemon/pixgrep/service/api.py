"""The daemon's HTTP API on a Unix socket (Starlette served by uvicorn in a thread).

The socket is mode 0600 in a 0700 folder: only its user can talk to it.
Handlers are async and hand blocking work to a small thread pool of our own,
so the event loop stays free for health checks while a search runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pixgrep.backend import Backend
from pixgrep.errors import AlreadyRunning, PixgrepError
from pixgrep.limits import MAX_BODY_BYTES, MAX_LIMIT, MAX_QUERY_CHARS, MODES
from pixgrep.request import MAX_TYPES, SOURCES, SearchRequest
from pixgrep.service.serving import ServerThread

log = logging.getLogger("pixgrep.service.api")

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class _Json(JSONResponse):
    # ASCII escapes: a file name that isn't UTF-8 travels as \udcXX and comes back intact.
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchBody(_Body):
    """The wire types and bounds of a ``SearchRequest`` (its fields, its JSON names), refused with pydantic's
    messages before ``SearchRequest.from_json`` checks the rest."""

    query: str = Field(max_length=MAX_QUERY_CHARS)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    mode: str | None = Field(default=None, pattern=f"^({'|'.join(MODES)})$")
    in_dir: str | None = None
    all: bool = False
    since: float | None = None
    until: float | None = None
    types: list[str] = Field(default_factory=list, max_length=MAX_TYPES)
    source: str | None = Field(default=None, pattern=f"^({'|'.join(SOURCES)})$")


class SimilarBody(_Body):
    path: str
    limit: int | None = Field(default=None, ge=1, le=1000)


class WatchBody(_Body):
    path: str
    polling: bool = False


class UnwatchBody(_Body):
    path: str
    forget: bool = False


class IndexBody(_Body):
    paths: list[str] = Field(min_length=1)
    force: bool = False


class ReindexBody(_Body):
    stale: bool = False
    embeddings: bool = False
    all: bool = False
    # Retry what failed (the default when nothing else is asked for).
    failed: bool = False


async def _bounded_body(request: Request) -> bytes:
    """The request body, refused with a 400 past MAX_BODY_BYTES without reading the rest into memory."""
    too_big = ApiError(400, f"bad request: the body is over {MAX_BODY_BYTES} bytes")
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise ApiError(400, "bad request: invalid Content-Length") from None
    if declared > MAX_BODY_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(backend: Backend, executor: cf.Executor) -> Starlette:
    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def body(request: Request, model: type[_Body]) -> Any:
        try:
            return model.model_validate_json(await _bounded_body(request) or b"{}")
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            raise ApiError(400, f"bad request: {loc}: {err['msg']}") from None

    def wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> _Json:
            try:
                return _Json(await handler(request))
            except ApiError as e:
                return _Json({"error": str(e)}, status_code=e.status)
            except PixgrepError as e:
                return _Json({"error": str(e)}, status_code=503)
            except ValueError as e:
                return _Json({"error": str(e)}, status_code=400)
            except Exception as e:
                log.exception("%s %s failed", request.method, request.url.path)
                return _Json({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)

        return endpoint

    async def health(request: Request) -> Any:
        # On the event loop: it must answer while every worker thread is busy.
        return backend.health()

    async def status(request: Request) -> Any:
        failed = request.query_params.get("failed", "0") not in ("0", "", "false")
        return await run(lambda: backend.status(failed=failed))

    async def search(request: Request) -> Any:
        b: SearchBody = await body(request, SearchBody)
        try:
            req = SearchRequest.from_json(b.model_dump(exclude_unset=True))
        except ValueError as e:  # since after until, an unknown image type
            raise ApiError(400, f"bad request: {e}") from None
        return {"results": await run(lambda: backend.search(req))}

    async def similar(request: Request) -> Any:
        b: SimilarBody = await body(request, SimilarBody)
        return {"results": await run(lambda: backend.similar(b.path, limit=b.limit))}

    async def watch(request: Request) -> Any:
        b: WatchBody = await body(request, WatchBody)
        return await run(lambda: backend.watch(b.path, polling=b.polling))

    async def unwatch(request: Request) -> Any:
        b: UnwatchBody = await body(request, UnwatchBody)
        return await run(lambda: backend.unwatch(b.path, forget=b.forget))

    async def index(request: Request) -> Any:
        b: IndexBody = await body(request, IndexBody)
        return await run(lambda: backend.index(b.paths, force=b.force))

    async def reindex(request: Request) -> Any:
        b: ReindexBody = await body(request, ReindexBody)
        return await run(lambda: backend.reindex(stale=b.stale, embeddings=b.embeddings, all=b.all, failed=b.failed))

    routes = [
        Route("/v1/health", wrap(health), methods=["GET"]),
        Route("/v1/status", wrap(status), methods=["GET"]),
        Route("/v1/search", wrap(search), methods=["POST"]),
        Route("/v1/similar", wrap(similar), methods=["POST"]),
        Route("/v1/watch", wrap(watch), methods=["POST"]),
        Route("/v1/unwatch", wrap(unwatch), methods=["POST"]),
        Route("/v1/index", wrap(index), methods=["POST"]),
        Route("/v1/reindex", wrap(reindex), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> _Json:
        assert isinstance(exc, HTTPException)
        return _Json({"error": exc.detail}, status_code=exc.status_code)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def socket_taken(path: Path) -> None:
    """Raise AlreadyRunning if another process answers on ``path`` (checked before a daemon opens anything)."""
    if path.exists() or path.is_symlink():
        pid = listener_pid(path)
        if pid is not None:
            raise AlreadyRunning(f"another pixgrep daemon (pid {pid or 'unknown'}) is already listening on {path}", pid)


def listener_pid(path: Path) -> int | None:
    """The PID of the process listening on ``path`` (0 when the kernel won't say), or None if none answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid
    except OSError:
        return None
    finally:
        s.close()


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``: 0600, in a 0700 folder we own.

    Raises AlreadyRunning when another process answers on ``path``; its socket is left alone.
    """
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        raise ApiError(
            0, f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; set daemon.socket to a shorter one"
        )
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid():
        # Someone else's folder (a predictable /tmp/pixgrep-UID made by another user) could swap our socket.
        raise ApiError(0, f"{folder} belongs to uid {st.st_uid}, not to us; set daemon.socket elsewhere")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    if path.exists() or path.is_symlink():
        socket_taken(path)
        path.unlink()  # left behind by a daemon that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


class ApiServer(ServerThread):
    """uvicorn in a thread of its own, serving ``build_app(backend)`` on ``socket_path``."""

    what = "the API"

    def __init__(self, backend: Backend, socket_path: Path, *, workers: int = 4, start_timeout: float = 10.0) -> None:
        super().__init__(
            "pixgrep-api-server", workers=workers, thread_prefix="pixgrep-api", start_timeout=start_timeout
        )
        self.socket_path = socket_path
        self.app = build_app(backend, self.executor)
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we made

    def where(self) -> str:
        return str(self.socket_path)

    def bind(self) -> socket.socket:
        sock = bind_socket(self.socket_path)
        st = self.socket_path.stat()
        self._bound = (st.st_dev, st.st_ino)
        return sock

    def make_app(self) -> Starlette:
        return self.app

    def start(self) -> None:
        """Bind the socket and serve; raises ApiError or RuntimeError if it cannot."""
        super().start()
        log.info("API listening", extra={"file": str(self.socket_path)})

    def on_closed(self) -> None:
        # Only the socket file we made: never another daemon's (issue 9, defect 3).
        with contextlib.suppress(FileNotFoundError):
            st = self.socket_path.stat()
            if self._bound == (st.st_dev, st.st_ino):
                self.socket_path.unlink()
        self._bound = None
