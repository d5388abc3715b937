"""Who works on a project: its members (web users with a project role), its app users, and
the accounts administrators create.

The console's members, users and app-user pages and the API's users, app-users and
assignments routes read and change these. Every change here commits (views never do), and is
audited by the account, role and app-user services it calls (server/auth/services.py,
server/auth/app_users.py), which leave their changes open so that larger ones can be made of
them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask_babel import gettext
from sqlalchemy.orm import Session

from server import errors
from server.auth import app_users as app_users_service
from server.auth import services as accounts
from server.auth.models import Actor, AppUser, Assignment, User
from server.auth.roles import ROLE_IDS
from server.db import committing
from server.forms.models import Form

# Roles a web user can hold over one project (admin is site-wide, app-user is for devices).
PROJECT_ROLES = ("manager", "viewer", "formfill")
_SYSTEM_BY_ID = {role_id: system for system, role_id in ROLE_IDS.items()}


@dataclass
class Member:
    """A web user with roles over a project."""

    actor_id: int
    display_name: str
    email: str
    roles: list[str] = field(default_factory=list)


def project_members(db_session: Session, project_id: int) -> list[Member]:
    """Return the project's members with their project roles, by email."""
    rows = db_session.execute(
        sa.select(User.actor_id, Actor.display_name, User.email, Assignment.role_id)
        .join(Actor, Actor.id == User.actor_id)
        .join(Assignment, Assignment.actor_id == User.actor_id)
        .where(Assignment.actee == f"project:{project_id}", Actor.deleted_at.is_(None))
        .order_by(User.email, Assignment.role_id)
    ).all()
    members: dict[int, Member] = {}
    for actor_id, name, email, role_id in rows:
        member = members.setdefault(actor_id, Member(actor_id, name, email))
        member.roles.append(_SYSTEM_BY_ID.get(role_id, str(role_id)))
    return list(members.values())


def _check_role(role: str) -> None:
    if role not in PROJECT_ROLES:
        raise errors.UnexpectedValue(field="role", reason=", ".join(PROJECT_ROLES))


def add_member(
    db_session: Session, project_id: int, email: str, role: str, *, actor_id: int | None
) -> User:
    """Give the user with this email a role over the project (idempotent, commits)."""
    _check_role(role)
    user = accounts.find_user(db_session, email)
    if user is None:
        raise errors.NoSuchUser(email=email.strip())
    accounts.assign(db_session, user.actor_id, role, project_id=project_id, by=actor_id)
    db_session.commit()
    return user


def remove_member(
    db_session: Session, project_id: int, member_id: int, role: str, *, actor_id: int | None
) -> None:
    """Take a project role away from a user (commits); 404 if they did not hold it."""
    _check_role(role)
    try:
        accounts.unassign(db_session, member_id, role, project_id=project_id, by=actor_id)
    except errors.NotFound:
        db_session.rollback()
        raise
    db_session.commit()


def app_users(db_session: Session, project_id: int) -> list[AppUser]:
    """Return the project's app users, active ones first, newest first."""
    return list(
        db_session.scalars(
            sa.select(AppUser)
            .join(Actor, Actor.id == AppUser.actor_id)
            .where(AppUser.project_id == project_id, Actor.deleted_at.is_(None))
            .order_by(AppUser.revoked_at.is_not(None), Actor.created_at.desc(), Actor.id.desc())
        )
    )


def get_app_user(db_session: Session, project_id: int, actor_id: int) -> AppUser:
    """Return one of the project's app users, or raise 404."""
    app_user = db_session.get(AppUser, actor_id)
    if app_user is None or app_user.project_id != project_id or app_user.actor.deleted_at:
        raise errors.NotFound()
    return app_user


def assignable_actor(db_session: Session, project_id: int, actor_id: int) -> Actor:
    """Return an actor that may be given a role in the project (404: unknown, another
    project's app user, or a public link: a link holds its one role on its form, and only
    that, so that its token can never do more than fill that form)."""
    actor = db_session.get(Actor, actor_id)
    if actor is None or actor.deleted_at is not None or actor.type == "public_link":
        raise errors.NotFound()
    if actor.type == "field_key":
        app_user = db_session.get(AppUser, actor_id)
        if app_user is None or app_user.project_id != project_id:
            raise errors.NotFound()
    return actor


def app_user_form_ids(db_session: Session, actor_ids: Collection[int]) -> dict[int, set[int]]:
    """Return, for each app user, the ids of the forms it may fill."""
    result: dict[int, set[int]] = {actor_id: set() for actor_id in actor_ids}
    if not result:
        return result
    rows = db_session.execute(
        sa.select(Assignment.actor_id, Assignment.form_id).where(
            Assignment.actor_id.in_(list(result)),
            Assignment.role_id == ROLE_IDS["app-user"],
            Assignment.form_id.is_not(None),
        )
    )
    for actor_id, form_id in rows:
        result[actor_id].add(form_id)
    return result


def set_app_user_forms(
    db_session: Session, app_user: AppUser, form_ids: Collection[int], *, actor_id: int | None
) -> None:
    """Make the app user able to fill exactly these forms of its project (commits)."""
    project_forms = set(
        db_session.scalars(
            sa.select(Form.id).where(
                Form.project_id == app_user.project_id, Form.deleted_at.is_(None)
            )
        )
    )
    wanted = set(form_ids)
    if not wanted <= project_forms:
        raise errors.NotFound()
    current = app_user_form_ids(db_session, [app_user.actor_id])[app_user.actor_id]
    for form_id in sorted(wanted - current):
        accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form_id, by=actor_id)
    for form_id in sorted((current & project_forms) - wanted):
        accounts.unassign(db_session, app_user.actor_id, "app-user", form_id=form_id, by=actor_id)
    db_session.commit()


# The single changes of accounts and roles the API makes, each committed. The account services
# leave theirs open: larger changes are made of them (create_account below, set_app_user_forms).
create_user = committing(accounts.create_user)
update_user = committing(accounts.update_user)
assign_role = committing(accounts.assign)
unassign_role = committing(accounts.unassign)


def create_account(
    db_session: Session,
    email: str,
    password: str,
    *,
    display_name: str | None = None,
    admin: bool = False,
    actor_id: int | None,
) -> User:
    """Create a web user with a first password, optionally an administrator (commits)."""
    if "@" not in email:
        raise errors.UnexpectedValue(field="email", reason=gettext("not an email address"))
    if not password:
        raise errors.MissingParameter(field="password")
    user = accounts.create_user(db_session, email, password, display_name=display_name, by=actor_id)
    if admin:
        accounts.assign(db_session, user.actor_id, "admin", by=actor_id)
    db_session.commit()
    return user


def create_app_user(
    db_session: Session,
    project_id: int,
    name: str,
    *,
    secret_key: str,
    actor_id: int | None,
    form_ids: Collection[int] = (),
) -> AppUser:
    """Create an app user (one tablet) allowed to fill ``form_ids`` (commits)."""
    name = name.strip()
    if not name:
        raise errors.MissingParameter(field="name")
    app_user, _token = app_users_service.create(
        db_session, project_id, name[:255], secret_key=secret_key, by=actor_id
    )
    for form_id in form_ids:
        accounts.assign(db_session, app_user.actor_id, "app-user", form_id=form_id, by=actor_id)
    db_session.commit()
    return app_user


def revoke_app_user(db_session: Session, app_user: AppUser, *, actor_id: int | None) -> None:
    """Revoke a tablet's token at once; it stays listed, its records keep its name (commits)."""
    app_users_service.revoke(db_session, app_user, by=actor_id)
    db_session.commit()


delete_app_user = committing(app_users_service.delete)
