"""The catalog: pixgrep's books, and every SQL statement that reads or writes them.

Tables: ``paths`` (a file name, its stat, and the content it holds), ``contents``
(one row per content hash: OCR lines, captions, versions, status), ``roots``
(indexed folders), ``queue`` (the daemon's durable work queue) and ``meta``.
Identity is the content hash: a path points at a content row, and OCR, captions
and vectors belong to the content, so a rename or a duplicate never costs a
second OCR. Nothing outside this module writes SQL (the local dense index's own
file, ``VectorFile``, included); the rest of pixgrep calls the methods below.

Retry records: one per kind of failure, all decided here
-------------------------------------------------------
* **Path** (``paths.error``, ``paths.attempts``): failures of the *name*, or of bytes
  that never got a content row (unreadable, permission denied, symlink loop, an
  empty file). ``record_path_error`` sets them; linking the path to content clears
  them. A passing error books no stat, so every reconcile or index run tries the
  path again; a permanent one (an empty file) books the stat it failed at and is
  settled until that stat changes (``path_settled``).
* **Content** (``contents.status``, ``retryable``, ``attempts``, ``error``)::

      (new) ──▶ pending ──indexed──────────────────────────▶ done
                  │  ▲
                  │  └─transient failure (Milvus down, OCR crash), attempts < max
                  ├──transient failure, attempts ≥ max ─────▶ failed, retryable
                  └──permanent failure (not an image, bomb) ▶ failed, not retryable

  ``record_failure`` is the one place that decides. *Settled* (``is_settled`` and
  its SQL twin ``SETTLED``) means nothing is left to do for these bytes: done,
  or failed for good. A settled content is never re-read while its path's stat is
  unchanged; any other content is retried by the next run (``reset_failed`` puts
  the failed back to pending on ``reindex --failed``). New bytes are a new hash.
* **Queue** (``queue.state``, ``attempts``, ``not_before``)::

      pending ──claim──▶ processing ──done──▶ done (pruned after DONE_TTL)
         ▲                  │ │
         └──retry (backoff)─┘ └─fail / attempts ≥ max ─▶ failed

  ``Queue.retry`` backs off ``backoff(attempts)`` seconds; ``defer`` puts back
  without counting an attempt; ``recover`` (at start) returns a crashed run's
  claims and fails an item that was in flight during ``max_attempts`` crashes. A
  newer event for the same path resets the row to pending (one row per path); a
  row being processed instead keeps its holder and is marked ``requeue``, and goes
  back to pending when the holder is done with it.

Several daemons (PostgreSQL): a claim records its holder (``claimed_by``, the
queue's ``owner``) and a lease (``lease_until``) that the holder's heartbeat
extends (``extend``); any daemon returns claims whose lease ran out
(``reclaim_expired``), and ``recover`` at start takes back only this host's. Claims
take rows ``FOR UPDATE SKIP LOCKED``, so two daemons never wait on each other's
rows. Bytes about to be OCR'd are leased too (``content_leases``): another daemon
meeting the same bytes waits (``OutcomeStatus.BUSY``) and then links them.

Writes and the vector store: decide, commit, then act
------------------------------------------------------
No store call runs inside a transaction here; the pipeline orders them so that a
crash between any two steps leaves books that the next run repairs:

1. *Indexing*: vectors are upserted into the store first, then the content row is
   committed as done. A crash in between leaves the content pending (retried) and
   the store holding its rows, which the retry's upsert replaces.
2. *Forgetting* (a path removed, or re-pointed at other bytes): the path change is
   committed first, leaving the content row without a path, an *orphan*. Search
   shows only contents with a path, so an orphan is invisible. Then its vectors
   are deleted from the store, then ``delete_orphans`` deletes the rows that still
   have no path. A crash (or a store outage) before the last step leaves orphans,
   which ``purge_orphans`` (every ``index`` run and daemon rescan) finds with
   ``orphans()`` and deletes in the same order. An orphan that got a path back in
   the meantime (the same bytes copied in again) is not deleted but set pending,
   so its vectors are written again.

Dialects: everything is SQLAlchemy (ORM or Core), one schema for SQLite and
PostgreSQL, created and upgraded by Alembic (``pixgrep.migrate``,
``pixgrep/migrations``). The dialect-specific parts are ``_engine`` (pragmas and
WAL for SQLite, a pre-pinged pool for PostgreSQL) and the choice of ``INSERT ...
ON CONFLICT`` in ``_insert``; ``FOR UPDATE SKIP LOCKED`` renders on PostgreSQL
only; the queries are portable. ``VectorFile`` is the local dense index's own SQLite file, not the
books.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from pixgrep import migrate
from pixgrep.errors import BooksUnavailable
from pixgrep.private import private_state
from pixgrep.roots import RootMap, folder_arg, make_key

_CHUNK = 500  # bound parameters per IN (...), well under SQLite's limit


# --------------------------------------------------------------------------
# Vocabulary


class ContentStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class QueueOp(StrEnum):
    UPSERT = "upsert"  # index if changed
    FORCE = "force"  # re-read even if unchanged
    DELETE = "delete"  # forget a file or a whole folder
    MOVE = "move"  # src -> path without new OCR


class QueueState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class OutcomeStatus(StrEnum):
    """What the pipeline did with one path."""

    INDEXED = "indexed"
    LINKED = "linked"  # known bytes: the path now points at them, no OCR
    UNCHANGED = "unchanged"
    FAILED = "failed"  # recorded in the books with its reason
    RETRY = "retry"  # transient: the caller should try again later
    BUSY = "busy"  # another daemon is reading these bytes: try again shortly, no attempt counted

    @property
    def recorded(self) -> bool:
        """The books hold the result: nothing for a queue to retry."""
        return self not in (OutcomeStatus.RETRY, OutcomeStatus.BUSY)


def is_settled(status: str | None, retryable: bool | None) -> bool:
    """Nothing left to do for a content's bytes: indexed, or failed for good."""
    return status == ContentStatus.DONE or (status == ContentStatus.FAILED and not retryable)


def path_settled(
    error: str | None, content_hash: str | None, size: int, mtime_ns: int, status: str | None, retryable: bool | None
) -> bool:
    """Nothing left to do for a path at its booked stat: its content is settled, or its bytes failed for
    good (a path error with no content but a booked stat; see ``Catalog.record_path_error``)."""
    if error is None:
        return is_settled(status, retryable)
    return content_hash is None and (size, mtime_ns) != (0, 0)


# --------------------------------------------------------------------------
# Tables


