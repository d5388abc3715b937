"""What an actor may do: verbs from the roles assigned over the site, a project or a form.

Views call :func:`require` with the verb and the project (and form) concerned; it raises
401 for anonymous requests and 403 otherwise. Assignments are read once per request.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import g

from server import db, errors
from server.auth.models import Actor, AppUser, Assignment, Role


def current_actor() -> Actor | None:
    """Return the actor of the current request (None when anonymous)."""
    return g.get("actor")


def current_app_user() -> AppUser | None:
    """Return the app user of the current request, when a tablet is asking."""
    return g.get("app_user")


def _grants() -> list[tuple[str, frozenset[str]]]:
    """Return (actee, verbs) for every assignment of the current actor, once per request."""
    cached = g.get("_grants")
    if cached is not None:
        return cached
    actor = current_actor()
    grants: list[tuple[str, frozenset[str]]] = []
    if actor is not None:
        rows = db.session().execute(
            sa.select(Assignment.actee, Role.verbs)
            .join(Role, Role.id == Assignment.role_id)
            .where(Assignment.actor_id == actor.id)
        )
        grants = [(actee, frozenset(verbs)) for actee, verbs in rows]
    g._grants = grants
    return grants


def verbs(*, project_id: int | None = None, form_id: int | None = None) -> frozenset[str]:
    """Return every verb the current actor holds over the site, the project or the form."""
    app_user = current_app_user()
    if app_user is not None and project_id is not None and app_user.project_id != project_id:
        return frozenset()
    scopes = {"*"}
    if project_id is not None:
        scopes.add(f"project:{project_id}")
    if form_id is not None:
        scopes.add(f"form:{form_id}")
    result: set[str] = set()
    for actee, granted in _grants():
        if actee in scopes:
            result |= granted
    return frozenset(result)


def can(verb: str, *, project_id: int | None = None, form_id: int | None = None) -> bool:
    """Tell whether the current actor may do ``verb`` here."""
    return verb in verbs(project_id=project_id, form_id=form_id)


def require(verb: str, *, project_id: int | None = None, form_id: int | None = None) -> Actor:
    """Return the current actor if it may do ``verb`` here; raise 401 or 403 otherwise."""
    actor = current_actor()
    if actor is None:
        raise errors.AuthenticationRequired()
    if not can(verb, project_id=project_id, form_id=form_id):
        raise errors.Forbidden()
    return actor


def require_actor() -> Actor:
    """Return the current actor; raise 401 when the request is anonymous."""
    actor = current_actor()
    if actor is None:
        raise errors.AuthenticationRequired()
    return actor


def visible_project_ids() -> set[int] | None:
    """Return the projects the actor holds any role in; None means all (site-wide role)."""
    app_user = current_app_user()
    if app_user is not None:
        return {app_user.project_id}
    ids: set[int] = set()
    for actee, granted in _grants():
        if actee == "*" and "project.read" in granted:
            return None
        if actee.startswith("project:"):
            ids.add(int(actee.split(":", 1)[1]))
    return ids
