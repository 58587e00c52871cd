"""The real watcher on tmp_path: events become queue rows, and with the worker
and the real pipeline the books and Milvus converge to what is on disk."""

from __future__ import annotations

import errno
import hashlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import copy_corpus, corpus_files, store_mismatches, wait_for
from pixgrep import scan
from pixgrep.app import Index
from pixgrep.catalog import Catalog
from pixgrep.images import content_hash
from pixgrep.service.queue import Job, WorkQueue
from pixgrep.service.watcher import Folder, StabilityGate, Watcher
from pixgrep.service.worker import Worker
from pixgrep.settings import Settings, load_settings
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

STABLE = 0.3


# --------------------------------------------------------------------------
# Events -> queue rows (no pipeline)


@pytest.fixture
def qdb(tmp_path: Path) -> Iterator[WorkQueue]:
    db = Catalog(tmp_path / "q.sqlite")
    yield WorkQueue(db)
    db.close()


@pytest.fixture
def flt(home: Path) -> scan.FileFilter:
    return scan.FileFilter.from_settings(load_settings())


def _pending(q: WorkQueue) -> dict[str, tuple[str, str | None]]:
    return {p: (op, src) for p, op, src in q.pending()}


@pytest.fixture
def watched(tmp_path: Path, qdb: WorkQueue, flt: scan.FileFilter) -> Iterator[tuple[Path, WorkQueue, Watcher]]:
    root = tmp_path / "pics"
    root.mkdir()
    w = Watcher(qdb, flt, stable_seconds=STABLE)
    w.start([Folder(str(root))])
    yield root, qdb, w
    w.stop()


def test_events_only_enqueue_and_map_to_ops(watched: tuple[Path, WorkQueue, Watcher]) -> None:
    root, q, w = watched
    src = corpus_files(1)[0]
    a = root / "a.jpg"
    shutil.copyfile(src, a)
    wait_for(lambda: _pending(q).get(str(a)) == ("upsert", None), what="the copied file to pass the gate")
    (root / "ignored.jpg.part").write_bytes(b"partial download")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    a.rename(root / "b.jpg")
    wait_for(lambda: str(root / "b.jpg") in _pending(q), what="the rename")
    assert _pending(q)[str(root / "b.jpg")] == ("move", str(a))
    (root / "b.jpg").unlink()
    # inotify keeps order: once a later file is queued, the events above have all been seen.
    shutil.copyfile(src, root / "sentinel.jpg")
    wait_for(lambda: str(root / "sentinel.jpg") in _pending(q), what="the sentinel")
    pending = _pending(q)
    assert pending[str(root / "b.jpg")] == ("move", str(a))  # the delete folds into the pending move
    assert not any(p.endswith((".part", ".hidden.jpg", ".txt")) for p in pending)


def test_temp_file_renamed_into_place_is_gated_as_new(watched: tuple[Path, WorkQueue, Watcher]) -> None:
    root, q, w = watched
    tmp = root / "shot.png.tmp"  # excluded name: the screenshot tool's temp file
    shutil.copyfile(corpus_files(1)[0], tmp)
    tmp.rename(root / "shot.png")
    wait_for(lambda: str(root / "shot.png") in _pending(q), what="the renamed file")
    assert _pending(q) == {str(root / "shot.png"): ("upsert", None)}


def test_a_change_of_mode_alone_queues_the_file_again(watched: tuple[Path, WorkQueue, Watcher]) -> None:
    """chmod fixes an unreadable file without touching its bytes or mtime: it must be retried (issue 9, defect 8)."""
    root, q, w = watched
    f = root / "locked.jpg"
    shutil.copyfile(corpus_files(1)[0], f)
    wait_for(lambda: str(f) in _pending(q), what="the new file")
    q.done(q.claim(10))  # processed (failed as unreadable, say)
    assert _pending(q) == {}
    mtime = f.stat().st_mtime_ns
    f.chmod(0o600)
    wait_for(lambda: str(f) in _pending(q), what="the chmod to queue the file again")
    assert _pending(q)[str(f)] == ("upsert", None) and f.stat().st_mtime_ns == mtime


def test_directory_move_and_delete(watched: tuple[Path, WorkQueue, Watcher]) -> None:
    root, q, w = watched
    sub = root / "sub"
    sub.mkdir()
    f = sub / "x.jpg"
    shutil.copyfile(corpus_files(1)[0], f)
    wait_for(lambda: str(f) in _pending(q), what="the new file")
    sub.rename(root / "moved")
    wait_for(lambda: {str(root / "moved"), str(root / "moved" / "x.jpg")} <= set(_pending(q)), what="the folder move")
    pending = _pending(q)
    assert pending[str(root / "moved")] == ("move", str(sub))
    assert pending[str(root / "moved" / "x.jpg")] == ("move", str(f))  # watchdog reports the files too
    shutil.rmtree(root / "moved")
    (root / "other").mkdir()
    (root / "other").rmdir()
    wait_for(lambda: str(root / "other") in _pending(q), what="a later folder delete")
    pending = _pending(q)
    # Deleted before the worker got to them: the pending moves absorb the deletes and reconcile both ends.
    assert pending[str(root / "moved")] == ("move", str(sub))
    assert pending[str(root / "other")] == ("delete", None)


