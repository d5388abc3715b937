"""From an uploaded file to XForm text, with every problem located by sheet, row and column.

This is the only module of the server that imports pyxform. It accepts:

* an XLSForm as ``.xlsx`` (or ``.xlsm``), ``.xls``, ``.csv`` or Markdown (``.md``, the
  notation of pyxform's own tests), compiled with ``pyxform.xls2xform.convert``;
* an XForm (``.xml``), checked to be a well-formed XForm with a hardened parser.

Every failure is :class:`server.errors.XlsformInvalid` (400.15) naming the file, with details
``{"filename", "errors": [...], "warnings": [...]}``; each error and warning is a
:class:`Message` ``{"message", "sheet", "row", "column"}`` (``None`` where unknown). pyxform
raises more than ``PyXFormError`` on real files (``TypeError``, ``KeyError``, zip errors...):
all of them end here as a 400, never a 500.

Hostile files are refused before pyxform reads them: the upload is capped, a workbook's zip is
checked part by part whatever the parts are named (total uncompressed size; no DTD, in any
encoding), and the rows and columns of every sheet (and of any XML part) are counted by a
streaming parse, so that a zip bomb or a sheet of a million rows costs neither memory nor
minutes. An .xls is read sheet by sheet, every sheet of the file.

ODK Validate (the JavaRosa jar pyxform ships) runs when asked and Java is present, with a
timeout. Its verdict is ``"passed"``, ``"failed"`` (an error, as in ODK Central) or
``"skipped"`` (no Java, no jar, or out of time), kept with the form version.

The XLSForm ``pii`` column (yes/no) is unknown to pyxform; it is read from the spreadsheet
here and returned as the set of field paths below the root (``grp/q``) marked personal.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from server import errors, safexml
from server.forms import explain, xform
from server.forms.messages import _

log = logging.getLogger(__name__)

SPREADSHEET_TYPES = (".xlsx", ".xlsm", ".xls", ".csv", ".md")
ACCEPTED_TYPES = (*SPREADSHEET_TYPES, ".xml")

CONTENT_TYPES = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.ms-excel.sheet.macroenabled.12": ".xlsm",
    "application/vnd.ms-excel": ".xls",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "text/csv": ".csv",
    "text/markdown": ".md",
}

# Limits on what pyxform is given. Real XLSForms are small: the 40 forms of the shared corpus
# are all under 1 MB, the largest sheet has about 3,000 rows.
MAX_SOURCE_BYTES = 20_000_000
MAX_XLS_BYTES = 10_000_000  # xlrd holds a whole .xls in memory, cell by cell
MAX_TEXT_BYTES = 5_000_000  # .csv and .md
MAX_UNZIPPED_BYTES = 100_000_000
MAX_ZIP_MEMBERS = 2_000
MAX_SHEET_ROWS = 50_000
MAX_SHEET_COLUMNS = 1_000
MAX_CELLS = 2_000_000
VALIDATE_TIMEOUT_SECONDS = 100.0  # what pyxform itself allows ODK Validate

_YES = frozenset({"yes", "true", "1", "y", "oui", "vrai"})
# Spellings of group and repeat boundaries in the survey sheet's type column.
_BEGIN = re.compile(r"^begin[ _](group|repeat|loop)\b")
_END = re.compile(r"^end[ _](group|repeat|loop)\b")

Verdict = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Message:
    """One error or warning, located where pyxform says it is."""

    message: str
    sheet: str | None = None
    row: int | None = None
    column: str | None = None
    # pyxform's own sentence when ``message`` explains it in the reader's language.
    original: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the message as the API shows it."""
        return {
            "message": self.message,
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "original": self.original,
        }


@dataclass
class Validation:
    """ODK Validate's verdict on one XForm, and what it printed."""

    verdict: Verdict
    messages: list[str] = field(default_factory=list)


