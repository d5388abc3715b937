"""Reading the records of an export: one streamed query, rows handed on as they arrive.

Which records: the current version of every record of the form (an edit replaces what came
before; a resend is the same record and was never stored twice), never drafts nor deleted ones,
rejected ones only when asked; then the filters of the options.

How: the database does what it does best, on its own core. The query extracts every field of
the main table from the JSON document (``document -> 'grp' ->> 'q'`` on PostgreSQL,
``json_extract`` on SQLite), formats the submission date, counts edits, and hands each repeat's
subtree as JSON. On PostgreSQL the rows come through ``COPY (SELECT …) TO STDOUT`` read with
the csv module, the fastest way out of PostgreSQL and a stream (psycopg reads one row message
at a time); on SQLite through a cursor that fetches ``yield_per`` rows at a time. Either way,
no list of rows is ever built, so memory does not depend on the number of records.

On PostgreSQL the export reads in one REPEATABLE READ transaction, so the tables, the media and
the audit logs of one export describe the same moment. On SQLite the read-only engine's
deferred transaction gives the same snapshot in WAL mode and never blocks intake.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext
from sqlalchemy.orm import Session, sessionmaker

from server import errors
from server.auth.models import Actor
from server.exports import layout as L
from server.exports.options import RECEIVED, ExportOptions
from server.forms.models import Form
from server.odata.filter import parse_filter
from server.storage.models import Blob
from server.submissions.models import Submission, SubmissionAttachment, SubmissionVersion

log = logging.getLogger(__name__)

Decryptor = Callable[[SubmissionVersion], "dict | None"]

# Rows fetched per round trip on SQLite (and by the media query on both databases).
YIELD_PER = 2000

S = Submission.__table__
V = SubmissionVersion.__table__
A = Actor.__table__
ATT = SubmissionAttachment.__table__
B = Blob.__table__


@dataclass
class ExportStats:
    """What an export has done so far: tests and the benchmark read it while it streams."""

    records_read: int = 0
    rows_written: int = 0
    bytes_out: int = 0


def _json_path(parts: tuple[str, ...]) -> str:
    # XML names cannot contain a double quote, so quoting each step is enough.
    return "$" + "".join(f'."{part}"' for part in parts)


def _text(expression: Any) -> Any:
    """Return SQL giving an expression as text, '' for NULL: every raw cell is a string."""
    return sa.func.coalesce(sa.cast(expression, sa.Text), "")


def _text_at(dialect: str, parts: tuple[str, ...], document: Any) -> Any:
    """Return the SQL for a field's text (or '' when absent)."""
    if dialect == "postgresql":
        expression: Any = document
        for part in parts[:-1]:
            expression = expression.op("->")(sa.literal(part, sa.Text))
        extracted = expression.op("->>", return_type=sa.Text)(sa.literal(parts[-1], sa.Text))
        return sa.func.coalesce(extracted, "")
    return _text(sa.func.json_extract(document, _json_path(parts), type_=sa.Text))


def _json_at(dialect: str, parts: tuple[str, ...], document: Any) -> Any:
    """Return the SQL for a subtree (a repeat's list) as JSON text ('' when absent)."""
    if dialect == "postgresql":
        expression: Any = document
        for part in parts:
            expression = expression.op("->", return_type=sa.Text)(sa.literal(part, sa.Text))
        return _text(expression)
    return _text(sa.func.json_extract(document, _json_path(parts), type_=sa.Text))


_EMPTY_JSONB = sa.literal_column("'{}'::jsonb")


def _submission_date(dialect: str) -> Any:
    """Central's SubmissionDate: UTC, milliseconds, Z."""
    if dialect == "postgresql":
        return sa.func.to_char(
            sa.func.timezone("UTC", S.c.created_at), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
        )
    # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff"; strftime('%f') would round through a
    # floating-point Julian day, so the milliseconds are cut from the text instead.
    created = sa.cast(S.c.created_at, sa.Text)
    return sa.func.substr(created, 1, 10) + "T" + sa.func.substr(created, 12, 12) + "Z"


def conditions(form: Form, layout: L.FormLayout, options: ExportOptions, dialect: str) -> list[Any]:
    """Return the WHERE conditions choosing an export's records (raise 400 on bad filters)."""
    where: list[Any] = [
        S.c.form_id == form.id,
        S.c.draft == sa.false(),
        S.c.deleted_at.is_(None),
    ]
    states = options.review_states
    if states is not None:
        named = [s for s in states if s != RECEIVED]
        either = [S.c.review_state.in_(named)] if named else []
        if RECEIVED in states:
            either.append(S.c.review_state.is_(None))
        where.append(sa.or_(*either))
    elif not options.include_rejected:
        where.append(sa.or_(S.c.review_state.is_(None), S.c.review_state != "rejected"))
    if options.start is not None:
        where.append(S.c.created_at >= options.start)
    if options.end is not None:
        where.append(S.c.created_at < options.end)
    if options.submitter_ids is not None:
        where.append(S.c.submitter_id.in_(options.submitter_ids))
    if options.form_versions is not None:
        ids_by_version: dict[str, list[int]] = {}
        for row_id, version in layout.versions.items():
            ids_by_version.setdefault(version, []).append(int(row_id))
        unknown = [v for v in options.form_versions if v not in ids_by_version]
        if unknown:
            raise errors.BadExportOption(
                field="formVersion",
                reason=gettext("the form has no version %(version)s") % {"version": unknown[0]},
            )
        ids = [i for v in options.form_versions for i in ids_by_version[v]]
        where.append(V.c.form_version_id.in_(ids))
    if options.odata_filter:
        where.append(parse_filter(options.odata_filter, dialect))
    return where


