"""The routes ODK Collect calls, in ODK Central's URL shapes (openrosa.md §0).

    GET       /v1/projects/<p>/formList                     forms this device may fill
    GET       /v1/projects/<p>/forms/<f>/manifest           a form's media, with md5 hashes
    GET       /v1/projects/<p>/forms/<f>/attachments/<n>    one media file (or entity list)
    GET       /v1/projects/<p>/datasets/<name>/integrity    which offline-created entities are gone
    HEAD|POST /v1/projects/<p>/submission                   preflight (204), upload (201)

The same routes serve ``/v1/key/<token>/projects/...`` (app users: the token is moved out of
the path by :mod:`server.auth.prefix`) and ``/v1/test/<token>/projects/<p>/forms/<f>/draft/...``
(a coordinator trying a draft on a tablet). The XForm itself is served by the API route
``/v1/projects/<p>/forms/<f>.xml`` (and ``/draft.xml``), which answers the same exact bytes.
Views stay thin: authorisation, one service call, a document.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request, stream_with_context
from flask_babel import gettext

from server import db, errors, metrics
from server.auth import access
from server.auth.prefix import draft_token
from server.entities import listfile
from server.entities import services as entity_lists
from server.forms import services as forms
from server.forms.models import Form, FormVersion
from server.openrosa import documents, protocol
from server.openrosa.protocol import external_url, quoted
from server.storage import downloads
from server.storage.base import content_disposition
from server.submissions import intake, parsing

bp = Blueprint("openrosa", __name__)
errors.set_renderer("openrosa", protocol.render_problem)

XML_PART = "xml_submission_file"


# ---- form list and manifests -----------------------------------------------------------------


@bp.get("/v1/projects/<int:project_id>/formList", strict_slashes=False)
def form_list(project_id: int) -> Response:
    """List the open forms this actor may fill (closing and closed forms are hidden)."""
    actor = access.require_actor()
    # A device lists only the forms it is assigned to; anyone else needs form.list.
    if not actor.is_app_user and not access.can("form.list", project_id=project_id):
        raise errors.Forbidden()
    db_session = db.session()
    rows = forms.open_forms(
        db_session,
        project_id,
        xml_form_id=request.args.get("formID") or None,
        assigned_to=actor.id if actor.is_app_user else None,
    )
    with_media = forms.versions_with_media(db_session, [version.id for _, version in rows])
    entries = [
        documents.FormListEntry(
            form_id=form.xml_form_id,
            name=version.title or form.xml_form_id,
            version=version.version,
            md5=version.hash,
            download_url=external_url(
                f"/projects/{project_id}/forms/{quoted(form.xml_form_id)}.xml"
            ),
            manifest_url=external_url(
                f"/projects/{project_id}/forms/{quoted(form.xml_form_id)}/manifest"
            )
            if version.id in with_media
            else None,
        )
        for form, version in rows
    ]
    verbose = request.args.get("verbose", "").lower() == "true"
    return protocol.xml_response(documents.form_list(entries, verbose=verbose), no_cache=True)


def _readable_form(project_id: int, xml_form_id: str) -> Form:
    """Return the form if the actor may read it; 404 otherwise (no hint that it exists)."""
    form = forms.get_form(db.session(), project_id, xml_form_id)
    access.require_on_form("form.read", form)
    return form


def _manifest(project_id: int, form: Form, version: FormVersion, *, draft: bool) -> Response:
    base = f"/projects/{project_id}/forms/{quoted(form.xml_form_id)}"
    if draft:
        base += "/draft"
    entries = [
        documents.MediaEntry(
            filename=file.attachment.name,
            md5=file.md5,
            download_url=external_url(f"{base}/attachments/{quoted(file.attachment.name)}"),
            type=file.type,
            integrity_url=external_url(
                f"/projects/{project_id}/datasets/{quoted(file.dataset.name)}/integrity"
            )
            if file.dataset is not None
            else None,
        )
        for file in forms.manifest_files(db.session(), version)
    ]
    return protocol.xml_response(documents.manifest(entries), no_cache=True)


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/manifest", strict_slashes=False)
def manifest(project_id: int, xml_form_id: str) -> Response:
    """List the media of a form's published version with their md5."""
    form = _readable_form(project_id, xml_form_id)
    return _manifest(project_id, form, forms.published_version(db.session(), form), draft=False)