@dataclass
class CompiledForm:
    """A form ready to be stored: its XForm text and what was learnt compiling it."""

    xml: str
    form_id: str
    version: str
    title: str
    filename: str
    file_type: str  # ".xlsx", ".xls", ".csv", ".md" or ".xml"
    warnings: list[Message] = field(default_factory=list)
    pii: frozenset[str] = frozenset()
    # The CSV pyxform builds from an ``external_choices`` sheet; served as ``itemsets.csv``.
    itemsets: bytes | None = None
    validation: Validation = field(default_factory=lambda: Validation("skipped"))

    @property
    def from_spreadsheet(self) -> bool:
        """Tell whether the upload was an XLSForm (kept as the version's source file)."""
        return self.file_type != ".xml"


# ---- locating pyxform's messages -------------------------------------------------------------

_ROW = re.compile(r"\[row\s*:\s*(\d+)\s*\]", re.IGNORECASE)
_SHEET = re.compile(r"\[sheet\s*:\s*([^\]]+?)\s*\]", re.IGNORECASE)
_COLUMN = re.compile(r"\[column\s*:\s*([^\]]+?)\s*\]", re.IGNORECASE)
_ON_SHEET = re.compile(r"On the '([^']+)' sheet(?:, the '([^']+)' (?:value|column))?")
_FOR_SHEET = re.compile(r"for sheet: '([^']+)'")
_XLS_DATE = re.compile(r"on the (\S+) sheet, under the (.+?) column on row number (\d+)")
_NAMED_SHEET = re.compile(r"\b(survey|choices|settings|external_choices|entities) sheet\b")
_MISSING_COLUMN = re.compile(r"missing the (survey|choices|settings|entities) (?:(\S+) column\b)?")


def locate(
    text: str,
    context: dict[str, Any] | None = None,
    survey: Sequence[dict[str, Any]] | None = None,
) -> Message:
    """Turn one pyxform message into a :class:`Message`, finding its sheet, row and column.

    A message :mod:`~server.forms.explain` knows is said in the reader's language, pyxform's
    sentence kept as ``original``; the row is never left inside the sentence. ``survey`` (the
    survey sheet's rows) finds the row of a message that names a value but not its row.
    """
    context = context or {}
    row: int | None = None
    sheet: str | None = None
    column: str | None = None
    if isinstance(context.get("row"), int):
        row = context["row"]
    if isinstance(context.get("sheet"), str):
        sheet = context["sheet"]
    if isinstance(context.get("column"), str):
        column = context["column"]
    if row is None and (match := _ROW.search(text)):
        row = int(match.group(1))
    if sheet is None and (match := _SHEET.search(text)):
        sheet = match.group(1)
    if column is None and (match := _COLUMN.search(text)):
        column = match.group(1)
    if match := _ON_SHEET.search(text):
        sheet = sheet or match.group(1)
        column = column or match.group(2)
    if sheet is None and (match := _FOR_SHEET.search(text)):
        sheet = match.group(1)
    if match := _XLS_DATE.search(text):
        sheet, column = sheet or match.group(1), column or match.group(2)
        row = row or int(match.group(3))
    if match := _MISSING_COLUMN.search(text):
        sheet, column = sheet or match.group(1), column or match.group(2)
    explained = explain.explain(text, survey)
    if explained is None:
        if sheet is None and (match := _NAMED_SHEET.search(text)):
            sheet = match.group(1)
        return Message(message=explain.without_row(text), sheet=sheet, row=row, column=column)
    return Message(
        message=explained.text,
        sheet=explained.sheet or sheet,
        row=row if row is not None else explained.row,
        column=explained.column or column,
        original=explained.original,
    )


def _messages(
    texts: Iterable[str], survey: Sequence[dict[str, Any]] | None = None
) -> list[Message]:
    return [locate(text, survey=survey) for text in texts if text and text.strip()]


