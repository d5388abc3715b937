"""The cleaning log: corrections analysts upload, checked line by line, applied in exports.

An analyst sends a CSV with one correction per line::

    KEY,column,old value,new value,reason
    uuid:4d1…,age,340,34,typo (one zero too many)
    uuid:4d1…/members[2],member_age,,12,read from the paper form

French headers are understood too (``clé, colonne, ancienne valeur, nouvelle valeur, motif``),
and so are the semicolons French Excel writes. Each line is checked against the data as the
export shows it now (corrections already accepted included):

* the KEY names a row of the form: a record's instanceID or a repeat row's KEY;
* the column is a field of that row's table: its header as exported with field names
  (``grp-q``, ``loc-Latitude``) or its path (``/data/grp/q``); metadata and the 0/1 columns of
  split select-multiples cannot be corrected (correct the select-multiple column itself);
* the old value is what the export shows (``34``, `` 34`` and ``034`` are one integer;
  ``'=x``, as a CSV shows the answer ``=x`` that Excel would run, is ``=x``);
* the new value fits the field's type and, for selects, its choices (every version's);
* the reason is given, and a cell is corrected once per upload.

Nothing is stored unless every line is valid; with ``partial=true`` the valid lines are stored
and the others reported. Either way the answer lists every line with its verdict. Accepted
corrections are rows of ``corrections`` (who, when, which upload); exports apply them unless
``cleaned=false``. A correction applies while the cell still holds its old value: when the
record is edited again on a tablet, the new answer wins and the correction stops applying.
Revoking a correction keeps it in the log, marked revoked. Each upload and each revocation is
an audit event.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext
from sqlalchemy.orm import Session

from server import errors
from server.db import utcnow
from server.exports import layout as L
from server.exports import source, values
from server.exports.models import Correction
from server.exports.options import ExportOptions
from server.forms.models import Form
from server.submissions.models import Submission, SubmissionVersion

MAX_LINES = 50_000
_INDEX = re.compile(r"^(?P<name>[^\[\]/]+)\[(?P<index>[1-9][0-9]*)\]$")


# ---- applying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveCorrection:
    """A stored correction, ready to apply to raw rows."""

    path: str
    part: int | None  # position in a geopoint (0 latitude ... 3 accuracy)
    type: str
    old: Any  # canonical
    new: str


class CorrectionIndex:
    """Active corrections of a form by row KEY, in the order they were accepted."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[ActiveCorrection]] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def add(self, key: str, correction: ActiveCorrection) -> None:
        self.by_key.setdefault(key, []).append(correction)

    def apply(self, table: L.TablePlan, raw: list[Any], key: str) -> None:
        """Correct a raw row in place (cells that still hold the old value only)."""
        found = self.by_key.get(key)
        if not found:
            return
        for correction in found:
            try:
                index = table.leaf_index(correction.path)
            except KeyError:
                continue  # the field is not in this export
            current = raw[index]
            if correction.part is None:
                if values.canonical(correction.type, current) == correction.old:
                    raw[index] = correction.new
                continue
            parts = current.split()
            here = parts[correction.part] if correction.part < len(parts) else ""
            if values.canonical("decimal", here) == correction.old:
                # Collect writes 0 for an unknown altitude or accuracy.
                parts += ["0"] * (correction.part + 1 - len(parts))
                parts[correction.part] = correction.new
                raw[index] = " ".join(parts)


def _split_column(column: str) -> tuple[str, int | None]:
    path, _, part = column.partition("#")
    return path, (values.GEO_PARTS.index(part) if part in values.GEO_PARTS else None)


def load_index(db_session: Session, form: Form, layout: L.FormLayout) -> CorrectionIndex | None:
    """Return the form's active corrections, or None when there are none."""
    index = CorrectionIndex()
    rows = db_session.execute(
        sa.select(Correction.key, Correction.column, Correction.old_value, Correction.new_value)
        .where(Correction.form_id == form.id, Correction.revoked_at.is_(None))
        .order_by(Correction.id)
    )
    for key, column, old, new in rows:
        path, part = _split_column(column)
        leaf = layout.by_path.get(path)
        if leaf is None:
            continue
        kind = "decimal" if part is not None else leaf.type
        index.add(
            key, ActiveCorrection(path, part, leaf.type, values.canonical(kind, old), new or "")
        )
    return index if len(index) else None


# ---- checking an upload ------------------------------------------------------------------

