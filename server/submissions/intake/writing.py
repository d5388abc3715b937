"""The rows of a record: its submission, its versions, their slots and audit events, conflicts.

Each row's values are stated once (:func:`submission_row`, :func:`version_row`,
:func:`event_row`), and both ways of writing a new record insert exactly those: the generic
one, statement by statement (SQLite, and PostgreSQL's careful path), and PostgreSQL's single
statement (:func:`create_unless_known`), whose three inserts are built from the columns of the
same rows. A column added to a row is written by both, or by neither.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from server.audit import services as audit
from server.audit.models import AuditEvent
from server.db import insert_or_ignore, utcnow
from server.submissions import attachments
from server.submissions.intake.upload import Outcome, Receipt, Upload
from server.submissions.models import (
    MAX_DROPPED_NAMES,
    Submission,
    SubmissionConflict,
    SubmissionConflictFile,
    SubmissionVersion,
)

log = logging.getLogger(__name__)

SUBMISSIONS = Submission.__table__
VERSIONS = SubmissionVersion.__table__
AUDIT = AuditEvent.__table__
CONFLICTS = SubmissionConflict.__table__
CONFLICT_FILES = SubmissionConflictFile.__table__
# The identity of a record, over every version: unique in both tables.
IDENTITY = ("form_id", "draft", "instance_id")


def submission_row(upload: Upload, now: Any) -> dict[str, Any]:
    """Return the values of a new record's submission row."""
    return {
        "form_id": upload.form.id,
        "draft": upload.draft,
        "instance_id": upload.parsed.instance_id,
        "submitter_id": upload.actor_id,
        "device_id": upload.device_id,
        "user_agent": upload.user_agent,
        "created_at": now,
    }


def version_row(upload: Upload, now: Any, present: int) -> dict[str, Any]:
    """Return the values of a version row, but its submission's id."""
    parsed = upload.parsed
    return {
        "form_id": upload.form.id,
        "draft": upload.draft,
        "form_version_id": upload.version_id,
        "instance_id": parsed.instance_id,
        "deprecated_id": parsed.deprecated_id,
        "current": True,
        "xml": upload.parsed.text,
        "xml_sha256": upload.xml_sha,
        # An encrypted record has no document: SQL NULL, not a JSON null.
        "document": upload.document if upload.document is not None else sa.null(),
        "instance_name": parsed.instance_name or None,
        "submitter_id": upload.actor_id,
        "device_id": upload.device_id,
        "user_agent": upload.user_agent,
        "created_at": now,
        "attachments_expected": len(upload.expected),
        "attachments_present": present,
        "encrypted": parsed.encrypted,
        "encrypted_key": parsed.encrypted_key,
        "encrypted_signature": parsed.encrypted_signature,
        "encrypted_xml_name": parsed.encrypted_xml_name,
        **_dropped(upload.ignored),
    }


def _dropped(names: list[str], known: list[str] | None = None, count: int = 0) -> dict[str, Any]:
    """Return the dropped-files columns: ``known`` names (and ``count``) with ``names`` added.

    Names are counted once each (a retry sends the same parts again); beyond
    :data:`MAX_DROPPED_NAMES` names are no longer kept, and each new one is counted.
    """
    kept = list(known or [])
    for name in dict.fromkeys(names):
        if name in kept:
            continue
        count += 1
        if len(kept) < MAX_DROPPED_NAMES:
            kept.append(name)
    return {"attachments_dropped": count, "dropped_names": kept or sa.null()}


def note_dropped(upload: Upload, version_id: int, known: list[str] | None, count: int) -> None:
    """Add the files a retry or a split upload's next part sent for no question to a version."""
    if not upload.ignored:
        return
    upload.db.execute(
        sa.update(VERSIONS)
        .where(VERSIONS.c.id == version_id)
        .values(**_dropped(upload.ignored, known, count))
    )


def event_row(
    upload: Upload, action: str, now: Any, submission_id: int | None, **details: Any
) -> dict[str, Any]:
    """Return the audit event of a record's arrival (from the audit service, the one maker)."""
    return audit.event(
        action,
        actor_id=upload.actor_id,
        project_id=upload.form.project_id,
        form_id=upload.form.id,
        submission_id=submission_id,
        details={"instanceId": upload.parsed.instance_id, **details},
        logged_at=now,
    )


