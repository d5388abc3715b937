"""Working with stored records: finding, listing, reviewing, commenting, deleting.

Intake (:mod:`server.submissions.intake`) creates records; everything people do to them
afterwards is here, for the API and the console alike. A record is addressed by the
instanceID it first arrived with (its *root* instanceID), as in ODK Central.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.audit.models import AuditEvent
from server.auth.models import Actor
from server.db import utcnow
from server.entities import records as entity_records
from server.forms.models import FormVersion
from server.storage.models import Blob
from server.submissions import filenames
from server.submissions.models import (
    REVIEW_STATES,
    Comment,
    Submission,
    SubmissionAttachment,
    SubmissionVersion,
)

# What a review may set; "edited" is set by the server when a record is edited.
SETTABLE_REVIEW_STATES = ("hasIssues", "approved", "rejected")


@dataclass
class SubmissionFilter:
    """Filters on a form's records (all optional)."""

    received_from: dt.datetime | None = None
    received_before: dt.datetime | None = None
    review_states: Sequence[str | None] | None = None  # None inside means "received"
    submitter_ids: Sequence[int] | None = None
    form_versions: Sequence[str] | None = None
    search: str | None = None  # in instanceID (and instance name, when searchable)
    # Whether the search may look in instance names: only when they hide nothing from the
    # reader (server/personal.py); otherwise a match would tell what a hidden name holds.
    search_instance_name: bool = False
    deleted: bool = False  # True: only deleted records (the trash)
    draft: bool = False
    after_id: int | None = None  # keyset paging: records with a larger id
    before_id: int | None = None  # keyset paging backwards: records with a smaller id


@dataclass
class SubmissionRow:
    """A record with its current version, as lists show it."""

    submission: Submission
    version: SubmissionVersion
    form_version: str
    submitter_name: str | None
    edits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def filtered_query(form_id: int, filters: SubmissionFilter) -> sa.Select:
    """Return the query of a form's records and current versions that pass ``filters``."""
    query = (
        sa.select(Submission, SubmissionVersion, FormVersion.version, Actor.display_name)
        .join(
            SubmissionVersion,
            sa.and_(
                SubmissionVersion.submission_id == Submission.id,
                SubmissionVersion.current.is_(True),
            ),
        )
        .join(FormVersion, FormVersion.id == SubmissionVersion.form_version_id)
        .outerjoin(Actor, Actor.id == Submission.submitter_id)
        .where(Submission.form_id == form_id, Submission.draft.is_(filters.draft))
    )
    if filters.deleted:
        query = query.where(Submission.deleted_at.is_not(None))
    else:
        query = query.where(Submission.deleted_at.is_(None))
    if filters.received_from is not None:
        query = query.where(Submission.created_at >= filters.received_from)
    if filters.received_before is not None:
        query = query.where(Submission.created_at < filters.received_before)
    if filters.review_states is not None:
        states = [s for s in filters.review_states if s is not None]
        condition = Submission.review_state.in_(states) if states else sa.false()
        if None in filters.review_states:
            condition = sa.or_(condition, Submission.review_state.is_(None))
        query = query.where(condition)
    if filters.submitter_ids:
        query = query.where(Submission.submitter_id.in_(list(filters.submitter_ids)))
    if filters.form_versions:
        query = query.where(FormVersion.version.in_(list(filters.form_versions)))
    if filters.search:
        pattern = f"%{filters.search.strip().lower()}%"
        matches = [sa.func.lower(Submission.instance_id).like(pattern)]
        if filters.search_instance_name:
            instance_name = sa.func.coalesce(SubmissionVersion.raw_instance_name, "")
            matches.append(sa.func.lower(instance_name).like(pattern))
        query = query.where(sa.or_(*matches))
    if filters.after_id is not None:
        query = query.where(Submission.id > filters.after_id)
    if filters.before_id is not None:
        query = query.where(Submission.id < filters.before_id)
    return query


def list_submissions(
    db_session: Session,
    form_id: int,
    filters: SubmissionFilter | None = None,
    *,
    limit: int | None = 100,
    offset: int = 0,
    newest_first: bool = True,
) -> list[SubmissionRow]:
    """Return a page of a form's records with their current versions."""
    filters = filters or SubmissionFilter()
    order = (
        Submission.id.desc() if newest_first and filters.after_id is None else (Submission.id.asc())
    )
    query = filtered_query(form_id, filters).order_by(order).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = [SubmissionRow(s, v, fv, name) for s, v, fv, name in db_session.execute(query)]
    return add_edit_counts(db_session, rows)


def add_edit_counts(db_session: Session, rows: list[SubmissionRow]) -> list[SubmissionRow]:
    """Fill ``edits`` (versions after the first) of each row in one query."""
    if rows:
        edits = dict(
            db_session.execute(
                sa.select(SubmissionVersion.submission_id, sa.func.count() - 1)
                .where(SubmissionVersion.submission_id.in_([r.submission.id for r in rows]))
                .group_by(SubmissionVersion.submission_id)
            ).all()
        )
        for row in rows:
            row.edits = edits.get(row.submission.id, 0)
    return rows


