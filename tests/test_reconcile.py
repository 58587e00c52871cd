from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep import scan
from pixgrep.db import Content, Database, PathEntry
from pixgrep.service.queue import WorkQueue
from pixgrep.service.reconcile import reconcile
from pixgrep.settings import load_settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(tmp_path / "books.sqlite")
    yield d
    d.close()


@pytest.fixture
def flt(home: Path) -> scan.FileFilter:
    return scan.FileFilter.from_settings(load_settings())


def _book(db: Database, path: Path, *, status: str = "done", digest: str | None = None, stat: bool = True) -> None:
    st = path.stat() if stat else None
    h = digest or f"h{abs(hash(str(path))):x}"[:32]
    with db.session() as s:
        if s.get(Content, h) is None:
            s.add(Content(hash=h, status=status))
            s.flush()
        s.add(
            PathEntry(
                path=str(path),
                content_hash=h,
                size=st.st_size if st else 1,
                mtime_ns=st.st_mtime_ns if st else 1,
                inode=st.st_ino if st else 1,
            )
        )


def _queued(q: WorkQueue) -> dict[str, str]:
    return {p: op for p, op, state, _ in q.rows() if state == "pending"}


def test_reconcile_queues_what_changed_and_what_vanished(tmp_path: Path, db: Database, flt: scan.FileFilter) -> None:
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    files = {n: root / n for n in ("same.jpg", "changed.jpg", "new.jpg", "sub/new2.png", "pending.jpg")}
    for f in files.values():
        f.write_bytes(b"x" * 10)
    (root / "notes.txt").write_text("not an image")
    (root / "dl.jpg.part").write_bytes(b"partial")
    (root / ".hidden" / "secret.jpg").write_bytes(b"x")
    (root / ".dot.jpg").write_bytes(b"x")
    _book(db, files["same.jpg"])
    _book(db, files["changed.jpg"])
    _book(db, files["pending.jpg"], status="pending")
    _book(db, root / "gone.jpg", stat=False)
    _book(db, tmp_path / "elsewhere.jpg", stat=False)  # outside the root: not ours to judge
    files["changed.jpg"].write_bytes(b"y" * 11)

    q = WorkQueue(db)
    r = reconcile(db, q, str(root), flt)
    assert (r.files, r.unchanged, r.queued, r.deleted) == (5, 1, 4, 1)
    assert _queued(q) == {
        str(files["changed.jpg"]): "upsert",
        str(files["new.jpg"]): "upsert",
        str(files["sub/new2.png"]): "upsert",
        str(files["pending.jpg"]): "upsert",
        str(root / "gone.jpg"): "delete",
    }


def test_force_queues_everything(tmp_path: Path, db: Database, flt: scan.FileFilter) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    _book(db, root / "a.jpg")
    q = WorkQueue(db)
    assert reconcile(db, q, str(root), flt).queued == 0
    assert reconcile(db, q, str(root), flt, force=True).queued == 1
    assert _queued(q) == {str(root / "a.jpg"): "force"}


def test_missing_root_forgets_nothing(tmp_path: Path, db: Database, flt: scan.FileFilter) -> None:
    root = tmp_path / "unmounted"
    _book(db, root / "a.jpg", stat=False)
    q = WorkQueue(db)
    r = reconcile(db, q, str(root), flt)
    assert r.skipped and q.rows() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_unreadable_folder_forgets_nothing(tmp_path: Path, db: Database, flt: scan.FileFilter) -> None:
    root = tmp_path / "pics"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "a.jpg").write_bytes(b"x")
    _book(db, locked / "a.jpg")
    locked.chmod(0)
    try:
        q = WorkQueue(db)
        r = reconcile(db, q, str(root), flt)
        assert r.unreadable == [str(locked)] and q.rows() == []
    finally:
        locked.chmod(0o700)


def test_unreadable_folder_forgets_nothing_simulated(
    tmp_path: Path, db: Database, flt: scan.FileFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pics"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "a.jpg").write_bytes(b"x")
    _book(db, locked / "a.jpg")
    real = os.scandir

    def scandir(path: str) -> object:
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    q = WorkQueue(db)
    r = reconcile(db, q, str(root), flt)
    assert r.unreadable == [str(locked)] and q.rows() == []


def test_reconcile_is_fast_over_many_unchanged_files(tmp_path: Path, db: Database, flt: scan.FileFilter) -> None:
    root = tmp_path / "many"
    rows = []
    for d in range(20):
        sub = root / f"d{d:02d}"
        sub.mkdir(parents=True)
        for i in range(250):
            p = sub / f"{i:04d}.jpg"
            p.write_bytes(b"x")
            st = p.stat()
            rows.append((os.fsencode(str(p)), "h", st.st_size, st.st_mtime_ns, st.st_ino))
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO contents (hash, status, text, lines_json, captions_json, versions_json, retryable, attempts, created_at, updated_at) VALUES ('h', 'done', '', '[]', '[]', '{}', 0, 0, 0, 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO paths (path, content_hash, size, mtime_ns, inode, attempts, seen_at) VALUES (?, ?, ?, ?, ?, 0, 0)",
            rows,
        )
    q = WorkQueue(db)
    t0 = time.monotonic()
    r = reconcile(db, q, str(root), flt)
    dt = time.monotonic() - t0
    assert (r.files, r.unchanged, r.queued, r.deleted) == (5000, 5000, 0, 0)
    assert dt < 2.0, f"reconcile of 5000 unchanged files took {dt:.2f}s"
