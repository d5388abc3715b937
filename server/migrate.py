"""Schema migrations with Alembic, callable from code (start-up, CLI, tests)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """Return an Alembic configuration for the database at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head", *, connection: Connection | None = None) -> None:
    """Apply migrations up to ``revision``.

    With ``connection``, they run in its transaction and commit (or roll back) with it: a
    restore migrates, loads and migrates again in one transaction (server/ops/restore.py).
    """
    config = alembic_config(url)
    if connection is not None:
        config.attributes["connection"] = connection
    command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision``."""
    command.downgrade(alembic_config(url), revision)


@cache
def head_revision() -> str:
    """Return the newest revision this code knows."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads: {heads}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    """Return the revision the database is at (None when never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()
