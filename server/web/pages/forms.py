"""Forms: upload an XLSForm, read its structure or its errors, media, publish, state, files.

An upload becomes a *draft*: nothing reaches tablets until the coordinator has read the
form's structure (or its warnings) and pressed Publish. A form that does not compile shows its
errors by sheet, row and column, and nothing is stored. Warnings do not stop a draft (they are
shown with it); publishing is the decision.
"""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_babel import gettext
from werkzeug.datastructures import FileStorage

from server import db, errors
from server.auth import access
from server.forms import services as forms
from server.forms.models import Form, FormVersion
from server.projects.models import Project
from server.storage import downloads
from server.storage.base import content_disposition
from server.web import common, labels
from server.web.pages.projects import project_page
from server.web.pages.webforms import links_of
from server.web.structure import structure
from server.web.views import bp


def _upload(field: str = "xlsform") -> forms.Upload | None:
    """Read an uploaded form file from the request (None when no file was chosen)."""
    file: FileStorage | None = request.files.get(field)
    if file is None or not file.filename:
        return None
    data = file.read()
    if not data:
        return None
    name = file.filename.replace("\\", "/").rsplit("/", 1)[-1]
    return forms.Upload(data=data, filename=name, content_type=file.mimetype or None)


def _refused(problem: errors.Problem) -> dict:
    """Return what the page shows of a refused upload: its message and located problems."""
    details = problem.details if isinstance(problem.details, dict) else {}
    return {
        "upload_message": problem.render_message(),
        "upload_errors": details.get("errors") or [],
        "upload_warnings": details.get("warnings") or [],
    }


@bp.post("/projects/<int:project_id>/forms")
def upload_form(project_id: int) -> Response:
    """Compile an uploaded XLSForm into a new form's draft, or show why it cannot be."""
    project = common.project_for(project_id, "form.create")
    actor = access.require_actor()
    upload = _upload()
    if upload is None:
        return project_page(
            project, status=400, upload_message=gettext("Choose the XLSForm file to upload.")
        )
    try:
        form = forms.create_form(
            db.session(),
            project.id,
            upload,
            actor_id=actor.id,
            # Warnings are shown with the draft, which nobody receives before it is published.
            ignore_warnings=True,
        )
    except errors.XlsformInvalid as invalid:
        return project_page(project, status=400, **_refused(invalid))
    except errors.Conflict as conflict:
        db.session().rollback()
        existing = str(conflict.details.get("values", "")).partition(", ")[2]
        return project_page(
            project,
            status=409,
            upload_message=gettext(
                "A form with the ID %(form_id)s already exists in this project. Open it and "
                "upload the new version there.",
                form_id=existing,
            ),
            existing_form=existing,
        )
    return redirect(
        url_for("web.form", project_id=project.id, xml_form_id=form.xml_form_id), code=303
    )