def _invalid(
    filename: str,
    problems: list[Message],
    warnings: Iterable[Message] = (),
) -> errors.XlsformInvalid:
    return errors.XlsformInvalid(
        filename=filename,
        errors=[m.to_json() for m in problems],
        warnings=[m.to_json() for m in warnings],
    )


def _refuse(filename: str, text: str, **where: Any) -> errors.XlsformInvalid:
    return _invalid(filename, [Message(text, **where)])


# ---- choosing the reader ---------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def file_type(data: bytes, filename: str | None = None, content_type: str | None = None) -> str:
    """Decide how to read an upload: ``.xlsx``, ``.xls``, ``.csv``, ``.md`` or ``.xml``.

    The bytes decide between the two Excel formats (coordinators rename files); the declared
    type or the extension decide the rest. Raises 400.15 when none fits.
    """
    declared = None
    if content_type:
        declared = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    suffix = Path(filename or "").suffix.lower() or None
    candidate = declared or (suffix if suffix in ACCEPTED_TYPES else None)
    if data.startswith(_ZIP_MAGIC):
        return ".xlsm" if candidate == ".xlsm" else ".xlsx"
    if data.startswith(_OLE_MAGIC):
        return ".xls"
    if candidate in (".xlsx", ".xlsm", ".xls"):
        raise _refuse(
            filename or "form",
            _(
                "The file is not an Excel workbook (.xlsx or .xls): its content is not in "
                "either format. Save it again from Excel and upload the saved file."
            ),
        )
    if candidate is None and data.lstrip()[:1] == b"<":
        return ".xml"
    if candidate is None:
        raise _refuse(
            filename or "form",
            _(
                "Unsupported file type. Send an XLSForm (.xlsx, .xls, .csv or .md) or an "
                "XForm (.xml)."
            ),
        )
    return candidate


# ---- hostile input ---------------------------------------------------------------------------


def _check_size(data: bytes, limit: int, filename: str) -> None:
    if len(data) > limit:
        raise _refuse(
            filename,
            _(
                "The file is too large for a form (%(size)s bytes; the limit is %(limit)s).",
                size=len(data),
                limit=limit,
            ),
        )


def _column_number(reference: str) -> int:
    """Return the 1-based column of a cell reference such as ``AB12``."""
    number = 0
    for char in reference:
        if not char.isalpha():
            break
        number = number * 26 + (ord(char.upper()) - 64)
    return number


# Where the parts of an .xlsx say what they are (ECMA-376 part 2; openpyxl reads the same).
_RELATIONSHIP_IDS = (
    "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id",
    "{http://purl.oclc.org/ooxml/officeDocument/relationships}id",  # strict
)
_WORKBOOK_TYPES = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
        "application/vnd.ms-excel.template.macroEnabled.main+xml",
    }
)
_DEFAULT_WORKBOOK = "xl/workbook.xml"
# How an XML document may begin, in every encoding an XML parser detects by itself (XML 1.0,
# appendix F): "<" in ASCII-compatible encodings (and UTF-16LE/UTF-32LE), the UTF-8, UTF-16 and
# UTF-32 byte order marks, "<" in UTF-16BE and UTF-32BE, "<?xm" in EBCDIC.
_XML_STARTS = (
    b"<",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\x00\x00\xfe\xff",
    b"\x00<",
    b"\x00\x00\x00<",
    b"\x4c\x6f\xa7\x94",
)
# Rows and cells are counted in SpreadsheetML's namespaces only: a drawing's anchors have
# ``xdr:row`` elements, a chart's cached values ``c:v``.
_SHEET_NAMESPACES = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",  # strict
)


def _workbook_part(archive: zipfile.ZipFile) -> str:
    """Return the workbook part's name, read from ``[Content_Types].xml`` as openpyxl does."""
    try:
        types = xform.parse(archive.read("[Content_Types].xml"))
    except (KeyError, xform.XFormError):
        return _DEFAULT_WORKBOOK
    for override in types.iter("{*}Override"):
        if override.get("ContentType") in _WORKBOOK_TYPES and override.get("PartName"):
            return override.get("PartName", "").lstrip("/")
    return _DEFAULT_WORKBOOK


