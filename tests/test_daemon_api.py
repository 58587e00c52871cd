"""The daemon in-process: its HTTP API, sd_notify calls, reload, and death of the worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import copy_corpus, corpus_files, wait_for
from pixgrep.service.supervisor import Supervisor
from pixgrep.settings import ExitCode, Settings, load_settings

pytestmark = pytest.mark.slow


class FakeNotifier:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ready(self) -> None:
        self.calls.append("READY")

    def status(self, text: str) -> None:
        self.calls.append(f"STATUS={text}")

    def watchdog(self) -> None:
        self.calls.append("WATCHDOG")

    def reloading(self) -> None:
        self.calls.append("RELOADING")

    def stopping(self) -> None:
        self.calls.append("STOPPING")

    def watchdog_interval(self) -> float | None:
        return 0.2


class Running:
    def __init__(self, daemon: Supervisor, notifier: FakeNotifier) -> None:
        self.daemon = daemon
        self.notifier = notifier
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(daemon.run()), name="pixgrep-test-daemon")
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(daemon.settings.socket_path)), base_url="http://d", timeout=60
        )

    def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        r = self.client.request(method, url, **kw)
        return r.status_code, r.json()

    def exit_code(self, timeout: float = 60) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return self.result[0]


@pytest.fixture
def settings(home: Path, tmp_path: Path) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text("[watch]\nstable_seconds = 0.2\n")
    return load_settings(config, ocr={"workers": 0}, pipeline={"batch_size": 4})


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    notifier = FakeNotifier()
    d = Supervisor(settings, ocr_workers=0, notifier=notifier)
    r = Running(d, notifier)
    r.thread.start()
    wait_for(lambda: d.ready.is_set() or not r.thread.is_alive(), 90, "the daemon to start")
    yield r
    d.request_stop()
    r.thread.join(90)
    r.client.close()


def test_api_endpoints_and_lifecycle(running: Running, settings: Settings, tmp_path: Path) -> None:
    r = running
    assert r.call("GET", "/v1/health")[1]["state"] == "running"
    assert "READY" in r.notifier.calls
    # STATUS= comes from the main loop's first tick after READY.
    wait_for(lambda: any(c.startswith("STATUS=") for c in r.notifier.calls), 10, "a STATUS= notification")
    wait_for(lambda: "WATCHDOG" in r.notifier.calls, 10, "a watchdog ping")

    pics = tmp_path / "pics"
    copy_corpus(pics, corpus_files(2, stride=101))
    code, body = r.call("POST", "/v1/index", json={"paths": [str(pics)], "force": False})
    assert (code, body) == (200, {"queued": 2})
    wait_for(lambda: r.call("GET", "/v1/status")[1]["counts"]["indexed"] == 2, 60, "indexing")
    code, body = r.call(
        "POST", "/v1/search", json={"query": "the", "limit": 5, "mode": "hybrid", "in_dir": str(pics), "all": True}
    )
    assert code == 200 and body["results"] and all(x["path"].startswith(str(pics)) for x in body["results"])

    assert r.call("POST", "/v1/search", json={"limit": 3})[0] == 400  # no query
    assert r.call("POST", "/v1/search", content=b"not json")[0] == 400
    assert r.call("POST", "/v1/watch", json={"path": str(tmp_path / "nope")})[0] == 400
    assert r.call("GET", "/v1/nothing")[0] == 404

    code, body = r.call("POST", "/v1/watch", json={"path": str(pics)})
    assert code == 200 and body["mode"] == "inotify"
    assert r.call("GET", "/v1/status")[1]["watched"] == [str(pics)]
    code, body = r.call("POST", "/v1/reindex", json={})
    assert code == 200 and body == {"queued": 0}
    code, body = r.call("POST", "/v1/reindex", json={"stale": True})
    assert code == 200 and body["ocr"] == 0

    r.daemon.request_reload()  # the config has no folders: the API-added one goes
    wait_for(lambda: "RELOADING" in r.notifier.calls, 10, "the reload")
    wait_for(lambda: r.call("GET", "/v1/status")[1]["watched"] == [], 10, "the watch list to follow the config")
    # READY comes right after the reload, which may finish just after the watch list changed.
    after = r.notifier.calls.index("RELOADING") + 1
    wait_for(lambda: len(r.notifier.calls) > after, 10, "the notification after RELOADING")
    assert r.notifier.calls[after] == "READY"

    code, body = r.call("POST", "/v1/unwatch", json={"path": str(pics), "forget": True})
    assert code == 200 and body["forgotten"] == 2
    assert r.call("GET", "/v1/status")[1]["counts"]["paths"] == 0

    r.daemon.request_stop()
    assert r.exit_code() == ExitCode.OK
    assert r.notifier.calls[-1] == "STOPPING"
    assert not settings.socket_path.exists()


def test_a_dead_worker_takes_the_daemon_down(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    r = running
    assert r.daemon.queue is not None

    def boom(limit: int) -> list[Any]:
        raise RuntimeError("the books are gone")

    monkeypatch.setattr(r.daemon.queue, "claim", boom)
    r.daemon.queue.wake.set()
    assert r.exit_code() == ExitCode.SOFTWARE
