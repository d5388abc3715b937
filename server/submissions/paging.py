"""Paging through a form's records with cursors that never skip nor repeat a record.

Offset paging (``limit``/``offset``, ``$top``/``$skip``) shifts under the reader's feet: a
record arriving between two pages pushes one already read onto the next page, or (newest
first) hides one never read. A *cursor* names the last record read instead, by its ``seq``
(:class:`~server.submissions.models.Submission`), and the next page starts strictly after it.

``seq`` is handed out in commit order (migration 0002 explains how on each database), so the
records a reader can see always form a prefix of the ``seq`` order: a record that commits
later gets a larger ``seq`` than every record already visible. Consequences:

* oldest first (the sync order), "``seq`` > cursor" never skips a record, however late it
  commits, and never repeats one: polling with the last cursor returns exactly what arrived;
* newest first, "``seq`` < cursor" walks a set that can no longer grow, so a reader pages
  through every record that existed when it started, each once;
* ordered by another field (OData ``$orderby``), the cursor holds that field's value and the
  ``seq`` as tie-breaker: every record present at the first page is read once; records
  arriving meanwhile appear or not depending on where they sort.

A cursor is opaque to clients: URL-safe base64 of a small JSON object naming its order.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import bounds, errors
from server.submissions.models import Submission
from server.submissions.services import SubmissionFilter, SubmissionRow, add_edit_counts
from server.submissions.services import filtered_query as base_query  # the one filter builder

# Fields a page may be ordered by: the sort expression and how its cursor value is written.
ORDER_FIELDS: dict[str, tuple[Any, str]] = {
    "seq": (Submission.seq, "int"),
    "submissionDate": (Submission.created_at, "datetime"),
    "updatedAt": (Submission.updated_at, "datetime"),
    "reviewState": (Submission.review_state, "str"),
    "submitterId": (Submission.submitter_id, "int"),
    "instanceId": (Submission.instance_id, "str"),
}


@dataclass(frozen=True)
class Order:
    """How a page is sorted: a field of :data:`ORDER_FIELDS`, then ``seq`` the same way."""

    field: str = "seq"
    descending: bool = False

    @property
    def name(self) -> str:
        return ("-" if self.descending else "") + self.field


OLDEST_FIRST = Order("seq")
NEWEST_FIRST = Order("seq", descending=True)


@dataclass(frozen=True)
class Cursor:
    """The position after a record: its ``seq`` and, for other orders, its sort value."""

    seq: int
    value: Any = None


@dataclass
class Page:
    """One page of records and the cursor after its last one."""

    rows: list[SubmissionRow]
    next_cursor: Cursor | None  # None: the page was empty and no cursor was given
    more: bool  # whether records follow this page (right now)


# Every token this server hands out is a few dozen characters long.
MAX_TOKEN_LENGTH = 1000


def wrap(payload: dict[str, Any]) -> str:
    """Return the opaque text of a paging token (a cursor, an OData ``$skiptoken``)."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unwrap(text: str, kind: str, *numbers: str) -> dict[str, Any]:
    """Read a token :func:`wrap` made for ``kind`` (its ``o``); raise 400.35 for anything else.

    The keys named in ``numbers`` must hold whole numbers a database can compare (0 to
    :data:`server.bounds.BIGINT_MAX`): a token is client input like any other.
    """
    text = text.strip()
    if len(text) > MAX_TOKEN_LENGTH:
        raise errors.BadCursor()
    try:
        payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise errors.BadCursor() from None
    if not isinstance(payload, dict) or payload.get("o") != kind:
        raise errors.BadCursor()
    for key in numbers:
        if not _fits("int", payload.get(key)):
            raise errors.BadCursor()
    return payload


def encode(cursor: Cursor, order: Order) -> str:
    """Return the opaque text of a cursor."""
    value = cursor.value
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).isoformat()
    payload = {"o": order.name, "s": cursor.seq}
    if order.field != "seq":
        payload["v"] = value
    return wrap(payload)


def decode(text: str, order: Order) -> Cursor:
    """Read a cursor handed out for ``order``; raise 400.35 for anything else."""
    payload = unwrap(text, order.name, "s")
    seq = payload["s"]
    value = payload.get("v")
    if order.field != "seq" and value is not None:
        kind = ORDER_FIELDS[order.field][1]
        try:
            if kind == "datetime":
                value = dt.datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError(value)
            elif not _fits(kind, value):
                raise ValueError(value)
        except (TypeError, ValueError):
            raise errors.BadCursor() from None
    return Cursor(seq, value)


