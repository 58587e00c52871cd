"""The worker loop against a fake pipeline: deferral, retries, idle unload, calls, death."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from pixgrep.catalog import Catalog, OutcomeStatus
from pixgrep.errors import StoreUnavailable
from pixgrep.pipeline import Outcome
from pixgrep.service.queue import Job, WorkQueue
from pixgrep.service.worker import Worker


class FakeStore:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


class FakePipeline:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.seen: list[str] = []
        self.unloads = 0
        self.outcome: Callable[[str], Outcome] = lambda p: Outcome(p, OutcomeStatus.INDEXED, "h")
        self.lock = threading.Lock()

    def process(self, paths: list[tuple[str, str | None]], *, progress: Any, force: bool = False) -> list[Outcome]:
        out = []
        for p, _root in paths:
            with self.lock:
                self.seen.append(p)
            o = self.outcome(p)
            progress(o)
            out.append(o)
        return out

    def unload_models(self) -> None:
        self.unloads += 1

    def remove_paths(self, paths: list[str]) -> int:
        return 0

    def remove_tree(self, d: str) -> int:
        return 0


@pytest.fixture
def q(tmp_path: Path) -> Iterator[WorkQueue]:
    db = Catalog(tmp_path / "q.sqlite")
    yield WorkQueue(db, max_attempts=3, backoff=lambda attempts: 0.05)
    db.close()


@pytest.fixture
def run_worker(q: WorkQueue) -> Iterator[Callable[..., tuple[Worker, FakePipeline]]]:
    workers: list[Worker] = []

    def start(**kw: Any) -> tuple[Worker, FakePipeline]:
        fp = FakePipeline()
        w = Worker(fp, q, batch_size=8, **{"stable_seconds": 0.0, **kw})  # type: ignore[arg-type]
        w.start()
        workers.append(w)
        return w, fp

    yield start
    for w in workers:
        assert w.stop(10)


def _states(q: WorkQueue) -> dict[str, str]:
    return {p: state for p, _, state, _ in q.rows()}


def test_a_file_changed_moments_ago_waits(
    run_worker: Callable[..., tuple[Worker, FakePipeline]], q: WorkQueue, tmp_path: Path
) -> None:
    w, fp = run_worker(stable_seconds=0.5)
    f = tmp_path / "fresh.jpg"
    f.write_bytes(b"x")
    t0 = time.monotonic()
    q.upsert(str(f))
    wait_for(lambda: fp.seen, what="the file to be processed")
    assert time.monotonic() - t0 >= 0.4
    wait_for(lambda: _states(q) == {str(f): "done"}, what="done")


def test_retryable_outcomes_back_off_then_fail(
    run_worker: Callable[..., tuple[Worker, FakePipeline]],
    q: WorkQueue,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, fp = run_worker()
    fp.outcome = lambda p: Outcome(p, OutcomeStatus.RETRY, None, "Milvus down")
    q.upsert(str(tmp_path / "a.jpg"))
    wait_for(lambda: _states(q) == {str(tmp_path / "a.jpg"): "failed"}, what="giving up")
    assert len(fp.seen) == 3  # max_attempts
    assert "gave up after 3 attempts: Milvus down" in q.failures()[0]["error"]
    assert w.errors and w.errors[-1]["error"] == "Milvus down"


def test_exceptions_in_a_batch_are_retried_not_fatal(
    run_worker: Callable[..., tuple[Worker, FakePipeline]],
    q: WorkQueue,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, fp = run_worker()

    def outcome(p: str) -> Outcome:
        if len(fp.seen) == 1:
            raise StoreUnavailable("Milvus went away")
        return Outcome(p, OutcomeStatus.INDEXED, "h")

    fp.outcome = outcome
    q.upsert(str(tmp_path / "a.jpg"))
    wait_for(lambda: _states(q) == {str(tmp_path / "a.jpg"): "done"}, what="the retry to succeed")
    assert w.alive and len(fp.seen) == 2


def test_permanent_failures_are_settled_in_the_books(
    run_worker: Callable[..., tuple[Worker, FakePipeline]], q: WorkQueue, tmp_path: Path
) -> None:
    w, fp = run_worker()
    fp.outcome = lambda p: Outcome(p, OutcomeStatus.FAILED, "h", "not an image (looks like a PDF)")
    q.upsert(str(tmp_path / "a.jpg"))
    wait_for(lambda: _states(q) == {str(tmp_path / "a.jpg"): "done"}, what="done")
    assert q.rows()[0][3] == "not an image (looks like a PDF)"
    assert w.stats.failed == 1


def test_idle_unload_and_flush(
    run_worker: Callable[..., tuple[Worker, FakePipeline]], q: WorkQueue, tmp_path: Path
) -> None:
    w, fp = run_worker(idle_unload_seconds=0.2)
    q.upsert(str(tmp_path / "a.jpg"))
    wait_for(lambda: fp.unloads == 1, what="an unload after idling")
    assert fp.store.flushes >= 1  # flushed once the queue ran dry
    time.sleep(0.4)
    assert fp.unloads == 1  # once per idle period
    q.upsert(str(tmp_path / "b.jpg"))
    wait_for(lambda: fp.unloads == 2, what="the next unload")


def test_call_runs_in_the_worker_thread(run_worker: Callable[..., tuple[Worker, FakePipeline]]) -> None:
    w, _ = run_worker()
    assert w.call(lambda: threading.current_thread().name) == "pixgrep-worker"
    with pytest.raises(ZeroDivisionError):
        w.call(lambda: 1 / 0)


def test_a_broken_queue_kills_the_thread(run_worker: Callable[..., tuple[Worker, FakePipeline]], q: WorkQueue) -> None:
    w, _ = run_worker()

    def claim(limit: int) -> list[Any]:
        raise RuntimeError("disk gone")

    q.claim = claim  # type: ignore[method-assign]
    q.put([Job(os.devnull)])
    wait_for(lambda: not w.alive, what="the worker to die")
    assert isinstance(w.exception, RuntimeError)
