"""Exports for analysts: :func:`export` is the one way in, for the API, the console and the CLI.

    exporter = Exporter(actor_id=..., via="api", may_see_personal=personal.may_see(form))
    options = parse_options(params, base=default_options(may_see_personal=...))
    found = export(form, "csv.zip", options, exporter, keys=Keys(passphrases={3: "..."}))
    return Response(found.chunks, ...)   # streamed; the audit event is already written

:func:`export` holds the rules every interface shares: personal data in clear only for a
reader who may see it, keys only from a reader who may decrypt, the sessions (a long
read-only one for the records, one for the keys, a short write for the audit event) and the
audit event itself, written before the first byte leaves. :func:`prepare` checks everything
else that can be wrong (options, filters, fields, languages) before anything is sent, so a bad
request is a 4xx and never a broken download; then ``export.chunks`` yields the file as it is
read. An export is a long read: it must not hold SQLite's write lock nor be a write
transaction on PostgreSQL.

Formats: ``csv.zip`` (every table, media and client audit logs), ``csv`` (main table),
``xlsx`` (one sheet per table), ``geojson`` (places), ``media.zip`` (files only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from server import db, errors
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

    def close(self) -> None:
        """Stop the stream, finished or not: its files are removed and its sessions closed."""
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class Exporter:
    """Who exports, through which interface, and what they may see and open."""

    actor_id: int | None  # None: the operator, from the command line
    via: str  # "api", "console" or "cli", as the audit event names it
    may_see_personal: bool  # server.personal.may_see(form); the operator may
    may_decrypt: bool = False  # whether keys given to decrypt the records are taken


@dataclass(frozen=True)
class Keys:
    """What opens an encrypted form's records for one export; kept nowhere."""

    passphrases: Mapping[int, str] = field(default_factory=dict)  # managed key id -> passphrase
    private_key_pem: bytes | None = None  # a self-managed form's private key

    def __bool__(self) -> bool:
        return bool(self.passphrases) or self.private_key_pem is not None


def default_options(*, may_see_personal: bool, console: bool = False) -> ExportOptions:
    """Return the options an export starts from: personal data in clear for who may see it.

    Downloads from the ``console`` start CSV files with a byte-order mark: Excel on Windows,
    current versions included, reads a CSV without one in the computer's legacy code page and
    shows ``Ã©`` for ``é``. The API and the CLI keep Central's bytes (no mark) unless asked.
    """
    return ExportOptions(pii="plain" if may_see_personal else "pseudonymise", bom=console)


def export(
    form: Form,
    fmt: str,
    options: ExportOptions,
    exporter: Exporter,
    *,
    keys: Keys | None = None,
) -> Export:
    """Check an export, write it to the audit log and return it ready to stream.

    Raises 403 for personal data in clear asked by a reader who may not see it, or keys given
    by one who may not decrypt; 400.12 when the keys do not open the form's records; the 4xx of
    :func:`prepare` for the rest. The records are read in the request's (or command's)
    read-only session (:func:`server.db.read_session`), the keys in a session of their own
    closed when the stream ends.
    """
    if options.pii == "plain" and not exporter.may_see_personal:
        raise errors.PersonalDataInClearRefused()
    if keys and not exporter.may_decrypt:
        raise errors.Forbidden()
    decryptor, lookups = _decryptor(form, keys) if keys else (None, None)
    try:
        prepared = prepare(
            db.read_session(),
            form,
            fmt,
            options,
            secret_key=current_app.config["SECRET_KEY"],
            decryptor=decryptor,
        )
        # The caller's session found the form and wrote nothing; on SQLite, a POST's holds the
        # write lock. End its transaction before the audit event's short write, and long
        # before the long read. (A commit, not a rollback: a rollback would expire the form,
        # and reading it again would begin a new transaction.)
        db.session().commit()
        with db.database().session() as writer:
            _audit(writer, prepared, exporter)
    except BaseException:
        if lookups is not None:
            lookups.close()
        raise
    if lookups is not None:
        prepared.chunks = _closing(prepared.chunks, lookups)
    return prepared


def _decryptor(form: Form, keys: Keys) -> tuple[DocumentDecryptor, Session]:
    """Return a document decryptor for the keys given, and the session it reads keys with."""
    from server.crypto.decryptor import decryptor

    # Its own read-only session: the export's holds a COPY on PostgreSQL, and on SQLite a
    # writable session would hold the write lock for the whole download.
    lookups = db.database().read_sessionmaker()
    try:
        decrypt = decryptor(
            lookups,
            form,
            passphrases=dict(keys.passphrases),
            private_key_pem=keys.private_key_pem,
        )
        layout = load_layout(lookups, form)
    except BaseException:
        lookups.close()
        raise
    return document_decryptor(decrypt, layout), lookups


def _closing(chunks: Iterator[bytes], db_session: Session) -> Iterator[bytes]:
    """Yield the chunks, then close ``db_session``."""
    try:
        yield from chunks
    finally:
        db_session.close()


def load_layout(db_session: Session, form: Form) -> L.FormLayout:
    """Merge the field schemas of every published version of the form (oldest first)."""
    versions = list(reversed(forms.published_versions(db_session, form)))
    return L.merge(
        form.xml_form_id,
        [v.form_schema for v in versions if v.schema],
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

    Neither audited nor checked for the reader's rights: :func:`export` is the way in; tests
    and benchmarks call this with a read-only session of their own. ``decryptor`` turns an
    encrypted record version into its document (None when it cannot); without it encrypted
    records are listed with Status "not decrypted" and empty fields.
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


def _audit(db_session: Session, export: Export, exporter: Exporter) -> None:
    """Write the export to the audit log and commit: pass a writable, short-lived session."""
    record(
        db_session,
        "submission.export",
        actor_id=exporter.actor_id,
        project_id=export.form.project_id,
        form_id=export.form.id,
        details={
            "xmlFormId": export.form.xml_form_id,
            "format": export.format,
            "options": export.options.describe(),
            "via": exporter.via,
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
