"""First start: roles, the administrator, the default project, the programme's forms.

Every step is idempotent: running it again keeps the data and changes nothing that exists.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask_babel import gettext

from server import db, files
from server.auth import services as accounts
from server.auth.roles import sync_roles
from server.projects.models import Project

DEFAULT_PROJECT_ID = 1


@dataclass
class SetupReport:
    """What a start-up did, for the message printed to the person who ran it."""

    admin_email: str
    admin_password: str | None = None  # only when generated during this run
    admin_password_file: Path | None = None
    project_created: bool = False
    forms: list[str] = field(default_factory=list)


def setup(app: Flask) -> SetupReport:
    """Bring a migrated database to a usable state (idempotent)."""
    with app.app_context(), db.database().session() as db_session:
        sync_roles(db_session)
        report = _ensure_admin(app, db_session)
        report.project_created = _ensure_default_project(app, db_session)
        report.forms = _publish_forms(app, db_session)
        return report


def _ensure_admin(app: Flask, db_session: sa.orm.Session) -> SetupReport:
    email = accounts.normalise_email(app.config["ADMIN_EMAIL"])
    report = SetupReport(admin_email=email)
    if accounts.find_user(db_session, email) is not None:
        return report
    password = app.config["ADMIN_PASSWORD"]
    if not password:
        password = secrets.token_urlsafe(15)
        path = Path(app.config["DATA_DIR"]) / "admin-password.txt"
        files.write_private(path, f"{email}\n{password}\n".encode())
        report.admin_password = password
        report.admin_password_file = path
    # Named in the server's language (the console shows it to everyone who reads the audit log).
    name = gettext("Administrator")
    user = accounts.create_user(db_session, email, password, display_name=name, by=None)

    accounts.assign(db_session, user.actor_id, "admin", by=None)
    db_session.commit()
    return report


def _ensure_default_project(app: Flask, db_session: sa.orm.Session) -> bool:
    if db_session.get(Project, DEFAULT_PROJECT_ID) is not None:
        return False
    db_session.add(Project(id=DEFAULT_PROJECT_ID, name=app.config["DEFAULT_PROJECT_NAME"]))
    db_session.flush()
    if db_session.get_bind().dialect.name == "postgresql":
        # An explicit id does not advance PostgreSQL's sequence: move it past the default project.
        db_session.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('projects', 'id'), "
                "GREATEST((SELECT MAX(id) FROM projects), 1))"
            )
        )
    db_session.commit()
    return True


def _publish_forms(app: Flask, db_session: sa.orm.Session) -> list[str]:
    """Publish the built forms (``MERIT_FORMS_DIR``) into the default project."""
    from server.forms.folder import publish_folder

    return publish_folder(db_session, Path(app.config["FORMS_DIR"]), DEFAULT_PROJECT_ID)