class FsPath(TypeDecorator[str]):
    """A file path stored as its raw bytes, so names that aren't UTF-8 survive."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else os.fsdecode(value)


def path_prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """Byte range [lo, hi) covering every path under directory ``prefix``."""
    p = os.fsencode(prefix.rstrip("/")) + b"/"
    return p, p[:-1] + b"0"  # '0' is the byte after '/'


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Content(Base):
    __tablename__ = "contents"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ContentStatus.PENDING, index=True)
    source: Mapped[str | None] = mapped_column(String(16))  # ocr | caption | ocr+caption | none
    text: Mapped[str] = mapped_column(Text, default="")
    lines_json: Mapped[str] = mapped_column(Text, default="[]")
    captions_json: Mapped[str] = mapped_column(Text, default="[]")
    width: Mapped[int | None]
    height: Mapped[int | None]
    versions_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[float] = mapped_column(default=time.time)
    updated_at: Mapped[float] = mapped_column(default=time.time)

    @property
    def lines(self) -> list[dict[str, Any]]:
        return list(json.loads(self.lines_json))

    @property
    def captions(self) -> list[str]:
        return list(json.loads(self.captions_json))

    @property
    def versions(self) -> dict[str, str]:
        return dict(json.loads(self.versions_json))

    @property
    def settled(self) -> bool:
        return is_settled(self.status, self.retryable)


# is_settled() as a SQL condition on Content, for bulk queries.
SETTLED = or_(Content.status == ContentStatus.DONE, and_(Content.status == ContentStatus.FAILED, ~Content.retryable))


class PathEntry(Base):
    __tablename__ = "paths"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(ForeignKey("contents.hash"), index=True)
    root: Mapped[str | None] = mapped_column(FsPath, index=True)
    # 64-bit: sizes, nanosecond mtimes and inode numbers overflow PostgreSQL's INTEGER.
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    inode: Mapped[int] = mapped_column(BigInteger, default=0)
    # Errors that belong to the path, not the bytes (unreadable, vanished).
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    seen_at: Mapped[float] = mapped_column(default=time.time)


class Root(Base):
    __tablename__ = "roots"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    added_at: Mapped[float] = mapped_column(default=time.time)


class RootMount(Base):
    """Where a host mounts a named root (``pixgrep watch DIR --name NAME``); ``[roots]`` in the config wins."""

    __tablename__ = "root_mounts"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    path: Mapped[str] = mapped_column(FsPath)
    added_at: Mapped[float] = mapped_column(default=time.time)


class QueueItem(Base):
    """Durable work queue: pending -> processing -> done | failed."""

    __tablename__ = "queue"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    op: Mapped[str] = mapped_column(String(16), default=QueueOp.UPSERT)
    # The old path of a move (path is the new one).
    src: Mapped[str | None] = mapped_column(FsPath)
    state: Mapped[str] = mapped_column(String(16), default=QueueState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[float] = mapped_column(default=time.time)
    claimed_at: Mapped[float | None]
    # Which daemon holds a processing row, and until when (its heartbeat extends the lease).
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[float | None]
    # A newer event arrived while the row was processing: back to pending when that ends.
    requeue: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (Index("ix_queue_state_not_before", "state", "not_before"),)


class ContentLease(Base):
    """Bytes one daemon is reading and OCR'ing: another daemon meeting them (a copy, a rename) waits."""

    __tablename__ = "content_leases"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    until: Mapped[float]


class DaemonRow(Base):
    """One daemon process sharing these books: its host, last heartbeat and rates."""

    __tablename__ = "daemons"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    started_at: Mapped[float]
    last_beat: Mapped[float]
    state: Mapped[str] = mapped_column(String(16))
    stats_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