def test_stability_gate_waits_for_a_growing_file(tmp_path: Path, qdb: WorkQueue) -> None:
    gate = StabilityGate(qdb, stable_seconds=0.4)
    f = tmp_path / "big.jpg"
    f.write_bytes(b"a")
    gate.touch(str(f))
    t0 = time.monotonic()
    for _ in range(8):  # keeps growing for ~0.8 s without further events
        time.sleep(0.1)
        with f.open("ab") as fh:
            fh.write(b"b" * 1000)
        assert gate.check() == 0
    while not gate.check():
        time.sleep(0.05)
    assert time.monotonic() - t0 >= 0.8 + 0.4 - 0.05
    assert _pending(qdb) == {str(f): ("upsert", None)}


def test_full_gate_spills_to_the_durable_queue_with_a_delay(tmp_path: Path, qdb: WorkQueue) -> None:
    gate = StabilityGate(qdb, stable_seconds=5.0, capacity=2)
    for i in range(4):
        gate.touch(str(tmp_path / f"{i}.jpg"))
    assert gate.waiting() == 2
    assert len(_pending(qdb)) == 2
    assert qdb.claim(10) == []  # not before stable_seconds


def test_inotify_limit_falls_back_to_polling(tmp_path: Path, qdb: WorkQueue, flt: scan.FileFilter) -> None:
    made: list[str] = []

    def factory(polling: bool, interval: float) -> BaseObserver:
        made.append("polling" if polling else "inotify")
        if not polling:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return PollingObserver(timeout=0.1)

    root = tmp_path / "pics"
    root.mkdir()
    w = Watcher(qdb, flt, stable_seconds=0.1, poll_interval=0.1, observer_factory=factory)
    w.start([Folder(str(root))])
    try:
        assert made == ["inotify", "polling"]
        assert w.folders()[0]["mode"] == "polling-fallback"
        shutil.copyfile(corpus_files(1)[0], root / "a.jpg")
        wait_for(lambda: str(root / "a.jpg") in _pending(qdb), what="polling to see the file")
    finally:
        w.stop()


def test_sync_adds_and_removes_observers(tmp_path: Path, qdb: WorkQueue, flt: scan.FileFilter) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    w = Watcher(qdb, flt, stable_seconds=0.1)
    w.start([Folder(str(a))])
    try:
        added, removed = w.sync([Folder(str(b), polling=True)])
        assert (added, removed) == ([str(b)], [str(a)])
        assert [(d["path"], d["mode"]) for d in w.folders()] == [(str(b), "polling")]
        assert w.add(Folder(str(tmp_path / "missing"))) == "error"
    finally:
        w.stop()


def test_a_deleted_and_recreated_folder_is_watched_again(tmp_path: Path, qdb: WorkQueue, flt: scan.FileFilter) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    w = Watcher(qdb, flt, stable_seconds=0.1)
    w.start([Folder(str(root))])
    try:
        assert w.heal([Folder(str(root))]) == []  # healthy: nothing to do
        root.rmdir()
        wait_for(lambda: not w.folders()[0]["alive"], what="the watch to break")
        assert w.heal([Folder(str(root))]) == []  # still missing
        assert w.folders()[0]["mode"] == "error"
        root.mkdir()
        assert w.heal([Folder(str(root))]) == [str(root)]
        shutil.copyfile(corpus_files(1)[0], root / "a.jpg")
        wait_for(lambda: str(root / "a.jpg") in _pending(qdb), what="events from the new watch")
    finally:
        w.stop()


# --------------------------------------------------------------------------
# Watcher + worker + the real pipeline, Milvus Lite and SQLite


@dataclass
class Stack:
    root: Path
    settings: Settings
    index: Index
    queue: WorkQueue
    worker: Worker
    watcher: Watcher

    @property
    def ocr_runs(self) -> int:
        """Images OCR'd so far (the pool's public count)."""
        return self.index.pipeline.ocr_pool.runs


