"""Exports and the cleaning log, at ODK Central's URLs (and ours for the other formats).

GET, POST   /v1/projects/<p>/forms/<f>/submissions.csv.zip   every table (+ media, audit logs)
GET, POST   /v1/projects/<p>/forms/<f>/submissions.csv       the main table
GET, POST   /v1/projects/<p>/forms/<f>/submissions.xlsx      one sheet per table
GET, POST   /v1/projects/<p>/forms/<f>/submissions.geojson   places (points, traces, shapes)
GET, POST   /v1/projects/<p>/forms/<f>/submissions.media.zip media files
POST        /v1/projects/<p>/forms/<f>/corrections           upload a cleaning log (CSV body)
GET         /v1/projects/<p>/forms/<f>/corrections           list (?revoked=true: all)
DELETE      /v1/projects/<p>/forms/<f>/corrections/<id>      revoke one

Options are query parameters (:mod:`server.exports.options`); POST takes them in a form or
JSON body too, which is how passphrases of managed keys travel (``<keyId>=<passphrase>``, as
Central) without landing in access logs. Responses stream: the first bytes leave before the
last record is read; ``.csv`` and ``.geojson`` are gzipped when the client accepts it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request, stream_with_context
from flask_babel import gettext

from server import bounds, db, errors
from server.api.blueprint import bp
from server.api.render import iso, query_bool
from server.auth import access
from server.exports import cleaning, services
from server.exports.models import Correction
from server.exports.options import ExportOptions, parse_options
from server.exports.streams import gzip_chunks
from server.forms.models import Form
from server.forms.services import find_form
from server.storage.base import content_disposition


def _form(project_id: int, xml_form_id: str) -> Form:
    form = find_form(db.session(), project_id, xml_form_id)
    if form is None:
        raise errors.NotFound()
    return form


def _parameters() -> dict[str, str]:
    """Return the query's parameters, and a POST body's (form or JSON) over them."""
    params: dict[str, str] = dict(request.args.items())
    if request.method == "POST":
        params.update(request.form.items())
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params.update({str(k): str(v) for k, v in body.items() if v is not None})
    return params


def _key_id(name: str) -> int:
    """Read a parameter named by a key id (Central's ``{keyId}=passphrase``)."""
    try:
        return bounds.whole_number(name)
    except bounds.OutOfBounds as exc:
        raise errors.UnexpectedValue(field=name[:24], reason=exc.reason) from None


def _decryptor(form: Form, params: dict[str, str]) -> tuple[Any, Any]:
    """Return a document decryptor for the keys given (and its session), or (None, None)."""
    passphrases = {_key_id(k): v for k, v in params.items() if k.isascii() and k.isdigit() and v}
    private_key = params.get("privateKey")
    if not passphrases and not private_key:
        return None, None
    access.require("submission.decrypt", project_id=form.project_id, form_id=form.id)
    from server.crypto.decryptor import decryptor

    # Its own read-only session: the export's holds a COPY on PostgreSQL, and on SQLite a
    # writable session would hold the write lock for the whole download.
    lookups = db.database().read_sessionmaker()
    try:
        decrypt = decryptor(
            lookups,
            form,
            passphrases=passphrases,
            private_key_pem=private_key.encode() if private_key else None,
        )
        layout = services.load_layout(lookups, form)
    except BaseException:
        lookups.close()
        raise
    return services.document_decryptor(decrypt, layout), lookups


def _export(project_id: int, xml_form_id: str, fmt: str) -> Response:
    form = _form(project_id, xml_form_id)
    actor = access.require("submission.read", project_id=project_id, form_id=form.id)
    params = _parameters()
    may_see_pii = access.can("submission.pii", project_id=project_id, form_id=form.id)
    options = parse_options(
        params, base=ExportOptions(pii="plain" if may_see_pii else "pseudonymise")
    )
    if options.pii == "plain" and not may_see_pii:
        raise errors.Forbidden(
            gettext("You may not export personal data in clear; ask for pii=pseudonymise.")
        )
    decryptor, lookups = _decryptor(form, params)
    try:
        export = services.prepare(
            db.read_session(),
            form,
            fmt,
            options,
            secret_key=current_app.config["SECRET_KEY"],
            decryptor=decryptor,
        )
        # The request's own session may hold SQLite's write lock (POST): let it go before the
        # audit log's short write, and long before the long read. (A commit, not a rollback:
        # nothing was written, and a rollback would expire the form loaded through it.)
        db.session().commit()
        with db.database().session() as writer:
            services.record_export(writer, export, actor_id=actor.id)
    except BaseException:
        if lookups is not None:
            lookups.close()
        raise
    chunks = export.chunks
    if lookups is not None:
        chunks = _closing(chunks, lookups)
    headers = {
        "Content-Disposition": content_disposition(export.filename),
        "Cache-Control": "private, no-store",
        # nginx: pass bytes on as they come instead of buffering the whole export.
        "X-Accel-Buffering": "no",
        "Vary": "Accept-Encoding",
    }
    if export.compressible and request.accept_encodings["gzip"]:
        chunks = gzip_chunks(chunks)
        headers["Content-Encoding"] = "gzip"
    return Response(
        stream_with_context(chunks),
        content_type=export.content_type,
        headers=headers,
        direct_passthrough=True,
    )


def _closing(chunks, lookups):  # type: ignore[no-untyped-def]
    try:
        yield from chunks
    finally:
        lookups.close()


@bp.route(
    "/projects/<int:project_id>/forms/<xml_form_id>/submissions.csv.zip", methods=["GET", "POST"]
)
def export_csv_zip(project_id: int, xml_form_id: str) -> Response:
    """Every table as CSV in a zip, with media and client audit logs unless attachments=false."""
    return _export(project_id, xml_form_id, "csv.zip")


@bp.route("/projects/<int:project_id>/forms/<xml_form_id>/submissions.csv", methods=["GET", "POST"])
def export_csv(project_id: int, xml_form_id: str) -> Response:
    """The main table as CSV."""
    return _export(project_id, xml_form_id, "csv")


@bp.route(
    "/projects/<int:project_id>/forms/<xml_form_id>/submissions.xlsx", methods=["GET", "POST"]
)
def export_xlsx(project_id: int, xml_form_id: str) -> Response:
    """Every table as a sheet of an Excel workbook."""
    return _export(project_id, xml_form_id, "xlsx")


@bp.route(
    "/projects/<int:project_id>/forms/<xml_form_id>/submissions.geojson", methods=["GET", "POST"]
)
def export_geojson(project_id: int, xml_form_id: str) -> Response:
    """Every geopoint, geotrace and geoshape answer as GeoJSON."""
    return _export(project_id, xml_form_id, "geojson")


@bp.route(
    "/projects/<int:project_id>/forms/<xml_form_id>/submissions.media.zip", methods=["GET", "POST"]
)
def export_media_zip(project_id: int, xml_form_id: str) -> Response:
    """The media files of the chosen records in a zip."""
    return _export(project_id, xml_form_id, "media.zip")


# ---- the cleaning log ------------------------------------------------------------------------


def correction_json(correction: Correction, layout: Any) -> dict[str, Any]:
    """Render a stored correction."""
    return {
        "id": correction.id,
        "KEY": correction.key,
        "column": cleaning.header_of(layout, correction.column),
        "path": correction.column,
        "oldValue": correction.old_value or "",
        "newValue": correction.new_value or "",
        "reason": correction.reason,
        "batch": correction.batch,
        "actorId": correction.actor_id,
        "createdAt": iso(correction.created_at),
        "revokedAt": iso(correction.revoked_at),
    }


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/corrections")
def upload_corrections(project_id: int, xml_form_id: str) -> Response:
    """Check a cleaning log line by line; store it when valid (or its valid lines, partial)."""
    form = _form(project_id, xml_form_id)
    actor = access.require("export.clean", project_id=project_id, form_id=form.id)
    data = request.get_data(cache=False)
    if "file" in request.files:
        data = request.files["file"].read()
    db_session = db.session()
    result = cleaning.submit(
        db_session,
        form,
        services.load_layout(db_session, form),
        data,
        actor_id=actor.id,
        partial=query_bool("partial", False),
        may_touch_pii=access.can("submission.pii", project_id=project_id, form_id=form.id),
    )
    return jsonify(result.to_json())


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/corrections")
def list_corrections(project_id: int, xml_form_id: str) -> Response:
    """List the form's corrections, oldest first (revoked ones with ?revoked=true)."""
    form = _form(project_id, xml_form_id)
    access.require("submission.read", project_id=project_id, form_id=form.id)
    db_session = db.session()
    layout = services.load_layout(db_session, form)
    rows = cleaning.list_corrections(db_session, form, include_revoked=query_bool("revoked", False))
    return jsonify([correction_json(c, layout) for c in rows])


@bp.delete("/projects/<int:project_id>/forms/<xml_form_id>/corrections/<int:correction_id>")
def revoke_correction(project_id: int, xml_form_id: str, correction_id: int) -> Response:
    """Revoke a correction: kept in the log, no longer applied."""
    form = _form(project_id, xml_form_id)
    actor = access.require("export.clean", project_id=project_id, form_id=form.id)
    db_session = db.session()
    correction = cleaning.revoke(db_session, form, correction_id, actor_id=actor.id)
    return jsonify(correction_json(correction, services.load_layout(db_session, form)))
