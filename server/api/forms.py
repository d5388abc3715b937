"""Forms, drafts, versions and form media, in ODK Central's shapes.

POST            /v1/projects/<p>/forms                      upload (?publish, ?ignoreWarnings)
GET             /v1/projects/<p>/forms                      list
GET, PATCH      /v1/projects/<p>/forms/<f>                  one form; PATCH {state}
GET             /v1/projects/<p>/forms/<f>.xml              the XForm, exact stored bytes
GET             /v1/projects/<p>/forms/<f>.xlsx | .xls      the source spreadsheet
GET             /v1/projects/<p>/forms/<f>/versions         published versions, newest first
GET             /v1/projects/<p>/forms/<f>/versions/<v>.xml one published version's XForm
GET             /v1/projects/<p>/forms/<f>/fields           the fields (also draft/, versions/<v>/)
GET             /v1/projects/<p>/forms/<f>/attachments      the published version's media
GET, POST, DEL  /v1/projects/<p>/forms/<f>/draft            the draft (POST: new draft)
POST            /v1/projects/<p>/forms/<f>/draft/publish    publish (?version=)
GET             /v1/projects/<p>/forms/<f>/draft/attachments
POST, DELETE    /v1/projects/<p>/forms/<f>/draft/attachments/<name>

The draft's XForm, manifest and media downloads for tablets live with the OpenRosa routes
(:mod:`server.openrosa.views`). Views are thin: access, one service call, JSON.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from flask import Response, jsonify, request

from server import db, errors
from server.api.blueprint import bp
from server.api.render import iso, json_body, query_bool, success
from server.auth import access
from server.forms import services
from server.forms.models import Form, FormAttachment, FormVersion
from server.odata.format import sanitize
from server.openrosa import protocol
from server.projects import services as projects
from server.storage.models import Blob

XML_TYPE = "application/xml"
_FILENAME = re.compile(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", re.IGNORECASE)


# ---- rendering -------------------------------------------------------------------------------


def form_json(form: Form, version: FormVersion | None, draft: FormVersion | None = None) -> dict:
    """Render a form as Central does, from the version shown (published, else the draft)."""
    return {
        "projectId": form.project_id,
        "xmlFormId": form.xml_form_id,
        "state": form.state,
        "enketoId": version.enketo_id if version else None,
        "enketoOnceId": None,
        "name": version.title if version else None,
        "version": version.version if version else None,
        "keyId": form.key_id,
        "hash": version.hash if version else None,
        # Central's ``sha`` is the SHA-1 of the XForm; cheap enough to compute when shown.
        "sha": hashlib.sha1(version.xml.encode("utf-8"), usedforsecurity=False).hexdigest()
        if version
        else None,
        "sha256": version.sha256 if version else None,
        "draftToken": draft.draft_token if draft else None,
        "publishedAt": iso(version.published_at) if version else None,
        "createdAt": iso(form.created_at),
        "updatedAt": iso(form.updated_at),
    }


def _form_json(form: Form, may_change: bool | None = None) -> dict:
    db_session = db.session()
    current = services.current_version(db_session, form)
    draft = services.draft_version(db_session, form)
    if may_change is None:
        may_change = _may_change(form)
    # The draftToken opens the draft to whoever holds it (/v1/test/<token>/...): only those
    # who may change the form are shown it, as the draft's own routes require.
    return form_json(form, current or draft, draft if may_change else None)


# Central's names for the types of groups and repeats, and for selects (stored as strings).
_FIELD_TYPES = {"group": "structure", "select_one": "string", "select_multiple": "string"}


def fields_json(version: FormVersion, *, odata: bool = False) -> list[dict]:
    """The version's fields as Central lists them (``/fields``, which ruODK reads).

    Paths are relative to the root element; with ``odata`` every name is made an OData
    identifier, as the OData tables name their properties.
    """
    schema = version.form_schema
    root = "/" + schema.root
    listed = []
    for field in schema.fields:
        path = field.path.removeprefix(root)
        name = field.name
        if odata:
            path = "/".join(sanitize(part) if part else part for part in path.split("/"))
            name = sanitize(name)
        listed.append(
            {
                "path": path,
                "name": name,
                "type": _FIELD_TYPES.get(field.type, field.type),
                "binary": True if field.type == "binary" else None,
                "selectMultiple": True if field.type == "select_multiple" else None,
            }
        )
    return listed


def attachment_json(attachment: FormAttachment, blob: Blob | None) -> dict:
    """Render a form attachment as Central does."""
    return {
        "name": attachment.name,
        "type": attachment.type,
        "hash": blob.md5 if blob is not None else None,
        "exists": blob is not None or attachment.dataset_id is not None,
        "blobExists": blob is not None,
        "datasetExists": attachment.dataset_id is not None,
        "updatedAt": iso(attachment.updated_at),
    }


# ---- lookups ---------------------------------------------------------------------------------


def _form(project_id: int, xml_form_id: str) -> Form:
    return services.get_form(db.session(), project_id, xml_form_id)


def _readable(project_id: int, xml_form_id: str) -> Form:
    """Return a form the actor may read; a device gets 404 for forms not assigned to it.

    A form never published is only a draft: as in Central, it exists only for those who may
    change it (404 for everyone else).
    """
    form = _form(project_id, xml_form_id)
    access.require_on_form("form.read", form)
    if form.current_version_id is None and not _may_change(form):
        raise errors.NotFound()
    return form


def _may_change(form: Form) -> bool:
    return access.can("form.update", project_id=form.project_id, form_id=form.id)


def _published(project_id: int, xml_form_id: str, version: str) -> FormVersion:
    """Return one published version of a readable form (``___`` names the empty version)."""
    form = _readable(project_id, xml_form_id)
    found = services.version_for_submission(
        db.session(), form, "" if version == "___" else version, draft=False
    )
    if found is None:
        raise errors.NotFound()
    return found


def _draft(form: Form) -> FormVersion:
    draft = services.draft_version(db.session(), form)
    if draft is None:
        raise errors.NotFound()
    return draft


def _upload() -> services.Upload:
    """Read a form upload's body, its declared type and file name (if the sender gave one)."""
    data = request.get_data(cache=False)
    filename = None
    disposition = request.headers.get("Content-Disposition")
    if disposition and (match := _FILENAME.search(disposition)):
        filename = unquote(match.group(1)).replace("\\", "/").rsplit("/", 1)[-1] or None
    return services.Upload(data=data, filename=filename, content_type=request.mimetype or None)


