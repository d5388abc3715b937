"""Submissions (records) as ODK Central serves them, and paging that sync clients can trust.

Under ``/v1/projects/<p>/forms/<f>`` (and the same under ``.../draft`` for a draft's test
records):

GET, POST           /submissions                          list (paged) / create from XML
GET, PUT, PATCH,    /submissions/<instanceId>             one record / edit (XML with
DELETE                                                    deprecatedID) / review / trash
GET                 /submissions/<instanceId>.xml         the current version's XML
POST                /submissions/<instanceId>/restore     back from the trash
GET, POST           /submissions/<instanceId>/comments
GET                 /submissions/<instanceId>/attachments
GET, POST, DELETE   /submissions/<instanceId>/attachments/<name>
GET                 /submissions/<instanceId>/versions[/<versionId>[.xml]]
GET                 /submissions/<instanceId>/versions/<versionId>/attachments[/<name>]
GET                 /submissions/<instanceId>/audits

Listing: as Central, newest first with ``limit`` and ``offset`` (all records when no limit;
streamed, never built in memory). With ``cursor`` (empty to start), oldest first after the
cursor, ``limit`` per page (100 by default, 1000 at most), and the answer's ``X-Next-Cursor``
and ``Link: <...>; rel="next"`` headers name the cursor to send next: a sync client polls with
it and receives each record exactly once, however late it commits
(:mod:`server.submissions.paging`). The body stays a JSON array, so Central clients read it
unchanged.

The REST create answers Central's way, not Collect's: an instanceID already on the server is
409.3, even with identical XML (for Collect, intake treats that as a harmless retry).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request
from flask_babel import gettext

from server import bounds, db, errors, personal
from server.api.blueprint import bp
from server.api.render import json_body, query_bool, query_int
from server.api.schemas import (
    AuditExtendedOut,
    AuditOut,
    CommentExtendedOut,
    CommentIn,
    CommentOut,
    ReviewIn,
    SubmissionAttachmentOut,
    SubmissionExtendedOut,
    SubmissionOut,
    SubmissionVersionOut,
    SuccessOut,
    documented,
    load,
)
from server.api.sessions import actor_json
from server.audit.models import AuditEvent
from server.audit.services import AuditFilter, list_events
from server.auth import access
from server.auth import services as accounts
from server.auth.models import Actor
from server.forms import services as forms
from server.forms.models import Form
from server.openrosa.protocol import base_url
from server.personal import Disclosure
from server.storage import downloads
from server.submissions import attachments as files
from server.submissions import intake, paging, parsing, services
from server.submissions.models import Submission, SubmissionVersion
from server.submissions.services import SubmissionFilter, SubmissionRow

FORM = "/projects/<int:project_id>/forms/<xml_form_id>"
XML_TYPE = "application/xml"
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _extended() -> bool:
    return request.headers.get("X-Extended-Metadata", "").strip().lower() == "true"


def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view for a form's records and, with ``draft=True``, for its draft's."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        bp.add_url_rule(FORM + rule, view.__name__, view, methods=methods)
        bp.add_url_rule(
            FORM + "/draft" + rule,
            "draft_" + view.__name__,
            view,
            methods=methods,
            defaults={"draft": True},
        )
        return view

    return register


# ---- lookups ---------------------------------------------------------------------------------


def _form(project_id: int, xml_form_id: str, verb: str, draft: bool) -> tuple[Form, int]:
    """Return the form (404 if unknown, or draft-less for draft routes) and the actor's id."""
    form = forms.get_form(db.session(), project_id, xml_form_id, draft=draft)
    return form, access.require_on_form(verb, form).id


def _submission(form: Form, instance_id: str, draft: bool, *, deleted: bool = False) -> Submission:
    return services.get(db.session(), form.id, instance_id, draft=draft, deleted=deleted)


def _row(submission: Submission) -> SubmissionRow:
    return services.row_of(db.session(), submission)


def _actors(ids: set[int | None]) -> dict[int, Actor]:
    return accounts.actors_by_id(db.session(), ids)


# ---- rendering -------------------------------------------------------------------------------


