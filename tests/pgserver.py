"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, a temp dir, a Unix socket.

initdb refuses to run as root and CI runs as root, so there the server runs as a dedicated system
user (``pixgrep-pgtest``, created on first use) through ``setpriv``. It listens on no TCP port:
only on a socket in a 0700 directory owned by that user, with trust authentication.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEST_USER = "pixgrep-pgtest"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed here."""


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: Debian keeps them off PATH, per major version."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found (apt-get install postgresql; scripts/install.sh --dev does it)"
        )
    return Path(candidates[-1]).parent


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
             TEST_USER],
            check=True,
        )  # fmt: skip
        return pwd.getpwnam(TEST_USER)


class PgServer:
    """One PostgreSQL cluster in a temp dir; ``url(db)`` names a database on it for SQLAlchemy."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self._prefix: list[str] = []
        self._uid: int | None = None
        if os.geteuid() == 0:
            user = _ensure_user()
            self._uid, gid = user.pw_uid, user.pw_gid
            self._prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={gid}", "--clear-groups", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="pixgrep-pg-"))
        if self._uid is not None:
            os.chown(self.root, self._uid, -1)
        self.data = self.root / "data"
        self.socket_dir = self.root
        self._names = itertools.count()
        self.started = False

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, cwd=self.root)

    def start(self) -> PgServer:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "--username=pixgrep", "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        # Durability off: a test cluster is thrown away, and fsyncs would dominate its run time.
        opts = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://pixgrep@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t{next(self._names)}"
        with psycopg.connect(host=str(self.socket_dir), user="pixgrep", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="pixgrep", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running() -> Iterator[PgServer]:
    server = PgServer()
    try:
        yield server.start()
    finally:
        server.stop()
