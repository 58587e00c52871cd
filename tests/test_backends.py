"""The Backend the CLI talks to: RemoteBackend against the real API on a Unix socket, and the choice of backend.

A recording backend stands behind the API (the daemon's DaemonBackend is tested with the daemon, marked slow).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pixgrep.backend import Backend, LocalBackend
from pixgrep.errors import NoIndex
from pixgrep.request import SearchRequest
from pixgrep.service.api import ApiError, ApiServer
from pixgrep.settings import ExitCode, Settings, load_settings
from pixgrep_cli import commands
from pixgrep_cli.remote import DaemonError, DaemonUnavailable, RemoteBackend
from pixgrep_cli.show import Show


class Recording:
    """Answers like the daemon's backend and records the calls it got."""

    live = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def health(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "state": "running", "version": "test"}

    def status(self, *, failed: bool) -> dict[str, Any]:
        self.calls.append(("status", failed))
        return {"counts": {"indexed": 3}, "daemon": {"running": True, "pid": 1}, "watched": [], "roots": []}

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        self.calls.append(("search", request))
        q = request.query
        if q == "refuse":
            raise ApiError(503, "the daemon is starting; try again in a moment")
        return [{"path": "/p/a.jpg", "score": 0.5, "source": "ocr", "text": q, "snippet": q, "spans": []}]

    def index(self, paths: list[str], *, force: bool, on_total: Any = None, on_outcome: Any = None) -> dict[str, Any]:
        self.calls.append(("index", (paths, force)))
        return {"queued": len(paths)}

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        self.calls.append(("reindex", (stale, embeddings, all, failed)))
        return {"ocr": 1, "caption": 0, "embed": 2, "failed": 0}

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        self.calls.append(("watch", (path, polling)))
        return {"path": path, "mode": "polling" if polling else "inotify", "watched": [path]}

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        self.calls.append(("unwatch", (path, forget)))
        return {"path": path, "was_watched": True, "forgotten": 4 if forget else 0, "watched": []}

    def close(self) -> None:
        pass


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(None)


@pytest.fixture
def served(settings: Settings) -> Iterator[Recording]:
    backend = Recording()
    server = ApiServer(backend, settings.socket_path, workers=2)
    server.start()
    try:
        yield backend
    finally:
        assert server.stop()


def test_remote_backend_round_trips_every_operation(settings: Settings, served: Recording) -> None:
    remote = RemoteBackend.connect(settings.socket_path)
    assert remote is not None and remote.live
    b: Backend = remote
    assert b.health()["state"] == "running"
    assert b.status(failed=True)["counts"] == {"indexed": 3}
    plain = SearchRequest("今天", limit=5, mode="keyword", in_dir="/p")
    assert b.search(plain)[0]["text"] == "今天"
    filtered = SearchRequest("x", all=True, since=1.5, until=2.0, types=("GIF", "jpg"), source="ocr")
    b.search(filtered)
    assert b.index(["/p/a.jpg", "/p/b"], force=True) == {"queued": 2}
    assert b.reindex(stale=True, embeddings=False, all=False, failed=False)["embed"] == 2
    assert b.watch("/p", polling=True)["mode"] == "polling"
    assert b.unwatch("/p", forget=True)["forgotten"] == 4
    assert served.calls == [
        ("status", True),
        ("search", plain),
        ("search", filtered),
        ("index", (["/p/a.jpg", "/p/b"], True)),
        ("reindex", (True, False, False, False)),
        ("watch", ("/p", True)),
        ("unwatch", ("/p", True)),
    ]


def test_remote_backend_reports_the_daemons_refusal(settings: Settings, served: Recording) -> None:
    remote = RemoteBackend(settings.socket_path)
    with pytest.raises(DaemonError, match="try again in a moment"):
        remote.search(SearchRequest("refuse"))
    with pytest.raises(DaemonError, match="limit"):  # the API validates the body too, not only the client
        remote.request("POST", "/v1/search", {"query": "x", "limit": 0})
    with pytest.raises(DaemonError, match="since is after"):
        remote.request("POST", "/v1/search", {"query": "x", "since": 2.0, "until": 1.0})
    assert served.calls == [("search", SearchRequest("refuse"))]


def test_no_daemon_means_no_remote_backend(settings: Settings, tmp_path: Path) -> None:
    assert RemoteBackend.connect(settings.socket_path) is None  # no socket file
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))  # bound, never listening: what a daemon killed with -9 leaves behind
    s.close()
    assert RemoteBackend.connect(stale) is None
    with pytest.raises(DaemonUnavailable):
        RemoteBackend(stale).status(failed=False)


def test_the_cli_uses_the_daemon_when_it_answers(
    settings: Settings,
    served: Recording,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(commands.open_backend(settings), RemoteBackend)
    assert capsys.readouterr().err == ""
    (tmp_path / "rel").mkdir()
    monkeypatch.chdir(tmp_path)
    assert commands.run_index(settings, paths=["rel"], force=False) == 0
    assert served.calls[-1] == ("index", ([str(tmp_path / "rel")], False))
    assert "queued 1 files with the running daemon" in capsys.readouterr().out
    assert commands.run_reindex(settings, stale=True, embeddings=False, everything=False) == 0
    assert "re-ran OCR on 1, captions on 0, embeddings on 2 images; 0 failed" in capsys.readouterr().out
    assert commands.run_search(settings, query="refuse", show=Show(as_json=True)) == ExitCode.UNAVAILABLE
    assert capsys.readouterr().err == "pixgrep: the daemon is starting; try again in a moment\n"


def test_the_cli_falls_back_to_the_index_and_says_so(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    backend = commands.open_backend(settings)
    assert isinstance(backend, LocalBackend) and not backend.live
    assert capsys.readouterr().err == "pixgrep: no daemon running; using the index directly\n"
    code = commands.run_search(settings, query="x")
    assert code == ExitCode.FAILURE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "pixgrep: no daemon running; using the index directly"
    assert err[1].startswith("pixgrep: no index at ") and len(err) == 2


def test_local_status_reads_only_the_config_without_an_index(settings: Settings) -> None:
    info = LocalBackend(settings).status(failed=True)
    assert info["daemon"] == {"running": False} and info["counts"] == {} and info["watched"] == []
    with pytest.raises(NoIndex):
        LocalBackend(settings).search(SearchRequest("x"))
    assert LocalBackend(settings).watch("/p", polling=False)["mode"] is None


def test_the_daemons_backend_refuses_work_until_ready(settings: Settings) -> None:
    from pixgrep.service.supervisor import Supervisor

    sup = Supervisor(settings)
    b: Backend = sup.backend
    assert b.live and b.health()["state"] == "starting"
    with pytest.raises(ApiError, match="the daemon is starting; try again in a moment") as e:
        b.search(SearchRequest("x"))
    assert e.value.status == 503
    with pytest.raises(ApiError, match="starting"):
        b.status(failed=False)
    sup.state = "stopping"
    with pytest.raises(ApiError, match="the daemon is stopping"):
        b.index(["/p"], force=False)
