"""Several daemons on one database: a daemons table (heartbeats, rates), leases on claimed queue rows and
on contents being OCR'd (content_leases) (so two daemons never OCR the same bytes), and a re-queue mark for an event that
arrives while another daemon processes the path.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemons",
        # host:pid:start, unique per process even when a pid is reused.
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("last_beat", sa.Double(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        # Rates and counters as JSON: images/s, indexed since start, claimed now.
        sa.Column("stats_json", sa.Text(), nullable=False, server_default="{}"),
    )
    with op.batch_alter_table("queue") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(128)))
        batch.add_column(sa.Column("lease_until", sa.Double()))
        batch.add_column(sa.Column("requeue", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Bytes being OCR'd: a second daemon that meets the same content (a copy, a rename) waits for them.
    op.create_table(
        "content_leases",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_leases")
    with op.batch_alter_table("queue") as batch:
        batch.drop_column("requeue")
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
    op.drop_table("daemons")