def _fallback() -> str | None:
    # Central decodes this header (pyodk sends the file name, percent-encoded).
    raw = request.headers.get("X-XlsForm-FormId-Fallback")
    return unquote(raw).strip() or None if raw else None


def _xml_response(version: FormVersion) -> Response:
    response = Response(services.xml_bytes(version), content_type=XML_TYPE)
    response.headers["ETag"] = f'"{version.hash}"'
    return protocol.add_headers(response)


# ---- forms -----------------------------------------------------------------------------------


@bp.post("/projects/<int:project_id>/forms")
def create_form(project_id: int):
    """Upload an XLSForm or XForm: a new form with a draft, or published with ``?publish``."""
    projects.get(db.session(), project_id)
    actor = access.require("form.create", project_id=project_id)
    upload = _upload()
    if not upload.data:
        raise errors.MissingParameter(field="body (the XLSForm or XForm file)")
    form = services.create_form(
        db.session(),
        project_id,
        upload,
        actor_id=actor.id,
        publish=query_bool("publish"),
        # As Central: a form is published with media still missing (``exists: false`` in
        # its attachments; tablets are not offered them until they are attached).
        allow_missing_media=True,
        ignore_warnings=query_bool("ignoreWarnings"),
        form_id_fallback=_fallback(),
    )
    return jsonify(_form_json(form))