def _worksheets(archive: zipfile.ZipFile) -> dict[str, str]:
    """Map each worksheet's zip part to the name on its tab, whatever the parts are called.

    Found as openpyxl finds them: the workbook part named by the content types, its
    relationships (``<folder>/_rels/<workbook>.rels``), each ``<sheet>``'s relationship target,
    absolute (``/...``) or relative to the workbook's folder.
    """
    book = _workbook_part(archive)
    folder = posixpath.dirname(book)
    try:
        workbook = xform.parse(archive.read(book))
        rels = xform.parse(
            archive.read(posixpath.join(folder, "_rels", posixpath.basename(book) + ".rels"))
        )
    except (KeyError, xform.XFormError):
        return {}  # openpyxl cannot open it either; every XML part is still scanned
    targets: dict[str, str] = {}
    for rel in rels:
        target = rel.get("Target", "") if isinstance(rel.tag, str) else ""
        if not target or rel.get("TargetMode") == "External":
            continue
        if target.startswith("/"):
            targets[rel.get("Id", "")] = target[1:]
        else:
            targets[rel.get("Id", "")] = posixpath.normpath(posixpath.join(folder, target))
    names: dict[str, str] = {}
    for sheet in workbook.iter("{*}sheet"):
        rel_id = next((sheet.get(key) for key in _RELATIONSHIP_IDS if sheet.get(key)), None)
        part = targets.get(rel_id or "")
        if part:
            names[part] = sheet.get("name") or part
    return names


