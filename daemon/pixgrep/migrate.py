"""Bring the books to the current schema with Alembic (pixgrep/migrations), on SQLite or PostgreSQL.

Opening the books costs one query when they are current: Alembic itself is imported only to upgrade.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pixgrep.settings import ConfigError

log = logging.getLogger("pixgrep.migrate")

# The newest revision under migrations/versions (a test checks they agree).
HEAD = "0003"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Two daemons starting against one PostgreSQL database must not migrate it at the same time.
_PG_LOCK = 0x70697867  # "pixg"


def current(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _config(conn: sa.Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: sa.Engine, *, where: str) -> None:
    """Upgrade to HEAD; ``where`` names the books in the one-line error a newer schema gets."""
    with engine.connect() as conn:
        if current(conn) == HEAD:
            return
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        have = current(conn)
        if have == HEAD:
            return
        cfg = _config(conn)
        if have is not None:
            try:
                known = ScriptDirectory.from_config(cfg).get_revision(have) is not None
            except CommandError:
                known = False
            if not known:
                raise ConfigError(
                    f"the books at {where} were written by a newer pixgrep (schema {have}); upgrade pixgrep"
                )
        log.info("upgrading the books at %s from schema %s to %s", where, have or "(none)", HEAD)
        # One line of ours is enough; Alembic would log each plugin and revision.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            command.upgrade(cfg, "head")
        except CommandError as e:
            raise ConfigError(f"the books at {where} could not be upgraded: {e}") from e
