"""Excel workbooks written as they are read: one sheet per table, typed cells, no library.

An .xlsx file is a zip of XML parts. The sheets' XML is written here row by row (inline
strings, so no shared-string table grows in memory), the main sheet straight into the streamed
zip and the repeat sheets into temporary files appended after it, like the CSV zip. The
workbook, its relationships and content types come last: zip readers find parts through the
central directory, so their order does not matter, and by then every sheet is known (a table
longer than Excel's 1,048,576 rows continues on a second sheet).

Cells are typed: integers and decimals are numbers, dates are Excel dates shown
``yyyy-mm-dd``, date-times (``start``, ``end``, dateTime questions) Excel date-times shown
``yyyy-mm-dd hh:mm:ss`` and times Excel times ``hh:mm:ss``, booleans are booleans. Excel has
no time zone: a tablet's date-time is its clock time as written (the offset is dropped; the
CSV keeps it), ``SubmissionDate`` is in UTC.
Sheet names are unique, at most 31 characters, without the characters Excel forbids.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape

from server.exports import layout as L
from server.exports.context import ExportContext
from server.exports.streams import (
    CHUNK_BYTES,
    ChunkBuffer,
    copy_file,
    open_entry,
    open_zip,
)

MAX_ROWS = 1_048_576
MAX_CELL = 32_767
_EPOCH = dt.date(1899, 12, 30)
_EPOCH_MOMENT = dt.datetime(1899, 12, 30)
_FORBIDDEN_SHEET = re.compile(r"[\[\]:*?/\\\x00-\x1f]")

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"

SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
    '<sheetViews><sheetView workbookViewId="0">'
    '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
    "</sheetView></sheetViews><sheetData>"
)
SHEET_TAIL = "</sheetData></worksheet>"

STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<styleSheet xmlns="{MAIN_NS}">'
    '<numFmts count="3"><numFmt numFmtId="164" formatCode="yyyy\\-mm\\-dd"/>'
    '<numFmt numFmtId="165" formatCode="yyyy\\-mm\\-dd\\ hh:mm:ss"/>'
    '<numFmt numFmtId="166" formatCode="hh:mm:ss"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="166" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def column_letters(count: int) -> list[str]:
    """Return Excel's column names A, B, ... Z, AA, ... for ``count`` columns."""
    letters = []
    for index in range(count):
        name, number = "", index + 1
        while number:
            number, remainder = divmod(number - 1, 26)
            name = chr(65 + remainder) + name
        letters.append(name)
    return letters


# Characters XML 1.0 forbids; UTF-8 encodes each control character as its own single byte.
_CONTROL_BYTES = bytes(range(0x00, 0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))
_NONCHARACTERS = re.compile(b"\xef\xbf[\xbe\xbf]")  # U+FFFE, U+FFFF


def _text(value: str) -> str:
    if len(value) > MAX_CELL:
        value = value[:MAX_CELL]
    if "&" in value or "<" in value or ">" in value:
        value = escape(value)
    return value


def row_xml(number: int, values: list[Any], letters: list[str], *, style: str = "") -> bytes:
    """Return one ``<row>`` of typed cells, as UTF-8; empty values are left out.

    Text is escaped cell by cell with C-speed tests (a regular expression per cell would
    cost more than the rest of the export), and the characters XML forbids are removed from
    the encoded row at once.
    """
    n = str(number)
    cells = [f'<row r="{n}">']
    append = cells.append
    for letter, value in zip(letters, values, strict=False):
        kind = value.__class__
        if kind is str:
            if value:
                append(
                    f'<c r="{letter}{n}"{style} t="inlineStr"><is><t>{_text(value)}</t></is></c>'
                )
        elif kind is int or kind is float:
            append(f'<c r="{letter}{n}"><v>{value!r}</v></c>')
        elif kind is bool:
            append(f'<c r="{letter}{n}" t="b"><v>{int(value)}</v></c>')
        elif kind is dt.date or kind is dt.datetime or kind is dt.time:
            append(_moment_cell(letter, n, value))
        elif value is not None:
            append(f'<c r="{letter}{n}" t="inlineStr"><is><t>{_text(str(value))}</t></is></c>')
    append("</row>")
    data = "".join(cells).encode()
    data = data.translate(None, _CONTROL_BYTES)
    if b"\xef\xbf" in data:
        data = _NONCHARACTERS.sub(b"", data)
    return data


