"""Write the region and cercle choices of the programme forms from the reference list.

    python scripts/admin_choices.py           rewrite the lists in every workbook that has them
    python scripts/admin_choices.py --check   exit 1, naming the workbooks, if any list differs

The one place where Mali's regions and cercles are written is ``xlsforms/reference/
mali_admin2.csv`` (its README gives the provenance). The XLSForms carry them in their
``choices`` sheet as the lists ``regions`` and ``cercles`` (the cercles with a ``region``
column, which the cercle question's ``choice_filter`` reads), never typed by hand: change the
CSV, run this script, then ``make forms``. A test runs ``--check``.

Choices in the ``choices`` sheet, not a CSV given as form media (``select_one_from_file``):
every ODK client shows their labels in the form's language (``jr:itext``), while XLSForm has
no way yet to translate the labels of a CSV (pyxform issue 593), and ODK's JavaScript engine
cannot open a form whose CSV has column names that are not XML names (``label::English (en)``).
Place names are proper nouns: every label column gets the same name.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "xlsforms" / "reference" / "mali_admin2.csv"
WORKBOOKS = ROOT / "xlsforms"
LISTS = ("regions", "cercles")
FILTER_COLUMN = "region"


def reference_rows(path: Path = REFERENCE) -> dict[str, list[dict[str, str]]]:
    """Return the rows of each list: ``name``, ``label`` and, for cercles, ``region``."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    regions: dict[str, str] = {}
    cercles = []
    for row in rows:
        regions.setdefault(row["admin1_pcode"], row["admin1_name"])
        cercles.append(
            {
                "name": row["admin2_pcode"],
                "label": row["admin2_name"],
                FILTER_COLUMN: row["admin1_pcode"],
            }
        )
    return {
        "regions": [{"name": code, "label": name} for code, name in regions.items()],
        "cercles": cercles,
    }


def _header(sheet) -> list[str]:
    return [str(cell.value).strip() if cell.value is not None else "" for cell in sheet[1]]


def _wanted(header: list[str], row: dict[str, str], list_name: str) -> list[str]:
    values = []
    for column in header:
        if column == "list_name":
            values.append(list_name)
        elif column == "name":
            values.append(row["name"])
        elif column == "label" or column.startswith("label::"):
            values.append(row["label"])
        elif column == FILTER_COLUMN:
            values.append(row.get(FILTER_COLUMN, ""))
        else:
            values.append("")
    return values


def _current(sheet, header: list[str]) -> dict[str, list[list[str]]]:
    index = header.index("list_name")
    found: dict[str, list[list[str]]] = {name: [] for name in LISTS}
    for row in sheet.iter_rows(min_row=2, values_only=True):
        list_name = row[index] if index < len(row) else None
        if list_name in found:
            cells = ["" if value is None else str(value) for value in row[: len(header)]]
            found[list_name].append(cells + [""] * (len(header) - len(cells)))
    return found


def workbooks(folder: Path = WORKBOOKS) -> list[Path]:
    """The XLSForms whose choices sheet has a ``regions`` or ``cercles`` list."""
    found = []
    for path in sorted(folder.glob("*.xlsx")):
        book = openpyxl.load_workbook(path, read_only=True)
        try:
            if "choices" in book.sheetnames:
                sheet = book["choices"]
                header = _header(sheet)
                if "list_name" in header and any(_current(sheet, header).values()):
                    found.append(path)
        finally:
            book.close()
    return found


def differs(path: Path, lists: dict[str, list[dict[str, str]]]) -> bool:
    """Whether the workbook's lists are not exactly the reference rows."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        sheet = book["choices"]
        header = _header(sheet)
        if FILTER_COLUMN not in header:
            return True
        current = _current(sheet, header)
    finally:
        book.close()
    return any(
        current[name] != [_wanted(header, row, name) for row in rows]
        for name, rows in lists.items()
    )


def rewrite(path: Path, lists: dict[str, list[dict[str, str]]]) -> None:
    """Replace the lists' rows (placed where the first of them was) and save the workbook."""
    book = openpyxl.load_workbook(path)
    sheet = book["choices"]
    header = _header(sheet)
    if FILTER_COLUMN not in header:
        column = len(header) + 1
        sheet.cell(row=1, column=column, value=FILTER_COLUMN)
        header.append(FILTER_COLUMN)
    index = header.index("list_name")
    kept: list[list[object]] = []
    position = None
    for row in sheet.iter_rows(min_row=2, values_only=True):
        cells = list(row[: len(header)]) + [None] * (len(header) - len(row))
        if cells[index] in LISTS:
            position = len(kept) if position is None else position
            continue
        if any(value not in (None, "") for value in cells):
            kept.append(cells)
    generated = [
        [value or None for value in _wanted(header, row, name)]
        for name in LISTS
        for row in lists[name]
    ]
    position = len(kept) if position is None else position
    rows = kept[:position] + generated + kept[position:]
    sheet.delete_rows(2, sheet.max_row)
    for number, cells in enumerate(rows, start=2):
        for column, value in enumerate(cells, start=1):
            sheet.cell(row=number, column=column, value=value)
    book.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report workbooks that differ")
    parser.add_argument("paths", nargs="*", type=Path, help="workbooks (default: xlsforms/)")
    args = parser.parse_args(argv)
    lists = reference_rows()
    paths = args.paths or workbooks()
    stale = [path for path in paths if differs(path, lists)]
    if args.check:
        for path in stale:
            print(f"{path}: regions/cercles differ from {REFERENCE.name}", end="")
            print("; run python scripts/admin_choices.py")
        return 1 if stale else 0
    for path in stale:
        rewrite(path, lists)
        print(f"rewrote the regions and cercles of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