def row_of(db_session: Session, submission: Submission) -> SubmissionRow:
    """Return one record as lists show it: current version, form version, number of edits.

    (``submitter_name`` is left None: the API names submitters with
    :func:`server.auth.services.actors_by_id`.)
    """
    current = current_version(db_session, submission)
    names = form_version_names(db_session, {current.form_version_id})
    found = SubmissionRow(submission, current, names.get(current.form_version_id, ""), None)
    return add_edit_counts(db_session, [found])[0]


def count_submissions(
    db_session: Session, form_id: int, filters: SubmissionFilter | None = None
) -> int:
    """Count a form's records matching the filters."""
    query = filtered_query(form_id, filters or SubmissionFilter()).with_only_columns(
        sa.func.count(Submission.id)
    )
    return db_session.execute(query.order_by(None)).scalar_one()


def review_counts(db_session: Session, form_id: int) -> dict[str | None, int]:
    """Return how many live records are in each review state (None: received)."""
    return dict(
        db_session.execute(
            sa.select(Submission.review_state, sa.func.count())
            .where(
                Submission.form_id == form_id,
                Submission.draft.is_(False),
                Submission.deleted_at.is_(None),
            )
            .group_by(Submission.review_state)
        ).all()
    )


def get(
    db_session: Session,
    form_id: int,
    instance_id: str,
    *,
    draft: bool = False,
    deleted: bool = False,
) -> Submission:
    """Return a record by its root instanceID (or any version's); 404 if unknown."""
    submission = db_session.execute(
        sa.select(Submission).where(
            Submission.form_id == form_id,
            Submission.draft.is_(draft),
            Submission.instance_id == instance_id,
        )
    ).scalar_one_or_none()
    if submission is None:
        # Central also finds a record by the instanceID of one of its later versions.
        submission = db_session.execute(
            sa.select(Submission)
            .join(SubmissionVersion, SubmissionVersion.submission_id == Submission.id)
            .where(
                SubmissionVersion.form_id == form_id,
                SubmissionVersion.draft.is_(draft),
                SubmissionVersion.instance_id == instance_id,
            )
        ).scalar_one_or_none()
    if submission is None or (submission.deleted_at is not None) != deleted:
        raise errors.NotFound()
    return submission


def by_id(db_session: Session, submission_id: int) -> Submission:
    """Return a record by its id, read afresh (intake may have just changed it)."""
    return db_session.get(Submission, submission_id, populate_existing=True)


def instance_id_known(db_session: Session, form_id: int, instance_id: str, *, draft: bool) -> bool:
    """Tell whether any version of any record (deleted ones too) has this instanceID."""
    found = db_session.execute(
        sa.select(SubmissionVersion.id).where(
            SubmissionVersion.form_id == form_id,
            SubmissionVersion.draft.is_(draft),
            SubmissionVersion.instance_id == instance_id,
        )
    )
    return found.first() is not None


def form_version_names(db_session: Session, ids: set[int]) -> dict[int, str]:
    """Return the version string of each of these form versions, by id."""
    rows = db_session.execute(
        sa.select(FormVersion.id, FormVersion.version).where(FormVersion.id.in_(ids))
    )
    return dict(rows.all())


def current_version(db_session: Session, submission: Submission) -> SubmissionVersion:
    """Return the current version of a record."""
    return db_session.execute(
        sa.select(SubmissionVersion).where(
            SubmissionVersion.submission_id == submission.id, SubmissionVersion.current.is_(True)
        )
    ).scalar_one()


def versions(db_session: Session, submission: Submission) -> list[SubmissionVersion]:
    """Return every version of a record, newest first."""
    return list(
        db_session.scalars(
            sa.select(SubmissionVersion)
            .where(SubmissionVersion.submission_id == submission.id)
            .order_by(SubmissionVersion.id.desc())
        )
    )


def version(db_session: Session, submission: Submission, instance_id: str) -> SubmissionVersion:
    """Return one version of a record by its instanceID."""
    found = db_session.execute(
        sa.select(SubmissionVersion).where(
            SubmissionVersion.submission_id == submission.id,
            SubmissionVersion.instance_id == instance_id,
        )
    ).scalar_one_or_none()
    if found is None:
        raise errors.NotFound()
    return found


def attachments(
    db_session: Session, version_: SubmissionVersion
) -> list[tuple[SubmissionAttachment, Blob | None]]:
    """Return a version's attachment slots, with their blob when the file has arrived."""
    return list(
        db_session.execute(
            sa.select(SubmissionAttachment, Blob)
            .outerjoin(Blob, Blob.id == SubmissionAttachment.blob_id)
            .where(SubmissionAttachment.submission_version_id == version_.id)
            .order_by(SubmissionAttachment.name)
        ).all()
    )


def attachment_named(
    db_session: Session, version_: SubmissionVersion, name: str
) -> tuple[SubmissionAttachment, Blob | None] | None:
    """Return a version's slot of the file ``name`` (accents composed or not), or None."""
    wanted = filenames.comparable(name)
    for attachment, blob in attachments(db_session, version_):
        if filenames.comparable(attachment.name) == wanted:
            return attachment, blob
    return None


