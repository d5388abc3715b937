"""Per-table row functions, generated once per export: the hot loop without a generic loop.

An export calls a table's converter once per row and its extractor once per repeat instance:
millions of times. Written generically (a loop over the columns, a call per cell), that loop
costs more than PostgreSQL takes to produce the row. So for each table the export generates
one straight-line Python function, with each column's step written out, and common cases
(an empty answer, an integer already written canonically) tested inline instead of calling
a converter.

The generated source holds only positions, local names and the fixed predicates below: the
form's own names (which come from coordinators' spreadsheets) are passed in as data, in a
tuple the code indexes, never pasted into the code.

Text cells that a spreadsheet would run as formulas (:func:`server.exports.values.guard_formula`)
cost one inline test of their first character each, about 50 ns, whatever their length (one
regular expression over the row's joined text was measured: it gains little on short answers
and costs more on long ones, at about a nanosecond per character).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from server.exports.values import FORMULA_TRIGGERS

# Tests telling a cleaned CSV value needs no converter call (``v`` is trimmed and not empty),
# whether formulas are guarded or not: each passing value is its own cell, and none starts a
# formula (a digit, or a first character that is no trigger).
CSV_PLAIN_TEXT = f"v[0] not in {FORMULA_TRIGGERS!r}"
_ONE_SPACED = "'  ' not in v and '\\t' not in v and '\\n' not in v"
CSV_ALREADY_CLEAN = {
    "int": "v.isdigit() and v.isascii() and (v[0] != '0' or len(v) == 1)",
    "date": f"len(v) == 10 and {CSV_PLAIN_TEXT}",
    "boolean": "v == 'true' or v == 'false'",
    "select_multiple": f"{_ONE_SPACED} and {CSV_PLAIN_TEXT}",
    "rank": f"{_ONE_SPACED} and {CSV_PLAIN_TEXT}",
}


def converter(
    sources: Sequence[int],
    handlers: Sequence[tuple[int, int, Callable[[Any], Any], str | None]],
    guarded: Sequence[tuple[int, Callable[[str], Any]]] = (),
) -> Callable[[list[Any]], list[Any]]:
    """Return ``convert(raw) -> cells`` for a table.

    ``sources`` picks the raw cell of each output column (repeated for split columns);
    each handler ``(position, width, function, clean)`` replaces ``width`` cells from
    ``position`` with ``function(cell)`` unless the cell is empty (every handler maps '' to
    empty cells) or passes the ``clean`` test. Each ``(position, function)`` of ``guarded``
    (text cells, never also a handler's) replaces the cell with ``function(cell)`` when it
    starts with a formula trigger.
    """
    namespace: dict[str, Any] = {"getter": itemgetter(*sources)}
    lines = ["def convert(raw):"]
    if len(sources) == 1:
        lines.append("    out = [getter(raw)]")
    else:
        lines.append("    out = list(getter(raw))")
    for number, (position, width, function, clean) in enumerate(handlers):
        name = f"h{number}"
        namespace[name] = function
        lines.append(f"    v = out[{int(position)}]")
        test = "v" if clean is None else f"v and not ({clean})"
        target = (
            f"out[{int(position)}]"
            if width == 1
            else f"out[{int(position)}:{int(position) + int(width)}]"
        )
        lines.append(f"    if {test}:")
        lines.append(f"        {target} = {name}(v)")
    for number, (position, function) in enumerate(guarded):
        name = f"g{number}"
        namespace[name] = function
        lines.append(f"    v = out[{int(position)}]")
        lines.append(f"    if v and v[0] in {FORMULA_TRIGGERS!r}:")
        lines.append(f"        out[{int(position)}] = {name}(v)")
    lines.append("    return out")
    exec(compile("\n".join(lines), "<export converter>", "exec"), namespace)  # noqa: S102
    return namespace["convert"]


def extractor(paths: Sequence[tuple[str, ...]]) -> Callable[[Any], list[str]]:
    """Return ``extract(node) -> texts``: each path's trimmed text below ``node`` ('' if none)."""
    namespace: dict[str, Any] = {"K": tuple(part for path in paths for part in path)}
    lines = [
        "def extract(node):",
        "    if type(node) is not dict:",
        f"        return [''] * {len(paths)}",
        "    get = node.get",
    ]
    names = []
    key = 0
    for number, path in enumerate(paths):
        cell = f"c{number}"
        names.append(cell)
        lines.append(f"    v = get(K[{key}])")
        key += 1
        for _part in path[1:]:
            lines.append(f"    v = v.get(K[{key}]) if type(v) is dict else None")
            key += 1
        lines.append(f"    {cell} = v.strip() if type(v) is str else ''")
    lines.append(f"    return [{', '.join(names)}]")
    exec(compile("\n".join(lines), "<export extractor>", "exec"), namespace)  # noqa: S102
    return namespace["extract"]