# --------------------------------------------------------------------------
# Dialects: the only places that differ between SQLite and PostgreSQL


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` (SQLite and PostgreSQL spell it alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _chunks(values: Sequence[Any], n: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(values), n):
        yield list(values[i : i + n])


# --------------------------------------------------------------------------
# What callers pass in


class Link(NamedTuple):
    """A path that holds the bytes ``digest``, with the stat it had when they were read."""

    path: str
    root: str | None
    digest: str
    size: int
    mtime_ns: int
    inode: int


@dataclass
class Indexed:
    """Everything the books keep about a content the pipeline has indexed."""

    digest: str
    lines: list[dict[str, Any]]  # OcrLine.to_json()
    captions: list[str]
    width: int
    height: int
    source: str
    versions: dict[str, str]
    links: list[Link] = field(default_factory=list)


@dataclass
class Refreshed:
    """A content re-embedded (and maybe re-captioned) from its stored lines."""

    digest: str
    captions: list[str]
    source: str
    versions: dict[str, str]


# --------------------------------------------------------------------------
# The books


def _engine(url: URL) -> Engine:
    """SQLite: one file in WAL mode. PostgreSQL: a small pool that survives a server restart."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _keyed(cols: Sequence[str], row: Sequence[str | None], one: RootMap) -> dict[str, str | None]:
    """A row's path columns as keys, named ``b_<column>`` for a bulk UPDATE."""
    return {f"b_{c}": one.to_key(v) if v is not None else None for c, v in zip(cols, row, strict=True)}


class Catalog:
    """The books: paths, contents, roots and the work queue (``self.queue``).

    ``target`` is the SQLite file, or a SQLAlchemy URL (``settings.db_url``): ``sqlite:///…`` or
    ``postgresql+psycopg://…``. The schema is Alembic's (pixgrep/migrations), brought up to date on open.
    """

    @classmethod
    def read_only(cls, path: Path) -> Catalog:
        """The SQLite books opened without writing a byte, for searches on a full disk (issue 9, defect 6).

        ``immutable``: SQLite then needs no -shm file (it cannot size one on a full disk), takes no
        locks and ignores the -wal, so writes not yet checkpointed are not seen. No schema upgrade.
        """
        self = cls.__new__(cls)
        self.dialect, self.path, self.where = "sqlite", path, f"{path} (read-only)"
        self.mounts = RootMap()
        self.engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true", connect_args={"check_same_thread": False}
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        return self

    def __init__(self, target: Path | str) -> None:
        url = make_url(f"sqlite:///{target}" if isinstance(target, Path) else target)
        self.dialect = url.get_backend_name()
        self.path: Path | None = None
        if self.dialect == "sqlite":
            self.path = Path(url.database or "")
            # The books hold every OCR'd text: 0700 folder, 0600 files (and -wal/-shm), whatever the umask.
            private_state(self.path.parent)
        self.where = str(self.path) if self.path else url.render_as_string(hide_password=True)
        # This host's named roots: paths in are booked as name:/rel keys, keys out are this host's paths.
        self.mounts = RootMap()
        self.engine: Engine = _engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            migrate.upgrade(self.engine, where=self.where)
        except OperationalError as e:
            self.engine.dispose()
            raise BooksUnavailable(
                f"cannot open the books at {self.where}: {str(e.orig).strip().splitlines()[0]}"
            ) from e

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction. For this module, and for benchmarks and tests that seed books in bulk."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # Named roots (pixgrep.roots): where this host's paths become the books' keys, and back ---------
    def _k(self, path: str) -> str:
        return self.mounts.to_key(path)

    def _d(self, key: str) -> str:
        return self.mounts.to_disk(key)

    def _ds(self, keys: Iterable[str]) -> list[str]:
        m = self.mounts
        return [m.to_disk(k) for k in keys] if m else list(keys)

    def _ranges(self, directory: str) -> list[tuple[bytes, bytes, bytes]]:
        """(lo, hi, this host's prefix) of each byte range of keys under ``directory`` (this host's path, or a
        key): the folder's own, and one per named root mounted inside it."""
        out = []
        for key, disk in self.mounts.folders_under(directory):
            lo, hi = path_prefix_range(key)
            out.append((lo, hi, os.fsencode(disk.rstrip("/")) + b"/"))
        return out

    def _under(self, column: Any, directory: str) -> Any:
        """SQL: ``column`` holds a key under ``directory``."""
        return or_(*(and_(column >= lo, column < hi) for lo, hi, _ in self._ranges(directory)))

    def use_mounts(self, mounts: RootMap, *, adopt: bool = True) -> int:
        """Book paths under ``mounts``' named roots as keys from now on. ``adopt``: rows booked by
        absolute path under one of these mount points (indexed before the root had its name) are
        rewritten to keys; a key already booked wins over its absolute twin. Returns the rows rewritten."""
        self.mounts = mounts
        if not adopt:
            return 0
        n = 0
        for name, mount in mounts.mounts:  # innermost first: nested roots keep their own names
            n += self._adopt(mount, RootMap(((name, mount),)))
        return n

    def _adopt(self, mount: str, one: RootMap) -> int:
        lo, hi = path_prefix_range(mount)
        n = 0
        with self.session() as s:
            for model, cols in ((PathEntry, ("path", "root")), (Root, ("path",)), (QueueItem, ("path", "src"))):
                n += self._adopt_rows(s, cast(Table, model.__table__), cols, mount, lo, hi, one)
        return n

    @staticmethod
    def _adopt_rows(s: Session, t: Table, cols: tuple[str, ...], mount: str, lo: bytes, hi: bytes, one: RootMap) -> int:
        """Rewrite ``t``'s rows at or under ``mount`` to keys, in bulk (a named archive may hold millions)."""
        key = t.c.path
        rows = s.execute(select(*(t.c[c] for c in cols)).where(or_(key == mount, and_(key >= lo, key < hi))))
        moves = {row[0]: _keyed(cols, row, one) for row in rows}
        taken = Catalog._drop_twins(s, t, moves)
        rest = [{"b_old": old, **m} for old, m in moves.items() if m["b_path"] not in taken]
        if rest:
            stmt = update(t).where(key == bindparam("b_old")).values({c: bindparam(f"b_{c}") for c in cols})
            s.execute(stmt, rest)
        return len(moves)

    @staticmethod
    def _drop_twins(s: Session, t: Table, moves: dict[str, dict[str, str | None]]) -> set[str]:
        """Delete the rows whose key is already booked (another host named the root first: the key wins over
        its absolute twin); returns those keys."""
        key = t.c.path
        taken: set[str] = set()
        for chunk in _chunks([m["b_path"] for m in moves.values()]):
            taken.update(s.scalars(select(key).where(key.in_(chunk))))
        for chunk in _chunks([old for old, m in moves.items() if m["b_path"] in taken]):
            s.execute(delete(t).where(key.in_(chunk)))
        return taken

    def record_mounts(self, host: str, mounts: RootMap) -> None:
        """Book where ``host`` mounts each named root (its config's ``[roots]``), for ``pixgrep status``."""
        now = time.time()
        with self.session() as s:
            s.execute(delete(RootMount).where(RootMount.host == host))
            s.add_all(RootMount(name=n, host=host, path=m, added_at=now) for n, m in mounts.mounts)

    def root_mounts(self) -> list[tuple[str, str, str]]:
        """(name, host, mount point) of every named root every host sharing the books has booked."""
        with self.session() as s:
            rows = s.execute(select(RootMount.name, RootMount.host, RootMount.path).order_by(RootMount.name))
            return [(n, h, p) for n, h, p in rows]

    # Reading --------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            by_status = dict(s.execute(select(Content.status, func.count()).group_by(Content.status)).all())  # type: ignore[arg-type]
            paths = s.scalar(select(func.count()).select_from(PathEntry)) or 0
            path_errors = s.scalar(select(func.count()).where(PathEntry.error.is_not(None))) or 0
            queue = dict(s.execute(select(QueueItem.state, func.count()).group_by(QueueItem.state)).all())  # type: ignore[arg-type]
        return {
            "paths": paths,
            "indexed": by_status.get(ContentStatus.DONE, 0),
            "pending": by_status.get(ContentStatus.PENDING, 0),
            "failed": by_status.get(ContentStatus.FAILED, 0) + path_errors,
            "queue_pending": queue.get(QueueState.PENDING, 0) + queue.get(QueueState.PROCESSING, 0),
            "queue_failed": queue.get(QueueState.FAILED, 0),
        }

    def content(self, digest: str) -> Content | None:
        with self.session() as s:
            return s.get(Content, digest)

    def path_entry(self, path: str) -> PathEntry | None:
        """The path's record, detached, with ``path`` and ``root`` as this host's paths."""
        with self.session() as s:
            entry = s.get(PathEntry, self._k(path))
            if entry is None or not self.mounts:
                return entry
            s.expunge(entry)
        entry.path = self._d(entry.path)
        entry.root = None if entry.root is None else self._d(entry.root)
        return entry

    def content_of(self, path: str) -> Content | None:
        """The content row ``path`` points at, if any."""
        with self.session() as s:
            return s.scalar(
                select(Content)
                .join(PathEntry, PathEntry.content_hash == Content.hash)
                .where(PathEntry.path == self._k(path))
            )

    def contents(self, status: ContentStatus | None = None) -> list[Content]:
        with self.session() as s:
            stmt = select(Content)
            if status is not None:
                stmt = stmt.where(Content.status == status)
            return list(s.scalars(stmt))

    def paths(self) -> dict[str, str | None]:
        """Every path -> its content hash."""
        with self.session() as s:
            return {self._d(p): h for p, h in s.execute(select(PathEntry.path, PathEntry.content_hash))}

    def paths_of(self, hashes: Sequence[str]) -> list[str]:
        """Every path holding one of ``hashes``."""
        out: list[str] = []
        with self.session() as s:
            for chunk in _chunks(hashes):
                out += s.scalars(select(PathEntry.path).where(PathEntry.content_hash.in_(chunk)))
        return self._ds(out)

    def knows(self, path: str) -> bool:
        """True if the books hold ``path`` or anything under it."""
        with self.session() as s:
            if s.get(PathEntry, self._k(path)) is not None:
                return True
            under = select(PathEntry.path).where(self._under(PathEntry.path, path))
            return s.scalar(under.limit(1)) is not None

    def paths_under(self, directory: str) -> list[str]:
        with self.session() as s:
            return self._ds(s.scalars(select(PathEntry.path).where(self._under(PathEntry.path, directory))))

    def settled_stats(self, paths: Sequence[str]) -> dict[str, tuple[int, int, int, str, str | None]]:
        """(size, mtime_ns, inode, hash, error) of the given error-free paths whose content is settled."""
        out: dict[str, tuple[int, int, int, str, str | None]] = {}
        keys = {self._k(p): p for p in paths}
        with self.session() as s:
            for chunk in _chunks(list(keys)):
                rows = s.execute(
                    select(
                        PathEntry.path, PathEntry.size, PathEntry.mtime_ns, PathEntry.inode, Content.hash, Content.error
                    )
                    .join(Content, Content.hash == PathEntry.content_hash)
                    .where(PathEntry.path.in_(chunk), PathEntry.error.is_(None), SETTLED)
                )
                for key, size, mtime_ns, inode, h, err in rows:
                    out[keys[key]] = (size, mtime_ns, inode, h, err)
        return out

    def known_under(self, root: str) -> dict[bytes, tuple[int, int, int, bool]]:
        """Raw path -> (size, mtime_ns, inode, settled) for every known path under ``root``.

        ``settled``: ``path_settled``; otherwise the path is queued again even if
        unchanged. One query: reconcile compares it with a walk.
        """
        out: dict[bytes, tuple[int, int, int, bool]] = {}
        # One query per range: the folder's, and one per named root inside it, whose keys are this host's
        # paths again by their prefix (one slice a row).
        for lo, hi, disk_prefix in self._ranges(root):
            self._known_in(lo, hi, disk_prefix, out)
        return out

    def _known_in(self, lo: bytes, hi: bytes, disk_prefix: bytes, out: dict[bytes, Any]) -> None:
        p, c = PathEntry.__table__.c, Content.__table__.c
        # The keys stay bytes, as the walk encodes them (no decode per row).
        stmt = (
            select(
                type_coerce(p.path, LargeBinary),
                p.size,
                p.mtime_ns,
                p.inode,
                p.error,
                p.content_hash,
                c.status,
                c.retryable,
            )
            .select_from(PathEntry.__table__.outerjoin(Content.__table__, c.hash == p.content_hash))
            .where(p.path >= lo, p.path < hi)
        )
        with self.engine.connect() as conn:
            for path, size, mtime_ns, inode, error, h, status, retryable in conn.execute(stmt):
                raw = bytes(path)
                if lo != disk_prefix:
                    raw = disk_prefix + raw[len(lo) :]
                # An empty file stays failed until its bytes change: not queued again at every start.
                out[raw] = (size, mtime_ns, inode, path_settled(error, h, size, mtime_ns, status, retryable))

    def paths_for(self, hashes: Sequence[str], in_dir: str | None = None) -> dict[str, list[str]]:
        """Indexed content hash -> its paths (sorted), optionally only those under ``in_dir``."""
        if not hashes:
            return {}
        stmt = select(PathEntry.content_hash, PathEntry.path).where(PathEntry.content_hash.in_(list(hashes)))
        if in_dir:
            stmt = stmt.where(self._under(PathEntry.path, folder_arg(in_dir)))
        out: dict[str, list[str]] = {}
        with self.session() as s:
            for h, p in s.execute(stmt.order_by(PathEntry.path)):
                if h is not None:
                    out.setdefault(h, []).append(self._d(p))
            # Keep only contents that are indexed (not pending a retry of a changed file). The status is
            # checked here, not in SQL: with it in the WHERE clause SQLite walked the status index over
            # every done content (7 ms a search at 50k) instead of looking the hashes up by key.
            found = s.execute(select(Content.hash, Content.status).where(Content.hash.in_(list(out))))
            done = {h for h, status in found if status == ContentStatus.DONE}
        # Sorted as this host's paths (the keys of named roots sort apart from absolute paths).
        return {h: sorted(v) for h, v in out.items() if h in done}

    def with_a_path(self, hashes: Sequence[str]) -> list[tuple[Content, str]]:
        """Each of ``hashes`` that has a path, with one of its paths."""
        with self.session() as s:
            return [
                (c, self._d(path))
                for c in s.scalars(select(Content).where(Content.hash.in_(list(hashes))))
                if (path := s.scalar(select(PathEntry.path).where(PathEntry.content_hash == c.hash).limit(1)))
                is not None
            ]

    _UNSETTLED_PATH = or_(
        PathEntry.error.is_not(None), Content.status.in_((ContentStatus.FAILED, ContentStatus.PENDING))
    )

    def failures(self, limit: int | None = 50) -> list[dict[str, Any]]:
        """Paths with an error or an unfinished content, with the reason (``status --failed``)."""
        with self.session() as s:
            rows = s.execute(
                select(PathEntry.path, PathEntry.error, Content.error, PathEntry.attempts, Content.attempts)
                .outerjoin(Content, Content.hash == PathEntry.content_hash)
                .where(self._UNSETTLED_PATH)
                .order_by(PathEntry.path)
                .limit(limit)
            ).all()
        return [
            {"path": self._d(p), "error": pe or ce or ContentStatus.PENDING.value, "attempts": max(pa or 0, ca or 0)}
            for p, pe, ce, pa, ca in rows
        ]

    def indexed_paths(self, digest: str) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of each error-free path of an indexed content, sorted; [] if not indexed."""
        with self.session() as s:
            if s.scalar(select(Content.status).where(Content.hash == digest)) != ContentStatus.DONE:
                return []
            rows = s.execute(
                select(PathEntry.path, PathEntry.size, PathEntry.mtime_ns)
                .where(PathEntry.content_hash == digest, PathEntry.error.is_(None))
                .order_by(PathEntry.path)
            ).all()
        return [(self._d(p), size, mtime) for p, size, mtime in rows]

    def failed_paths(self) -> list[str]:
        """Every path ``failures`` would list (``reindex --failed`` queues them)."""
        with self.session() as s:
            return self._ds(
                s.scalars(
                    select(PathEntry.path)
                    .outerjoin(Content, Content.hash == PathEntry.content_hash)
                    .where(self._UNSETTLED_PATH)
                )
            )

    def retry_pending_paths(self) -> list[str]:
        """Paths whose content is waiting for a retry (e.g. Milvus was down)."""
        with self.session() as s:
            return self._ds(
                s.scalars(
                    select(PathEntry.path)
                    .join(Content, Content.hash == PathEntry.content_hash)
                    .where(Content.status == ContentStatus.PENDING)
                )
            )

    def orphans(self) -> list[str]:
        """Content hashes no path points at (see "decide, commit, then act")."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Content.hash).where(
                        ~select(PathEntry.path).where(PathEntry.content_hash == Content.hash).exists()
                    )
                )
            )

    def _orphans_among(self, s: Session, hashes: Iterable[str]) -> list[str]:
        return [
            h
            for h in set(hashes)
            if s.scalar(select(PathEntry.path).where(PathEntry.content_hash == h).limit(1)) is None
        ]

    # Several daemons --------------------------------------------------------
    def beat(
        self, daemon: str, *, host: str, pid: int, version: str, state: str, stats: dict[str, Any], now: float
    ) -> None:
        """Insert or refresh a daemon's row; forget daemons silent for a day."""
        t = cast(Table, DaemonRow.__table__)
        with self.engine.begin() as conn:
            ins = _insert(conn)(t).values(
                id=daemon, host=host, pid=pid, version=version, started_at=now, last_beat=now, state=state,
                stats_json=json.dumps(stats),
            )  # fmt: skip
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.c.id],
                    set_={"last_beat": now, "state": state, "stats_json": ins.excluded.stats_json},
                )
            )
            conn.execute(delete(t).where(t.c.last_beat < now - 86400))

    def daemons(self) -> list[dict[str, Any]]:
        """Every daemon that beat in the last day: host, pid, state, last beat, rates."""
        with self.session() as s:
            rows = s.scalars(select(DaemonRow).order_by(DaemonRow.host, DaemonRow.started_at)).all()
        return [
            {"id": r.id, "host": r.host, "pid": r.pid, "version": r.version, "state": r.state,
             "started_at": r.started_at, "last_beat": r.last_beat, **json.loads(r.stats_json)}
            for r in rows
        ]  # fmt: skip

    def lease_content(self, digest: str, owner: str, until: float, now: float) -> bool:
        """Take the bytes ``digest`` for OCR; False while another daemon's lease on them runs."""
        t = cast(Table, ContentLease.__table__)
        with self.engine.begin() as conn:
            ins = _insert(conn)(t).values(hash=digest, owner=owner, until=until)
            stmt = ins.on_conflict_do_update(
                index_elements=[t.c.hash],
                set_={"owner": owner, "until": until},
                where=or_(t.c.owner == owner, t.c.until < now),
            ).returning(t.c.hash)
            return conn.execute(stmt).first() is not None

    def extend_content_leases(self, owner: str, until: float) -> None:
        t = cast(Table, ContentLease.__table__)
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.owner == owner).values(until=until))

    def release_content_leases(self, owner: str, digests: Sequence[str] | None = None, *, now: float = 0.0) -> None:
        """Drop ``owner``'s leases (all of them when ``digests`` is None), and any that ran out before ``now``."""
        t = cast(Table, ContentLease.__table__)
        with self.engine.begin() as conn:
            if digests is None:
                conn.execute(delete(t).where(or_(t.c.owner == owner, t.c.until < now)))
            else:
                for chunk in _chunks(digests):
                    conn.execute(delete(t).where(t.c.owner == owner, t.c.hash.in_(chunk)))

    # Roots ------------------------------------------------------------------
    def roots(self) -> list[str]:
        """Every root indexed or watched: this host's path, or the key of a named root not mounted here."""
        with self.session() as s:
            return self._ds(str(p) for p in s.scalars(select(Root.path)))

    def add_roots(self, paths: Iterable[str]) -> None:
        with self.session() as s:
            for p in paths:
                s.merge(Root(path=self._k(p)))

    def remove_root(self, path: str) -> None:
        with self.session() as s:
            s.execute(delete(Root).where(Root.path == self._k(path)))

    # Writing: paths and contents ------------------------------------------------
    # Each returns the hashes that may have lost their last path: the caller deletes
    # their vectors after this commit, then calls delete_orphans (module docstring).
    @staticmethod
    def _link(s: Session, link: Link, now: float) -> str | None:
        entry = s.get(PathEntry, link.path)
        old_hash = entry.content_hash if entry else None
        if entry is None:
            entry = PathEntry(path=link.path)
            s.add(entry)
        entry.content_hash = link.digest
        entry.root = link.root if link.root is not None else entry.root
        entry.size, entry.mtime_ns, entry.inode = link.size, link.mtime_ns, link.inode
        entry.error = None
        entry.attempts = 0
        entry.seen_at = now
        s.flush()
        return old_hash if old_hash and old_hash != link.digest else None

    def _booked(self, link: Link) -> Link:
        return link._replace(path=self._k(link.path), root=None if link.root is None else self._k(link.root))

    def _link_all(self, s: Session, links: Iterable[Link]) -> list[str]:
        now = time.time()
        old = [h for link in links if (h := self._link(s, self._booked(link), now))]
        return self._orphans_among(s, old)

    def link(self, links: Sequence[Link]) -> list[str]:
        """Point paths at known bytes (no OCR). Returns orphaned hashes."""
        with self.session() as s:
            return self._link_all(s, links)

    def record_path_error(
        self, path: str, root: str | None, msg: str, *, failed_at: tuple[int, int, int] | None = None
    ) -> None:
        """The path record. ``failed_at``: the (size, mtime_ns, inode) of bytes that failed for good (an
        empty file), so the path is settled until they change; None for a passing error, retried every run."""
        path, root = self._k(path), None if root is None else self._k(root)
        with self.session() as s:
            entry = s.get(PathEntry, path)
            if entry is None:
                entry = PathEntry(path=path, root=root)
                s.add(entry)
            if entry.content_hash is None:
                entry.size, entry.mtime_ns, entry.inode = failed_at or (0, 0, 0)
            entry.error = msg
            entry.attempts = (entry.attempts or 0) + 1
            entry.seen_at = time.time()

    def record_failure(
        self, digest: str, msg: str, *, retryable: bool, max_attempts: int, links: Sequence[Link]
    ) -> list[str]:
        """The content record: bytes that could not be indexed (see the state machine above)."""
        with self.session() as s:
            content = s.get(Content, digest)
            if content is None:
                content = Content(hash=digest)
                s.add(content)
            content.attempts = (content.attempts or 0) + 1
            gave_up = not retryable or content.attempts >= max_attempts
            content.status = ContentStatus.FAILED if gave_up else ContentStatus.PENDING
            content.error = msg
            content.retryable = retryable
            content.updated_at = time.time()
            s.flush()
            return self._link_all(s, links)

    def record_ocr(self, items: Sequence[Indexed]) -> list[str]:
        """OCR results of contents not in the store yet: kept (pending, retryable) with their paths, so a
        crash, a SIGTERM or a store outage before the batch is written does not cost the OCR again
        (``Pipeline._prepare`` reads them back). A content already done keeps its record; no attempt is
        counted. Returns orphaned hashes."""
        links: list[Link] = []
        with self.session() as s:
            for it in items:
                content = s.get(Content, it.digest)
                if content is not None and content.status == ContentStatus.DONE:
                    continue
                if content is None:
                    content = Content(hash=it.digest)
                    s.add(content)
                content.status = ContentStatus.PENDING
                content.retryable = True
                _fill(content, it, captions=[])
                links += it.links
            s.flush()
            return self._link_all(s, links)

    def record_indexed(self, items: Sequence[Indexed]) -> list[str]:
        """Contents whose vectors are in the store: done, with their paths. Returns orphaned hashes."""
        links: list[Link] = []
        with self.session() as s:
            for it in items:
                content = s.get(Content, it.digest) or Content(hash=it.digest)
                s.add(content)
                content.status = ContentStatus.DONE
                content.retryable = False
                content.attempts = (content.attempts or 0) + 1
                _fill(content, it, captions=it.captions)
                links += it.links
            s.flush()
            return self._link_all(s, links)

    def record_refreshed(self, items: Sequence[Refreshed]) -> int:
        """Contents re-embedded from their stored lines; returns how many rows were still there."""
        n = 0
        with self.session() as s:
            for it in items:
                content = s.get(Content, it.digest)
                if content is None:
                    continue
                content.captions_json = json.dumps(it.captions, ensure_ascii=False)
                content.source = it.source
                content.versions_json = json.dumps(it.versions)
                content.updated_at = time.time()
                n += 1
        return n

    def remove_paths(self, paths: Sequence[str]) -> tuple[int, list[str]]:
        """Forget paths. Returns how many were known, and the orphaned hashes."""
        if not paths:
            return 0, []
        n = 0
        hashes: list[str] = []
        with self.session() as s:
            for chunk in _chunks([self._k(p) for p in paths]):
                hashes += [h for h in s.scalars(select(PathEntry.content_hash).where(PathEntry.path.in_(chunk))) if h]
                n += s.execute(delete(PathEntry).where(PathEntry.path.in_(chunk))).rowcount  # type: ignore[attr-defined]
            return int(n or 0), self._orphans_among(s, hashes)

    def move(self, src: str, dst: str, *, size: int, mtime_ns: int, inode: int, root: str | None) -> list[str] | None:
        """Record a rename without re-reading content: ``dst`` takes ``src``'s content.

        None if ``src`` is unknown or its booked stat differs (changed on the way: index
        ``dst`` instead); else the orphaned hashes (``dst`` may have held other bytes).
        """
        with self.session() as s:
            entry = s.get(PathEntry, self._k(src))
            if entry is None or entry.content_hash is None:
                return None
            if (entry.size, entry.mtime_ns) != (size, mtime_ns):
                return None
            s.delete(entry)
            s.flush()
            old_root = None if entry.root is None else self._d(entry.root)
            return self._link_all(s, [Link(dst, root or old_root, entry.content_hash, size, mtime_ns, inode)])

    def delete_orphans(self, hashes: Sequence[str]) -> list[str]:
        """The last step of forgetting, after the store deleted these hashes' vectors.

        Deletes the rows that still have no path; one that got a path back meanwhile
        has lost its vectors, so it goes back to pending to be indexed again.
        """
        with self.session() as s:
            gone = self._orphans_among(s, hashes)
            back = set(hashes) - set(gone)
            for chunk in _chunks(gone):
                s.execute(delete(Content).where(Content.hash.in_(chunk)))
            if back:
                s.execute(
                    update(Content)
                    .where(Content.hash.in_(list(back)))
                    .values(status=ContentStatus.PENDING, retryable=True, error="vectors deleted while re-linked")
                )
        return gone

    def reset_failed(self) -> None:
        with self.session() as s:
            s.execute(
                update(Content)
                .where(Content.status == ContentStatus.FAILED)
                .values(status=ContentStatus.PENDING, attempts=0)
            )

    def seed(self, contents: Sequence[dict[str, Any]], paths: Sequence[dict[str, Any]]) -> None:
        """Bulk-insert content and path rows as given (benchmarks and tests build large books this way)."""
        with self.session() as s:
            if contents:
                s.execute(insert(Content), list(contents))
            if paths:
                s.execute(insert(PathEntry), list(paths))


# --------------------------------------------------------------------------
# The work queue


# Keep finished rows this long (they show recent activity), then prune.
DONE_TTL = 600.0


@dataclass(frozen=True)
class Job:
    """What to enqueue: ``path`` with ``op``; ``src`` for moves."""

    path: str
    op: str = QueueOp.UPSERT
    src: str | None = None
    not_before: float = 0.0
    # False for the rescan's jobs: they must not revive a row given up after crashes (a file that
    # crashes the daemon would otherwise be retried forever, one startup rescan after another).
    revive: bool = True


@dataclass(frozen=True)
class Item:
    """A claimed row."""

    id: int
    path: str
    op: str
    src: str | None
    attempts: int
    enqueued_at: float


def backoff(attempts: int, base: float = 2.0, cap: float = 600.0) -> float:
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


_OPS = frozenset(QueueOp)
_Q = cast(Table, QueueItem.__table__)
# Spelled with OR, not IN: an IN list is an "expanding" parameter, which executemany refuses.
_LIVE = or_(_Q.c.state == QueueState.PENDING.value, _Q.c.state == QueueState.PROCESSING.value)


_CRASHED = "was being processed during"


def _row(j: Job, now: float, mounts: RootMap) -> dict[str, Any]:
    """A new queue row for ``j``, its paths as the books' keys."""
    return {
        "path": mounts.to_key(j.path),
        "op": str(j.op),
        "src": mounts.to_key(j.src) if j.src else None,
        "state": QueueState.PENDING.value,
        "attempts": 0,
        "not_before": j.not_before or now,
        "error": None,
        "enqueued_at": now,
        "claimed_at": None,
    }


def _enqueue_stmt(conn: Connection, *, revive: bool = True) -> Any:
    """One row per path: a newer event resets it to pending.

    A pending move absorbs later upserts and deletes of its destination (the move
    already reconciles both paths); a pending force absorbs an upsert. A row being
    processed stays with the daemon that holds it, marked ``requeue``: it goes back
    to pending when that daemon is done, so two daemons never work on one path
    (both daemons' watchers see the same event on a shared folder).
    """
    ins = _insert(conn)(_Q)
    ex = ins.excluded
    keeps_move = and_(
        _LIVE, _Q.c.op == QueueOp.MOVE.value, or_(ex.op == QueueOp.UPSERT.value, ex.op == QueueOp.DELETE.value)
    )
    keeps_force = and_(_LIVE, _Q.c.op == QueueOp.FORCE.value, ex.op == QueueOp.UPSERT.value)
    held = _Q.c.state == QueueState.PROCESSING.value
    # A file given up after crashes stays failed for the rescan; an event (it changed) or the user revive it.
    crashed = and_(_Q.c.state == QueueState.FAILED.value, _Q.c.error.like(f"{_CRASHED}%"))
    return ins.on_conflict_do_update(
        index_elements=[_Q.c.path],
        where=None if revive else ~crashed,
        set_={
            "op": case((keeps_move, QueueOp.MOVE.value), (keeps_force, QueueOp.FORCE.value), else_=ex.op),
            "src": case((keeps_move, _Q.c.src), else_=ex.src),
            "state": case((held, _Q.c.state), else_=QueueState.PENDING.value),
            "requeue": held,
            # A live row keeps its count: crash recovery counts there, and a rescan must not reset it.
            "attempts": case((_LIVE, _Q.c.attempts), else_=0),
            "not_before": ex.not_before,
            "error": None,
            "enqueued_at": ex.enqueued_at,
            "claimed_at": case((held, _Q.c.claimed_at), else_=None),
            "claimed_by": case((held, _Q.c.claimed_by), else_=None),
            "lease_until": case((held, _Q.c.lease_until), else_=None),
        },
    )


def _unclaimed(**values: Any) -> dict[str, Any]:
    """The columns of a row leaving processing: no holder, no lease, no re-queue mark."""
    return {"claimed_by": None, "lease_until": None, "requeue": False, **values}


def _after(state: QueueState) -> Any:
    """``state``, unless a newer event arrived while the row was processing: then pending."""
    return case((_Q.c.requeue, QueueState.PENDING.value), else_=state.value)


class Queue:
    """The durable work queue's table: pending -> processing -> done | failed (module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_attempts: int = 5,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[int], float] = backoff,
        host: str = "",
        lease_seconds: float = 60.0,
    ) -> None:
        self.catalog = catalog
        self.max_attempts = max_attempts
        self.clock = clock
        # Seconds before attempt n + 1 (tests shorten it).
        self.backoff = backoff
        # Who holds a claim: host:pid:start. Another daemon reclaims it once the lease
        # (extended by this daemon's heartbeat) runs out.
        self.host = host or socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{int(clock() * 1000)}"
        self.lease_seconds = lease_seconds

    def _openable(self) -> Any:
        """Rows this host can open: absolute paths, and keys of the named roots it mounts (another host's
        worker takes those of a root not mounted here)."""
        lo, hi = path_prefix_range("/")
        parts = [and_(_Q.c.path >= lo, _Q.c.path < hi)]
        for name in self.catalog.mounts.names():
            key = make_key(name, "")
            klo, khi = path_prefix_range(key)
            parts += [_Q.c.path == key, and_(_Q.c.path >= klo, _Q.c.path < khi)]
        return or_(*parts)

    def _item(self, row: Any) -> Item:
        d = self.catalog.mounts.to_disk
        return Item(row[0], d(row[1]), row[2], None if row[3] is None else d(row[3]), row[4], row[5])

    def _claimed(self, item_id: Any) -> Any:
        """A row this worker holds: only such rows move on (another daemon may have reclaimed the rest)."""
        return and_(_Q.c.id == item_id, _Q.c.state == QueueState.PROCESSING.value, _Q.c.claimed_by == self.owner)

    def _exec(self, stmt: Any, params: Any = None) -> Any:
        with self.catalog.engine.begin() as conn:
            return conn.execute(stmt, params) if params is not None else conn.execute(stmt)

    # Producers -------------------------------------------------------------
    def put(self, jobs: Iterable[Job], *, chunk: int = 5000) -> int:
        now = self.clock()
        jobs = list(jobs)
        for j in jobs:
            if str(j.op) not in _OPS:
                raise ValueError(f"unknown queue op {str(j.op)!r}")
        for flag in (True, False):
            group = [_row(j, now, self.catalog.mounts) for j in jobs if j.revive is flag]
            for i in range(0, len(group), chunk):
                with self.catalog.engine.begin() as conn:
                    conn.execute(_enqueue_stmt(conn, revive=flag), group[i : i + chunk])
        return len(jobs)

    # The worker ------------------------------------------------------------
    def _return_claims(self, which: Any) -> int:
        """Processing rows matching ``which`` back to pending (an attempt each); give up on repeat offenders."""
        with self.catalog.engine.begin() as conn:
            n = conn.execute(
                update(_Q)
                .where(_Q.c.state == QueueState.PROCESSING.value, which)
                .values(
                    _unclaimed(
                        state=QueueState.PENDING.value,
                        attempts=_Q.c.attempts + 1,
                        claimed_at=None,
                        not_before=self.clock(),
                    )
                )
            ).rowcount
            if n:
                # A file that was in flight during several crashes may be what crashes us.
                conn.execute(
                    update(_Q)
                    .where(_Q.c.state == QueueState.PENDING.value, _Q.c.attempts >= self.max_attempts)
                    .values(
                        state=QueueState.FAILED.value,
                        error=f"{_CRASHED} {self.max_attempts} crashes; giving up",
                    )
                )
        return int(n or 0)

    def recover(self) -> int:
        """At start: return the claims an earlier daemon on this host left, and any whose lease ran out."""
        mine = or_(
            _Q.c.claimed_by.is_(None),
            _Q.c.claimed_by.startswith(f"{self.host}:", autoescape=True),
            _Q.c.lease_until < self.clock(),
        )
        return self._return_claims(mine)

    def reclaim_expired(self, now: float | None = None) -> int:
        """Return claims whose lease ran out (their daemon died or lost the books) to pending."""
        return self._return_claims(_Q.c.lease_until < (self.clock() if now is None else now))

    def extend(self, until: float) -> None:
        """Keep this daemon's claims: its heartbeat pushes their lease to ``until``."""
        self._exec(
            update(_Q)
            .where(_Q.c.claimed_by == self.owner, _Q.c.state == QueueState.PROCESSING.value)
            .values(lease_until=until)
        )

    def claim(self, limit: int) -> list[Item]:
        now = self.clock()
        # SKIP LOCKED: on PostgreSQL two daemons claiming at once take different rows instead of
        # waiting on each other's (SQLite has one writer and renders no FOR UPDATE).
        due = (
            select(_Q.c.id)
            .where(_Q.c.state == QueueState.PENDING.value, _Q.c.not_before <= now, self._openable())
            .order_by(_Q.c.not_before, _Q.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(_Q)
            .where(_Q.c.id.in_(due.scalar_subquery()))
            .values(
                state=QueueState.PROCESSING.value,
                claimed_at=now,
                claimed_by=self.owner,
                lease_until=now + self.lease_seconds,
                requeue=False,
            )
            .returning(_Q.c.id, _Q.c.path, _Q.c.op, _Q.c.src, _Q.c.attempts, _Q.c.enqueued_at)
        )
        with self.catalog.engine.begin() as conn:
            rows = conn.execute(stmt).fetchall()
        return sorted((self._item(r) for r in rows), key=lambda it: it.id)

    def done(self, items: Sequence[Item], *, note: dict[int, str] | None = None) -> None:
        """Mark items done unless a newer event re-queued them meanwhile."""
        if not items:
            return
        note = note or {}
        stmt = (
            update(_Q)
            .where(self._claimed(bindparam("b_id")))
            .values(_unclaimed(state=_after(QueueState.DONE), error=bindparam("b_error"), claimed_at=self.clock()))
        )
        self._exec(stmt, [{"b_id": it.id, "b_error": note.get(it.id)} for it in items])

    def fail(self, item: Item, error: str) -> None:
        self._exec(
            update(_Q)
            .where(self._claimed(item.id))
            .values(_unclaimed(state=_after(QueueState.FAILED), error=error, attempts=_Q.c.attempts + 1))
        )

    def retry(self, item: Item, error: str) -> bool:
        """Back off and try again later; False (and failed) once attempts run out."""
        attempts = item.attempts + 1
        if attempts >= self.max_attempts:
            self.fail(item, f"gave up after {attempts} attempts: {error}")
            return False
        self._exec(
            update(_Q)
            .where(self._claimed(item.id))
            .values(
                _unclaimed(
                    state=QueueState.PENDING.value,
                    error=error,
                    attempts=attempts,
                    not_before=self.clock() + self.backoff(attempts),
                    claimed_at=None,
                )
            )
        )
        return True

    def defer(self, item: Item, until: float) -> None:
        """Put back without counting an attempt (e.g. the file is still being written)."""
        self._exec(
            update(_Q)
            .where(self._claimed(item.id))
            .values(_unclaimed(state=QueueState.PENDING.value, not_before=until, claimed_at=None))
        )

    def release(self, items: Sequence[Item]) -> None:
        """Return unfinished claims at shutdown."""
        if items:
            stmt = (
                update(_Q)
                .where(self._claimed(bindparam("b_id")))
                .values(_unclaimed(state=QueueState.PENDING.value, claimed_at=None))
            )
            self._exec(stmt, [{"b_id": it.id} for it in items])

    def in_flight(self, path: str, *, moving_from: bool = False) -> bool:
        """Whether a pending or processing row names ``path``: as its own, or (``moving_from``) as a move's source."""
        key = self.catalog.mounts.to_key(path)
        cond = [_LIVE, _Q.c.src == key, _Q.c.op == QueueOp.MOVE.value] if moving_from else [_LIVE, _Q.c.path == key]
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(_Q.c.id).where(*cond).limit(1)).first() is not None

    def requeue_failed(self) -> int:
        n = self._exec(
            update(_Q)
            .where(_Q.c.state == QueueState.FAILED.value)
            .values(state=QueueState.PENDING.value, attempts=0, error=None, not_before=self.clock())
        ).rowcount
        return int(n or 0)

    def prune(self, older_than: float = DONE_TTL) -> int:
        stmt = delete(_Q).where(_Q.c.state == QueueState.DONE.value, _Q.c.claimed_at < self.clock() - older_than)
        return int(self._exec(stmt).rowcount or 0)

    # Reading ---------------------------------------------------------------
    def next_due(self) -> float | None:
        """The earliest not_before among pending rows, or None if none are pending."""
        with self.catalog.engine.connect() as conn:
            v = conn.execute(
                select(func.min(_Q.c.not_before)).where(_Q.c.state == QueueState.PENDING.value, self._openable())
            ).scalar()
        return None if v is None else float(v)

    def depth(self) -> dict[str, int]:
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(_Q.c.state, func.count()).group_by(_Q.c.state)).fetchall()
        out = {s.value: 0 for s in QueueState}
        out.update({r[0]: int(r[1]) for r in rows})
        return out

    def failures(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(_Q.c.path, _Q.c.op, _Q.c.error, _Q.c.attempts)
                .where(_Q.c.state == QueueState.FAILED.value)
                .order_by(_Q.c.id.desc())
                .limit(limit)
            ).fetchall()
        d = self.catalog.mounts.to_disk
        return [{"path": d(r[0]), "op": r[1], "error": r[2], "attempts": r[3]} for r in rows]

    def rows(self) -> list[tuple[str, str, str, str | None]]:
        """(path, op, state, error) of every row, for status pages, tests and debugging."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(select(_Q.c.path, _Q.c.op, _Q.c.state, _Q.c.error).order_by(_Q.c.id)).fetchall()
        d = self.catalog.mounts.to_disk
        return [(d(r[0]), r[1], r[2], r[3]) for r in rows]

    def live_moves(self) -> dict[str, str]:
        """Destination -> source of every move not done yet (pending or being processed)."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(_Q.c.path, _Q.c.src).where(_LIVE, _Q.c.op == QueueOp.MOVE.value, _Q.c.src.is_not(None))
            ).fetchall()
        d = self.catalog.mounts.to_disk
        return {d(r[0]): d(r[1]) for r in rows}

    def pending(self) -> list[tuple[str, str, str | None]]:
        """(path, op, src) of every pending row."""
        with self.catalog.engine.connect() as conn:
            rows = conn.execute(
                select(_Q.c.path, _Q.c.op, _Q.c.src).where(_Q.c.state == QueueState.PENDING.value).order_by(_Q.c.id)
            ).fetchall()
        d = self.catalog.mounts.to_disk
        return [(d(r[0]), r[1], None if r[2] is None else d(r[2])) for r in rows]


# --------------------------------------------------------------------------
# The local dense index's file (localdense.py)


class VectorFile:
    """The rows of the local index beside Milvus Lite, persisted in their own SQLite file.

    Every segment's text and float16 vector (``seg``), the keyword tokens of the
    documents (``kw``, FTS5; rowid = seg.id), their vectors of a second, whole-text
    model if one is configured (``whole``; id = seg.id) and a few ``meta`` values: the
    embedder, a write generation and the generation of the last faiss snapshot.
    Plain sqlite3, not SQLAlchemy: loading 70k vectors is a tight loop. Callers
    hold their own lock; ``sqlite3.DatabaseError`` on open means a damaged file
    (the store sets it aside and repairs it from Milvus). ``readonly`` opens the
    file without writing to it (a search while no daemon runs).
    """

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS seg (
        id INTEGER PRIMARY KEY,
        content_hash TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        text TEXT NOT NULL,
        vec BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS seg_hash ON seg(content_hash);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- unicode61 splits on what textnorm already spaced, as Milvus Lite's standard analyzer does.
    CREATE VIRTUAL TABLE IF NOT EXISTS kw USING fts5(tokens, tokenize="unicode61 remove_diacritics 0");
    -- The whole-text model's float16 vector of a document row (embed.whole_backend); id = seg.id.
    CREATE TABLE IF NOT EXISTS whole (id INTEGER PRIMARY KEY, vec BLOB NOT NULL);
    """
    VERSION = 1  # PRAGMA user_version: 1 = the kw table is filled
    DOC_KINDS = ("full", "caption")

    Error = sqlite3.DatabaseError

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
            try:
                self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # A full disk: WAL mode cannot size its -shm file even to read. Immutable needs none
                # (and ignores the -wal: rows not yet checkpointed are not seen).
                self._db.close()
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False, isolation_level=None
                )
            return
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(self._SCHEMA)

    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def fill_keywords(self, tokens: Callable[[str], str]) -> None:
        """Index the keywords of documents written before the kw table existed (from their text)."""
        marks = ",".join("?" * len(self.DOC_KINDS))
        rows = self._db.execute(f"SELECT id, text FROM seg WHERE kind IN ({marks})", self.DOC_KINDS).fetchall()
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM kw")
        self._db.executemany("INSERT INTO kw (rowid, tokens) VALUES (?, ?)", [(i, tokens(t)) for i, t in rows])
        self._db.execute(f"PRAGMA user_version = {self.VERSION}")
        self._db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _bump(self) -> None:
        """Count a write (inside its transaction): a snapshot of an older generation is stale."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def iter_vectors(self, batch: int = 50_000, *, whole: bool = False) -> Iterator[list[tuple[int, bytes]]]:
        """(id, float16 bytes) of every row (``whole``: of the whole-text vectors), in id order, a batch at a time."""
        try:
            cur = self._db.execute(f"SELECT id, vec FROM {'whole' if whole else 'seg'} ORDER BY id")
        except sqlite3.OperationalError:  # read-only, a file from before the whole table: none
            return
        while rows := cur.fetchmany(batch):
            yield rows

    def max_id(self) -> int:
        """The highest row id ever seen here, keyword rows included (ids are never reused)."""
        a = self._db.execute("SELECT max(id) FROM seg").fetchone()[0] or 0
        b = self._db.execute("SELECT max(rowid) FROM kw").fetchone()[0] or 0
        return int(max(a, b))

    def _in(self, sql: str, values: Sequence[object]) -> list[Any]:
        """Run ``sql`` (with one ``IN ({})``) over ``values`` in chunks; the first column of every row."""
        out: list[Any] = []
        for chunk in _chunks(values):
            out += [r[0] for r in self._db.execute(sql.format(",".join("?" * len(chunk))), chunk)]
        return out

    def known(self, hashes: Sequence[str]) -> list[str]:
        return self._in("SELECT DISTINCT content_hash FROM seg WHERE content_hash IN ({})", hashes)

    def ids_of(self, hashes: Sequence[str]) -> list[int]:
        return self._in("SELECT id FROM seg WHERE content_hash IN ({})", hashes)

    def replace(
        self,
        old_ids: Sequence[int],
        rows: Sequence[tuple[int, str, str, str, str, bytes]],
        keywords: Sequence[tuple[int, str]] = (),
        wholes: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        """In one transaction: delete ``old_ids``, insert (id, hash, kind, source, text, vec) rows,
        the (id, tokens) keyword rows of the documents among them and their (id, vec) whole-text vectors."""
        self._db.execute("BEGIN")
        try:
            self._in("DELETE FROM seg WHERE id IN ({})", old_ids)
            self._in("DELETE FROM kw WHERE rowid IN ({})", old_ids)
            self._in("DELETE FROM whole WHERE id IN ({})", old_ids)
            self._db.executemany("INSERT INTO seg VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT INTO kw (rowid, tokens) VALUES (?, ?)", keywords)
            self._db.executemany("INSERT INTO whole VALUES (?, ?)", wholes)
            self._bump()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def rows(self, ids: Sequence[int]) -> dict[int, tuple[str, str, str, str]]:
        """id -> (content_hash, kind, source, text)."""
        out: dict[int, tuple[str, str, str, str]] = {}
        for chunk in _chunks(ids):
            sql = f"SELECT id, content_hash, kind, source, text FROM seg WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: r[1:] for r in self._db.execute(sql, chunk)})
        return out

    def keyword_search(self, match: str, limit: int) -> list[tuple[int, float]]:
        """(id, BM25 score > 0 is better) of the best documents for an FTS5 ``match`` expression."""
        sql = "SELECT rowid, -bm25(kw) FROM kw WHERE kw MATCH ? ORDER BY bm25(kw) LIMIT ?"
        return [(int(r[0]), float(r[1])) for r in self._db.execute(sql, (match, limit))]

    def counts(self) -> dict[str, int]:
        """content_hash -> its rows."""
        return dict(self._db.execute("SELECT content_hash, COUNT(*) FROM seg GROUP BY content_hash").fetchall())

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM seg").fetchone()[0])

    def _kinds(self, negate: bool = False) -> str:
        return f"kind {'NOT ' if negate else ''}IN ({','.join(repr(k) for k in self.DOC_KINDS)})"

    def doc_hashes(self) -> set[str]:
        """The content hashes that have document rows (whole texts, captions)."""
        return {r[0] for r in self._db.execute(f"SELECT DISTINCT content_hash FROM seg WHERE {self._kinds()}")}

    def count_docs(self) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM seg WHERE {self._kinds()}").fetchone()[0])

    def parts_per_content(self) -> dict[str, int]:
        """content_hash -> its region and line rows."""
        sql = f"SELECT content_hash, count(*) FROM seg WHERE {self._kinds(True)} GROUP BY content_hash"
        return dict(self._db.execute(sql).fetchall())

    def orphan_parts(self) -> set[str]:
        """Content hashes with regions or lines but no document row."""
        sql = (
            f"SELECT DISTINCT content_hash FROM seg WHERE {self._kinds(True)} "
            f"EXCEPT SELECT content_hash FROM seg WHERE {self._kinds()}"
        )
        return {r[0] for r in self._db.execute(sql)}

    def clear(self) -> None:
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM seg")
        self._db.execute("DELETE FROM kw")
        self._db.execute("DELETE FROM whole")
        self._bump()
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def _fill(content: Content, it: Indexed, *, captions: Sequence[Any]) -> None:
    """The analysis of one image on its content row (OCR kept before the store write, or indexed after it)."""
    content.error = None
    content.text = "\n".join(ln["text"] for ln in it.lines)
    content.lines_json = json.dumps(it.lines, ensure_ascii=False)
    content.captions_json = json.dumps(list(captions), ensure_ascii=False)
    content.source = it.source
    content.width, content.height = it.width, it.height
    content.versions_json = json.dumps(it.versions)
    content.updated_at = time.time()
