"""The web gallery: a second listener of the daemon, on loopback TCP (``ui.host``, ``ui.port``).

TCP has no file modes, so a random token (in the state folder, 0600) is the lock:
the URL carries it once, as Jupyter's does, and the page then holds it in a
cookie. The Host header must name a loopback address, so a page on another
site that rebinds its DNS name to 127.0.0.1 is refused even before the token.

Only files the index holds are served, and only by content hash: a URL never
names a path. A file is read with O_NOFOLLOW and served only when its bytes
still hash to the content the URL asks for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import errno
import hmac
import io
import ipaddress
import logging
import mimetypes
import os
import re
import secrets
import socket
import stat
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pixgrep import images
from pixgrep.errors import PixgrepError
from pixgrep.filters import Filters, filters_from
from pixgrep.request import SearchRequest
from pixgrep.results import Item, lookup_item, matched_lines, search_json, similar
from pixgrep.roots import is_key
from pixgrep.service.serving import ServerThread
from pixgrep.settings import ConfigError, Settings

if TYPE_CHECKING:
    from pixgrep.app import Index

log = logging.getLogger("pixgrep.service.gallery")

HASH_RE = re.compile(r"[0-9a-f]{32}")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
STATIC = ("index.html", "app.js", "style.css")
# The page's own files only: no inline script, no third-party anything, and the token in
# the URL never leaves in a Referer header.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class GalleryBackend(Protocol):
    """What the gallery needs from the daemon; every method may block."""

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        """Ranked results as ``search.Result.to_json`` dicts."""
        ...

    def similar(self, content_hash: str, *, limit: int, filters: Filters) -> list[dict[str, Any]]:
        """Images whose text is like that of ``content_hash``."""
        ...

    def item(self, content_hash: str) -> Item | None:
        """The indexed image with this hash, or None if the index doesn't hold it."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``pixgrep status --failed --json`` shows."""
        ...


class IndexBackend:
    """The gallery backend over the daemon's open index."""

    def __init__(self, get_index: Callable[[], Index], status: Callable[[], dict[str, Any]]) -> None:
        self._get_index = get_index
        self._status = status

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        return search_json(self._get_index(), request)

    def similar(self, content_hash: str, *, limit: int, filters: Filters) -> list[dict[str, Any]]:
        index = self._get_index()
        item = lookup_item(index.db, content_hash)
        if item is None:
            return []
        text = " ".join([item.text, *item.captions])
        return similar(index, text=text, exclude=content_hash, limit=limit, filters=filters)

    def item(self, content_hash: str) -> Item | None:
        return lookup_item(self._get_index().db, content_hash)

    def status(self) -> dict[str, Any]:
        return self._status()


def gallery_backend(daemon: Any) -> IndexBackend:
    """The gallery's backend over the daemon's API backend: its open index, and its status with the failures."""
    return IndexBackend(daemon._need_ready, lambda: daemon.status(failed=True))


# Access -------------------------------------------------------------------------------------


def load_token(path: Path) -> str:
    """The gallery token, made on first use: 256 random bits in a 0600 file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise ConfigError(f"{path} is not a regular file of ours; remove it") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o600)
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 32:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class AccessGuard:
    """ASGI middleware: a loopback Host header (unless remote access is allowed), then the token."""

    def __init__(self, app: ASGIApp, *, token: str, cookie: str, check_host: bool) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie = cookie
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "")
        if self.check_host and not is_loopback(_host_name(host)):
            await _refuse(403, "this gallery answers only to localhost (Host header refused)")(scope, receive, send)
            return
        given = request.query_params.get("token") or request.cookies.get(self.cookie) or _bearer(request)
        if not given:
            await _refuse(401, "token required: open the URL `pixgrep ui` prints")(scope, receive, send)
            return
        if not hmac.compare_digest(given.encode(), self.token):
            await _refuse(403, "wrong token: open the URL `pixgrep ui` prints")(scope, receive, send)
            return
        from_url = "token" in request.query_params

        async def send_with_cookie(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and from_url:
                headers = list(message.get("headers", []))
                cookie = f"{self.cookie}={given}; Path=/; HttpOnly; SameSite=Strict"
                headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _refuse(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


# Files --------------------------------------------------------------------------------------


def read_indexed(item: Item) -> tuple[str, bytes] | None:
    """The bytes of one of ``item``'s paths that still hold its content: no symlinks, no changed files."""
    for path, size, _mtime in item.paths:
        if is_key(path):
            continue  # a named root not mounted on this host: never opened relative to the working dir
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone, unreadable, or a symlink now (ELOOP)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                continue
            data = fh.read(size + 1)
        if images.content_hash(data) == item.content_hash:
            return path, data
    return None


