"""Exports for analysts: the one entry point the API, the console and the CLI call.

    layout = load_layout(db_session, form)
    export = prepare(db_session, form, "csv.zip", parse_options(request.args), secret_key=...)
    record_export(write_session, form, export, actor_id=...)   # its own short transaction
    return Response(export.chunks, ...)                        # streamed

:func:`prepare` checks everything that can be wrong (options, filters, fields, languages)
before anything is sent, so a bad request is a 400 and never a broken download; then
``export.chunks`` yields the file as it is read. Pass a read-only session
(:func:`server.db.read_session`, or ``Database.session(readonly=True)``): an export is a long
read and must not hold SQLite's write lock nor be a write transaction on PostgreSQL.

Formats: ``csv.zip`` (every table, media and client audit logs), ``csv`` (main table),
``xlsx`` (one sheet per table), ``geojson`` (places), ``media.zip`` (files only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server import errors
from server.audit.services import record
from server.exports import cleaning, csvout, geojson, media, source, xlsx
from server.exports import layout as L
from server.exports.context import ExportContext
from server.exports.options import FORMATS, ExportOptions
from server.forms import services as forms
from server.forms.models import Form
from server.personal import Disclosure, Pseudonymiser
from server.submissions import parsing
from server.submissions.models import SubmissionVersion

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    "csv.zip": "application/zip",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "geojson": "application/geo+json",
    "media.zip": "application/zip",
}
# Formats worth gzip on the wire; zips and workbooks are compressed already.
COMPRESSIBLE = {"csv", "geojson"}

DocumentDecryptor = Callable[[SubmissionVersion], "dict[str, Any] | None"]


@dataclass
class Export:
    """An export ready to stream."""

    form: Form
    format: str
    options: ExportOptions
    filename: str
    content_type: str
    chunks: Iterator[bytes]
    stats: source.ExportStats

    @property
    def compressible(self) -> bool:
        return self.format in COMPRESSIBLE


def load_layout(db_session: Session, form: Form) -> L.FormLayout:
    """Merge the field schemas of every published version of the form (oldest first)."""
    versions = list(reversed(forms.published_versions(db_session, form)))
    return L.merge(
        form.xml_form_id,
        [v.schema for v in versions if v.schema],
        {str(v.id): v.version for v in versions},
    )


def filename_for(form: Form, fmt: str) -> str:
    """Return the download's file name (Central's for csv.zip and csv)."""
    if fmt == "media.zip":
        return f"{form.xml_form_id}-media.zip"
    return f"{form.xml_form_id}.{fmt}"


def prepare(
    db_session: Session,
    form: Form,
    fmt: str,
    options: ExportOptions,
    *,
    secret_key: str,
    decryptor: DocumentDecryptor | None = None,
    tmp_dir: str | None = None,
) -> Export:
    """Check an export's request and return it ready to stream (raises 4xx problems).

    ``decryptor`` turns an encrypted record version into its document (None when it cannot);
    without it encrypted records are listed with Status "not decrypted" and empty fields.
    """
    if fmt not in FORMATS:
        raise errors.NotAcceptable(allowed=", ".join(FORMATS))
    source.begin_snapshot(db_session)
    try:
        ctx, writer = _plan(db_session, form, fmt, options, secret_key, decryptor, tmp_dir)
    except BaseException:
        # A refused export must not leave its read transaction open (and its locks held).
        db_session.rollback()
        raise
    stats = ctx.stats
    return Export(
        form=form,
        format=fmt,
        options=options,
        filename=filename_for(form, fmt),
        content_type=CONTENT_TYPES[fmt],
        chunks=_guarded(ctx, writer(ctx)),
        stats=stats,
    )


def _plan(
    db_session: Session,
    form: Form,
    fmt: str,
    options: ExportOptions,
    secret_key: str,
    decryptor: DocumentDecryptor | None,
    tmp_dir: str | None,
) -> tuple[ExportContext, Callable[[ExportContext], Iterator[bytes]]]:
    """Plan the tables, the records' conditions and the corrections; pick the writer."""
    layout = load_layout(db_session, form)
    pseudonymise = (
        Pseudonymiser(secret_key, form.project_id) if options.pii == "pseudonymise" else None
    )
    target: L.Target = "xlsx" if fmt == "xlsx" else "csv"
    plan = L.build_plan(layout, options, target, pseudonymise=pseudonymise)
    dialect = db_session.get_bind().dialect.name
    where = source.conditions(form, layout, options, dialect)
    corrections = cleaning.load_index(db_session, form, layout) if options.cleaned else None
    ctx = ExportContext(
        db_session=db_session,
        plan=plan,
        where=where,
        options=options,
        stats=source.ExportStats(),
        corrections=corrections,
        decryptor=decryptor,
        tmp_dir=tmp_dir,
        pseudonymise=pseudonymise,
        disclosure=Disclosure(
            layout.personal,
            clear=options.pii == "plain",
            pseudonymise=pseudonymise or (lambda _value: ""),  # omitted: nothing at all
        ),
    )
    writer = {
        "csv.zip": csvout.csv_zip_chunks,
        "csv": csvout.csv_chunks,
        "xlsx": xlsx.xlsx_chunks,
        "geojson": geojson.geojson_chunks,
        "media.zip": media.media_zip_chunks,
    }[fmt]
    return ctx, writer


def _guarded(ctx: ExportContext, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield the chunks; whatever happens, remove temporary files and end the read."""
    try:
        yield from chunks
    except GeneratorExit:
        log.info("export of %s stopped by the client", ctx.xml_form_id)
        raise
    except Exception:
        # The response has started: all that can be done is to stop it (the client sees a
        # truncated file) and say why in the log.
        log.exception("export of %s failed while streaming", ctx.xml_form_id)
        raise
    finally:
        chunks.close()  # type: ignore[attr-defined]
        ctx.close()
        ctx.db_session.rollback()


def record_export(
    db_session: Session, export: Export, *, actor_id: int | None, via: str = "api"
) -> None:
    """Write the export to the audit log and commit: pass a writable, short-lived session."""
    record(
        db_session,
        "submission.export",
        actor_id=actor_id,
        project_id=export.form.project_id,
        form_id=export.form.id,
        details={
            "xmlFormId": export.form.xml_form_id,
            "format": export.format,
            "options": export.options.describe(),
            "via": via,
        },
    )
    db_session.commit()


def document_decryptor(
    decrypt: Callable[[SubmissionVersion], Any], layout: L.FormLayout
) -> DocumentDecryptor:
    """Adapt :func:`server.crypto.decryptor.decryptor`'s function to give parsed documents.

    A record that does not decrypt (altered data) is listed "not decrypted", like one whose
    key was not given; the export goes on.
    """
    repeats = frozenset(r.path for r in layout.repeats)

    def decrypted_document(version: SubmissionVersion) -> dict[str, Any] | None:
        try:
            record_ = decrypt(version)
            if record_ is None:
                return None
            root = parsing.parse_xml(record_.xml)
        except errors.Problem as exc:
            log.warning("export: record %s not decrypted: %s", version.instance_id, exc.code)
            return None
        return parsing.build_document(root, repeats)

    return decrypted_document


def check_format(fmt: str) -> str:
    """Return a known format name, or raise 400."""
    if fmt not in FORMATS:
        raise errors.BadExportOption(field="format", reason=", ".join(FORMATS))
    return fmt
