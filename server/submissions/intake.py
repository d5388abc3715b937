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

Order of durability: attachment bytes are made durable in the blob store first, then the rows
are committed, and only then does the caller answer success. Two identical uploads racing on
two workers are serialised by a lock on the instanceID (PostgreSQL advisory lock; SQLite takes
its write lock at BEGIN) and backed by the unique constraint on (form, draft, instanceID).
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from server import errors
from server.audit.models import AuditEvent
from server.db import utcnow
from server.forms.models import Form, FormVersion
from server.storage import service as storage
from server.storage.models import Blob
from server.submissions import parsing
from server.submissions.models import (
    Submission,
    SubmissionAttachment,
    SubmissionConflict,
    SubmissionVersion,
)

log = logging.getLogger(__name__)

Outcome = Literal["created", "duplicate", "edited"]


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
class SchemaFacts:
    """What intake reads from a form version's field schema, prepared once per version."""

    repeat_paths: frozenset[str]
    binary_paths: tuple[str, ...]
    audit_paths: frozenset[str]


def schema_facts(schema: dict[str, Any]) -> SchemaFacts:
    """Extract repeats, binary fields and the client audit field from a field schema."""
    fields = schema.get("fields", [])
    return SchemaFacts(
        repeat_paths=frozenset(f["path"] for f in fields if f.get("kind") == "repeat"),
        binary_paths=tuple(f["path"] for f in fields if f.get("type") == "binary"),
        audit_paths=frozenset(f["path"] for f in fields if f.get("audit")),
    )


# Facts of published versions, which never change: read once per process, not per record.
# Keyed by the XML's MD5 as well as the id, so that an id reused (tests) never gives old facts.
_FACTS: dict[tuple[int, str], SchemaFacts] = {}
_FACTS_LIMIT = 512


def clean_filename(name: str) -> str:
    """Return the last path segment of a part's file name, without control characters.

    Collect names parts after the instance's files; a hostile client could send ``../x``.
    """
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return name.strip()[:255]


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


def find_form(db_session: Session, project_id: int, xml_form_id: str) -> Form | None:
    """Return the live form with this formID in the project."""
    return db_session.execute(
        sa.select(Form).where(
            Form.project_id == project_id,
            Form.xml_form_id == xml_form_id,
            Form.deleted_at.is_(None),
        )
    ).scalar_one_or_none()


def find_version(
    db_session: Session, form: Form, version: str, *, draft: bool
) -> FormVersion | None:
    """Return the form version a record was filled on (any published one, or the draft)."""
    if draft:
        if form.draft_version_id is None:
            return None
        candidate = db_session.get(FormVersion, form.draft_version_id)
        return candidate if candidate is not None and candidate.version == version else None
    return db_session.execute(
        sa.select(FormVersion)
        .options(
            load_only(
                FormVersion.id,
                FormVersion.form_id,
                FormVersion.version,
                FormVersion.hash,
                FormVersion.published_at,
            )
        )
        .where(
            FormVersion.form_id == form.id,
            FormVersion.version == version,
            FormVersion.published_at.is_not(None),
        )
    ).scalar_one_or_none()


def _facts_for(version: FormVersion) -> SchemaFacts:
    if version.published_at is None:
        return schema_facts(version.schema)  # drafts change as media is attached
    key = (version.id, version.hash)
    facts = _FACTS.get(key)
    if facts is None:
        if len(_FACTS) >= _FACTS_LIMIT:
            _FACTS.clear()
        facts = _FACTS[key] = schema_facts(version.schema)
    return facts


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
    authorize: Callable[[Form], None] | None = None,
    require_deprecation: bool = False,
) -> Receipt:
    """Store one upload of a record (or part of it); return what happened.

    Raises problems: 404 (unknown form or version, unknown deprecatedID), 403 (``authorize``
    refused), 409 (closed form, conflicting XML, stale edit, deleted record), 400 (bad XML).
    Commits before returning: the record and its attachments are durable.
    """
    parsed = parsing.read_submission(xml)
    form = find_form(db_session, project_id, parsed.form_id)
    if form is None:
        raise errors.FormNotFound(form_id=parsed.form_id)
    if authorize is not None:
        authorize(form)
    if form.state == "closed" and not draft:
        raise errors.NotAcceptingSubmissions(form_id=parsed.form_id)
    version = find_version(db_session, form, parsed.version, draft=draft)
    if version is None:
        if draft:
            raise errors.DraftNotFound()
        raise errors.FormVersionNotFound(version=parsed.version or '""', form_id=parsed.form_id)
    if parsed.instance_id is None:
        # Central and Aggregate mint one; the record is then new by construction.
        import uuid

        parsed.instance_id = f"uuid:{uuid.uuid4()}"
    if require_deprecation and not parsed.deprecated_id:
        raise errors.ExpectedDeprecation()

    facts = _facts_for(version)
    if parsed.encrypted:
        document = None
        expected = [*parsed.encrypted_media, parsed.encrypted_xml_name]
        audit_names = {n for n in expected if n and n.lower().startswith("audit.csv")}
    else:
        document = parsing.build_document(parsed.root, facts.repeat_paths)
        answered = parsing.binary_values(document, list(facts.binary_paths))
        expected = []
        audit_names = set()
        for path, name in answered:
            if name not in expected:
                expected.append(name)
            if path in facts.audit_paths:
                audit_names.add(name)
    expected_names = [n for n in expected if n]
    # End the read transaction before the slow part: on SQLite it holds the write lock, and
    # copying a photo to the object store must not make every other upload wait.
    db_session.commit()
    durable, ignored = _make_durable(files, set(expected_names))
    if ignored:
        log.info(
            "ignored files not named in the record",
            extra={"fields": {"instance_id": parsed.instance_id, "files": ignored}},
        )

    xml_text = xml.decode("utf-8", errors="replace")
    xml_sha = hashlib.sha256(xml).hexdigest()
    context = _Context(
        db=db_session,
        form=form,
        version=version,
        parsed=parsed,
        draft=draft,
        document=document,
        xml_text=xml_text,
        xml_sha=xml_sha,
        expected=expected_names,
        audit_names=audit_names,
        received={},
        actor_id=actor_id,
        device_id=device_id,
        user_agent=(user_agent or "")[:255] or None,
    )
    for attempt in (1, 2):
        try:
            context.received = _catalogue(db_session, durable)
            receipt = _apply(context)
            db_session.commit()
        except IntegrityError:
            # Another process inserted the same identity between our check and our insert
            # (only possible without the advisory lock); the retry sees its row.
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