_HEADERS = {
    "key": "key",
    "cle": "key",
    "cle ligne": "key",
    "column": "column",
    "colonne": "column",
    "champ": "column",
    "field": "column",
    "variable": "column",
    "old value": "old",
    "old": "old",
    "ancienne valeur": "old",
    "valeur actuelle": "old",
    "ancienne": "old",
    "new value": "new",
    "new": "new",
    "nouvelle valeur": "new",
    "valeur corrigee": "new",
    "nouvelle": "new",
    "reason": "reason",
    "raison": "reason",
    "motif": "reason",
    "justification": "reason",
    "commentaire": "reason",
    "comment": "reason",
}


def _normalise_header(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.strip().lstrip("\ufeff"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.sub(r"[_\-.]+", " ", text).split())


@dataclass
class Line:
    """One line of an upload and its verdict."""

    line: int
    key: str
    column: str
    old: str
    new: str
    reason: str
    problems: list[str] = field(default_factory=list)
    # Resolved when valid.
    submission_id: int | None = None
    stored_column: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "line": self.line,
            "KEY": self.key,
            "column": self.column,
            "oldValue": self.old,
            "newValue": self.new,
            "reason": self.reason,
        }
        if self.problems:
            body["problems"] = self.problems
        return body


def read_upload(data: bytes) -> list[Line]:
    """Read a corrections CSV (UTF-8 or Windows-1252; commas, semicolons or tabs)."""
    if not data.strip():
        raise errors.UnreadableCorrections(reason=gettext("the file is empty"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Excel on Windows saves CSV in the system code page.
        text = data.decode("cp1252", errors="replace")
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise errors.UnreadableCorrections(reason=str(exc)) from None
    roles = [_HEADERS.get(_normalise_header(h)) for h in header]
    missing = [r for r in ("key", "column", "old", "new", "reason") if r not in roles]
    if missing:
        raise errors.UnreadableCorrections(
            reason=gettext(
                "the first line must name the columns KEY, column, old value, new value and "
                "reason (or clé, colonne, ancienne valeur, nouvelle valeur, motif); "
                "missing: %(missing)s"
            )
            % {"missing": ", ".join(missing)}
        )
    position = {role: roles.index(role) for role in ("key", "column", "old", "new", "reason")}
    lines: list[Line] = []
    try:
        for number, cells in enumerate(reader, 2):
            if not any(c.strip() for c in cells):
                continue
            if len(lines) >= MAX_LINES:
                raise errors.UnreadableCorrections(
                    reason=gettext("more than %(limit)s lines; split the file")
                    % {"limit": MAX_LINES}
                )
            cells = cells + [""] * (len(header) - len(cells))
            lines.append(
                Line(
                    line=number,
                    key=cells[position["key"]].strip(),
                    column=cells[position["column"]].strip(),
                    old=cells[position["old"]].strip(),
                    new=cells[position["new"]].strip(),
                    reason=cells[position["reason"]].strip(),
                )
            )
    except csv.Error as exc:
        raise errors.UnreadableCorrections(reason=str(exc)) from None
    if not lines:
        raise errors.UnreadableCorrections(reason=gettext("the file has no correction lines"))
    return lines


def _column_ids(table: L.TablePlan) -> dict[str, tuple[L.FieldInfo, int | None]]:
    """Return every way a correction may name a column of a table."""
    ids: dict[str, tuple[L.FieldInfo, int | None]] = {}
    names: dict[str, int] = {}
    depth = 0 if table.path is None else len(table.path.split("/")) - 2
    for leaf in table.leaves:
        names[leaf.name] = names.get(leaf.name, 0) + 1
    for leaf in table.leaves:
        header = "-".join(leaf.parts[depth:])
        keys = [header, leaf.path] + ([leaf.name] if names[leaf.name] == 1 else [])
        for key in keys:
            ids.setdefault(key, (leaf, None))
        if leaf.type == "geopoint":
            for number, part in enumerate(values.GEO_PARTS):
                ids.setdefault(f"{header}-{part}", (leaf, number))
                ids.setdefault(f"{leaf.path}#{part}", (leaf, number))
    return ids


_META_COLUMNS = {header for header, _source in L.MAIN_TRAILER} | {
    "SubmissionDate",
    "PARENT_KEY",
}


def check_upload(
    db_session: Session,
    form: Form,
    layout: L.FormLayout,
    lines: list[Line],
    *,
    may_touch_pii: bool,
) -> None:
    """Check every line against the data; fill each line's problems (empty when valid)."""
    plan = L.build_plan(layout, ExportOptions(pii="plain"), "csv")
    index = load_index(db_session, form, layout)
    column_ids = {id(t): _column_ids(t) for t in plan.tables()}
    seen: dict[tuple[str, str], int] = {}
    # Lines are checked record by record, a few hundred records at a time, so that a large
    # upload never holds every record it names in memory at once.
    by_root: dict[str, list[Line]] = {}
    for line in lines:
        by_root.setdefault(line.key.split("/", 1)[0], []).append(line)
    roots = list(by_root)
    for start in range(0, len(roots), 500):
        batch = roots[start : start + 500]
        records = _records(db_session, form, [r for r in batch if r])
        rows_by_key: dict[str, tuple[L.TablePlan, list[Any], int]] = {}
        for instance_id, (submission_id, document, encrypted) in records.items():
            if encrypted:
                continue
            row = source.document_row(plan, instance_id, document)
            if index is not None:
                index.apply(plan.main, row, instance_id)
            rows_by_key[instance_id] = (plan.main, row, submission_id)
            for table, raw in source.repeat_rows(plan, row, index):
                rows_by_key[raw[L.R_KEY]] = (table, raw, submission_id)
        for root in batch:
            for line in by_root[root]:
                _check_line(line, records, rows_by_key, column_ids, seen, may_touch_pii)


def _records(
    db_session: Session, form: Form, roots: Iterable[str]
) -> dict[str, tuple[int, dict | None, bool]]:
    """Return instanceID -> (submission id, current document, encrypted) for live records."""
    found: dict[str, tuple[int, dict | None, bool]] = {}
    roots = list(roots)
    for start in range(0, len(roots), 500):
        batch = roots[start : start + 500]
        if not batch:
            continue
        rows = db_session.execute(
            sa.select(
                Submission.instance_id,
                Submission.id,
                SubmissionVersion.raw_document,
                SubmissionVersion.encrypted,
            )
            .join(
                SubmissionVersion,
                sa.and_(
                    SubmissionVersion.submission_id == Submission.id,
                    SubmissionVersion.current == sa.true(),
                ),
            )
            .where(
                Submission.form_id == form.id,
                Submission.draft == sa.false(),
                Submission.deleted_at.is_(None),
                Submission.instance_id.in_(batch),
            )
        )
        for instance_id, submission_id, document, encrypted in rows:
            found[instance_id] = (submission_id, document, bool(encrypted))
    return found


def _check_line(
    line: Line,
    records: dict[str, tuple[int, dict | None, bool]],
    rows_by_key: dict[str, tuple[L.TablePlan, list[Any], int]],
    column_ids: dict[int, dict[str, tuple[L.FieldInfo, int | None]]],
    seen: dict[tuple[str, str], int],
    may_touch_pii: bool,
) -> None:
    problems = line.problems
    if not line.key:
        problems.append(gettext("the KEY is missing"))
        return
    if not line.column:
        problems.append(gettext("the column is missing"))
        return
    if not line.reason:
        problems.append(gettext("the reason is missing: say why the value changes"))
    root = line.key.split("/", 1)[0]
    record = records.get(root)
    if record is None:
        problems.append(
            gettext("no record of this form has the instanceID %(key)s (deleted or never received)")
            % {"key": root}
        )
        return
    if record[2]:
        problems.append(gettext("the record is encrypted; its values cannot be corrected here"))
        return
    found = rows_by_key.get(line.key)
    if found is None:
        problems.append(
            gettext("the record has no row with the KEY %(key)s (check the repeat and its number)")
            % {"key": line.key}
        )
        return
    table, raw, submission_id = found
    if line.column in _META_COLUMNS:
        problems.append(
            gettext("%(column)s is metadata, not an answer; it cannot be corrected")
            % {"column": line.column}
        )
        return
    target = column_ids[id(table)].get(line.column)
    if target is None:
        if "/" in line.column and not line.column.startswith("/"):
            problems.append(
                gettext(
                    "%(column)s is a 0/1 column of a select-multiple; correct the "
                    "select-multiple column itself"
                )
                % {"column": line.column}
            )
        else:
            problems.append(
                gettext("the table of this row (%(table)s) has no column %(column)s")
                % {"table": table.name, "column": line.column}
            )
        return
    leaf, part = target
    if leaf.pii and not may_touch_pii:
        problems.append(
            gettext("%(column)s holds personal data, which you may not see nor correct")
            % {"column": line.column}
        )
        return
    cell = (leaf.path, part if part is not None else -1)
    cell_key = (line.key, f"{cell[0]}#{cell[1]}")
    if cell_key in seen:
        problems.append(
            gettext("line %(line)s already corrects this cell") % {"line": seen[cell_key]}
        )
        return
    seen[cell_key] = line.line
    current = raw[table.leaf_index(leaf.path)]
    kind = leaf.type
    if part is not None:
        pieces = current.split()
        current = pieces[part] if part < len(pieces) else ""
        kind = "decimal"
    if values.canonical(kind, line.old) != values.canonical(kind, current):
        # A CSV shows "'=x" for the answer "=x" (escapeFormulas): copied from it, it is "=x".
        unguarded = values.unguard_formula(line.old)
        if values.canonical(kind, unguarded) == values.canonical(kind, current):
            line.old = unguarded
        else:
            problems.append(
                gettext("the old value “%(old)s” is not the exported value “%(current)s”")
                % {"old": line.old, "current": current}
            )
    if part is not None:
        problem = values.check("decimal", line.new, None)
        if problem is None and line.new and part < 2:
            limit = 90 if part == 0 else 180
            if abs(float(line.new)) > limit:
                problem = gettext("the latitude must lie within ±90 and the longitude within ±180")
    else:
        problem = values.check(leaf.type, line.new, leaf.choice_names)
    if problem:
        problems.append(
            gettext("the new value “%(new)s” does not fit the field: %(problem)s")
            % {"new": line.new, "problem": problem}
        )
    elif values.canonical(kind, line.new) == values.canonical(kind, current):
        problems.append(gettext("the new value is the value already exported"))
    if not problems:
        line.submission_id = submission_id
        line.stored_column = leaf.path if part is None else f"{leaf.path}#{values.GEO_PARTS[part]}"


# ---- storing, listing, revoking ---------------------------------------------------------


@dataclass
class BatchResult:
    """What an upload did."""

    batch: str | None
    accepted: list[Line]
    refused: list[Line]

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "applied": len(self.accepted) if self.batch else 0,
            "accepted": [line.to_json() for line in self.accepted],
            "refused": [line.to_json() for line in self.refused],
        }


def submit(
    db_session: Session,
    form: Form,
    layout: L.FormLayout,
    data: bytes,
    *,
    actor_id: int | None,
    partial: bool = False,
    may_touch_pii: bool = True,
) -> BatchResult:
    """Check an upload and store its corrections (all, or the valid ones when ``partial``).

    Raises :class:`~server.errors.CorrectionsRefused` (400, with every line's verdict in its
    details) when lines are refused and nothing was stored. Commits when something was stored.
    """
    lines = read_upload(data)
    check_upload(db_session, form, layout, lines, may_touch_pii=may_touch_pii)
    accepted = [line for line in lines if not line.problems]
    refused = [line for line in lines if line.problems]
    if not accepted or (refused and not partial):
        raise errors.CorrectionsRefused(
            count=len(refused),
            total=len(lines),
            accepted=[line.to_json() for line in accepted],
            refused=[line.to_json() for line in refused],
        )
    batch = uuid.uuid4().hex
    now = utcnow()
    db_session.execute(
        sa.insert(Correction),
        [
            {
                "form_id": form.id,
                "submission_id": line.submission_id,
                "key": line.key,
                "column": line.stored_column,
                "old_value": line.old or None,
                "new_value": line.new or None,
                "reason": line.reason,
                "batch": batch,
                "actor_id": actor_id,
                "created_at": now,
            }
            for line in accepted
        ],
    )
    from server.audit.services import record

    record(
        db_session,
        "export.corrections.create",
        actor_id=actor_id,
        project_id=form.project_id,
        form_id=form.id,
        details={"batch": batch, "accepted": len(accepted), "refused": len(refused)},
    )
    db_session.commit()
    return BatchResult(batch, accepted, refused)


def header_of(layout: L.FormLayout, column: str) -> str:
    """Return the exported header (field names, group paths) of a stored correction column."""
    path, part = _split_column(column)
    leaf = layout.by_path.get(path)
    if leaf is None:
        return column
    depth = 0 if leaf.repeat is None else len(leaf.repeat.split("/")) - 2
    header = "-".join(leaf.parts[depth:])
    return header if part is None else f"{header}-{values.GEO_PARTS[part]}"


def list_corrections(
    db_session: Session, form: Form, *, include_revoked: bool = False
) -> list[Correction]:
    """Return the form's corrections, oldest first."""
    query = sa.select(Correction).where(Correction.form_id == form.id)
    if not include_revoked:
        query = query.where(Correction.revoked_at.is_(None))
    return list(db_session.scalars(query.order_by(Correction.id)))


def revoke(
    db_session: Session, form: Form, correction_id: int, *, actor_id: int | None
) -> Correction:
    """Revoke a correction (kept in the log, no longer applied); commit."""
    correction = db_session.get(Correction, correction_id)
    if correction is None or correction.form_id != form.id:
        raise errors.CorrectionNotFound(id=correction_id)
    if correction.revoked_at is None:
        correction.revoked_at = utcnow()
        from server.audit.services import record

        record(
            db_session,
            "export.corrections.delete",
            actor_id=actor_id,
            project_id=form.project_id,
            form_id=form.id,
            submission_id=correction.submission_id,
            details={
                "id": correction.id,
                "batch": correction.batch,
                "key": correction.key,
                "column": correction.column,
            },
        )
        db_session.commit()
    return correction
