"""Builders for the rows tests need: users with roles, projects, app users."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.auth import app_users
from server.auth import services as accounts
from server.auth.models import AppUser, User
from server.projects.models import Project

PASSWORD = "correct horse battery"


def user(
    db_session: Session,
    email: str = "coord@example.org",
    *,
    role: str | None = None,
    project_id: int | None = None,
    password: str = PASSWORD,
) -> User:
    """Create a web user, optionally with a role over the site or a project (commits)."""
    created = accounts.create_user(db_session, email, password, by=None)
    if role is not None:
        accounts.assign(db_session, created.actor_id, role, project_id=project_id, by=None)
    db_session.commit()
    return created


def project(db_session: Session, name: str = "Enquête Ségou") -> Project:
    """Create a project (commits)."""
    created = Project(name=name)
    db_session.add(created)
    db_session.commit()
    return created


def app_user(
    db_session: Session,
    project_id: int,
    name: str = "Tablette 1",
    *,
    secret_key: str = "test-secret-key-not-for-production",
) -> tuple[AppUser, str]:
    """Create an app user; return it and its token (commits)."""
    created, token = app_users.create(db_session, project_id, name, secret_key=secret_key, by=None)
    db_session.commit()
    return created, token
