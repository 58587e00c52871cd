"""pytest fixtures over tests/pgserver.py: one cluster per session, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pgserver import PgServer, PostgresUnavailable


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer()
    except PostgresUnavailable as e:
        if os.environ.get("CI"):
            # CI installs postgresql (scripts/install.sh --dev): missing there is a failure, not a skip.
            pytest.fail(str(e))
        pytest.skip(str(e))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The SQLAlchemy URL of an empty database, dropped after the test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url.rsplit("/", 1)[1].split("?")[0])
