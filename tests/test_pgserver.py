"""The PostgreSQL harness itself: a real server, reachable through SQLAlchemy and psycopg 3."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from pgserver import PgServer


@pytest.mark.slow
def test_postgres_serves_a_fresh_database(pg_url: str, pg_server: PgServer) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(x) FROM t")).scalar() == 3
            assert conn.dialect.name == "postgresql"
            # Unix socket only: no TCP listener another local user could reach.
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar() == ""
    finally:
        engine.dispose()
    # The cluster never runs as root (initdb refuses to).
    owner = pg_server.data.stat().st_uid
    assert owner != 0
