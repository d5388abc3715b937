"""Project and its managed encryption key."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime, utcnow


class ProjectKey(Base):
    """A key pair for encrypted forms.

    Managed keys keep the private key encrypted under a passphrase that only the project
    manager knows (``private`` holds the salt, nonce and ciphertext); self-managed forms carry
    their own public key and nothing private is ever stored.
    """

    __tablename__ = "project_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    public: Mapped[str] = mapped_column(sa.Text)
    private: Mapped[dict | None] = mapped_column(sa.JSON)
    managed: Mapped[bool] = mapped_column(default=False)
    hint: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Project(Base):
    """A programme's unit of work: forms, app users, members and entity lists."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.Text)
    archived: Mapped[bool] = mapped_column(default=False)
    key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("project_keys.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
