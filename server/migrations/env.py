"""Alembic environment: runs migrations on the URL given by server.migrate."""

from __future__ import annotations

from alembic import context

from server import models
from server.db import create_engine

config = context.config
target_metadata = models.Base.metadata


def run() -> None:
    """Run migrations online, on the caller's connection or on the configured database."""
    given = config.attributes.get("connection")
    if given is not None:
        # Inside the caller's transaction: Alembic opens none of its own.
        _run_on(given)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run_on(connection)
    engine.dispose()


def _run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