def make_thumbnail(data: bytes, size: int) -> bytes:
    from PIL import ImageOps

    im = images.decode(data, max_megapixels=64)
    im = ImageOps.contain(im, (size, size))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=82)
    return buf.getvalue()


class Thumbnails:
    """Thumbnails on demand, cached by content hash (0700 folders, 0600 files)."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size

    def path(self, content_hash: str) -> Path:
        return self.folder / content_hash[:2] / f"{content_hash}-{self.size}.jpg"

    def get(self, item: Item) -> bytes | None:
        p = self.path(item.content_hash)
        with contextlib.suppress(FileNotFoundError):
            return p.read_bytes()
        found = read_indexed(item)
        if found is None:
            return None
        data = make_thumbnail(found[1], self.size)
        self._store(p, data)
        return data

    def _store(self, p: Path, data: bytes) -> None:
        for d in (self.folder.parent, self.folder, p.parent):
            d.mkdir(mode=0o700, exist_ok=True, parents=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)


def _media_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


# The app ------------------------------------------------------------------------------------


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(value))) if value else default
    except ValueError:
        return default


def _filters(request: Request) -> Filters:
    q = request.query_params
    return filters_from(
        since=q.get("since") or None,
        until=q.get("until") or None,
        types=[t for t in (q.get("type") or "").split(",") if t],
        source=q.get("source") or None,
        in_dir=q.get("folder") or None,
    )


def _with_place(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in results:
        r["folder"] = os.path.dirname(r["path"])
        r["name"] = os.path.basename(r["path"])
    return results


def build_app(
    backend: GalleryBackend,
    executor: cf.Executor,
    *,
    token: str,
    thumbs: Thumbnails,
    cookie: str = "pixgrep",
    check_host: bool = True,
) -> ASGIApp:
    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def api(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                out = await handler(request)
                return out if isinstance(out, Response) else JSONResponse(out, headers=SECURITY_HEADERS)
            except ValueError as e:
                return _refuse(400, str(e).splitlines()[0])
            except PixgrepError as e:
                return _refuse(503, str(e).splitlines()[0])
            except Exception as e:
                if getattr(e, "status", None) == 503:  # the daemon is starting or stopping
                    return _refuse(503, str(e))
                log.exception("gallery %s failed", request.url.path)
                return _refuse(500, f"internal error: {type(e).__name__}")

        return endpoint

    def content_hash(request: Request) -> str | None:
        h = request.path_params["hash"]
        return h if HASH_RE.fullmatch(h) else None

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            return _refuse(404, "not found")
        body = resources.files("pixgrep.ui").joinpath("static", name).read_bytes()
        return Response(body, media_type=_media_type(name), headers=SECURITY_HEADERS)

    async def search(request: Request) -> Any:
        q = request.query_params
        query = (q.get("q") or "").strip()[:1000]
        if not query:
            return {"query": "", "results": []}
        limit = _int(q.get("limit"), 60, 1, 200)
        everything = q.get("all") in ("1", "true")
        req = SearchRequest.from_filters(query, _filters(request), limit=limit, all=everything)
        results = await run(lambda: backend.search(req))
        return {"query": query, "results": _with_place(results)}

    async def similar_to(request: Request) -> Any:
        h = content_hash(request)
        if h is None:
            raise ValueError("not a content hash")
        limit = _int(request.query_params.get("limit"), 60, 1, 200)
        f = _filters(request)
        return {"like": h, "results": _with_place(await run(lambda: backend.similar(h, limit=limit, filters=f)))}

    async def item(request: Request) -> Response:
        h = content_hash(request)
        it = await run(lambda: backend.item(h)) if h else None
        if it is None:
            return _refuse(404, "not in the index")
        query = request.query_params.get("q") or ""
        return JSONResponse(
            {
                "hash": it.content_hash,
                "paths": [p for p, _, _ in it.paths],
                "width": it.width,
                "height": it.height,
                "lines": [{"text": ln.get("text", ""), "box": ln.get("box")} for ln in it.lines],
                "matched": matched_lines(it.lines, query),
                "captions": it.captions,
            },
            headers=SECURITY_HEADERS,
        )

    async def status(request: Request) -> Any:
        return await run(backend.status)

    async def thumb(request: Request) -> Response:
        h = content_hash(request)
        it = await run(lambda: backend.item(h)) if h else None
        data = await run(lambda: thumbs.get(it)) if it is not None else None
        if data is None:
            return _refuse(404, "not in the index")
        return Response(
            data, media_type="image/jpeg", headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=86400"}
        )

    async def image(request: Request) -> Response:
        h = content_hash(request)
        it = await run(lambda: backend.item(h)) if h else None
        found = await run(lambda: read_indexed(it)) if it is not None else None
        if found is None:
            return _refuse(404, "not in the index")
        path, data = found
        return Response(
            data, media_type=_media_type(path), headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"}
        )

    async def not_found(request: Request) -> Response:
        return _refuse(404, "not found")

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/static/{name}", page, methods=["GET"]),
        Route("/api/search", api(search), methods=["GET"]),
        Route("/api/similar/{hash}", api(similar_to), methods=["GET"]),
        Route("/api/item/{hash}", api(item), methods=["GET"]),
        Route("/api/status", api(status), methods=["GET"]),
        Route("/thumb/{hash}", api(thumb), methods=["GET"]),
        Route("/image/{hash}", api(image), methods=["GET"]),
        Route("/{rest:path}", not_found),
    ]
    app = Starlette(routes=routes)
    return AccessGuard(app, token=token, cookie=cookie, check_host=check_host)


# The server ---------------------------------------------------------------------------------


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a busy port falls back to a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=64)
    except OSError as e:
        if e.errno != errno.EADDRINUSE or port == 0:
            raise ConfigError(f"cannot listen on ui.host {host} port {port}: {e.strerror or e}") from None
        log.warning("gallery port %d is taken; using a free port (`pixgrep ui` prints the URL)", port)
        return socket.create_server((host, 0), family=family, backlog=64)


def check_settings(settings: Settings) -> None:
    """Refuse a non-loopback ``ui.host`` unless ``ui.allow_remote``; ConfigError (exit 78)."""
    ui = settings.ui
    if ui.enabled and not is_loopback(ui.host) and not ui.allow_remote:
        raise ConfigError(
            f"ui.host {ui.host} is not a loopback address: the gallery would be open to the network; "
            "set ui.allow_remote = true to allow it"
        )


class GalleryServer(ServerThread):
    """uvicorn in a thread of its own, serving the gallery on ``ui.host``:``ui.port``."""

    what = "the gallery"

    def __init__(
        self, settings: Settings, backend: GalleryBackend, *, workers: int = 4, start_timeout: float = 10.0
    ) -> None:
        super().__init__(
            "pixgrep-gallery-server", workers=workers, thread_prefix="pixgrep-gallery", start_timeout=start_timeout
        )
        check_settings(settings)
        self.settings = settings
        self.token = load_token(settings.ui_token_path)
        self._backend = backend
        self.port = 0

    @property
    def url(self) -> str:
        host = self.settings.ui.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.token}"

    def where(self) -> str:
        return f"port {self.port}"

    def bind(self) -> socket.socket:
        ui = self.settings.ui
        sock = bind_tcp(ui.host, ui.port)
        self.port = sock.getsockname()[1]
        return sock

    def make_app(self) -> ASGIApp:
        ui = self.settings.ui
        return build_app(
            self._backend,
            self.executor,
            token=self.token,
            thumbs=Thumbnails(self.settings.thumbs_dir, ui.thumb_size),
            cookie=f"pixgrep-{self.port}",
            check_host=not ui.allow_remote,
        )

    def start(self) -> None:
        """Bind and serve; raises ConfigError or RuntimeError if it cannot."""
        super().start()
        log.info("gallery listening on http://%s:%d/", self.settings.ui.host, self.port)
