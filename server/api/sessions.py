"""Sessions and the current user: ``POST /v1/sessions``, ``DELETE``, ``GET /users/current``."""

from __future__ import annotations

from flask import current_app, g, jsonify

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, success
from server.auth import access, sessions
from server.auth.authenticate import password_settings
from server.auth.models import Actor, AuthSession, User


def session_json(auth_session: AuthSession, token: str) -> dict:
    """Render a session as Central does."""
    return {
        "createdAt": iso(auth_session.created_at),
        "expiresAt": iso(auth_session.expires_at),
        "token": token,
        "csrf": auth_session.csrf,
    }


def actor_json(actor: Actor, user: User | None = None) -> dict:
    """Render an actor (and its email, for web users) as Central does."""
    body = {
        "id": actor.id,
        "type": actor.type,
        "displayName": actor.display_name,
        "createdAt": iso(actor.created_at),
        "updatedAt": iso(actor.updated_at),
        "deletedAt": iso(actor.deleted_at),
    }
    if user is not None:
        body["email"] = user.email
    return body


@bp.post("/sessions")
def create_session():
    """Sign in with email and password; answer a bearer token."""
    body = json_body()
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        raise errors.MissingParameter(field="email/password")
    db_session = db.session()
    user = sessions.check_password(db_session, email, password, **password_settings())
    auth_session, token = sessions.open_session(
        db_session, user.actor_id, hours=current_app.config["SESSION_HOURS"]
    )
    return jsonify(session_json(auth_session, token))


@bp.get("/sessions/restore")
def restore_session():
    """Return the current bearer session (Central's frontend uses it on reload)."""
    auth_session = g.get("auth_session")
    if auth_session is None:
        raise errors.NotFound()
    return jsonify(
        {"createdAt": iso(auth_session.created_at), "expiresAt": iso(auth_session.expires_at)}
    )


@bp.delete("/sessions/<token>")
def delete_session(token: str):
    """Sign out: end the session with this token (one's own, or any for an administrator)."""
    actor = access.require_actor()
    target = sessions.find_session(db.session(), token)
    if target is None:
        raise errors.NotFound()
    if target.actor_id != actor.id and not access.can("user.update"):
        raise errors.Forbidden()
    sessions.end_session(db.session(), target)
    return jsonify(success())


@bp.get("/users/current")
def current_user():
    """Return the signed-in user (pyodk checks its cached token with this)."""
    principal = access.require_actor()
    actor = db.session().get(Actor, principal.id)
    user = db.session().get(User, principal.id)
    body = actor_json(actor, user)
    from flask import request

    if request.headers.get("X-Extended-Metadata", "").lower() == "true":
        body["verbs"] = sorted(access.verbs())
    return jsonify(body)
