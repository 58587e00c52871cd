"""The gallery's HTTP layer: token, Host check, and which files it serves (real books, stub search)."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgs import render
from PIL import Image
from pixgrep import images
from pixgrep.catalog import Catalog
from pixgrep.filters import Filters
from pixgrep.request import SearchRequest
from pixgrep.results import Item, lookup_item
from pixgrep.service.gallery import (
    GalleryBackend,
    Thumbnails,
    build_app,
    check_settings,
    is_loopback,
    load_token,
)
from pixgrep.settings import ConfigError, Settings
from starlette.testclient import TestClient

TOKEN = "t" * 43
LINES = [
    {"text": "first line here", "score": 0.9, "box": [10.0, 10.0, 150.0, 40.0]},
    {"text": "我今天不開心", "score": 0.9, "box": [10.0, 60.0, 150.0, 90.0]},
]


class StubBackend:
    """Canned search results; items come from real SQLite books (as the daemon's backend does)."""

    def __init__(self, db: Catalog, results: list[dict[str, Any]]) -> None:
        self.db = db
        self.results = results
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        self.calls.append(request)
        return [dict(r) for r in self.results][: request.limit]

    def similar(self, content_hash: str, *, limit: int, filters: Filters) -> list[dict[str, Any]]:
        return [dict(r) for r in self.results if r["content_hash"] != content_hash][:limit]

    def item(self, content_hash: str) -> Item | None:
        return lookup_item(self.db, content_hash)

    def status(self) -> dict[str, Any]:
        return {"counts": {"indexed": 1}, "watched": ["/pics"], "failures": [{"path": "/x.jpg", "error": "empty file"}]}


def _index_file(db: Catalog, path: Path) -> str:
    fb = images.read_file(str(path))
    db.seed(
        [{"hash": fb.digest, "status": "done", "text": "我今天不開心", "lines_json": json.dumps(LINES)}],
        [{"path": str(path), "content_hash": fb.digest, "size": fb.size, "mtime_ns": fb.mtime_ns}],
    )
    return fb.digest


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[tuple[TestClient, Path, str, StubBackend]]:
    pics = tmp_path / "pics"
    pics.mkdir()
    meme = pics / "meme.png"
    render(meme, ["我今天不開心"])
    db = Catalog(tmp_path / "books.sqlite")
    h = _index_file(db, meme)
    results = [{"content_hash": h, "path": str(meme), "score": 0.9, "snippet": "我今天不開心", "spans": [[0, 2]]}]
    backend = StubBackend(db, results)
    _: GalleryBackend = backend  # the stub stands behind the real Protocol
    executor = cf.ThreadPoolExecutor(2, thread_name_prefix="pixgrep-gallery-test")
    app = build_app(backend, executor, token=TOKEN, thumbs=Thumbnails(tmp_path / "cache" / "thumbs", 128))
    with TestClient(app, base_url="http://127.0.0.1:8399") as client:
        yield client, meme, h, backend
    executor.shutdown(wait=True)
    db.close()


def _get(client: TestClient, url: str, **kw: Any) -> Any:
    return client.get(url, headers={"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}, **kw)


def test_no_token_is_401_and_a_wrong_one_403(gallery: Any) -> None:
    client, _, h, _ = gallery
    for url in ("/", "/api/search?q=x", f"/thumb/{h}", f"/image/{h}", "/static/app.js", "/api/status"):
        assert client.get(url).status_code == 401, url
        assert client.get(url, params={"token": "x" * 43}).status_code == 403, url
        client.cookies.set("pixgrep", "nope")
        assert client.get(url).status_code == 403, url
        client.cookies.clear()


def test_token_in_the_url_sets_a_cookie_that_then_suffices(gallery: Any) -> None:
    client, _, _, _ = gallery
    r = client.get("/", params={"token": TOKEN})
    assert r.status_code == 200
    assert "<title>pixgrep</title>" in r.text
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert client.get("/static/app.js").status_code == 200  # the cookie alone
    assert client.get("/api/search", params={"q": "x"}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8399", "192.168.1.5:8399", "127.0.0.1.evil.example"])
def test_foreign_host_header_is_refused_even_with_the_token(gallery: Any, host: str) -> None:
    client, _, _, _ = gallery
    r = client.get("/", params={"token": TOKEN}, headers={"Host": host})
    assert r.status_code == 403
    assert "Host" in r.json()["error"]


@pytest.mark.parametrize("host", ["localhost:8399", "127.0.0.1:8399", "[::1]:8399", "127.0.0.1"])
def test_loopback_host_headers_pass(gallery: Any, host: str) -> None:
    client, _, _, _ = gallery
    assert _get(client, "/", headers={"Host": host}).status_code == 200


def test_serves_indexed_image_and_cached_thumbnail(gallery: Any, tmp_path: Path) -> None:
    client, meme, h, _ = gallery
    r = _get(client, f"/image/{h}")
    assert r.status_code == 200
    assert r.content == meme.read_bytes()
    assert r.headers["content-type"] == "image/png"
    t = _get(client, f"/thumb/{h}")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(t.content)).size) <= 128
    cached = list((tmp_path / "cache" / "thumbs").rglob("*.jpg"))
    assert [p.name for p in cached] == [f"{h}-128.jpg"]
    assert stat.S_IMODE(cached[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(cached[0].parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "cache" / "thumbs").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "url",
    [
        "/image/" + "0" * 32,  # a well-formed hash the index doesn't hold
        "/thumb/" + "0" * 32,
        "/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/image/%252e%252e%252fetc%252fpasswd",
        "/thumb/..%2Fmeme.png",
        "/image/etc/passwd",
        "/static/..%2F__init__.py",
        "/static/../gallery.py",
        "/api/item/" + "0" * 32,
        "/etc/passwd",
    ],
)
def test_unindexed_or_traversing_urls_are_404(gallery: Any, url: str) -> None:
    client, _, _, _ = gallery
    r = _get(client, url)
    assert r.status_code == 404, (url, r.status_code, r.content[:100])


def test_a_symlink_swapped_in_for_an_indexed_file_is_not_followed(gallery: Any, tmp_path: Path) -> None:
    client, meme, h, _ = gallery
    target = tmp_path / "secret.png"
    target.write_bytes(meme.read_bytes())  # even the same bytes: the path is a link now
    meme.unlink()
    meme.symlink_to(target)
    assert _get(client, f"/image/{h}").status_code == 404
    assert _get(client, f"/thumb/{h}").status_code == 404


def test_a_file_changed_since_indexing_is_not_served(gallery: Any) -> None:
    client, meme, h, _ = gallery
    size = meme.stat().st_size
    meme.write_bytes(b"\x89PNG" + b"x" * (size - 4))  # same size, other bytes
    assert _get(client, f"/image/{h}").status_code == 404


def test_item_outlines_the_lines_that_hold_the_query(gallery: Any) -> None:
    client, meme, h, _ = gallery
    r = _get(client, f"/api/item/{h}", params={"q": "今天不开心"})
    assert r.status_code == 200
    body = r.json()
    assert body["matched"] == [1]
    assert body["lines"][1]["box"] == [10.0, 60.0, 150.0, 90.0]
    assert body["paths"] == [str(meme)]
    assert _get(client, f"/api/item/{h}", params={"q": "zzzz"}).json()["matched"] == []


def test_search_passes_filters_and_adds_folder(gallery: Any) -> None:
    client, meme, _, backend = gallery
    r = _get(
        client,
        "/api/search",
        params={"q": " 不开心 ", "since": "2020-01-01", "until": "2020-12-31", "source": "ocr", "folder": "/pics"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["results"][0]["folder"] == str(meme.parent)
    req: SearchRequest = backend.calls[-1]
    assert req.query == "不开心" and req.all is False and req.limit == 60
    assert req.source == "ocr" and req.in_dir == "/pics" and req.since is not None and req.until is not None
    assert req.until > req.since
    assert _get(client, "/api/search", params={"q": "x", "since": "yesterday"}).status_code == 400
    later = {"q": "x", "since": "2021-01-01", "until": "2020-01-01"}
    assert _get(client, "/api/search", params=later).status_code == 400
    assert _get(client, "/api/search", params={"q": "x", "all": "1", "type": "png"}).status_code == 200
    assert backend.calls[-1].all is True and backend.calls[-1].types == ("png",)


def test_status_and_similar(gallery: Any) -> None:
    client, _, h, _ = gallery
    assert _get(client, "/api/status").json()["failures"][0]["error"] == "empty file"
    assert _get(client, f"/api/similar/{h}").json()["results"] == []
    assert _get(client, "/api/similar/zz").status_code == 400


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    p = tmp_path / "state" / "ui-token"
    t1 = load_token(p)
    assert len(t1) >= 40
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    os.chmod(p, 0o644)
    assert load_token(p) == t1
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_non_loopback_host_needs_allow_remote(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    with pytest.raises(ConfigError, match="allow_remote"):
        check_settings(Settings(home=tmp_path, ui={"host": "0.0.0.0"}))
    check_settings(Settings(home=tmp_path, ui={"host": "0.0.0.0", "allow_remote": True}))
    check_settings(Settings(home=tmp_path, ui={"host": "0.0.0.0", "enabled": False}))
    check_settings(Settings(home=tmp_path))