def version_json(
    version: SubmissionVersion, disclosure: Disclosure, form_version: str | None = None
) -> dict[str, Any]:
    """Render one version of a record (its instanceName as the reader may see it)."""
    return SubmissionVersionOut().dump(
        {
            "instanceId": version.instance_id,
            "instanceName": disclosure.instance_name(
                version.raw_instance_name, instance_id=version.instance_id, channel="api"
            ),
            "submitterId": version.submitter_id,
            "deviceId": version.device_id,
            "userAgent": version.user_agent,
            "createdAt": version.created_at,
            "current": version.current,
            "deprecatedId": version.deprecated_id,
            "formVersion": form_version,
            "attachmentsPresent": version.attachments_present,
            "attachmentsExpected": version.attachments_expected,
            "encrypted": version.encrypted,
            "droppedAttachments": dropped_json(version.attachments_dropped, version.dropped_names),
        }
    )


def dropped_json(count: int | None, names: list[str] | None) -> dict[str, Any]:
    """Render the files a version (or a conflict) was sent for no question and did not keep."""
    return {"count": count or 0, "names": list(names or [])}


def submission_json(
    row: SubmissionRow, disclosure: Disclosure, actors: dict[int, Actor] | None = None
) -> dict[str, Any]:
    """Render a record as Central does (more with ``X-Extended-Metadata: true``)."""
    submission, version = row.submission, row.version
    instance_name = disclosure.instance_name(
        version.raw_instance_name, instance_id=submission.instance_id, channel="api"
    )
    body = {
        "instanceId": submission.instance_id,
        "submitterId": submission.submitter_id,
        "deviceId": submission.device_id,
        "userAgent": submission.user_agent,
        "reviewState": submission.review_state,
        "instanceName": instance_name,
        "createdAt": submission.created_at,
        "updatedAt": submission.updated_at,
        "deletedAt": submission.deleted_at,
        "droppedAttachments": dropped_json(version.attachments_dropped, version.dropped_names),
    }
    if actors is None:
        return SubmissionOut().dump(body)
    submitter = actors.get(submission.submitter_id) if submission.submitter_id else None
    body.update(
        submitter=actor_json(submitter) if submitter is not None else None,
        formVersion=row.form_version,
        attachmentsPresent=version.attachments_present,
        attachmentsExpected=version.attachments_expected,
        edits=row.edits,
        currentVersion=version_json(version, disclosure, row.form_version),
    )
    return SubmissionExtendedOut().dump(body)


def _render(row: SubmissionRow, disclosure: Disclosure) -> dict[str, Any]:
    actors = _actors({row.submission.submitter_id}) if _extended() else None
    return submission_json(row, disclosure, actors)


def _disclosure(form: Form) -> Disclosure:
    return personal.for_form(db.session(), form)


def _xml_response(version: SubmissionVersion, disclosure: Disclosure) -> Response:
    shown = disclosure.xml(version.raw_xml, instance_id=version.instance_id, channel="api.xml")
    return Response(shown.encode("utf-8"), content_type=XML_TYPE)


# ---- listing ---------------------------------------------------------------------------------


def _filters(draft: bool) -> SubmissionFilter:
    return SubmissionFilter(draft=draft, deleted=query_bool("deleted", False))


def _next_link(cursor: str, limit: int) -> str:
    params = {k: v for k, v in request.args.items() if k not in ("cursor", "limit")}
    params.update(cursor=cursor, limit=str(limit))
    return f"{base_url()}{request.path}?{urlencode(params)}"


def _cursor_page(form: Form, filters: SubmissionFilter) -> Response:
    """One page of the sync feed: oldest first, strictly after the cursor."""
    if request.args.get("offset"):
        raise errors.UnexpectedValue(
            field="offset", reason=gettext("offset cannot be used with cursor")
        )
    limit = query_int("limit", DEFAULT_PAGE, minimum=1)
    limit = min(limit, MAX_PAGE)
    raw = request.args.get("cursor", "").strip()
    cursor = paging.decode(raw, paging.OLDEST_FIRST) if raw else None
    found = paging.page(db.session(), form.id, filters, cursor=cursor, limit=limit)
    actors = _actors({r.submission.submitter_id for r in found.rows}) if _extended() else None
    disclosure = _disclosure(form)
    response = jsonify([submission_json(r, disclosure, actors) for r in found.rows])
    # With nothing read yet the next request starts at the beginning again (empty cursor).
    token = paging.encode(found.next_cursor, paging.OLDEST_FIRST) if found.next_cursor else ""
    response.headers["X-Next-Cursor"] = token
    response.headers["X-More"] = "true" if found.more else "false"
    response.headers["Link"] = f'<{_next_link(token, limit)}>; rel="next"'
    return response


