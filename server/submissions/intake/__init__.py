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

Each stage is a module, in the order of :func:`receive`: :mod:`.target` (the form and version a
record names, and its typed field schema), :mod:`.upload` (the record read against them),
:mod:`.durable` (its files stored), :mod:`.decision` (what it is, and the races),
:mod:`.writing` (its rows) and :mod:`.entities` (the entities it creates or updates, in the
same transaction).

Speed: a record costs a handful of statements (identity of the device, its rights, the form
and version in one query, the insert, the commit), in SQLAlchemy Core rather than the ORM; the
field schema of a published version is read once per process.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from server.submissions import parsing
from server.submissions.intake import decision, durable, target, upload
from server.submissions.intake.durable import Durable, IncomingFile
from server.submissions.intake.target import FormRef
from server.submissions.intake.upload import Outcome, Receipt

__all__ = ["FormRef", "IncomingFile", "Outcome", "Receipt", "receive"]


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
    authorize_edit: Callable[[FormRef], None] | None = None,
    require_deprecation: bool = False,
    stored: list[Durable] | None = None,
) -> Receipt:
    """Store one upload of a record (or part of it); return what happened.

    1. Read the XML (400: not XML, too large, too deep, not UTF-8).
    2. Find the form and the version it names: 404 (unknown form or version), 403
       (``authorize`` refused, or ``authorize_edit`` for a record with ``deprecatedID``), 409
       (closed form).
    3. Read the record against that version: its instanceID, minted when absent; that it is
       the form's instance; its document and the files it names (400).
    4. Make the files it names durable, outside any transaction (503 when the attachments
       cannot be stored now); the others are ignored, and counted on the version. Files
       already durable and catalogued (``stored``: a kept conflict's) join them as received.
    5. Decide what it is and write it (a new record, a retry or a split upload's next part,
       an edit, a conflict kept for review), then commit: 404 (unknown deprecatedID), 409
       (conflicting XML, stale edit, deleted record).

    When this returns, the record and its attachments are durable.
    """
    parsed = parsing.read_submission(xml)
    found = target.find(db_session, project_id, parsed, draft=draft, authorize=authorize)
    if parsed.deprecated_id and authorize_edit is not None:
        authorize_edit(found.form)
    record = upload.read(
        db_session,
        found,
        parsed,
        xml,
        actor_id=actor_id,
        device_id=device_id,
        user_agent=user_agent,
        require_deprecation=require_deprecation,
    )
    durable.make_durable(record, files)
    durable.add_stored(record, stored or [])
    return decision.settle(record)
