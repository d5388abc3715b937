"""The audit log: the one place an event is made (in the caller's transaction), and read.

Every event goes through :func:`event` (its row) and :func:`record` (its insertion, ORM or
Core alike), so that its columns and its action name are stated once. The actions are the table
below, with what each means in words a coordinator reads (the console shows these, in French or
English; the API shows the code, as Central does). An action not in the table is refused: an
event nobody can read back is a bug.

Every change of who may do what is recorded by the service that makes it (accounts, roles,
app users, public links, projects): the interfaces (API, console, command line) cannot forget it.
``tests/integration/test_route_matrix.py`` checks it for every route.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask_babel import lazy_gettext
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.auth import roles
from server.auth.models import Actor
from server.db import utcnow
from server.forms.models import Form
from server.projects.models import Project
from server.submissions.models import REVIEW_STATE_WORDS

ACTIONS: Mapping[str, Any] = {
    # accounts and roles: who may do what
    "user.create": lazy_gettext("Account created"),
    "user.update": lazy_gettext("Account changed"),
    "user.password.change": lazy_gettext("Password changed"),
    "user.delete": lazy_gettext("Account deleted"),
    "assignment.create": lazy_gettext("Role given"),
    "assignment.delete": lazy_gettext("Role taken away"),
    "field_key.create": lazy_gettext("App user (tablet) created"),
    "field_key.revoke": lazy_gettext("App user (tablet) access revoked"),
    "field_key.delete": lazy_gettext("App user (tablet) deleted"),
    "public_link.create": lazy_gettext("Public link created"),
    "public_link.revoke": lazy_gettext("Public link revoked"),
    "public_link.delete": lazy_gettext("Public link deleted"),
    # projects
    "project.create": lazy_gettext("Project created"),
    "project.update": lazy_gettext("Project changed"),
    "project.delete": lazy_gettext("Project deleted"),
    # forms
    "form.create": lazy_gettext("Form created"),
    "form.update.draft.set": lazy_gettext("Draft uploaded"),
    "form.update.draft.delete": lazy_gettext("Draft discarded"),
    "form.update.publish": lazy_gettext("Form version published"),
    "form.update.state": lazy_gettext("Form state changed"),
    "form.attachment.update": lazy_gettext("Form media file attached"),
    # records
    "submission.create": lazy_gettext("Submission received"),
    "submission.update": lazy_gettext("Review state changed"),
    "submission.update.version": lazy_gettext("Submission edited"),
    "submission.delete": lazy_gettext("Submission moved to the trash"),
    "submission.restore": lazy_gettext("Submission restored from the trash"),
    "submission.attachment.update": lazy_gettext("Submission file uploaded"),
    "submission.attachment.clear": lazy_gettext("Submission file cleared"),
    "submission.pii.read": lazy_gettext("Personal data read in clear"),
    "submission.conflict.create": lazy_gettext(
        "Submission sent again with other answers, kept for review"
    ),
    "submission.conflict.keep": lazy_gettext("Conflict settled: the first submission kept"),
    "submission.conflict.take": lazy_gettext(
        "Conflict settled: the second submission taken as an edit"
    ),
    "submission.conflict.discard": lazy_gettext(
        "Conflict settled: the second submission discarded"
    ),
    "comment.create": lazy_gettext("Comment added"),
    # exports and cleaning
    "submission.export": lazy_gettext("Submissions exported"),
    "export.corrections.create": lazy_gettext("Cleaning log uploaded"),
    "export.corrections.delete": lazy_gettext("Correction revoked"),
    # entity lists
    "dataset.create": lazy_gettext("Entity list created"),
    "dataset.update": lazy_gettext("Entity list changed"),
    "entity.create": lazy_gettext("Entity created"),
    "entity.bulk.create": lazy_gettext("Entities created"),
    "entity.update.version": lazy_gettext("Entity changed"),
    "entity.delete": lazy_gettext("Entity deleted"),
    "entity.update.resolve": lazy_gettext("Entity conflict resolved"),
    "entity.error": lazy_gettext("Entity not applied from a submission"),
    "submission.backlog.hold": lazy_gettext("Entity update held until the earlier one arrives"),
    "submission.backlog.reprocess": lazy_gettext("Held entity update applied in order"),
    "submission.backlog.force": lazy_gettext("Held entity update applied after the wait"),
}


def describe(action: str) -> str:
    """Return what an action means, in the current language (the code if unknown)."""
    found = ACTIONS.get(action)
    return str(found) if found is not None else action


# What the keys of an event's details are called where people read them (the console; the API
# shows the JSON). A key not here is shown as it is written.
DETAILS: Mapping[str, Any] = {
    "actorId": lazy_gettext("Account number"),
    "email": lazy_gettext("Email"),
    "name": lazy_gettext("Name"),
    "displayName": lazy_gettext("Name"),
    "roleId": lazy_gettext("Role"),
    "instanceId": lazy_gettext("Record"),
    "instanceIds": lazy_gettext("Records"),
    "reviewState": lazy_gettext("Review state"),
    "previousReviewState": lazy_gettext("Previous review state"),
    "xmlFormId": lazy_gettext("Form ID"),
    "version": lazy_gettext("Version"),
    "copied": lazy_gettext("Copied from the published version"),
    "hash": lazy_gettext("Fingerprint (MD5)"),
    "md5": lazy_gettext("Fingerprint (MD5)"),
    "state": lazy_gettext("State"),
    "blobId": lazy_gettext("File number"),
    "batch": lazy_gettext("Batch"),
    "accepted": lazy_gettext("Accepted"),
    "refused": lazy_gettext("Refused"),
    "encrypted": lazy_gettext("Encrypted"),
    "keyId": lazy_gettext("Key number"),
    "dataset": lazy_gettext("Entity list"),
    "count": lazy_gettext("Count"),
    "source": lazy_gettext("Source"),
    "uuid": lazy_gettext("Entity"),
    "property": lazy_gettext("Property"),
    "properties": lazy_gettext("Properties"),
    "form": lazy_gettext("Form"),
    "conflict": lazy_gettext("Conflict"),
    "submissionDefId": lazy_gettext("Submission version number"),
    "errorMessage": lazy_gettext("Reason"),
    "problem": lazy_gettext("Problem code"),
    "approvalRequired": lazy_gettext("Approval required"),
    "format": lazy_gettext("Format"),
    "options": lazy_gettext("Options"),
    "via": lazy_gettext("Through"),
    "channel": lazy_gettext("Read through"),
    "path": lazy_gettext("Address"),
    "allRecords": lazy_gettext("Every record"),
    "id": lazy_gettext("Number"),
    "key": lazy_gettext("Record key"),
    "column": lazy_gettext("Column"),
}

# Values shown in words: a form's state, by the key that holds it.
_FORM_STATES = {
    "open": lazy_gettext("Open"),
    "closing": lazy_gettext("Closing"),
    "closed": lazy_gettext("Closed"),
}


def detail_lines(details: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Return an event's details as (what, value) lines in the reader's language."""
    lines = []
    for key, value in (details or {}).items():
        if value is None or value == [] or value == {}:
            continue
        if key == "roleId":
            shown = roles.word(value)
        elif key in ("reviewState", "previousReviewState"):
            shown = str(REVIEW_STATE_WORDS.get(value, value))
        elif key == "state":
            shown = str(_FORM_STATES.get(value, value))
        else:
            shown = _plain(value)
        lines.append((str(DETAILS.get(key, key)), shown))
    return lines


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(lazy_gettext("yes") if value else lazy_gettext("no"))
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items() if v not in (None, ""))
    return str(value)


