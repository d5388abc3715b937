"""Writing the audit log: one call per action, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.audit.models import AuditEvent


def record(
    db_session: Session,
    action: str,
    *,
    actor_id: int | None = None,
    project_id: int | None = None,
    form_id: int | None = None,
    submission_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event (``form.create``, ``form.update.publish``...); the caller commits.

    The event belongs to the caller's transaction, so it is kept exactly when the action is.
    """
    event = AuditEvent(
        action=action,
        actor_id=actor_id,
        project_id=project_id,
        form_id=form_id,
        submission_id=submission_id,
        details=details,
    )
    db_session.add(event)
    return event
