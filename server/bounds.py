"""The numbers and dates a client may write, bounded by what the databases and Python hold.

Every whole number a client sends (a query parameter, a path segment, a number in an OData
``$filter``, the position in a paging cursor) and every date (export and audit filters, the
console's date fields, ``$filter`` dates) is read or checked here, so that a value no database
column, ``LIMIT`` or ``OFFSET`` can take is refused with a 400 naming it, never passed on to
fail as a 500 (issue 16: ``$skip=1e20`` overflowed SQLite's 64-bit integers, a date of
9999-12-31 as the end of a period fell off Python's calendar when a day was added).

The rules:

* a whole number is written in ASCII digits, with a leading ``-`` at most: no ``1e3``, ``0x10``,
  ``1_000``, ``+5`` or Arabic-Indic digits (Python's ``int()`` reads some of these; a person
  does not mean them); a parameter fits PostgreSQL's ``integer`` (:data:`INT_MAX`) unless its
  reader says otherwise, a value compared with a column fits ``bigint``;
* a date lies in the years :data:`FIRST_YEAR` to :data:`LAST_YEAR`, so that moving it to UTC or
  to the end of its day stays inside Python's calendar (years 1 to 9999).

Errors are :class:`OutOfBounds` (a ``ValueError``) carrying a translatable ``reason``; each
caller raises it as its own 400 problem, naming the parameter the client wrote.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from flask_babel import lazy_gettext

INT_MAX = 2**31 - 1  # PostgreSQL integer: ids, page sizes, offsets
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1  # PostgreSQL bigint and SQLite's INTEGER
FIRST_YEAR, LAST_YEAR = 2, 9998

_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)
_MOST_DIGITS = 20  # longer than any number above: refused without asking int() to read it


class OutOfBounds(ValueError):
    """A value a client wrote that cannot be used; ``reason`` says why, in the user's language."""

    def __init__(self, template: Any, **params: Any) -> None:
        super().__init__(template, params)
        self.template = template
        self.params = params

    @property
    def reason(self) -> str:
        """Why the value was refused, translated (call it while answering a request)."""
        return str(self.template) % self.params if self.params else str(self.template)


def whole_number(text: str, *, minimum: int = 0, maximum: int = INT_MAX) -> int:
    """Read a whole number written in ASCII digits, between ``minimum`` and ``maximum``."""
    text = text.strip()
    if not _WHOLE.fullmatch(text):
        raise OutOfBounds(lazy_gettext("expected a whole number"))
    digits = text.lstrip("-")
    value = int(text) if len(digits) <= _MOST_DIGITS else None
    if (value is None and text.startswith("-")) or (value is not None and value < minimum):
        raise OutOfBounds(lazy_gettext("expected at least %(minimum)s"), minimum=minimum)
    if value is None or value > maximum:
        raise OutOfBounds(lazy_gettext("expected at most %(maximum)s"), maximum=maximum)
    return value


def check_number(value: Any) -> Any:
    """Return ``value`` if a database column can be compared with it; raise otherwise.

    For numbers that come parsed (a ``$filter`` literal, a cursor's JSON): integers within
    ``bigint``, floats finite.
    """
    too_large = (isinstance(value, int) and not BIGINT_MIN <= value <= BIGINT_MAX) or (
        isinstance(value, float) and not math.isfinite(value)
    )
    if too_large and not isinstance(value, bool):
        raise OutOfBounds(
            lazy_gettext("numbers are compared between %(minimum)s and %(maximum)s"),
            minimum=BIGINT_MIN,
            maximum=BIGINT_MAX,
        )
    return value


def _check_year(value: dt.date | dt.datetime) -> None:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise OutOfBounds(
            lazy_gettext("expected a year between %(first)s and %(last)s"),
            first=FIRST_YEAR,
            last=LAST_YEAR,
        )


def day(text: str) -> dt.date:
    """Read a date written YYYY-MM-DD (what ``<input type=date>`` sends)."""
    try:
        value = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise OutOfBounds(lazy_gettext("expected a date such as 2024-05-07")) from None
    _check_year(value)
    return value


def moment(text: str, *, end: bool = False) -> dt.datetime:
    """Read an ISO 8601 date or date-time, in UTC when it gives no offset.

    A bare date means the start of that day, or, as the ``end`` of a period, the start of the
    next day (the whole day included, as ODK Central reads it).
    """
    text = text.strip()
    try:
        if len(text) == 10:
            value = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), tzinfo=dt.UTC)
        else:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise OutOfBounds(
            lazy_gettext("expected a date (2024-05-07) or a date and time (2024-05-07T14:00Z)")
        ) from None
    _check_year(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if end and len(text) == 10:
        value += dt.timedelta(days=1)
    return value
