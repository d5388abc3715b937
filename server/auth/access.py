"""What an actor may do: verbs from the roles assigned over the site, a project or a form.

Views call :func:`require` with the verb and the project (and form) concerned; it raises
401 for anonymous requests and 403 otherwise. What is read of a form or done to its records
goes through :func:`require_on_form` instead, the one place that says how a refusal looks
there: a tablet (app user) gets 404, as if the form were not on the server (a device learns
nothing about forms it was not given), anyone else 403. The API (form reads, records, OData),
the OpenRosa routes (manifest, media) and the console all call it. Managing a form (its draft,
its assignments, its keys) stays with :func:`require`: a tablet is refused with 403 there.

Assignments are read once per request; the verbs of each role come from
:mod:`server.auth.roles` (the roles table is kept equal to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import g

from server import db, errors
from server.auth.models import Assignment
from server.auth.roles import VERBS_BY_ROLE_ID

if TYPE_CHECKING:
    from server.forms.models import Form


@dataclass(frozen=True)
class Principal:
    """Who is asking: an actor's id, kind and name (and an app user's project)."""

    id: int
    type: str
    display_name: str
    project_id: int | None = None

    @property
    def is_app_user(self) -> bool:
        """A token holder: a tablet, or a public link (the same limits: no console, no
        project beyond its own, 404 for what it may not read)."""
        return self.type in ("field_key", "public_link")


def current_actor() -> Principal | None:
    """Return the actor of the current request (None when anonymous)."""
    return g.get("actor")


def current_app_user() -> Principal | None:
    """Return the app user of the current request, when a tablet is asking."""
    actor = g.get("actor")
    return actor if actor is not None and actor.is_app_user else None


def _grants() -> list[tuple[str, frozenset[str]]]:
    """Return (actee, verbs) for every assignment of the current actor, once per request."""
    cached = g.get("_grants")
    if cached is not None:
        return cached
    actor = current_actor()
    grants: list[tuple[str, frozenset[str]]] = []
    if actor is not None:
        rows = db.session().execute(
            sa.select(Assignment.actee, Assignment.role_id).where(Assignment.actor_id == actor.id)
        )
        grants = [(actee, VERBS_BY_ROLE_ID.get(role_id, frozenset())) for actee, role_id in rows]
    g._grants = grants
    return grants


def remember_grants(grants: list[tuple[str, int]]) -> None:
    """Keep the actor's (actee, role id) assignments read during authentication."""
    g._grants = [(actee, VERBS_BY_ROLE_ID.get(role_id, frozenset())) for actee, role_id in grants]


def forget_grants() -> None:
    """Read the actor's assignments again at the next check (its roles have just changed)."""
    g.pop("_grants", None)


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


def require(verb: str, *, project_id: int | None = None, form_id: int | None = None) -> Principal:
    """Return the current actor if it may do ``verb`` here; raise 401 or 403 otherwise."""
    actor = current_actor()
    if actor is None:
        raise errors.AuthenticationRequired()
    if not can(verb, project_id=project_id, form_id=form_id):
        raise errors.Forbidden()
    return actor


def require_on_form(verb: str, form: Form) -> Principal:
    """Return the current actor if it may do ``verb`` on the form; raise otherwise.

    401 when anonymous; 404 for a tablet, as if the form did not exist; 403 for anyone else.
    """
    actor = require_actor()
    if not can(verb, project_id=form.project_id, form_id=form.id):
        raise errors.NotFound() if actor.is_app_user else errors.Forbidden()
    return actor


def require_actor() -> Principal:
    """Return the current actor; raise 401 when the request is anonymous."""
    actor = current_actor()
    if actor is None:
        raise errors.AuthenticationRequired()
    return actor


def visible_project_ids() -> set[int] | None:
    """Return the projects the actor holds any role in; None means all (site-wide role)."""
    app_user = current_app_user()
    if app_user is not None:
        # A tablet sees its project; a public link only its form, not even the project's name.
        return {app_user.project_id} if app_user.type == "field_key" else set()
    ids: set[int] = set()
    for actee, granted in _grants():
        if actee == "*" and "project.read" in granted:
            return None
        if actee.startswith("project:"):
            ids.add(int(actee.split(":", 1)[1]))
    return ids