def create(upload: Upload) -> Receipt:
    """Write a new record: its submission, its first version, its event and its slots."""
    now = utcnow()
    present = _present(upload, {})
    submission_id = upload.db.execute(
        sa.insert(SUBMISSIONS).values(**submission_row(upload, now)).returning(SUBMISSIONS.c.id)
    ).scalar_one()
    version_id = _insert_version(upload, submission_id, now, present)
    upload.db.execute(
        sa.insert(AUDIT).values(**event_row(upload, "submission.create", now, submission_id))
    )
    _slots(upload, version_id, {})
    return _receipt(upload, "created", submission_id, version_id, present)


def create_unless_known(upload: Upload) -> Receipt | None:
    """Write a new record in one statement unless its identity exists (PostgreSQL).

    The same rows as :func:`create`, in one round trip: the submission is inserted unless its
    identity is taken (``ON CONFLICT DO NOTHING``), its version and event only if it was.
    Returns None when the instanceID is taken (as a record or as an edit's version): nothing
    inserted then survives the caller's rollback, and the careful path takes over.
    """
    now = utcnow()
    present = _present(upload, {})
    rows = {
        "s": submission_row(upload, now),
        "v": version_row(upload, now, present),
        "e": event_row(upload, "submission.create", now, None),
    }
    statement = _in_one_statement(*(tuple(row) for row in rows.values()))
    row = upload.db.execute(
        statement,
        {
            f"{prefix}_{name}": None if isinstance(value, sa.Null) else value
            for prefix, values in rows.items()
            for name, value in values.items()
        },
    ).first()
    if row is None:
        return None
    submission_id, version_id = row
    _slots(upload, version_id, {})
    return _receipt(upload, "created", submission_id, version_id, present)


@functools.cache
def _in_one_statement(
    submission: tuple[str, ...], version: tuple[str, ...], event: tuple[str, ...]
) -> sa.Select:
    """The three inserts of a new record as one statement, for these columns of each row.

    Built once per process: its parameters are ``s_``, ``v_`` and ``e_`` and the column's
    name; the version takes its submission's new id, the event its version's.
    """

    def params(table: sa.Table, prefix: str, names: tuple[str, ...]) -> list[Any]:
        # JSON columns bound so that None is SQL NULL: rows say sa.null(), bound as None.
        return [
            sa.bindparam(
                f"{prefix}_{name}",
                type_=postgresql.JSONB(none_as_null=True)
                if isinstance(table.c[name].type, sa.JSON)
                else table.c[name].type,
            )
            for name in names
        ]

    new_submission = (
        postgresql.insert(SUBMISSIONS)
        .values(dict(zip(submission, params(SUBMISSIONS, "s", submission), strict=True)))
        .on_conflict_do_nothing(index_elements=IDENTITY)
        .returning(SUBMISSIONS.c.id)
        .cte("new_submission")
    )
    new_version = (
        postgresql.insert(VERSIONS)
        .from_select(
            ["submission_id", *version],
            sa.select(new_submission.c.id, *params(VERSIONS, "v", version)),
        )
        .on_conflict_do_nothing(index_elements=IDENTITY)
        .returning(VERSIONS.c.submission_id, VERSIONS.c.id)
        .cte("new_version")
    )
    event = tuple(name for name in event if name != "submission_id")
    new_event = (
        sa.insert(AUDIT)
        .from_select(
            [*event, "submission_id"],
            sa.select(*params(AUDIT, "e", event), new_version.c.submission_id),
        )
        .cte("new_event")
    )
    return sa.select(new_version.c.submission_id, new_version.c.id).add_cte(new_event)


def add_version(upload: Upload, previous: sa.Row) -> Receipt:
    """Write an edit: the new current version of ``previous``'s record, with what it carries."""
    carried = attachments.held(upload.db, previous.id)
    now = utcnow()
    # One current version at a time (a partial unique index): retire the old one first.
    upload.db.execute(sa.update(VERSIONS).where(VERSIONS.c.id == previous.id).values(current=False))
    present = _present(upload, carried)
    version_id = _insert_version(upload, previous.submission_id, now, present)
    upload.db.execute(
        sa.update(SUBMISSIONS)
        .where(SUBMISSIONS.c.id == previous.submission_id)
        .values(review_state="edited", updated_at=now)
    )
    upload.db.execute(
        sa.insert(AUDIT).values(
            **event_row(
                upload,
                "submission.update.version",
                now,
                previous.submission_id,
                deprecatedId=upload.parsed.deprecated_id,
            ),
        )
    )
    _slots(upload, version_id, carried)
    return _receipt(upload, "edited", previous.submission_id, version_id, present)