def records_query(plan: L.Plan, where: list[Any], dialect: str) -> Any:
    """Return the query giving one main raw row per record, then each top repeat's JSON."""
    versions = sa.alias(V, "all_versions")
    edits = (
        sa.select(sa.func.count())
        .select_from(versions)
        .where(versions.c.submission_id == S.c.id)
        .scalar_subquery()
    ) - 1
    columns: list[Any] = [
        _text(S.c.id),
        S.c.instance_id,
        _submission_date(dialect),
        _text(S.c.submitter_id),
        _text(A.c.display_name),
        _text(S.c.review_state),
        _text(S.c.device_id),
        _text(edits),
        _text(V.c.form_version_id),
        _text(V.c.instance_name),
        _text(V.c.attachments_present),
        _text(V.c.attachments_expected),
        _text(V.c.encrypted),
        _text(V.c.id),
        sa.literal("", sa.Text),  # Status, filled for encrypted records
    ]
    tables: Any = S.join(V, sa.and_(V.c.submission_id == S.c.id, V.c.current == sa.true()))
    tables = tables.outerjoin(A, A.c.id == S.c.submitter_id)
    document: Any = V.c.document
    if dialect == "postgresql":
        # A record's JSONB is usually stored compressed (TOAST): each ->> would decompress it
        # again, sixty times a row. Decompress it once per row in a LATERAL subquery that the
        # planner may not inline (OFFSET 0); the fields are then read from that copy. This
        # triples PostgreSQL's rate on a sixty-field form (scripts/bench_export.py).
        once = (
            sa.select(document.op("||", return_type=V.c.document.type)(_EMPTY_JSONB).label("doc"))
            .correlate(V)
            .offset(0)
            .lateral("record_document")
        )
        tables = tables.join(once, sa.true())
        document = once.c.doc
    columns += [_text_at(dialect, leaf.parts, document) for leaf in plan.main.leaves]
    columns += [_json_at(dialect, parts, document) for parts, _child in plan.main.children]
    return sa.select(*columns).select_from(tables).where(*where).order_by(S.c.id)


# Planner settings of an export's transaction on PostgreSQL (SET LOCAL: this transaction only).
# COPY is planned for total time, so PostgreSQL would hash or merge the records with their
# versions and sort them: the first row would wait for the whole sort, which spills to disk
# once the decompressed documents outgrow work_mem. Walking the records in id order through
# the indexes (nested loops) streams from the first row with flat memory. JIT compilation of
# the sixty field extractions costs more than it saves (measured: scripts/bench_export.py).
PG_EXPORT_SETTINGS = (
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_sort = off",
    "SET LOCAL jit = off",
)


def begin_snapshot(db_session: Session) -> None:
    """Start the export's transaction; on PostgreSQL as one REPEATABLE READ snapshot."""
    if db_session.get_bind().dialect.name != "postgresql":
        db_session.connection()
        return
    if not db_session.in_transaction():
        db_session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    for statement in PG_EXPORT_SETTINGS:
        db_session.execute(sa.text(statement))


_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(match: re.Match[str]) -> str:
    return _ESCAPES.get(match.group(1), match.group(1))


def _pg_rows(db_session: Session, statement: Any) -> Iterator[list[str]]:
    """Stream rows through COPY … TO STDOUT in PostgreSQL's text format.

    Every column is text and never NULL (see :func:`_text`), so a row is its line split on
    tabs, unless it holds a backslash: then some value had a tab, a line break or a backslash,
    which COPY escaped, and that row is unescaped field by field.
    """
    connection = db_session.connection()
    driver = connection.connection.driver_connection
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    sql = f"COPY ({compiled}) TO STDOUT"
    # Leaving the block early (the client went away) makes psycopg cancel the server's COPY
    # rather than read the rest of it.
    with driver.cursor() as cursor, cursor.copy(sql, compiled.params) as copy:
        # psycopg hands one COPY message, that is one row, at a time.
        for block in copy:
            line = str(block, "utf-8")[:-1]
            if "\\" in line:
                yield [_UNESCAPE.sub(_unescape, field) for field in line.split("\t")]
            else:
                yield line.split("\t")


def _sqlite_rows(db_session: Session, statement: Any) -> Iterator[list[str]]:
    result = db_session.execute(
        statement, execution_options={"stream_results": True, "yield_per": YIELD_PER}
    )
    try:
        for row in result:
            yield list(row)
    finally:
        result.close()


