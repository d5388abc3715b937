"""The subset of OData ``$filter`` ODK Central accepts on submissions, as a SQL condition.

Central documents ``$filter`` on ``__system/submissionDate``, ``__system/updatedAt``,
``__system/submitterId``, ``__system/reviewState`` and ``__system/deletedAt`` (and ``__id``),
with ``eq ne lt le gt ge``, ``and or not``, parentheses, ``null`` and the date functions
``year() month() day() hour() minute() second()`` and ``now()``. pyodk and Power BI send
exactly that. Anything else is refused as Central refuses it, saying what was not understood:
400.18 for text that cannot be read, 501.5 for a field that cannot be filtered on.

The parser (:class:`Parser`, its tokens and comparisons) is shared: the entities' OData table
reads its own fields with it (:mod:`server.odata.table_filter`).

    __system/submissionDate ge 2024-05-01 and __system/reviewState ne 'rejected'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext

from server import bounds
from server.db import utcnow
from server.errors import ODataFilterInvalid, UnsupportedODataField
from server.submissions.models import Submission

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<datetime>[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9:.]+(?:Z|[+-][0-9]{2}:[0-9]{2})?)?)
      | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
    )""",
    re.VERBOSE,
)

MAX_LENGTH = 2000
# Parentheses and ``not`` nest the parser's calls (and SQLAlchemy's when it compiles the
# condition): 400 of them exhausted Python's stack (issue 16). Central's clients nest a few.
MAX_DEPTH = 32
OPERATORS = {"eq", "ne", "lt", "le", "gt", "ge"}
FUNCTIONS = {"year", "month", "day", "hour", "minute", "second"}
_DATES = {"__system/submissionDate", "__system/updatedAt", "__system/deletedAt"}


@dataclass
class Token:
    kind: str
    text: str


