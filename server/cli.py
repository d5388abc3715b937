"""The ``merit`` command: set up, serve and operate the server.

    merit serve            migrate, set up, then run gunicorn (what ``make run`` does)
    merit setup            migrate and create the administrator and default project
    merit db upgrade       apply migrations
    merit users create     add a web user

Other packages add their groups here (``merit forms``, ``merit storage``, ``merit export``...).
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import import_module
from pathlib import Path

import click
from flask.cli import FlaskGroup, with_appcontext

from server import files
from server.app import create_app

# Command groups other packages provide: "module:attribute".
COMMAND_GROUPS: tuple[str, ...] = (
    "server.storage.cli:storage",
    "server.forms.cli:forms",
    "server.entities.cli:entities",
    "server.exports.cli:export",
    "server.ops.cli:backup",
    "server.ops.cli:restore",
    "server.ops.cli:doctor",
)


def _create_app():
    return create_app()


# Commands whose output others read: the compiled forms in the checkout (the Docker image's
# user among them). Every other command makes what it creates private (server/files.py).
SHARED_OUTPUT = frozenset({"forms"})


@click.group(
    cls=FlaskGroup,
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """merit-collect: a field data-collection server for ODK Collect."""
    if ctx.invoked_subcommand not in SHARED_OUTPUT:
        # Defence in depth (files are made private one by one too); kept across the exec of
        # gunicorn by `merit serve`.
        files.restrict_umask()


@main.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from flask import current_app

    from server import migrate

    migrate.upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"database at {revision}")


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision the database is at."""
    from server import db, migrate

    with db.database().engine.connect() as connection:
        click.echo(migrate.current_revision(connection) or "(empty)")


def _setup(app) -> None:
    from server import bootstrap, migrate

    files.private_dir(app.config["DATA_DIR"])
    files.tighten_places(app.config)  # an install made before the data folder was private
    migrate.upgrade(app.config["DATABASE_URL"])
    report = bootstrap.setup(app)
    _print_next_steps(app, report)


def _print_next_steps(app, report) -> None:
    from server.openrosa.protocol import is_loopback, is_loopback_host

    host, port = app.config["HOST"], app.config["PORT"]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    address = app.config["PUBLIC_URL"] or f"http://{shown_host}:{port}"
    lines = [
        "",
        "merit-collect is ready.",
        f"  Console:        {address}/",
        f"  Administrator:  {report.admin_email}",
    ]
    if report.admin_password:
        lines += [
            f"  Password:       {report.admin_password}",
            f"                  (shown once; kept in {report.admin_password_file})",
        ]
    if report.forms:
        lines.append(f"  Forms published in project 1: {', '.join(report.forms)}")
    lines += [
        "  ODK Collect:    sign in to the console, open the project, create an app user for",
        "                  each tablet and scan its QR code from Collect",
        "                  (Settings > Project > Reconfigure with QR code).",
    ]
    if is_loopback_host(host):
        lines.append(
            f"                  Tablets cannot reach a server listening on {host}: "
            "set MERIT_HOST=0.0.0.0."
        )
    if not app.config["PUBLIC_URL"] or is_loopback(app.config["PUBLIC_URL"]):
        lines += [
            "                  QR codes carry the address the console is opened at: set",
            f"                  MERIT_PUBLIC_URL=http://<this machine's network address>:{port}",
        ]
    click.echo("\n".join(lines) + "\n")


@main.command("setup")
@with_appcontext
def setup_command() -> None:
    """Migrate the database and create the administrator and default project."""
    from flask import current_app

    _setup(current_app._get_current_object())


@main.command("serve", context_settings={"ignore_unknown_options": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def serve(gunicorn_args: tuple[str, ...]) -> None:
    """Set up, then serve with gunicorn (extra arguments go to gunicorn)."""
    from flask import current_app

    app = current_app._get_current_object()
    _setup(app)
    from server import db

    db.database().dispose()  # workers open their own connections after the fork
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    config_file = Path(__file__).with_name("gunicorn_conf.py")
    args = [gunicorn, "--config", str(config_file), *gunicorn_args, "server.wsgi:app"]
    sys.stdout.flush()
    os.execv(gunicorn, args)  # noqa: S606 - replaces this process with the server


@main.group("users")
def users_group() -> None:
    """Web users."""


@users_group.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--admin", is_flag=True, help="Make the user a site administrator.")
@with_appcontext
def users_create(email: str, password: str, admin: bool) -> None:
    """Create a web user."""
    from server import db
    from server.auth import services as accounts

    with db.database().session() as db_session:
        user = accounts.create_user(db_session, email, password, by=None)
        if admin:
            accounts.assign(db_session, user.actor_id, "admin", by=None)
        db_session.commit()
    click.echo(f"created {email}")


for _spec in COMMAND_GROUPS:
    _module, _, _attribute = _spec.partition(":")
    main.add_command(getattr(import_module(_module), _attribute))
