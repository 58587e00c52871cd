"""Recognising a full disk behind SQLite's, SQLAlchemy's and the OS's errors (logic only; the real full disk is
tests/test_faults.py::test_full_disk_index_exits_74_and_search_keeps_answering)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest
from pixgrep import diskfull
from pixgrep.errors import DiskFull, StoreUnavailable
from sqlalchemy.exc import OperationalError


def test_enospc_anywhere_in_the_chain_names_the_file(tmp_path: Path) -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))
        except OSError as inner:
            raise StoreUnavailable("Milvus upsert failed") from inner
    except StoreUnavailable as e:
        df = diskfull.classify(e, tmp_path)
    assert df is not None and df.errno == errno.ENOSPC and df.path == str(tmp_path / "x")
    assert str(df).startswith(f"no space left on {tmp_path / 'x'} (ENOSPC, errno 28")


def test_sqlite_full_through_sqlalchemy(tmp_path: Path) -> None:
    e = OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
    df = diskfull.classify(e, tmp_path)
    assert isinstance(df, DiskFull) and df.path == str(tmp_path) and "\n" not in str(df)


def test_io_error_counts_only_when_the_disk_has_no_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = sqlite3.OperationalError("disk I/O error")
    assert diskfull.classify(e, tmp_path) is None  # this disk has room: a real I/O error, not a full disk
    monkeypatch.setattr(diskfull, "no_room", lambda path: True)
    df = diskfull.classify(e, tmp_path / "not" / "made" / "yet")
    assert df is not None and df.path == str(tmp_path / "not" / "made" / "yet")
    assert diskfull.classify(ValueError("bad"), tmp_path) is None


def test_no_room_reads_the_nearest_existing_folder(tmp_path: Path) -> None:
    assert diskfull.no_room(tmp_path / "a" / "b") is False