def _fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 0 <= value <= bounds.BIGINT_MAX
        )
    return isinstance(value, str)


def _sort(order: Order) -> list[Any]:
    """Return ORDER BY terms; NULLs sort before every value (SQLite's rule, made explicit)."""
    seq = Submission.seq.desc() if order.descending else Submission.seq.asc()
    if order.field == "seq":
        return [seq]
    column = ORDER_FIELDS[order.field][0]
    term = column.desc().nulls_last() if order.descending else column.asc().nulls_first()
    return [term, seq]


def _after(order: Order, cursor: Cursor) -> Any:
    """Return the condition "sorts strictly after ``cursor``" for ``order``."""
    seq = Submission.seq
    beyond = seq < cursor.seq if order.descending else seq > cursor.seq
    if order.field == "seq":
        return beyond
    column = ORDER_FIELDS[order.field][0]
    value = cursor.value
    if order.descending:
        if value is None:
            return sa.and_(column.is_(None), beyond)
        return sa.or_(column < value, sa.and_(column == value, beyond), column.is_(None))
    if value is None:
        return sa.or_(sa.and_(column.is_(None), beyond), column.is_not(None))
    return sa.or_(column > value, sa.and_(column == value, beyond))


def _cursor_of(row: SubmissionRow, order: Order) -> Cursor:
    submission = row.submission
    if order.field == "seq":
        return Cursor(submission.seq)
    value = {
        "submissionDate": submission.created_at,
        "updatedAt": submission.updated_at,
        "reviewState": submission.review_state,
        "submitterId": submission.submitter_id,
        "instanceId": submission.instance_id,
    }[order.field]
    return Cursor(submission.seq, value)


def _query(form_id: int, filters: SubmissionFilter, conditions: Sequence[Any]) -> sa.Select:
    # Records from before migration 0002 all got a seq; one without would be unreachable.
    return base_query(form_id, filters).where(Submission.seq.is_not(None), *conditions)


def page(
    db_session: Session,
    form_id: int,
    filters: SubmissionFilter | None = None,
    *,
    order: Order = OLDEST_FIRST,
    cursor: Cursor | None = None,
    offset: int = 0,
    limit: int = 100,
    conditions: Sequence[Any] = (),
) -> Page:
    """Return the records after ``cursor`` (then ``offset`` more skipped), ``limit`` at most.

    ``conditions`` are extra SQL conditions on the record (an OData ``$filter``).
    """
    query = _query(form_id, filters or SubmissionFilter(), conditions)
    if cursor is not None:
        query = query.where(_after(order, cursor))
    query = query.order_by(*_sort(order)).offset(offset).limit(limit + 1)
    rows = [SubmissionRow(s, v, fv, name) for s, v, fv, name in db_session.execute(query)]
    more = len(rows) > limit
    rows = add_edit_counts(db_session, rows[:limit])
    next_cursor = _cursor_of(rows[-1], order) if rows else cursor
    return Page(rows, next_cursor, more)


def count(
    db_session: Session,
    form_id: int,
    filters: SubmissionFilter | None = None,
    *,
    conditions: Sequence[Any] = (),
) -> int:
    """Count the records a page would walk through (ignoring cursor and limit)."""
    query = _query(form_id, filters or SubmissionFilter(), conditions)
    inner = query.with_only_columns(Submission.id).order_by(None).subquery()
    return db_session.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one()


def iterate(
    db_session: Session,
    form_id: int,
    filters: SubmissionFilter | None = None,
    *,
    order: Order = NEWEST_FIRST,
    batch: int = 500,
    conditions: Sequence[Any] = (),
) -> Iterator[SubmissionRow]:
    """Yield every record in ``order``, ``batch`` rows per query (bounded memory)."""
    cursor: Cursor | None = None
    while True:
        found = page(
            db_session,
            form_id,
            filters,
            order=order,
            cursor=cursor,
            limit=batch,
            conditions=conditions,
        )
        yield from found.rows
        if not found.more:
            return
        cursor = found.next_cursor
