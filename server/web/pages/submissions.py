"""Submissions: the table (filters, search, paging, bulk review) and a record's page.

Paging is by record id (keyset), never by offset, so the thousandth page of a large form is as
quick as the first. A record's answers are labelled in the page's language from the field
schema of the version it was filled on; its photos and audio are served by a console route that
checks access first.
"""

from __future__ import annotations

import mimetypes

from flask import Response, flash, redirect, request, url_for
from flask_babel import gettext, lazy_gettext

from server import db, errors, personal
from server.auth import access
from server.forms import services as forms
from server.forms.models import FormVersion
from server.forms.schema import Field, FormSchema
from server.storage import downloads
from server.submissions import conflicts, overview
from server.submissions import services as submissions
from server.submissions.models import REVIEW_STATE_WORDS
from server.submissions.services import SETTABLE_REVIEW_STATES, SubmissionFilter
from server.web import common, labels, structure
from server.web.views import bp

REVIEW_STATES = REVIEW_STATE_WORDS

REVIEW_ACTIONS = {
    "approved": lazy_gettext("Approve"),
    "hasIssues": lazy_gettext("Mark as having issues"),
    "rejected": lazy_gettext("Reject"),
}


def _filters(disclosure: personal.Disclosure) -> tuple[SubmissionFilter, dict[str, str]]:
    """Read the table's filters from the query string; return them and their raw values."""
    args = request.args
    raw = {
        name: args.get(name, "").strip()
        for name in ("from", "to", "submitter", "state", "version", "q", "before", "after")
    }
    start = common.parse_date("from", raw["from"], gettext("From"))
    end = common.parse_date("to", raw["to"], gettext("To"))
    if start and end and end < start:
        raise errors.FieldValueRefused(
            field=gettext("To"), reason=gettext("the end date comes before the start date")
        )
    state = raw["state"]
    if state and state not in REVIEW_STATES:
        raise errors.FieldValueRefused(
            field=gettext("Review state"), reason=gettext("unknown state")
        )
    submitter = common.parse_int(raw["submitter"], gettext("Enumerator"))
    filters = SubmissionFilter(
        received_from=common.start_of(start),
        received_before=common.start_of(end, next_day=True),
        review_states=[None if state == "received" else state] if state else None,
        submitter_ids=[submitter] if submitter is not None else None,
        form_versions=[raw["version"]] if raw["version"] else None,
        search=raw["q"] or None,
        # A hidden instanceName is not searched either: a match would tell what it holds.
        search_instance_name=disclosure.instance_name_searchable,
        before_id=common.parse_int(raw["before"], "before"),
        after_id=common.parse_int(raw["after"], "after"),
    )
    return filters, raw


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/submissions")
def submission_list(project_id: int, xml_form_id: str) -> Response:
    """List a form's records, newest first, with filters, search, paging and bulk review."""
    project, form = common.form_for(project_id, xml_form_id, "submission.list")
    db_session = db.session()
    disclosure = personal.for_form(db_session, form)
    filters, raw = _filters(disclosure)
    rows = submissions.list_submissions(db_session, form.id, filters, limit=common.PAGE_SIZE + 1)
    if filters.after_id is not None:
        rows.reverse()  # read oldest first from the cursor; shown newest first
        more_newer = len(rows) > common.PAGE_SIZE
        rows = rows[-common.PAGE_SIZE :] if more_newer else rows
        more_older = True
    else:
        more_older = len(rows) > common.PAGE_SIZE
        rows = rows[: common.PAGE_SIZE]
        more_newer = filters.before_id is not None
    base = {k: v for k, v in raw.items() if k not in ("before", "after")}
    count_filter = SubmissionFilter(**{**filters.__dict__, "before_id": None, "after_id": None})
    titles = {
        row.submission.id: disclosure.instance_name(
            row.version.raw_instance_name, instance_id=row.submission.instance_id, channel="console"
        )
        for row in rows
    }
    published = forms.current_version(db_session, form)
    form_schema = published.form_schema if published is not None else None
    choices = forms.list_column_choices(form_schema) if form_schema is not None else []
    columns = forms.list_columns(form, form_schema) if form_schema is not None else []
    language = labels.for_schema(form_schema, common.ui_language())
    cells = {
        row.submission.id: [
            _shown(form_schema, field, values, language)
            for field, values in zip(
                columns,
                disclosure.answers(
                    row.version.raw_document,
                    columns,
                    instance_id=row.submission.instance_id,
                    channel="console",
                ),
                strict=True,
            )
        ]
        for row in rows
    }
    return common.page(
        "web/submissions.html",
        project=project,
        form=form,
        rows=rows,
        titles=titles,
        raw=raw,
        total=submissions.count_submissions(db_session, form.id, count_filter),
        submitters=overview.submitters(db_session, form.id),
        versions=[v.version for v in forms.published_versions(db_session, form)],
        states=REVIEW_STATES,
        actions=REVIEW_ACTIONS,
        older_url=common.query_url(
            "web.submission_list",
            {**base, "before": rows[-1].submission.id},
            project_id=project.id,
            xml_form_id=form.xml_form_id,
        )
        if rows and more_older
        else None,
        newer_url=common.query_url(
            "web.submission_list",
            {**base, "after": rows[0].submission.id},
            project_id=project.id,
            xml_form_id=form.xml_form_id,
        )
        if rows and more_newer
        else None,
        may_review=access.can("submission.update", project_id=project.id, form_id=form.id),
        open_conflicts=common.open_conflicts(form),
        columns=columns,
        column_choices=choices,
        column_labels={f.path: labels.pick(f.labels, language, f.name) for f in choices},
        cells=cells,
        max_columns=forms.MAX_LIST_COLUMNS,
        may_choose_columns=access.can("form.update", project_id=project.id, form_id=form.id),
    )