def row_writer(table: L.TablePlan) -> Callable[[int, list[Any]], bytes]:
    """Return a function writing a table's row as XML, generated for its columns.

    Same output as :func:`row_xml`; text columns (most of a form) are written inline without
    the per-cell type dispatch. Only column letters and positions go into the code.
    """
    namespace: dict[str, Any] = {"escape": _text, "typed": _typed_cell, "CONTROL": _CONTROL_BYTES}
    lines = [
        "def row(number, v):",
        "    n = str(number)",
        "    p = ['<row r=\"' + n + '\">']",
        "    a = p.append",
    ]
    for position, (letter, text) in enumerate(
        zip(column_letters(len(table.headers)), table.text_columns(), strict=True)
    ):
        lines.append(f"    x = v[{position}]")
        if text:
            lines.append("    if x:")
            lines.append(
                "        if '&' in x or '<' in x or '>' in x or len(x) > 32767: x = escape(x)"
            )
            lines.append(
                f"        a('<c r=\"{letter}' + n + '\" t=\"inlineStr\"><is><t>' + x"
                " + '</t></is></c>')"
            )
        else:
            lines.append("    if x != '' and x is not None:")
            lines.append(f"        a(typed('{letter}', n, x))")
    lines += [
        "    a('</row>')",
        "    data = ''.join(p).encode().translate(None, CONTROL)",
        "    if b'\\xef\\xbf' in data:",
        "        data = NONCHARACTERS.sub(b'', data)",
        "    return data",
    ]
    namespace["NONCHARACTERS"] = _NONCHARACTERS
    exec(compile("\n".join(lines), "<xlsx row>", "exec"), namespace)  # noqa: S102
    return namespace["row"]


def _typed_cell(letter: str, n: str, value: Any) -> str:
    kind = value.__class__
    if kind is int or kind is float:
        return f'<c r="{letter}{n}"><v>{value!r}</v></c>'
    if kind is bool:
        return f'<c r="{letter}{n}" t="b"><v>{int(value)}</v></c>'
    if kind is dt.date or kind is dt.datetime or kind is dt.time:
        return _moment_cell(letter, n, value)
    return f'<c r="{letter}{n}" t="inlineStr"><is><t>{_text(str(value))}</t></is></c>'


def _moment_cell(letter: str, n: str, value: dt.date | dt.datetime | dt.time) -> str:
    """Return a date (style 1), date-time (3) or time (4) cell: Excel's serial day number."""
    if value.__class__ is dt.date:
        return f'<c r="{letter}{n}" s="1"><v>{(value - _EPOCH).days}</v></c>'
    if value.__class__ is dt.datetime:
        days = (value - _EPOCH_MOMENT) / dt.timedelta(days=1)
        return f'<c r="{letter}{n}" s="3"><v>{round(days, 9)!r}</v></c>'
    seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    return f'<c r="{letter}{n}" s="4"><v>{round(seconds / 86400, 9)!r}</v></c>'


def sheet_names(tables: list[L.TablePlan]) -> list[str]:
    """Return a valid, unique sheet name per table (Excel: 31 characters, no []:*?/\\)."""
    taken: set[str] = {"history"}  # reserved by Excel
    names = []
    for table in tables:
        base = _FORBIDDEN_SHEET.sub("_", table.name).strip("'").strip() or "sheet"
        names.append(_claim(base, taken))
    return names


def _claim(base: str, taken: set[str]) -> str:
    candidate = base[:31]
    number = 1
    while candidate.lower() in taken:
        number += 1
        suffix = f" ({number})"
        candidate = base[: 31 - len(suffix)] + suffix
    taken.add(candidate.lower())
    return candidate


class _Sheet:
    """A sheet being written: its name, its row count, and where its XML goes."""

    def __init__(self, name: str, table: L.TablePlan, out: Any, handle: Any = None) -> None:
        self.name = name
        self.table = table
        self.letters = column_letters(len(table.headers))
        self.row = row_writer(table)
        self.out = out  # a binary stream: the zip entry, or a temporary file
        self.handle = handle  # the temporary file, for repeat sheets
        self.index = 0
        self.pending: list[bytes] = [SHEET_HEAD.encode()]
        self.size = 0
        self.rows = 1
        self.add(row_xml(1, list(table.headers), self.letters, style=' s="2"'))

    def add(self, data: bytes) -> None:
        # Rows are handed on in batches: one write per row would cost a deflate call each.
        self.pending.append(data)
        self.size += len(data)
        if self.size >= CHUNK_BYTES:
            self.flush()

    def write(self, values: list[Any]) -> None:
        """Append a row."""
        self.rows += 1
        self.add(self.row(self.rows, values))

    def flush(self) -> None:
        self.out.write(b"".join(self.pending))
        self.pending = []
        self.size = 0

    def finish(self) -> None:
        """Close the sheet's XML and write what is pending."""
        self.pending.append(SHEET_TAIL.encode())
        self.flush()

    def full(self) -> bool:
        return self.rows >= MAX_ROWS


