"""Creating and finding accounts, and role assignments."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.auth.models import Actor, Assignment, User
from server.auth.passwords import (
    MIN_PASSWORD_LENGTH,
    digest_ha1,
    hash_password,
)
from server.auth.roles import ROLE_IDS
from server.db import utcnow


def normalise_email(email: str) -> str:
    """Return the form of an email address used to store and compare it."""
    return email.strip().lower()


def find_user(db_session: Session, email: str) -> User | None:
    """Return the live user with this email, if any."""
    return db_session.execute(
        sa.select(User)
        .join(Actor)
        .where(User.email == normalise_email(email), Actor.deleted_at.is_(None))
    ).scalar_one_or_none()


def create_user(
    db_session: Session, email: str, password: str | None, *, display_name: str | None = None
) -> User:
    """Create a web user (not committed). Raises Conflict if the email is taken."""
    email = normalise_email(email)
    if "@" not in email:
        raise errors.UnexpectedValue(field="email", reason="not an email address")
    if find_user(db_session, email) is not None:
        raise errors.Conflict(fields="email", values=email)
    actor = Actor(type="user", display_name=display_name or email)
    user = User(actor=actor, email=email)
    if password is not None:
        set_password(user, password)
    db_session.add(user)
    db_session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """Give a user a new password (hash and Digest secret)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise errors.PasswordTooShort(minimum=MIN_PASSWORD_LENGTH)
    user.password_hash = hash_password(password)
    user.digest_ha1 = digest_ha1(user.email, password)
    user.password_changed_at = utcnow()


def assign(
    db_session: Session,
    actor_id: int,
    role: str | int,
    *,
    project_id: int | None = None,
    form_id: int | None = None,
) -> Assignment:
    """Give an actor a role over the site, a project or a form (idempotent, not committed)."""
    role_id = role if isinstance(role, int) else ROLE_IDS[role]
    if form_id is not None:
        actee = f"form:{form_id}"
    elif project_id is not None:
        actee = f"project:{project_id}"
    else:
        actee = "*"
    existing = db_session.execute(
        sa.select(Assignment).where(
            Assignment.actor_id == actor_id,
            Assignment.role_id == role_id,
            Assignment.actee == actee,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    assignment = Assignment(
        actor_id=actor_id, role_id=role_id, actee=actee, project_id=project_id, form_id=form_id
    )
    db_session.add(assignment)
    db_session.flush()
    return assignment