def _stream_all(
    maker: Callable[[], Any],
    form_id: int,
    filters: SubmissionFilter,
    extended: bool,
    disclosure: Disclosure,
) -> Iterator[str]:
    """Yield the JSON array of every record, newest first, read in batches."""
    # Its own session: the request's is closed when the view returns, before the body streams.
    db_session = maker()
    try:
        yield "["
        first = True
        batch: list[SubmissionRow] = []
        for row in paging.iterate(db_session, form_id, filters):
            batch.append(row)
            if len(batch) == 500:
                yield ("" if first else ",") + _json_rows(db_session, batch, extended, disclosure)
                first, batch = False, []
        if batch:
            yield ("" if first else ",") + _json_rows(db_session, batch, extended, disclosure)
        yield "]"
    finally:
        db_session.rollback()
        db_session.close()


def _json_rows(
    db_session: Any, rows: list[SubmissionRow], extended: bool, disclosure: Disclosure
) -> str:
    actors = None
    if extended:
        actors = accounts.actors_by_id(db_session, (r.submission.submitter_id for r in rows))
    return ",".join(json.dumps(submission_json(r, disclosure, actors)) for r in rows)


@route("/submissions", ["GET"])
@documented(
    response=SubmissionExtendedOut,
    many=True,
    query={
        "limit": "integer",
        "offset": "integer",
        "cursor": "string",
        "deleted": "boolean",
    },
)
def list_submissions(project_id: int, xml_form_id: str, draft: bool = False) -> Response:
    """List a form's records: newest first (limit/offset), or a page after ``cursor``."""
    form, _ = _form(project_id, xml_form_id, "submission.list", draft)
    filters = _filters(draft)
    if "cursor" in request.args:
        return _cursor_page(form, filters)
    limit = query_int("limit", None)
    offset = query_int("offset", 0) or 0
    disclosure = _disclosure(form)
    if limit is None and not offset:
        # The body streams after the request ends: what it shows is noted (audited) now.
        disclosure.note_listing("api")
        return Response(
            _stream_all(db.database().read_sessionmaker, form.id, filters, _extended(), disclosure),
            content_type="application/json",
        )
    found = paging.page(
        db.session(),
        form.id,
        filters,
        order=paging.NEWEST_FIRST,
        offset=offset,
        limit=limit if limit is not None else 2**31,
    )
    actors = _actors({r.submission.submitter_id for r in found.rows}) if _extended() else None
    return jsonify([submission_json(r, disclosure, actors) for r in found.rows])


# ---- one record ------------------------------------------------------------------------------


