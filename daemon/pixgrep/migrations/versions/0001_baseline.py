"""The books as the hand-written upgrades left them (schema_version 3), for SQLite and PostgreSQL.

A file written before Alembic (a ``meta`` row ``schema_version`` 1 to 3 and no ``alembic_version``) gets the
columns those upgrades added, then is stamped here; a new database is created whole.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str] | None:
    insp = sa.inspect(op.get_bind())
    if not insp.has_table(table):
        return None
    return {c["name"] for c in insp.get_columns(table)}


def _legacy() -> None:
    """Bring a schema_version 1 or 2 file to 3 (what db.py's UPGRADES did)."""
    cols = _columns("contents")
    if cols is not None and "captions_json" not in cols:
        op.add_column("contents", sa.Column("captions_json", sa.Text(), nullable=False, server_default="[]"))
    cols = _columns("queue")
    if cols is not None and "src" not in cols:
        op.add_column("queue", sa.Column("src", sa.LargeBinary(), nullable=True))


def upgrade() -> None:
    _legacy()
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "meta" not in existing:
        op.create_table(
            "meta",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text(), nullable=False),
        )
    if "contents" not in existing:
        op.create_table(
            "contents",
            sa.Column("hash", sa.String(64), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("source", sa.String(16)),
            sa.Column("text", sa.Text(), nullable=False),
            sa.Column("lines_json", sa.Text(), nullable=False),
            sa.Column("captions_json", sa.Text(), nullable=False),
            sa.Column("width", sa.Integer()),
            sa.Column("height", sa.Integer()),
            sa.Column("versions_json", sa.Text(), nullable=False),
            sa.Column("error", sa.Text()),
            sa.Column("retryable", sa.Boolean(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("updated_at", sa.Double(), nullable=False),
        )
        op.create_index("ix_contents_status", "contents", ["status"])
    if "paths" not in existing:
        op.create_table(
            "paths",
            sa.Column("path", sa.LargeBinary(), primary_key=True),
            sa.Column("content_hash", sa.String(64), sa.ForeignKey("contents.hash")),
            sa.Column("root", sa.LargeBinary()),
            # 64-bit: nanosecond mtimes, inode numbers and sizes overflow PostgreSQL's INTEGER.
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
            sa.Column("inode", sa.BigInteger(), nullable=False),
            sa.Column("error", sa.Text()),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("seen_at", sa.Double(), nullable=False),
        )
        op.create_index("ix_paths_root", "paths", ["root"])
        op.create_index("ix_paths_content_hash", "paths", ["content_hash"])
    if "roots" not in existing:
        op.create_table(
            "roots",
            sa.Column("path", sa.LargeBinary(), primary_key=True),
            sa.Column("added_at", sa.Double(), nullable=False),
        )
    if "queue" not in existing:
        op.create_table(
            "queue",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("path", sa.LargeBinary(), nullable=False, unique=True),
            sa.Column("op", sa.String(16), nullable=False),
            sa.Column("src", sa.LargeBinary()),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("not_before", sa.Double(), nullable=False),
            sa.Column("error", sa.Text()),
            sa.Column("enqueued_at", sa.Double(), nullable=False),
            sa.Column("claimed_at", sa.Double()),
        )
        op.create_index("ix_queue_state_not_before", "queue", ["state", "not_before"])


def downgrade() -> None:
    for table in ("queue", "roots", "paths", "contents", "meta"):
        op.drop_table(table)
