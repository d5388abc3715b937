"""Receiving records: one copy of each, whatever the retries, splits and races.

This is the service behind ODK Collect's ``POST /submission`` and the API's REST create and
edit; it knows nothing of HTTP. The rules (openrosa.md §4.4, and ODK Central's behaviour):

1. a new (form, instanceID) is stored;
2. the same instanceID with byte-identical XML is a retry or the next part of a split upload:
   newly arrived attachments are added, nothing else changes, and the answer is success again
   (an error would make the tablet retry forever);
3. the same instanceID with different XML is a conflict (409): the payload is kept for review;
4. ``meta/deprecatedID`` makes the record a new version of an existing one (an edit), carrying
   forward the attachments it does not send again.

Before any of these, what was sent must be a record of the form: its root is the form's
instance root (:func:`~server.submissions.parsing.check_instance`), else 400 and nothing is
stored, not even as a conflict (issue 16: a web page sent as a record ran in a coordinator's
browser when its XML was opened).

Order of durability: attachment bytes are made durable in the blob store first, then the rows
are committed, and only then does the caller answer success.

Races: two identical uploads on two workers must give one record. On PostgreSQL a new record
is inserted in one statement guarded by the unique constraint on (form, draft, instanceID)
(``ON CONFLICT DO NOTHING``); whoever finds the identity taken falls back to the careful path,
which takes an advisory lock on the instanceID and decides between retry, conflict and edit.
On SQLite every writer holds the database's single write lock from ``BEGIN IMMEDIATE``.

Speed: a record costs a handful of statements (identity of the device, its rights, the form
and version in one query, the insert, the commit), in SQLAlchemy Core rather than the ORM; the
field schema of a published version is read once per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import errors
from server.audit import services as audit
from server.audit.models import AuditEvent
from server.db import insert_or_ignore, utcnow
from server.forms.models import Form, FormVersion
from server.storage import services as storage
from server.storage.models import Blob
from server.submissions import filenames, parsing
from server.submissions.models import (
    Submission,
    SubmissionAttachment,
    SubmissionConflict,
    SubmissionVersion,
)

log = logging.getLogger(__name__)

Outcome = Literal["created", "duplicate", "edited"]

SUBMISSIONS = Submission.__table__
VERSIONS = SubmissionVersion.__table__
SLOTS = SubmissionAttachment.__table__
AUDIT = AuditEvent.__table__


@dataclass
class IncomingFile:
    """A file part of an upload: its name, a readable stream and the declared type."""

    name: str
    stream: BinaryIO
    content_type: str | None = None


@dataclass
class Receipt:
    """What happened to a record, for the answer to the device and for metrics."""

    outcome: Outcome
    submission_id: int
    version_id: int
    instance_id: str
    instance_name: str | None
    attachments_expected: int
    attachments_present: int
    attachments_received: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.attachments_present >= self.attachments_expected


@dataclass(frozen=True)
class FormRef:
    """The facts of a form intake needs, read in one query with the record's version."""

    id: int
    project_id: int
    xml_form_id: str
    state: str


@dataclass(frozen=True)
class SchemaFacts:
    """What intake reads from a form version's field schema, prepared once per version."""

    repeat_paths: frozenset[str]
    binary_paths: tuple[str, ...]
    audit_paths: frozenset[str]
    root: str = "data"


def schema_facts(schema: dict[str, Any]) -> SchemaFacts:
    """Extract the root, repeats, binary fields and the client audit field from a schema."""
    fields = schema.get("fields", [])
    return SchemaFacts(
        root=schema.get("root") or "data",
        repeat_paths=frozenset(f["path"] for f in fields if f.get("kind") == "repeat"),
        binary_paths=tuple(f["path"] for f in fields if f.get("type") == "binary"),
        audit_paths=frozenset(f["path"] for f in fields if f.get("audit")),
    )


# Facts of published versions, which never change: read once per process, not per record.
# Keyed by the XML's MD5 as well as the id, so that an id reused (tests) never gives old facts.
_FACTS: dict[tuple[int, str], SchemaFacts] = {}
_FACTS_LIMIT = 512


FORMS, FORM_VERSIONS = Form.__table__, FormVersion.__table__


