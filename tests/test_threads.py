"""The daemon's thread lifecycle (StoppableThread) and the supervisor's shutdown order, on stubs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pixgrep.service.supervisor import Supervisor
from pixgrep.service.threads import StoppableThread
from pixgrep.settings import ExitCode, Settings, load_settings


class Looper(StoppableThread):
    """Waits on an event of its own, which on_thread_stop sets."""

    def __init__(self) -> None:
        super().__init__("test-looper")
        self.wake = threading.Event()
        self.events: list[str] = []
        self.rounds = 0

    def on_thread_start(self) -> None:
        self.events.append(f"start in {threading.current_thread().name}")

    def on_thread_stop(self) -> None:
        self.events.append("stop")
        self.wake.set()

    def run(self) -> None:
        while self.should_keep_running():
            self.rounds += 1
            self.wake.wait()


def test_stop_wakes_the_thread_and_joins_it() -> None:
    t = Looper()
    t.start()
    assert t.alive and not t.stopping
    assert t.events == [f"start in {threading.current_thread().name}"]
    assert t.stop(10)
    assert not t.alive and t.stopping and not t.died and t.exception is None
    assert t.events[-1] == "stop"
    with pytest.raises(RuntimeError, match="already started"):
        t.start()


def test_stop_reports_a_thread_that_does_not_end_in_time() -> None:
    release = threading.Event()

    class Stubborn(StoppableThread):
        def run(self) -> None:
            release.wait()  # ignores the stop event

    t = Stubborn("test-stubborn")
    t.start()
    assert t.stop(0.05) is False and t.alive
    release.set()
    assert t.join(10) and not t.alive


def test_a_thread_that_raises_is_dead_with_its_exception() -> None:
    seen: list[BaseException] = []

    class Broken(StoppableThread):
        def run(self) -> None:
            raise ValueError("boom")

    t = Broken("test-broken")
    t.on_death = seen.append
    t.start()
    assert t.join(10)
    assert t.died and isinstance(t.exception, ValueError) and seen == [t.exception]


def test_sleep_returns_early_when_stopped() -> None:
    t = Looper()
    assert t.sleep(0) is False
    assert t.stop(0)  # never started: stopped at once
    assert t.sleep(60) is True


def test_an_unstarted_thread_stops_at_once() -> None:
    t = Looper()
    assert t.stop(0) and not t.alive and not t.died


# The supervisor -----------------------------------------------------------------------------


class Part:
    """A stand-in for one of the supervisor's parts that records what is done to it."""

    def __init__(self, name: str, log: list[str], *, finishes: bool = True) -> None:
        self.name = name
        self.log = log
        self.finishes = finishes
        self.died = False
        self.exception: BaseException | None = None

    def stop(self, timeout: float | None = None) -> bool:
        self.log.append(f"{self.name}.stop")
        return self.finishes

    def close(self) -> None:
        self.log.append(f"{self.name}.close")

    def prune(self) -> None:
        self.log.append(f"{self.name}.prune")

    def dead(self) -> list[str]:
        return []


class Notifier:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return lambda *a: self.log.append(f"notify.{name}") if name != "watchdog_interval" else None


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(None)


def _wired(settings: Settings, *, worker_finishes: bool = True) -> tuple[Supervisor, list[str]]:
    log: list[str] = []
    sup = Supervisor(settings, notifier=Notifier(log))
    watcher = Part("watcher", log)
    watcher.gate = Part("gate", log)  # type: ignore[attr-defined]
    sup.watcher = watcher  # type: ignore[assignment]
    sup.rescanner = Part("rescan", log)  # type: ignore[assignment]
    sup.worker = Part("worker", log, finishes=worker_finishes)  # type: ignore[assignment]
    sup.queue = Part("queue", log)  # type: ignore[assignment]
    sup.index = Part("index", log)  # type: ignore[assignment]
    sup.api = Part("api", log)  # type: ignore[assignment]
    return sup, log


def test_shutdown_stops_intake_drains_closes_and_stops_the_api_last(settings: Settings) -> None:
    sup, log = _wired(settings)
    sup.ready.set()
    assert sup.shutdown() is True
    assert not sup.ready.is_set()  # the API refuses new work while the index closes
    assert log == [
        "notify.stopping",
        "watcher.stop",
        "rescan.stop",
        "worker.stop",
        "queue.prune",
        "index.close",
        "api.stop",
    ]
    assert sup.state == "stopping"


def test_shutdown_leaves_the_store_open_when_the_batch_does_not_finish(settings: Settings) -> None:
    sup, log = _wired(settings, worker_finishes=False)
    assert sup.shutdown() is False
    # The worker still uses the store: no close; its claims go back to the queue at the next start.
    assert "index.close" not in log and "queue.prune" not in log
    assert log[-1] == "api.stop"


def test_a_dead_thread_is_named(settings: Settings) -> None:
    sup, _ = _wired(settings)
    assert sup.dead_thread() is None
    worker = sup.worker
    assert worker is not None
    worker.died = True
    worker.exception = RuntimeError("the books are gone")
    assert sup.dead_thread() == "worker thread died: RuntimeError('the books are gone')"


def test_a_sigterm_during_start_up_exits_cleanly(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    sup = Supervisor(settings, notifier=Notifier(log))

    def start() -> None:
        sup.request_stop()  # SIGTERM while the store was awaited

    monkeypatch.setattr(sup, "start", start)
    assert sup.run() == ExitCode.OK
    assert log == ["notify.stopping"]
