"""Conflicts: a record sent again under a known instanceID with other answers, and settling it.

Intake keeps such a payload (:func:`server.submissions.intake.writing.keep_conflict`) with the
files its XML names, answers the tablet 409.1 and records ``submission.conflict.create``. A
coordinator of the project (``submission.update``) then compares it with the record and
settles it, one of three ways (:data:`~server.submissions.models.RESOLUTIONS`):

* ``keepFirst``: the record stays as it is; the payload stays on file, settled;
* ``takeSecond``: the payload becomes the record's new current version, as an edit made on the
  tablet would: its XML gets a new ``instanceID`` and ``deprecatedID`` naming the current
  version, and goes through intake's edit path (:func:`server.submissions.intake.receive`),
  with the files the payload brought (the record's other files carried forward as for any
  edit). Its submitter, device and user agent are the payload's. An encrypted payload cannot
  be taken (its instanceID is sealed in it: 409.24);
* ``discard``: the record stays as it is; the payload's XML and its files are forgotten (the
  row stays, settled, so that the same payload sent again is recognised and not kept twice).

Each settling is audited (``submission.conflict.keep``, ``.take``, ``.discard``) in the
transaction that makes it; a conflict is settled once (409.23 the second time, whoever asks).
Conflicts of a draft's test records are kept too, but listed only with the draft's records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from server import errors
from server.audit import services as audit
from server.auth.models import Actor
from server.db import utcnow
from server.forms.models import Form, FormVersion
from server.forms.schema import FormSchema
from server.storage.models import Blob
from server.submissions import intake, parsing, services
from server.submissions.intake.durable import Durable
from server.submissions.models import (
    RESOLUTIONS,
    Submission,
    SubmissionConflict,
    SubmissionConflictFile,
    SubmissionVersion,
)

_OCTETS = "application/octet-stream"
CONFLICTS = SubmissionConflict.__table__
FILES = SubmissionConflictFile.__table__

# The audit action of each way of settling a conflict.
ACTIONS = {
    "keepFirst": "submission.conflict.keep",
    "takeSecond": "submission.conflict.take",
    "discard": "submission.conflict.discard",
}
assert set(ACTIONS) == set(RESOLUTIONS)

# The new instanceIDs of payloads taken as edits are derived from the payload: settling the
# same conflict again after a failure finds the version it already made.
_EDIT_NAMESPACE = uuid.UUID("8c4f7a52-3b0e-4f4e-9d55-3c1f0c2a6e19")


@dataclass(frozen=True)
class ConflictRow:
    """A conflict with the names a person reads: who sent it, who settled it."""

    conflict: SubmissionConflict
    submitter_name: str | None
    resolver_name: str | None


def count_open(db_session: Session, form_id: int) -> int:
    """Return how many conflicts of a form's records wait to be settled."""
    return db_session.execute(
        sa.select(sa.func.count()).where(
            CONFLICTS.c.form_id == form_id,
            CONFLICTS.c.draft.is_(False),
            CONFLICTS.c.resolved_at.is_(None),
        )
    ).scalar_one()


def count_all_open(db_session: Session) -> int:
    """Return how many conflicts wait to be settled on the whole server (for /metrics)."""
    return db_session.execute(
        sa.select(sa.func.count()).where(CONFLICTS.c.resolved_at.is_(None))
    ).scalar_one()


def open_for_record(db_session: Session, record: Submission) -> list[int]:
    """Return the ids of a record's conflicts still to settle (any version's instanceID)."""
    instance_ids = sa.select(SubmissionVersion.instance_id).where(
        SubmissionVersion.submission_id == record.id
    )
    return list(
        db_session.scalars(
            sa.select(SubmissionConflict.id)
            .where(
                SubmissionConflict.form_id == record.form_id,
                SubmissionConflict.draft.is_(record.draft),
                SubmissionConflict.instance_id.in_(instance_ids),
                SubmissionConflict.resolved_at.is_(None),
            )
            .order_by(SubmissionConflict.id)
        )
    )


