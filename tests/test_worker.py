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
        self.down = False
        self.probes = 0

    def flush(self) -> None:
        self.flushes += 1

    def probe(self) -> None:
        self.probes += 1
        if self.down:
            raise StoreUnavailable("Milvus probe failed: connection refused")


class FakePipeline:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.seen: list[str] = []
        self.unloads = 0
        self.outcome: Callable[[str], Outcome] = lambda p: Outcome(p, OutcomeStatus.INDEXED, "h")
        self.lock = threading.Lock()

        self.store_error: StoreUnavailable | None = None

    def process(
        self,
        paths: list[tuple[str, str | None]],
        *,
        progress: Any,
        force: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Outcome]:
        """Like Pipeline.process: RETRY for every path while the store is down (store_error set)."""
        out = []
        self.store_error = StoreUnavailable("Milvus upsert failed: connection refused") if self.store.down else None
        for p, _root in paths:
            if should_stop is not None and should_stop():
                break
            with self.lock:
                self.seen.append(p)
            if self.store_error is not None:
                o = Outcome(p, OutcomeStatus.RETRY, "h", str(self.store_error))
            else:
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


def test_a_store_outage_pauses_the_queue_and_counts_no_attempt(
    run_worker: Callable[..., tuple[Worker, FakePipeline]], q: WorkQueue
) -> None:
    """Issue 9, defect 2: nothing is marked failed for an outage, and work resumes when a probe answers."""
    w, fp = run_worker()
    w.outage.first, w.outage.cap = 0.01, 0.05
    fp.store.down = True
    q.put([Job(f"/x/{i}.png") for i in range(5)])
    wait_for(lambda: w.outage.down and fp.store.probes >= 4, what="the worker to pause and probe")
    # Paused, not failing: every item is pending again with no attempt counted, and nothing new is claimed.
    assert set(_states(q).values()) == {"pending"}
    assert {r[3] for r in q.rows()} == {None} and all(a == 0 for a in _attempts(q))
    seen = len(fp.seen)
    assert "store unavailable since" in (w.outage.describe() or "")
    fp.store.down = False
    wait_for(lambda: set(_states(q).values()) == {"done"}, what="the queue to resume")
    assert not w.outage.down and len(fp.seen) == seen + 5


def test_items_not_reached_before_a_stop_go_back_uncounted(q: WorkQueue) -> None:
    fp = FakePipeline()
    w = Worker(fp, q, batch_size=8, stable_seconds=0.0)  # type: ignore[arg-type]
    q.put([Job(f"/x/{i}.png") for i in range(4)])
    fp.outcome = lambda p: (w.stop(0), Outcome(p, OutcomeStatus.INDEXED, "h"))[1]  # SIGTERM mid-batch
    assert w.step()
    assert sorted(_states(q).values()) == ["done", "pending", "pending", "pending"]
    assert all(a == 0 for a in _attempts(q))


def _attempts(q: WorkQueue) -> list[int]:
    with q.db.engine.connect() as conn:
        return [int(r[0]) for r in conn.exec_driver_sql("SELECT attempts FROM queue")]
