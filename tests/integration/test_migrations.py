"""Migrations: empty to head and back on both databases, and models equal to migrations."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server import migrate
from server.db import create_engine
from server.models import Base


def test_migrated_database_matches_the_models(database_url):
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
        assert migrate.current_revision(connection) == migrate.head_revision()
    engine.dispose()
    assert differences == []


def test_downgrade_to_empty_and_upgrade_again(tmp_path, request):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate.upgrade(url)
    migrate.downgrade(url, "base")
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
    migrate.upgrade(url)
    with engine.connect() as connection:
        assert "submissions" in sa.inspect(connection).get_table_names()
    engine.dispose()


def test_downgrade_and_upgrade_on_postgresql(pg_url):
    from tests.support import databases

    url = databases.create_pg_database("migrations")
    try:
        migrate.downgrade(url, "base")
        migrate.upgrade(url)
        engine = create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            assert migrate.current_revision(connection) == migrate.head_revision()
            assert "submission_versions" in sa.inspect(connection).get_table_names()
        engine.dispose()
    finally:
        databases.drop_pg_database(url)
