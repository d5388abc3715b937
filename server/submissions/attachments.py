"""A record's files: the slots of each version, filled as files arrive or are given, cleared.

Each version has one slot per file its XML names. Intake makes the slots of a new version
(:func:`create_slots`) and fills them as tablets send files, in one or several parts; through
the API (pyodk's ``submissions.create(attachments=...)``, Central's
``POST .../attachments/<name>``) a file can be given, replaced (:func:`upload`) or cleared
(:func:`clear`) later, on the record's current version only. Both fill a slot through
:func:`fill`, where the rule of which copy a slot keeps is written. The bytes are made durable
before the row pointing at them is committed.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Collection, Mapping
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server import errors
from server.db import utcnow
from server.storage import services as storage
from server.submissions import filenames, services
from server.submissions.models import Submission, SubmissionAttachment, SubmissionVersion

log = logging.getLogger(__name__)

SLOTS = SubmissionAttachment.__table__
VERSIONS = SubmissionVersion.__table__

# A file for a slot: its catalogued blob's id and its content type (None: keep the slot's).
Arrived = tuple[int, str | None]


def fill(
    db_session: Session, version_id: int, files: Mapping[str, Arrived], *, replace: bool
) -> tuple[list[str], int]:
    """Put durable, catalogued files in a version's slots of the same names. Not committed.

    Returns the names of the slots that were empty and now hold a file, and how many of the
    version's slots hold one. Which copy a slot keeps is decided here, and only here:

    * intake (``replace=False``) keeps the first durable copy: a device sending a file again
      with other bytes changes nothing, and the difference is logged for the coordinator
      (nothing received from the field is silently replaced). Except the stand-in an edit
      carried forward from the version it replaces: when the edit's own file of that name
      arrives, in a later part of a split upload, it takes the slot (found by the field
      simulation: an edit re-sending audit.csv with new content kept the previous log);
    * the API (``replace=True``) replaces: a person who gives a file for a slot means this
      file, whatever the slot held (Central's ``POST .../attachments/<name>``).
    """
    slots = db_session.execute(
        sa.select(SLOTS.c.id, SLOTS.c.name, SLOTS.c.blob_id, VERSIONS.c.instance_id)
        .join(VERSIONS, VERSIONS.c.id == SLOTS.c.submission_version_id)
        .where(SLOTS.c.submission_version_id == version_id)
    ).all()
    added: list[str] = []
    stand_ins: dict[str, int] | None = None
    now = utcnow()
    for slot in slots:
        arrived = files.get(slot.name)
        if arrived is None:
            continue
        if slot.blob_id is None:
            added.append(slot.name)
        elif not replace and slot.blob_id != arrived[0]:
            if stand_ins is None:
                stand_ins = _carried_forward(db_session, version_id)
            if stand_ins.get(slot.name) != slot.blob_id:
                log.warning(
                    "attachment resent with different content; first copy kept",
                    extra={"fields": {"instance_id": slot.instance_id, "file": slot.name}},
                )
                continue
            log.info(
                "carried-forward attachment replaced by the edit's own file",
                extra={"fields": {"instance_id": slot.instance_id, "file": slot.name}},
            )
        elif not replace:
            continue  # the same bytes again
        values = {"blob_id": arrived[0], "updated_at": now}
        if arrived[1] is not None:
            values["content_type"] = arrived[1]
        db_session.execute(sa.update(SLOTS).where(SLOTS.c.id == slot.id).values(**values))
    present = sum(1 for slot in slots if slot.blob_id is not None) + len(added)
    if added:
        db_session.execute(
            sa.update(VERSIONS)
            .where(VERSIONS.c.id == version_id)
            .values(attachments_present=present)
        )
    return added, present


def create_slots(
    db_session: Session,
    version_id: int,
    names: list[str],
    files: Mapping[str, Arrived],
    *,
    carried: Mapping[str, Arrived],
    audit_names: Collection[str],
    encrypted: bool,
) -> None:
    """Make the slots of a new version, in the record's order.

    A slot holds the file received with the version, else the one ``carried`` forward from
    the version an edit replaces (a stand-in, as :func:`fill` says), else nothing yet.
    Encrypted records number their slots: the position decides each file's key stream
    (openrosa.md §6, step 3). Not committed.
    """
    if not names:
        return
    now = utcnow()
    rows = []
    for index, name in enumerate(names):
        blob = files.get(name) or carried.get(name)
        rows.append(
            {
                "submission_version_id": version_id,
                "name": name,
                "blob_id": blob[0] if blob else None,
                "content_type": blob[1]
                if blob
                else (mimetypes.guess_type(name)[0] or "application/octet-stream"),
                "is_client_audit": name in audit_names,
                "encryption_index": index if encrypted else None,
                "updated_at": now if blob else None,
            }
        )
    db_session.execute(sa.insert(SLOTS), rows)


def held(db_session: Session, version_id: int) -> dict[str, Arrived]:
    """Return the files a version's slots hold, by name (what an edit carries forward)."""
    return {
        name: (blob_id, content_type)
        for name, blob_id, content_type in db_session.execute(
            sa.select(SLOTS.c.name, SLOTS.c.blob_id, SLOTS.c.content_type).where(
                SLOTS.c.submission_version_id == version_id, SLOTS.c.blob_id.is_not(None)
            )
        )
    }


def _carried_forward(db_session: Session, version_id: int) -> dict[str, int]:
    """Return name -> blob id of the files of the version this one replaced (its deprecatedID)."""
    this, previous = VERSIONS.alias("this"), VERSIONS.alias("previous")
    return dict(
        db_session.execute(
            sa.select(SLOTS.c.name, SLOTS.c.blob_id)
            .join(previous, previous.c.id == SLOTS.c.submission_version_id)
            .join(
                this,
                sa.and_(
                    this.c.form_id == previous.c.form_id,
                    this.c.draft == previous.c.draft,
                    this.c.deprecated_id == previous.c.instance_id,
                ),
            )
            .where(this.c.id == version_id, SLOTS.c.blob_id.is_not(None))
        ).all()
    )


def _count(db_session: Session, version_id: int) -> int:
    return db_session.execute(
        sa.select(sa.func.count()).where(
            SLOTS.c.submission_version_id == version_id, SLOTS.c.blob_id.is_not(None)
        )
    ).scalar_one()


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


def upload(
    db_session: Session,
    submission: Submission,
    name: str,
    stream: BinaryIO,
    *,
    content_type: str | None,
    actor_id: int | None,
    project_id: int | None,
) -> None:
    """Store a file the current version names, replacing any earlier one. Commits.

    404 when the current version does not name ``name``.
    """
    version, slot = _slot(db_session, submission, name)
    # End the transaction while the bytes travel to the store: on SQLite it holds the
    # database's write lock, and every tablet would wait for this upload.
    db_session.commit()
    blob = storage.save_stream(db_session, stream)
    if content_type == "application/octet-stream":
        content_type = None  # says nothing: the slot keeps the type its name gave it
    fill(db_session, version.id, {slot.name: (blob.id, content_type)}, replace=True)
    services.audit_record(
        db_session, "submission.attachment.update", submission, actor_id, project_id, name=name
    )
    db_session.commit()


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
    version.attachments_present = _count(db_session, version.id)
    services.audit_record(
        db_session, "submission.attachment.clear", submission, actor_id, project_id, name=name
    )
    db_session.commit()
