"""``merit entities``: entity lists from the command line.

merit entities backlog          apply the held offline updates whose wait is over
merit entities backlog --all    apply every held update now, whatever its age
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from server import db
from server.entities import backlog, records


@click.group("entities")
def entities() -> None:
    """Entity lists: the backlog of offline updates."""


@entities.command("backlog")
@click.option("--all", "everything", is_flag=True, help="Apply every held update now.")
@with_appcontext
def backlog_command(everything: bool) -> None:
    """Apply the entity updates held for their predecessor longer than the wait."""
    app = current_app._get_current_object()
    taken = backlog.run_once(app, everything=everything)
    with db.database().session() as db_session:
        left = len(records.held(db_session))
    click.echo(f"applied {taken} held update(s); {left} still waiting")
