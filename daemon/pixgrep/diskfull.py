"""Recognising a full disk behind the errors SQLite, Milvus Lite and the OS raise for it.

SQLite says "database or disk is full" (SQLITE_FULL) when a write needs a page it cannot get,
but "disk I/O error" (SQLITE_IOERR_SHMSIZE, ...) when it cannot even size its WAL index in a
full file system; Milvus Lite lets the OSError or sqlite3 error through, or pymilvus wraps it in
text. So an error counts as a full disk when ENOSPC/EDQUOT is in its chain, SQLite says
SQLITE_FULL, or it is an I/O-ish error while the file system holding the state has no room left.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from pixgrep.errors import DiskFull

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Below this much free space (or these many free inodes) an I/O error is taken to be the full disk.
LOW_SPACE = 1 << 20
LOW_INODES = 16


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in out and len(out) < 16:
        out.append(cur)
        # SQLAlchemy keeps the DBAPI error in .orig; Python in __cause__/__context__.
        cur = getattr(cur, "orig", None) or cur.__cause__ or cur.__context__
    return out


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def no_room(path: Path) -> bool:
    """True when the file system holding ``path`` has (almost) no free space or inodes for this user."""
    try:
        st = os.statvfs(_existing(path))
    except OSError:
        return False
    free_inodes_known = st.f_files > 0
    return st.f_bavail * st.f_frsize < LOW_SPACE or (free_inodes_known and st.f_favail < LOW_INODES)


def classify(e: BaseException, path: Path) -> DiskFull | None:
    """A DiskFull naming ``path`` (the state folder) if ``e`` comes from a full disk; else None."""
    if isinstance(e, DiskFull):
        return e
    io_like = False
    for link in _chain(e):
        full = _full(link, path)
        if full is not None:
            return full
        io_like = io_like or isinstance(link, (OSError, sqlite3.Error)) or "No space left on device" in str(link)
    if io_like and no_room(path):
        return DiskFull(str(path), errno.ENOSPC)
    return None


def _full(link: BaseException, path: Path) -> DiskFull | None:
    """One error of the chain that says the disk is full by itself."""
    if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
        return DiskFull(str(link.filename or path), link.errno)
    if isinstance(link, sqlite3.Error) and (
        getattr(link, "sqlite_errorname", "") == "SQLITE_FULL" or "database or disk is full" in str(link)
    ):
        return DiskFull(str(path), errno.ENOSPC)
    return None
