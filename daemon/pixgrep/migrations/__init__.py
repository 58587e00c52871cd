"""Alembic migrations of the books (one schema for SQLite and PostgreSQL); run by ``pixgrep.migrate``."""
