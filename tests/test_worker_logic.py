"""The worker over the real pipeline, catalog and queue, on the stub stages; one batch at a time, no thread."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep.app import Index
from pixgrep.catalog import ContentStatus, Link
from pixgrep.service import converge
from pixgrep.service.outage import Outage
from pixgrep.service.queue import WorkQueue
from pixgrep.service.worker import Worker
from pixgrep.testing import StubOcrEngine, StubStore, text_image


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(stub_index: Index, clock: Clock, tmp_path: Path) -> Iterator[tuple[Index, WorkQueue, Worker]]:
    q = WorkQueue(stub_index.db, max_attempts=3, clock=clock)
    w = Worker(stub_index.pipeline, q, batch_size=8, stable_seconds=0.0, roots=lambda: [str(tmp_path)])
    StubOcrEngine.images = 0
    yield stub_index, q, w


def _rows(q: WorkQueue) -> dict[str, tuple[str, str | None]]:
    return {p: (state, err) for p, _, state, err in q.rows()}


def test_an_upsert_is_indexed_and_its_queue_row_done(parts: tuple[Index, WorkQueue, Worker], tmp_path: Path) -> None:
    ix, q, w = parts
    p = text_image(tmp_path / "a.png", ["queued words"])
    q.upsert(str(p))
    assert w.step() and not w.step()
    assert _rows(q) == {str(p): ("done", None)}
    assert ix.search("queued words")[0].path == str(p) and w.stats.indexed == 1


def test_a_store_outage_pauses_the_queue_keeps_the_ocr_then_indexes(
    parts: tuple[Index, WorkQueue, Worker], tmp_path: Path, clock: Clock
) -> None:
    """Issue 9, defect 2: an outage is not a per-file failure, and its OCR is not redone."""
    ix, q, w = parts
    p = text_image(tmp_path / "a.png", ["outage words"])
    store = ix.pipeline.store
    assert isinstance(store, StubStore)
    # The worker's outage on the test's clock, so the probe comes due without sleeping.
    w.outage = Outage(store.probe, clock=clock)
    store.down = True
    q.upsert(str(p))
    assert w.step()
    # Back to pending with no attempt and no error; the worker is paused until a probe answers.
    assert _rows(q) == {str(p): ("pending", None)} and q.next_due() is not None and q.next_due() <= clock.now
    assert w.outage.down and "store unavailable since" in (w.outage.describe() or "")
    c = ix.db.content_of(str(p))
    assert c is not None and c.status == ContentStatus.PENDING and c.attempts == 0 and c.lines
    assert StubOcrEngine.images == 1
    store.down = False
    assert not w.outage.probe() and w.outage.down  # not due yet: the store is not asked
    clock.now += w.outage.wait_seconds()  # the probe is due
    assert w.outage.probe() and not w.outage.down
    assert w.step()
    assert _rows(q) == {str(p): ("done", None)} and ix.search("outage words")[0].path == str(p)
    assert StubOcrEngine.images == 1  # the kept OCR was used


def test_a_move_relinks_without_ocr_and_a_delete_forgets(
    parts: tuple[Index, WorkQueue, Worker], tmp_path: Path
) -> None:
    ix, q, w = parts
    a = text_image(tmp_path / "a.png", ["moving words"])
    q.upsert(str(a))
    w.step()
    h = ix.db.content_of(str(a))
    assert h is not None and StubOcrEngine.images == 1
    b = tmp_path / "b.png"
    os.rename(a, b)
    q.move(str(a), str(b))
    assert w.step()
    c = ix.db.content_of(str(b))
    assert c is not None and c.hash == h.hash and ix.db.path_entry(str(a)) is None
    assert StubOcrEngine.images == 1 and w.stats.moved == 1

    b.unlink()
    q.delete(str(b))
    assert w.step()
    store = ix.pipeline.store
    assert isinstance(store, StubStore)
    assert ix.db.paths() == {} and ix.db.content(h.hash) is None and store.segments_per_content() == {}


def test_a_bad_file_fails_once_with_its_reason(parts: tuple[Index, WorkQueue, Worker], tmp_path: Path) -> None:
    ix, q, w = parts
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture\n")
    q.upsert(str(bad))
    assert w.step()
    state, err = _rows(q)[str(bad)]
    assert state == "done" and "text" in (err or "")  # recorded in the books: no queue retry
    assert w.stats.failed == 1 and [e["path"] for e in w.errors] == [str(bad)]
    assert [f["path"] for f in ix.db.failures()] == [str(bad)]


def test_a_folder_renamed_twice_before_the_worker_sees_it_costs_no_ocr(
    parts: tuple[Index, WorkQueue, Worker], tmp_path: Path
) -> None:
    """Churn (issue 9): the first move's destination is already gone; its books must travel on, not be dropped."""
    ix, q, w = parts
    a = tmp_path / "a"
    text_image(a / "x.png", ["renamed twice"])
    q.upsert(str(a / "x.png"))
    assert w.step() and StubOcrEngine.images == 1
    a.rename(tmp_path / "b")
    (tmp_path / "b").rename(tmp_path / "c")
    q.move(str(a), str(tmp_path / "b"))  # the watcher's two events, seen after both renames
    q.move(str(tmp_path / "b"), str(tmp_path / "c"))
    while w.step():
        pass
    assert StubOcrEngine.images == 1
    assert list(ix.db.paths()) == [str(tmp_path / "c" / "x.png")]
    assert ix.search("renamed twice")[0].path == str(tmp_path / "c" / "x.png")