def xlsx_chunks(ctx: ExportContext) -> Iterator[bytes]:
    """Yield an .xlsx workbook of every table of the export."""
    buffer = ChunkBuffer()
    archive = open_zip(buffer)
    tables = ctx.plan.tables()
    names = sheet_names(tables)
    taken = {n.lower() for n in names} | {"history"}
    done: list[_Sheet] = []  # main sheets, in the zip already
    spilled: list[_Sheet] = []  # repeat sheets, in temporary files
    main = tables[0]

    def open_main(name: str) -> _Sheet:
        entry = open_entry(archive, f"xl/worksheets/sheet{len(done) + 1}.xml")
        sheet = _Sheet(name, main, entry)
        sheet.index = len(done) + 1
        done.append(sheet)
        return sheet

    def open_spill(table: L.TablePlan, name: str) -> _Sheet:
        handle = ctx.temporary()
        sheet = _Sheet(name, table, handle, handle)
        spilled.append(sheet)
        return sheet

    current = open_main(names[0])
    yield buffer.take()
    repeats = {id(t): open_spill(t, n) for t, n in zip(tables[1:], names[1:], strict=True)}
    stats = ctx.stats
    has_repeats = bool(main.children)
    for row in ctx.records():
        if current.full():
            current.finish()
            current.out.close()
            current = open_main(_claim(names[0], taken))
        current.write(main.convert(row))
        stats.rows_written += 1
        if has_repeats:
            for table, raw in ctx.repeat_rows(row):
                sheet = repeats[id(table)]
                if sheet.full():
                    sheet.finish()
                    sheet = repeats[id(table)] = open_spill(table, _claim(sheet.name, taken))
                sheet.write(table.convert(raw))
        if buffer.size >= CHUNK_BYTES:
            stats.bytes_out = buffer.total
            yield buffer.take()
    current.finish()
    current.out.close()
    for sheet in spilled:
        if sheet is repeats.get(id(sheet.table)):
            sheet.finish()
        sheet.handle.seek(0)
        sheet.index = len(done) + 1
        done.append(sheet)
        with open_entry(archive, f"xl/worksheets/sheet{sheet.index}.xml") as target:
            yield from copy_file(sheet.handle, target, buffer)
        sheet.handle.close()
    _write_package(archive, done)
    archive.close()
    stats.bytes_out = buffer.total
    yield buffer.take()


def _write_package(archive: Any, sheets: list[_Sheet]) -> None:
    """Write the workbook, styles, relationships and content types."""
    ordered = sorted(sheets, key=lambda s: s.index)
    workbook = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><sheets>'
        + "".join(
            f'<sheet name="{escape(s.name, {chr(34): "&quot;"})}" sheetId="{s.index}" '
            f'r:id="rId{s.index}"/>'
            for s in ordered
        )
        + "</sheets></workbook>"
    )
    relationships = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{PKG_REL_NS}">'
        + "".join(
            f'<Relationship Id="rId{s.index}" Type="{REL_NS}/worksheet" '
            f'Target="worksheets/sheet{s.index}.xml"/>'
            for s in ordered
        )
        + f'<Relationship Id="rIdStyles" Type="{REL_NS}/styles" Target="styles.xml"/>'
        "</Relationships>"
    )
    root_rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{PKG_REL_NS}">'
        f'<Relationship Id="rId1" Type="{REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        + "".join(
            f'<Override PartName="/xl/worksheets/sheet{s.index}.xml" ContentType="{SHEET_TYPE}"/>'
            for s in ordered
        )
        + "</Types>"
    )
    for name, body in (
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", relationships),
        ("xl/styles.xml", STYLES),
        ("_rels/.rels", root_rels),
        ("[Content_Types].xml", content_types),
    ):
        archive.writestr(name, body)
