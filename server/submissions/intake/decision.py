"""What an upload is: a new record, a resend or a split upload's next part, an edit, a conflict.

Decided inside one transaction that writes it (:mod:`~server.submissions.intake.writing`):

* an instanceID the form does not know is a new record, unless ``deprecatedID`` names a
  version of one: then it is an edit, which must replace the current version (409 otherwise,
  404 when the version named is unknown);
* a known instanceID with byte-identical XML is a retry or a split upload's next part: newly
  arrived files fill their slots (:func:`server.submissions.attachments.fill`), nothing else
  changes, and the answer is success again;
* a known instanceID with other XML is a conflict: the payload is kept for review, and 409;
  once a coordinator has settled that payload, sending it again is answered as a retry;
* a record in the trash takes nothing (409).

A new record or an edit then applies its entity blocks (:mod:`.entities`) before the commit.

Races: two identical uploads on two workers must give one record. On PostgreSQL a new record
is first tried in one statement guarded by the unique constraint on (form, draft, instanceID);
whoever finds the identity taken falls back to the careful path, which takes an advisory lock
on the instanceIDs and decides. On SQLite every writer holds the database's single write lock
from ``BEGIN IMMEDIATE``. A process that still meets the identity taken at its insert (the
unique constraint) decides again, and sees the other's row.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from server import errors
from server.submissions import attachments
from server.submissions.intake import durable, entities, writing
from server.submissions.intake.upload import Receipt, Upload

VERSIONS, SUBMISSIONS = writing.VERSIONS, writing.SUBMISSIONS


def settle(upload: Upload) -> Receipt:
    """Decide what the upload is, write it and commit; return what happened.

    The durable files are catalogued in the same transaction. Raises the problems of the
    decision; a conflict's payload is committed before its 409 is raised.
    """
    db_session = upload.db
    for attempt in (1, 2):
        try:
            durable.catalogue(upload)
            receipt = _decide(upload)
            entities.apply(upload, receipt)  # in the same transaction: durable together
            db_session.commit()
        except IntegrityError:
            # Another process inserted the same identity between our check and our insert;
            # the second attempt sees its row and answers as for a retry.
            db_session.rollback()
            if attempt == 2:
                raise
            continue
        except errors.XmlConflict:
            db_session.commit()  # the conflicting payload is kept for review
            raise
        except BaseException:
            db_session.rollback()
            raise
        return receipt
    raise AssertionError("unreachable")


def _decide(upload: Upload) -> Receipt:
    """Decide what this upload is and write it (inside the caller's transaction)."""
    parsed = upload.parsed
    if not parsed.deprecated_id and upload.db.get_bind().dialect.name == "postgresql":
        receipt = writing.create_unless_known(upload)
        if receipt is not None:
            return receipt
        # Either the record exists (nothing was inserted) or the instanceID is an edit's
        # version (the submission row went in, the version did not): undo and look closer.
        upload.db.rollback()
        durable.catalogue(upload)  # the rollback undid the catalogue rows
    ids = [parsed.instance_id] + ([parsed.deprecated_id] if parsed.deprecated_id else [])
    _lock(upload, *ids)
    existing = _version(upload, parsed.instance_id)
    if existing is not None:
        return _repeat(upload, existing)
    if parsed.deprecated_id:
        return _edit(upload)
    return writing.create(upload)


def _lock(upload: Upload, *instance_ids: str) -> None:
    """Serialise work on these instanceIDs across every server process (PostgreSQL)."""
    if upload.db.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's single write lock
    keys = sorted(
        int.from_bytes(
            hashlib.blake2b(
                f"{upload.form.id}:{upload.draft}:{iid}".encode(), digest_size=8
            ).digest(),
            "big",
            signed=True,
        )
        for iid in set(instance_ids)
    )
    for key in keys:
        upload.db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _version(upload: Upload, instance_id: str) -> sa.Row | None:
    """Return the version of this form (or draft) that has ``instance_id``, if any."""
    return upload.db.execute(
        sa.select(
            VERSIONS.c.id,
            VERSIONS.c.submission_id,
            VERSIONS.c.xml_sha256,
            VERSIONS.c.current,
            VERSIONS.c.instance_id,
            VERSIONS.c.instance_name,
            VERSIONS.c.attachments_expected,
            VERSIONS.c.attachments_present,
            VERSIONS.c.attachments_dropped,
            VERSIONS.c.dropped_names,
        ).where(
            VERSIONS.c.form_id == upload.form.id,
            VERSIONS.c.draft == upload.draft,
            VERSIONS.c.instance_id == instance_id,
        )
    ).first()


def _current(upload: Upload, submission_id: int) -> sa.Row:
    """Return the current version of a record."""
    return upload.db.execute(
        sa.select(
            VERSIONS.c.id,
            VERSIONS.c.submission_id,
            VERSIONS.c.instance_name,
            VERSIONS.c.attachments_expected,
            VERSIONS.c.attachments_present,
        ).where(VERSIONS.c.submission_id == submission_id, VERSIONS.c.current)
    ).one()


def _deleted(upload: Upload, submission_id: int) -> bool:
    return (
        upload.db.execute(
            sa.select(SUBMISSIONS.c.deleted_at).where(SUBMISSIONS.c.id == submission_id)
        ).scalar()
        is not None
    )


def _repeat(upload: Upload, existing: sa.Row) -> Receipt:
    """The instanceID is known: a retry, a split upload's next part, or a conflict."""
    if _deleted(upload, existing.submission_id):
        raise errors.DeletedSubmission()
    if existing.xml_sha256 != upload.xml_sha:
        if not writing.settled_conflict(upload):
            writing.keep_conflict(upload, existing.submission_id)
            raise errors.XmlConflict()
        # A coordinator has settled this very payload: the tablet is told it was received
        # (as for a retry), so that it stops sending it; nothing changes on the server.
        existing = _current(upload, existing.submission_id)
        return Receipt(
            outcome="duplicate",
            submission_id=existing.submission_id,
            version_id=existing.id,
            instance_id=upload.parsed.instance_id,
            instance_name=existing.instance_name,
            attachments_expected=existing.attachments_expected,
            attachments_present=existing.attachments_present,
            ignored_files=upload.ignored,
        )
    added, present = [], existing.attachments_present
    if upload.received:
        added, present = attachments.fill(upload.db, existing.id, upload.received, replace=False)
    writing.note_dropped(upload, existing.id, existing.dropped_names, existing.attachments_dropped)
    return Receipt(
        outcome="duplicate",
        submission_id=existing.submission_id,
        version_id=existing.id,
        instance_id=existing.instance_id,
        instance_name=existing.instance_name,
        attachments_expected=existing.attachments_expected,
        attachments_present=present,
        attachments_received=added,
        ignored_files=upload.ignored,
    )


def _edit(upload: Upload) -> Receipt:
    """A new version of a record: ``deprecatedID`` names the version it replaces."""
    deprecated_id = upload.parsed.deprecated_id
    previous = _version(upload, deprecated_id)
    if previous is None:
        raise errors.DeprecatedIdNotFound(deprecated_id=deprecated_id)
    if _deleted(upload, previous.submission_id):
        raise errors.DeletedSubmission()
    if not previous.current:
        raise errors.StaleEdit(deprecated_id=deprecated_id)
    return writing.add_version(upload, previous)