def _tokens(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ODataFilterInvalid(
                reason=gettext("cannot read the expression from “%(rest)s”")
                % {"rest": text[position:].strip()[:40]}
            )
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


def _columns() -> dict[str, Any]:
    return {
        "__system/submissionDate": Submission.created_at,
        "__system/updatedAt": Submission.updated_at,
        "__system/deletedAt": Submission.deleted_at,
        "__system/submitterId": Submission.submitter_id,
        "__system/reviewState": Submission.review_state,
        "__id": Submission.instance_id,
    }


class Parser:
    """A recursive-descent parser producing SQLAlchemy expressions."""

    def __init__(self, text: str, dialect: str) -> None:
        if len(text) > MAX_LENGTH:
            raise ODataFilterInvalid(reason=gettext("the expression is too long"))
        self.tokens = _tokens(text)
        self.position = 0
        self.dialect = dialect
        self.depth = 0

    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ODataFilterInvalid(reason=gettext("the expression ends too early"))
        self.position += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise ODataFilterInvalid(
                reason=gettext("expected “%(expected)s” but found “%(found)s”")
                % {"expected": text, "found": token.text}
            )

    def parse(self) -> Any:
        expression = self.disjunction()
        if self.peek() is not None:
            raise ODataFilterInvalid(
                reason=gettext("unexpected “%(found)s”") % {"found": self.peek().text}
            )
        return expression

    def disjunction(self) -> Any:
        return self.joined("or", self.conjunction, sa.or_)

    def conjunction(self) -> Any:
        return self.joined("and", self.negation, sa.and_)

    def joined(self, word: str, operand: Callable[[], Any], join: Callable[..., Any]) -> Any:
        """Read ``operand (word operand)*``; join the operands when there are several."""
        parts = [operand()]
        while (token := self.peek()) is not None and token.text == word:
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else join(*parts)

    def negation(self) -> Any:
        token = self.peek()
        if token is not None and token.text == "not":
            self.take()
            self.enter()
            inner = sa.not_(self.negation())
            self.depth -= 1
            return inner
        return self.comparison()

    def enter(self) -> None:
        """Go one level deeper (a parenthesis or a ``not``); refuse too deep an expression."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ODataFilterInvalid(
                reason=gettext("the expression is nested more than %(limit)s levels deep")
                % {"limit": MAX_DEPTH}
            )

    def comparison(self) -> Any:
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            self.enter()
            inner = self.disjunction()
            self.expect(")")
            self.depth -= 1
            return inner
        left, left_kind = self.operand()
        operator = self.take()
        self.check_operator(operator)
        if operator.text not in OPERATORS:
            raise ODataFilterInvalid(
                reason=gettext("expected a comparison (eq, ne, lt, le, gt, ge), found “%(found)s”")
                % {"found": operator.text}
            )
        right, right_kind = self.operand()
        if left_kind == "literal" and right_kind != "literal":
            left, right = right, left
            left_kind, right_kind = right_kind, left_kind
            operator = Token("word", MIRROR[operator.text])
        if left_kind == "literal":
            raise ODataFilterInvalid(reason=gettext("a comparison needs a field on one side"))
        return compare(left, operator.text, self.coerce(right, left_kind))

    def check_operator(self, operator: Token) -> None:
        """Refuse an operator before it is read as a comparison (a hook for other tables)."""

    def coerce(self, value: Any, kind: str) -> Any:
        """Check a literal against the field (or function) it is compared with."""
        return _coerce(value, kind)

    def field_names(self) -> list[str]:
        """The fields this table's ``$filter`` may name (listed in error messages)."""
        return list(_columns())

    def unknown(
        self, name: str, *, field: bool = True
    ) -> ODataFilterInvalid | UnsupportedODataField:
        """Refuse a name: Central's 501.5 for a field it cannot filter on, else 400.18."""
        kind = UnsupportedODataField if field else ODataFilterInvalid
        return kind(
            reason=gettext("unknown field or value “%(found)s”; fields: %(fields)s")
            % {"found": name, "fields": ", ".join(self.field_names())}
        )

    def date_part(self, function: str, column: Any) -> Any:
        """``year(column)`` and the like, in UTC as Central reads them."""
        if self.dialect == "postgresql":
            # extract() on a timestamptz follows the session's time zone; Central's is UTC.
            column = sa.func.timezone("UTC", column)
        return sa.extract(function, column)

    def operand(self) -> tuple[Any, str]:
        """Return (expression or value, kind); kind is a field name, "number" or "literal"."""
        token = self.take()
        if token.kind == "word" and token.text in FUNCTIONS:
            self.expect("(")
            argument = self.take()
            if argument.text not in _DATES:
                raise ODataFilterInvalid(
                    reason=gettext("%(function)s() applies to a date field")
                    % {"function": token.text}
                )
            self.expect(")")
            return self.date_part(token.text, _columns()[argument.text]), "number"
        if token.kind == "word" and token.text == "now":
            self.expect("(")
            self.expect(")")
            return utcnow(), "literal"
        if token.kind == "word" and token.text in _columns():
            return _columns()[token.text], token.text
        if token.kind == "word" and token.text == "null":
            return None, "literal"
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true", "literal"
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'"), "literal"
        if token.kind == "number":
            return (float(token.text) if "." in token.text else int(token.text)), "literal"
        if token.kind == "datetime":
            return parse_datetime(token.text), "literal"
        # A field name Central does not know is its 501.5; anything else, an unknown function
        # included, could not be read (400.18).
        following = self.peek()
        called = following is not None and following.text == "("
        raise self.unknown(token.text, field=token.kind == "word" and not called)


MIRROR = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def parse_datetime(text: str) -> dt.datetime:
    """Read a date or date-time literal (a bare date is the start of its day, in UTC)."""
    try:
        return bounds.moment(text)
    except bounds.OutOfBounds as exc:
        raise ODataFilterInvalid(reason=f"“{text[:40]}”: {exc.reason}") from None


def _coerce(value: Any, kind: str) -> Any:
    """Check a literal against the field it is compared with."""
    if value is None:
        return None
    if kind in _DATES:
        if isinstance(value, str):
            return parse_datetime(value)
        if isinstance(value, dt.datetime):
            return value
    elif kind in ("__system/submitterId", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ODataFilterInvalid(
                reason=gettext("%(field)s is compared with a number") % {"field": kind}
            )
        return value
    elif kind in ("__system/reviewState", "__id") and isinstance(value, str):
        return value
    raise ODataFilterInvalid(
        reason=gettext("%(value)s cannot be compared with %(field)s")
        % {"value": str(value), "field": kind}
    )


def compare(left: Any, operator: str, right: Any) -> Any:
    """Return the SQL condition ``left operator right``, with OData's null rules."""
    try:
        bounds.check_number(right)
    except bounds.OutOfBounds as exc:
        raise ODataFilterInvalid(reason=exc.reason) from None
    if right is None:
        if operator == "eq":
            return left.is_(None)
        if operator == "ne":
            return left.is_not(None)
        raise ODataFilterInvalid(reason=gettext("null can only be compared with eq or ne"))
    if operator == "ne":
        # OData: null ne 'x' is true; SQL's NULL <> 'x' is unknown.
        return sa.or_(left != right, left.is_(None))
    comparison = {
        "eq": left == right,
        "lt": left < right,
        "le": left <= right,
        "gt": left > right,
        "ge": left >= right,
    }[operator]
    # OData: null eq 'x' is false (not unknown), so that "not (...)" keeps the null rows.
    return sa.and_(left.is_not(None), comparison)


def parse_filter(text: str, dialect: str = "postgresql") -> Any:
    """Return the SQL condition a Central ``$filter`` expression means; raise 400 if unusable."""
    return Parser(text, dialect).parse()
