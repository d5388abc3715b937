"""Cleaning one answer: typing it from the field schema, for CSV and for Excel, and checking it.

Records hold every answer as text exactly as the tablet wrote it. Exports type them from the
form: integers become integers ("034 " -> 34), decimals numbers, dates ISO 8601 dates,
booleans true/false, select-multiple answers one space between choices, and every value is
trimmed. A value that does not fit its type is exported as it was written (trimmed): cleaning
never loses an answer.

Three views of a value serve three purposes:

* :func:`csv_converter` gives what the CSV cell shows (text, or an int the csv module writes);
* :func:`xlsx_converter` gives a typed Python value for a typed Excel cell;
* :func:`canonical` gives a comparable value: the cleaning log compares an analyst's "old value"
  with the exported one through it, so that "34", " 34" and "034" are the same answer.

A CSV cell is also read by spreadsheets, which run a cell starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return as a formula (OWASP, "CSV Injection"): a tablet's
``=HYPERLINK(...)`` would run on the analyst's computer. :func:`csv_converter` with ``guard``
and :func:`csv_guard` put a ``'`` before such a cell unless the value fits its field's type:
``-5`` in an integer field stays a number, ``-5`` in a text field becomes ``'-5``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

from flask_babel import gettext, lazy_gettext

# What an integer and a decimal answer look like (OData types its values with them too).
INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
GEO_PARTS = ("Latitude", "Longitude", "Altitude", "Accuracy")
# The same words, translated: split columns' suffixes when the headers are labels.
GEO_WORDS = (
    lazy_gettext("Latitude"),
    lazy_gettext("Longitude"),
    lazy_gettext("Altitude"),
    lazy_gettext("Accuracy"),
)
GEO_TYPES = ("geopoint", "geotrace", "geoshape")

Converter = Callable[[str], Any]


# ---- CSV -------------------------------------------------------------------------------------


def _csv_int(value: str) -> str:
    if INTEGER.fullmatch(value):
        return str(int(value))
    return value


def _csv_date(value: str) -> str:
    # Some clients write a date field as a date-time at midnight; the date is what was asked.
    if len(value) > 10 and _DATE_PREFIX.match(value):
        return value[:10]
    return value


def _csv_boolean(value: str) -> str:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return "true"
    if lowered in ("false", "0"):
        return "false"
    return value


def normalise_multiple(value: str) -> str:
    """Return a select-multiple answer with one space between choices."""
    return " ".join(value.split())


_CSV: dict[str, Converter] = {
    "int": _csv_int,
    "date": _csv_date,
    "boolean": _csv_boolean,
    "select_multiple": normalise_multiple,
    "rank": normalise_multiple,
}


def csv_converter(field_type: str, *, guard: bool = False) -> Converter | None:
    """Return the function that turns a trimmed answer into its CSV cell (None: as it is).

    With ``guard``, what it cannot type and would start a formula gets a ``'``
    (:func:`guard_formula`); for the types it leaves as they are, see :func:`csv_guard`.
    """
    convert = _CSV.get(field_type)
    if not guard or convert is None:
        return convert
    return _guarded_int if field_type == "int" else _guarding(convert)


def csv_guard(field_type: str) -> Converter:
    """Return what a cell of a type without :func:`csv_converter` becomes when it starts with
    a formula trigger: a number of a decimal field and a place stay as they are."""
    return _GUARDS.get(field_type, guard_formula)


# ---- spreadsheets ------------------------------------------------------------------------------

# What makes a spreadsheet read a cell as a formula when it comes first (OWASP, "CSV Injection").
FORMULA_TRIGGERS = "=+-@\t\r"


def guard_formula(text: str) -> str:
    """Return text a spreadsheet shows as text: after a ``'`` when it would start a formula."""
    if text and text[0] in FORMULA_TRIGGERS:
        return "'" + text
    return text


def unguard_formula(text: str) -> str:
    """Return the value a guarded cell shows (``'=x`` -> ``=x``); other text as it is."""
    if text[:1] == "'" and text[1:2] and text[1] in FORMULA_TRIGGERS:
        return text[1:]
    return text


