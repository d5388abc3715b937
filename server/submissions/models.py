"""Records (submissions), their versions (edits), attachments, kept conflicts and comments.

A *submission* is one record as analysts know it, named by the instanceID it first arrived
with. Each arrival of new XML for it (the first, then every edit carrying ``deprecatedID``) is a
*version*; exactly one version is current. Identity is (form, draft, instanceID) over every
version, enforced by a unique constraint: two workers racing with the same record cannot both
insert it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask_babel import lazy_gettext
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, BigId, JSONDocument, UTCDateTime, utcnow

REVIEW_STATES = ("hasIssues", "edited", "approved", "rejected")
# What each state is called where people read it ("received": no state set yet).
REVIEW_STATE_WORDS = {
    "received": lazy_gettext("Received"),
    "hasIssues": lazy_gettext("Has issues"),
    "edited": lazy_gettext("Edited"),
    "approved": lazy_gettext("Approved"),
    "rejected": lazy_gettext("Rejected"),
}
# How a coordinator settled a conflict (the API's words, stored as they are).
RESOLUTIONS = ("keepFirst", "takeSecond", "discard")
MAX_DROPPED_NAMES = 20


class Submission(Base):
    """One record of a form, across all its versions."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    # Records sent to a draft while a coordinator tests it; removed when the draft is published.
    draft: Mapped[bool] = mapped_column(default=False)
    instance_id: Mapped[str] = mapped_column(sa.String(255))
    review_state: Mapped[str | None] = mapped_column(sa.String(20))
    submitter_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(sa.String(255))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Commit order within the form, set by a database trigger (migration 0002): the key of
    # the API's paging cursors, which must never skip a record committed late.
    seq: Mapped[int | None] = mapped_column(BigId, server_default=sa.FetchedValue())

    __table_args__ = (
        sa.UniqueConstraint("form_id", "draft", "instance_id"),
        sa.Index("ix_submissions_form_id_draft_seq", "form_id", "draft", "seq"),
        # Listing and exporting walk a form's records in arrival order.
        sa.Index("ix_submissions_form_id_draft_id", "form_id", "draft", "id"),
        sa.Index("ix_submissions_form_id_created_at", "form_id", "created_at"),
        sa.CheckConstraint(
            f"review_state IS NULL OR review_state IN {REVIEW_STATES!r}", name="review_state"
        ),
        # Ids are never reused (they serve as paging cursors): AUTOINCREMENT on SQLite.
        {"sqlite_autoincrement": True},
    )

    @classmethod
    def live(cls) -> sa.ColumnElement[bool]:
        """The condition of a live record: sent to the published form (no draft test), and
        not deleted; what counts, charts and exports count."""
        return sa.and_(cls.draft.is_(False), cls.deleted_at.is_(None))


