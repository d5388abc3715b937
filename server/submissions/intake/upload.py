"""One upload as intake sees it: the record read against its form, and what became of it.

A record is read against the version it names before anything is stored: its instanceID
(minted when the device gave none, as Central and Aggregate do: the record is then new by
construction), that it is the form's instance (:func:`~server.submissions.parsing.check_instance`),
its document, and the files it names, each one slot of the version whatever its accents.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from flask_babel import gettext as _
from sqlalchemy.orm import Session

from server import errors
from server.forms.schema import FormSchema
from server.submissions import filenames, parsing
from server.submissions.intake.durable import Durable
from server.submissions.intake.target import FormRef, Target

Outcome = Literal["created", "duplicate", "edited"]


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


@dataclass
class Upload:
    """Everything known about one upload: its record read, its sender, its durable files."""

    db: Session
    form: FormRef
    version_id: int
    draft: bool
    parsed: parsing.ParsedSubmission
    document: dict | None
    xml_sha: str
    expected: list[str]
    audit_names: set[str]
    actor_id: int | None
    device_id: str | None
    user_agent: str | None
    durable: list[Durable] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # name -> (blob id, content type) of the durable files, once catalogued
    received: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # The entity blocks the form declares (applied by server.submissions.intake.entities).
    entity_blocks: tuple[dict[str, Any], ...] = ()


def read(
    db_session: Session,
    target: Target,
    parsed: parsing.ParsedSubmission,
    xml: bytes,
    *,
    actor_id: int | None,
    device_id: str | None,
    user_agent: str | None,
    require_deprecation: bool,
) -> Upload:
    """Read a record against the form version it names; nothing is stored.

    Raises problems (400): no ``deprecatedID`` where an edit is required, a record that is not
    the form's instance (issue 16: refused before anything, a conflict's payload included, is
    kept, since what is kept is served again), an encrypted record listing a file twice.
    """
    if parsed.instance_id is None:
        parsed.instance_id = f"uuid:{uuid.uuid4()}"
    if require_deprecation and not parsed.deprecated_id:
        raise errors.ExpectedDeprecation()
    parsing.check_instance(parsed, xml, target.schema.root)
    document, expected, audit_names = _contents(parsed, target.schema)
    return Upload(
        db=db_session,
        form=target.form,
        version_id=target.version_id,
        draft=target.draft,
        parsed=parsed,
        document=document,
        xml_sha=hashlib.sha256(xml).hexdigest(),
        expected=expected,
        audit_names=audit_names,
        actor_id=actor_id,
        device_id=device_id,
        user_agent=(user_agent or "")[:255] or None,
        entity_blocks=target.schema.entities,
    )


def _contents(
    parsed: parsing.ParsedSubmission, schema: FormSchema
) -> tuple[dict[str, Any] | None, list[str], set[str]]:
    """Return the document, the names of the files the record names, and its audit logs'."""
    if parsed.encrypted:
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
        return None, expected, {n for n in expected if n.lower().startswith("audit.csv")}
    document = parsing.build_document(parsed.root, schema.repeat_paths)
    expected, audit_names = [], set()
    known: dict[str, str] = {}  # one slot per name, however its accents are encoded
    for binary in schema.binaries:
        for written in binary.answers_in(document):
            name = known.setdefault(
                filenames.comparable(written), filenames.attachment_name(written)
            )
            if name not in expected:
                expected.append(name)
            if binary.audit:
                audit_names.add(name)
    return document, expected, audit_names
