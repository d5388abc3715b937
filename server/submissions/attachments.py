"""A record's files after it arrived: uploading one the record names, or clearing it.

Intake fills attachment slots as tablets send files; through the API (pyodk's
``submissions.create(attachments=...)``, Central's ``POST .../attachments/<name>``) a file can
be given, replaced or cleared later, on the record's current version only. The bytes are made
durable before the row pointing at them is committed, as for intake.
"""

from __future__ import annotations

from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.db import utcnow
from server.storage import services as storage
from server.submissions import filenames, services
from server.submissions.models import Submission, SubmissionAttachment, SubmissionVersion


def _slot(
    db_session: Session, submission: Submission, name: str
) -> tuple[SubmissionVersion, SubmissionAttachment]:
    """Return the current version's slot of the file ``name`` (400: no plain name; 404)."""
    wanted = filenames.comparable(filenames.attachment_name(name))
    version = services.current_version(db_session, submission)
    for slot in db_session.scalars(
        sa.select(SubmissionAttachment).where(
            SubmissionAttachment.submission_version_id == version.id
        )
    ):
        if filenames.comparable(slot.name) == wanted:
            return version, slot
    # Central: only files the record's XML names can be attached.
    raise errors.NotFound()


def _recount(db_session: Session, version: SubmissionVersion) -> None:
    version.attachments_present = db_session.execute(
        sa.select(sa.func.count()).where(
            SubmissionAttachment.submission_version_id == version.id,
            SubmissionAttachment.blob_id.is_not(None),
        )
    ).scalar_one()


def upload(
    db_session: Session,
    submission: Submission,
    name: str,
    stream: BinaryIO,
    *,
    content_type: str | None,
    actor_id: int | None,
    project_id: int | None,
) -> SubmissionAttachment:
    """Store a file the current version names (replacing any earlier one). Commits.

    404 when the current version does not name ``name``.
    """
    version, slot = _slot(db_session, submission, name)
    # End the transaction while the bytes travel to the store: on SQLite it holds the
    # database's write lock, and every tablet would wait for this upload.
    db_session.commit()
    blob = storage.save_stream(db_session, stream)
    slot.blob_id = blob.id
    if content_type and content_type != "application/octet-stream":
        slot.content_type = content_type
    slot.updated_at = utcnow()
    db_session.flush()
    _recount(db_session, version)
    services.audit_record(
        db_session, "submission.attachment.update", submission, actor_id, project_id, name=name
    )
    db_session.commit()
    return slot


def clear(
    db_session: Session,
    submission: Submission,
    name: str,
    *,
    actor_id: int | None,
    project_id: int | None,
) -> None:
    """Forget the file of one slot of the current version (the bytes stay catalogued). Commits."""
    version, slot = _slot(db_session, submission, name)
    slot.blob_id = None
    slot.updated_at = utcnow()
    db_session.flush()
    _recount(db_session, version)
    services.audit_record(
        db_session, "submission.attachment.clear", submission, actor_id, project_id, name=name
    )
    db_session.commit()