def _send_form_attachment(version: FormVersion, name: str) -> Response:
    found = forms.find_attachment(db.session(), version, name)
    dataset = forms.linked_list(db.session(), found[0]) if found is not None else None
    if dataset is not None:
        # An entity list, written from the current entities as it is sent.
        return Response(
            stream_with_context(listfile.download(db.session(), dataset)),
            content_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": content_disposition(found[0].name),
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
    if found is None or found[1] is None:
        raise errors.NotFound()
    attachment, blob = found
    return downloads.send_blob(
        blob, attachment.name, attachment.content_type or "application/octet-stream"
    )


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/attachments/<path:name>")
def form_attachment(project_id: int, xml_form_id: str, name: str) -> Response:
    """Serve one media file of a form's published version."""
    form = _readable_form(project_id, xml_form_id)
    return _send_form_attachment(forms.published_version(db.session(), form), name)


@bp.get("/v1/projects/<int:project_id>/datasets/<name>/integrity")
def entity_integrity(project_id: int, name: str) -> Response:
    """Tell Collect which of the entities it names (``?id=a,b``) are deleted (Central's check).

    Who may list the project's entities may ask, and so may whoever may read a form that
    reads the list (a tablet); anyone else is refused (403), as in Central.
    """
    access.require_actor()
    db_session = db.session()
    dataset = entity_lists.get_dataset(db_session, project_id, name)
    if not access.can("entity.list", project_id=project_id) and not any(
        access.can("form.read", project_id=project_id, form_id=form.id)
        for form in forms.forms_reading_list(db_session, dataset)
    ):
        raise errors.Forbidden()
    ids = [i for value in request.args.getlist("id") for i in value.split(",") if i.strip()]
    states = listfile.states(db_session, dataset, ids)
    return protocol.xml_response(documents.entity_states(states), no_cache=True)


# ---- submissions -----------------------------------------------------------------------------


@bp.route("/v1/projects/<int:project_id>/submission", methods=["HEAD", "GET"], strict_slashes=False)
def submission_preflight(project_id: int) -> Response:
    """Answer Collect's HEAD with 204 (never 200) and the upload limit; 401 when anonymous."""
    access.require_actor()
    return protocol.add_headers(Response(status=204))


@bp.post("/v1/projects/<int:project_id>/submission", strict_slashes=False)
def submission(project_id: int) -> Response:
    """Receive a record, or part of one, from ODK Collect."""
    actor = access.require_actor()

    def authorize(form: intake.FormRef) -> None:
        if not access.can("submission.create", project_id=project_id, form_id=form.id):
            raise errors.FormNotFound(form_id=form.xml_form_id)

    def authorize_edit(form: intake.FormRef) -> None:
        # A public link fills new records only: its holder edits nothing, even what it sent.
        if actor.type == "public_link":
            raise errors.Forbidden()

    receipt = _receive(
        project_id, actor.id, authorize=authorize, authorize_edit=authorize_edit, draft=False
    )
    return _answer(receipt)


def _read_upload() -> tuple[bytes, list[intake.IncomingFile]]:
    """Read the multipart body: the record's XML and its file parts."""
    xml_part = request.files.get(XML_PART)
    if xml_part is not None:
        xml = xml_part.stream.read(parsing.MAX_XML_BYTES + 1)
    elif XML_PART in request.form:
        xml = request.form[XML_PART].encode("utf-8")
    else:
        raise errors.MissingMultipartField(field=XML_PART)
    files = [
        intake.IncomingFile(
            name=part.filename or key, stream=part.stream, content_type=part.mimetype or None
        )
        for key, part in request.files.items(multi=True)
        if key != XML_PART
    ]
    return xml, files


def _receive(
    project_id: int, actor_id: int | None, *, authorize, draft: bool, authorize_edit=None
) -> intake.Receipt:
    try:
        xml, files = _read_upload()
        receipt = intake.receive(
            db.session(),
            project_id=project_id,
            xml=xml,
            files=files,
            actor_id=actor_id,
            device_id=request.args.get("deviceID"),
            user_agent=request.user_agent.string,
            draft=draft,
            authorize=authorize,
            authorize_edit=authorize_edit,
        )
    except Exception as exc:
        metrics.record_rejected(exc)  # ops metrics: rejections by problem code
        raise
    metrics.record_received(receipt)  # ops metrics: records by outcome
    return receipt


def _answer(receipt: intake.Receipt) -> Response:
    """Tell the enumerator what happened, in their language (201 in every success case)."""
    if not receipt.complete:
        text = gettext(
            "Part of the record received (%(present)s of %(expected)s files); the rest will "
            "follow.",
            present=receipt.attachments_present,
            expected=receipt.attachments_expected,
        )
    elif receipt.outcome == "duplicate" and receipt.attachments_received:
        # The last part of a split upload (or a resend that brought what was missing).
        text = gettext("Record complete: all its files have been received.")
    elif receipt.outcome == "duplicate":
        text = gettext("This record had already been received. Nothing was lost.")
    elif receipt.outcome == "edited":
        text = gettext("Edited record received.")
    elif receipt.instance_name:
        text = gettext("Record received: %(name)s.", name=receipt.instance_name)
    else:
        text = gettext("Record received.")
    return protocol.message(text, 201)


# ---- drafts: a coordinator tries a form on a tablet before publishing ------------------------


def _draft(project_id: int, xml_form_id: str) -> tuple[Form, FormVersion]:
    """Return a form's draft if the request may use it (draft token, or a manager)."""
    form = forms.find_form(db.session(), project_id, xml_form_id)
    version = forms.draft_version(db.session(), form) if form is not None else None
    token = draft_token()
    if token is not None:
        if (
            version is None
            or not version.draft_token
            or not hmac.compare_digest(version.draft_token, token)
        ):
            raise errors.DraftNotFound()
        return form, version
    if form is None:
        raise errors.NotFound()
    access.require("form.update", project_id=project_id, form_id=form.id)
    if version is None:
        raise errors.DraftNotFound()
    return form, version


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/draft/formList", strict_slashes=False)
def draft_form_list(project_id: int, xml_form_id: str) -> Response:
    """List the one draft form (Collect is pointed at ``.../forms/<f>/draft``)."""
    form, version = _draft(project_id, xml_form_id)
    base = f"/projects/{project_id}/forms/{quoted(form.xml_form_id)}"
    has_media = bool(forms.versions_with_media(db.session(), [version.id]))
    entry = documents.FormListEntry(
        form_id=form.xml_form_id,
        name=version.title or form.xml_form_id,
        version=version.version,
        md5=version.hash,
        download_url=external_url(f"{base}/draft.xml"),
        manifest_url=external_url(f"{base}/draft/manifest") if has_media else None,
    )
    return protocol.xml_response(documents.form_list([entry]), no_cache=True)


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/draft/manifest", strict_slashes=False)
def draft_manifest(project_id: int, xml_form_id: str) -> Response:
    """List the media of a form's draft."""
    form, version = _draft(project_id, xml_form_id)
    return _manifest(project_id, form, version, draft=True)


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/draft/attachments/<path:name>")
def draft_attachment(project_id: int, xml_form_id: str, name: str) -> Response:
    """Serve one media file of a form's draft."""
    _, version = _draft(project_id, xml_form_id)
    return _send_form_attachment(version, name)


@bp.get("/v1/projects/<int:project_id>/forms/<xml_form_id>/draft.xml")
def draft_xform(project_id: int, xml_form_id: str) -> Response:
    """Serve the draft's XForm, byte for byte what its hash was computed on."""
    _, version = _draft(project_id, xml_form_id)
    response = Response(version.xml.encode("utf-8"), content_type="application/xml")
    return protocol.add_headers(response)


@bp.route(
    "/v1/projects/<int:project_id>/forms/<xml_form_id>/draft/submission",
    methods=["HEAD", "GET"],
    strict_slashes=False,
)
def draft_submission_preflight(project_id: int, xml_form_id: str) -> Response:
    """Preflight for draft test records."""
    _draft(project_id, xml_form_id)
    return protocol.add_headers(Response(status=204))


@bp.post("/v1/projects/<int:project_id>/forms/<xml_form_id>/draft/submission", strict_slashes=False)
def draft_submission(project_id: int, xml_form_id: str) -> Response:
    """Receive a test record for a draft (kept apart, removed when the draft is published)."""
    form, _ = _draft(project_id, xml_form_id)

    def authorize(target: intake.FormRef) -> None:
        if target.id != form.id:
            raise errors.FormNotFound(form_id=target.xml_form_id)

    actor = access.current_actor()
    receipt = _receive(project_id, actor.id if actor else None, authorize=authorize, draft=True)
    return _answer(receipt)


def init_app(app) -> None:
    """Make OpenRosa answers carry the protocol's headers even when Flask made them."""

    @app.after_request
    def _openrosa_headers(response: Response) -> Response:
        if request.blueprint == "openrosa":
            protocol.add_headers(response)
        return response