def form_page(project: Project, form: Form, *, status: int = 200, **extra: Any) -> Response:
    """Render a form's page: state, draft (structure, warnings, media), versions."""
    db_session = db.session()
    current = forms.current_version(db_session, form)
    draft = forms.draft_version(db_session, form)
    may_update = access.can("form.update", project_id=project.id, form_id=form.id)
    shown = draft if draft is not None and may_update else current
    draft_media = forms.attachments(db_session, draft) if draft is not None else []
    current_media = forms.attachments(db_session, current) if current is not None else []
    schema = shown.form_schema if shown is not None else None
    languages, rows = structure(schema)
    return common.page(
        "web/form.html",
        status=status,
        project=project,
        form=form,
        current=current,
        draft=draft if may_update else None,
        shown=shown,
        languages=languages,
        rows=rows,
        draft_media=draft_media,
        missing=[a.name for a, blob in draft_media if blob is None],
        versions=forms.published_versions(db_session, form),
        current_media=current_media,
        current_missing=[a.name for a, blob in current_media if blob is None],
        may_update=may_update,
        ui_form_language=labels.for_schema(schema, common.ui_language()),
        open_conflicts=common.open_conflicts(form),
        long_list=common.LONG_LIST,
        public_links=links_of(form)
        if access.can("public_link.list", project_id=project.id, form_id=form.id)
        else None,
        **extra,
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>")
def form(project_id: int, xml_form_id: str) -> Response:
    """Show a form."""
    project, found = common.form_for(project_id, xml_form_id)
    return form_page(project, found)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft")
def new_draft(project_id: int, xml_form_id: str) -> Response:
    """Make a new draft: from an uploaded new version, or a copy of the published one."""
    project, found = common.form_for(project_id, xml_form_id, "form.update")
    actor = access.require_actor()
    upload = _upload()
    if upload is None and request.form.get("copy") != "1":
        return form_page(
            project,
            found,
            status=400,
            upload_message=gettext("Choose the XLSForm file to upload."),
        )
    try:
        forms.set_draft(db.session(), found, upload, actor_id=actor.id, ignore_warnings=True)
    except errors.XlsformInvalid as invalid:
        return form_page(project, found, status=400, **_refused(invalid))
    except errors.UnexpectedValue as wrong:
        db.session().rollback()
        return form_page(project, found, status=400, upload_message=wrong.render_message())
    flash(gettext("The new draft is ready. Check it below, then publish it."))
    return _back_to(project, found)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft/media")
def attach_media(project_id: int, xml_form_id: str) -> Response:
    """Attach (or replace) one of the media files the draft needs."""
    project, found = common.form_for(project_id, xml_form_id, "form.update")
    actor = access.require_actor()
    name = request.form.get("name", "")
    file = request.files.get("file")
    if file is None or not file.filename:
        raise errors.FieldValueRefused(
            field=name or gettext("File"), reason=gettext("choose a file")
        )
    forms.attach(
        db.session(),
        found,
        name,
        file.stream,
        content_type=file.mimetype or None,
        actor_id=actor.id,
    )
    flash(gettext("%(name)s attached.", name=name))
    return _back_to(project, found)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft/publish")
def publish(project_id: int, xml_form_id: str) -> Response:
    """Publish the draft: tablets receive it at their next update."""
    project, found = common.form_for(project_id, xml_form_id, "form.update")
    actor = access.require_actor()
    version = request.form.get("version", "").strip() or None
    # Central publishes with media missing; here the coordinator confirms it first.
    confirmed = request.form.get("missing_ok") == "1"
    try:
        published = forms.publish_draft(
            db.session(), found, version=version, actor_id=actor.id, allow_missing_media=confirmed
        )
    except errors.MissingMedia:
        message = gettext(
            "Some files the form needs are missing. Attach them, or tick the box to publish "
            "this version without them."
        )
        return form_page(project, found, status=409, publish_message=message)
    except errors.VersionConflict as refused:
        return form_page(project, found, status=409, publish_message=refused.render_message())
    if published.version:
        flash(gettext("Version %(version)s is published.", version=published.version))
    else:  # the settings sheet names no version
        flash(gettext("The form is published."))
    return _back_to(project, found)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/draft/delete")
def discard_draft(project_id: int, xml_form_id: str) -> Response:
    """Abandon the draft (a form never published goes with it)."""
    project, found = common.form_for(project_id, xml_form_id, "form.update")
    actor = access.require_actor()
    never_published = found.current_version_id is None
    forms.delete_draft(db.session(), found, actor_id=actor.id)
    flash(gettext("The draft was discarded."))
    if never_published:
        return redirect(url_for("web.project", project_id=project.id), code=303)
    return _back_to(project, found)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/state")
def set_state(project_id: int, xml_form_id: str) -> Response:
    """Open, close, or set a form closing (hidden from tablets, still accepting records)."""
    project, found = common.form_for(project_id, xml_form_id, "form.update")
    actor = access.require_actor()
    forms.set_state(db.session(), found, request.form.get("state", ""), actor_id=actor.id)
    flash(gettext("The form's state was changed."))
    return _back_to(project, found)


def _version(form: Form, version_id: int) -> FormVersion:
    """Return a published version of the form, or its draft for those who may update it."""
    found = db.session().get(FormVersion, version_id)
    if found is None or found.form_id != form.id:
        raise errors.NotFound()
    if found.published_at is None and not (
        found.id == form.draft_version_id
        and access.can("form.update", project_id=form.project_id, form_id=form.id)
    ):
        raise errors.NotFound()
    return found


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<int:version_id>/xform")
def download_xform(project_id: int, xml_form_id: str, version_id: int) -> Response:
    """Download a version's XForm, the exact bytes tablets receive."""
    _project, found = common.form_for(project_id, xml_form_id)
    version = _version(found, version_id)
    label = version.version or "draft"
    response = Response(forms.xml_bytes(version), content_type="application/xml")
    response.headers["Content-Disposition"] = content_disposition(
        f"{found.xml_form_id}-{label}.xml"
    )
    return response


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<int:version_id>/choices")
def choice_list(project_id: int, xml_form_id: str, version_id: int) -> Response:
    """Show one choice list of a version (``?list=``) whole: filtered, paged."""
    project, found = common.form_for(project_id, xml_form_id)
    version = _version(found, version_id)
    schema = version.form_schema
    key = request.args.get("list", "")
    if key not in schema.choice_lists:
        raise errors.NotFound()
    languages = list(schema.languages) or ["default"]
    items = [
        (c.name, [labels.pick(c.labels, language) for language in languages])
        for c in schema.choice_lists[key]
    ]
    query = request.args.get("q", "").strip()
    if query:
        items = [item for item in items if common.matching(query, [item[0], *item[1]])]
    shown = common.paged(items, request.args.get("page"), gettext("Page"))
    language = labels.for_schema(schema, common.ui_language())
    questions = [labels.pick(f.labels, language, f.name) for f in schema.fields if f.choices == key]

    def page_url(number: int) -> str:
        return common.query_url(
            "web.choice_list",
            {"list": key, "q": query, "page": number if number > 1 else None},
            project_id=project.id,
            xml_form_id=found.xml_form_id,
            version_id=version.id,
        )

    return common.page(
        "web/choices.html",
        project=project,
        form=found,
        version=version,
        key=key,
        questions=questions,
        languages=languages,
        shown=shown,
        query=query,
        **common.pager_links(shown, page_url),
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<int:version_id>/source")
def download_source(project_id: int, xml_form_id: str, version_id: int) -> Response:
    """Download the spreadsheet a version was compiled from."""
    _project, found = common.form_for(project_id, xml_form_id)
    version = _version(found, version_id)
    source = forms.source_file(db.session(), version)
    if source is None:
        raise errors.NotFound()
    blob, filename, content_type = source
    return downloads.send_blob(blob, filename, content_type)


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/versions/<int:version_id>/media/<name>")
def download_media(project_id: int, xml_form_id: str, version_id: int, name: str) -> Response:
    """Download one of a version's media files."""
    _project, found = common.form_for(project_id, xml_form_id)
    version = _version(found, version_id)
    attached = forms.find_attachment(db.session(), version, name)
    if attached is None or attached[1] is None:
        raise errors.NotFound()
    attachment, blob = attached
    return downloads.send_blob(blob, name, attachment.content_type or "application/octet-stream")


def _back_to(project: Project, form: Form) -> Response:
    return redirect(
        url_for("web.form", project_id=project.id, xml_form_id=form.xml_form_id), code=303
    )
