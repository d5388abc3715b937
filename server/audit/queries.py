"""Reading the audit log: filtered, newest first, paged by id (never by offset)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit.models import AuditEvent
from server.auth.models import Actor
from server.forms.models import Form
from server.projects.models import Project


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