def guard_unless_number(text: str) -> str:
    """Guard a cell of a file with no schema (a tablet's audit log): numbers stay numbers."""
    if text and text[0] in FORMULA_TRIGGERS and not _is_decimal(text):
        return "'" + text
    return text


def _guarding(convert: Converter) -> Converter:
    """Guard what ``convert`` gives: for types whose values never start with a trigger."""

    def converted_and_guarded(value: str) -> Any:
        return guard_formula(convert(value))

    return converted_and_guarded


def _guarded_int(value: str) -> str:
    if INTEGER.fullmatch(value):
        return str(int(value))
    return guard_formula(value)


def _is_decimal(text: str) -> bool:
    # "-8.0029" (every western longitude) without the regular expression's cost.
    body = text[1:] if text[:1] in ("+", "-") else text
    if body.isascii() and body.replace(".", "", 1).isdigit():
        return True
    return DECIMAL.fullmatch(text) is not None


def _guarded_decimal(value: str) -> str:
    if not value or value[0] not in FORMULA_TRIGGERS or _is_decimal(value):
        return value
    return "'" + value


def _guarded_coordinates(value: str) -> str:
    # "-12.6 -8.0 350 5" (and points separated by ";") is a place, not a formula.
    if not value or value[0] not in FORMULA_TRIGGERS:
        return value
    numbers = value.replace(";", " ").split()
    if numbers and all(_is_decimal(n) for n in numbers):
        return value
    return "'" + value


# Types whose valid values may start with + or -: guarded only when the value does not fit.
_GUARDS: dict[str, Converter] = {
    "decimal": _guarded_decimal,
    "geopoint": _guarded_coordinates,
    "geotrace": _guarded_coordinates,
    "geoshape": _guarded_coordinates,
}


# ---- Excel -----------------------------------------------------------------------------------


def _number(value: str) -> Any:
    if INTEGER.fullmatch(value):
        number = int(value)
        # Excel keeps 15 significant digits; longer integers (phone numbers...) stay text.
        return number if abs(number) < 10**15 else value
    if DECIMAL.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    return value


def _xlsx_int(value: str) -> Any:
    if (value.isdigit() and value.isascii()) or INTEGER.fullmatch(value):
        number = int(value)
        return number if abs(number) < 10**15 else value
    return value


def _xlsx_decimal(value: str) -> Any:
    # float() is the fast test; what it accepts beyond decimals ("nan", "1_000") stays text.
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number) or "_" in value:
        return value
    return number


def _xlsx_date(value: str) -> Any:
    if _DATE_PREFIX.match(value):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return value
    return value


def _clock_time(value: str, parse: Callable[[str], dt.datetime | dt.time]) -> Any:
    # Excel has no time zone: the tablet's clock time is kept (the CSV keeps the offset too).
    try:
        return parse(value).replace(tzinfo=None)
    except ValueError:
        return value


def _xlsx_datetime(value: str) -> Any:
    return _clock_time(value, dt.datetime.fromisoformat) if _DATE_PREFIX.match(value) else value


def _xlsx_time(value: str) -> Any:
    return _clock_time(value, dt.time.fromisoformat)


def xlsx_moment(value: str) -> Any:
    """Return Central's SubmissionDate (``2026-11-24T10:15:00.123Z``) as a UTC date-time."""
    return _xlsx_datetime(value) if value else value