@route("/submissions/<instance_id>", ["GET"])
@documented(response=SubmissionExtendedOut)
def get_submission(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Return one record (by its first instanceID or a later version's)."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    return jsonify(_render(_row(_submission(form, instance_id, draft)), _disclosure(form)))


@route("/submissions/<instance_id>.xml", ["GET"])
@documented(content=XML_TYPE)
def submission_xml(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Serve the XML of the record's current version, exactly as received."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    submission = _submission(form, instance_id, draft)
    return _xml_response(services.current_version(db.session(), submission), _disclosure(form))


def _read_xml(xml_form_id: str) -> tuple[bytes, parsing.ParsedSubmission]:
    """Read a REST body as a record of this form (400 when it is not)."""
    body = request.get_data(cache=False)
    if not body:
        raise errors.MissingParameter(field="body (the record's XML)")
    parsed = parsing.read_submission(body)
    if parsed.form_id != xml_form_id:
        raise errors.UnexpectedValue(
            field="form id",
            reason=gettext("the record is of form %(found)s, not %(expected)s")
            % {"found": parsed.form_id, "expected": xml_form_id},
        )
    return body, parsed


def _known(form: Form, instance_id: str, draft: bool) -> bool:
    return services.instance_id_known(db.session(), form.id, instance_id, draft=draft)


def _receive(form: Form, body: bytes, actor_id: int, draft: bool, **options: Any):
    return intake.receive(
        db.session(),
        project_id=form.project_id,
        xml=body,
        files=[],
        actor_id=actor_id,
        device_id=(request.args.get("deviceID") or "").strip()[:255] or None,
        user_agent=request.user_agent.string or None,
        draft=draft,
        **options,
    )


@route("/submissions", ["POST"])
@documented(response=SubmissionOut, body_content=XML_TYPE)
def create_submission(project_id: int, xml_form_id: str, draft: bool = False):
    """Create a record from its XML (``?deviceID=``); an instanceID already here is 409.3."""
    form, actor_id = _form(project_id, xml_form_id, "submission.create", draft)
    body, parsed = _read_xml(xml_form_id)
    if parsed.instance_id and _known(form, parsed.instance_id, draft):
        raise errors.Conflict(fields="instanceID", values=parsed.instance_id)
    try:
        receipt = _receive(form, body, actor_id, draft)
    except errors.XmlConflict:
        # Only when another request stored the same instanceID meanwhile: say it Central's way.
        raise errors.Conflict(fields="instanceID", values=parsed.instance_id) from None
    if receipt.outcome == "duplicate":
        raise errors.Conflict(fields="instanceID", values=receipt.instance_id)
    submission = services.by_id(db.session(), receipt.submission_id)
    return jsonify(_render(_row(submission), _disclosure(form)))


@route("/submissions/<instance_id>", ["PUT"])
@documented(response=SubmissionOut, body_content=XML_TYPE)
def edit_submission(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Edit a record: XML whose meta/deprecatedID names the current version (else 400.19)."""
    form, actor_id = _form(project_id, xml_form_id, "submission.update", draft)
    submission = _submission(form, instance_id, draft)
    body, parsed = _read_xml(xml_form_id)
    current = services.current_version(db.session(), submission)
    if not parsed.deprecated_id or parsed.deprecated_id != current.instance_id:
        raise errors.ExpectedDeprecation(
            deprecatedId=parsed.deprecated_id, currentInstanceId=current.instance_id
        )
    if parsed.instance_id is None:
        raise errors.MissingParameter(field="meta/instanceID")
    if _known(form, parsed.instance_id, draft):
        raise errors.InstanceIdConflict(instance_id=parsed.instance_id)
    receipt = _receive(form, body, actor_id, draft, require_deprecation=True)
    if receipt.outcome != "edited":
        raise errors.InstanceIdConflict(instance_id=receipt.instance_id)
    submission = services.by_id(db.session(), submission.id)  # as the edit left it
    return jsonify(_render(_row(submission), _disclosure(form)))


@route("/submissions/<instance_id>", ["PATCH"])
@documented(body=ReviewIn, response=SubmissionOut)
def review_submission(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Set a record's review state: hasIssues, edited, approved or rejected."""
    form, actor_id = _form(project_id, xml_form_id, "submission.update", draft)
    submission = _submission(form, instance_id, draft)
    state = load(ReviewIn(), json_body())["reviewState"]
    services.set_review_state(
        db.session(), submission, state, actor_id=actor_id, project_id=project_id
    )
    return jsonify(_render(_row(submission), _disclosure(form)))


@route("/submissions/<instance_id>", ["DELETE"])
@documented(response=SuccessOut)
def delete_submission(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Move a record to the trash (a tablet sending it again gets 409.18)."""
    form, actor_id = _form(project_id, xml_form_id, "submission.delete", draft)
    submission = _submission(form, instance_id, draft)
    services.delete(db.session(), submission, actor_id=actor_id, project_id=project_id)
    return jsonify({"success": True})


@route("/submissions/<instance_id>/restore", ["POST"])
@documented(response=SubmissionOut)
def restore_submission(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Bring a record back from the trash."""
    form, actor_id = _form(project_id, xml_form_id, "submission.delete", draft)
    submission = _submission(form, instance_id, draft, deleted=True)
    services.restore(db.session(), submission, actor_id=actor_id, project_id=project_id)
    return jsonify(_render(_row(submission), _disclosure(form)))


# ---- comments --------------------------------------------------------------------------------


def comment_json(comment: Any, actors: dict[int, Actor] | None) -> dict[str, Any]:
    """Render a comment as Central does."""
    body = {"body": comment.body, "actorId": comment.actor_id, "createdAt": comment.created_at}
    if actors is None:
        return CommentOut().dump(body)
    actor = actors.get(comment.actor_id) if comment.actor_id else None
    body["actor"] = actor_json(actor) if actor is not None else None
    return CommentExtendedOut().dump(body)


@route("/submissions/<instance_id>/comments", ["GET"])
@documented(response=CommentExtendedOut, many=True)
def list_comments(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """List a record's comments, oldest first."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    rows = services.comments(db.session(), _submission(form, instance_id, draft))
    actors = _actors({c.actor_id for c, _name in rows}) if _extended() else None
    return jsonify([comment_json(c, actors) for c, _name in rows])


@route("/submissions/<instance_id>/comments", ["POST"])
@documented(body=CommentIn, response=CommentOut)
def add_comment(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """Comment on a record ({body}); comments are never edited or deleted."""
    form, actor_id = _form(project_id, xml_form_id, "submission.update", draft)
    submission = _submission(form, instance_id, draft)
    body = load(CommentIn(), json_body())["body"]
    if not body.strip():
        raise errors.MissingParameter(field="body")
    comment = services.add_comment(
        db.session(), submission, body, actor_id=actor_id, project_id=project_id
    )
    return jsonify(comment_json(comment, None))


# ---- attachments -----------------------------------------------------------------------------


def _attachment_list(version: SubmissionVersion) -> Response:
    rows = services.attachments(db.session(), version)
    return jsonify(
        [
            SubmissionAttachmentOut().dump({"name": a.name, "exists": a.blob_id is not None})
            for a, _blob in rows
        ]
    )


def _send_attachment(version: SubmissionVersion, name: str, disclosure: Disclosure) -> Response:
    found = services.attachment_named(db.session(), version, name)
    if found is None or found[1] is None:
        raise errors.NotFound()
    attachment, blob = found
    disclosure.check_file(
        version.raw_document,
        attachment.name,
        instance_id=version.instance_id,
        channel="api.attachment",
    )
    content_type = attachment.content_type or "application/octet-stream"
    return downloads.send_blob(blob, attachment.name, content_type, inline=True)


@route("/submissions/<instance_id>/attachments", ["GET"])
@documented(response=SubmissionAttachmentOut, many=True)
def list_submission_attachments(
    project_id: int, xml_form_id: str, instance_id: str, draft: bool = False
):
    """List the files the current version names, and whether each has arrived."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    submission = _submission(form, instance_id, draft)
    return _attachment_list(services.current_version(db.session(), submission))


@route("/submissions/<instance_id>/attachments/<path:name>", ["GET"])
@documented(content="application/octet-stream")
def download_attachment(
    project_id: int, xml_form_id: str, instance_id: str, name: str, draft: bool = False
):
    """Download one file of the current version (ETag, Range)."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    submission = _submission(form, instance_id, draft)
    version = services.current_version(db.session(), submission)
    return _send_attachment(version, name, _disclosure(form))


@route("/submissions/<instance_id>/attachments/<path:name>", ["POST"])
@documented(response=SuccessOut, body_content="application/octet-stream")
def upload_attachment(
    project_id: int, xml_form_id: str, instance_id: str, name: str, draft: bool = False
):
    """Upload (or replace) a file the current version names; the body is the file."""
    form, actor_id = _form(project_id, xml_form_id, "submission.update", draft)
    submission = _submission(form, instance_id, draft)
    files.upload(
        db.session(),
        submission,
        name,
        request.stream,
        content_type=request.mimetype or None,
        actor_id=actor_id,
        project_id=project_id,
    )
    return jsonify({"success": True})


@route("/submissions/<instance_id>/attachments/<path:name>", ["DELETE"])
@documented(response=SuccessOut)
def clear_attachment(
    project_id: int, xml_form_id: str, instance_id: str, name: str, draft: bool = False
):
    """Clear a file of the current version (it can be uploaded again)."""
    form, actor_id = _form(project_id, xml_form_id, "submission.update", draft)
    submission = _submission(form, instance_id, draft)
    files.clear(db.session(), submission, name, actor_id=actor_id, project_id=project_id)
    return jsonify({"success": True})


# ---- versions --------------------------------------------------------------------------------


def _form_versions(ids: set[int]) -> dict[int, str]:
    return services.form_version_names(db.session(), ids)


@route("/submissions/<instance_id>/versions", ["GET"])
@documented(response=SubmissionVersionOut, many=True)
def list_submission_versions(
    project_id: int, xml_form_id: str, instance_id: str, draft: bool = False
):
    """List every version of a record (edits), newest first."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    found = services.versions(db.session(), _submission(form, instance_id, draft))
    names = _form_versions({v.form_version_id for v in found})
    disclosure = _disclosure(form)
    return jsonify([version_json(v, disclosure, names.get(v.form_version_id)) for v in found])


def _version(form: Form, instance_id: str, version_id: str, draft: bool) -> SubmissionVersion:
    submission = _submission(form, instance_id, draft)
    return services.version(db.session(), submission, version_id)


@route("/submissions/<instance_id>/versions/<version_id>", ["GET"])
@documented(response=SubmissionVersionOut)
def get_version(
    project_id: int, xml_form_id: str, instance_id: str, version_id: str, draft: bool = False
):
    """Return one version of a record."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    found = _version(form, instance_id, version_id, draft)
    names = _form_versions({found.form_version_id})
    return jsonify(version_json(found, _disclosure(form), names.get(found.form_version_id)))


@route("/submissions/<instance_id>/versions/<version_id>.xml", ["GET"])
@documented(content=XML_TYPE)
def submission_version_xml(
    project_id: int, xml_form_id: str, instance_id: str, version_id: str, draft: bool = False
):
    """Serve one version's XML, exactly as received."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    return _xml_response(_version(form, instance_id, version_id, draft), _disclosure(form))


@route("/submissions/<instance_id>/versions/<version_id>/attachments", ["GET"])
@documented(response=SubmissionAttachmentOut, many=True)
def list_version_attachments(
    project_id: int, xml_form_id: str, instance_id: str, version_id: str, draft: bool = False
):
    """List the files one version names."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    return _attachment_list(_version(form, instance_id, version_id, draft))


@route("/submissions/<instance_id>/versions/<version_id>/attachments/<path:name>", ["GET"])
@documented(content="application/octet-stream")
def download_version_attachment(
    project_id: int,
    xml_form_id: str,
    instance_id: str,
    version_id: str,
    name: str,
    draft: bool = False,
):
    """Download one file of one version."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    return _send_attachment(_version(form, instance_id, version_id, draft), name, _disclosure(form))


# ---- audit log -------------------------------------------------------------------------------


def audit_json(
    event: AuditEvent, xml_form_id: str | None, actors: dict[int, Actor] | None
) -> dict[str, Any]:
    """Render an audit event in Central's shape (plus ids naming what it touched)."""
    body = {
        "id": event.id,
        "actorId": event.actor_id,
        "action": event.action,
        "acteeId": None,
        "projectId": event.project_id,
        "xmlFormId": xml_form_id,
        "details": event.details,
        "loggedAt": event.logged_at,
    }
    if actors is None:
        return AuditOut().dump(body)
    actor = actors.get(event.actor_id) if event.actor_id else None
    body["actor"] = actor_json(actor) if actor is not None else None
    return AuditExtendedOut().dump(body)


@route("/submissions/<instance_id>/audits", ["GET"])
@documented(response=AuditExtendedOut, many=True)
def submission_audits(project_id: int, xml_form_id: str, instance_id: str, draft: bool = False):
    """List what happened to a record, oldest first."""
    form, _ = _form(project_id, xml_form_id, "submission.read", draft)
    rows = services.audit_events(db.session(), _submission(form, instance_id, draft))
    actors = _actors({e.actor_id for e, _name in rows}) if _extended() else None
    return jsonify([audit_json(e, form.xml_form_id, actors) for e, _name in rows])


def _when(name: str, *, end: bool = False) -> dt.datetime | None:
    """Read a date or timestamp; a bare date as ``end`` includes that whole day (Central)."""
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return bounds.moment(raw, end=end)
    except bounds.OutOfBounds as exc:
        raise errors.UnexpectedValue(field=name, reason=exc.reason) from None


@bp.get("/audits")
@documented(
    response=AuditExtendedOut,
    many=True,
    query={"action": "string", "start": "string", "end": "string", "limit": "integer"},
)
def server_audits():
    """Read the server's audit log, newest first (administrators): action, start, end, paging."""
    access.require("audit.read")
    limit = min(query_int("limit", 100, minimum=1), MAX_PAGE)
    offset = query_int("offset", 0) or 0
    filters = AuditFilter(
        action=request.args.get("action"), start=_when("start"), end=_when("end", end=True)
    )
    # list_events pages by id; an offset is walked in steps of at most one page.
    rows = list_events(db.session(), filters, limit=limit + offset)[offset:]
    actors = _actors({r.event.actor_id for r in rows}) if _extended() else None
    return jsonify([audit_json(r.event, r.xml_form_id, actors) for r in rows])