def _target_statement(*, draft: bool) -> sa.Select:
    """The form and the version a record names, in one query (built once, in Core)."""
    matches = (
        FORM_VERSIONS.c.id == FORMS.c.draft_version_id
        if draft
        else FORM_VERSIONS.c.published_at.is_not(None)
    )
    return (
        sa.select(
            FORMS.c.id,
            FORMS.c.state,
            FORM_VERSIONS.c.id,
            FORM_VERSIONS.c.hash,
            FORM_VERSIONS.c.published_at,
        )
        .select_from(
            FORMS.outerjoin(
                FORM_VERSIONS,
                sa.and_(
                    FORM_VERSIONS.c.form_id == FORMS.c.id,
                    FORM_VERSIONS.c.version == sa.bindparam("version"),
                    matches,
                ),
            )
        )
        .where(
            FORMS.c.project_id == sa.bindparam("project_id"),
            FORMS.c.xml_form_id == sa.bindparam("xml_form_id"),
            FORMS.c.deleted_at.is_(None),
        )
    )


_TARGET = {draft: _target_statement(draft=draft) for draft in (False, True)}


def _target(
    db_session: Session, project_id: int, xml_form_id: str, version: str, *, draft: bool
) -> tuple[FormRef | None, int | None, str | None, bool]:
    """Return the form, and the id, MD5 and published flag of the version a record names.

    Records filled on any published version are accepted (tablets update at their own pace);
    draft test records must name the draft's version.
    """
    row = db_session.execute(
        _TARGET[draft],
        {"project_id": project_id, "xml_form_id": xml_form_id, "version": version},
    ).first()
    if row is None:
        return None, None, None, False
    form_id, state, version_id, version_hash, published_at = row
    return (
        FormRef(form_id, project_id, xml_form_id, state),
        version_id,
        version_hash,
        published_at is not None,
    )


def _facts(db_session: Session, version_id: int, version_hash: str, published: bool) -> SchemaFacts:
    key = (version_id, version_hash)
    if published and key in _FACTS:
        return _FACTS[key]
    schema = db_session.execute(
        sa.select(FormVersion.schema).where(FormVersion.id == version_id)
    ).scalar_one()
    facts = schema_facts(schema)
    if published:  # drafts change as media is attached: never cached
        if len(_FACTS) >= _FACTS_LIMIT:
            _FACTS.clear()
        _FACTS[key] = facts
    return facts


@dataclass
class _Durable:
    """An attachment whose bytes are durable (store or spool), not yet catalogued."""

    name: str
    sha256: str
    md5: str
    size: int
    content_type: str


@dataclass
class _Context:
    """Everything known about one upload once its XML is read and its files are durable."""

    db: Session
    form: FormRef
    version_id: int
    parsed: parsing.ParsedSubmission
    draft: bool
    document: dict | None
    xml_text: str
    xml_sha: str
    expected: list[str]
    audit_names: set[str]
    actor_id: int | None
    device_id: str | None
    user_agent: str | None
    durable: list[_Durable] = field(default_factory=list)
    received: dict[str, tuple[int, str | None]] = field(default_factory=dict)