class SubmissionSequence(Base):
    """The last ``seq`` given to a record of a form (PostgreSQL's trigger counts here).

    Taking the next number locks the form's row until the inserting transaction ends, so
    numbers are handed out in commit order: a reader that sees number n has seen every
    number below it. SQLite needs no counter: its single writer makes ids commit-ordered.
    """

    __tablename__ = "submission_sequences"

    form_id: Mapped[int] = mapped_column(
        sa.ForeignKey("forms.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    last_seq: Mapped[int] = mapped_column(sa.BigInteger)


class SubmissionVersion(Base):
    """One version of a record: the XML exactly as received and its parsed document.

    The answers (``raw_xml``, ``raw_document``, ``raw_instance_name``) are named *raw*: they
    go to a reader only through :mod:`server.personal`, which hides personal data from those
    without the right (a test lists the modules that read them).
    """

    __tablename__ = "submission_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="CASCADE")
    )
    # Repeated from the submission so that the identity constraint can span every version.
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    draft: Mapped[bool] = mapped_column(default=False)
    form_version_id: Mapped[int] = mapped_column(sa.ForeignKey("form_versions.id"), index=True)
    instance_id: Mapped[str] = mapped_column(sa.String(255))
    deprecated_id: Mapped[str | None] = mapped_column(sa.String(255))
    current: Mapped[bool] = mapped_column(default=True)
    raw_xml: Mapped[str] = mapped_column("xml", sa.Text)
    xml_sha256: Mapped[str] = mapped_column(sa.String(64))
    raw_document: Mapped[dict | None] = mapped_column("document", JSONDocument)
    raw_instance_name: Mapped[str | None] = mapped_column("instance_name", sa.Text)

    submitter_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    device_id: Mapped[str | None] = mapped_column(sa.String(255))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Counts kept up to date by intake so that lists and exports need no join per row.
    attachments_expected: Mapped[int] = mapped_column(default=0)
    attachments_present: Mapped[int] = mapped_column(default=0)
    # Encrypted records (openrosa.md §6) are stored as received, envelope and .enc files.
    encrypted: Mapped[bool] = mapped_column(default=False)
    encrypted_key: Mapped[str | None] = mapped_column(sa.Text)
    encrypted_signature: Mapped[str | None] = mapped_column(sa.Text)
    encrypted_xml_name: Mapped[str | None] = mapped_column(sa.String(255))
    # Files sent with the version for no question of its form (or named nowhere in its
    # XML): not kept, but counted, and their names (cleaned, at most MAX_DROPPED_NAMES) kept.
    attachments_dropped: Mapped[int] = mapped_column(default=0, server_default="0")
    dropped_names: Mapped[list | None] = mapped_column(JSONDocument)

    __table_args__ = (
        sa.UniqueConstraint("form_id", "draft", "instance_id"),
        sa.Index("ix_submission_versions_submission_id", "submission_id"),
        # Exactly one current version per record.
        sa.Index(
            "uq_submission_versions_current",
            "submission_id",
            unique=True,
            sqlite_where=sa.text("current"),
            postgresql_where=sa.text("current"),
        ),
        {"sqlite_autoincrement": True},
    )


class SubmissionAttachment(Base):
    """A file a version expects (named in a binary field) and, once it arrives, its blob."""

    __tablename__ = "submission_attachments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    submission_version_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submission_versions.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    blob_id: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("blobs.id"), index=True)
    content_type: Mapped[str | None] = mapped_column(sa.String(255))
    # The client audit log (meta/audit, usually audit.csv) is exported apart.
    is_client_audit: Mapped[bool] = mapped_column(default=False)
    # Position in the encryption order of an encrypted record (openrosa.md §6, step 3).
    encryption_index: Mapped[int | None]
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.UniqueConstraint("submission_version_id", "name"),)


class SubmissionConflict(Base):
    """A payload refused because its instanceID exists with different XML, kept for review.

    A coordinator settles it (:mod:`server.submissions.conflicts`): ``keepFirst`` (the record
    stays as it is; this payload stays on file), ``takeSecond`` (it becomes the record's new
    version, ``version_id``) or ``discard`` (its XML and files are forgotten; the row stays,
    so that the same payload sent again is recognised).
    """

    __tablename__ = "submission_conflicts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[int] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    # A draft's test record or a record of the published form (the record it conflicts with).
    draft: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The version the payload names (None for conflicts kept before migration 0006).
    form_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("form_versions.id"))
    instance_id: Mapped[str] = mapped_column(sa.String(255))
    raw_xml: Mapped[str] = mapped_column("xml", sa.Text)
    xml_sha256: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.String(40))
    submitter_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    device_id: Mapped[str | None] = mapped_column(sa.String(255))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolution: Mapped[str | None] = mapped_column(sa.String(20))
    resolved_by: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    # The version ``takeSecond`` made of it.
    version_id: Mapped[int | None] = mapped_column(
        BigId, sa.ForeignKey("submission_versions.id", ondelete="SET NULL")
    )
    attachments_dropped: Mapped[int] = mapped_column(default=0, server_default="0")
    dropped_names: Mapped[list | None] = mapped_column(JSONDocument)

    __table_args__ = (
        # A device retrying the same conflicting payload is kept once.
        sa.UniqueConstraint("form_id", "instance_id", "xml_sha256"),
        sa.CheckConstraint(
            f"resolution IS NULL OR resolution IN {RESOLUTIONS!r}", name="resolution"
        ),
        # The count on a form's pages: its conflicts still to settle.
        sa.Index("ix_submission_conflicts_form_id_resolved_at", "form_id", "resolved_at"),
    )


class SubmissionConflictFile(Base):
    """A file sent with a conflicting payload, for a question its XML names (first copy)."""

    __tablename__ = "submission_conflict_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conflict_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submission_conflicts.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    blob_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("blobs.id"), index=True)
    content_type: Mapped[str | None] = mapped_column(sa.String(255))

    __table_args__ = (sa.UniqueConstraint("conflict_id", "name"),)


class Comment(Base):
    """A reviewer's note on a record. Comments are never edited or deleted."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("actors.id"))
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