def _shown(form_schema: FormSchema, field: Field, values: list, language: str | None) -> list:
    """A select's answers as its choices' labels (a pseudonym stays as it is)."""
    if not field.is_select:
        return [v for v in values if v not in (None, "")]
    names = form_schema.choice_labels(field)
    return [
        labels.pick(names.get(name), language, name)
        for value in values
        if isinstance(value, str)
        for name in field.chosen(value)
    ]


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/submissions/columns")
def submission_columns(project_id: int, xml_form_id: str) -> Response:
    """Keep the questions whose answers the form's submissions table shows."""
    project, form = common.form_for(project_id, xml_form_id, "form.update")
    db_session = db.session()
    published = forms.published_version(db_session, form)
    forms.set_list_columns(db_session, form, published.form_schema, request.form.getlist("column"))
    flash(gettext("The table shows the answers you chose."))
    return redirect(
        url_for("web.submission_list", project_id=project.id, xml_form_id=form.xml_form_id),
        code=303,
    )


def _state(raw: str) -> str:
    if raw not in SETTABLE_REVIEW_STATES:
        raise errors.FieldValueRefused(
            field=gettext("Review state"), reason=gettext("unknown state")
        )
    return raw


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/submissions/review")
def bulk_review(project_id: int, xml_form_id: str) -> Response:
    """Set one review state (and comment) on the records ticked in the table."""
    project, form = common.form_for(project_id, xml_form_id, "submission.update")
    actor = access.require_actor()
    state = _state(request.form.get("state", ""))
    chosen = request.form.getlist("instance_id")
    back = common.safe_next(
        request.form.get("next"),
        url_for("web.submission_list", project_id=project.id, xml_form_id=form.xml_form_id),
    )
    if not chosen:
        flash(gettext("Tick at least one submission first."), "error")
        return redirect(back, code=303)
    count = submissions.bulk_review(
        db.session(),
        form.id,
        chosen,
        state,
        actor_id=actor.id,
        project_id=project.id,
        comment=request.form.get("comment") or None,
    )
    flash(
        gettext(
            "%(count)s submissions set to “%(state)s”.",
            count=count,
            state=REVIEW_STATES[state],
        )
    )
    return redirect(back, code=303)


