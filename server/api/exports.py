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
last record is read; ``.csv`` and ``.geojson`` are gzipped as they stream when the client
accepts it (:mod:`server.compression`, like every text response).
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, stream_with_context

from server import bounds, db, errors, personal
from server.api.blueprint import bp
from server.api.render import iso, query_bool
from server.auth import access
from server.exports import cleaning, services
from server.exports.models import Correction
from server.exports.options import parse_options
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


def _keys(params: dict[str, str]) -> services.Keys:
    """Read the keys given to decrypt: ``<keyId>=<passphrase>`` and ``privateKey`` (PEM)."""
    private_key = params.get("privateKey")
    return services.Keys(
        passphrases={_key_id(k): v for k, v in params.items() if k.isascii() and k.isdigit() and v},
        private_key_pem=private_key.encode() if private_key else None,
    )


def _export(project_id: int, xml_form_id: str, fmt: str) -> Response:
    form = _form(project_id, xml_form_id)
    actor = access.require("submission.read", project_id=project_id, form_id=form.id)
    params = _parameters()
    may_see_personal = personal.may_see(form)
    options = parse_options(
        params, base=services.default_options(may_see_personal=may_see_personal)
    )
    exporter = services.Exporter(
        actor_id=actor.id,
        via="api",
        may_see_personal=may_see_personal,
        may_decrypt=access.can("submission.decrypt", project_id=project_id, form_id=form.id),
    )
    export = services.export(form, fmt, options, exporter, keys=_keys(params))
    headers = {
        "Content-Disposition": content_disposition(export.filename),
        "Cache-Control": "private, no-store",
        # nginx: pass bytes on as they come instead of buffering the whole export.
        "X-Accel-Buffering": "no",
    }
    return Response(
        stream_with_context(export.chunks),
        content_type=export.content_type,
        headers=headers,
        direct_passthrough=True,
    )


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
        may_touch_pii=personal.may_see(form),
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