def audit_record(
    db_session: Session,
    action: str,
    submission: Submission,
    actor_id: int | None,
    project_id: int | None,
    **details: Any,
) -> None:
    """Write an audit event about a record (its instanceID in the details)."""
    audit.record(
        db_session,
        action,
        actor_id=actor_id,
        project_id=project_id,
        form_id=submission.form_id,
        submission_id=submission.id,
        details={"instanceId": submission.instance_id, **details},
    )


def set_review_state(
    db_session: Session,
    submission: Submission,
    state: str | None,
    *,
    actor_id: int | None,
    project_id: int | None,
    comment: str | None = None,
) -> Submission:
    """Approve, reject or mark a record as having issues, with an optional comment (commits)."""
    if state is not None and state not in REVIEW_STATES:
        raise errors.UnexpectedValue(
            field="reviewState",
            reason=_("expected one of %(allowed)s", allowed=", ".join(REVIEW_STATES)),
        )
    previous = submission.review_state
    submission.review_state = state
    submission.updated_at = utcnow()
    audit_record(
        db_session,
        "submission.update",
        submission,
        actor_id,
        project_id,
        reviewState=state,
        previousReviewState=previous,
    )
    if state == "approved" and previous != "approved":
        # Lists that require approval get their entities now (same transaction).
        entity_records.on_approval(db_session, submission)
    if comment and comment.strip():
        _add_comment(db_session, submission, actor_id, comment, project_id)
    db_session.commit()
    return submission


def bulk_review(
    db_session: Session,
    form_id: int,
    instance_ids: Sequence[str],
    state: str,
    *,
    actor_id: int | None,
    project_id: int | None,
    comment: str | None = None,
) -> int:
    """Set one review state on several records at once; return how many (commits)."""
    if state not in REVIEW_STATES:
        raise errors.UnexpectedValue(
            field="reviewState",
            reason=_("expected one of %(allowed)s", allowed=", ".join(REVIEW_STATES)),
        )
    found = list(
        db_session.scalars(
            sa.select(Submission).where(
                Submission.form_id == form_id,
                Submission.draft.is_(False),
                Submission.deleted_at.is_(None),
                Submission.instance_id.in_(list(instance_ids)),
            )
        )
    )
    now = utcnow()
    for submission in found:
        previous = submission.review_state
        submission.review_state = state
        submission.updated_at = now
        audit_record(
            db_session,
            "submission.update",
            submission,
            actor_id,
            project_id,
            reviewState=state,
            previousReviewState=previous,
            bulk=True,
        )
        if state == "approved" and previous != "approved":
            entity_records.on_approval(db_session, submission)
        if comment and comment.strip():
            _add_comment(db_session, submission, actor_id, comment, project_id)
    db_session.commit()
    return len(found)


def _add_comment(
    db_session: Session,
    submission: Submission,
    actor_id: int | None,
    body: str,
    project_id: int | None,
) -> Comment:
    body = (body or "").strip()
    if not body:
        raise errors.MissingParameter(field="body")
    comment = Comment(
        submission_id=submission.id, actor_id=actor_id, body=body[:10_000], created_at=utcnow()
    )
    db_session.add(comment)
    audit_record(db_session, "comment.create", submission, actor_id, project_id)
    return comment


def add_comment(
    db_session: Session,
    submission: Submission,
    body: str,
    *,
    actor_id: int | None,
    project_id: int | None,
) -> Comment:
    """Add a comment to a record (commits). Comments are never edited or deleted."""
    comment = _add_comment(db_session, submission, actor_id, body, project_id)
    db_session.commit()
    return comment


def comments(db_session: Session, submission: Submission) -> list[tuple[Comment, str | None]]:
    """Return a record's comments, oldest first, with their authors' names."""
    return list(
        db_session.execute(
            sa.select(Comment, Actor.display_name)
            .outerjoin(Actor, Actor.id == Comment.actor_id)
            .where(Comment.submission_id == submission.id)
            .order_by(Comment.id)
        ).all()
    )


def delete(
    db_session: Session, submission: Submission, *, actor_id: int | None, project_id: int | None
) -> None:
    """Move a record to the trash; a tablet sending it again gets 409 (commits)."""
    submission.deleted_at = utcnow()
    audit_record(db_session, "submission.delete", submission, actor_id, project_id)
    db_session.commit()


def restore(
    db_session: Session, submission: Submission, *, actor_id: int | None, project_id: int | None
) -> None:
    """Bring a record back from the trash (commits)."""
    submission.deleted_at = None
    audit_record(db_session, "submission.restore", submission, actor_id, project_id)
    db_session.commit()


def audit_events(
    db_session: Session, submission: Submission
) -> list[tuple[AuditEvent, str | None]]:
    """Return what happened to a record, oldest first, with who did it."""
    return list(
        db_session.execute(
            sa.select(AuditEvent, Actor.display_name)
            .outerjoin(Actor, Actor.id == AuditEvent.actor_id)
            .where(AuditEvent.submission_id == submission.id)
            .order_by(AuditEvent.id)
        ).all()
    )