def receive(
    db_session: Session,
    *,
    project_id: int,
    xml: bytes,
    files: list[IncomingFile],
    actor_id: int | None,
    device_id: str | None = None,
    user_agent: str | None = None,
    draft: bool = False,
    authorize: Callable[[FormRef], None] | None = None,
    require_deprecation: bool = False,
) -> Receipt:
    """Store one upload of a record (or part of it); return what happened.

    Raises problems: 404 (unknown form or version, unknown deprecatedID), 403 (``authorize``
    refused), 409 (closed form, conflicting XML, stale edit, deleted record), 400 (bad XML),
    503 (attachments cannot be stored now). Commits before returning: the record and its
    attachments are durable.
    """
    parsed = parsing.read_submission(xml)
    form, version_id, version_hash, published = _target(
        db_session, project_id, parsed.form_id, parsed.version, draft=draft
    )
    if form is None:
        raise errors.FormNotFound(form_id=parsed.form_id)
    if authorize is not None:
        authorize(form)
    if form.state == "closed" and not draft:
        raise errors.NotAcceptingSubmissions(form_id=parsed.form_id)
    if version_id is None:
        if draft:
            raise errors.DraftNotFound()
        raise errors.FormVersionNotFound(version=parsed.version or '""', form_id=parsed.form_id)
    if parsed.instance_id is None:
        # Central and Aggregate mint one; the record is then new by construction.
        parsed.instance_id = f"uuid:{uuid.uuid4()}"
    if require_deprecation and not parsed.deprecated_id:
        raise errors.ExpectedDeprecation()

    facts = _facts(db_session, version_id, version_hash, published)
    # Before anything is stored, a conflict's payload included: what is kept is served again.
    parsing.check_instance(parsed, xml, facts.root)
    if parsed.encrypted:
        document = None
        expected = [
            filenames.attachment_name(n)
            for n in (*parsed.encrypted_media, parsed.encrypted_xml_name)
            if n
        ]
        if len(set(expected)) != len(expected):
            # Each file's position decides its key stream (openrosa.md §6, step 3): a name
            # listed twice cannot come from Collect and could never be decrypted.
            raise errors.UnexpectedValue(
                field="encrypted record", reason=_("the same file is listed twice")
            )
        audit_names = {n for n in expected if n.lower().startswith("audit.csv")}
    else:
        document = parsing.build_document(parsed.root, facts.repeat_paths)
        expected, audit_names = [], set()
        known: dict[str, str] = {}  # one slot per name, however its accents are encoded
        for path, written in parsing.binary_values(document, list(facts.binary_paths)):
            name = known.setdefault(
                filenames.comparable(written), filenames.attachment_name(written)
            )
            if name not in expected:
                expected.append(name)
            if path in facts.audit_paths:
                audit_names.add(name)

    durable: list[_Durable] = []
    ignored: list[str] = []
    if files:
        # End the read transaction before the slow part: on SQLite it holds the write lock,
        # and copying a photo to the object store must not make every other upload wait.
        db_session.commit()
        durable, ignored = _make_durable(files, expected)
        if ignored:
            log.info(
                "ignored files not named in the record",
                extra={"fields": {"instance_id": parsed.instance_id, "files": ignored}},
            )

    ctx = _Context(
        db=db_session,
        form=form,
        version_id=version_id,
        parsed=parsed,
        draft=draft,
        document=document,
        xml_text=parsed.text,
        xml_sha=hashlib.sha256(xml).hexdigest(),
        expected=expected,
        audit_names=audit_names,
        actor_id=actor_id,
        device_id=device_id,
        user_agent=(user_agent or "")[:255] or None,
        durable=durable,
    )
    for attempt in (1, 2):
        try:
            ctx.received = _catalogue(db_session, durable)
            receipt = _apply(ctx)
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
        receipt.ignored_files = ignored
        return receipt
    raise AssertionError("unreachable")


def _make_durable(
    files: list[IncomingFile], expected: list[str]
) -> tuple[list[_Durable], list[str]]:
    """Stage and store the files the record names; return them and the names ignored."""
    durable: list[_Durable] = []
    seen: set[str] = set()
    ignored: list[str] = []
    named = {filenames.comparable(name): name for name in expected}
    for incoming in files:
        sent = filenames.part_name(incoming.name)
        name = named.get(sent)
        if name is None:
            ignored.append(sent)
            continue
        if name in seen:
            continue
        seen.add(name)
        content_type = incoming.content_type
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        staged = storage.stage_stream(incoming.stream)
        try:
            storage.make_durable(staged)  # raises a 503 problem when nothing can take it
        finally:
            staged.discard()
        durable.append(_Durable(name, staged.sha256, staged.md5, staged.size, content_type))
    return durable, ignored


def _catalogue(db_session: Session, durable: list[_Durable]) -> dict[str, tuple[int, str | None]]:
    """Record durable files in the blob catalogue; return name -> (blob id, content type)."""
    if not durable:
        return {}
    for item in durable:
        insert_or_ignore(
            db_session,
            Blob.__table__,
            {"sha256": item.sha256, "md5": item.md5, "size": item.size},
            conflict=["sha256"],
        )
    ids = dict(
        db_session.execute(
            sa.select(Blob.sha256, Blob.id).where(Blob.sha256.in_({d.sha256 for d in durable}))
        ).all()
    )
    return {item.name: (ids[item.sha256], item.content_type) for item in durable}


