"""Public links: anyone holding one may fill one form in a browser, and do nothing else.

As ODK Central's (``/v1/projects/<p>/forms/<f>/public-links``): a link is an actor of type
``public_link`` holding the ``pub-link`` role (``form.read``, ``submission.create``) on its
form only, authenticated by a 64-character token. The browser page of a link (``/-/<token>``,
:mod:`server.web.pages.webforms`) loads the form and sends records through the token prefix
``/v1/key/<token>/...``, as a tablet does, so the same access checks and the same intake apply:
a link's token reads no record, no other form, no console page.

Creating and deleting a link writes its audit event (``public_link.create``,
``public_link.delete``: who did it), whichever interface asked. The functions here leave their
change open; :func:`create_link` and :func:`delete_link` are the committed forms the API and
the console call.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.auth import services as accounts
from server.auth.models import Actor, Assignment, PublicLink
from server.auth.tokens import new_token, seal, token_hash, unseal
from server.db import committing, utcnow
from server.forms.models import Form

_PURPOSE = "public-link-token"


def create(
    db_session: Session,
    form: Form,
    display_name: str,
    *,
    once: bool,
    secret_key: str,
    by: int | None,
) -> tuple[PublicLink, str]:
    """Create a public link to fill ``form``; return it and its token (not committed)."""
    name = display_name.strip()
    if not name:
        raise errors.MissingParameter(field="displayName")
    token = new_token()
    link = PublicLink(
        actor=Actor(type="public_link", display_name=name[:255]),
        project_id=form.project_id,
        form_id=form.id,
        once=once,
        token_hash=token_hash(token),
        token_sealed=seal(secret_key, token, _PURPOSE),
        created_by=by,
    )
    db_session.add(link)
    db_session.flush()
    accounts.assign(db_session, link.actor_id, "pub-link", form_id=form.id, by=by)
    _event(db_session, "public_link.create", link, by)
    return link, token


def _event(db_session: Session, action: str, link: PublicLink, by: int | None) -> None:
    audit.record(
        db_session,
        action,
        actor_id=by,
        project_id=link.project_id,
        form_id=link.form_id,
        details={
            "actorId": link.actor_id,
            "displayName": link.actor.display_name,
            "once": link.once,
        },
    )


def for_form(db_session: Session, form: Form) -> list[PublicLink]:
    """Return a form's links, those still working first, newest first (deleted ones not)."""
    return list(
        db_session.scalars(
            sa.select(PublicLink)
            .join(Actor, Actor.id == PublicLink.actor_id)
            .where(PublicLink.form_id == form.id, Actor.deleted_at.is_(None))
            .order_by(PublicLink.token_hash.is_(None), Actor.created_at.desc(), Actor.id.desc())
        )
    )


def get(db_session: Session, form: Form, actor_id: int) -> PublicLink:
    """Return one live link of the form; 404 otherwise."""
    link = db_session.get(PublicLink, actor_id)
    if link is None or link.form_id != form.id or link.actor.deleted_at is not None:
        raise errors.NotFound()
    return link


def token_of(link: PublicLink, *, secret_key: str) -> str | None:
    """Return a link's token for showing it again (None once revoked)."""
    if link.token_sealed is None:
        return None
    return unseal(secret_key, link.token_sealed, _PURPOSE)


def revoke(db_session: Session, link: PublicLink, *, by: int | None) -> None:
    """Stop a link at once: its token is forgotten (not committed)."""
    link.revoked_at = utcnow()
    link.token_hash = None
    link.token_sealed = None
    _event(db_session, "public_link.revoke", link, by)


def delete(db_session: Session, link: PublicLink, *, by: int | None) -> None:
    """Delete a link (revoked first); the records sent through it keep its name."""
    if link.token_hash is not None:
        revoke(db_session, link, by=by)
    link.actor.deleted_at = utcnow()
    _event(db_session, "public_link.delete", link, by)


create_link = committing(create)
revoke_link = committing(revoke)
delete_link = committing(delete)


def find_by_token(db_session: Session, token: str) -> PublicLink | None:
    """Return the working link holding this token, with its form still there, or None."""
    return db_session.execute(
        sa.select(PublicLink)
        .join(Actor, Actor.id == PublicLink.actor_id)
        .join(Form, Form.id == PublicLink.form_id)
        .where(
            PublicLink.token_hash == token_hash(token),
            Actor.deleted_at.is_(None),
            Form.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


_LINKS, _ACTORS, _ASSIGNMENTS = PublicLink.__table__, Actor.__table__, Assignment.__table__
_PRINCIPAL_BY_TOKEN = (
    sa.select(
        _LINKS.c.actor_id,
        _LINKS.c.project_id,
        _ACTORS.c.display_name,
        _ASSIGNMENTS.c.actee,
        _ASSIGNMENTS.c.role_id,
    )
    .select_from(
        _LINKS.join(_ACTORS, _ACTORS.c.id == _LINKS.c.actor_id).outerjoin(
            _ASSIGNMENTS, _ASSIGNMENTS.c.actor_id == _LINKS.c.actor_id
        )
    )
    .where(_LINKS.c.token_hash == sa.bindparam("token_hash"), _ACTORS.c.deleted_at.is_(None))
)


def principal_by_token(
    db_session: Session, token: str
) -> tuple[int, int, str, list[tuple[str, int]]] | None:
    """Return (actor id, project id, name, [(actee, role id)]) of the link with this token."""
    rows = db_session.execute(_PRINCIPAL_BY_TOKEN, {"token_hash": token_hash(token)}).all()
    if not rows:
        return None
    actor_id, project_id, display_name = rows[0][:3]
    grants = [(actee, role_id) for *_, actee, role_id in rows if actee is not None]
    return actor_id, project_id, display_name, grants
