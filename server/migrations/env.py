"""Alembic environment: runs migrations on the URL given by server.migrate."""

from __future__ import annotations

from alembic import context

from server import models
from server.db import create_engine

config = context.config
target_metadata = models.Base.metadata


def run() -> None:
    """Run migrations online, on the configured database."""
    url = config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
