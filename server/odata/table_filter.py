"""OData ``$filter`` over a table's own fields, with the submissions' parser.

ODK Central reads every ``$filter`` with one parser and gives it, per table, the OData fields it
may name and the columns behind them (``lib/data/odata-filter.js``; the entities' map is in
``lib/data/entity.js``). This module does the same with :mod:`server.odata.filter`, the parser
the submissions' OData and exports use: its tokens, precedence (``or`` < ``and`` < ``not``),
parentheses, literals (text, numbers, dates and date-times, ``null``, ``now()``), the date
functions ``year() month() day() hour() minute() second()``, its null rules and its bounds
(length, nesting depth, numbers a column can be compared with) are kept as they are; only the
fields come from the caller (:class:`Field`).

Errors follow Central's codes:

- 400.18: the text cannot be read (a word where a comparison is expected, an open
  parenthesis, a value of the wrong type...);
- 501.5: a field the table cannot filter on (``unsupportedODataField``), named with the ones
  it can;
- 501.4: OData that Central does not implement either (``unsupportedODataExpression``):
  string and maths functions such as ``contains()``, and the arithmetic operators.

    parse("__system/createdAt ge 2024-05-01 and __system/creatorId eq 5", FIELDS, "sqlite")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask_babel import gettext

from server.errors import ODataFilterInvalid, UnsupportedODataExpression
from server.odata.filter import FUNCTIONS, Parser, Token, parse_datetime

DATE, NUMBER, TEXT = "date", "number", "text"

# OData's canonical functions other than the date parts: Central's parser knows them and
# answers 501.4.
_UNSUPPORTED_FUNCTIONS = frozenset(
    {
        "concat",
        "contains",
        "endswith",
        "indexof",
        "length",
        "startswith",
        "substring",
        "matchesPattern",
        "tolower",
        "toupper",
        "trim",
        "date",
        "time",
        "fractionalseconds",
        "totaloffsetminutes",
        "totalseconds",
        "maxdatetime",
        "mindatetime",
        "round",
        "floor",
        "ceiling",
        "cast",
        "isof",
    }
)
_UNSUPPORTED_OPERATORS = frozenset({"add", "sub", "mul", "div", "divby", "mod", "has"})


@dataclass(frozen=True)
class Field:
    """A field ``$filter`` may name: the SQL expression behind it and its type."""

    column: Any
    kind: str  # DATE, NUMBER or TEXT


@dataclass(frozen=True)
class Filter:
    """A parsed ``$filter``: the SQL condition and the fields it names."""

    condition: Any
    fields: frozenset[str]


def _unsupported(feature: str) -> UnsupportedODataExpression:
    """OData Central does not implement either (its ``unsupportedODataExpression``)."""
    return UnsupportedODataExpression(feature=feature)


class _TableParser(Parser):
    """The submissions' parser, reading the fields of ``fields`` instead of theirs."""

    def __init__(self, text: str, dialect: str, fields: Mapping[str, Field]) -> None:
        super().__init__(text, dialect)
        self.fields = fields
        self.named: set[str] = set()

    def field_names(self) -> list[str]:
        return list(self.fields)

    def check_operator(self, operator: Token) -> None:
        if operator.text in _UNSUPPORTED_OPERATORS:
            raise _unsupported(f"“{operator.text}” in $filter")

    def operand(self) -> tuple[Any, str]:
        """Return (expression or value, name): a field's name, a function's, or "literal"."""
        token = self.peek()
        if token is None or token.kind != "word" or token.text in ("null", "true", "false"):
            return super().operand()
        following = self.tokens[self.position + 1] if self.position + 1 < len(self.tokens) else None
        if following is not None and following.text == "(":
            return self.call()
        self.take()
        field = self.fields.get(token.text)
        if field is None:
            raise self.unknown(token.text)
        self.named.add(token.text)
        return field.column, token.text

    def call(self) -> tuple[Any, str]:
        name = self.peek().text
        if name == "now":
            return super().operand()
        if name in _UNSUPPORTED_FUNCTIONS:
            raise _unsupported(f"{name}() in $filter")
        if name not in FUNCTIONS:
            raise self.unknown(name, field=False)
        self.take()
        self.expect("(")
        argument = self.take()
        field = self.fields.get(argument.text)
        if field is None and argument.kind == "word":
            raise self.unknown(argument.text)
        if field is None or field.kind != DATE:
            raise ODataFilterInvalid(
                reason=gettext("%(function)s() applies to a date field") % {"function": name}
            )
        self.expect(")")
        self.named.add(argument.text)
        return self.date_part(name, field.column), f"{name}({argument.text})"

    def coerce(self, value: Any, name: str) -> Any:
        """Check a literal against the field (or function) it is compared with."""
        if value is None:
            return None
        field = self.fields.get(name)
        kind = field.kind if field is not None else NUMBER
        if kind == DATE:
            if isinstance(value, str):
                return parse_datetime(value)
            if isinstance(value, dt.datetime):
                return value
        elif kind == NUMBER:
            if isinstance(value, str) and value.isascii() and value.isdigit():
                return int(value)  # Central's PostgreSQL reads '5' as 5 for an integer column
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ODataFilterInvalid(
                    reason=gettext("%(field)s is compared with a number") % {"field": name}
                )
            return value
        elif isinstance(value, str):
            return value
        raise ODataFilterInvalid(
            reason=gettext("%(value)s cannot be compared with %(field)s")
            % {"value": str(value), "field": name}
        )


def parse(text: str, fields: Mapping[str, Field], dialect: str = "postgresql") -> Filter:
    """Return the SQL condition a ``$filter`` on these fields means, and the fields it names.

    Raise 400.18 for text that cannot be used, 501.5 for a field not in ``fields``, 501.4 for
    OData functions and operators that are not implemented.
    """
    parser = _TableParser(text, dialect, fields)
    condition = parser.parse()
    return Filter(condition, frozenset(parser.named))
