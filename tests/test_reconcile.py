from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep import scan
from pixgrep.catalog import Catalog
from pixgrep.service.queue import WorkQueue
from pixgrep.service.reconcile import reconcile
from pixgrep.settings import load_settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Catalog]:
    d = Catalog(tmp_path / "books.sqlite")
    yield d
    d.close()


@pytest.fixture
def flt(home: Path) -> scan.FileFilter:
    return scan.FileFilter.from_settings(load_settings())


def _book(db: Catalog, path: Path, *, status: str = "done", digest: str | None = None, stat: bool = True) -> None:
    st = path.stat() if stat else None
    h = digest or f"h{abs(hash(str(path))):x}"[:32]
    db.seed(
        [] if db.content(h) else [{"hash": h, "status": status}],
        [
            {
                "path": str(path),
                "content_hash": h,
                "size": st.st_size if st else 1,
                "mtime_ns": st.st_mtime_ns if st else 1,
                "inode": st.st_ino if st else 1,
            }
        ],
    )


def _queued(q: WorkQueue) -> dict[str, str]:
    return {p: op for p, op, state, _ in q.rows() if state == "pending"}


def test_reconcile_queues_what_changed_and_what_vanished(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
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


def test_force_queues_everything(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
    root = tmp_path / "pics"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    _book(db, root / "a.jpg")
    q = WorkQueue(db)
    assert reconcile(db, q, str(root), flt).queued == 0
    assert reconcile(db, q, str(root), flt, force=True).queued == 1
    assert _queued(q) == {str(root / "a.jpg"): "force"}


def test_missing_root_forgets_nothing(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
    root = tmp_path / "unmounted"
    _book(db, root / "a.jpg", stat=False)
    q = WorkQueue(db)
    r = reconcile(db, q, str(root), flt)
    assert r.skipped and q.rows() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_unreadable_folder_forgets_nothing(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
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
    tmp_path: Path, db: Catalog, flt: scan.FileFilter, monkeypatch: pytest.MonkeyPatch
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


def test_reconcile_over_many_unchanged_files_queues_nothing(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
    root = tmp_path / "many"
    rows = []
    for d in range(20):
        sub = root / f"d{d:02d}"
        sub.mkdir(parents=True)
        for i in range(250):
            p = sub / f"{i:04d}.jpg"
            p.write_bytes(b"x")
            st = p.stat()
            rows.append(
                {
                    "path": str(p),
                    "content_hash": "h",
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "inode": st.st_ino,
                }
            )
    db.seed([{"hash": "h", "status": "done"}], rows)
    q = WorkQueue(db)
    # Its speed is measured in bench/reconcile.py; here, that one bulk read gets every row right.
    r = reconcile(db, q, str(root), flt)
    assert (r.files, r.unchanged, r.queued, r.deleted) == (5000, 5000, 0, 0)
    assert q.rows() == []


def test_a_symlink_loop_is_queued_so_the_daemon_records_it(tmp_path: Path, db: Catalog, flt: scan.FileFilter) -> None:
    """Issue 9, defect 8: the daemon records symlink loops as `pixgrep index` does (the pipeline says why)."""
    root = tmp_path / "pics"
    root.mkdir()
    (root / "loop.jpg").symlink_to("loop.jpg")
    (root / "a.jpg").symlink_to("b.jpg")
    (root / "b.jpg").symlink_to("a.jpg")
    (root / "dangling.jpg").symlink_to("nowhere.jpg")
    q = WorkQueue(db)
    r = reconcile(db, q, str(root), flt)
    assert _queued(q) == {str(root / n): "upsert" for n in ("loop.jpg", "a.jpg", "b.jpg")}
    assert r.files == 3
