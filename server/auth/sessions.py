"""Signing in with email and password, and the sessions (bearer tokens, cookies) it opens."""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.auth import throttle
from server.auth.models import Actor, AuthSession, User
from server.auth.passwords import hash_password, needs_rehash, verify_password
from server.auth.services import find_user, normalise_email
from server.auth.tokens import new_token, token_hash
from server.db import delete_batch, utcnow

# Expired sessions deleted each time one is opened: more than are opened, so they never pile up.
PURGE_BATCH = 100


def check_password(
    db_session: Session, email: str, password: str, *, max_failures: int, lock_minutes: int
) -> User:
    """Return the user whose email and password these are; count failures, honour locks.

    Every password check goes through here: sign-in (API, console, Basic) and the current
    password of a password change. Raises Unauthorized (same answer for an unknown email and a
    wrong password) or AccountLocked.

    Each call costs one argon2 computation, whether the account exists, was deleted, has no
    password or is locked: an answer that came sooner for unknown emails told which addresses
    have an account here (issue 16).
    """
    key = normalise_email(email)
    user = find_user(db_session, key)
    try:
        throttle.check(db_session, key)
    except errors.AccountLocked:
        verify_password(None, password)
        raise
    if not verify_password(user.password_hash if user is not None else None, password):
        db_session.rollback()
        throttle.record_failure(
            db_session, key, max_failures=max_failures, lock_minutes=lock_minutes
        )
        raise errors.Unauthorized()
    if needs_rehash(user.password_hash or ""):
        user.password_hash = hash_password(password)
    throttle.clear(db_session, key)
    return user


def open_session(
    db_session: Session, actor_id: int, *, hours: int, kind: str = "bearer"
) -> tuple[AuthSession, str]:
    """Create a session for an actor; return it and its secret token (commits).

    Expired sessions are purged here, a batch at a time: sessions are only ever created here,
    so the table stays as small as the live sessions without a job of its own.
    """
    token = new_token()
    auth_session = AuthSession(
        token_hash=token_hash(token),
        actor_id=actor_id,
        kind=kind,
        csrf=secrets.token_urlsafe(32),
        expires_at=utcnow() + dt.timedelta(hours=hours),
    )
    purge_expired(db_session)
    db_session.add(auth_session)
    db_session.commit()
    return auth_session, token


def find_session(db_session: Session, token: str, *, kind: str | None = None) -> AuthSession | None:
    """Return the live session with this token (not expired, actor not deleted)."""
    query = (
        sa.select(AuthSession)
        .join(Actor, Actor.id == AuthSession.actor_id)
        .where(
            AuthSession.token_hash == token_hash(token),
            AuthSession.expires_at > utcnow(),
            Actor.deleted_at.is_(None),
        )
    )
    if kind is not None:
        query = query.where(AuthSession.kind == kind)
    return db_session.execute(query).scalar_one_or_none()


def end_session(db_session: Session, auth_session: AuthSession) -> None:
    """End a session (sign out) now (commits)."""
    db_session.delete(auth_session)
    db_session.commit()


def end_all_sessions(db_session: Session, actor_id: int) -> None:
    """End every session of an actor, e.g. after a password change (not committed)."""
    db_session.execute(sa.delete(AuthSession).where(AuthSession.actor_id == actor_id))


def purge_expired(db_session: Session, *, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` expired sessions; return how many (not committed)."""
    return delete_batch(
        db_session, AuthSession.__table__, AuthSession.expires_at <= utcnow(), limit=limit
    )
