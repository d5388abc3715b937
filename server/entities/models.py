"""Datasets, their properties, entities, entity versions and records held for offline order."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONDocument, UTCDateTime, utcnow


class Dataset(Base):
    """An entity list of a project."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(sa.String(255))
    approval_required: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Raised in the transaction of every change to what the list's CSV holds (an entity
    # created, changed or deleted, a property added): the key of the cached CSV hash.
    revision: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # The MD5 and size of the CSV served to tablets, as computed at ``csv_revision``.
    csv_revision: Mapped[int | None] = mapped_column(sa.BigInteger)
    csv_md5: Mapped[str | None] = mapped_column(sa.String(32))

    __table_args__ = (sa.UniqueConstraint("project_id", "name"),)


class DatasetProperty(Base):
    """A property (column) of an entity list."""

    __tablename__ = "dataset_properties"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.UniqueConstraint("dataset_id", "name"),)


class Entity(Base):
    """One entity, named by its UUID within its list."""

    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="CASCADE"))
    uuid: Mapped[str] = mapped_column(sa.String(64))
    creator_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Central's entity-level conflict: None, "soft" or "hard"; cleared when resolved.
    conflict: Mapped[str | None] = mapped_column(sa.String(10))

    __table_args__ = (
        sa.UniqueConstraint("dataset_id", "uuid"),
        sa.Index("ix_entities_dataset_id_id", "dataset_id", "id"),
        {"sqlite_autoincrement": True},
    )


class EntityVersion(Base):
    """One version of an entity: its label and property values."""

    __tablename__ = "entity_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entity_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("entities.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(default=1)
    base_version: Mapped[int | None]
    current: Mapped[bool] = mapped_column(default=True)
    label: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    creator_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    source: Mapped[dict | None] = mapped_column(sa.JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The record version that made this version (None: made through the API).
    submission_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="SET NULL"), index=True
    )
    submission_version_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("submission_versions.id", ondelete="SET NULL")
    )
    # Offline entities (entities-version 2024.1): the tablet's branch, the server version it
    # branched from, and the version this one was based on within the branch.
    branch_id: Mapped[str | None] = mapped_column(sa.String(64))
    trunk_version: Mapped[int | None]
    branch_base_version: Mapped[int | None]
    # "soft" or "hard" when the update was based on an older version than the current one.
    conflict: Mapped[str | None] = mapped_column(sa.String(10))
    conflicting_properties: Mapped[list | None] = mapped_column(sa.JSON)

    __table_args__ = (
        sa.UniqueConstraint("entity_id", "version"),
        sa.Index("ix_entity_versions_branch", "entity_id", "branch_id", "branch_base_version"),
        sa.Index(
            "uq_entity_versions_current",
            "entity_id",
            unique=True,
            sqlite_where=sa.text("current"),
            postgresql_where=sa.text("current"),
        ),
    )


class EntityBacklog(Base):
    """A record's entity update held until the tablet's earlier update of it arrives.

    Collect numbers the updates a tablet makes offline on one branch; an update whose
    predecessor on that branch has not reached the server waits here, and is applied when the
    predecessor is (or, after ``MERIT_ENTITY_BACKLOG_HOURS``, on top of the latest version).
    """

    __tablename__ = "entity_backlog"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="CASCADE"))
    submission_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="CASCADE")
    )
    submission_version_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submission_versions.id", ondelete="CASCADE")
    )
    entity_uuid: Mapped[str] = mapped_column(sa.String(64))
    branch_id: Mapped[str] = mapped_column(sa.String(64))
    branch_base_version: Mapped[int]
    held_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("submission_version_id", "entity_uuid"),
        sa.Index("ix_entity_backlog_branch", "entity_uuid", "branch_id", "branch_base_version"),
        sa.Index("ix_entity_backlog_held_at", "held_at"),
        {"sqlite_autoincrement": True},
    )
