"""Audit events."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONDocument, UTCDateTime, utcnow


class AuditEvent(Base):
    """One action: its actor, its verb (``submission.create``, ``form.update.publish``...),
    what it touched and the details (options of an export, review state set...)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(64))
    project_id: Mapped[int | None] = mapped_column(sa.ForeignKey("projects.id"), index=True)
    form_id: Mapped[int | None] = mapped_column(sa.ForeignKey("forms.id", ondelete="SET NULL"))
    submission_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="SET NULL"), index=True
    )
    entity_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("entities.id", ondelete="SET NULL")
    )
    details: Mapped[dict | None] = mapped_column(JSONDocument)
    logged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    __table_args__ = (
        sa.Index("ix_audit_events_action_logged_at", "action", "logged_at"),
        {"sqlite_autoincrement": True},
    )