# ---- deciding what an upload is ---------------------------------------------------------------


def _apply(ctx: _Context) -> Receipt:
    """Decide what this upload is and write it (inside the caller's transaction)."""
    parsed = ctx.parsed
    if not parsed.deprecated_id and ctx.db.get_bind().dialect.name == "postgresql":
        receipt = _create_unless_known(ctx)
        if receipt is not None:
            return receipt
    ids = [parsed.instance_id] + ([parsed.deprecated_id] if parsed.deprecated_id else [])
    _lock(ctx.db, ctx.form.id, ctx.draft, *ids)
    existing = _version_row(ctx, parsed.instance_id)
    if existing is not None:
        return _repeat(ctx, existing)
    if parsed.deprecated_id:
        return _edit(ctx)
    return _create(ctx)


def _lock(db_session: Session, form_id: int, draft: bool, *instance_ids: str) -> None:
    """Serialise work on these instanceIDs across every server process (PostgreSQL)."""
    if db_session.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's single write lock
    keys = sorted(
        int.from_bytes(
            hashlib.blake2b(f"{form_id}:{draft}:{iid}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        for iid in set(instance_ids)
    )
    for key in keys:
        db_session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _version_row(ctx: _Context, instance_id: str) -> sa.Row | None:
    return ctx.db.execute(
        sa.select(
            VERSIONS.c.id,
            VERSIONS.c.submission_id,
            VERSIONS.c.xml_sha256,
            VERSIONS.c.current,
            VERSIONS.c.instance_id,
            VERSIONS.c.deprecated_id,
            VERSIONS.c.instance_name,
            VERSIONS.c.attachments_expected,
            VERSIONS.c.attachments_present,
        ).where(
            VERSIONS.c.form_id == ctx.form.id,
            VERSIONS.c.draft == ctx.draft,
            VERSIONS.c.instance_id == instance_id,
        )
    ).first()


def _submission_deleted(ctx: _Context, submission_id: int) -> bool:
    return (
        ctx.db.execute(
            sa.select(SUBMISSIONS.c.deleted_at).where(SUBMISSIONS.c.id == submission_id)
        ).scalar()
        is not None
    )


def _repeat(ctx: _Context, existing: sa.Row) -> Receipt:
    """The instanceID is known: a retry, a split upload's next part, or a conflict."""
    if _submission_deleted(ctx, existing.submission_id):
        raise errors.DeletedSubmission()
    if existing.xml_sha256 != ctx.xml_sha:
        _keep_conflict(ctx)
        raise errors.XmlConflict()
    added, present = _fill_slots(
        ctx, existing.id, existing.attachments_present, existing.deprecated_id
    )
    return Receipt(
        outcome="duplicate",
        submission_id=existing.submission_id,
        version_id=existing.id,
        instance_id=existing.instance_id,
        instance_name=existing.instance_name,
        attachments_expected=existing.attachments_expected,
        attachments_present=present,
        attachments_received=added,
    )


def _keep_conflict(ctx: _Context) -> None:
    insert_or_ignore(
        ctx.db,
        SubmissionConflict.__table__,
        {
            "form_id": ctx.form.id,
            "instance_id": ctx.parsed.instance_id,
            "xml": ctx.xml_text,
            "xml_sha256": ctx.xml_sha,
            "reason": "xml_differs",
            "submitter_id": ctx.actor_id,
            "device_id": ctx.device_id,
            "user_agent": ctx.user_agent,
            "received_at": utcnow(),
        },
        conflict=["form_id", "instance_id", "xml_sha256"],
    )
    log.warning(
        "conflicting resend kept for review",
        extra={"fields": {"form_id": ctx.form.xml_form_id, "instance_id": ctx.parsed.instance_id}},
    )


def _fill_slots(
    ctx: _Context, version_id: int, present: int, deprecated_id: str | None = None
) -> tuple[list[str], int]:
    """Attach newly received files to a version's empty slots; return names added, count.

    A slot an edit filled with the previous version's file (carried forward) is only a
    stand-in: when the edit's own file of that name arrives in a later part of a split
    upload, it takes the slot.
    """
    if not ctx.received:
        return [], present
    slots = ctx.db.execute(
        sa.select(SLOTS.c.id, SLOTS.c.name, SLOTS.c.blob_id).where(
            SLOTS.c.submission_version_id == version_id
        )
    ).all()
    added = []
    now = utcnow()
    carried: dict[str, int] | None = None
    for slot in slots:
        arrived = ctx.received.get(slot.name)
        if arrived is None:
            continue
        if slot.blob_id is not None and slot.blob_id != arrived[0] and deprecated_id:
            if carried is None:
                carried = _previous_files(ctx, deprecated_id)
            if carried.get(slot.name) == slot.blob_id:
                # Found by the field simulation: an edit re-sending audit.csv (same name, new
                # content) in its second POST kept the previous version's log.
                ctx.db.execute(
                    sa.update(SLOTS)
                    .where(SLOTS.c.id == slot.id)
                    .values(blob_id=arrived[0], content_type=arrived[1], updated_at=now)
                )
                log.info(
                    "carried-forward attachment replaced by the edit's own file",
                    extra={"fields": {"instance_id": ctx.parsed.instance_id, "file": slot.name}},
                )
                continue
        if slot.blob_id is None:
            ctx.db.execute(
                sa.update(SLOTS)
                .where(SLOTS.c.id == slot.id)
                .values(blob_id=arrived[0], content_type=arrived[1], updated_at=now)
            )
            added.append(slot.name)
        elif slot.blob_id != arrived[0]:
            # The same name with other bytes: the first durable copy stays (nothing is
            # silently replaced); the difference is logged for the coordinator.
            log.warning(
                "attachment resent with different content; first copy kept",
                extra={"fields": {"instance_id": ctx.parsed.instance_id, "file": slot.name}},
            )
    present = sum(1 for s in slots if s.blob_id is not None) + len(added)
    if added:
        ctx.db.execute(
            sa.update(VERSIONS)
            .where(VERSIONS.c.id == version_id)
            .values(attachments_present=present)
        )
    return added, present


def _previous_files(ctx: _Context, instance_id: str) -> dict[str, int]:
    """Return name -> blob id of the files a version of this form holds."""
    return dict(
        ctx.db.execute(
            sa.select(SLOTS.c.name, SLOTS.c.blob_id)
            .join(VERSIONS, VERSIONS.c.id == SLOTS.c.submission_version_id)
            .where(
                VERSIONS.c.form_id == ctx.form.id,
                VERSIONS.c.draft == ctx.draft,
                VERSIONS.c.instance_id == instance_id,
                SLOTS.c.blob_id.is_not(None),
            )
        ).all()
    )


# ---- writing new records and versions --------------------------------------------------------


def _version_values(ctx: _Context, now: Any, present: int) -> dict[str, Any]:
    parsed = ctx.parsed
    return {
        "form_id": ctx.form.id,
        "draft": ctx.draft,
        "form_version_id": ctx.version_id,
        "instance_id": parsed.instance_id,
        "deprecated_id": parsed.deprecated_id,
        "current": True,
        "xml": ctx.xml_text,
        "xml_sha256": ctx.xml_sha,
        "document": ctx.document,
        "instance_name": parsed.instance_name or None,
        "submitter_id": ctx.actor_id,
        "device_id": ctx.device_id,
        "user_agent": ctx.user_agent,
        "created_at": now,
        "attachments_expected": len(ctx.expected),
        "attachments_present": present,
        "encrypted": parsed.encrypted,
        "encrypted_key": parsed.encrypted_key,
        "encrypted_signature": parsed.encrypted_signature,
        "encrypted_xml_name": parsed.encrypted_xml_name,
    }


def _audit_values(
    ctx: _Context, action: str, now: Any, submission_id: int | None, **details: Any
) -> dict[str, Any]:
    return audit.event(
        action,
        actor_id=ctx.actor_id,
        project_id=ctx.form.project_id,
        form_id=ctx.form.id,
        submission_id=submission_id,
        details={"instanceId": ctx.parsed.instance_id, **details},
        logged_at=now,
    )


def _present(ctx: _Context, carried: dict[str, tuple[int, str | None]]) -> int:
    """Count the expected attachments already at hand (received now, or carried forward)."""
    return sum(1 for name in ctx.expected if name in ctx.received or name in carried)


def _slots(ctx: _Context, version_id: int, carried: dict[str, tuple[int, str | None]]) -> None:
    """Create the attachment slots of a new version, filled where the file is at hand."""
    if not ctx.expected:
        return
    now = utcnow()
    rows = []
    for index, name in enumerate(ctx.expected):
        blob = ctx.received.get(name) or carried.get(name)
        rows.append(
            {
                "submission_version_id": version_id,
                "name": name,
                "blob_id": blob[0] if blob else None,
                "content_type": blob[1]
                if blob
                else (mimetypes.guess_type(name)[0] or "application/octet-stream"),
                "is_client_audit": name in ctx.audit_names,
                "encryption_index": index if ctx.parsed.encrypted else None,
                "updated_at": now if blob else None,
            }
        )
    ctx.db.execute(sa.insert(SLOTS), rows)


def _receipt(
    ctx: _Context, outcome: Outcome, submission_id: int, version_id: int, present: int
) -> Receipt:
    return Receipt(
        outcome=outcome,
        submission_id=submission_id,
        version_id=version_id,
        instance_id=ctx.parsed.instance_id,
        instance_name=ctx.parsed.instance_name or None,
        attachments_expected=len(ctx.expected),
        attachments_present=present,
        attachments_received=list(ctx.received),
    )


def _submission_values(ctx: _Context, now: Any) -> dict[str, Any]:
    return {
        "form_id": ctx.form.id,
        "draft": ctx.draft,
        "instance_id": ctx.parsed.instance_id,
        "submitter_id": ctx.actor_id,
        "device_id": ctx.device_id,
        "user_agent": ctx.user_agent,
        "created_at": now,
    }


# A new record in one round trip: the submission, its first version and the audit event.
# Written as SQL once, rather than built per request, because it runs for every record.
_CREATE_UNLESS_KNOWN = sa.text("""
WITH new_submission AS (
    INSERT INTO submissions
        (form_id, draft, instance_id, submitter_id, device_id, user_agent, created_at)
    VALUES (:form_id, :draft, :instance_id, :submitter_id, :device_id, :user_agent, :now)
    ON CONFLICT (form_id, draft, instance_id) DO NOTHING
    RETURNING id
), new_version AS (
    INSERT INTO submission_versions
        (submission_id, form_id, draft, form_version_id, instance_id, current, xml, xml_sha256,
         document, instance_name, submitter_id, device_id, user_agent, created_at,
         attachments_expected, attachments_present, encrypted, encrypted_key,
         encrypted_signature, encrypted_xml_name)
    SELECT id, :form_id, :draft, :form_version_id, :instance_id, true, :xml, :xml_sha256,
           CAST(:document AS jsonb), :instance_name, :submitter_id, :device_id, :user_agent,
           :now, :expected, :present, :encrypted, :encrypted_key, :encrypted_signature,
           :encrypted_xml_name
    FROM new_submission
    ON CONFLICT (form_id, draft, instance_id) DO NOTHING
    RETURNING id, submission_id
), new_audit AS (
    INSERT INTO audit_events (actor_id, action, project_id, form_id, submission_id, details,
                              logged_at)
    SELECT :audit_actor_id, :audit_action, :audit_project_id, :audit_form_id, submission_id,
           CAST(:audit_details AS jsonb), :audit_logged_at
    FROM new_version
)
SELECT submission_id, id FROM new_version
""")


def _create_unless_known(ctx: _Context) -> Receipt | None:
    """Insert a new record in one statement unless its identity exists (PostgreSQL).

    Returns None when the instanceID is taken (as a record or as an edit's version): the
    statement then changed nothing that survives, and the careful path takes over.
    """
    parsed = ctx.parsed
    present = _present(ctx, {})
    now = utcnow()
    # The event's row comes from the audit service, as on the generic path (its submission id
    # is the new one, taken inside the statement).
    event = _audit_values(ctx, "submission.create", now, None)
    row = ctx.db.execute(
        _CREATE_UNLESS_KNOWN,
        {
            "form_id": ctx.form.id,
            "draft": ctx.draft,
            "instance_id": parsed.instance_id,
            "submitter_id": ctx.actor_id,
            "device_id": ctx.device_id,
            "user_agent": ctx.user_agent,
            "now": now,
            "form_version_id": ctx.version_id,
            "xml": ctx.xml_text,
            "xml_sha256": ctx.xml_sha,
            "document": json.dumps(ctx.document, ensure_ascii=False)
            if ctx.document is not None
            else None,
            "instance_name": parsed.instance_name or None,
            "expected": len(ctx.expected),
            "present": present,
            "encrypted": parsed.encrypted,
            "encrypted_key": parsed.encrypted_key,
            "encrypted_signature": parsed.encrypted_signature,
            "encrypted_xml_name": parsed.encrypted_xml_name,
            **{f"audit_{key}": value for key, value in event.items() if key != "details"},
            "audit_details": json.dumps(event["details"]),
        },
    ).first()
    if row is None:
        # Either the record exists (nothing was inserted) or the instanceID is an edit's
        # version (the submission row went in, the version did not): undo and look closer.
        ctx.db.rollback()
        ctx.received = _catalogue(ctx.db, ctx.durable)  # the rollback undid the catalogue rows
        return None
    submission_id, version_id = row
    _slots(ctx, version_id, {})
    return _receipt(ctx, "created", submission_id, version_id, present)


def _create(ctx: _Context) -> Receipt:
    now = utcnow()
    submission_id = ctx.db.execute(
        sa.insert(SUBMISSIONS).values(**_submission_values(ctx, now)).returning(SUBMISSIONS.c.id)
    ).scalar_one()
    present = _present(ctx, {})
    version_id = ctx.db.execute(
        sa.insert(VERSIONS)
        .values(submission_id=submission_id, **_version_values(ctx, now, present))
        .returning(VERSIONS.c.id)
    ).scalar_one()
    ctx.db.execute(
        sa.insert(AUDIT).values(**_audit_values(ctx, "submission.create", now, submission_id))
    )
    _slots(ctx, version_id, {})
    return _receipt(ctx, "created", submission_id, version_id, present)


def _edit(ctx: _Context) -> Receipt:
    """A new version of a record: ``deprecatedID`` names the version it replaces."""
    parsed = ctx.parsed
    previous = _version_row(ctx, parsed.deprecated_id)
    if previous is None:
        raise errors.DeprecatedIdNotFound(deprecated_id=parsed.deprecated_id)
    if _submission_deleted(ctx, previous.submission_id):
        raise errors.DeletedSubmission()
    if not previous.current:
        raise errors.StaleEdit(deprecated_id=parsed.deprecated_id)
    carried = {
        name: (blob_id, content_type)
        for name, blob_id, content_type in ctx.db.execute(
            sa.select(SLOTS.c.name, SLOTS.c.blob_id, SLOTS.c.content_type).where(
                SLOTS.c.submission_version_id == previous.id, SLOTS.c.blob_id.is_not(None)
            )
        )
    }
    now = utcnow()
    # One current version at a time (a partial unique index): retire the old one first.
    ctx.db.execute(sa.update(VERSIONS).where(VERSIONS.c.id == previous.id).values(current=False))
    present = _present(ctx, carried)
    version_id = ctx.db.execute(
        sa.insert(VERSIONS)
        .values(submission_id=previous.submission_id, **_version_values(ctx, now, present))
        .returning(VERSIONS.c.id)
    ).scalar_one()
    ctx.db.execute(
        sa.update(SUBMISSIONS)
        .where(SUBMISSIONS.c.id == previous.submission_id)
        .values(review_state="edited", updated_at=now)
    )
    ctx.db.execute(
        sa.insert(AUDIT).values(
            **_audit_values(
                ctx,
                "submission.update.version",
                now,
                previous.submission_id,
                deprecatedId=parsed.deprecated_id,
            ),
        )
    )
    _slots(ctx, version_id, carried)
    return _receipt(ctx, "edited", previous.submission_id, version_id, present)
