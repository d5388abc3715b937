"""The cleaning log: corrections analysts upload, applied in exports, never in the raw data."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, UTCDateTime, utcnow


class Correction(Base):
    """One accepted correction: in record ``key``, ``column`` goes from old to new value."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    submission_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="CASCADE")
    )
    # The row's KEY as exported: the record's instanceID, or a repeat row's KEY.
    key: Mapped[str] = mapped_column(sa.String(512))
    column: Mapped[str] = mapped_column(sa.String(512))
    old_value: Mapped[str | None] = mapped_column(sa.Text)
    new_value: Mapped[str | None] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    batch: Mapped[str] = mapped_column(sa.String(64))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_corrections_form_id_key", "form_id", "key"),)
