"""The audit log, for administrators (everything) and managers (their projects' events)."""

from __future__ import annotations

from flask import Response, request
from flask_babel import gettext, lazy_gettext

from server import db, errors
from server.audit import services as audit
from server.auth import access
from server.projects import services as projects
from server.web import common
from server.web.views import bp

# Families of actions offered in the filter; an event's own action is shown as recorded.
ACTIONS = {
    "submission": lazy_gettext("Submissions (received, reviewed, edited, deleted)"),
    "submission.update": lazy_gettext("Reviews of submissions"),
    "submission.export": lazy_gettext("Exports"),
    "comment": lazy_gettext("Comments"),
    "form": lazy_gettext("Forms (uploads, drafts, publications, states, media)"),
    "form.update.publish": lazy_gettext("Form publications"),
    "export.corrections": lazy_gettext("Cleaning log"),
    "field_key": lazy_gettext("App users (tablets)"),
    "assignment": lazy_gettext("Roles and form assignments"),
    "user": lazy_gettext("Accounts"),
    "project": lazy_gettext("Projects"),
}


def _readable_projects() -> set[int] | None:
    """Return the projects whose log the actor may read (None: all, and site events)."""
    if access.can("audit.read"):
        return None
    visible = access.visible_project_ids() or set()
    return {p for p in visible if access.can("audit.read", project_id=p)}


@bp.get("/audit")
def audit_log() -> Response:
    """Show the audit log: who did what and when, newest first, with filters and paging."""
    access.require_actor()
    allowed = _readable_projects()
    if allowed is not None and not allowed:
        raise errors.Forbidden()
    args = request.args
    project_id = common.parse_int(args.get("project"), gettext("Project"))
    chosen = allowed if project_id is None else {project_id}
    if project_id is not None and allowed is not None and project_id not in allowed:
        raise errors.Forbidden()
    start = common.parse_date("from", args.get("from"), gettext("From"))
    end = common.parse_date("to", args.get("to"), gettext("To"))
    action = args.get("action", "").strip()
    if action and action not in ACTIONS:
        raise errors.FieldValueRefused(field=gettext("Action"), reason=gettext("unknown action"))
    before = common.parse_int(args.get("before"), "before")
    db_session = db.session()
    rows = audit.list_events(
        db_session,
        audit.AuditFilter(
            project_ids=chosen,
            action=action or None,
            start=common.start_of(start),
            end=common.start_of(end, next_day=True),
            before_id=before,
        ),
        limit=common.PAGE_SIZE + 1,
    )
    more = len(rows) > common.PAGE_SIZE
    rows = rows[: common.PAGE_SIZE]
    raw = {
        "project": args.get("project", ""),
        "from": args.get("from", ""),
        "to": args.get("to", ""),
        "action": action,
    }
    return common.page(
        "web/audit.html",
        rows=rows,
        raw=raw,
        actions=ACTIONS,
        projects=projects.visible(db_session, allowed),
        older_url=common.query_url("web.audit_log", {**raw, "before": rows[-1].event.id})
        if more and rows
        else None,
        first_url=common.query_url("web.audit_log", raw) if before is not None else None,
    )