def list_conflicts(
    db_session: Session,
    form_id: int,
    *,
    draft: bool = False,
    settled: bool | None = None,
    before_id: int | None = None,
    limit: int | None = None,
) -> list[ConflictRow]:
    """Return a form's conflicts, newest first (``settled``: only settled or unsettled ones)."""
    submitter, resolver = aliased(Actor), aliased(Actor)
    query = (
        sa.select(SubmissionConflict, submitter.display_name, resolver.display_name)
        .outerjoin(submitter, submitter.id == SubmissionConflict.submitter_id)
        .outerjoin(resolver, resolver.id == SubmissionConflict.resolved_by)
        .where(SubmissionConflict.form_id == form_id, SubmissionConflict.draft.is_(draft))
    )
    if settled is not None:
        resolved = SubmissionConflict.resolved_at
        query = query.where(resolved.is_not(None) if settled else resolved.is_(None))
    if before_id is not None:
        query = query.where(SubmissionConflict.id < before_id)
    query = query.order_by(SubmissionConflict.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [ConflictRow(c, s, r) for c, s, r in db_session.execute(query).all()]


def get(db_session: Session, form_id: int, conflict_id: int, *, draft: bool = False) -> ConflictRow:
    """Return one conflict of a form; 404 when the form has no such conflict."""
    submitter, resolver = aliased(Actor), aliased(Actor)
    found = db_session.execute(
        sa.select(SubmissionConflict, submitter.display_name, resolver.display_name)
        .outerjoin(submitter, submitter.id == SubmissionConflict.submitter_id)
        .outerjoin(resolver, resolver.id == SubmissionConflict.resolved_by)
        .where(
            SubmissionConflict.id == conflict_id,
            SubmissionConflict.form_id == form_id,
            SubmissionConflict.draft.is_(draft),
        )
    ).first()
    if found is None:
        raise errors.NotFound()
    return ConflictRow(*found)


def files(
    db_session: Session, conflict: SubmissionConflict
) -> list[tuple[SubmissionConflictFile, Blob]]:
    """Return the files kept with a conflict, by name."""
    return list(
        db_session.execute(
            sa.select(SubmissionConflictFile, Blob)
            .join(Blob, Blob.id == SubmissionConflictFile.blob_id)
            .where(SubmissionConflictFile.conflict_id == conflict.id)
            .order_by(SubmissionConflictFile.name)
        ).all()
    )


def record_of(db_session: Session, conflict: SubmissionConflict) -> Submission:
    """Return the record a conflict is about (in the trash or not)."""
    found = db_session.execute(
        sa.select(Submission)
        .join(SubmissionVersion, SubmissionVersion.submission_id == Submission.id)
        .where(
            SubmissionVersion.form_id == conflict.form_id,
            SubmissionVersion.draft.is_(conflict.draft),
            SubmissionVersion.instance_id == conflict.instance_id,
        )
    ).scalar_one_or_none()
    if found is None:  # a record is never removed while its conflicts remain (cascade)
        raise errors.NotFound()
    return found


def made_version(db_session: Session, conflict: SubmissionConflict) -> str | None:
    """Return the instanceID of the version ``takeSecond`` made of a conflict, if any."""
    if conflict.version_id is None:
        return None
    return db_session.execute(
        sa.select(SubmissionVersion.instance_id).where(SubmissionVersion.id == conflict.version_id)
    ).scalar_one_or_none()


def form_version_name(db_session: Session, conflict: SubmissionConflict) -> str | None:
    """Return the form version a conflicting payload names (None for old conflicts)."""
    if conflict.form_version_id is None:
        return None
    return db_session.execute(
        sa.select(FormVersion.version).where(FormVersion.id == conflict.form_version_id)
    ).scalar_one_or_none()


# ---- the two contents --------------------------------------------------------------------


@dataclass
class Contents:
    """What a comparison reads: the record's current version and the payload, each with the
    field schema of the form version it was filled on. Documents are raw: hand them to the
    reader's :class:`~server.personal.Disclosure`."""

    record: Submission
    current: SubmissionVersion
    current_schema: FormSchema
    schema: FormSchema
    document: dict[str, Any] | None  # the payload's (None: encrypted, or discarded)
    encrypted: bool
    form_version: str | None  # the version the payload names

    @property
    def root(self) -> str:
        """The name of the record's root element (``data`` unless the form names it)."""
        return self.schema.root if self.schema.fields else self.current_schema.root


def contents(db_session: Session, form: Form, conflict: SubmissionConflict) -> Contents:
    """Read the record's current version and the conflicting payload, side by side."""
    record = record_of(db_session, conflict)
    current = services.current_version(db_session, record)
    current_schema = _schema(db_session, current.form_version_id)
    version_id = conflict.form_version_id or form.current_version_id or current.form_version_id
    schema = _schema(db_session, version_id)
    form_version = db_session.get(FormVersion, version_id) if version_id else None
    document, encrypted = None, False
    if conflict.raw_xml:
        parsed = parsing.read_submission(conflict.raw_xml.encode("utf-8"))
        encrypted = parsed.encrypted
        if not encrypted:
            document = parsing.build_document(parsed.root, schema.repeat_paths)
    return Contents(
        record=record,
        current=current,
        current_schema=current_schema,
        schema=schema,
        document=document,
        encrypted=encrypted,
        form_version=form_version.version if form_version is not None else None,
    )


def _schema(db_session: Session, form_version_id: int | None) -> FormSchema:
    found = db_session.get(FormVersion, form_version_id) if form_version_id else None
    return found.form_schema if found is not None else FormSchema.of(None)


def differences(first: Any, second: Any, root: str = "data") -> list[tuple[str, Any, Any]]:
    """Return (path, first value, second value) of every answer that differs, in order.

    Paths are the record's element paths, repeat instances numbered from 1
    (``/data/members[2]/age``); an answer one side lacks is None on that side.
    """
    left, right = _flat(first, f"/{root}"), _flat(second, f"/{root}")
    paths = list(left) + [p for p in right if p not in left]
    return [(p, left.get(p), right.get(p)) for p in paths if left.get(p) != right.get(p)]


def _flat(document: Any, path: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    if isinstance(document, dict):
        for name, value in document.items():
            if isinstance(value, list):
                for number, item in enumerate(value, 1):
                    found.update(_flat(item, f"{path}/{name}[{number}]"))
            else:
                found.update(_flat(value, f"{path}/{name}"))
    elif path.count("/") > 1:
        found[path] = document
    return found


# ---- settling ----------------------------------------------------------------------------


def resolve(
    db_session: Session,
    form: Form,
    conflict_id: int,
    resolution: str,
    *,
    actor_id: int | None,
) -> SubmissionConflict:
    """Settle a conflict of ``form``'s records as ``resolution`` says, audited. Commits.

    Raises 404 (no such conflict), 409.23 (already settled), 409.24 (an encrypted payload
    taken as an edit), and what intake's edit path raises for ``takeSecond`` (409.18 when the
    record is in the trash, 409.2 when the form is closed).
    """
    if resolution not in RESOLUTIONS:
        raise errors.UnexpectedValue(
            field="resolution", reason="expected one of " + ", ".join(RESOLUTIONS)
        )
    conflict = get(db_session, form.id, conflict_id).conflict
    if conflict.resolved_at is not None:
        raise errors.ConflictSettled(resolution=conflict.resolution)
    record = record_of(db_session, conflict)
    values: dict[str, Any] = {
        "resolved_at": utcnow(),
        "resolution": resolution,
        "resolved_by": actor_id,
    }
    details: dict[str, Any] = {"instanceId": conflict.instance_id, "conflictId": conflict.id}
    if resolution == "takeSecond":
        version = _take(db_session, form, conflict, record)
        values["version_id"] = version.id
        details["versionInstanceId"] = version.instance_id
    elif resolution == "discard":
        values.update(xml="", attachments_dropped=0, dropped_names=sa.null())
        db_session.execute(sa.delete(FILES).where(FILES.c.conflict_id == conflict.id))
    # Whoever settles first wins: a second request (another coordinator) finds it settled.
    settled = db_session.execute(
        sa.update(CONFLICTS)
        .where(CONFLICTS.c.id == conflict.id, CONFLICTS.c.resolved_at.is_(None))
        .values(**values)
        .returning(CONFLICTS.c.id)
    ).first()
    if settled is None:
        db_session.rollback()
        db_session.expire_all()
        again = get(db_session, form.id, conflict_id).conflict
        raise errors.ConflictSettled(resolution=again.resolution)
    audit.record(
        db_session,
        ACTIONS[resolution],
        actor_id=actor_id,
        project_id=form.project_id,
        form_id=form.id,
        submission_id=record.id,
        details=details,
    )
    db_session.commit()
    return db_session.get(SubmissionConflict, conflict.id, populate_existing=True)


def _take(
    db_session: Session, form: Form, conflict: SubmissionConflict, record: Submission
) -> SubmissionVersion:
    """Make the payload the record's new version through intake's edit path (committed)."""
    parsed = parsing.read_submission(conflict.raw_xml.encode("utf-8"))
    if parsed.encrypted:
        raise errors.EncryptedConflict()
    instance_id = f"uuid:{uuid.uuid5(_EDIT_NAMESPACE, f'{conflict.id}:{conflict.xml_sha256}')}"
    if not services.instance_id_known(db_session, form.id, instance_id, draft=conflict.draft):
        current = services.current_version(db_session, record)
        kept = [
            Durable(f.name, blob.sha256, blob.md5, blob.size, f.content_type or _OCTETS)
            for f, blob in files(db_session, conflict)
        ]
        intake.receive(
            db_session,
            project_id=form.project_id,
            xml=parsing.as_edit(
                conflict.raw_xml.encode("utf-8"),
                instance_id=instance_id,
                deprecated_id=current.instance_id,
            ),
            files=[],
            stored=kept,
            actor_id=conflict.submitter_id,
            device_id=conflict.device_id,
            user_agent=conflict.user_agent,
            draft=conflict.draft,
            require_deprecation=True,
        )
    return services.version(db_session, record, instance_id)
