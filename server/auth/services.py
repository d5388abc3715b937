"""Creating and finding accounts, and role assignments."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _
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
        raise errors.UnexpectedValue(field="email", reason=_("not an email address"))
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


def list_users(db_session: Session) -> list[User]:
    """Return every live web user, by email."""
    return list(
        db_session.scalars(
            sa.select(User).join(Actor).where(Actor.deleted_at.is_(None)).order_by(User.email)
        )
    )


def get_user(db_session: Session, actor_id: int) -> User:
    """Return a live web user or raise 404."""
    user = db_session.get(User, actor_id)
    if user is None or user.actor.deleted_at is not None:
        raise errors.NotFound()
    return user


def change_password(
    db_session: Session, user: User, old: str, new: str, *, max_failures: int, lock_minutes: int
) -> None:
    """Change one's own password after checking the old one; other sessions end (commits).

    The old password is checked as a sign-in is: a wrong one counts as a failed sign-in of the
    account, and a locked account cannot change its password (AccountLocked).
    """
    from server.auth.sessions import check_password, end_all_sessions

    check_password(
        db_session, user.email, old, max_failures=max_failures, lock_minutes=lock_minutes
    )
    set_password(user, new)
    end_all_sessions(db_session, user.actor_id)
    db_session.commit()


def delete_user(db_session: Session, user: User) -> None:
    """Delete a web user: sessions end, roles go, records keep the name (commits)."""
    from server.auth.sessions import end_all_sessions

    user.actor.deleted_at = utcnow()
    user.password_hash = None
    user.digest_ha1 = None
    end_all_sessions(db_session, user.actor_id)
    db_session.execute(sa.delete(Assignment).where(Assignment.actor_id == user.actor_id))
    db_session.commit()
