"""Conflicts: records sent again with other answers, compared side by side and settled.

For coordinators (``submission.update``): the form's page and its submissions table show how
many wait; the list names them; a conflict's page shows the record's current version and the
payload answer by answer (labels from each one's field schema, personal answers as the reader
may see them) with the three ways to settle it (:mod:`server.submissions.conflicts`).
"""

from __future__ import annotations

import mimetypes

from flask import Response, flash, redirect, request, url_for
from flask_babel import gettext, lazy_gettext

from server import db, errors, personal
from server.auth import access
from server.storage import downloads
from server.submissions import conflicts, filenames
from server.submissions import services as submissions
from server.web import common, labels, structure
from server.web.views import bp

VERB = "submission.update"
STATES = ("open", "settled", "all")
RESOLUTIONS = {
    "keepFirst": lazy_gettext("first submission kept"),
    "takeSecond": lazy_gettext("second submission taken as an edit"),
    "discard": lazy_gettext("second submission discarded"),
}


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/conflicts")
def conflict_list(project_id: int, xml_form_id: str) -> Response:
    """List a form's conflicts, newest first: those to settle, or those settled."""
    project, form = common.form_for(project_id, xml_form_id, VERB)
    state = request.args.get("state") or "open"
    if state not in STATES:
        raise errors.FieldValueRefused(field=gettext("State"), reason=gettext("unknown state"))
    before = common.parse_int(request.args.get("before"), "before")
    db_session = db.session()
    rows = conflicts.list_conflicts(
        db_session,
        form.id,
        settled={"open": False, "settled": True}.get(state),
        before_id=before,
        limit=common.PAGE_SIZE + 1,
    )
    more = len(rows) > common.PAGE_SIZE
    rows = rows[: common.PAGE_SIZE]
    return common.page(
        "web/conflicts.html",
        project=project,
        form=form,
        rows=rows,
        state=state,
        resolutions=RESOLUTIONS,
        open_conflicts=common.open_conflicts(form),
        older_url=common.query_url(
            "web.conflict_list",
            {"state": state, "before": rows[-1].conflict.id},
            project_id=project.id,
            xml_form_id=form.xml_form_id,
        )
        if more
        else None,
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/conflicts/<int:conflict_id>")
def conflict(project_id: int, xml_form_id: str, conflict_id: int) -> Response:
    """Show the record and the payload sent again side by side, and how to settle it."""
    project, form = common.form_for(project_id, xml_form_id, VERB)
    db_session = db.session()
    row = conflicts.get(db_session, form.id, conflict_id)
    found = conflicts.contents(db_session, form, row.conflict)
    disclosure = personal.for_form(db_session, form)
    record = found.record
    current = disclosure.document(
        found.current.raw_document, instance_id=record.instance_id, channel="console.conflict"
    )
    sent = disclosure.document(
        found.document, instance_id=row.conflict.instance_id, channel="console.conflict"
    )
    kept_files = {f.name for f, _blob in conflicts.files(db_session, row.conflict)}
    present = {
        a.name for a, blob in submissions.attachments(db_session, found.current) if blob is not None
    }

    def media_url(name: str) -> str:
        return url_for(
            "web.submission_attachment",
            project_id=project.id,
            xml_form_id=form.xml_form_id,
            instance_id=record.instance_id,
            name=name,
            version=found.current.instance_id,
        )

    language = common.ui_language()
    first = structure.answers(
        found.current_schema,
        current,
        labels.for_schema(found.current_schema, language),
        media_url,
        present,
        hidden=disclosure.hidden,
    )
    second = structure.answers(
        found.schema,
        sent,
        labels.for_schema(found.schema, language),
        lambda name: url_for(
            "web.conflict_file",
            project_id=project.id,
            xml_form_id=form.xml_form_id,
            conflict_id=row.conflict.id,
            name=name,
        ),
        kept_files,
        hidden=disclosure.hidden,
    )
    pairs = structure.side_by_side(first, second) if sent is not None else []
    return common.page(
        "web/conflict.html",
        project=project,
        form=form,
        row=row,
        conflict=row.conflict,
        found=found,
        record=record,
        title=disclosure.instance_name(
            found.current.raw_instance_name, instance_id=record.instance_id, channel="console"
        ),
        pairs=pairs,
        differing=sum(1 for pair in pairs if pair.differs and pair.shown.kind == "field"),
        kept_files=sorted(kept_files),
        resolutions=RESOLUTIONS,
        resolution=RESOLUTIONS.get(row.conflict.resolution or ""),
        version_made=conflicts.made_version(db_session, row.conflict),
    )


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/conflicts/<int:conflict_id>/resolve")
def resolve_conflict(project_id: int, xml_form_id: str, conflict_id: int) -> Response:
    """Settle a conflict: keep the first, take the second as an edit, or discard it."""
    project, form = common.form_for(project_id, xml_form_id, VERB)
    actor = access.require_actor()
    resolution = request.form.get("resolution", "")
    if resolution not in RESOLUTIONS:
        raise errors.FieldValueRefused(
            field=gettext("Decision"), reason=gettext("choose one of the three decisions")
        )
    settled = conflicts.resolve(db.session(), form, conflict_id, resolution, actor_id=actor.id)
    flash(gettext("Conflict settled: %(resolution)s.", resolution=RESOLUTIONS[resolution]))
    if resolution == "takeSecond":
        return redirect(
            url_for(
                "web.submission",
                project_id=project.id,
                xml_form_id=form.xml_form_id,
                instance_id=settled.instance_id,
            ),
            code=303,
        )
    return redirect(
        url_for("web.conflict_list", project_id=project.id, xml_form_id=form.xml_form_id),
        code=303,
    )


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/conflicts/<int:conflict_id>/files/<name>")
def conflict_file(project_id: int, xml_form_id: str, conflict_id: int, name: str) -> Response:
    """Serve a file kept with a conflicting payload (a photo sent again, to compare)."""
    _project, form = common.form_for(project_id, xml_form_id, VERB)
    db_session = db.session()
    row = conflicts.get(db_session, form.id, conflict_id)
    wanted = filenames.comparable(name)
    found = next(
        (
            (kept, blob)
            for kept, blob in conflicts.files(db_session, row.conflict)
            if filenames.comparable(kept.name) == wanted
        ),
        None,
    )
    if found is None:
        raise errors.NotFound()
    kept, blob = found
    document = conflicts.contents(db_session, form, row.conflict).document
    personal.for_form(db_session, form).check_file(
        document, kept.name, instance_id=row.conflict.instance_id, channel="console.conflict"
    )
    content_type = kept.content_type or mimetypes.guess_type(kept.name)[0]
    return downloads.send_blob(
        blob, kept.name, content_type or "application/octet-stream", inline=True
    )