def event(
    action: str,
    *,
    actor_id: int | None,
    project_id: int | None = None,
    form_id: int | None = None,
    submission_id: int | None = None,
    entity_id: int | None = None,
    details: dict[str, Any] | None = None,
    logged_at: Any = None,
) -> dict[str, Any]:
    """Return the row of an audit event (``actor_id`` None: the server itself)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to server/audit/services.py")
    return {
        "action": action,
        "actor_id": actor_id,
        "project_id": project_id,
        "form_id": form_id,
        "submission_id": submission_id,
        "entity_id": entity_id,
        "details": details,
        "logged_at": logged_at or utcnow(),
    }


def record(db_session: Session, action: str, **fields: Any) -> AuditEvent:
    """Add an audit event to the caller's transaction (kept exactly when the action is)."""
    row = AuditEvent(**event(action, **fields))
    db_session.add(row)
    return row


# ---- reading the log: filtered, newest first, paged by id (never by offset) -----------------


@dataclass
class AuditFilter:
    """Which events to read (all optional)."""

    # None: every project and the site-wide events; a set: only these projects' events.
    project_ids: Collection[int] | None = None
    action: str | None = None  # "submission" matches submission.update, submission.delete...
    start: dt.datetime | None = None
    end: dt.datetime | None = None  # exclusive
    before_id: int | None = None  # paging: events older than this one


@dataclass(frozen=True)
class AuditRow:
    """An event with the names a person reads instead of ids."""

    event: AuditEvent
    actor_name: str | None
    project_name: str | None
    xml_form_id: str | None


def list_events(db_session: Session, filters: AuditFilter, *, limit: int = 50) -> list[AuditRow]:
    """Return one page of events, newest first."""
    query = (
        sa.select(AuditEvent, Actor.display_name, Project.name, Form.xml_form_id)
        .outerjoin(Actor, Actor.id == AuditEvent.actor_id)
        .outerjoin(Project, Project.id == AuditEvent.project_id)
        .outerjoin(Form, Form.id == AuditEvent.form_id)
    )
    if filters.project_ids is not None:
        query = query.where(AuditEvent.project_id.in_(list(filters.project_ids) or [-1]))
    action = (filters.action or "").strip()
    if action:
        query = query.where(
            sa.or_(AuditEvent.action == action, AuditEvent.action.like(f"{action}.%"))
        )
    if filters.start is not None:
        query = query.where(AuditEvent.logged_at >= filters.start)
    if filters.end is not None:
        query = query.where(AuditEvent.logged_at < filters.end)
    if filters.before_id is not None:
        query = query.where(AuditEvent.id < filters.before_id)
    rows = db_session.execute(query.order_by(AuditEvent.id.desc()).limit(limit)).all()
    return [AuditRow(event, actor, project, form) for event, actor, project, form in rows]
