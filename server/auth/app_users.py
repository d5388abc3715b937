"""App users: one device account per tablet, authenticated by a token in its server URL.

Creating, revoking and deleting one writes its audit event (``by``: who did it), whichever
interface asked.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import services as audit
from server.auth.models import Actor, AppUser, Assignment
from server.auth.tokens import new_token, seal, token_hash, unseal
from server.db import utcnow


def create(
    db_session: Session,
    project_id: int,
    display_name: str,
    *,
    secret_key: str,
    by: int | None,
) -> tuple[AppUser, str]:
    """Create an app user of a project; return it and its token (not committed)."""
    token = new_token()
    actor = Actor(type="field_key", display_name=display_name)
    app_user = AppUser(
        actor=actor,
        project_id=project_id,
        token_hash=token_hash(token),
        token_sealed=seal(secret_key, token),
        created_by=by,
    )
    db_session.add(app_user)
    db_session.flush()
    _event(db_session, "field_key.create", app_user, by)
    return app_user, token


def _event(db_session: Session, action: str, app_user: AppUser, by: int | None) -> None:
    audit.record(
        db_session,
        action,
        actor_id=by,
        project_id=app_user.project_id,
        details={"actorId": app_user.actor_id, "displayName": app_user.actor.display_name},
    )


def find_by_token(db_session: Session, token: str) -> AppUser | None:
    """Return the live app user holding this token (None if unknown or revoked)."""
    return db_session.execute(
        sa.select(AppUser)
        .join(Actor, Actor.id == AppUser.actor_id)
        .where(
            AppUser.token_hash == token_hash(token),
            AppUser.revoked_at.is_(None),
            Actor.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


# Every request a tablet makes runs this: built once, in Core (no ORM entities to load).
_APP_USERS, _ACTORS, _ASSIGNMENTS = AppUser.__table__, Actor.__table__, Assignment.__table__
_PRINCIPAL_BY_TOKEN = (
    sa.select(
        _APP_USERS.c.actor_id,
        _APP_USERS.c.project_id,
        _ACTORS.c.display_name,
        _ASSIGNMENTS.c.actee,
        _ASSIGNMENTS.c.role_id,
    )
    .select_from(
        _APP_USERS.join(_ACTORS, _ACTORS.c.id == _APP_USERS.c.actor_id).outerjoin(
            _ASSIGNMENTS, _ASSIGNMENTS.c.actor_id == _APP_USERS.c.actor_id
        )
    )
    .where(
        _APP_USERS.c.token_hash == sa.bindparam("token_hash"),
        _APP_USERS.c.revoked_at.is_(None),
        _ACTORS.c.deleted_at.is_(None),
    )
)


def principal_by_token(
    db_session: Session, token: str
) -> tuple[int, int, str, list[tuple[str, int]]] | None:
    """Return (actor id, project id, name, [(actee, role id)]) of the app user with this token.

    One query for identity and rights: it runs on every request a tablet makes.
    """
    rows = db_session.execute(_PRINCIPAL_BY_TOKEN, {"token_hash": token_hash(token)}).all()
    if not rows:
        return None
    actor_id, project_id, display_name = rows[0][:3]
    grants = [(actee, role_id) for *_, actee, role_id in rows if actee is not None]
    return actor_id, project_id, display_name, grants


def token_of(app_user: AppUser, *, secret_key: str) -> str | None:
    """Return an app user's token for showing it again (None once revoked)."""
    if app_user.revoked_at is not None or app_user.token_sealed is None:
        return None
    return unseal(secret_key, app_user.token_sealed)


def revoke(db_session: Session, app_user: AppUser, *, by: int | None) -> None:
    """Revoke an app user's access: its token stops working at once (not committed).

    The actor stays, so the records it sent keep their submitter.
    """
    app_user.revoked_at = utcnow()
    app_user.token_hash = None
    app_user.token_sealed = None
    _event(db_session, "field_key.revoke", app_user, by)


def delete(db_session: Session, app_user: AppUser, *, by: int | None) -> None:
    """Delete an app user (revoked first): gone from lists, its records keep its name."""
    if app_user.revoked_at is None:
        revoke(db_session, app_user, by=by)
    app_user.actor.deleted_at = utcnow()
    _event(db_session, "field_key.delete", app_user, by)
