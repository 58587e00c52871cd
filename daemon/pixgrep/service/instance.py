"""One daemon per index: a pidfile under an exclusive ``flock`` in the state folder.

A second ``pixgrep daemon`` on the same ``$PIXGREP_HOME`` stops before it opens
anything, with one line naming the running PID and exit 75 (EX_TEMPFAIL): it
never touches the first daemon's socket or waits on its Milvus Lite lock
(issue 9, defect 3). The lock lives in the state folder, not the runtime folder,
so two daemons with different runtime folders still meet here. The kernel drops
an flock when its holder dies, so a stale pidfile left by ``kill -9`` never
blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pixgrep.errors import AlreadyRunning
from pixgrep.private import private_state

PIDFILE = "daemon.pid"


def running_pid(home: Path) -> int | None:
    """The PID of the daemon holding ``home``, or None when none does."""
    path = home / PIDFILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None


class InstanceLock:
    """Held for the daemon's lifetime; ``acquire`` raises AlreadyRunning when another daemon holds it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / PIDFILE
        self._fd: int | None = None

    def acquire(self) -> None:
        private_state(self.home)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "pid unknown"
            raise AlreadyRunning(f"another pixgrep daemon ({who}) is already running on {self.home}", pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Emptied rather than removed: unlinking a locked file lets a third process lock a new one
        # while a second still waits on the old inode.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
