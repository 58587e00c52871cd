"""Private by default: pixgrep's state is readable by its user only, whatever the umask.

The books hold every OCR'd text, so ``$PIXGREP_HOME`` and any cache folder are
0700 and what is in them 0600 (issue 9, defect 7). Three layers:

* ``restrict_umask()`` makes every file the process creates from then on 0600
  and every folder 0700 (SQLite's -wal/-shm, Milvus Lite's segments, the
  local dense index, logs, thumbnails), including files that libraries create;
* ``private_dir()`` creates a state or cache folder 0700, and tightens one
  that an older pixgrep (or another umask) created more open;
* ``loose_entries()`` lists what is still open to group or others, for
  ``pixgrep doctor`` and its ``--repair``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077
_OPEN_BITS = 0o077  # any permission for group or others


def restrict_umask() -> None:
    """Files this process creates from now on are 0600 and folders 0700.

    Process-wide on purpose: the state files are created by SQLite, Milvus Lite
    and faiss as well as by our code, and only the umask reaches them all.
    """
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700 if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & _OPEN_BITS:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OPEN_BITS)
    return path


def private_state(home: Path) -> Path:
    """The state folder 0700 and its top-level entries closed to others (cheap: one listing).

    A 0700 folder already keeps other users out of everything under it; deeper
    entries left open by an older pixgrep are reported and fixed by ``pixgrep doctor``.
    """
    restrict_umask()
    private_dir(home)
    for entry in os.scandir(home):
        st = entry.stat(follow_symlinks=False)
        if st.st_uid == os.getuid() and not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & _OPEN_BITS:
            os.chmod(entry.path, stat.S_IMODE(st.st_mode) & ~_OPEN_BITS)
    return home


def loose_entries(root: Path) -> list[tuple[Path, int]]:
    """``(path, mode)`` of ``root`` and everything under it that group or others may use (symlinks aside)."""
    out: list[tuple[Path, int]] = []
    if not root.exists():
        return out
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        paths.extend(Path(dirpath, n) for n in (*dirnames, *filenames))
    for p in paths:
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & _OPEN_BITS:
            out.append((p, stat.S_IMODE(st.st_mode)))
    return out


def close_entries(entries: list[tuple[Path, int]]) -> list[Path]:
    """Remove group and other permissions from ``entries``; returns those it could not change."""
    failed = []
    for p, mode in entries:
        try:
            os.chmod(p, mode & ~_OPEN_BITS)
        except OSError:
            failed.append(p)
    return failed