def test_renames_seen_out_of_order_leave_no_stale_path(parts: tuple[Index, WorkQueue, Worker], tmp_path: Path) -> None:
    ix, q, w = parts
    a = tmp_path / "a"
    text_image(a / "x.png", ["out of order"])
    q.upsert(str(a / "x.png"))
    assert w.step()
    a.rename(tmp_path / "b")
    (tmp_path / "b").rename(tmp_path / "c")
    q.move(str(tmp_path / "b"), str(tmp_path / "c"))  # the later rename is processed first
    q.move(str(a), str(tmp_path / "b"))
    while w.step():
        pass
    assert StubOcrEngine.images == 1
    assert list(ix.db.paths()) == [str(tmp_path / "c" / "x.png")]


def test_a_delete_handled_after_its_folder_moved_on_leaves_no_ghost(
    parts: tuple[Index, WorkQueue, Worker], tmp_path: Path, clock: Clock
) -> None:
    """Churn (issue 9): the watcher delays deletes, so the books can rename a folder (twice) before the delete
    of a file in it is handled. The delete names the old path; the name the folder moves carried along must
    still leave the books (it used to follow the folder through every rename until the hourly rescan)."""
    ix, q, w = parts
    w.batch_size = 1  # each folder move in its own batch, as when the events arrive apart
    clock.now = time.time()  # the worker's delays are on the wall clock
    b, c, d = tmp_path / "b", tmp_path / "c", tmp_path / "d"
    text_image(b / "gone.png", ["deleted while its folder moved"])
    text_image(b / "kept.png", ["kept while its folder moved"])
    for f in ("gone.png", "kept.png"):
        q.upsert(str(b / f))
    while w.step():
        pass
    assert StubOcrEngine.images == 2
    (b / "gone.png").unlink()
    q.delete(str(b / "gone.png"), not_before=clock.now + 1.0)  # the watcher's delay of a delete
    b.rename(c)
    q.move(str(b), str(c))
    c.rename(d)
    q.move(str(c), str(d))
    while w.step():  # both folder moves; the delete is not due yet
        pass
    clock.now += 60.0  # every delay is over
    while w.step():
        pass
    assert list(ix.db.paths()) == [str(d / "kept.png")]
    assert StubOcrEngine.images == 2  # and the moves cost no OCR
    assert ix.search("kept while its folder moved")[0].path == str(d / "kept.png")


def test_a_gone_name_is_kept_while_a_queued_event_can_take_it_on(
    parts: tuple[Index, WorkQueue, Worker], tmp_path: Path
) -> None:
    """converge.ghosts: only names that are gone and that no live queue row names or moves on."""
    ix, q, w = parts
    x = text_image(tmp_path / "x.png", ["one image"])
    q.upsert(str(x))
    assert w.step()
    digest = ix.db.path_entry(str(x))
    assert digest is not None and digest.content_hash is not None
    st = x.stat()
    names = {n: str(tmp_path / n) for n in ("f/moved-on.png", "g/upserted.png", "h/ghost.png")}
    ix.db.link(
        [Link(p, str(tmp_path), digest.content_hash, st.st_size, st.st_mtime_ns, st.st_ino) for p in names.values()]
    )
    q.move(str(tmp_path / "f"), str(tmp_path / "f2"))  # a folder move from f is queued
    q.upsert(names["g/upserted.png"])  # a row names this one
    touched = [str(tmp_path / d) for d in ("f", "g", "h")] + [str(x)]
    assert converge.ghosts(ix.db, q, touched) == [names["h/ghost.png"]]
    (tmp_path / "h").mkdir()
    shutil.copyfile(x, tmp_path / "h" / "ghost.png")
    assert converge.ghosts(ix.db, q, touched) == []  # back on disk