def _xlsx_boolean(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return value


def xlsx_converter(field_type: str) -> Converter | None:
    """Return the function that turns a trimmed answer into a typed Excel value."""
    return {
        "int": _xlsx_int,
        "decimal": _xlsx_decimal,
        "date": _xlsx_date,
        "dateTime": _xlsx_datetime,
        "time": _xlsx_time,
        "boolean": _xlsx_boolean,
        "select_multiple": normalise_multiple,
        "rank": normalise_multiple,
    }.get(field_type)


def split_geopoint(value: str, *, typed: bool, guard: bool = False) -> list[Any]:
    """Split "lat lon alt acc" into four cells (numbers when ``typed``; ``guard``: see CSV)."""
    parts = value.split()
    if len(parts) > 4:
        parts = parts[:4]
    parts += [""] * (4 - len(parts))
    if typed:
        return [_number(p) if p else "" for p in parts]
    if guard and not _plain_coordinates(value):
        return [_guarded_decimal(p) for p in parts]
    return parts


def _plain_coordinates(value: str) -> bool:
    # "12.6 -8.0 350 5": digits, points, blanks, a minus sign before a number. Tested whole,
    # once per place: most longitudes of West Africa are negative.
    body = value[1:] if value[:1] == "-" else value
    body = body.replace(" -", " ").replace(" ", "").replace(".", "")
    return body.isascii() and body.isdigit()


# ---- comparing and checking --------------------------------------------------------------------


def canonical(field_type: str, value: str | None) -> Any:
    """Return a value comparable across spellings of the same answer (None when empty)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if field_type in ("int", "decimal"):
        return _number(value)
    if field_type == "date":
        return _xlsx_date(value)
    if field_type == "boolean":
        return _xlsx_boolean(value)
    if field_type in ("select_multiple", "rank"):
        return normalise_multiple(value)
    if field_type in GEO_TYPES:
        return " ".join(
            repr(float(p)) if DECIMAL.fullmatch(p) else p for p in value.replace(";", " ; ").split()
        )
    return value


def _geopoint_problem(text: str) -> str | None:
    parts = text.split()
    if not 2 <= len(parts) <= 4 or not all(DECIMAL.fullmatch(p) for p in parts):
        return gettext("expected “latitude longitude [altitude [accuracy]]” in decimal degrees")
    numbers = [float(p) for p in parts]
    if not -90 <= numbers[0] <= 90 or not -180 <= numbers[1] <= 180:
        return gettext("the latitude must lie within ±90 and the longitude within ±180")
    if len(numbers) == 4 and numbers[3] < 0:
        return gettext("the accuracy cannot be negative")
    return None


def check(field_type: str, value: str, choices: list[str] | None) -> str | None:
    """Return why ``value`` does not fit the field (translated), or None when it does.

    An empty value always fits: it clears the answer.
    """
    value = value.strip()
    if not value:
        return None
    if field_type == "int":
        if not INTEGER.fullmatch(value):
            return gettext("expected a whole number")
    elif field_type == "decimal":
        if not DECIMAL.fullmatch(value):
            return gettext("expected a number (with a point for decimals)")
    elif field_type == "date":
        try:
            dt.date.fromisoformat(value)
            if len(value) != 10:
                raise ValueError(value)
        except ValueError:
            return gettext("expected a date written YYYY-MM-DD")
    elif field_type == "dateTime":
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return gettext("expected a date and time written YYYY-MM-DDTHH:MM:SS+HH:MM")
    elif field_type == "time":
        try:
            dt.time.fromisoformat(value)
        except ValueError:
            return gettext("expected a time written HH:MM:SS")
    elif field_type == "boolean":
        if value.lower() not in ("true", "false", "1", "0"):
            return gettext("expected true or false")
    elif field_type == "geopoint":
        return _geopoint_problem(value)
    elif field_type in ("geotrace", "geoshape"):
        points = [p for p in value.split(";") if p.strip()]
        if len(points) < 2:
            return gettext("expected points separated by semicolons")
        for point in points:
            problem = _geopoint_problem(point)
            if problem:
                return problem
    elif field_type in ("select_one", "select_multiple", "rank") and choices is not None:
        picked = [value] if field_type == "select_one" else value.split()
        unknown = [p for p in picked if p not in choices]
        if unknown:
            return gettext("“%(value)s” is not one of the choices (%(choices)s)") % {
                "value": unknown[0],
                "choices": ", ".join(choices[:20]) + (", …" if len(choices) > 20 else ""),
            }
        if len(set(picked)) != len(picked):
            return gettext("a choice is given twice")
    return None