@dataclass
class _Context:
    db: Session
    form: Form
    version: FormVersion
    parsed: parsing.ParsedSubmission
    draft: bool
    document: dict | None
    xml_text: str
    xml_sha: str
    expected: list[str]
    audit_names: set[str]
    received: dict[str, tuple[int, str | None]]  # name -> (blob id, content type)
    actor_id: int | None
    device_id: str | None
    user_agent: str | None


@dataclass
class _Durable:
    """An attachment whose bytes are durable (store or spool), not yet catalogued."""

    name: str
    sha256: str
    md5: str
    size: int
    content_type: str


def _make_durable(
    files: list[IncomingFile], expected: set[str]
) -> tuple[list[_Durable], list[str]]:
    """Stage and store the files the record names; return them and the names ignored."""
    durable: list[_Durable] = []
    seen: set[str] = set()
    ignored: list[str] = []
    for incoming in files:
        name = clean_filename(incoming.name)
        if name not in expected:
            ignored.append(name)
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
    from server.db import insert_or_ignore

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


def _apply(ctx: _Context) -> Receipt:
    """Decide what this upload is and write it (inside the caller's transaction)."""
    parsed = ctx.parsed
    ids = [parsed.instance_id] + ([parsed.deprecated_id] if parsed.deprecated_id else [])
    _lock(ctx.db, ctx.form.id, ctx.draft, *ids)
    existing = ctx.db.execute(
        sa.select(SubmissionVersion).where(
            SubmissionVersion.form_id == ctx.form.id,
            SubmissionVersion.draft == ctx.draft,
            SubmissionVersion.instance_id == parsed.instance_id,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return _repeat(ctx, existing)
    if parsed.deprecated_id:
        return _edit(ctx)
    return _create(ctx)


def _submission_of(ctx: _Context, version: SubmissionVersion) -> Submission:
    return ctx.db.get(Submission, version.submission_id)


def _repeat(ctx: _Context, existing: SubmissionVersion) -> Receipt:
    """The instanceID is known: a retry, a split upload's next part, or a conflict."""
    submission = _submission_of(ctx, existing)
    if submission.deleted_at is not None:
        raise errors.DeletedSubmission()
    if existing.xml_sha256 != ctx.xml_sha:
        _keep_conflict(ctx)
        raise errors.XmlConflict()
    added = _fill_slots(ctx, existing)
    return _receipt(ctx, "duplicate", submission, existing, added)


def _keep_conflict(ctx: _Context) -> None:
    from server.db import insert_or_ignore

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


def _fill_slots(ctx: _Context, version: SubmissionVersion) -> list[str]:
    """Attach newly received files to a version's empty slots; return the names added."""
    if not ctx.received:
        return []
    slots = (
        ctx.db.execute(
            sa.select(SubmissionAttachment).where(
                SubmissionAttachment.submission_version_id == version.id
            )
        )
        .scalars()
        .all()
    )
    added = []
    now = utcnow()
    for slot in slots:
        if slot.name in ctx.received and slot.blob_id is None:
            slot.blob_id, slot.content_type = ctx.received[slot.name]
            slot.updated_at = now
            added.append(slot.name)
        elif slot.name in ctx.received and slot.blob_id != ctx.received[slot.name][0]:
            # The same name with other bytes: the first durable copy stays (nothing is
            # silently replaced); the difference is logged for the coordinator.
            log.warning(
                "attachment resent with different content; first copy kept",
                extra={"fields": {"instance_id": version.instance_id, "file": slot.name}},
            )
    if added:
        version.attachments_present = sum(1 for s in slots if s.blob_id is not None)
        ctx.db.flush()
    return added


def _new_version(
    ctx: _Context, submission_id: int, *, carried: dict[str, tuple[int, str | None]]
) -> SubmissionVersion:
    parsed = ctx.parsed
    version = SubmissionVersion(
        submission_id=submission_id,
        form_id=ctx.form.id,
        draft=ctx.draft,
        form_version_id=ctx.version.id,
        instance_id=parsed.instance_id,
        deprecated_id=parsed.deprecated_id,
        current=True,
        xml=ctx.xml_text,
        xml_sha256=ctx.xml_sha,
        document=ctx.document,
        instance_name=(parsed.instance_name or None),
        submitter_id=ctx.actor_id,
        device_id=ctx.device_id,
        user_agent=ctx.user_agent,
        created_at=utcnow(),
        attachments_expected=len(ctx.expected),
        encrypted=parsed.encrypted,
        encrypted_key=parsed.encrypted_key,
        encrypted_signature=parsed.encrypted_signature,
        encrypted_xml_name=parsed.encrypted_xml_name,
    )
    ctx.db.add(version)
    ctx.db.flush()
    present = 0
    rows = []
    for index, name in enumerate(ctx.expected):
        blob = ctx.received.get(name) or carried.get(name)
        if blob is not None:
            present += 1
        rows.append(
            {
                "submission_version_id": version.id,
                "name": name,
                "blob_id": blob[0] if blob else None,
                "content_type": blob[1]
                if blob
                else (mimetypes.guess_type(name)[0] or "application/octet-stream"),
                "is_client_audit": name in ctx.audit_names,
                "encryption_index": index if parsed.encrypted else None,
                "updated_at": utcnow() if blob else None,
            }
        )
    if rows:
        ctx.db.execute(sa.insert(SubmissionAttachment), rows)
    version.attachments_present = present
    return version


def _audit(ctx: _Context, action: str, submission: Submission, **details: Any) -> None:
    ctx.db.add(
        AuditEvent(
            actor_id=ctx.actor_id,
            action=action,
            project_id=ctx.form.project_id,
            form_id=ctx.form.id,
            submission_id=submission.id,
            details={"instanceId": ctx.parsed.instance_id, **details},
            logged_at=utcnow(),
        )
    )


def _create(ctx: _Context) -> Receipt:
    now = utcnow()
    submission = Submission(
        form_id=ctx.form.id,
        draft=ctx.draft,
        instance_id=ctx.parsed.instance_id,
        submitter_id=ctx.actor_id,
        device_id=ctx.device_id,
        user_agent=ctx.user_agent,
        created_at=now,
    )
    ctx.db.add(submission)
    ctx.db.flush()
    version = _new_version(ctx, submission.id, carried={})
    _audit(ctx, "submission.create", submission)
    return _receipt(ctx, "created", submission, version, list(ctx.received))


def _edit(ctx: _Context) -> Receipt:
    """A new version of a record: ``deprecatedID`` names the version it replaces."""
    parsed = ctx.parsed
    previous = ctx.db.execute(
        sa.select(SubmissionVersion).where(
            SubmissionVersion.form_id == ctx.form.id,
            SubmissionVersion.draft == ctx.draft,
            SubmissionVersion.instance_id == parsed.deprecated_id,
        )
    ).scalar_one_or_none()
    if previous is None:
        raise errors.DeprecatedIdNotFound(deprecated_id=parsed.deprecated_id)
    submission = _submission_of(ctx, previous)
    if submission.deleted_at is not None:
        raise errors.DeletedSubmission()
    if not previous.current:
        raise errors.StaleEdit(deprecated_id=parsed.deprecated_id)
    carried = {
        slot.name: (slot.blob_id, slot.content_type)
        for slot in ctx.db.execute(
            sa.select(SubmissionAttachment).where(
                SubmissionAttachment.submission_version_id == previous.id,
                SubmissionAttachment.blob_id.is_not(None),
            )
        ).scalars()
    }
    previous.current = False
    ctx.db.flush()  # the partial unique index allows one current version at a time
    version = _new_version(ctx, submission.id, carried=carried)
    submission.review_state = "edited"
    submission.updated_at = utcnow()
    _audit(ctx, "submission.update.version", submission, deprecatedId=parsed.deprecated_id)
    return _receipt(ctx, "edited", submission, version, list(ctx.received))


def _receipt(
    ctx: _Context,
    outcome: Outcome,
    submission: Submission,
    version: SubmissionVersion,
    received: list[str],
) -> Receipt:
    return Receipt(
        outcome=outcome,
        submission_id=submission.id,
        version_id=version.id,
        instance_id=version.instance_id,
        instance_name=version.instance_name,
        attachments_expected=version.attachments_expected,
        attachments_present=version.attachments_present,
        attachments_received=received,
    )
