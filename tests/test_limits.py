"""Query and request-body limits (issue 9, defect 5) and -k validated the same way everywhere (defect 9)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pixgrep.limits import MAX_BODY_BYTES, MAX_QUERY_CHARS, QueryRefused
from test_fuzz import RecordingBackend  # the Backend Protocol's recording double


@pytest.fixture
def api() -> Iterator[tuple[Any, RecordingBackend]]:
    from pixgrep.service.api import build_app
    from starlette.testclient import TestClient

    backend = RecordingBackend()
    with cf.ThreadPoolExecutor(2, thread_name_prefix="limits-api") as ex, TestClient(build_app(backend, ex)) as client:
        yield client, backend


def test_the_api_refuses_an_over_long_query_with_a_clear_400(api: tuple[Any, RecordingBackend]) -> None:
    client, backend = api
    ok = client.post("/v1/search", json={"query": "猫" * MAX_QUERY_CHARS})
    assert ok.status_code == 200 and len(backend.calls) == 1
    r = client.post("/v1/search", json={"query": "猫" * (MAX_QUERY_CHARS + 1)})
    assert r.status_code == 400
    assert r.json()["error"] == f"bad request: query: String should have at most {MAX_QUERY_CHARS} characters"
    assert len(backend.calls) == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_the_api_refuses_a_body_over_the_limit_without_reading_it_all(
    api: tuple[Any, RecordingBackend], chunked: bool
) -> None:
    client, backend = api
    body = json.dumps({"paths": ["/x" * 1000] * (MAX_BODY_BYTES // 2000 + 10)}).encode()
    assert len(body) > MAX_BODY_BYTES
    content: Any = body
    if chunked:  # no Content-Length: counted while it streams in

        def gen() -> Iterator[bytes]:
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        content = gen()
    r = client.post("/v1/index", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "over" in r.json()["error"] and str(MAX_BODY_BYTES) in r.json()["error"]
    assert backend.calls == []


@pytest.mark.parametrize("limit", [0, -1, 1001, 100000])
def test_the_api_refuses_a_result_count_out_of_range(api: tuple[Any, RecordingBackend], limit: int) -> None:
    client, backend = api
    r = client.post("/v1/search", json={"query": "x", "limit": limit})
    assert r.status_code == 400 and "limit" in r.json()["error"]
    assert backend.calls == []


@pytest.mark.parametrize(("query", "limit"), [("x" * (MAX_QUERY_CHARS + 1), None), ("x", 0), ("x", 100000)])
def test_the_library_search_refuses_what_the_api_refuses(query: str, limit: int | None) -> None:
    """Without the daemon, -k 0 used to mean 'the default' and -k 100000 returned results."""
    from pixgrep.search import search
    from pixgrep.settings import SearchSettings

    with pytest.raises(QueryRefused):
        search(query, store=None, embedder=None, db=None, settings=SearchSettings(), limit=limit)  # type: ignore[arg-type]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from pixgrep_cli.entry import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["x" * (MAX_QUERY_CHARS + 1)],
            f"the query is {MAX_QUERY_CHARS + 1} characters long; the limit is {MAX_QUERY_CHARS}",
        ),
        (["-k", "0", "cat"], "-k/--limit must be between 1 and 1000, not 0"),
        (["-k", "100000", "cat"], "-k/--limit must be between 1 and 1000, not 100000"),
        (["--json", "-k", "0", "cat"], "-k/--limit must be between 1 and 1000, not 0"),
        (["--montage", "m.jpg", "-k", "0", "cat"], "-k/--limit must be between 1 and 1000, not 0"),
    ],
)
def test_the_cli_refuses_before_sending_with_one_line_and_exit_64(
    home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    """Both the stdlib fast path and the full CLI (--montage), with a 'daemon' socket that would accept anything."""
    import os
    import socket

    sock_path = Path(os.environ["XDG_RUNTIME_DIR"]) / "pixgrep" / "api.sock"
    sock_path.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(8)
    listener.setblocking(False)
    try:
        r = _cli("search", *args, env=dict(os.environ))
        with pytest.raises(BlockingIOError):
            listener.accept()[0].close()  # nothing was sent
    finally:
        listener.close()
    assert r.returncode == 64, r.stderr
    assert r.stderr.strip().splitlines() == [f"pixgrep: {message}"]