def iter_records(
    db_session: Session,
    plan: L.Plan,
    where: list[Any],
    stats: ExportStats,
    *,
    decryptor: Decryptor | None = None,
    corrections: Any | None = None,
) -> Iterator[list[Any]]:
    """Yield main raw rows (fields trimmed, corrections applied), then repeats' subtrees."""
    dialect = db_session.get_bind().dialect.name
    statement = records_query(plan, where, dialect)
    rows = (
        _pg_rows(db_session, statement)
        if dialect == "postgresql"
        else _sqlite_rows(db_session, statement)
    )
    first = L.META_WIDTH
    end = first + len(plan.main.leaves)
    lookups: Session | None = None
    try:
        for row in rows:
            stats.records_read += 1
            row[first:end] = map(str.strip, row[first:end])
            if row[L.M_ENCRYPTED] in ("true", "1"):
                document = None
                if decryptor is not None:
                    if lookups is None:
                        # A second session: the COPY holds the export's connection.
                        lookups = sessionmaker(db_session.get_bind())()
                    version = lookups.get(SubmissionVersion, int(row[L.M_VERSION_ID]))
                    document = decryptor(version) if version is not None else None
                if document is None:
                    row[L.M_STATUS] = L.NOT_DECRYPTED
                else:
                    row[first:end] = plan.main.extract(document)
                    row[end:] = [_at(document, parts) for parts, _c in plan.main.children]
            if corrections is not None:
                corrections.apply(plan.main, row, row[L.M_INSTANCE_ID])
            yield row
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        if lookups is not None:
            lookups.close()


def _at(node: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if type(node) is not dict:
            return None
        node = node.get(part)
    return node


def instances(subtree: Any) -> list[Any]:
    """Return a repeat's instances from its JSON text or parsed value."""
    if subtree is None or subtree == "" or subtree == "[]":
        return []
    if isinstance(subtree, str):
        try:
            subtree = json.loads(subtree)
        except ValueError:
            return []
    if isinstance(subtree, list):
        return subtree
    # A group that became a repeat in a later version: old records hold one instance.
    return [subtree] if isinstance(subtree, dict) else []


def repeat_rows(
    plan: L.Plan, row: list[Any], corrections: Any | None = None
) -> Iterator[tuple[L.TablePlan, list[Any]]]:
    """Yield (table, raw row) for every repeat row of a record, depth first."""
    main = plan.main
    if not main.children:
        return
    key = row[L.M_INSTANCE_ID]
    tail = row[L.META_WIDTH + len(main.leaves) :]
    for (parts, child), subtree in zip(main.children, tail, strict=False):
        yield from _repeat_rows(child, parts, instances(subtree), key, corrections)


def _repeat_rows(
    table: L.TablePlan,
    parts: tuple[str, ...],
    items: list[Any],
    parent_key: str,
    corrections: Any | None,
) -> Iterator[tuple[L.TablePlan, list[Any]]]:
    base = parent_key + "/" + "".join(p + "/" for p in parts[:-1]) + parts[-1]
    for position, item in enumerate(items, 1):
        key = f"{base}[{position}]"
        raw = [key, parent_key, *table.extract(item)]
        if corrections is not None:
            corrections.apply(table, raw, key)
        yield table, raw
        for child_parts, child in table.children:
            subtree = _at(item, child_parts)
            yield from _repeat_rows(child, child_parts, instances(subtree), key, corrections)


def attachments_query(where: list[Any], *, client_audit: bool, documents: bool = False) -> Any:
    """Return the query of the attachments present in the chosen records' current versions."""
    document = V.c.document if documents else sa.null()
    return (
        sa.select(S.c.instance_id, ATT.c.name, B.c.sha256, B.c.size, document)
        .select_from(
            S.join(V, sa.and_(V.c.submission_id == S.c.id, V.c.current == sa.true()))
            .join(ATT, ATT.c.submission_version_id == V.c.id)
            .join(B, B.c.id == ATT.c.blob_id)
        )
        .where(
            *where,
            V.c.encrypted == sa.false(),
            ATT.c.is_client_audit.is_(client_audit),
        )
        .order_by(S.c.id, ATT.c.id)
    )


def iter_attachments(
    db_session: Session, where: list[Any], *, client_audit: bool, documents: bool = False
) -> Iterator[tuple[str, str, str, int, Any]]:
    """Yield (instanceID, file name, sha256, size, document) of present attachments, streamed.

    The record's document comes only with ``documents`` (to tell personal files apart).
    """
    result = db_session.execute(
        attachments_query(where, client_audit=client_audit, documents=documents),
        execution_options={"stream_results": True, "yield_per": YIELD_PER},
    )
    try:
        for row in result:
            yield row[0], row[1], row[2], row[3], row[4]
    finally:
        result.close()


def document_row(plan: L.Plan, instance_id: str, document: dict[str, Any] | None) -> list[Any]:
    """Build a record's main raw row from its parsed document (metadata left empty)."""
    row: list[Any] = [""] * L.META_WIDTH
    row[L.M_INSTANCE_ID] = instance_id
    if document is None:
        row += [""] * len(plan.main.leaves) + [None] * len(plan.main.children)
        return row
    row += plan.main.extract(document)
    row += [_at(document, parts) for parts, _child in plan.main.children]
    return row
