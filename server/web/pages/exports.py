"""Exports: the options as a form, downloads that start at once, and the cleaning log.

The download route calls the same export service as the API (:mod:`server.exports.services`)
and streams its file: the browser starts saving it while the server is still reading records.
Every option is checked before the first byte leaves, so a bad choice is a page, not a broken
file.
"""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request, stream_with_context, url_for
from flask_babel import gettext, lazy_gettext

from server import db, errors, personal
from server.auth import access
from server.exports import cleaning, services
from server.exports.options import parse_options
from server.forms import services as forms
from server.forms.models import Form
from server.projects.models import Project
from server.storage.base import content_disposition
from server.submissions import overview
from server.web import common, labels
from server.web.pages.submissions import REVIEW_STATES
from server.web.views import bp

FORMATS = {
    "csv.zip": lazy_gettext("CSV files in a zip: every table, with photos and audio"),
    "csv": lazy_gettext("One CSV file: the main table only"),
    "xlsx": lazy_gettext("Excel workbook: one sheet per table"),
    "geojson": lazy_gettext("GeoJSON: the places, for a map"),
    "media.zip": lazy_gettext("Photos, audio and files only, in a zip"),
}
PII_MODES = {
    "pseudonymise": lazy_gettext("Replaced by pseudonyms (the same person keeps the same one)"),
    "omit": lazy_gettext("Left out"),
    "plain": lazy_gettext("In clear"),
}
# Options that are on unless the form says otherwise (checkboxes send nothing when unticked).
CHECKBOXES = (
    "groupPaths",
    "splitSelectMultiples",
    "splitGeopoints",
    "includeRejected",
    "deletedFields",
    "bom",
    "attachments",
    "clientAudit",
    "cleaned",
    "escapeFormulas",
)


def _page(project: Project, form: Form, *, status: int = 200, **extra: Any) -> Response:
    db_session = db.session()
    version = forms.current_version(db_session, form)
    schema = version.form_schema if version is not None else None
    layout = services.load_layout(db_session, form)
    may_see_pii = personal.may_see(form)
    defaults = services.default_options(may_see_personal=may_see_pii, console=True)
    return common.page(
        "web/exports.html",
        status=status,
        project=project,
        form=form,
        formats=FORMATS,
        pii_modes={k: v for k, v in PII_MODES.items() if k != "plain" or may_see_pii},
        default_pii=defaults.pii,
        defaults=defaults,
        languages=list(schema.languages) if schema is not None else [],
        default_language=labels.for_schema(schema, common.ui_language()),
        states=REVIEW_STATES,
        submitters=overview.submitters(db_session, form.id),
        versions=[v.version for v in forms.published_versions(db_session, form)],
        corrections=[
            (c, cleaning.header_of(layout, c.column))
            for c in cleaning.list_corrections(db_session, form)
        ],
        may_clean=access.can("export.clean", project_id=project.id, form_id=form.id),
        **extra,
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/export")
def export_form(project_id: int, xml_form_id: str) -> Response:
    """Show the export options, the cleaning log and its corrections."""
    project, form = common.form_for(project_id, xml_form_id, "submission.read")
    return _page(project, form)


def _parameters() -> dict[str, str]:
    """Turn the options form into the export service's parameters (Central's names).

    From the page's form (``options=form``) an unticked box means false, since browsers send
    nothing for it; in a link written by hand, an option left out keeps its default.
    """
    args = request.args
    params = {
        name: args.get(name, "").strip()
        for name in (
            "headers",
            "language",
            "choiceLabels",
            "separator",
            "formVersion",
            "submitterId",
            "pii",
        )
    }
    from_form = args.get("options") == "form"
    for name in CHECKBOXES:
        if name in args:
            params[name] = "false" if args[name].lower() in ("0", "false", "no") else "true"
        elif from_form:
            params[name] = "false"
    # Dates from <input type=date>; the end date is included (the service reads it so).
    params["start"] = args.get("start", "").strip()
    params["end"] = args.get("end", "").strip()
    states = [s for s in args.getlist("reviewState") if s]
    params["reviewState"] = ",".join(states)
    return {k: v for k, v in params.items() if v != ""}


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/export/download")
def export_download(project_id: int, xml_form_id: str) -> Response:
    """Stream the export chosen in the form; the download starts at once."""
    _project, form = common.form_for(project_id, xml_form_id, "submission.read")
    actor = access.require_actor()
    fmt = services.check_format(request.args.get("format", "csv.zip"))
    may_see_personal = personal.may_see(form)
    options = parse_options(
        _parameters(),
        base=services.default_options(may_see_personal=may_see_personal, console=True),
    )
    exporter = services.Exporter(
        actor_id=actor.id, via="console", may_see_personal=may_see_personal
    )
    export = services.export(form, fmt, options, exporter)
    return Response(
        stream_with_context(export.chunks),
        content_type=export.content_type,
        headers={
            "Content-Disposition": content_disposition(export.filename),
            "Cache-Control": "private, no-store",
            "X-Accel-Buffering": "no",
        },
        direct_passthrough=True,
    )


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/corrections")
def upload_corrections(project_id: int, xml_form_id: str) -> Response:
    """Check a cleaning log line by line; store it when every line is valid (or partially)."""
    project, form = common.form_for(project_id, xml_form_id, "export.clean")
    actor = access.require_actor()
    file = request.files.get("file")
    if file is None or not file.filename:
        return _page(
            project, form, status=400, cleaning_message=gettext("Choose the CSV file to check.")
        )
    db_session = db.session()
    try:
        result = cleaning.submit(
            db_session,
            form,
            services.load_layout(db_session, form),
            file.read(),
            actor_id=actor.id,
            partial=request.form.get("partial") == "1",
            may_touch_pii=personal.may_see(form),
        )
    except errors.CorrectionsRefused as refused:
        return _page(
            project,
            form,
            status=400,
            cleaning_message=refused.render_message(),
            accepted=refused.details.get("accepted", []),
            refused=refused.details.get("refused", []),
        )
    except errors.UnreadableCorrections as unreadable:
        return _page(project, form, status=400, cleaning_message=unreadable.render_message())
    body = result.to_json()
    return _page(
        project,
        form,
        cleaning_message=gettext(
            "%(count)s corrections accepted; exports apply them from now on.",
            count=len(result.accepted),
        ),
        cleaning_ok=True,
        accepted=body["accepted"],
        refused=body["refused"],
    )


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/corrections/<int:correction_id>/revoke")
def revoke_correction(project_id: int, xml_form_id: str, correction_id: int) -> Response:
    """Revoke a correction: kept in the log, no longer applied."""
    project, form = common.form_for(project_id, xml_form_id, "export.clean")
    actor = access.require_actor()
    cleaning.revoke(db.session(), form, correction_id, actor_id=actor.id)
    flash(gettext("The correction was revoked."))
    return redirect(
        url_for("web.export_form", project_id=project.id, xml_form_id=form.xml_form_id) + "#log",
        code=303,
    )
