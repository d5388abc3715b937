"""Forms, their versions (compiled XForms with the field schema) and their media files."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, JSONDocument, UTCDateTime, utcnow
from server.forms.schema import FormSchema

FORM_STATES = ("open", "closing", "closed")


class Form(Base):
    """A form of a project, known to ODK Collect by its formID (``xml_form_id``).

    ``current_version_id`` is the published version tablets receive; ``draft_version_id`` the
    draft being prepared, if any.
    """

    __tablename__ = "forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    xml_form_id: Mapped[str] = mapped_column(sa.String(255))
    state: Mapped[str] = mapped_column(sa.String(10), default="open")
    current_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("form_versions.id", use_alter=True, name="fk_forms_current_version")
    )
    draft_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("form_versions.id", use_alter=True, name="fk_forms_draft_version")
    )
    key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("project_keys.id"))
    # Paths of the questions whose answers the console's submissions table shows (a few).
    list_columns: Mapped[list | None] = mapped_column(sa.JSON)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("project_id", "xml_form_id"),
        sa.CheckConstraint(f"state IN {FORM_STATES!r}", name="state"),
    )


class FormVersion(Base):
    """One compiled XForm: its exact bytes, their hashes, its source spreadsheet and schema.

    ``hash`` is the MD5 of exactly the bytes served to ODK Collect (openrosa.md §2): the XML
    text is stored and served unchanged, never re-serialised.
    """

    __tablename__ = "form_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(sa.String(255), default="")
    title: Mapped[str | None] = mapped_column(sa.Text)
    xml: Mapped[str] = mapped_column(sa.Text)
    hash: Mapped[str] = mapped_column(sa.String(32))
    # MD5 of the XForm as compiled from the upload, before the server added anything to it
    # (a managed encryption key): what the repository workflow compares with forms/.
    source_hash: Mapped[str | None] = mapped_column(sa.String(32))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    schema: Mapped[dict] = mapped_column(JSONDocument)
    # The spreadsheet the coordinator uploaded, kept with the version it produced.
    xls_blob_id: Mapped[int | None] = mapped_column(sa.ForeignKey("blobs.id"))
    xls_filename: Mapped[str | None] = mapped_column(sa.String(255))
    xls_content_type: Mapped[str | None] = mapped_column(sa.String(255))
    # ODK Validate's verdict: "passed", "failed" or "skipped" (no Java), with its messages.
    validation: Mapped[str] = mapped_column(sa.String(10), default="skipped")
    validation_messages: Mapped[list] = mapped_column(sa.JSON, default=list)
    warnings: Mapped[list] = mapped_column(sa.JSON, default=list)
    key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("project_keys.id"))
    # Token with which a coordinator tests a draft on a tablet before publishing.
    draft_token: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    enketo_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index("ix_form_versions_form_id_version", "form_id", "version"),
        # A formID + version published once stays that XForm forever (openrosa.md §8.17).
        sa.Index(
            "uq_form_versions_published_version",
            "form_id",
            "version",
            unique=True,
            sqlite_where=sa.text("published_at IS NOT NULL"),
            postgresql_where=sa.text("published_at IS NOT NULL"),
        ),
    )

    @property
    def form_schema(self) -> FormSchema:
        """The typed view of ``schema``, built once while ``schema`` stays the same dict."""
        cached = self.__dict__.get("_form_schema")
        if cached is None or cached[0] is not self.schema:
            cached = (self.schema, FormSchema.of(self.schema))
            self.__dict__["_form_schema"] = cached
        return cached[1]


class FormAttachment(Base):
    """A media or data file a form version references (``jr://images/x.png``, ``x.csv``)."""

    __tablename__ = "form_attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    form_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("form_versions.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(10), default="file")
    blob_id: Mapped[int | None] = mapped_column(sa.ForeignKey("blobs.id"), index=True)
    content_type: Mapped[str | None] = mapped_column(sa.String(255))
    dataset_id: Mapped[int | None] = mapped_column(sa.ForeignKey("datasets.id"))
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.UniqueConstraint("form_version_id", "name"),)
