"""First start: administrator, default project, roles; idempotent."""

from __future__ import annotations

import sqlalchemy as sa

from server import bootstrap
from server.auth.models import Assignment, Role, User
from server.auth.passwords import verify_password
from server.auth.roles import SYSTEM_ROLES
from server.projects.models import Project
from tests.conftest import make_app


def test_first_start_creates_admin_with_generated_password_kept_privately(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    report = bootstrap.setup(app)
    assert report.admin_email == "admin@example.org"
    assert report.admin_password and len(report.admin_password) >= 16
    kept = report.admin_password_file.read_text().splitlines()
    assert kept == ["admin@example.org", report.admin_password]
    assert report.admin_password_file.stat().st_mode & 0o777 == 0o600
    assert report.project_created
    with app.app_context(), app.extensions["merit.db"].session() as db_session:
        user = db_session.scalars(sa.select(User)).one()
        assert verify_password(user.password_hash, report.admin_password)
        assert user.password_hash.startswith("$argon2id$")
        assignment = db_session.scalars(sa.select(Assignment)).one()
        assert (assignment.role_id, assignment.actee) == (1, "*")
        assert user.actor.display_name == "Administrateur"  # in the server's language
        assert db_session.get(Project, 1).name == "Programme Mali"
        assert {r.system for r in db_session.scalars(sa.select(Role))} == {
            r.system for r in SYSTEM_ROLES
        }
    app.extensions["merit.db"].dispose()


def test_the_first_account_is_named_in_the_server_language(database_url, tmp_path):
    app = make_app(database_url, tmp_path, DEFAULT_LANGUAGE="en")
    bootstrap.setup(app)
    with app.app_context(), app.extensions["merit.db"].session() as db_session:
        assert db_session.scalars(sa.select(User)).one().actor.display_name == "Administrator"
    app.extensions["merit.db"].dispose()


def test_second_start_keeps_everything_and_prints_no_password(database_url, tmp_path):
    app = make_app(database_url, tmp_path, ADMIN_PASSWORD="a-chosen-password")
    first = bootstrap.setup(app)
    assert first.admin_password is None  # chosen, not generated: nothing to show
    second = bootstrap.setup(app)
    assert second.admin_password is None and not second.project_created
    with app.app_context(), app.extensions["merit.db"].session() as db_session:
        assert db_session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Project)) == 1
        # The next project gets id 2: the explicit id 1 did not confuse the sequence.
        project = Project(name="Second")
        db_session.add(project)
        db_session.commit()
        assert project.id == 2
    app.extensions["merit.db"].dispose()