@bp.get("/projects/<int:project_id>/forms")
def list_forms(project_id: int):
    """List the project's forms."""
    projects.get(db.session(), project_id)
    access.require("form.list", project_id=project_id)
    forms = [(f, _may_change(f)) for f in services.list_forms(db.session(), project_id)]
    # Forms never published are drafts: listed only for those who may change them.
    return jsonify(
        [_form_json(f, may) for f, may in forms if f.current_version_id is not None or may]
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>")
def get_form(project_id: int, xml_form_id: str):
    """Return one form (its published version, else its draft)."""
    return jsonify(_form_json(_readable(project_id, xml_form_id)))


@bp.patch("/projects/<int:project_id>/forms/<xml_form_id>")
def update_form(project_id: int, xml_form_id: str):
    """Change a form's state: ``open``, ``closing`` or ``closed``."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    state = json_body().get("state")
    if not isinstance(state, str):
        raise errors.MissingParameter(field="state")
    services.set_state(db.session(), form, state, actor_id=actor.id)
    return jsonify(_form_json(form))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>.xml")
def form_xml(project_id: int, xml_form_id: str):
    """Serve the published XForm, byte for byte what its hash was computed on."""
    version = services.published_version(db.session(), _readable(project_id, xml_form_id))
    return _xml_response(version)


def _send_source(version: FormVersion | None) -> Response:
    from server.storage import downloads

    source = services.source_file(db.session(), version) if version is not None else None
    if source is None:
        raise errors.NotFound()
    blob, filename, content_type = source
    return downloads.send_blob(blob, filename, content_type)


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>.xlsx")
@bp.get("/projects/<int:project_id>/forms/<xml_form_id>.xls")
def form_source(project_id: int, xml_form_id: str):
    """Serve the spreadsheet the published version was compiled from (404 for XML uploads)."""
    form = _readable(project_id, xml_form_id)
    return _send_source(services.current_version(db.session(), form))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions")
def list_versions(project_id: int, xml_form_id: str):
    """List every published version, newest first."""
    form = _readable(project_id, xml_form_id)
    versions = services.published_versions(db.session(), form)
    return jsonify([form_json(form, version) for version in versions])


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<version>.xml")
def version_xml(project_id: int, xml_form_id: str, version: str):
    """Serve one published version's XForm (``___`` names the empty version, as in Central)."""
    return _xml_response(_published(project_id, xml_form_id, version))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/fields")
def list_fields(project_id: int, xml_form_id: str):
    """List the published version's fields (``?odata=true``: names as in OData)."""
    version = services.published_version(db.session(), _readable(project_id, xml_form_id))
    return jsonify(fields_json(version, odata=query_bool("odata")))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<version>/fields")
def list_version_fields(project_id: int, xml_form_id: str, version: str):
    """List one published version's fields."""
    found = _published(project_id, xml_form_id, version)
    return jsonify(fields_json(found, odata=query_bool("odata")))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/draft/fields")
def list_draft_fields(project_id: int, xml_form_id: str):
    """List the draft's fields."""
    form = _form(project_id, xml_form_id)
    access.require("form.update", project_id=project_id, form_id=form.id)
    return jsonify(fields_json(_draft(form), odata=query_bool("odata")))


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/attachments")
def list_attachments(project_id: int, xml_form_id: str):
    """List the published version's media files."""
    version = services.published_version(db.session(), _readable(project_id, xml_form_id))
    rows = services.attachments(db.session(), version)
    return jsonify([attachment_json(a, blob) for a, blob in rows])


# ---- drafts ----------------------------------------------------------------------------------


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft")
def create_draft(project_id: int, xml_form_id: str):
    """Set a new draft from an upload, or copy the published version when there is no body."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    upload = _upload()
    services.set_draft(
        db.session(),
        form,
        upload if upload.data else None,
        actor_id=actor.id,
        ignore_warnings=query_bool("ignoreWarnings"),
        form_id_fallback=_fallback(),
    )
    return jsonify(success())


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/draft")
def get_draft(project_id: int, xml_form_id: str):
    """Return the draft as a form (with its draftToken for testing on a tablet)."""
    form = _form(project_id, xml_form_id)
    access.require("form.update", project_id=project_id, form_id=form.id)
    draft = _draft(form)
    return jsonify(form_json(form, draft, draft))


@bp.delete("/projects/<int:project_id>/forms/<xml_form_id>/draft")
def delete_draft(project_id: int, xml_form_id: str):
    """Abandon the draft (a form never published is removed with it)."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    services.delete_draft(db.session(), form, actor_id=actor.id)
    return jsonify(success())


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft/publish")
def publish_draft(project_id: int, xml_form_id: str):
    """Publish the draft, optionally setting a new version (``?version=``)."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    version = request.args.get("version")
    services.publish_draft(
        db.session(),
        form,
        version=version if version else None,
        actor_id=actor.id,
        allow_missing_media=True,  # as Central (see create_form)
    )
    return jsonify(success())


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/draft/attachments")
def list_draft_attachments(project_id: int, xml_form_id: str):
    """List the media files the draft references, present or not."""
    form = _form(project_id, xml_form_id)
    access.require("form.update", project_id=project_id, form_id=form.id)
    rows = services.attachments(db.session(), _draft(form))
    return jsonify([attachment_json(a, blob) for a, blob in rows])


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft/attachments/<path:name>")
def upload_draft_attachment(project_id: int, xml_form_id: str, name: str):
    """Store one of the draft's media files (the body is the file)."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    attachment = services.attach(
        db.session(),
        form,
        name,
        request.stream,
        content_type=request.mimetype or None,
        actor_id=actor.id,
    )
    blob = db.session().get(Blob, attachment.blob_id)
    # pyodk reads ``success`` (before Central v2025.1) or the attachment's ``exists`` (after).
    return jsonify({**attachment_json(attachment, blob), **success()})


@bp.delete("/projects/<int:project_id>/forms/<xml_form_id>/draft/attachments/<path:name>")
def clear_draft_attachment(project_id: int, xml_form_id: str, name: str):
    """Remove one of the draft's media files."""
    form = _form(project_id, xml_form_id)
    actor = access.require("form.update", project_id=project_id, form_id=form.id)
    services.clear_attachment(db.session(), form, name, actor_id=actor.id)
    return jsonify(success())
