"""Datasets, their properties, entities and entity versions."""

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

    __table_args__ = (
        sa.UniqueConstraint("entity_id", "version"),
        sa.Index(
            "uq_entity_versions_current",
            "entity_id",
            unique=True,
            sqlite_where=sa.text("current"),
            postgresql_where=sa.text("current"),
        ),
    )