def _check_workbook(data: bytes, filename: str) -> None:
    """Refuse zip bombs, DTDs and oversized sheets in an .xlsx before openpyxl opens it.

    Every part of the zip is looked at, whatever its name: the worksheets openpyxl would read
    (:func:`_worksheets`) and every part that begins as XML are parsed, their rows, columns and
    cells counted and their DTDs refused; the rest (images, a VBA project) are not XML.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _refuse(
            filename,
            _("The workbook could not be opened: %(reason)s", reason=str(exc)),
        ) from None
    with archive:
        if len(members) > MAX_ZIP_MEMBERS:
            raise _refuse(
                filename,
                _("The workbook holds too many parts (%(count)s).", count=len(members)),
            )
        unzipped = sum(member.file_size for member in members)
        if unzipped > MAX_UNZIPPED_BYTES:
            raise _refuse(
                filename,
                _(
                    "The workbook is too large once unpacked (%(size)s bytes; the limit is "
                    "%(limit)s).",
                    size=unzipped,
                    limit=MAX_UNZIPPED_BYTES,
                ),
            )
        sheets = _worksheets(archive)
        cells = 0
        for member in members:
            if member.is_dir():
                continue
            name = member.filename
            xml = (
                name in sheets
                or name.startswith("xl/worksheets/")
                or name.lower().endswith((".xml", ".rels", ".vml"))
            )
            cells += _scan_part(archive, member, sheets.get(name, name), filename, xml=xml)
            if cells > MAX_CELLS:
                raise _refuse(
                    filename,
                    _(
                        "The workbook has too many filled cells (more than %(limit)s).",
                        limit=MAX_CELLS,
                    ),
                )


def _scan_part(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, sheet: str, filename: str, *, xml: bool
) -> int:
    """Stream one part; if it is XML (``xml``, or it begins as XML), parse it.

    Refuse DTDs (:mod:`server.safexml`: on the bytes as they come, then on the parsed document,
    which covers UTF-16 and declared encodings); count its rows, columns and cells. Return its
    number of filled cells.
    """
    try:
        with archive.open(member) as stream:
            chunk = stream.read(1 << 16)
            if not chunk or not (xml or chunk.lstrip(b" \t\r\n").startswith(_XML_STARTS)):
                return 0
            counter = _SheetCounter(sheet, filename)
            tail = b""
            while chunk:
                safexml.refuse_declarations(tail + chunk)
                tail = chunk[-16:]
                counter.feed(chunk)
                chunk = stream.read(1 << 16)
            return counter.close()
    except safexml.UnsafeXml:
        raise _refuse(filename, _("The workbook contains a DTD, which is not allowed.")) from None
    except errors.XlsformInvalid:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, etree.XMLSyntaxError) as exc:
        raise _refuse(
            filename,
            _("The workbook could not be opened: %(reason)s", reason=str(exc)),
        ) from None


class _SheetCounter:
    """Count a worksheet's filled rows, cells and widest column as its XML streams by."""

    def __init__(self, sheet: str, filename: str) -> None:
        self.sheet = sheet
        self.filename = filename
        self.rows = self.cells = self.max_column = 0
        self._filled = 0
        self._last_ref = ""
        # Only values and rows raise events: empty (styled) cells cost no Python at all.
        self.parser = safexml.pull_parser(
            events=("end",),
            tag=[f"{{{ns}}}{name}" for ns in _SHEET_NAMESPACES for name in ("row", "v", "is")],
        )

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the sheet; raise 400.15 as soon as a limit is passed."""
        self.parser.feed(chunk)
        self._count()

    def close(self) -> int:
        """Finish the sheet; refuse a DTD it declared; return its number of filled cells."""
        root = self.parser.close()
        self._count()
        safexml.refuse_dtd(root)
        return self.cells

    def _count(self) -> None:
        for _event, element in self.parser.read_events():
            if etree.QName(element).localname != "row":
                self._filled += 1
                cell = element.getparent()
                if cell is not None:
                    self._last_ref = cell.get("r", "")
                continue
            if self._filled:
                self.rows += 1
                self.cells += self._filled
                self.max_column = max(self.max_column, _column_number(self._last_ref))
            self._filled = 0
            # Forget rows already counted: memory stays flat however long the sheet is.
            element.clear()
            parent = element.getparent()
            while parent is not None and element.getprevious() is not None:
                del parent[0]
        if self.rows > MAX_SHEET_ROWS:
            raise _refuse(
                self.filename,
                _("The sheet has too many rows (more than %(limit)s).", limit=MAX_SHEET_ROWS),
                sheet=self.sheet,
            )
        if self.max_column > MAX_SHEET_COLUMNS:
            raise _refuse(
                self.filename,
                _(
                    "The sheet has too many columns (more than %(limit)s).",
                    limit=MAX_SHEET_COLUMNS,
                ),
                sheet=self.sheet,
            )


def _check_xls(data: bytes, filename: str) -> None:
    """Refuse an .xls whose sheets exceed the limits, loading one sheet at a time.

    Every sheet of the file is checked, by its index: an .xls has no part names to hide one.
    """
    import xlrd  # pyxform's own reader for .xls

    try:
        book = xlrd.open_workbook(file_contents=data, on_demand=True, ragged_rows=True)
    except Exception as exc:  # xlrd raises many kinds on damaged files
        raise _refuse(
            filename,
            _("The .xls workbook could not be read: %(reason)s", reason=str(exc)),
        ) from None
    cells = 0
    try:
        for index in range(book.nsheets):
            try:
                sheet = book.sheet_by_index(index)
            except Exception as exc:
                raise _refuse(
                    filename,
                    _("The .xls workbook could not be read: %(reason)s", reason=str(exc)),
                ) from None
            if sheet.nrows > MAX_SHEET_ROWS or sheet.ncols > MAX_SHEET_COLUMNS:
                raise _refuse(
                    filename,
                    _(
                        "The sheet is too large (%(rows)s rows, %(columns)s columns).",
                        rows=sheet.nrows,
                        columns=sheet.ncols,
                    ),
                    sheet=sheet.name,
                )
            # Rows as long as their last cell (ragged_rows): the filled cells, as for .xlsx.
            cells += sum(sheet.row_len(row) for row in range(sheet.nrows))
            if cells > MAX_CELLS:
                raise _refuse(
                    filename,
                    _(
                        "The workbook has too many filled cells (more than %(limit)s).",
                        limit=MAX_CELLS,
                    ),
                )
            book.unload_sheet(index)
    finally:
        book.release_resources()


def _check_text(data: bytes, filename: str) -> None:
    if data.count(b"\n") > MAX_SHEET_ROWS * 3:
        raise _refuse(
            filename,
            _("The file has too many lines (more than %(limit)s).", limit=MAX_SHEET_ROWS),
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(
            filename,
            _(
                'The file is not UTF-8 text (%(reason)s). Save it as "CSV UTF-8" and upload '
                "it again.",
                reason=str(exc),
            ),
        ) from None


def check_hostile(data: bytes, kind: str, filename: str) -> None:
    """Refuse, with a 400, a file too large or too deep for pyxform to read safely."""
    if kind in (".xlsx", ".xlsm"):
        _check_size(data, MAX_SOURCE_BYTES, filename)
        _check_workbook(data, filename)
    elif kind == ".xls":
        _check_size(data, MAX_XLS_BYTES, filename)
        _check_xls(data, filename)
    elif kind in (".csv", ".md"):
        _check_size(data, MAX_TEXT_BYTES, filename)
        _check_text(data, filename)
    else:
        _check_size(data, xform.MAX_XFORM_BYTES, filename)


# ---- compiling -------------------------------------------------------------------------------


def pii_paths(survey: Iterable[dict[str, Any]] | None) -> frozenset[str]:
    """Return the paths below the root (``grp/q``) of survey rows whose ``pii`` is yes."""
    paths: set[str] = set()
    stack: list[str] = []
    for row in survey or ():
        if not row:
            continue
        values = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        kind = str(values.get("type") or "").strip().lower()
        name = str(values.get("name") or "").strip()
        if _END.match(kind):
            if stack:
                stack.pop()
            continue
        if _BEGIN.match(kind):
            stack.append(name)
        if name and str(values.get("pii") or "").strip().lower() in _YES:
            paths.add("/".join([*stack[:-1], name] if _BEGIN.match(kind) else [*stack, name]))
    return frozenset(paths)


def _safe_form_id(candidate: str | None) -> str | None:
    """Make a usable formID from a file name (Central uses the name when settings has none)."""
    if not candidate:
        return None
    cleaned = re.sub(r"[^\w.-]+", "_", candidate.strip(), flags=re.UNICODE).strip("_.")
    return cleaned[:255] or None


def _run_pyxform(
    data: bytes, kind: str, filename: str, fallback: str | None
) -> tuple[str, list[str], frozenset[str], bytes | None, list[dict[str, Any]]]:
    """Convert with pyxform; return the XForm, its warnings, pii paths, itemsets, survey rows."""

    from pyxform.errors import PyXFormError
    from pyxform.xls2json_backends import get_xlsform
    from pyxform.xls2xform import convert

    warnings: list[str] = []
    survey: list[dict[str, Any]] | None = None
    try:
        workbook = get_xlsform(xlsform=data, file_type=kind)
        survey = workbook.survey
        pii = pii_paths(survey)
        definition = {f.name: getattr(workbook, f.name) for f in fields(workbook)}
        definition["fallback_form_name"] = fallback
        result = convert(xlsform=definition, warnings=warnings, validate=False)
        itemsets = result.itemsets.encode("utf-8") if result.itemsets is not None else None
        return result.xform, list(result.warnings), pii, itemsets, survey
    except PyXFormError as exc:
        context = exc.context if isinstance(getattr(exc, "context", None), dict) else None
        raise _invalid(
            filename, [locate(str(exc), context, survey)], _messages(warnings, survey)
        ) from None

    except RecursionError:
        raise _refuse(filename, _("The form is nested too deeply to be read.")) from None
    except Exception as exc:
        # pyxform's readers let TypeError, KeyError, AttributeError, zip and XML errors escape
        # on real files (the shared corpus has a TypeError): a damaged form is the user's
        # problem to fix, never a server error.
        log.info("pyxform raised %s on %s", type(exc).__name__, filename, exc_info=True)
        text = _(
            "pyxform could not convert this form (%(error)s). Check the rows and columns near "
            "the feature named, or simplify it.",
            error=f"{type(exc).__name__}: {exc}",
        )
        raise _invalid(filename, [locate(text)], _messages(warnings)) from None


# Central accepts any formID that is not blank (``''=+/*-451%/%``, ``✅``): paths carry it
# percent-encoded (server/routing.py). Refused here: control characters (C0, DEL, C1), which
# no client can type and logs and headers must not carry; more than the column holds; and
# the IDs no URL can name: "." and ".." (clients resolve them as dot segments) and those
# ending as another route of the same form does (``<id>.xml``, ``<id>.svc``...).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
AMBIGUOUS_ENDINGS = (".xml", ".xls", ".xlsx", ".svc")


def form_id_problem(form_id: str) -> str | None:
    """Return why a formID cannot be used (translated), or None when it can."""
    if len(form_id) > 255 or _CONTROL.search(form_id) or form_id in (".", ".."):
        return _(
            "The form_id %(form_id)s cannot be used: keep it under 255 characters, without "
            "control characters, and other than . or ..",
            form_id=repr(form_id),
        )
    if form_id.lower().endswith(AMBIGUOUS_ENDINGS):
        return _(
            "The form_id %(form_id)s cannot end in .xml, .xls, .xlsx or .svc.",
            form_id=repr(form_id),
        )
    return None


def _check_identity(ident: xform.Identity, filename: str) -> None:
    """Refuse formIDs and versions that would break URLs or the database columns."""
    problem = form_id_problem(ident.form_id)
    if problem is not None:
        raise _refuse(filename, problem, sheet="settings", column="form_id")
    if len(ident.version) > 255:
        raise _refuse(
            filename,
            _("The version is longer than 255 characters."),
            sheet="settings",
            column="version",
        )


def read_xform(data: bytes, filename: str) -> tuple[str, xform.Identity]:
    """Check an uploaded XForm; return its text (UTF-8, unchanged) and its identity."""
    try:
        root = xform.parse(data)
        ident = xform.identity(root)
        xform.primary_instance(root)
    except xform.XFormError as exc:
        raise _refuse(
            filename, _("This is not a valid XForm: %(reason)s", reason=str(exc))
        ) from None
    try:
        text = safexml.utf8_text(data, root)
    except safexml.NotUtf8 as exc:
        raise _refuse(
            filename,
            _("The XForm must be encoded in UTF-8 (it is %(encoding)s).", encoding=str(exc)),
        ) from None
    return text, ident


def compile_upload(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    form_id_fallback: str | None = None,
    validate: bool = False,
    validate_timeout: float = VALIDATE_TIMEOUT_SECONDS,
) -> CompiledForm:
    """Compile an uploaded XLSForm (or check an XForm) and return the form to store.

    ``form_id_fallback`` is the formID used when the settings sheet has none (ODK Central's
    ``X-XlsForm-FormId-Fallback``, taken as it is); without it, the file name is used, made
    a plain identifier. Raises 400.15
    (:class:`~server.errors.XlsformInvalid`) on any problem, including a failed ODK Validate.
    """
    kind = file_type(data, filename, content_type)
    shown = filename or f"form{kind}"
    if not data.strip():
        raise _refuse(shown, _("The file is empty."))
    check_hostile(data, kind, shown)
    warnings: list[Message] = []
    pii: frozenset[str] = frozenset()
    itemsets = None
    if kind == ".xml":
        text, ident = read_xform(data, shown)
    else:
        fallback = (form_id_fallback or "").strip() or _safe_form_id(
            Path(filename).stem if filename else None
        )
        text, raw_warnings, pii, itemsets, survey = _run_pyxform(data, kind, shown, fallback)
        warnings = _messages(raw_warnings, survey)
        try:
            ident = xform.identity(xform.parse(text.encode("utf-8")))
        except xform.XFormError as exc:
            raise _refuse(
                shown, _("pyxform produced an unreadable XForm: %(reason)s", reason=str(exc))
            ) from None
    _check_identity(ident, shown)
    validation = Validation("skipped", [_("ODK Validate was not run (turned off).")])
    if validate:
        validation = odk_validate(text, timeout=validate_timeout)
        if validation.verdict == "failed":
            summary = " ".join(validation.messages) or "the form was rejected."
            raise _invalid(shown, [Message(f"ODK Validate: {summary}")], warnings)
    return CompiledForm(
        xml=text,
        form_id=ident.form_id,
        version=ident.version,
        title=ident.title,
        filename=shown,
        file_type=".xlsx" if kind == ".xlsm" else kind,
        warnings=warnings,
        pii=pii,
        itemsets=itemsets,
        validation=validation,
    )


# ---- ODK Validate ----------------------------------------------------------------------------


def validator_jar() -> Path | None:
    """Return the ODK Validate jar that pyxform ships, if it is there."""
    from pyxform.validators.odk_validate import ODK_VALIDATE_PATH

    path = Path(ODK_VALIDATE_PATH)
    return path if path.is_file() else None


def java_available() -> bool:
    """Tell whether a ``java`` command is on the PATH."""
    return shutil.which("java") is not None


# Lines ODK Validate prints around every verdict, which say nothing about the form.
_VALIDATE_BOILERPLATE = frozenset(
    {
        ">> XForm is invalid.",
        "The following files failed validation:",
        "form.xml",
        "Result: Invalid",
    }
)


def odk_validate(xml: str, *, timeout: float = VALIDATE_TIMEOUT_SECONDS) -> Validation:
    """Run ODK Validate on an XForm; ``skipped`` when Java or the jar is missing or too slow."""
    from pyxform.validators.error_cleaner import ErrorCleaner

    java = shutil.which("java")
    if java is None:
        return Validation("skipped", [_("ODK Validate was not run: Java is not installed.")])
    jar = validator_jar()
    if jar is None:
        return Validation("skipped", [_("ODK Validate was not run: its jar is missing.")])
    with tempfile.TemporaryDirectory(prefix="merit-validate-") as folder:
        path = Path(folder) / "form.xml"
        path.write_text(xml, encoding="utf-8")
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [java, "-Djava.awt.headless=true", "-Xmx768m", "-jar", str(jar), str(path)],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Validation(
                "skipped",
                [
                    _(
                        "ODK Validate did not finish within %(seconds)s seconds.",
                        seconds=int(timeout),
                    )
                ],
            )
        except OSError as exc:
            return Validation(
                "skipped",
                [_("ODK Validate could not be started: %(reason)s", reason=str(exc))],
            )
    stderr = result.stderr.decode("utf-8", errors="replace").replace(str(path), "form.xml")
    if result.returncode == 0:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        return Validation("passed", lines)
    cleaned = ErrorCleaner.odk_validate(stderr)
    lines = [
        line.strip().lstrip(": ").strip()
        for line in cleaned.splitlines()
        if line and line.strip() and line.strip() not in _VALIDATE_BOILERPLATE
    ]
    if result.returncode < 0:
        return Validation("skipped", [f"ODK Validate stopped ({result.returncode}).", *lines])
    return Validation("failed", lines or ["ODK Validate rejected the form."])
