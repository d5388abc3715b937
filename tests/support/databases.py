"""Test databases: one migrated SQLite file and one PostgreSQL database per test session.

Each pytest process (xdist worker) creates its own PostgreSQL database, named uniquely, so
several runs can share one server. Between tests every table is emptied (the roles are put
back), which keeps each test isolated even when the code under test commits, runs in a
gunicorn process, or uses several connections.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa

from server import migrate
from server.auth.roles import sync_roles
from server.db import create_engine
from server.models import Base

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
KEEP = {"alembic_version"}


def pg_admin_url() -> str:
    """URL of a PostgreSQL database we may connect to in order to create others."""
    return os.environ.get("MERIT_TEST_DATABASE_URL", DEFAULT_PG_URL)


def pg_available() -> tuple[bool, str]:
    """Tell whether PostgreSQL answers at the test URL, and why not."""
    engine = create_engine(pg_admin_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True, ""
    except sa.exc.OperationalError as exc:
        return False, str(exc).splitlines()[0]
    finally:
        engine.dispose()


def create_pg_database(worker: str) -> str:
    """Create and migrate a fresh PostgreSQL database; return its URL."""
    admin_url = sa.engine.make_url(pg_admin_url().replace("postgresql://", "postgresql+psycopg://"))
    name = f"merit_test_{worker}_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    url = url.replace("postgresql+psycopg://", "postgresql://")
    migrate.upgrade(url)
    return url


def drop_pg_database(url: str) -> None:
    """Drop a database made by :func:`create_pg_database`."""
    parsed = sa.engine.make_url(url.replace("postgresql://", "postgresql+psycopg://"))
    admin_url = sa.engine.make_url(pg_admin_url().replace("postgresql://", "postgresql+psycopg://"))
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    engine.dispose()


def create_sqlite_database(directory: Path) -> str:
    """Create and migrate a SQLite database file; return its URL."""
    url = f"sqlite:///{directory / 'merit-test.db'}"
    migrate.upgrade(url)
    return url


# Sequences a test used go back to 1 (tests may count on the first project being 1).
_PG_RESTART_SEQUENCES = """
DO $$DECLARE s record; BEGIN
  FOR s IN SELECT schemaname, sequencename FROM pg_sequences WHERE last_value IS NOT NULL LOOP
    EXECUTE format('ALTER SEQUENCE %I.%I RESTART', s.schemaname, s.sequencename);
  END LOOP;
END$$
"""


def reset(url: str) -> None:
    """Empty every table, restart the id counters and put the system roles back.

    DELETE rather than TRUNCATE on PostgreSQL: the tables of a test hold a few rows, and
    TRUNCATE of thirty tables (new files for each, on disk) costs fifteen times as much.
    """
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name not in KEEP]
    with engine.begin() as connection:
        # Foreign keys stay on: tables are emptied children first, and the two cycles
        # (forms <-> form_versions) are broken before.
        connection.execute(
            sa.text("UPDATE forms SET current_version_id = NULL, draft_version_id = NULL")
        )
        for table in tables:
            connection.execute(sa.text(f'DELETE FROM "{table}"'))  # noqa: S608 - our names
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(_PG_RESTART_SEQUENCES))
        else:
            connection.execute(sa.text("DELETE FROM sqlite_sequence"))  # AUTOINCREMENT counters
    with sa.orm.Session(engine) as db_session:
        sync_roles(db_session)
    engine.dispose()
