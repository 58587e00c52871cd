"""Alembic's environment: pixgrep hands it an open connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    # SQLite alters tables by copying them; batch mode does that for changes ALTER TABLE can't make.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
