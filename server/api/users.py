"""Web users, site-wide roles and the list of roles, as ODK Central serves them.

GET, POST             /v1/users
GET, PATCH, DELETE    /v1/users/<id>
PUT                   /v1/users/<id>/password
GET                   /v1/roles
GET                   /v1/assignments[/<role>]
POST, DELETE          /v1/assignments/<role>/<actorId>

Every change goes through the account services (server/auth/members.py, which commits, over
server/auth/services.py, which audits), as the console's do.
"""

from __future__ import annotations

from flask import jsonify, request
from flask_babel import gettext as _

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, success
from server.api.sessions import actor_json
from server.auth import access, members
from server.auth import services as accounts
from server.auth.authenticate import password_settings
from server.auth.models import User
from server.auth.roles import ROLE_IDS


def user_json(user: User) -> dict:
    return actor_json(user.actor, user)


@bp.get("/users")
def list_users():
    """List web users (administrators); ``q`` filters by email or name."""
    access.require("user.list")
    users = accounts.list_users(db.session())
    query = (request.args.get("q") or "").strip().lower()
    if query:
        users = [
            u for u in users if query in u.email or query in (u.actor.display_name or "").lower()
        ]
    return jsonify([user_json(u) for u in users])


@bp.post("/users")
def create_user():
    """Create a web user; without a password they cannot sign in until one is set."""
    actor = access.require("user.create")
    body = json_body()
    email = body.get("email")
    if not isinstance(email, str):
        raise errors.MissingParameter(field="email")
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        raise errors.UnexpectedValue(field="password", reason=_("expected text"))
    user = members.create_user(
        db.session(), email, password, display_name=body.get("displayName"), by=actor.id
    )
    return jsonify(user_json(user))


def _self_or(verb: str, actor_id: int) -> User:
    actor = access.require_actor()
    if actor.id != actor_id:
        access.require(verb)
    return accounts.get_user(db.session(), actor_id)


@bp.get("/users/<int:actor_id>")
def get_user(actor_id: int):
    """Return a web user (oneself, or anyone for administrators)."""
    return jsonify(user_json(_self_or("user.read", actor_id)))


@bp.patch("/users/<int:actor_id>")
def update_user(actor_id: int):
    """Change a user's display name or email."""
    user = _self_or("user.update", actor_id)
    body = json_body()
    name, email = body.get("displayName"), body.get("email")
    members.update_user(
        db.session(),
        user,
        display_name=name if isinstance(name, str) else None,
        email=email if isinstance(email, str) else None,
        by=access.require_actor().id,
    )
    return jsonify(user_json(user))


@bp.put("/users/<int:actor_id>/password")
def change_password(actor_id: int):
    """Change one's own password ({old, new}); other sessions end."""
    actor = access.require_actor()
    if actor.id != actor_id:
        raise errors.Forbidden()
    body = json_body()
    old, new = body.get("old"), body.get("new")
    if not isinstance(old, str) or not isinstance(new, str):
        raise errors.MissingParameter(field="old/new")
    user = accounts.get_user(db.session(), actor_id)
    accounts.change_password(db.session(), user, old, new, **password_settings())
    return jsonify(success())


@bp.delete("/users/<int:actor_id>")
def delete_user(actor_id: int):
    """Delete a web user (administrators); never the last administrator."""
    actor = access.require("user.delete")
    accounts.delete_user(db.session(), accounts.get_user(db.session(), actor_id), by=actor.id)
    return jsonify(success())


@bp.get("/roles")
def list_roles():
    """List the roles and their verbs."""
    access.require_actor()
    return jsonify(
        [
            {
                "id": r.id,
                "name": r.name,
                "system": r.system,
                "verbs": r.verbs,
                "createdAt": iso(r.created_at),
                "updatedAt": iso(r.updated_at),
            }
            for r in accounts.list_roles(db.session())
        ]
    )


def _site_role(role: str) -> int:
    role_id = int(role) if role.isdigit() else ROLE_IDS.get(role)
    if role_id != ROLE_IDS["admin"]:
        raise errors.NotFound()
    return role_id


@bp.get("/assignments")
@bp.get("/assignments/<role>")
def list_site_assignments(role: str | None = None):
    """List site-wide assignments (administrators)."""
    access.require("user.list")
    found = accounts.list_assignments(
        db.session(), role_id=_site_role(role) if role is not None else None
    )
    return jsonify([{"actorId": a.actor_id, "roleId": a.role_id} for a in found])


@bp.post("/assignments/<role>/<int:actor_id>")
def assign_site_role(role: str, actor_id: int):
    """Make a web user an administrator."""
    actor = access.require("user.update")
    user = accounts.get_user(db.session(), actor_id)
    members.assign_role(db.session(), user.actor_id, _site_role(role), by=actor.id)
    return jsonify(success())


@bp.delete("/assignments/<role>/<int:actor_id>")
def unassign_site_role(role: str, actor_id: int):
    """Take the administrator role away (never from the last administrator)."""
    actor = access.require("user.update")
    members.unassign_role(db.session(), actor_id, _site_role(role), by=actor.id)
    return jsonify(success())
