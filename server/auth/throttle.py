"""Failed sign-ins: after too many for one account, it is locked for a while.

The counts live in the database so that every server process sees the same ones. An account
is locked for ``MERIT_LOGIN_LOCK_MINUTES`` after ``MERIT_LOGIN_MAX_FAILURES`` failures within
that same span; a successful sign-in clears the count.
"""

from __future__ import annotations

import datetime as dt
import math

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.auth.models import LoginThrottle
from server.db import insert_or_ignore, utcnow


def check(db_session: Session, key: str) -> None:
    """Raise AccountLocked if ``key`` (an email) is locked now."""
    row = db_session.get(LoginThrottle, key)
    if row is not None and row.locked_until is not None and row.locked_until > utcnow():
        minutes = math.ceil((row.locked_until - utcnow()).total_seconds() / 60)
        raise errors.AccountLocked(minutes=minutes)


def record_failure(db_session: Session, key: str, *, max_failures: int, lock_minutes: int) -> None:
    """Count one failed sign-in for ``key`` and lock it when the limit is reached (commits)."""
    now = utcnow()
    window = dt.timedelta(minutes=lock_minutes)
    insert_or_ignore(
        db_session,
        LoginThrottle.__table__,
        {"key": key, "failures": 0, "first_failure_at": now},
        conflict=["key"],
    )
    row = db_session.execute(
        sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    ).scalar_one()
    if now - row.first_failure_at > window:
        row.failures, row.first_failure_at, row.locked_until = 0, now, None
    row.failures += 1
    if row.failures >= max_failures:
        row.locked_until = now + window
    db_session.commit()


def clear(db_session: Session, key: str) -> None:
    """Forget the failures of ``key`` after a successful sign-in (not committed)."""
    db_session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key == key))
