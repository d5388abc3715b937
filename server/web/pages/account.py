"""Signing in and out, changing one's password, and the language switch.

The console's session is a cookie holding a session token of kind ``cookie`` (HttpOnly,
SameSite=Lax, Secure behind TLS); every request that changes something carries the session's
CSRF token (checked in :mod:`server.auth.authenticate`). The sign-in form itself, sent before
any session exists, is protected by a double-submit token: a cookie and a form field that must
match, so another site cannot sign someone in to an account of its choosing.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext

from server import db, errors
from server.auth import access, sessions, throttle
from server.auth import services as accounts
from server.auth.authenticate import SESSION_COOKIE, password_settings
from server.auth.models import User
from server.web import common
from server.web.pages import projects as project_pages
from server.web.views import bp

LOGIN_COOKIE = "merit_login"
LANG_COOKIE = "lang"


def _cookie_options() -> dict:
    return {
        "httponly": True,
        "samesite": "Lax",
        "secure": bool(current_app.config["SECURE_COOKIES"]),
        "path": "/",
    }


def _sign_in_page(
    *, error: str | None = None, status: int = 200, email: str = "", next_url: str = ""
) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = common.page(
        "web/login.html",
        status=status,
        error=error,
        email=email,
        next_url=next_url,
        login_token=token,
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_options())
    return response


@bp.get("/")
def index() -> Response:
    """Show the projects of the signed-in person, or the sign-in page."""
    if access.current_actor() is None:
        return _sign_in_page(next_url=common.safe_next(request.args.get("next"), ""))
    return project_pages.project_list()


@bp.get("/login")
def login() -> Response:
    """Show the sign-in page (or go on, when already signed in)."""
    if access.current_actor() is not None:
        return common.redirect_next(request.args.get("next"), url_for("web.index"))
    return _sign_in_page(next_url=common.safe_next(request.args.get("next"), ""))


@bp.post("/login")
def login_post() -> Response:
    """Check email and password; open a console session in a cookie."""
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    next_url = common.safe_next(request.form.get("next"), "")
    sent = request.form.get("login_token", "")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent, expected):
        return _sign_in_page(
            error=gettext("The sign-in page had expired. Please sign in again."),
            status=400,
            email=email,
            next_url=next_url,
        )
    db_session = db.session()
    try:
        user = sessions.check_password(db_session, email, password, **password_settings())
    except (errors.Unauthorized, errors.AccountLocked) as refused:
        error, status = _refusal(refused, email, gettext("Wrong email or password."), 401)
        return _sign_in_page(error=error, status=status, email=email, next_url=next_url)
    _auth_session, token = sessions.open_session(
        db_session, user.actor_id, hours=current_app.config["SESSION_HOURS"], kind="cookie"
    )
    response = common.redirect_next(next_url, url_for("web.index"))
    _set_session_cookie(response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


def _refusal(
    refused: errors.Problem, email: str, wrong_password: str, status: int
) -> tuple[str, int]:
    """Return the message and status of a page refusing a password.

    A locked account says so (429), also at the failure that has just locked it.
    """
    if not isinstance(refused, errors.AccountLocked):
        try:
            throttle.check(db.session(), accounts.normalise_email(email))
        except errors.AccountLocked as locked:
            refused = locked
    if isinstance(refused, errors.AccountLocked):
        return refused.render_message(), 429
    return wrong_password, status


def _set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=current_app.config["SESSION_HOURS"] * 3600,
        **_cookie_options(),
    )


@bp.post("/logout")
def logout() -> Response:
    """End the console session and forget its cookie."""
    auth_session = g.get("auth_session")
    if auth_session is not None and g.get("auth_method") == "cookie":
        sessions.end_session(db.session(), auth_session)
    response = redirect(url_for("web.index"), code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@bp.get("/account/password")
def password() -> Response:
    """Show the password change form."""
    access.require_actor()
    return common.page("web/password.html")


@bp.post("/account/password")
def password_post() -> Response:
    """Change one's own password; other sessions end, this one is renewed."""
    actor = access.require_actor()
    db_session = db.session()
    user = db_session.get(User, actor.id)
    if user is None:
        raise errors.Forbidden()
    old = request.form.get("old_password", "")
    new = request.form.get("new_password", "")
    if new != request.form.get("confirm_password", ""):
        return common.page(
            "web/password.html", status=400, error=gettext("The two new passwords differ.")
        )
    try:
        accounts.change_password(db_session, user, old, new, **password_settings())
    except (errors.Unauthorized, errors.AccountLocked) as refused:
        wrong = gettext("The current password is not right.")
        error, status = _refusal(refused, user.email, wrong, 400)
        return common.page("web/password.html", status=status, error=error)
    except errors.PasswordTooShort as short:
        db_session.rollback()
        return common.page("web/password.html", status=400, error=short.render_message())
    # Changing the password ended every session, this one included: open a fresh one.
    _auth_session, token = sessions.open_session(
        db_session, user.actor_id, hours=current_app.config["SESSION_HOURS"], kind="cookie"
    )
    flash(gettext("Your password was changed. You were signed out everywhere else."))
    response = redirect(url_for("web.password"), code=303)
    _set_session_cookie(response, token)
    return response


@bp.get("/lang/<code>")
def language(code: str) -> Response:
    """Switch the console's language (fr or en) and go back to the page."""
    if code not in common.LANGUAGES:
        raise errors.NotFound()
    response = common.redirect_next(request.args.get("next"), url_for("web.index"))
    response.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, **_cookie_options())
    return response