@pytest.fixture
def stack(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    root = tmp_path / "pics"
    root.mkdir()
    settings = load_settings(
        watch={"stable_seconds": STABLE}, pipeline={"batch_size": 4}, ocr={"workers": 0}, milvus={"flush_rows": 1}
    )
    index = Index(settings, ocr_workers=0)
    q = WorkQueue(index.db)
    flt = scan.FileFilter.from_settings(settings)
    worker = Worker(index.pipeline, q, batch_size=4, stable_seconds=STABLE, roots=lambda: [str(root)], flt=flt)
    watcher = Watcher(q, flt, stable_seconds=STABLE)
    index.pipeline.store  # noqa: B018  (open Milvus before the clock starts)
    worker.start()
    watcher.start([Folder(str(root))])
    try:
        yield Stack(root, settings, index, q, worker, watcher)
    finally:
        watcher.stop()
        assert worker.stop(60)
        index.close()


def _disk(root: Path) -> dict[str, str]:
    return {str(p): content_hash(p.read_bytes()) for p in root.rglob("*.jpg") if p.is_file()}


def _milvus_rows(st: Stack) -> dict[str, int]:
    return st.index.pipeline.store.segments_per_content()


def converged(st: Stack) -> bool:
    if st.queue.depth()["pending"] or st.queue.depth()["processing"] or st.watcher.gate.waiting():
        return False
    disk = _disk(st.root)
    books = st.index.db.paths()
    contents = {c.hash: c for c in st.index.db.contents()}
    if books != disk:
        return False
    return set(contents) == set(disk.values()) and all(c.status == "done" for c in contents.values())


def assert_consistent(st: Stack) -> None:
    """The books match the disk; Milvus and the local dense index hold exactly the segments of the live contents."""
    wait_for(lambda: converged(st), timeout=60, what="the index to converge to the disk")
    store = st.index.pipeline.store
    assert getattr(store, "local", None) is not None, "Milvus Lite keeps a local dense index"
    store.flush()
    contents = {c.hash: (c.status, c.lines, c.captions) for c in st.index.db.contents()}
    assert store_mismatches(contents, store) == []


@pytest.mark.slow
def test_index_converges_through_copy_move_rename_copy_delete(stack: Stack) -> None:
    st, root = stack, stack.root
    a, b, c = copy_corpus(root, corpus_files(3, stride=97))
    assert_consistent(st)
    assert st.ocr_runs == len(set(_disk(root).values()))  # each image OCR'd once
    n_ocr = st.ocr_runs

    a.rename(root / "renamed.jpg")  # rename
    (root / "sub").mkdir()
    b.rename(root / "sub" / b.name)  # move into a new folder
    shutil.copyfile(c, root / "sub" / "copy.jpg")  # copy: a second path to known content
    assert_consistent(st)
    assert st.ocr_runs == n_ocr, "a rename, a move or a copy must not OCR again"

    (root / "sub").rename(root / "sub2")  # a folder move
    assert_consistent(st)
    (root / "renamed.jpg").unlink()  # the last path of a content: its vectors go
    c.unlink()  # the copy still holds c's content
    assert_consistent(st)
    assert st.ocr_runs == n_ocr
    assert len(_milvus_rows(st)) == 2

    # A screenshot tool's temp file renamed into place is indexed once, under its final name.
    d = corpus_files(1, offset=5)[0]
    shutil.copyfile(d, root / "shot.jpg.part")
    (root / "shot.jpg.part").rename(root / "shot.jpg")
    assert_consistent(st)
    assert st.ocr_runs == n_ocr + 1


@pytest.mark.slow
def test_half_written_file_is_never_read(stack: Stack) -> None:
    st = stack
    big = max(corpus_files(1000), key=lambda p: p.stat().st_size)
    data = big.read_bytes()
    target = st.root / "big.jpg"
    chunk = len(data) // 12 + 1
    with target.open("wb") as fh:
        for i in range(0, len(data), chunk):
            fh.write(data[i : i + chunk])
            fh.flush()
            time.sleep(STABLE / 3)  # slower than nothing, faster than the gate
    assert_consistent(st)
    final = hashlib.blake2b(data, digest_size=16).hexdigest()
    # One OCR run, and the only content the books ever held is the complete file's.
    assert st.ocr_runs == 1 and [c.hash for c in st.index.db.contents()] == [final], (
        "only the complete file may reach OCR"
    )


@pytest.mark.slow
def test_move_whose_ends_both_vanished_forgets_them(stack: Stack) -> None:
    st = stack
    (st.root / "d").mkdir()
    copy_corpus(st.root / "d", corpus_files(1, offset=11))
    assert_consistent(st)
    st.watcher.stop()  # from here on only the queue speaks
    shutil.rmtree(st.root / "d")
    st.queue.put([Job(str(st.root / "e"), "move", str(st.root / "d"))])
    assert_consistent(st)
    assert _milvus_rows(st) == {}


@pytest.mark.slow
def test_a_vanished_watched_folder_keeps_its_index(stack: Stack) -> None:
    st = stack
    copy_corpus(st.root, corpus_files(1, offset=21))
    assert_consistent(st)
    st.watcher.stop()
    away = st.root.with_name("unmounted")
    st.root.rename(away)  # looks like an unmounted drive
    st.queue.put([Job(str(st.root), "delete")])
    wait_for(lambda: st.queue.depth()["pending"] + st.queue.depth()["processing"] == 0, what="the delete")
    assert len(st.index.db.paths()) == 1
    away.rename(st.root)
