"""Named roots: which mount point each host gave a root name with ``pixgrep watch DIR --name NAME``.

Paths under a named root are booked as ``name:/rel`` keys (``pixgrep.roots``) in the existing ``paths``,
``roots`` and ``queue`` columns, so no row changes here: books written before named roots hold absolute
paths, which stay valid (a root with no name is booked as before). Naming a root that is already indexed
rewrites its rows to keys when the books are next opened with that name (``Catalog.use_mounts``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "root_mounts",
        sa.Column("name", sa.String(64), primary_key=True),
        # The daemon's host name (daemon.host_name, else the machine's): each host mounts a root its own way.
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("root_mounts")
