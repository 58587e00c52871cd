"""Alembic migrations of the books: new databases, pre-Alembic SQLite files, PostgreSQL, newer schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from pixgrep import migrate
from pixgrep.settings import ConfigError

# The schema db.py wrote before Alembic, version 1: no captions, no queue.src.
V1 = """
CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE contents (hash VARCHAR(64) PRIMARY KEY, status VARCHAR(16) NOT NULL, source VARCHAR(16),
    text TEXT NOT NULL, lines_json TEXT NOT NULL, width INTEGER, height INTEGER, versions_json TEXT NOT NULL,
    error TEXT, retryable BOOLEAN NOT NULL, attempts INTEGER NOT NULL, created_at FLOAT NOT NULL,
    updated_at FLOAT NOT NULL);
CREATE TABLE paths (path BLOB PRIMARY KEY, content_hash VARCHAR(64) REFERENCES contents (hash), root BLOB,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, error TEXT, attempts INTEGER NOT NULL,
    seen_at FLOAT NOT NULL);
CREATE TABLE roots (path BLOB PRIMARY KEY, added_at FLOAT NOT NULL);
CREATE TABLE queue (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE, op VARCHAR(16) NOT NULL,
    state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, not_before FLOAT NOT NULL, error TEXT,
    enqueued_at FLOAT NOT NULL, claimed_at FLOAT);
INSERT INTO contents VALUES ('abc', 'done', 'ocr', 'old text', '[]', 1, 1, '{}', NULL, 0, 1, 0, 0);
INSERT INTO paths VALUES (X'2f612e706e67', 'abc', NULL, 3, 4, 5, NULL, 0, 0);
INSERT INTO queue VALUES (1, X'2f622e706e67', 'upsert', 'pending', 0, 0, NULL, 0, NULL);
"""


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def test_head_is_the_newest_revision() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [migrate.HEAD]


def test_a_version_1_sqlite_file_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(V1)
    con.commit()
    con.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine, where=str(path))
        with engine.connect() as conn:
            assert migrate.current(conn) == migrate.HEAD
            assert conn.execute(sa.text("SELECT hash, text, captions_json FROM contents")).all() == [
                ("abc", "old text", "[]")
            ]
            assert conn.execute(sa.text("SELECT path, op, src, requeue FROM queue")).all() == [
                (b"/b.png", "upsert", None, 0)
            ]
            assert conn.execute(sa.text("SELECT count(*) FROM paths")).scalar() == 1
        assert {"claimed_by", "lease_until", "requeue", "src"} <= _columns(engine, "queue")
        assert {"host", "pid", "last_beat", "stats_json"} <= _columns(engine, "daemons")
        assert {"name", "host", "path"} <= _columns(engine, "root_mounts")  # 0003, named roots
        # Current: a second open runs no migration.
        migrate.upgrade(engine, where=str(path))
    finally:
        engine.dispose()


def test_books_from_a_newer_pixgrep_are_refused_in_one_line(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")
    try:
        migrate.upgrade(engine, where="here")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(ConfigError, match=r"^the books at here were written by a newer pixgrep \(schema 9999\)"):
            migrate.upgrade(engine, where="here")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_postgresql_gets_the_same_schema(pg_url: str, tmp_path: Path) -> None:
    pg = sa.create_engine(pg_url)
    lite = sa.create_engine(f"sqlite:///{tmp_path / 'b.sqlite'}")
    try:
        migrate.upgrade(pg, where="pg")
        migrate.upgrade(lite, where="lite")
        tables = set(sa.inspect(lite).get_table_names())
        assert tables == set(sa.inspect(pg).get_table_names())
        for t in tables:
            assert _columns(pg, t) == _columns(lite, t), t
        # 64-bit where nanoseconds and inode numbers need it.
        types = {c["name"]: c["type"] for c in sa.inspect(pg).get_columns("paths")}
        assert all(isinstance(types[c], sa.BigInteger) for c in ("size", "mtime_ns", "inode"))
    finally:
        pg.dispose()
        lite.dispose()


def _drift(catalog: object) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from pixgrep.catalog import Base, Catalog

    assert isinstance(catalog, Catalog)
    with catalog.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata))


def test_migrations_build_the_catalogs_schema_on_sqlite(tmp_path: Path) -> None:
    from pixgrep.catalog import Catalog

    c = Catalog(tmp_path / "b.sqlite")
    try:
        assert _drift(c) == []
    finally:
        c.close()


@pytest.mark.slow
def test_migrations_build_the_catalogs_schema_on_postgresql(pg_url: str) -> None:
    from pixgrep.catalog import Catalog

    c = Catalog(pg_url)
    try:
        assert c.dialect == "postgresql" and _drift(c) == []
    finally:
        c.close()


@pytest.mark.slow
def test_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    from pixgrep.catalog import Catalog
    from pixgrep.errors import BooksUnavailable

    with pytest.raises(BooksUnavailable, match=r"^cannot open the books at postgresql\+psycopg://u:\*\*\*@/x"):
        Catalog(f"postgresql+psycopg://u:secret@/x?host={tmp_path}")
