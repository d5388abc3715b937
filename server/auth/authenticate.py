"""Who is asking: every request is authenticated here, before its view runs.

The ways in, as ODK Central accepts them:

* ``/v1/key/<token>/...``: an app user (a tablet), or a public link's browser page; a bad or
  revoked token is 403, never 401, so that Collect does not ask for a password the device
  does not have;
* ``Authorization: Bearer <token>``: a session opened with ``POST /v1/sessions`` (pyodk);
* ``Authorization: Basic``: email and password, over HTTPS only (Collect never sends Basic
  over plain HTTP, and neither should anyone);
* ``Authorization: Digest``: email and password as ODK Collect sends them, over HTTP or HTTPS;
* the console's session cookie, with a CSRF token on every request that changes something.

The result is ``g.actor`` (None when anonymous). Views decide what the actor may do with
:mod:`server.auth.access`. Credentials are checked only when present, so anonymous requests
(health checks) cost no database query.

This runs before the request's body is received (:mod:`server.ops.buffering`), from the URL and
the headers alone: a bad token or password is refused before a byte of body is read, and the
body is then admitted by who sends it. Only the console's CSRF field is read from the body, once
the actor is known.
"""

from __future__ import annotations

import base64
import hmac

from flask import Flask, current_app, g, request

from server import db, errors
from server.auth import access, app_users, digest, public_links, sessions
from server.auth.access import Principal
from server.auth.models import Actor
from server.auth.prefix import TokenPrefixMiddleware, key_token

SESSION_COOKIE = "merit_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    """Install the token-prefix middleware and the authentication step of every request."""
    app.wsgi_app = TokenPrefixMiddleware(app.wsgi_app)
    app.before_request(authenticate)


def _principal(actor: Actor, project_id: int | None = None) -> Principal:
    return Principal(actor.id, actor.type, actor.display_name, project_id)


def _set(actor: Principal | None, method: str | None, **extra: object) -> None:
    g.actor = actor
    g.actor_id = actor.id if actor is not None else None
    g.auth_method = method
    for key, value in extra.items():
        setattr(g, key, value)


def authenticate() -> None:
    """Identify the actor of this request, or raise the problem its credentials deserve."""
    _set(None, None, auth_session=None)
    token = key_token()
    if token is not None:
        _authenticate_app_user(token)
        return
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        _authenticate_bearer(value.strip())
    elif scheme == "basic":
        _authenticate_basic(value.strip())
    elif scheme == "digest":
        _authenticate_digest(value)
    elif header:
        raise errors.Unauthorized()
    elif request.cookies.get(SESSION_COOKIE):
        _authenticate_cookie(request.cookies[SESSION_COOKIE])


def _authenticate_app_user(token: str) -> None:
    # One small query on every tablet request: the token is checked each time, so that a
    # revoked tablet is refused at once, by every server process.
    kind = "field_key"
    row = app_users.principal_by_token(db.session(), token)
    if row is None:
        kind = "public_link"
        row = public_links.principal_by_token(db.session(), token)
    if row is None:
        raise errors.BadToken()
    actor_id, project_id, display_name, grants = row
    _set(Principal(actor_id, kind, display_name, project_id), "key")
    access.remember_grants(grants)


def _authenticate_bearer(token: str) -> None:
    auth_session = sessions.find_session(db.session(), token, kind="bearer")
    if auth_session is None:
        raise errors.Unauthorized()
    actor = db.session().get(Actor, auth_session.actor_id)
    _set(_principal(actor), "bearer", auth_session=auth_session)


def password_settings() -> dict[str, int]:
    """Return the lockout settings that every password check takes (sessions.check_password)."""
    return {
        "max_failures": current_app.config["LOGIN_MAX_FAILURES"],
        "lock_minutes": current_app.config["LOGIN_LOCK_MINUTES"],
    }


def _authenticate_basic(value: str) -> None:
    if not request.is_secure:
        raise errors.HttpsOnly()
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise errors.Unauthorized() from None
    email, sep, password = decoded.partition(":")
    if not sep:
        raise errors.Unauthorized()
    user = sessions.check_password(db.session(), email, password, **password_settings())
    db.session().commit()
    _set(_principal(user.actor), "basic")


def _authenticate_digest(value: str) -> None:
    secret = current_app.config["SECRET_KEY"]
    credentials = digest.parse(value)
    if credentials is None or not digest.uri_matches(credentials, request.path):
        raise errors.Unauthorized(headers={"WWW-Authenticate": digest.challenge(secret)})
    state = digest.nonce_state(secret, credentials.nonce)
    if state == "invalid":
        raise errors.Unauthorized(headers={"WWW-Authenticate": digest.challenge(secret)})
    from server.auth import throttle
    from server.auth.services import find_user, normalise_email

    db_session = db.session()
    key = normalise_email(credentials.username)
    throttle.check(db_session, key)
    user = find_user(db_session, key)
    if (
        user is None
        or not user.digest_ha1
        or not digest.response_matches(credentials, user.digest_ha1, request.method)
    ):
        db_session.rollback()
        throttle.record_failure(db_session, key, **password_settings())
        raise errors.Unauthorized(headers={"WWW-Authenticate": digest.challenge(secret)})
    count = digest.nonce_count(credentials)
    if state == "stale" or not digest.accept_count(db_session, credentials.nonce, count):
        # The password is right but the nonce is old, or this header (its nonce and count)
        # was used before: stale=true makes Collect retry with a fresh nonce instead of
        # prompting for the password again; a replayed header gets nothing from it.
        raise errors.Unauthorized(
            headers={"WWW-Authenticate": digest.challenge(secret, stale=True)}
        )
    _set(_principal(user.actor), "digest")


def _authenticate_cookie(token: str) -> None:
    auth_session = sessions.find_session(db.session(), token, kind="cookie")
    if auth_session is None:
        return  # an expired console cookie is the same as none: the page asks to sign in
    csrf = auth_session.csrf
    actor = db.session().get(Actor, auth_session.actor_id)
    # Known before the form is read: its body is received as a signed-in user's.
    _set(_principal(actor), "cookie", auth_session=auth_session)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
        if not csrf or not hmac.compare_digest(sent, csrf):
            raise errors.Forbidden(code="403.2", message=_csrf_message())


def _csrf_message() -> str:
    from flask_babel import lazy_gettext

    return lazy_gettext("This page has expired. Reload it and try again.")