@bp.get("/projects/<int:project_id>/forms/<xml_form_id>/submissions/<instance_id>")
def submission(project_id: int, xml_form_id: str, instance_id: str) -> Response:
    """Show a record: its answers in the page's language, media, versions, comments, review."""
    project, form = common.form_for(project_id, xml_form_id, "submission.read")
    db_session = db.session()
    record = submissions.get(db_session, form.id, instance_id)
    every_version = submissions.versions(db_session, record)
    wanted = request.args.get("version")
    shown = next((v for v in every_version if v.instance_id == wanted), every_version[0])
    form_version = db_session.get(FormVersion, shown.form_version_id)
    schema = form_version.form_schema if form_version is not None else None
    disclosure = personal.for_form(db_session, form)
    document = disclosure.document(
        shown.raw_document, instance_id=record.instance_id, channel="console"
    )
    every_file = submissions.attachments(db_session, shown)
    attached = [
        (a, blob)
        for a, blob in every_file
        if disclosure.clear or not disclosure.is_personal_file(shown.raw_document, a.name)
    ]
    hidden_files = len(every_file) - len(attached)

    present = {a.name for a, blob in attached if blob is not None}

    def media_url(name: str) -> str:
        return url_for(
            "web.submission_attachment",
            project_id=project.id,
            xml_form_id=form.xml_form_id,
            instance_id=record.instance_id,
            name=name,
            version=shown.instance_id,
        )

    language = labels.for_schema(schema, common.ui_language())
    may_review = access.can("submission.update", project_id=project.id, form_id=form.id)
    return common.page(
        "web/submission.html",
        project=project,
        form=form,
        record=record,
        shown=shown,
        title=disclosure.instance_name(
            shown.raw_instance_name, instance_id=record.instance_id, channel="console"
        ),
        form_version=form_version,
        versions=every_version,
        answers=structure.answers(
            schema, document, language, media_url, present, hidden=disclosure.hidden
        ),
        attachments=[(a, blob, media_url(a.name)) for a, blob in attached],
        hidden_files=hidden_files,
        comments=submissions.comments(db_session, record),
        history=submissions.audit_events(db_session, record),
        states=REVIEW_STATES,
        actions=REVIEW_ACTIONS,
        may_review=may_review,
        record_conflicts=conflicts.open_for_record(db_session, record) if may_review else [],
    )


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/submissions/<instance_id>/review")
def review(project_id: int, xml_form_id: str, instance_id: str) -> Response:
    """Approve, reject or mark a record as having issues, with an optional comment."""
    project, form = common.form_for(project_id, xml_form_id, "submission.update")
    actor = access.require_actor()
    record = submissions.get(db.session(), form.id, instance_id)
    state = _state(request.form.get("state", ""))
    submissions.set_review_state(
        db.session(),
        record,
        state,
        actor_id=actor.id,
        project_id=project.id,
        comment=request.form.get("comment") or None,
    )
    flash(gettext("Review saved: %(state)s.", state=REVIEW_STATES[state]))
    return _back(project.id, form.xml_form_id, record.instance_id)


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/submissions/<instance_id>/comments")
def comment(project_id: int, xml_form_id: str, instance_id: str) -> Response:
    """Add a comment to a record."""
    project, form = common.form_for(project_id, xml_form_id, "submission.update")
    actor = access.require_actor()
    record = submissions.get(db.session(), form.id, instance_id)
    body = request.form.get("body", "")
    if not body.strip():
        raise errors.FieldValueRefused(
            field=gettext("Comment"), reason=gettext("write something first")
        )
    submissions.add_comment(db.session(), record, body, actor_id=actor.id, project_id=project.id)
    flash(gettext("Comment added."))
    return _back(project.id, form.xml_form_id, record.instance_id)


def _back(project_id: int, xml_form_id: str, instance_id: str) -> Response:
    return redirect(
        url_for(
            "web.submission",
            project_id=project_id,
            xml_form_id=xml_form_id,
            instance_id=instance_id,
        ),
        code=303,
    )


@bp.get(
    "/projects/<int:project_id>/forms/<xml_form_id>/submissions/<instance_id>/attachments/<name>"
)
def submission_attachment(
    project_id: int, xml_form_id: str, instance_id: str, name: str
) -> Response:
    """Serve a record's photo, recording or file (shown in the page when a browser can)."""
    _project, form = common.form_for(project_id, xml_form_id, "submission.read")
    db_session = db.session()
    record = submissions.get(db_session, form.id, instance_id)
    wanted = request.args.get("version")
    version = (
        submissions.version(db_session, record, wanted)
        if wanted
        else submissions.current_version(db_session, record)
    )
    found = submissions.attachment_named(db_session, version, name)
    if found is None or found[1] is None:
        raise errors.NotFound()
    attachment, blob = found
    personal.for_form(db_session, form).check_file(
        version.raw_document, attachment.name, instance_id=record.instance_id, channel="console"
    )
    content_type = (
        attachment.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    )
    return downloads.send_blob(blob, attachment.name, content_type, inline=True)
