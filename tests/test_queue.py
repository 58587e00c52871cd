from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep.catalog import Catalog
from pixgrep.service.queue import Job, WorkQueue, backoff


class Clock:
    """A clock the test moves by hand, so backoff needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def q(tmp_path: Path, clock: Clock) -> Iterator[WorkQueue]:
    db = Catalog(tmp_path / "q.sqlite")
    yield WorkQueue(db, max_attempts=3, clock=clock)
    db.close()


def test_claim_done_cycle_and_coalescing(q: WorkQueue) -> None:
    q.put([Job("/a.jpg"), Job("/b.jpg"), Job("/a.jpg")])  # a burst on /a.jpg coalesces
    assert q.depth()["pending"] == 2
    items = q.claim(10)
    assert [it.path for it in items] == ["/a.jpg", "/b.jpg"]
    assert q.depth() == {"pending": 0, "processing": 2, "done": 0, "failed": 0}
    assert q.claim(10) == []
    q.done(items)
    assert q.depth()["done"] == 2


def test_event_during_processing_requeues(q: WorkQueue) -> None:
    q.upsert("/a.jpg")
    (item,) = q.claim(1)
    q.upsert("/a.jpg")  # the file changed again while the worker was reading it
    q.done([item])  # must not swallow the newer event
    assert [(r[0], r[2]) for r in q.rows()] == [("/a.jpg", "pending")]
    assert [it.path for it in q.claim(1)] == ["/a.jpg"]


def test_pending_move_absorbs_upsert_and_delete(q: WorkQueue) -> None:
    q.move("/old.jpg", "/new.jpg")
    q.upsert("/new.jpg")
    q.delete("/new.jpg")
    (item,) = q.claim(5)
    assert (item.op, item.src) == ("move", "/old.jpg")
    q.done([item])
    q.upsert("/new.jpg")  # after the move is done, a new event is a plain upsert
    (item,) = q.claim(5)
    assert (item.op, item.src) == ("upsert", None)


def test_force_absorbs_upsert(q: WorkQueue) -> None:
    q.upsert("/a.jpg", force=True)
    q.upsert("/a.jpg")
    assert q.claim(1)[0].op == "force"


def test_crash_recovery_returns_claims_and_gives_up_on_repeat_offenders(q: WorkQueue) -> None:
    q.put([Job("/a.jpg"), Job("/b.jpg")])
    q.claim(1)  # claimed, then the process "crashes"
    assert q.recover() == 1
    assert q.depth()["pending"] == 2
    for _ in range(2):  # /a.jpg is in flight during every crash; /b.jpg gets done
        items = q.claim(2)
        q.done([it for it in items if it.path == "/b.jpg"])
        q.recover()
    rows = {r[0]: r for r in q.rows()}
    assert rows["/a.jpg"][2] == "failed" and "crashes" in (rows["/a.jpg"][3] or "")
    assert rows["/b.jpg"][2] == "done"


def test_retry_backs_off_then_fails(q: WorkQueue, clock: Clock) -> None:
    q.upsert("/a.jpg")
    (item,) = q.claim(1)
    assert q.retry(item, "Milvus down")
    assert q.claim(1) == []  # not due yet
    assert q.next_due() == clock.now + backoff(1)
    clock.now += backoff(1) - 0.5
    assert q.claim(1) == []
    clock.now += 0.5
    (item,) = q.claim(1)
    assert item.attempts == 1
    assert q.retry(item, "Milvus down")
    assert q.next_due() == clock.now + backoff(2)
    clock.now += backoff(2)
    (item,) = q.claim(1)
    assert not q.retry(item, "Milvus down")  # third attempt of three
    assert q.failures()[0]["error"].startswith("gave up after 3 attempts")
    assert q.requeue_failed() == 1
    assert q.claim(1)[0].attempts == 0


def test_defer_does_not_count_an_attempt(q: WorkQueue, clock: Clock) -> None:
    q.upsert("/a.jpg")
    (item,) = q.claim(1)
    q.defer(item, clock.now + 5)
    assert q.claim(1) == []
    clock.now += 5
    (item,) = q.claim(1)
    assert item.attempts == 0


def test_backoff_grows_and_caps() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(50) == 600.0


def test_prune_and_non_utf8_paths(q: WorkQueue) -> None:
    odd = b"/pics/caf\xe9.jpg".decode("utf-8", "surrogateescape")
    q.upsert(odd)
    (item,) = q.claim(1)
    assert item.path == odd
    q.done([item])
    assert q.prune(older_than=-1) == 1
    assert q.rows() == []


def test_durable_across_reopen(tmp_path: Path) -> None:
    db = Catalog(tmp_path / "q.sqlite")
    WorkQueue(db).put([Job("/a.jpg"), Job("/b.jpg", "delete")])
    db.close()
    with sqlite3.connect(tmp_path / "q.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM queue WHERE state = 'pending'").fetchone()[0] == 2
    db = Catalog(tmp_path / "q.sqlite")
    assert [(it.path, it.op) for it in WorkQueue(db).claim(5)] == [("/a.jpg", "upsert"), ("/b.jpg", "delete")]
    db.close()


def test_schema_2_database_gains_the_src_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = Catalog(path)
    db.close()
    with sqlite3.connect(path) as conn:
        # Back to what db.py wrote before Alembic: no alembic_version, none of revisions 0002-0003's tables.
        for table in ("queue", "alembic_version", "daemons", "content_leases", "root_mounts"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
        conn.execute(
            "CREATE TABLE queue (id INTEGER PRIMARY KEY, path BLOB UNIQUE NOT NULL, op VARCHAR(16) NOT NULL, "
            "state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, not_before FLOAT NOT NULL, error TEXT, "
            "enqueued_at FLOAT NOT NULL, claimed_at FLOAT)"
        )
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db = Catalog(path)
    q = WorkQueue(db)
    q.move("/a.jpg", "/b.jpg")
    assert q.claim(1)[0].src == "/a.jpg"
    db.close()


def test_the_startup_rescan_does_not_reset_the_crash_count(q: WorkQueue) -> None:
    """Issue 9, defect 8: a file in flight during every crash is given up, not retried forever."""
    path = "/pics/crashes-the-daemon.jpg"
    q.put([Job(path)])
    for _ in range(q.max_attempts):
        assert [it.path for it in q.claim(10)] == [path]  # the daemon dies on it (kill -9, OOM)...
        q.recover()  # ...restarts...
        q.put([Job(path, revive=False)])  # ...and its startup rescan finds the file unindexed
    assert q.claim(10) == []
    [(_, _, state, error)] = q.rows()
    assert state == "failed" and "crashes" in (error or "")
    q.put([Job(path)])  # the file changed (a watcher event): worth another try
    assert [it.path for it in q.claim(10)] == [path]


def test_a_full_disk_holds_enqueues_and_pauses_the_worker_s_writes(
    q: WorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The books on a full disk (issue 9): nothing is lost or failed, and all of it lands once there is room."""
    from pixgrep import diskfull
    from pixgrep.catalog import Queue
    from pixgrep.errors import DiskFull

    q.put([Job("/a.jpg")])
    claimed = q.claim(10)
    real_put, real_claim, real_release = Queue.put, Queue.claim, Queue.release

    def full(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Queue, "put", full)
    monkeypatch.setattr(Queue, "claim", full)
    monkeypatch.setattr(Queue, "release", full)
    monkeypatch.setattr(diskfull, "no_room", lambda _path: True)
    assert q.put([Job("/b.jpg"), Job("/c.jpg")]) == 0  # held, not raised (a watcher thread must not die)
    assert q.put([Job("/b.jpg", "delete")]) == 0
    assert q.held == 3 and q.full.down and "no space left on" in (q.full.describe() or "")
    with pytest.raises(DiskFull):
        q.claim(10)
    with pytest.raises(DiskFull):
        q.release(claimed)
    assert q.prune() == 0
    q.full._next = 0.0  # the probe is due now
    assert not q.full.probe() and q.held == 3  # still no room: still held

    monkeypatch.setattr(Queue, "put", real_put)
    monkeypatch.setattr(Queue, "claim", real_claim)
    monkeypatch.setattr(Queue, "release", real_release)
    monkeypatch.setattr(diskfull, "no_room", lambda _path: False)
    q.full._next = 0.0
    assert q.full.probe() and not q.full.down and q.held == 0
    q.release(claimed)
    rows = {path: (op, state) for path, op, state, _src in q.rows()}
    assert rows == {"/a.jpg": ("upsert", "pending"), "/b.jpg": ("delete", "pending"), "/c.jpg": ("upsert", "pending")}
    assert q.depth()["failed"] == 0


def test_other_errors_of_an_enqueue_still_raise_and_keep_what_was_held(
    q: WorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgrep.catalog import Queue

    def broken(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("no such table: queue")

    monkeypatch.setattr(Queue, "put", broken)
    with pytest.raises(sqlite3.OperationalError):
        q.put([Job("/a.jpg")])
    assert q.held == 0 and not q.full.down
