"""Bookkeeping in SQLite: paths, contents (by hash), roots and the work queue.

Identity is the content hash: a path points at a content row, and OCR,
captions and vectors belong to the content, so a rename or a duplicate never
costs a second OCR.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from pixgrep.private import private_state

SCHEMA_VERSION = 3


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
    # pending -> done | failed
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
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


def settled(status: str | None, retryable: bool | None) -> bool:
    """Nothing left to do for a content's bytes: indexed, or failed for good."""
    return status == "done" or (status == "failed" and not retryable)


def path_settled(
    error: str | None, content_hash: str | None, size: int, mtime_ns: int, status: str | None, retryable: bool | None
) -> bool:
    """Nothing left to do for a path at its booked stat: its content is settled, or its bytes failed for
    good (a path error with no content but a booked stat; see ``Pipeline._path_error``)."""
    if error is None:
        return settled(status, retryable)
    return content_hash is None and (size, mtime_ns) != (0, 0)


# settled() as a SQL condition on Content, for bulk queries.
SETTLED = or_(Content.status == "done", and_(Content.status == "failed", ~Content.retryable))


class PathEntry(Base):
    __tablename__ = "paths"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(ForeignKey("contents.hash"), index=True)
    root: Mapped[str | None] = mapped_column(FsPath, index=True)
    size: Mapped[int] = mapped_column(default=0)
    mtime_ns: Mapped[int] = mapped_column(default=0)
    inode: Mapped[int] = mapped_column(default=0)
    # Errors that belong to the path, not the bytes (unreadable, vanished).
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    seen_at: Mapped[float] = mapped_column(default=time.time)


class Root(Base):
    __tablename__ = "roots"
    path: Mapped[str] = mapped_column(FsPath, primary_key=True)
    added_at: Mapped[float] = mapped_column(default=time.time)


class QueueItem(Base):
    """Durable work queue: pending -> processing -> done | failed."""

    __tablename__ = "queue"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    op: Mapped[str] = mapped_column(String(16), default="upsert")  # upsert | force | delete | move
    # The old path of a move (path is the new one).
    src: Mapped[str | None] = mapped_column(FsPath)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[float] = mapped_column(default=time.time)
    claimed_at: Mapped[float | None]

    __table_args__ = (Index("ix_queue_state_not_before", "state", "not_before"),)


def _add_column(conn: Any, table: str, column: str, ddl: str) -> None:
    """ALTER TABLE ADD COLUMN, if the table exists without it (create_all makes missing tables whole)."""
    cols = {row[1] for row in conn.execute(text(f"PRAGMA table_info({table})"))}
    if cols and column not in cols:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


def _upgrade_1_to_2(conn: Any) -> None:
    _add_column(conn, "contents", "captions_json", "TEXT NOT NULL DEFAULT '[]'")


def _upgrade_2_to_3(conn: Any) -> None:
    _add_column(conn, "queue", "src", "BLOB")


# version -> function that upgrades a database from that version to the next
UPGRADES = {1: _upgrade_1_to_2, 2: _upgrade_2_to_3}


class Database:
    def __init__(self, path: Path) -> None:
        # The books hold every OCR'd text: 0700 folder, 0600 files (and -wal/-shm), whatever the umask.
        private_state(path.parent)
        self.path = path
        self.engine: Engine = create_engine(
            f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False}
        )

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrate()

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            has_meta = conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'")).first()
            if not has_meta:
                Base.metadata.create_all(conn)
                conn.execute(
                    Meta.__table__.insert().values(key="schema_version", value=str(SCHEMA_VERSION))  # type: ignore[attr-defined]
                )
                return
            row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one()
            version = int(row)
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this pixgrep ({SCHEMA_VERSION})"
                )
            while version < SCHEMA_VERSION:
                UPGRADES[version](conn)
                version += 1
            Base.metadata.create_all(conn)
            conn.execute(
                Meta.__table__.update().where(Meta.key == "schema_version").values(value=str(version))  # type: ignore[attr-defined]
            )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

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
            "indexed": by_status.get("done", 0),
            "pending": by_status.get("pending", 0),
            "failed": by_status.get("failed", 0) + path_errors,
            "queue_pending": queue.get("pending", 0) + queue.get("processing", 0),
            "queue_failed": queue.get("failed", 0),
        }

    def knows(self, path: str) -> bool:
        """True if the books hold ``path`` or anything under it."""
        lo, hi = path_prefix_range(path)
        with self.session() as s:
            exact = s.get(PathEntry, path) is not None
            return (
                exact
                or s.scalar(select(PathEntry.path).where(PathEntry.path >= lo, PathEntry.path < hi).limit(1))
                is not None
            )  # type: ignore[operator]

    def close(self) -> None:
        self.engine.dispose()


def books_for_doctor(db: Database) -> tuple[dict[str, str | None], dict[str, tuple[str, list[Any], list[str]]]]:
    """(path -> content hash, content hash -> (status, OCR lines, captions)): what ``pixgrep doctor`` compares."""
    with db.session() as s:
        paths = {p: h for p, h in s.execute(select(PathEntry.path, PathEntry.content_hash))}
        contents = {c.hash: (c.status, c.lines, c.captions) for c in s.scalars(select(Content))}
    return paths, contents
