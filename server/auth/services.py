"""Accounts and role assignments: finding them, and every change of who may do what.

Each change here writes its audit event in the caller's transaction, naming who made it
(``by``: an actor id, or None for the server itself: first start, command line). The API, the
console and the commands all change rights through these functions, so none of them can leave
a change unaudited (issue 16: the API's administration wrote no event).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.auth.models import Actor, Assignment, Role, User
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
    db_session: Session,
    email: str,
    password: str | None,
    *,
    display_name: str | None = None,
    by: int | None,
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
    audit.record(
        db_session,
        "user.create",
        actor_id=by,
        details={"actorId": user.actor_id, "email": user.email},
    )
    return user


def update_user(
    db_session: Session,
    user: User,
    *,
    display_name: str | None = None,
    email: str | None = None,
    by: int | None,
) -> User:
    """Change a user's display name or email (not committed).

    The Digest secret is made from the email: a new email drops it, and ODK Collect users set
    their password again.
    """
    changes: dict[str, str] = {}
    if display_name is not None and display_name.strip():
        user.actor.display_name = display_name.strip()[:255]
        changes["displayName"] = user.actor.display_name
    if email is not None and email.strip():
        email = normalise_email(email)
        other = find_user(db_session, email)
        if other is not None and other.actor_id != user.actor_id:
            raise errors.Conflict(fields="email", values=email)
        if email != user.email:
            user.email = email
            user.digest_ha1 = None
            changes["email"] = email
    if changes:
        audit.record(
            db_session, "user.update", actor_id=by, details={"actorId": user.actor_id, **changes}
        )
    return user


def set_password(user: User, password: str) -> None:
    """Give a user a new password (hash and Digest secret)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise errors.PasswordTooShort(minimum=MIN_PASSWORD_LENGTH)
    user.password_hash = hash_password(password)
    user.digest_ha1 = digest_ha1(user.email, password)
    user.password_changed_at = utcnow()


def _actee(project_id: int | None, form_id: int | None) -> str:
    if form_id is not None:
        return f"form:{form_id}"
    if project_id is not None:
        return f"project:{project_id}"
    return "*"


def _assignment_event(
    db_session: Session,
    action: str,
    actor_id: int,
    role_id: int,
    project_id: int | None,
    form_id: int | None,
    by: int | None,
) -> None:
    if form_id is not None and project_id is None:
        from server.forms.models import Form

        form = db_session.get(Form, form_id)
        project_id = form.project_id if form is not None else None
    audit.record(
        db_session,
        action,
        actor_id=by,
        project_id=project_id,
        form_id=form_id,
        details={"actorId": actor_id, "roleId": role_id},
    )


def assign(
    db_session: Session,
    actor_id: int,
    role: str | int,
    *,
    project_id: int | None = None,
    form_id: int | None = None,
    by: int | None,
) -> Assignment:
    """Give an actor a role over the site, a project or a form (idempotent, not committed)."""
    role_id = role if isinstance(role, int) else ROLE_IDS[role]
    actee = _actee(project_id, form_id)
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
    _assignment_event(db_session, "assignment.create", actor_id, role_id, project_id, form_id, by)
    return assignment


def unassign(
    db_session: Session,
    actor_id: int,
    role: str | int,
    *,
    project_id: int | None = None,
    form_id: int | None = None,
    by: int | None,
) -> None:
    """Take a role away (not committed); 404 when the actor did not hold it there."""
    role_id = role if isinstance(role, int) else ROLE_IDS[role]
    if role_id == ROLE_IDS["admin"] and project_id is None and form_id is None:
        admins = site_admin_ids(db_session)
        if actor_id in admins and len(admins) == 1:
            raise errors.LastAdministrator()
    deleted = db_session.execute(
        sa.delete(Assignment).where(
            Assignment.actor_id == actor_id,
            Assignment.role_id == role_id,
            Assignment.actee == _actee(project_id, form_id),
        )
    )
    if not deleted.rowcount:
        raise errors.NotFound()
    _assignment_event(db_session, "assignment.delete", actor_id, role_id, project_id, form_id, by)


def site_admin_ids(db_session: Session) -> set[int]:
    """Return the actor ids of the site's administrators."""
    return set(
        db_session.scalars(
            sa.select(Assignment.actor_id).where(
                Assignment.actee == "*", Assignment.role_id == ROLE_IDS["admin"]
            )
        )
    )


def actors_by_id(db_session: Session, ids: Iterable[int | None]) -> dict[int, Actor]:
    """Return the actors with these ids (None and unknown ids left out), by id."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {a.id: a for a in db_session.scalars(sa.select(Actor).where(Actor.id.in_(wanted)))}


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
    audit.record(
        db_session,
        "user.password.change",
        actor_id=user.actor_id,
        details={"actorId": user.actor_id},
    )
    db_session.commit()


def delete_user(db_session: Session, user: User, *, by: int | None) -> None:
    """Delete a web user: sessions end, roles go, records keep the name (commits).

    The last administrator cannot be deleted: nobody could then run the server.
    """
    from server.auth.sessions import end_all_sessions

    admins = site_admin_ids(db_session)
    if user.actor_id in admins and len(admins) == 1:
        raise errors.LastAdministrator()
    user.actor.deleted_at = utcnow()
    user.password_hash = None
    user.digest_ha1 = None
    end_all_sessions(db_session, user.actor_id)
    db_session.execute(sa.delete(Assignment).where(Assignment.actor_id == user.actor_id))
    audit.record(
        db_session,
        "user.delete",
        actor_id=by,
        details={"actorId": user.actor_id, "email": user.email},
    )
    db_session.commit()


def find_role(db_session: Session, role: str) -> Role:
    """Return a role by id or system name (``2``, ``app-user``), or raise 404."""
    query = sa.select(Role)
    query = (
        query.where(Role.id == int(role)) if role.isdigit() else query.where(Role.system == role)
    )
    found = db_session.scalars(query).one_or_none()
    if found is None:
        raise errors.NotFound()
    return found


def list_roles(db_session: Session) -> list[Role]:
    """Return every role, by id."""
    return list(db_session.scalars(sa.select(Role).order_by(Role.id)))


def list_assignments(
    db_session: Session,
    *,
    project_id: int | None = None,
    form_id: int | None = None,
    role_id: int | None = None,
) -> list[Assignment]:
    """Return who holds which role over the site, a project or a form."""
    query = sa.select(Assignment).where(Assignment.actee == _actee(project_id, form_id))
    if role_id is not None:
        query = query.where(Assignment.role_id == role_id)
    return list(db_session.scalars(query.order_by(Assignment.id)))
