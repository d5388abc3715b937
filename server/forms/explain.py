"""pyxform's frequent errors and warnings, said in the coordinator's language.

pyxform writes in English, puts the row inside its sentence and names the sheet only in some
messages. Each rule below recognises one of its frequent messages (the row prefix removed) and
gives: the sheet and column it is about, the sentence shown instead (an English msgid,
translated for the request), and, when pyxform gives no row, the survey column whose value
finds it. The compiler keeps pyxform's own sentence beside the explanation, shown as a detail.

Messages no rule knows stay pyxform's sentence, without the row prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.forms.messages import _


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated when shown."""
    return message


@dataclass(frozen=True)
class Rule:
    """One pyxform message: what it matches, where it points, what the coordinator reads."""

    pattern: re.Pattern[str]
    sheet: str | None
    column: str | None
    text: str  # an English msgid filled with the pattern's named groups
    find_by: str | None = None  # the survey column holding the ``value`` group, to find the row


def rule(pattern: str, sheet: str | None, column: str | None, text: str, **kw: Any) -> Rule:
    return Rule(re.compile(pattern, re.DOTALL), sheet, column, text, **kw)


_INVALID = r"On the '(?P<sheet>[^']+)' sheet, the '(?P<column>[^']+)' value"

RULES: tuple[Rule, ...] = (
    rule(
        _INVALID
        + r" '(?P<value>[^']*)' is invalid\. Questions, groups, and repeats must be unique",
        None,
        None,
        N_(
            "The name “%(value)s” is used twice in the same group. Each question, group or "
            "repeat needs a name of its own within its group."
        ),
    ),
    rule(
        _INVALID + r" '(?P<value>[^']*)' is invalid\. The name '[^']*' is reserved",
        None,
        None,
        N_("The name “%(value)s” is reserved for the form's metadata (meta). Choose another name."),
    ),
    rule(
        _INVALID + r" is invalid\. Names must begin with a letter or underscore",
        None,
        None,
        N_(
            "This name cannot be used: a name starts with a letter or an underscore, followed by "
            "letters, digits, underscores, hyphens or periods, without spaces."
        ),
    ),
    rule(
        _INVALID + r" is invalid\. Reference variables must contain a name from the 'survey' "
        r"sheet\. Could not find the name '(?P<value>[^']*)'",
        None,
        None,
        N_(
            "The %(column)s column refers to ${%(value)s}, but no question is named "
            "“%(value)s”. Check the spelling, or add the question."
        ),
    ),
    rule(
        _INVALID + r" is invalid\. Choice names must be unique for each choice list",
        None,
        None,
        N_(
            "Two choices of the same list have the same name. Give each its own name, or set "
            "allow_choice_duplicates to yes in the settings sheet."
        ),
    ),
    rule(
        _INVALID + r" is invalid\. Choices should have a label",
        None,
        None,
        N_("This choice has no label: tablets would show an empty line."),
    ),
    rule(
        r"^Unknown question type '(?P<value>select_(?:one|multiple))'",
        "survey",
        "type",
        N_("“%(value)s” needs the name of its choice list after it, e.g. “%(value)s yes_no”."),
        find_by="type",
    ),
    rule(
        r"^Unknown question type '(?P<value>[^']*)'",
        "survey",
        "type",
        N_(
            "Unknown question type “%(value)s”. Check its spelling in the type column (text, "
            "integer, select_one list_name…)."
        ),
        find_by="type",
    ),
    rule(
        r"^Question with no type",
        "survey",
        "type",
        N_("This row has a name or a label but no type."),
    ),
    rule(
        r"^Question or group with no name",
        "survey",
        "name",
        N_("This question or group has no name. Fill the name column."),
    ),
    rule(
        r"^Missing calculation",
        "survey",
        "calculation",
        N_("This calculate row has no formula in the calculation column."),
    ),
    rule(
        r"^List name not in choices sheet: (?P<value>.+)$",
        "survey",
        "type",
        N_("The choice list “%(value)s” is not in the choices sheet. Check the list_name."),
    ),
    rule(
        r"^There should be a choices sheet in this xlsform",
        "choices",
        None,
        N_(
            "The form has select questions but no usable choices sheet: it needs the columns "
            "list_name, name and label."
        ),
    ),
    rule(
        r"^Invalid headers provided for sheet: '(?P<sheet>[^']+)'\. One or more required column "
        r"headers were not found: '(?P<column>[^']+)'",
        None,
        None,
        N_("The %(sheet)s sheet has no %(column)s column. Add it to the sheet's first row."),
    ),
    rule(
        r"^Repeat has no label: .*'name': '(?P<value>[^']*)'",
        "survey",
        "label",
        N_(
            "The repeat “%(value)s” has no label: tablets ask to add another one with an "
            "empty name."
        ),
    ),
    rule(
        r"^The survey element named '(?P<value>[^']*)' has no label or hint",
        "survey",
        "label",
        N_("The question “%(value)s” has neither a label nor a hint: tablets would show nothing."),
        find_by="name",
    ),
    rule(
        r"^Unmatched 'begin_(?P<kind>group|repeat)'\. No matching 'end_(?:group|repeat)' was found "
        r"for the name '(?P<value>[^']*)'",
        "survey",
        "type",
        N_("“%(value)s” is opened here but never closed: add an “end %(kind)s” row after it."),
    ),
    rule(
        r"^Unmatched 'end_(?P<kind>group|repeat)'",
        "survey",
        "type",
        N_("This “end %(kind)s” row closes nothing: no “begin %(kind)s” is open before it."),
    ),
    rule(
        r"^Language '(?P<language>[^']+)' is missing the (?P<sheet>survey|choices) "
        r"(?P<column>\S+) column",
        None,
        None,
        N_(
            "The %(language)s translation has no %(column)s column on the %(sheet)s sheet: "
            "tablets in that language show the default one."
        ),
    ),
)

_WHERE_PREFIX = re.compile(r"^\s*(?:\[(?:row|sheet|column)\s*:\s*[^\]]*\]\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class Explanation:
    """pyxform's message said for the coordinator, with where it points."""

    text: str
    original: str
    sheet: str | None
    column: str | None
    row: int | None


def without_row(text: str) -> str:
    """pyxform's sentence without its ``[row : n]`` (or sheet, column) prefix: each has a column."""
    return _WHERE_PREFIX.sub("", text.strip())


def explain(text: str, survey: Sequence[dict[str, Any]] | None = None) -> Explanation | None:
    """Return the explanation of one pyxform message, or None when no rule knows it."""
    original = without_row(text)
    for known in RULES:
        match = known.pattern.search(original)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        row = None
        if known.find_by and survey and "value" in groups:
            row = _row_of(survey, known.find_by, groups["value"])
        return Explanation(
            text=_(known.text, **groups),
            original=original,
            sheet=groups.get("sheet") or known.sheet,
            column=groups.get("column") or known.column,
            row=row,
        )
    return None


def _row_of(survey: Sequence[dict[str, Any]], column: str, value: str) -> int | None:
    """The sheet row of the one survey row whose ``column`` is ``value`` (as pyxform counts)."""
    rows = [
        number
        for number, row in enumerate(survey, start=2)
        if str(row.get(column, "")).strip() == value
    ]
    return rows[0] if len(rows) == 1 else None