def settled_conflict(upload: Upload) -> bool:
    """Tell whether this payload was kept as a conflict that a coordinator has since settled."""
    return (
        upload.db.execute(
            sa.select(CONFLICTS.c.id).where(
                CONFLICTS.c.form_id == upload.form.id,
                CONFLICTS.c.instance_id == upload.parsed.instance_id,
                CONFLICTS.c.xml_sha256 == upload.xml_sha,
                CONFLICTS.c.resolved_at.is_not(None),
            )
        ).first()
        is not None
    )


def keep_conflict(upload: Upload, submission_id: int) -> None:
    """Keep a resend whose XML differs from the record's, once, for a coordinator's review.

    Its files (those its XML names, already durable and catalogued) are kept with it, the
    first copy of each name, so that taking it as an edit brings them along; a retry or a
    split upload's next part adds the files that were missing. Its arrival is audited
    (``submission.conflict.create``, on ``submission_id``, the record it conflicts with).
    """
    values = {
        "form_id": upload.form.id,
        "draft": upload.draft,
        "form_version_id": upload.version_id,
        "instance_id": upload.parsed.instance_id,
        "xml": upload.parsed.text,
        "xml_sha256": upload.xml_sha,
        "reason": "xml_differs",
        "submitter_id": upload.actor_id,
        "device_id": upload.device_id,
        "user_agent": upload.user_agent,
        "received_at": utcnow(),
        **_dropped(upload.ignored),
    }
    identity = ["form_id", "instance_id", "xml_sha256"]
    inserted = insert_or_ignore(upload.db, CONFLICTS, values, conflict=identity)
    if inserted:
        upload.db.execute(
            sa.insert(AUDIT).values(
                **event_row(upload, "submission.conflict.create", utcnow(), submission_id)
            )
        )
    kept = upload.db.execute(
        sa.select(
            CONFLICTS.c.id,
            CONFLICTS.c.resolved_at,
            CONFLICTS.c.attachments_dropped,
            CONFLICTS.c.dropped_names,
        ).where(*(CONFLICTS.c[name] == values[name] for name in identity))
    ).one()
    if kept.resolved_at is None:  # a settled conflict takes nothing more
        if not inserted and upload.ignored:
            upload.db.execute(
                sa.update(CONFLICTS)
                .where(CONFLICTS.c.id == kept.id)
                .values(**_dropped(upload.ignored, kept.dropped_names, kept.attachments_dropped))
            )
        for name, (blob_id, content_type) in upload.received.items():
            insert_or_ignore(
                upload.db,
                CONFLICT_FILES,
                {
                    "conflict_id": kept.id,
                    "name": name,
                    "blob_id": blob_id,
                    "content_type": content_type,
                },
                conflict=["conflict_id", "name"],
            )
    log.warning(
        "conflicting resend kept for review",
        extra={
            "fields": {"form_id": upload.form.xml_form_id, "instance_id": upload.parsed.instance_id}
        },
    )


def _insert_version(upload: Upload, submission_id: int, now: Any, present: int) -> int:
    return upload.db.execute(
        sa.insert(VERSIONS)
        .values(submission_id=submission_id, **version_row(upload, now, present))
        .returning(VERSIONS.c.id)
    ).scalar_one()


def _present(upload: Upload, carried: dict[str, attachments.Arrived]) -> int:
    """Count the expected attachments already at hand (received now, or carried forward)."""
    return sum(1 for name in upload.expected if name in upload.received or name in carried)


def _slots(upload: Upload, version_id: int, carried: dict[str, attachments.Arrived]) -> None:
    attachments.create_slots(
        upload.db,
        version_id,
        upload.expected,
        upload.received,
        carried=carried,
        audit_names=upload.audit_names,
        encrypted=upload.parsed.encrypted,
    )


def _receipt(
    upload: Upload, outcome: Outcome, submission_id: int, version_id: int, present: int
) -> Receipt:
    return Receipt(
        outcome=outcome,
        submission_id=submission_id,
        version_id=version_id,
        instance_id=upload.parsed.instance_id,
        instance_name=upload.parsed.instance_name or None,
        attachments_expected=len(upload.expected),
        attachments_present=present,
        attachments_received=list(upload.received),
        ignored_files=upload.ignored,
    )
